"""Helpers for parity tests against PyTorch reference implementations (spandrel)."""
from __future__ import annotations

import contextlib
import sys

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


def assert_golden_output(ours_nchw: np.ndarray, npz, label: str = '') -> None:
  """A golden case's tolerance: no further from the official float64 run than 3x PyTorch's own
  float32 error, and <= 1e-5 at output scale 1."""
  ref32, ref64 = npz['output'], npz['output_f64']
  assert ours_nchw.shape == ref32.shape
  err = float(np.max(np.abs(ours_nchw.astype(np.float64) - ref64)))
  torch_err = float(np.max(np.abs(ref32.astype(np.float64) - ref64)))
  assert err <= 3 * torch_err, f'{label}: {err:.3g} vs float64, PyTorch float32 {torch_err:.3g}'
  assert err <= 1e-5 * max(1.0, float(np.max(np.abs(ref64))))


def run_jax_nchw(model, x_nchw: np.ndarray) -> np.ndarray:
  """Runs an NHWC jaxrestore model (jitted) on an NCHW batch, as golden files store it."""
  from flax import nnx
  out = nnx.jit(lambda m, v: m(v))(model, x_nchw.transpose(0, 2, 3, 1))
  return np.asarray(out).transpose(0, 3, 1, 2)


def _float64_channel_attention(q, k, v, temperature):
  """MDTA core without the XLA reference's float32 norm, for float64 runs."""
  import jax
  import jax.numpy as jnp

  def normalize(x):
    return x / jnp.maximum(jnp.sqrt(jnp.sum(x * x, axis=-1, keepdims=True)), 1e-12)
  scores = jnp.einsum('bhcn,bhdn->bhcd', normalize(q), normalize(k)) * temperature.reshape(1, -1, 1, 1)
  return jnp.einsum('bhcd,bhdn->bhcn', jax.nn.softmax(scores, axis=-1), v)


def run_golden_float64(weights, x_nchw: np.ndarray) -> np.ndarray:
  """A golden checkpoint loaded and run in float64 (to compare with the official float64 run)."""
  import jax
  import jax.numpy as jnp
  import jaxrestore
  from jaxrestore import kernels
  kernels.register_channel_attention('float64-test', _float64_channel_attention)
  with jax.enable_x64(True):
    model = jaxrestore.load(weights=weights, param_dtype=jnp.float64, attention='float64-test')
    return run_jax_nchw(model, x_nchw.astype(np.float64))


@contextlib.contextmanager
def no_torchvision():
  """Hides tests/shims/torchvision (a stand-in that only lets spandrel import) from diffusers and
  transformers, which would take it for a real torchvision: a None entry in sys.modules makes
  importlib.util.find_spec answer None and `import torchvision` fail, as without the package."""
  saved = {k: sys.modules.pop(k) for k in list(sys.modules) if k.split('.')[0] == 'torchvision'}
  sys.modules['torchvision'] = None
  try:
    yield
  finally:
    del sys.modules['torchvision']
    sys.modules.update(saved)
