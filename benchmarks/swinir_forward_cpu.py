"""Forward time of SwinIR-M color denoising (preset swinir-color-dn15) at 128x128, JAX vs PyTorch,
in one process on the same random weights; also checks that both agree.

  python benchmarks/swinir_forward_cpu.py [--size 128] [--repeats 5] [--threads N]
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / 'tests'))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / 'tests' / 'shims'))


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument('--preset', default='swinir-color-dn15')
  ap.add_argument('--size', type=int, default=128)
  ap.add_argument('--batch', type=int, default=1)
  ap.add_argument('--repeats', type=int, default=5)
  args = ap.parse_args()

  import jax
  import torch
  from flax import nnx
  from spandrel.architectures.SwinIR import SwinIR as TorchSwinIR

  import jaxrestore
  from jaxrestore.convert.build import model_from_state_dict
  from jaxrestore.models.swinir import SwinIRConfig
  from jaxrestore.registry import get_architecture
  from torch_reference import randomize_, run_nchw, state_dict_numpy

  preset = jaxrestore.get_preset(args.preset)
  tmodel = randomize_(TorchSwinIR(**preset.hyperparameters), seed=0)
  model = model_from_state_dict(get_architecture('swinir'), SwinIRConfig(**preset.hyperparameters),
                                state_dict_numpy(tmodel))
  x = np.random.default_rng(0).random((args.batch, args.size, args.size, preset.channels), dtype=np.float32)
  forward = nnx.jit(lambda m, v: m(v))

  t0 = time.perf_counter()
  y_jax = np.asarray(forward(model, x))
  compile_s = time.perf_counter() - t0
  jax_times = []
  for _ in range(args.repeats):
    t0 = time.perf_counter()
    forward(model, x).block_until_ready()
    jax_times.append(time.perf_counter() - t0)

  y_torch = run_nchw(tmodel, x)
  torch_times = []
  xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
  with torch.no_grad():
    for _ in range(args.repeats):
      t0 = time.perf_counter()
      tmodel(xt)
      torch_times.append(time.perf_counter() - t0)

  print(f'machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; '
        f'jax {jax.__version__} ({jax.default_backend()}), torch {torch.__version__} '
        f'({torch.get_num_threads()} threads)')
  print(f'{args.preset} forward, batch {args.batch}, {args.size}x{args.size}, float32, median of {args.repeats}:')
  jt, tt = float(np.median(jax_times)), float(np.median(torch_times))
  print(f'  JAX     {jt * 1000:8.1f} ms  (first call incl. compile {compile_s:.1f} s)')
  print(f'  PyTorch {tt * 1000:8.1f} ms')
  print(f'  PyTorch/JAX time ratio {tt / jt:.2f}')
  print(f'  max |JAX - PyTorch| = {np.max(np.abs(y_jax - y_torch)):.2e}')


if __name__ == '__main__':
  main()
