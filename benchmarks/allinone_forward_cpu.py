"""Forward time on CPU of Restormer, PromptIR and HAIR, JAX against the official PyTorch networks in
one process on the same weights (float32, median of a few runs); outputs are compared too.

  python benchmarks/allinone_forward_cpu.py [--size 128] [--batch 1] [--repeats 5] \
      [--official-promptir PATH/TO/PromptIR] [--official-hair PATH/TO/HAIR]

* Restormer: the released configuration (preset restormer-motion-deblur), random weights, timed
  against spandrel_extra_arches' Restormer (the official network code).
* PromptIR and HAIR: (a) the golden configurations (../shared/data/golden/*_small.pth: official
  random weights, loaded through jaxrestore.load as a user would), (b) the released 3-degradation
  configurations (presets promptir-3d / hair-3d) with random weights. Their official code has no pip
  package and is not vendored in this repository: pass a checkout of github.com/va1shn9v/PromptIR
  (net/model.py) and of github.com/toummHus/HAIR (net/HAIR.py, utils/ResNet.py) to get the PyTorch
  columns; without them those columns read n/a.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import json
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


@contextlib.contextmanager
def _isolated_import_path(root: str):
  """Both official repos have top-level `net` (and HAIR `utils`) packages: import each in isolation."""
  def drop():
    return {k: sys.modules.pop(k) for k in list(sys.modules) if k.split('.')[0] in ('net', 'utils')}
  saved = drop()
  sys.path.insert(0, root)
  try:
    yield
  finally:
    sys.path.remove(root)
    drop()
    sys.modules.update(saved)


def official_class(arch: str, root: str | None):
  """The official PyTorch class from a checkout (the module its architecture's `torch_reference`
  declares), or None."""
  if not root:
    return None
  from jaxrestore.registry import get_architecture
  reference = get_architecture(arch).torch_reference
  module, name = reference.module, reference.cls
  if not (Path(root) / (module.replace('.', '/') + '.py')).is_file():
    raise SystemExit(f'--official-{arch} {root}: no {module.replace(".", "/")}.py there '
                     f'(expected a checkout of {reference.checkout})')
  with _isolated_import_path(str(Path(root).resolve())):
    return getattr(importlib.import_module(module), name)


def _cases(arch: str, data_root: Path, official):
  """(label, JAX model, PyTorch model or None) for the golden and the released configuration."""
  import jaxrestore
  import torch
  from flax import nnx
  from jaxrestore.convert.build import model_from_state_dict
  from jaxrestore.registry import get_architecture
  from torch_reference import randomize_, state_dict_numpy

  a = get_architecture(arch)
  case, hp = GOLDEN[arch]
  path = data_root / 'golden' / f'{case}.pth'
  if path.is_file():
    model = jaxrestore.load(weights=path)
    tmodel = None
    if official is not None:
      kwargs = json.loads((data_root / 'golden' / f'{case}.json').read_text())['constructor_kwargs']
      tmodel = official(**kwargs).eval()
      state = torch.load(path, map_location='cpu', weights_only=True)['state_dict']
      tmodel.load_state_dict({k.removeprefix('net.'): v.float() for k, v in state.items()}, strict=True)
    yield f'{a.model_cls.__name__} small (golden {case}.pth)', model, tmodel
  else:
    yield (f'{a.model_cls.__name__} small (random init)',
           a.model_cls(a.config_cls(**hp), rngs=nnx.Rngs(0)), None)

  preset = jaxrestore.get_preset(f'{arch}-3d')
  label = f'{a.model_cls.__name__} released config ({preset.name})'
  if official is None:
    yield label, a.model_cls(a.config_cls(**preset.hyperparameters), rngs=nnx.Rngs(0)), None
    return
  kwargs = {k: list(v) if isinstance(v, tuple) else v for k, v in preset.hyperparameters.items()}
  tmodel = randomize_(official(**kwargs), seed=0)
  yield label, model_from_state_dict(a, a.config_cls(**preset.hyperparameters), state_dict_numpy(tmodel)), tmodel


def _time_torch(tmodel, x: np.ndarray, repeats: int) -> tuple[float, np.ndarray]:
  import torch
  xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
  with torch.no_grad():
    y = tmodel(xt).numpy().transpose(0, 2, 3, 1)
    return _median_time(lambda: tmodel(xt), repeats), y


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument('--size', type=int, default=128)
  ap.add_argument('--batch', type=int, default=1)
  ap.add_argument('--repeats', type=int, default=5)
  ap.add_argument('--data', default=os.environ.get('JAXRESTORE_DATA', str(REPO.parent / 'shared' / 'data')))
  ap.add_argument('--official-promptir', metavar='DIR', help='checkout of github.com/va1shn9v/PromptIR')
  ap.add_argument('--official-hair', metavar='DIR', help='checkout of github.com/toummHus/HAIR')
  args = ap.parse_args()
  officials = {'promptir': official_class('promptir', args.official_promptir),
               'hair': official_class('hair', args.official_hair)}

  import jax
  import torch
  from spandrel_extra_arches.architectures.Restormer import Restormer as TorchRestormer

  import jaxrestore
  from jaxrestore.convert.build import model_from_state_dict
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
  tt, y_torch = _time_torch(tmodel, x, args.repeats)
  rows.append(('Restormer released config (restormer-motion-deblur)', _num_params(model), jt, compile_s,
               tt, float(np.max(np.abs(y_jax - y_torch))), float(np.max(np.abs(y_torch)))))
  del model, tmodel

  for arch in ('promptir', 'hair'):
    for label, model, tmodel in _cases(arch, Path(args.data), officials[arch]):
      jt, compile_s, y_jax = _time_jax(model, x, args.repeats)
      if tmodel is None:
        rows.append((label, _num_params(model), jt, compile_s, None, None, None))
      else:
        tt, y_torch = _time_torch(tmodel, x, args.repeats)
        rows.append((label, _num_params(model), jt, compile_s, tt, float(np.max(np.abs(y_jax - y_torch))),
                     float(np.max(np.abs(y_torch)))))
      del model, tmodel

  print(f'machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; '
        f'jax {jax.__version__} ({jax.default_backend()}), torch {torch.__version__} '
        f'({torch.get_num_threads()} threads)')
  print(f'forward, batch {args.batch}, {args.size}x{args.size}, float32, median of {args.repeats} runs:\n')
  header = (f'| {"model":<52} | {"params":>8} | {"JAX ms":>8} | {"compile s":>9} | {"PyTorch ms":>10} '
            f'| {"PyTorch/JAX":>11} | {"max abs diff":>12} | {"max abs out":>11} |')
  print(header)
  print('|' + '|'.join('-' * (len(c)) for c in header.split('|')[1:-1]) + '|')
  for name, params, jt, cs, tt, diff, scale in rows:
    na = lambda width: f'{"n/a":>{width}}'
    torch_ms = f'{tt * 1000:10.1f}' if tt is not None else na(10)
    ratio = f'{tt / jt:11.2f}' if tt is not None else na(11)
    diff_s = f'{diff:12.2e}' if diff is not None else na(12)
    scale_s = f'{scale:11.3g}' if scale is not None else na(11)
    print(f'| {name:<52} | {params / 1e6:7.2f}M | {jt * 1000:8.1f} | {cs:9.1f} | {torch_ms} | {ratio} '
          f'| {diff_s} | {scale_s} |')
  if any(officials[a] is None for a in officials):
    print('\nn/a: PromptIR / HAIR PyTorch columns need --official-promptir / --official-hair (their '
          'official code has no pip package and is not vendored here).')


if __name__ == '__main__':
  main()
