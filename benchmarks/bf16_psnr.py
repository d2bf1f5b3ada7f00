"""PSNR of bfloat16 vs float32 inference for a real checkpoint on a real test set.

  python benchmarks/bf16_psnr.py [--preset dncnn-gray-25] [--dataset Set12] [--tile 256]

The preset's official protocol through jaxrestore's evaluator (the inference engine, whole images,
or tiles with --tile); test sets by name from $JAXRESTORE_DATA (or --data-root) or as a folder.
"""
from __future__ import annotations

import argparse

import jax.numpy as jnp


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument('--preset', default='dncnn-gray-25')
  ap.add_argument('--weights', default=None)
  ap.add_argument('--dataset', default='Set12')
  ap.add_argument('--data-root', default=None, help='folder holding testsets/ (default: $JAXRESTORE_DATA)')
  ap.add_argument('--tile', type=int, default=256, help='tile size (0: whole images)')
  args = ap.parse_args()
  import jaxrestore
  from jaxrestore import datasets
  from jaxrestore.eval import protocol as proto
  from jaxrestore.eval.evaluator import Evaluator, prepare_test_set
  model = jaxrestore.load(args.preset, args.weights, pretrained=True)
  protocol = proto.protocol_for(jaxrestore.get_preset(args.preset), model.config)
  test_set = prepare_test_set(protocol, dataset=datasets.resolve(args.dataset, args.data_root), name=args.dataset)
  means = {}
  for name, dtype in (('float32', None), ('bfloat16', jnp.bfloat16)):
    evaluator = Evaluator(model, dtype=dtype, tile=args.tile or None, overlap=72)
    means[name] = evaluator.evaluate(test_set, protocol).mean()['psnr']
  print(f'{args.preset} on {args.dataset} ({protocol.label()}; list sha256 {test_set.list_sha256}): float32 '
        f'{means["float32"]:.3f} dB, bfloat16 {means["bfloat16"]:.3f} dB, '
        f'difference {means["float32"] - means["bfloat16"]:+.3f} dB')


if __name__ == '__main__':
  main()
