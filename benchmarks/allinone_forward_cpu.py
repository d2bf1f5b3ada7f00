"""Forward time on CPU of Restormer, PromptIR and HAIR in JAX, with PyTorch where a PyTorch
implementation is installed, in one process on the same weights (float32, median of a few runs).

  python benchmarks/allinone_forward_cpu.py [--size 128] [--batch 1] [--repeats 5]

* Restormer: the released configuration (preset restormer-motion-deblur), random weights, timed
  against spandrel_extra_arches' Restormer (the official network code); both outputs are compared.
* PromptIR and HAIR: the golden configurations (../shared/data/golden/*_small.pth, random weights,
  loaded through jaxrestore.load) -- or, without the golden files, the same configurations randomly
  initialised. Their official code is not an installable package and is not vendored here, so they
  have no PyTorch timing (reported as n/a).
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / 'tests'))
sys.path.insert(0, str(REPO / 'tests' / 'shims'))

GOLDEN = {
    'promptir': ('promptir_small', dict(num_blocks=(2, 1, 1, 1), num_refinement_blocks=2)),
    'hair': ('hair_small', dict(num_blocks=(1, 1, 1, 2), num_refinement_blocks=1)),
}


def _median_time(fn, repeats: int) -> float:
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return float(np.median(times))


def _time_jax(model, x, repeats: int) -> tuple[float, float, np.ndarray]:
  from flax import nnx
  forward = nnx.jit(lambda m, v: m(v))
  t0 = time.perf_counter()
  y = np.asarray(forward(model, x))
  compile_s = time.perf_counter() - t0
  return _median_time(lambda: forward(model, x).block_until_ready(), repeats), compile_s, y


def _num_params(model) -> int:
  from flax import nnx
  return sum(int(np.prod(v.shape)) for _, v in nnx.to_flat_state(nnx.state(model, nnx.Param)))


def _golden_or_random(arch: str, data_root: Path):
  import jaxrestore
  from jaxrestore.registry import get_architecture
  from flax import nnx
  case, hp = GOLDEN[arch]
  path = data_root / 'golden' / f'{case}.pth'
  if path.is_file():
    return jaxrestore.load(weights=path), f'golden {case}.pth'
  a = get_architecture(arch)
  return a.model_cls(a.config_cls(**hp), rngs=nnx.Rngs(0)), 'random init (golden file not found)'


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument('--size', type=int, default=128)
  ap.add_argument('--batch', type=int, default=1)
  ap.add_argument('--repeats', type=int, default=5)
  ap.add_argument('--data', default=os.environ.get('JAXRESTORE_DATA', str(REPO.parent / 'shared' / 'data')))
  args = ap.parse_args()

  import jax
  import torch
  from spandrel_extra_arches.architectures.Restormer import Restormer as TorchRestormer

  import jaxrestore
  from jaxrestore.api import model_from_state_dict
  from jaxrestore.models.restormer import RestormerConfig
  from jaxrestore.registry import get_architecture
  from torch_reference import randomize_, state_dict_numpy

  x = np.random.default_rng(0).random((args.batch, args.size, args.size, 3), dtype=np.float32)
  rows = []

  preset = jaxrestore.get_preset('restormer-motion-deblur')
  tmodel = randomize_(TorchRestormer(**preset.hyperparameters), seed=0)
  model = model_from_state_dict(get_architecture('restormer'), RestormerConfig(**preset.hyperparameters),
                                state_dict_numpy(tmodel))
  jt, compile_s, y_jax = _time_jax(model, x, args.repeats)
  xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
  with torch.no_grad():
    y_torch = tmodel(xt).numpy().transpose(0, 2, 3, 1)
    tt = _median_time(lambda: tmodel(xt), args.repeats)
  rows.append(('Restormer (motion-deblur config)', _num_params(model), jt, compile_s, tt,
               float(np.max(np.abs(y_jax - y_torch)))))
  restormer_scale = float(np.max(np.abs(y_torch)))

  for arch in ('promptir', 'hair'):
    model, source = _golden_or_random(arch, Path(args.data))
    jt, compile_s, _ = _time_jax(model, x, args.repeats)
    rows.append((f'{type(model).__name__} ({source})', _num_params(model), jt, compile_s, None, None))

  print(f'machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; '
        f'jax {jax.__version__} ({jax.default_backend()}), torch {torch.__version__} '
        f'({torch.get_num_threads()} threads)')
  print(f'forward, batch {args.batch}, {args.size}x{args.size}, float32, median of {args.repeats} runs:\n')
  header = (f'| {"model":<44} | {"params":>8} | {"JAX ms":>8} | {"compile s":>9} | {"PyTorch ms":>10} '
            f'| {"PyTorch/JAX":>11} | {"max abs diff":>12} |')
  print(header)
  print('|' + '|'.join('-' * (len(c)) for c in header.split('|')[1:-1]) + '|')
  for name, params, jt, cs, tt, diff in rows:
    torch_ms = f'{tt * 1000:10.1f}' if tt is not None else f'{"n/a":>10}'
    ratio = f'{tt / jt:11.2f}' if tt is not None else f'{"n/a":>11}'
    diff_s = f'{diff:12.2e}' if diff is not None else f'{"n/a":>12}'
    print(f'| {name:<44} | {params / 1e6:7.2f}M | {jt * 1000:8.1f} | {cs:9.1f} | {torch_ms} | {ratio} '
          f'| {diff_s} |')
  print(f'\nRestormer outputs (random weights) reach |{restormer_scale:.3g}|.')
  print('PromptIR / HAIR: no PyTorch timing -- their official code is not an installable package and is '
        'not vendored in this repository.')


if __name__ == '__main__':
  main()
