"""PSNR of bfloat16 vs float32 inference for a real checkpoint on a real test set.

  python benchmarks/bf16_psnr.py [--preset dncnn-gray-25] [--dataset Set12] [--sigma 25]

Uses the official denoising protocol (np.random.seed(0) per image) and `jaxrestore.restore`.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import jax.numpy as jnp


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument('--preset', default='dncnn-gray-25')
  ap.add_argument('--weights', default=None)
  ap.add_argument('--dataset', default='Set12')
  ap.add_argument('--tile', type=int, default=256)
  args = ap.parse_args()
  import jaxrestore
  from jaxrestore.eval import protocol as proto
  root = Path(os.environ.get('JAXRESTORE_DATA', Path(__file__).resolve().parents[2] / 'shared' / 'data'))
  model = jaxrestore.load(args.preset, args.weights, pretrained=True)
  protocol = proto.protocol_for(jaxrestore.get_preset(args.preset))
  images = proto.list_images(root / 'testsets' / args.dataset)
  means = {}
  for name, dtype in (('float32', None), ('bfloat16', jnp.bfloat16)):
    run = lambda x, dtype=dtype: jaxrestore.restore(model, x, tile=args.tile, overlap=72, dtype=dtype)
    means[name] = proto.evaluate(run, images, protocol).mean()['psnr']
  print(f'{args.preset} on {args.dataset} ({protocol.task}, sigma {protocol.noise_level}): float32 '
        f'{means["float32"]:.3f} dB, bfloat16 {means["bfloat16"]:.3f} dB, '
        f'difference {means["float32"] - means["bfloat16"]:+.3f} dB')


if __name__ == '__main__':
  main()
