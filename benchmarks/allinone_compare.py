"""All-in-one comparison on equal terms: DualFreq vs HAIR, PromptIR and Restormer (and two DualFreq
ablations), trained here with the same data, steps, batch, optimizer and schedule, at equal
parameter count (within 10 %), then scored on the same pinned test inputs.

    python benchmarks/allinone_compare.py prepare --out runs/aio/testsets
    python benchmarks/allinone_compare.py train --model dualfreq --out runs/aio [--steps 300]
    python benchmarks/allinone_compare.py train --model hair --out runs/aio        # ... promptir, restormer,
                                                                                   # dualfreq-no-prior, dualfreq-no-bands
    python benchmarks/allinone_compare.py evaluate --out runs/aio                  # table (markdown + JSON)
    python benchmarks/allinone_compare.py ship --out runs/aio [--unscored]  # rows -> benchmarks/results/allinone/,
                                                                # weights -> jaxrestore/assets/<preset>/

Training data: `trainsets/BSDS500_test200` (colour, disjoint from CBSD68 and from Rain100H's scenes),
with on-the-fly degradations deterministic in (seed, step): Gaussian noise sigma 15/25/50, synthetic rain, haze, Gaussian/motion blur, low light, JPEG
q 10-40 and frequency-shaped (coloured) noise — the mixture of `dualfreq_5task:cpu`, whose recipe
(AdamW 5e-4, warm-up then cosine, L1, 64x64 patches) every model uses.

Test inputs (`prepare`): CBSD68 at sigma 15/25/50 (the all-in-one protocol's clipped, truncated
uint8 noise from one RandomState(0) stream); Rain100H real pairs (zero-shot from synthetic rain);
seeded synthetic haze, blur, low light and coloured noise on the centre 256x256 crops of Kodak24 and
McMaster (crops keep the whole evaluation of one model under ~30 CPU-minutes here). Every generated
input is written as PNG and its sha256 goes into `manifest.json`, so the set is pinned. Scores are
the all-in-one protocol's (RGB, float output clamped, scikit-image-style PSNR/SSIM). Nothing here
is tuned on the test sets: the recipe, sizes and steps are fixed before any score is seen.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

# The comparison models are the *-aio-small presets (declared in their model files, ~16.3-17.1 M
# parameters each: HAIR and PromptIR cannot go smaller, their prompt / hypernetwork widths are
# hard-coded for dim 48), and two DualFreq ablations.
MODELS = {
    'dualfreq': dict(preset='dualfreq-aio-small'),
    'dualfreq-no-prior': dict(preset='dualfreq-aio-small', hyperparameters=dict(use_prior=False)),
    'dualfreq-no-bands': dict(preset='dualfreq-aio-small', hyperparameters=dict(band_attention=False)),
    'hair': dict(preset='hair-aio-small'),
    'promptir': dict(preset='promptir-aio-small'),
    'restormer': dict(preset='restormer-aio-small'),
}


def param_count(spec: dict) -> int:
  """Parameters of a comparison model (abstract: nothing is allocated)."""
  import jax
  from flax import nnx
  from jaxrestore.train.trainer import resolve_model
  arch, config = resolve_model(spec)
  model = nnx.eval_shape(lambda: arch.model_cls(config, rngs=nnx.Rngs(0)))
  return int(sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param))))


SYNTHETIC_TASKS = {  # name: (degradation spec, test folders)
    'haze': (dict(kind='haze'), ('Kodak24', 'McMaster')),
    'blur': (dict(kind='mixture', components=[dict(kind='gaussian_blur'), dict(kind='motion_blur')]),
             ('Kodak24', 'McMaster')),
    'low_light': (dict(kind='low_light'), ('Kodak24', 'McMaster')),
    'colored_noise': (dict(kind='colored', sigma=25.0, exponent=[1.0, 2.0]), ('Kodak24', 'McMaster')),
}


SYNTHETIC_CROP = 256  # the synthetic sets use the centre 256x256 of each image (CPU evaluation budget)


def center_crop(image: np.ndarray, size: int) -> np.ndarray:
  h, w = image.shape[:2]
  if h < size or w < size:
    raise ValueError(f'test image of {h}x{w} is smaller than the {size}x{size} crop')
  top, left = (h - size) // 2, (w - size) // 2
  return image[top:top + size, left:left + size]


SET_ORDER = ['cbsd68_sigma15', 'cbsd68_sigma25', 'cbsd68_sigma50', 'rain100h'] + [
    f'{task}_{folder.lower()}' for task, (_, folders) in SYNTHETIC_TASKS.items() for folder in folders]


def data_root() -> Path:
  root = os.environ.get('JAXRESTORE_DATA')
  if not root:
    sys.exit('set JAXRESTORE_DATA to the shared data folder (testsets/, trainsets/)')
  return Path(root)


def sha256_file(path: Path) -> str:
  return hashlib.sha256(path.read_bytes()).hexdigest()


def _save(path: Path, image_uint8: np.ndarray) -> str:
  from PIL import Image
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(image_uint8).save(path)
  return sha256_file(path)


def prepare(out: Path) -> dict:
  from jaxrestore.data import degradations
  from jaxrestore.eval import allinone
  if out.exists():
    sys.exit(f'{out} exists; remove it or choose another --out (inputs are never overwritten)')
  root = data_root()
  manifest: dict = {'sets': {}, 'synthetic_crop': SYNTHETIC_CROP}
  rng = np.random.RandomState(0)  # the all-in-one protocol: one stream across sigma 15, 25, 50
  images = sorted((root / 'testsets' / 'CBSD68').glob('*.png'))
  for sigma in (15, 25, 50):
    name, files = f'cbsd68_sigma{sigma}', {}
    for p in images:
      clean = allinone.crop_img(allinone.read_rgb(p))
      noisy = allinone.add_gaussian_noise_uint8(clean, sigma, rng)
      files[p.name] = dict(lq=_save(out / name / 'lq' / p.name, noisy), gt=_save(out / name / 'gt' / p.name, clean))
    manifest['sets'][name] = files
  files = {}
  for p in sorted((root / 'testsets' / 'Rain100H' / 'input').glob('*.png')):
    lq = allinone.crop_img(allinone.read_rgb(p))
    gt = allinone.crop_img(allinone.read_rgb(root / 'testsets' / 'Rain100H' / 'target' / p.name))
    files[p.name] = dict(lq=_save(out / 'rain100h' / 'lq' / p.name, lq), gt=_save(out / 'rain100h' / 'gt' / p.name, gt))
  manifest['sets']['rain100h'] = files
  for task, (spec, folders) in SYNTHETIC_TASKS.items():
    degrade = degradations.make_degradation(spec)
    for folder in folders:
      name, files = f'{task}_{folder.lower()}', {}
      for i, p in enumerate(sorted((root / 'testsets' / folder).glob('*'))):
        clean = center_crop(allinone.read_rgb(p), SYNTHETIC_CROP)
        seed = int.from_bytes(hashlib.sha256(f'{name}/{p.name}'.encode()).digest()[:4], 'little')
        lq = degrade(clean.astype(np.float32) / 255, np.random.default_rng(seed))
        lq = np.clip(np.round(lq * 255), 0, 255).astype(np.uint8)
        files[p.stem + '.png'] = dict(lq=_save(out / name / 'lq' / (p.stem + '.png'), lq),
                                      gt=_save(out / name / 'gt' / (p.stem + '.png'), clean), seed=seed)
      manifest['sets'][name] = files
  (out / 'manifest.json').write_text(json.dumps(manifest, indent=1, sort_keys=True) + '\n')
  digest = sha256_file(out / 'manifest.json')  # the digest `score` and `ship` record
  print(f'wrote {sum(len(v) for v in manifest["sets"].values())} pairs in {len(manifest["sets"])} sets to {out}; '
        f'manifest sha256 {digest}')
  return manifest


def train(model_name: str, out: Path, steps: int, seed: int) -> dict:
  from jaxrestore.configs import train as recipes
  from jaxrestore.train import trainer
  root = data_root()
  config = recipes.get_config(f'dualfreq_5task:cpu,steps={steps}')
  config.model = dict(MODELS[model_name])
  config.seed = seed
  extra = [dict(dataset='bsd400', mode='RGB', weight=1.0, degradation=dict(kind='jpeg', quality=[10, 40])),
           dict(dataset='bsd400', mode='RGB', weight=1.0,
                degradation=dict(kind='colored', sigma=[10.0, 40.0], exponent=[0.5, 2.0]))]
  config.data.sources = list(config.data.sources) + extra
  for source in config.data.sources:  # colour training images (BSDS500 test split)
    source['folder'] = str(root / 'trainsets' / 'BSDS500_test200')
  config.eval = dict(every=0, dataset=None)
  workdir = out / 'runs' / model_name
  t0 = time.time()
  cpu0 = time.process_time()
  summary = trainer.train(config, workdir, progress=True)
  summary.update(model=model_name, wall_minutes=(time.time() - t0) / 60,
                 process_cpu_minutes=(time.process_time() - cpu0) / 60,
                 load_average=os.getloadavg(), steps=steps, seed=seed)
  store_half(Path(summary['export']), workdir / 'weights', model=model_name, steps=steps, seed=seed,
             train_wall_minutes=round(summary['wall_minutes'], 1),
             train_process_cpu_minutes=round(summary['process_cpu_minutes'], 1),
             data='trainsets/BSDS500_test200 (colour), degradations of dualfreq_5task:cpu + JPEG q10-40 + '
                  'coloured noise, generated on the fly from (seed, step)',
             recipe=f'dualfreq_5task:cpu,steps={steps} (AdamW 5e-4, warm-up 50, cosine, L1, clip 1.0, '
                    f'batch 8 x 64x64)', command=f'benchmarks/allinone_compare.py train --model {model_name} '
                                                f'--steps {steps} --seed {seed}')
  (workdir / 'summary.json').write_text(json.dumps(summary, indent=1, default=str) + '\n')
  return summary


def store_half(export: Path, dst: Path, **provenance) -> Path:
  """The exported weights as float16 (half the bytes; loaded back into float32 models exactly as
  stored). These are the weights the comparison scores and the presets ship."""
  import jaxrestore
  from jaxrestore.convert.build import params_of
  from jaxrestore.convert.checkpoint import read_metadata, save_converted
  meta = read_metadata(export)
  params = params_of(jaxrestore.load(weights=export))
  for key, value in params.items():
    if value.dtype != np.float32:
      raise ValueError(f'{export}: {key} is {value.dtype}, expected float32')
    if np.max(np.abs(value), initial=0.0) > 60000:
      raise ValueError(f'{export}: {key} exceeds the float16 range')
  half = {k: v.astype(np.float16) for k, v in params.items()}
  return save_converted(dst, half, architecture=meta['architecture'], hyperparameters=meta['hyperparameters'],
                        overwrite=True, source='jaxrestore train', stored_dtype='float16',
                        trained_step=meta.get('step'), **provenance)


def evaluate(out: Path, models=tuple(MODELS)) -> dict:
  """Scores each trained model not scored yet (runs/<model>/scores.json), then writes the table of all
  scored models (results.json, results.md)."""
  for model_name in models:
    run = out / 'runs' / model_name
    if (run / 'summary.json').is_file() and not (run / 'scores.json').is_file():
      score(out, model_name)
  return table(out)


def score(out: Path, model_name: str) -> dict:
  import jaxrestore
  from jaxrestore.convert.build import params_of
  from jaxrestore.eval import allinone
  manifest = json.loads((out / 'testsets' / 'manifest.json').read_text())
  run = out / 'runs' / model_name
  summary = json.loads((run / 'summary.json').read_text())
  model = jaxrestore.load(weights=run / 'weights')
  row = dict(params=int(sum(v.size for v in params_of(model).values())), steps=summary['steps'],
             train_wall_minutes=summary['wall_minutes'], train_process_cpu_minutes=summary['process_cpu_minutes'],
             manifest_sha256=sha256_file(out / 'testsets' / 'manifest.json'),
             scores={}, images={})  # images: set -> file -> [psnr, ssim]
  t0, cpu0 = time.time(), time.process_time()
  partial = run / 'scores.partial.json'  # sets already scored by an interrupted run (same manifest)
  if partial.is_file():
    done = json.loads(partial.read_text())
    if done.get('manifest_sha256') == row['manifest_sha256']:
      row['scores'], row['images'] = done['scores'], done['images']
  for set_name, files in manifest['sets'].items():
    if set_name in row['scores']:
      continue
    psnrs, ssims, per_image = [], [], {}
    for fname, sums in files.items():
      lq_path, gt_path = out / 'testsets' / set_name / 'lq' / fname, out / 'testsets' / set_name / 'gt' / fname
      if sha256_file(lq_path) != sums['lq'] or sha256_file(gt_path) != sums['gt']:
        sys.exit(f'{lq_path}: checksum differs from manifest.json; re-run prepare')
      lq = allinone.to_tensor(allinone.read_rgb(lq_path))
      restored = np.clip(jaxrestore.restore(model, lq), 0, 1)  # whole image, one compile per size
      p, s = allinone.compute_psnr_ssim(restored, allinone.to_tensor(allinone.read_rgb(gt_path)))
      psnrs.append(p)
      ssims.append(s)
      per_image[fname] = [float(p), float(s)]
    row['scores'][set_name] = dict(psnr=float(np.mean(psnrs)), ssim=float(np.mean(ssims)))
    row['images'][set_name] = per_image
    partial.write_text(json.dumps(dict(manifest_sha256=row['manifest_sha256'], scores=row['scores'],
                                       images=row['images'])) + '\n')
    print(model_name, set_name, json.dumps(row['scores'][set_name]), flush=True)
  row.update(eval_wall_minutes=(time.time() - t0) / 60, eval_process_cpu_minutes=(time.process_time() - cpu0) / 60)
  row['scores'] = {name: row['scores'][name] for name in manifest['sets']}
  row['images'] = {name: row['images'][name] for name in manifest['sets']}
  (run / 'scores.json').write_text(json.dumps(row, indent=1) + '\n')
  partial.unlink(missing_ok=True)
  return row


def input_scores(out: Path) -> dict:
  """The degraded inputs' own scores (the 'do nothing' row)."""
  from jaxrestore.eval import allinone
  path = out / 'input_scores.json'
  if path.is_file():
    return json.loads(path.read_text())
  manifest = json.loads((out / 'testsets' / 'manifest.json').read_text())
  row = dict(params=0, scores={})
  for set_name, files in manifest['sets'].items():
    pairs = [allinone.compute_psnr_ssim(*(allinone.to_tensor(allinone.read_rgb(out / 'testsets' / set_name / r / f))
                                          for r in ('lq', 'gt'))) for f in files]
    row['scores'][set_name] = dict(psnr=float(np.mean([p for p, _ in pairs])), ssim=float(np.mean([s for _, s in pairs])))
  path.write_text(json.dumps(row, indent=1) + '\n')
  return row


