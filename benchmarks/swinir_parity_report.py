"""Max |JAX - PyTorch| per SwinIR configuration family (the cases of tests/test_swinir.py), for the
README and release notes. Random weights, float32, CPU.

  python benchmarks/swinir_parity_report.py
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

TESTS = Path(__file__).resolve().parent.parent / 'tests'
sys.path[:0] = [str(TESTS), str(TESTS / 'shims')]


def main():
  import torch
  import test_swinir as cases
  from jaxrestore.convert.build import model_from_state_dict
  from jaxrestore.models.swinir import SwinIRConfig
  from jaxrestore.registry import get_architecture
  from torch_reference import float64_error_bound, run_nchw, state_dict_numpy

  print('| configuration | input sizes | max abs diff (float32) |')
  print('|---|---|---|')
  for name, hp in cases.CASES.items():
    tmodel = cases._torch_model(hp)
    model = model_from_state_dict(get_architecture('swinir'), SwinIRConfig(**hp), state_dict_numpy(tmodel))
    rng = np.random.default_rng(0)
    worst = 0.0
    for h, w in cases.SIZES:
      x = rng.random((2, h, w, hp['in_chans']), dtype=np.float32)
      worst = max(worst, float(np.max(np.abs(cases._jax_forward(model, x) - run_nchw(tmodel, x)))))
    print(f'| {name} | {", ".join(f"{h}x{w}" for h, w in cases.SIZES)} | {worst:.2e} |')

  import jaxrestore
  preset = jaxrestore.get_preset('swinir-color-dn15')
  tmodel = cases._torch_model(preset.hyperparameters, seed=1)
  model = model_from_state_dict(get_architecture('swinir'), SwinIRConfig(**preset.hyperparameters),
                                state_dict_numpy(tmodel))
  x = np.random.default_rng(1).random((1, 27, 35, 3), dtype=np.float32)
  ours, ref32, ref64 = cases._jax_forward(model, x), run_nchw(tmodel, x), run_nchw(tmodel, x, torch.float64)
  err, allowed = float64_error_bound(ours, ref32, ref64)
  print(f'| full SwinIR-M (swinir-color-dn15) | 27x35 | {np.max(np.abs(ours - ref32)):.2e}; vs float64: '
        f'JAX {err:.2e}, PyTorch {allowed / 3:.2e} |')


if __name__ == '__main__':
  main()
