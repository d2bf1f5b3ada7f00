"""Scores trained-default models with the official protocol next to their low-quality input.

    python benchmarks/train_trained_defaults.py --dn WORKDIR_OR_EXPORT --car WORKDIR_OR_EXPORT [--json out.json]

--dn: a gray sigma=15 denoiser, scored on Set12 and BSD68 (KAIR protocol: np.random.seed(0) noise
per image, uint8 PSNR); --car: a gray JPEG q=20 model, scored on Classic5 (SwinIR's jpeg_car
protocol: PSNR, SSIM, PSNR-B). A workdir's `export/` is used when a workdir is given. Test sets come
from $JAXRESTORE_DATA (or --data-root); models run through jaxrestore's evaluator.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import jaxrestore
from jaxrestore import datasets
from jaxrestore.eval.evaluator import Evaluator, prepare_test_set
from jaxrestore.eval.protocol import Protocol, evaluate


def _weights(path: str) -> Path:
  p = Path(path)
  return p / 'export' if (p / 'export' / 'jaxrestore.json').is_file() else p


def score(weights, dataset: str, protocol: Protocol, root=None) -> dict:
  test_set = prepare_test_set(protocol, dataset=datasets.resolve(dataset, root), name=dataset)
  identity = evaluate(lambda x: x, test_set.samples, protocol).mean()
  out = {'input': identity, 'image_list_sha256': test_set.list_sha256}
  if weights is not None:
    model = jaxrestore.load(weights=weights)
    protocol = dataclasses.replace(protocol, window=model.config.eval_pad_multiple)
    t = time.perf_counter()
    out['model'] = Evaluator(model).evaluate(test_set, protocol).mean()
    out['seconds'] = time.perf_counter() - t
  return out


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--dn', help='sigma=15 gray denoiser (workdir or converted dir)')
  parser.add_argument('--car', help='JPEG q=20 gray model (workdir or converted dir)')
  parser.add_argument('--json', help='write the results here (a new file)')
  parser.add_argument('--data-root', help='folder holding testsets/ (default: $JAXRESTORE_DATA)')
  args = parser.parse_args(argv)
  if args.json and Path(args.json).exists():
    parser.error(f'--json {args.json}: exists; choose a new name')
  results = {}
  if args.dn:
    for dataset in ('Set12', 'BSD68'):
      results[f'{dataset} sigma15'] = score(_weights(args.dn), dataset, Protocol(task='gray_dn', noise_level=15),
                                            args.data_root)
  if args.car:
    results['Classic5 q20'] = score(_weights(args.car), 'Classic5', Protocol(task='jpeg_car', jpeg_quality=20),
                                    args.data_root)
  for name, r in results.items():
    line = f'{name:18s} input PSNR {r["input"]["psnr"]:.3f}'
    if 'model' in r:
      line += f'  ->  model PSNR {r["model"]["psnr"]:.3f}  SSIM {r["model"]["ssim"]:.4f}'
      if 'psnrb' in r['model']:
        line += f'  PSNR-B {r["model"]["psnrb"]:.3f} (input {r["input"]["psnrb"]:.3f})'
    print(line)
  if args.json:
    with open(args.json, 'x') as f:
      json.dump(results, f, indent=2)
  return 0


if __name__ == '__main__':
  raise SystemExit(main())