def render(results: dict) -> str:
  """Markdown table: one row per model (PSNR / SSIM per test set and their average)."""
  stored = list(next(iter(results.values()))['scores'])
  sets = [s for s in SET_ORDER if s in stored] + [s for s in stored if s not in SET_ORDER]
  lines = ['| model | params | train min | ' + ' | '.join(sets) + ' | average |', '|---' * (len(sets) + 4) + '|']
  for name, row in results.items():
    cells = [f'{row["scores"][s]["psnr"]:.2f} / {row["scores"][s]["ssim"]:.3f}' for s in sets]
    avg_p = np.mean([row['scores'][s]['psnr'] for s in sets])
    avg_s = np.mean([row['scores'][s]['ssim'] for s in sets])
    params = f'{row["params"] / 1e6:.2f}M' if row['params'] else '-'
    minutes = f'{row["train_wall_minutes"]:.1f}' if row.get('train_wall_minutes') else '-'
    lines.append(f'| {name} | {params} | {minutes} | ' + ' | '.join(cells) + f' | {avg_p:.2f} / {avg_s:.3f} |')
  return '\n'.join(lines) + '\n'


def table(out: Path) -> dict:
  results = {m: json.loads((out / 'runs' / m / 'scores.json').read_text())
             for m in MODELS if (out / 'runs' / m / 'scores.json').is_file()}
  if results:
    results = {'degraded input': input_scores(out), **results}
  (out / 'results.json').write_text(json.dumps(results, indent=1) + '\n')
  if not results:
    return results
  text = render(results)
  (out / 'results.md').write_text(text)
  print(text, end='')
  return results


