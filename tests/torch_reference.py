"""Helpers for parity tests against PyTorch reference implementations (spandrel)."""
from __future__ import annotations

import numpy as np
import torch


def randomize_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
  """Overwrites every parameter so that no path is trivial (default inits zero many biases)."""
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      z = torch.randn(p.shape, generator=g, dtype=torch.float32).to(p.dtype)
      leaf = name.rsplit('.', 1)[-1]
      if 'norm' in name and leaf == 'weight':
        p.copy_(1 + 0.1 * z)
      elif leaf == 'bias':
        p.copy_(0.05 * z)
      elif 'relative_position_bias_table' in name:
        p.copy_(0.5 * z)
      elif p.ndim >= 2:
        p.copy_(z / np.sqrt(p.numel() / p.shape[0]))
      else:
        p.copy_(0.5 * z)
  return model.eval()


def state_dict_numpy(model: torch.nn.Module) -> dict[str, np.ndarray]:
  return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}


def run_nchw(model: torch.nn.Module, x_nhwc: np.ndarray, dtype=torch.float32) -> np.ndarray:
  """Runs a PyTorch model on an NHWC numpy batch and returns NHWC numpy."""
  x = torch.from_numpy(np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2))).to(dtype)
  with torch.no_grad():
    y = model.to(dtype)(x)
  model.float()
  return y.numpy().transpose(0, 2, 3, 1)


def float64_error_bound(jax_out: np.ndarray, torch32: np.ndarray, torch64: np.ndarray,
                        factor: float = 3.0) -> tuple[float, float]:
  """(JAX float32 error, allowed error) against the float64 reference run."""
  ours = float(np.max(np.abs(jax_out.astype(np.float64) - torch64)))
  theirs = float(np.max(np.abs(torch32.astype(np.float64) - torch64)))
  return ours, factor * theirs
