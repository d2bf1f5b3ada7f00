"""Where JAX's peak RSS comes from: resident memory after each stage of a `jaxrestore bench` JAX row.

    python benchmarks/rss_stages.py [--preset hair-3d] [--size 128] [--batch 1]

Prints one line per stage -- imports, building the model (random weights, as `bench` does), placing
the weights, compiling the forward, two forward calls -- with the process's peak RSS so far and its
current RSS (MiB), then one JSON line. The differences between stages say whether the peak is set
by fixed costs (building, compiling) or by the forward's activations.
"""
from __future__ import annotations

import argparse
import json
import resource


def _peak_mib() -> int:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024


def _current_mib() -> int:
  with open('/proc/self/statm') as f:
    return int(f.read().split()[1]) * resource.getpagesize() // 2 ** 20


def main():
  ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  ap.add_argument('--preset', default='hair-3d')
  ap.add_argument('--size', type=int, default=128)
  ap.add_argument('--batch', type=int, default=1)
  args = ap.parse_args()
  stages = []

  def stage(name):
    stages.append(dict(stage=name, peak_mib=_peak_mib(), current_mib=_current_mib()))
    print(f'{name:10s} peak {stages[-1]["peak_mib"]:6d} MiB   current {stages[-1]["current_mib"]:6d} MiB')

  import jax
  import numpy as np
  import jaxrestore
  from jaxrestore.inference import get_restorer
  stage('imports')
  model = jaxrestore.load(args.preset, pretrained=False)
  stage('build')
  restorer = get_restorer(model)
  stage('place')
  x = np.random.default_rng(0).random((args.batch, args.size, args.size, model.config.in_chans), dtype=np.float32)
  step = x[:restorer.micro_batch * restorer.num_devices] if restorer.micro_batch else x
  restorer.compile(step)
  stage('compile')
  restorer(x)
  stage('forward 1')
  restorer(x)
  stage('forward 2')
  print(json.dumps(dict(preset=args.preset, size=args.size, batch=args.batch, stages=stages)))


if __name__ == '__main__':
  main()