PRESETS = {'dualfreq': 'dualfreq-aio-small', 'hair': 'hair-aio-small', 'promptir': 'promptir-aio-small',
           'restormer': 'restormer-aio-small'}


def ship(out: Path, assets: Path, record: Path, unscored: bool = False) -> None:
  """Lands a run in the repository: every scored model's row (ablations included) and the test
  manifest go to `record` (rows from earlier runs on the same manifest stay, so the table can be
  completed over several sessions, and `record/results.md` is re-rendered from all of them); each main
  model's float16 weights go to assets/<preset>/ with its measured scores in their metadata. With
  `unscored`, a main model that is trained but not scored yet ships its weights without scores
  (its preset says so; a later `evaluate` + `ship` adds them), so a long run is not lost."""
  import shutil
  results = table(out)
  manifest = (out / 'testsets' / 'manifest.json').read_bytes()
  manifest_sha = hashlib.sha256(manifest).hexdigest()
  record.mkdir(parents=True, exist_ok=True)
  if (record / 'manifest.json').is_file() and (record / 'manifest.json').read_bytes() != manifest:
    sys.exit(f'{record}/manifest.json pins other test inputs than {out}/testsets; the rows would not compare')
  (record / 'manifest.json').write_bytes(manifest)
  for name, row in results.items():
    (record / f'{name.replace(" ", "-")}.json').write_text(json.dumps(row, indent=1) + '\n')
  order = ['degraded input', *MODELS]
  recorded = {name: json.loads((record / f'{name.replace(" ", "-")}.json').read_text())
              for name in order if (record / f'{name.replace(" ", "-")}.json').is_file()}
  if recorded:
    (record / 'results.md').write_text(render(recorded))
  for model_name, preset in PRESETS.items():
    src, dst = out / 'runs' / model_name / 'weights', assets / preset
    scored = model_name in results
    if not src.is_dir() or not (scored or unscored):
      print(f'{model_name}: not trained and evaluated in {out}; its preset is left as it is')
      continue
    if not scored and (dst / 'jaxrestore.json').is_file() and 'results' in json.loads((dst / 'jaxrestore.json').read_text()):
      print(f'{model_name}: {dst} already ships scored weights; unscored weights do not replace them')
      continue
    if dst.exists():
      shutil.rmtree(dst)
    shutil.copytree(src, dst)
    meta = json.loads((dst / 'jaxrestore.json').read_text())
    meta.update(preset=preset, test_manifest_sha256=manifest_sha)
    if scored:
      meta['results'] = results[model_name]['scores']
    (dst / 'jaxrestore.json').write_text(json.dumps(meta, indent=2) + '\n')
    print(f'{model_name} -> {dst}')


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = parser.add_subparsers(dest='command', required=True)
  p = sub.add_parser('prepare')
  p.add_argument('--out', type=Path, required=True)
  p = sub.add_parser('train')
  p.add_argument('--model', choices=sorted(MODELS), required=True)
  p.add_argument('--out', type=Path, required=True)
  p.add_argument('--steps', type=int, default=300)
  p.add_argument('--seed', type=int, default=0)
  p = sub.add_parser('evaluate')
  p.add_argument('--out', type=Path, required=True)
  p.add_argument('--models', default=','.join(MODELS), help='comma-separated subset of the trained models')
  p = sub.add_parser('ship')
  p.add_argument('--out', type=Path, required=True)
  p.add_argument('--assets', type=Path, default=REPO / 'jaxrestore' / 'assets')
  p.add_argument('--record', type=Path, default=REPO / 'benchmarks' / 'results' / 'allinone')
  p.add_argument('--unscored', action='store_true', help='also ship trained models that are not scored yet')
  args = parser.parse_args(argv)
  if args.command == 'prepare':
    prepare(args.out)
  elif args.command == 'train':
    train(args.model, args.out, args.steps, args.seed)
  elif args.command == 'evaluate':
    evaluate(args.out, args.models.split(','))
  else:
    ship(args.out, args.assets, args.record, unscored=args.unscored)
  return 0


if __name__ == '__main__':
  sys.exit(main())
