"""The `jaxrestore` command line."""
from __future__ import annotations

import argparse
import sys


def _cmd_presets(args) -> int:
  from jaxrestore.api import presets
  rows = []
  for name, p in presets().items():
    if args.architecture and p.architecture != args.architecture:
      continue
    level = (f'sigma {p.noise_level}' if p.noise_level else f'q {p.jpeg_quality}' if p.jpeg_quality
             else f'x{p.scale}' if p.scale > 1 else '')
    rows.append((name, p.architecture, p.task, level, 'gray' if p.channels == 1 else 'rgb',
                 'bundled' if p.bundled_weights else p.checkpoint_file or ''))
  widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))] if rows else []
  for r in rows:
    print('  '.join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
  return 0


def _cmd_convert(args) -> int:
  from jaxrestore.convert import from_torch
  hp = dict(_parse_assignment(s) for s in args.set)
  dst = from_torch(args.src, args.dst, name=args.model, key=args.key, overwrite=args.overwrite, **hp)
  print(f'wrote {dst}')
  return 0


def _cmd_bench(args) -> int:
  from jaxrestore import bench
  sizes = (32,) if args.smoke else tuple(int(s) for s in args.sizes.split(','))
  batches = (1,) if args.smoke else tuple(int(b) for b in args.batches.split(','))
  presets = tuple(args.presets.split(','))
  repeats = 1 if args.smoke else args.repeats
  print(f'jaxrestore bench on {bench.machine_line()} (median of {repeats}, forward only, random weights)')
  rows = bench.run_bench(presets, sizes, batches, repeats, args.dtype,
                         frameworks=('jax',) if args.jax_only else ('jax', 'torch'))
  print(bench.format_table(rows))
  return 0 if rows else 1


def _cmd_demo(args) -> int:
  from jaxrestore.demo import DEMO_PRESET, DEMO_SIGMA, run_demo
  r = run_demo(args.out, overwrite=args.overwrite)
  print(f'{DEMO_PRESET} (bundled KAIR weights) on the bundled Kodak image, gray, Gaussian noise '
        f'sigma={DEMO_SIGMA}:')
  print(f'  noisy    PSNR {r["psnr_noisy"]:6.2f} dB  SSIM {r["ssim_noisy"]:.4f}')
  print(f'  restored PSNR {r["psnr_restored"]:6.2f} dB  SSIM {r["ssim_restored"]:.4f}')
  print(f'  side by side (noisy | restored | clean): {r["output"]}')
  return 0


def _expand_inputs(items: list[str]) -> tuple[list, list[str]]:
  """Files, folders (their images) and globs -> (paths, errors for items that match nothing)."""
  import glob
  from pathlib import Path
  from jaxrestore.imageio import READ_SUFFIXES
  paths, errors = [], []
  for item in items:
    p = Path(item)
    if p.is_dir():
      found = sorted(f for f in p.iterdir() if f.suffix.lower() in READ_SUFFIXES and f.is_file())
      if not found:
        errors.append(f'{item}: folder holds no images')
      paths += found
    elif p.exists() or not glob.has_magic(item):
      paths.append(p)  # a missing file is reported when it is read
    else:
      found = sorted(Path(f) for f in glob.glob(item, recursive=True) if Path(f).is_file())
      if not found:
        errors.append(f'{item}: no file matches')
      paths += found
  return paths, errors


def _one_line(error: Exception) -> str:
  lines = [l.strip() for l in str(error).splitlines() if l.strip()]
  text = '; '.join(lines)
  return text if len(text) <= 400 else text[:397] + '...'


def _cmd_restore(args) -> int:
  from pathlib import Path
  import jax.numpy as jnp
  from tqdm import tqdm
  import jaxrestore
  from jaxrestore import inference
  from jaxrestore.imageio import ImageReadError, read_image, write_image

  try:
    model = jaxrestore.load(args.model, args.weights, pretrained=True)
  except Exception as e:  # weights that do not match the preset, missing weights, ...
    print(f'jaxrestore restore: error: {_one_line(e)}', file=sys.stderr)
    return 2
  dtype = {'fp32': None, 'float32': None, 'bf16': jnp.bfloat16, 'bfloat16': jnp.bfloat16}[args.dtype]
  out_dir = Path(args.output)
  out_dir.mkdir(parents=True, exist_ok=True)
  inputs, failures = _expand_inputs(args.inputs)
  for f in failures:
    print(f'jaxrestore restore: error: {f}', file=sys.stderr)
  input_set = {p.resolve() for p in inputs if p.exists()}
  claimed: dict = {}
  minimum = inference.minimum_size(model.config)
  written = 0
  bar = tqdm(inputs, desc='images', unit='img', file=sys.stderr, disable=args.quiet or None)
  for path in bar:
    target = out_dir / f'{path.stem}{args.suffix}.{args.format}'
    try:
      if target.resolve() in input_set:
        raise ValueError(f'output {target} would overwrite an input; choose another -o or --suffix')
      if target.resolve() in claimed:
        raise ValueError(f'output {target} is already written for {claimed[target.resolve()]}')
      if target.exists() and not args.overwrite:
        raise FileExistsError(f'{target} exists; pass --overwrite to replace it')
      image = read_image(path)
      if min(image.shape[:2]) < minimum:
        raise ValueError(f'{path}: image of {image.shape[1]}x{image.shape[0]} pixels is smaller than '
                         f'the model minimum of {minimum}x{minimum}')
      tiles = tqdm(total=0, desc='tiles', unit='tile', file=sys.stderr, leave=False, disable=args.quiet or None)

      def progress(done, total):
        tiles.total = total
        tiles.n = done
        tiles.refresh()

      result = inference.restore(model, image, tile=args.tile, overlap=args.overlap, batch_size=args.batch_size,
                                 dtype=dtype, progress=progress)
      tiles.close()
      write_image(target, result, bit_depth=16 if image.dtype.itemsize == 2 else 8)
      claimed[target.resolve()] = path
      written += 1
    except (ImageReadError, ValueError, FileExistsError, OSError) as e:
      failures.append(str(path))
      bar.write(f'jaxrestore restore: error: {_one_line(e)}', file=sys.stderr)
  if not args.quiet:
    print(f'restored {written} of {len(inputs)} image(s) into {out_dir}' +
          (f'; {len(failures)} failed' if failures else ''))
  return 1 if failures else 0


def _resolve_dataset(name: str):
  from pathlib import Path
  import os
  if Path(name).is_dir():
    return Path(name)
  root = os.environ.get('JAXRESTORE_DATA')
  if root and (Path(root) / 'testsets' / name).is_dir():
    return Path(root) / 'testsets' / name
  raise FileNotFoundError(f'test set {name!r} is neither a folder nor a folder under '
                          f'$JAXRESTORE_DATA/testsets ({root or "JAXRESTORE_DATA is not set"})')


def _cmd_eval(args) -> int:
  import json
  import numpy as np
  from flax import nnx
  import jaxrestore
  from jaxrestore.eval import protocol as proto

  if args.model is None and args.weights is None:
    raise ValueError('eval needs --model PRESET and/or --weights PATH')
  if args.model is None and args.task is None:
    raise ValueError('eval with --weights only needs --task (the preset normally supplies it)')
  preset = jaxrestore.get_preset(args.model) if args.model else None
  model = jaxrestore.load(args.model, args.weights, pretrained=True)
  allinone = args.protocol == 'allinone' or (args.protocol == 'auto' and preset is not None
                                              and preset.task == 'all_in_one')
  if allinone:
    return _eval_allinone(args, model)
  if preset is not None:
    protocol = proto.protocol_for(preset, noise_level=args.noise, jpeg_quality=args.jpeg, task=args.task,
                                  float_psnr=args.float_psnr or None)
  else:
    scale = model.config.scale
    window = getattr(model.config, 'window_size', None)
    protocol = proto.Protocol(task=args.task, noise_level=args.noise, jpeg_quality=args.jpeg, scale=scale,
                              border=scale if 'sr' in args.task else 0, window=window,
                              float_psnr=args.float_psnr)
  forward = nnx.jit(lambda m, x: m(x))
  restore = lambda x: np.asarray(forward(model, x[None]))[0]
  folder = _resolve_dataset(args.dataset)
  lq = _resolve_dataset(args.lq) if args.lq else None

  from tqdm import tqdm
  images = proto.list_images(folder)
  bar = tqdm(total=len(images), desc=f'eval {folder.name}', unit='img', file=sys.stderr,
             disable=args.quiet or None)

  def show(name, row):
    bar.update(1)
    if not args.quiet:
      if bar.n == 1:
        tqdm.write(f'{"image":24s} ' + '  '.join(f'{k:>8s}' for k in row), file=sys.stdout)
      tqdm.write(f'{name:24s} ' + '  '.join(f'{v:8.4f}' for v in row.values()), file=sys.stdout)

  result = proto.evaluate(restore, images, protocol, lq_folder=lq, on_image=show)
  bar.close()
  print(f'{args.model or args.weights} on {folder.name} ({protocol.task}' +
        (f', sigma {protocol.noise_level}' if protocol.noise_level else '') +
        (f', q {protocol.jpeg_quality}' if protocol.jpeg_quality else '') +
        (f', x{protocol.scale}' if protocol.scale > 1 else '') + f', {len(result.names)} images) average: ' +
        '  '.join(f'{k} {v:.4f}' for k, v in result.mean().items()))
  if args.json:
    with open(args.json, 'x') as f:  # never overwrite
      json.dump(result.as_dict(), f, indent=2)
  if args.csv:
    import csv
    with open(args.csv, 'x', newline='') as f:
      writer = csv.writer(f)
      writer.writerow(['image', *result.scores])
      for i, name in enumerate(result.names):
        writer.writerow([name, *(f'{v[i]:.6f}' for v in result.scores.values())])
  return 0


def _eval_allinone(args, model) -> int:
  """HAIR/PromptIR's test protocol (jaxrestore.eval.allinone): RGB, skimage-style SSIM, crop to 16."""
  import numpy as np
  from flax import nnx
  from jaxrestore.eval import allinone
  from jaxrestore.eval.protocol import list_images

  if args.task not in allinone.TASKS:
    raise ValueError(f'the all-in-one protocol needs --task {" / ".join(allinone.TASKS)}, got {args.task!r}')
  images = list_images(_resolve_dataset(args.dataset))
  targets = None
  if args.gt:
    gt = _resolve_dataset(args.gt)
    targets = [gt / p.name for p in images]
  forward = nnx.jit(lambda m, x: m(x))
  result = allinone.evaluate_allinone(lambda x: np.asarray(forward(model, x[None]))[0], images, task=args.task,
                                      sigma=args.noise, target_paths=targets)
  mean = result.mean()
  print(f'{args.model or args.weights} on {args.dataset} (all-in-one protocol, {args.task}' +
        (f', sigma {args.noise:g}' if args.noise else '') + f', {len(result.names)} images) average: ' +
        '  '.join(f'{k} {v:.4f}' for k, v in mean.items()))
  return 0


def _parse_assignment(text: str):
  import ast
  if '=' not in text:
    raise SystemExit(f'--set expects key=value, got {text!r}')
  key, value = text.split('=', 1)
  try:
    return key, ast.literal_eval(value)
  except (ValueError, SyntaxError):
    return key, value


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog='jaxrestore', description=__doc__)
  sub = parser.add_subparsers(dest='command', required=True)

  p = sub.add_parser('presets', help='list model presets')
  p.add_argument('--architecture', help='only this architecture (e.g. swinir, dncnn)')
  p.set_defaults(func=_cmd_presets)

  p = sub.add_parser('convert', help='convert a PyTorch checkpoint into a jaxrestore checkpoint')
  p.add_argument('src', help='official checkpoint (.pth, .safetensors, .npz); never unpickled unsafely')
  p.add_argument('dst', help='output directory (orbax checkpoint + jaxrestore.json)')
  p.add_argument('--model', help='preset name; default: detect the architecture from the checkpoint')
  p.add_argument('--key', help="state-dict container key, e.g. params or params_ema")
  p.add_argument('--set', action='append', default=[], metavar='KEY=VALUE',
                 help='override a hyperparameter, e.g. --set img_range=255.0')
  p.add_argument('--overwrite', action='store_true', help='replace an existing converted checkpoint')
  p.set_defaults(func=_cmd_convert)

  p = sub.add_parser('eval', help="score a model with the official test protocol (main_test_swinir.py)")
  p.add_argument('--model', help='preset name (supplies task, noise level / JPEG quality / scale)')
  p.add_argument('--weights', help='checkpoint (.pth or converted folder); default: the preset\'s')
  p.add_argument('--dataset', required=True, help='ground-truth folder, or a test-set name under $JAXRESTORE_DATA/testsets')
  p.add_argument('--lq', help='low-resolution folder for SR (files named <name>x<scale>.<ext>)')
  p.add_argument('--task', help='override the task (gray_dn, color_dn, jpeg_car, color_jpeg_car, classical_sr, ...; '
                 'all-in-one protocol: denoise, derain, dehaze)')
  p.add_argument('--protocol', default='auto', choices=['auto', 'swinir', 'allinone'],
                 help="swinir = main_test_swinir.py; allinone = HAIR/PromptIR's test code (auto: by the preset)")
  p.add_argument('--gt', help='all-in-one derain/dehaze: folder of ground truths with the same file names')
  p.add_argument('--noise', type=float, help='override the noise sigma (0..255 scale)')
  p.add_argument('--jpeg', type=int, help='override the JPEG quality')
  p.add_argument('--float-psnr', action='store_true',
                 help='PSNR on clamped float outputs (SaoYan/DnCNN-PyTorch test.py) instead of uint8')
  p.add_argument('--json', help='also write per-image scores to this new JSON file')
  p.add_argument('--csv', help='also write per-image scores to this new CSV file')
  p.add_argument('--quiet', action='store_true', help='only print the average')
  p.set_defaults(func=_cmd_eval)

  p = sub.add_parser('restore', help='restore image files (tiled, batched over all local devices)')
  p.add_argument('inputs', nargs='+', help='image files, folders or globs (PNG, JPEG, TIFF, BMP, WebP)')
  p.add_argument('-o', '--output', required=True, help='output folder (inputs are never overwritten)')
  p.add_argument('--model', required=True, help='preset name (see `jaxrestore presets`)')
  p.add_argument('--weights', help="checkpoint (.pth or converted folder); default: the preset's")
  p.add_argument('--tile', type=int, default=256, help='tile size in input pixels (default 256; 0 = whole image)')
  p.add_argument('--overlap', type=int, default=32, help='overlap between tiles (default 32)')
  p.add_argument('--batch-size', type=int, default=None,
                 help='tiles per step, spread over all devices (default: 1 per CPU, 8 per accelerator)')
  p.add_argument('--dtype', default='fp32', choices=['fp32', 'float32', 'bf16', 'bfloat16'])
  p.add_argument('--format', default='png', choices=['png', 'tif', 'tiff', 'bmp', 'webp', 'jpg', 'jpeg'],
                 help='output format (default png)')
  p.add_argument('--suffix', default='', help='appended to output file stems')
  p.add_argument('--overwrite', action='store_true', help='replace existing outputs')
  p.add_argument('--quiet', action='store_true')
  p.set_defaults(func=_cmd_restore)

  p = sub.add_parser('bench', help='throughput and peak memory, JAX vs PyTorch, in one run')
  p.add_argument('--presets', default='swinir-color-dn15,swinir-lightweight-x2')
  p.add_argument('--sizes', default='128,256', help='square input sizes, comma-separated')
  p.add_argument('--batches', default='1,8', help='batch sizes, comma-separated')
  p.add_argument('--repeats', type=int, default=3)
  p.add_argument('--dtype', default='fp32', choices=['fp32', 'bf16'])
  p.add_argument('--jax-only', action='store_true', help='skip the PyTorch rows')
  p.add_argument('--smoke', action='store_true', help='tiny sizes, one repeat: checks the pipeline only')
  p.set_defaults(func=_cmd_bench)

  from jaxrestore.train.cli import add_train_parser
  add_train_parser(sub)

  p = sub.add_parser('demo', help='denoise the bundled image with the bundled DnCNN weights')
  p.add_argument('--out', default='demo_out', help='output folder (default: demo_out)')
  p.add_argument('--overwrite', action='store_true')
  p.set_defaults(func=_cmd_demo)
  return parser


def main(argv=None) -> int:
  args = build_parser().parse_args(argv)
  try:
    return args.func(args)
  except (ValueError, FileNotFoundError, FileExistsError, TypeError) as e:
    print(f'jaxrestore {args.command}: error: {e}', file=sys.stderr)
    return 2


if __name__ == '__main__':
  sys.exit(main())
