"""Kernels (installed as `jaxrestore.kernels`): each beside its plain `jax.numpy` reference twin.

Models pick an implementation by name through `get_window_attention`, so a faster kernel can be
swapped in without touching model code. The Pallas kernels are registered as 'pallas'; they run in
interpret mode on CPU (slow, for tests), the Triton lowering on GPUs and Mosaic on TPUs. 'auto' (the
models' default) uses them on GPU/TPU after a one-time self-check, and XLA on CPU.
"""
from __future__ import annotations

import concurrent.futures
import functools
import os
import warnings
from typing import Callable

import jax
import jax.numpy as jnp

from .channel_attention import channel_attention, channel_attention_reference
from .frequency import (colored_noise, frequency_filter, frequency_filter_reference, haar_dwt,
                        haar_dwt_reference, haar_idwt, haar_idwt_reference)
from .window_attention import window_attention, window_attention_reference

__all__ = ['window_attention', 'window_attention_reference', 'get_window_attention',
           'register_window_attention', 'WINDOW_ATTENTION_IMPLEMENTATIONS',
           'channel_attention', 'channel_attention_reference', 'get_channel_attention',
           'register_channel_attention', 'CHANNEL_ATTENTION_IMPLEMENTATIONS',
           'frequency_filter', 'frequency_filter_reference', 'haar_dwt', 'haar_dwt_reference',
           'haar_idwt', 'haar_idwt_reference', 'colored_noise']

WINDOW_ATTENTION_IMPLEMENTATIONS: dict[str, Callable] = {
    'reference': window_attention_reference,
    'xla': window_attention_reference,
}


CHANNEL_ATTENTION_IMPLEMENTATIONS: dict[str, Callable] = {
    'reference': channel_attention_reference,
    'xla': channel_attention_reference,
}


IMPLEMENTATIONS: dict[str, dict[str, Callable]] = {
    'window-attention': WINDOW_ATTENTION_IMPLEMENTATIONS,
    'channel-attention': CHANNEL_ATTENTION_IMPLEMENTATIONS,
}


def register_window_attention(name: str, fn: Callable) -> None:
  WINDOW_ATTENTION_IMPLEMENTATIONS[name] = fn


def register_channel_attention(name: str, fn: Callable) -> None:
  CHANNEL_ATTENTION_IMPLEMENTATIONS[name] = fn


KERNEL_ENV = 'JAXRESTORE_KERNELS'
ACCELERATOR_PLATFORMS = ('gpu', 'tpu')


def _platform() -> str:
  return jax.default_backend()


def _max_error(a, b):
  return jnp.max(jnp.abs(jnp.asarray(a, jnp.float32) - jnp.asarray(b, jnp.float32)))


def _window_attention_cases():
  """SwinIR-like shapes: N = 64 and 49, head dim 30 (both padded inside the kernel), shift mask;
  float32 and bfloat16 (with bf16-sized tolerances)."""
  keys = jax.random.split(jax.random.key(0), 5)
  for n, dtype in ((64, jnp.float32), (49, jnp.float32), (64, jnp.bfloat16)):
    q, k, v = (jax.random.normal(key, (8, 2, n, 30), dtype) for key in keys[:3])
    bias = jax.random.normal(keys[3], (2, n, n), dtype)
    mask = jnp.where(jax.random.uniform(keys[4], (4, n, n)) < 0.3, -100.0, 0.0).astype(dtype)
    yield (q, k, v, bias, mask)


def _channel_attention_cases():
  keys = jax.random.split(jax.random.key(0), 4)
  for dtype in (jnp.float32, jnp.bfloat16):
    q, k, v = (jax.random.normal(key, (1, 2, 48, 24 * 24), dtype) for key in keys[:3])
    yield (q, k, v, jnp.exp(0.5 * jax.random.normal(keys[3], (2,), dtype)))


SELF_CHECKS: dict[str, Callable] = {
    'window-attention': _window_attention_cases,
    'channel-attention': _channel_attention_cases,
}
SELF_CHECK_TOLERANCE = {jnp.dtype(jnp.float32): 1e-4, jnp.dtype(jnp.bfloat16): 6e-2}


@functools.cache
def kernel_self_check(what: str, platform: str) -> bool:
  """Runs the registered 'pallas' kernel once on this accelerator, forward and gradients, against
  the XLA reference; False (with a warning naming the failure) if it fails to compile or disagrees.

  'auto' trusts a kernel on a device only after this check, so a lowering bug or an unsupported
  device falls back to XLA instead of producing wrong images. Cached per kernel and platform.
  """
  table = IMPLEMENTATIONS[what]
  kernel, reference = table['pallas'], table['xla']

  def loss(fn, *args):
    return jnp.sum(jnp.sin(fn(*args)))

  @jax.jit
  def errors(args):
    n_grad = len(args) - (1 if what == 'window-attention' else 0)   # not the shift mask
    argnums = tuple(range(n_grad))
    grads = jax.grad(lambda *a: loss(kernel, *a), argnums)(*args)
    ref_grads = jax.grad(lambda *a: loss(reference, *a), argnums)(*args)
    return (_max_error(kernel(*args), reference(*args)),
            jnp.max(jnp.stack([_max_error(g, r) for g, r in zip(grads, ref_grads)])))

  def run_checks():
    # The kernels compute float32 products exactly; so must the reference they are judged against
    # (TPUs default to bf16 passes for float32 matmuls).
    with jax.default_matmul_precision('highest'):
      _run_checks()

  def _run_checks():
    for args in SELF_CHECKS[what]():
      fwd_err, grad_err = (float(e) for e in errors(args))
      tol = SELF_CHECK_TOLERANCE[args[0].dtype]
      if not (fwd_err <= tol and grad_err <= tol):
        raise AssertionError(f'{args[0].dtype} {args[0].shape}: max error forward {fwd_err:.2e}, '
                             f'gradients {grad_err:.2e} (tolerance {tol:.0e})')

  try:
    # JAX's trace state is per thread: a fresh thread runs the check eagerly even when the caller
    # is in the middle of tracing a model under `jit`.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
      pool.submit(run_checks).result()
  except Exception as e:  # noqa: BLE001 -- any failure means: do not use the kernel here
    warnings.warn(f'jaxrestore: the Pallas {what} kernel failed its self-check on {platform} '
                  f'({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ""}); using the XLA '
                  f'implementation. Set {KERNEL_ENV}=xla to skip the check.', RuntimeWarning,
                  stacklevel=2)
    return False
  return True


def _pick(what: str, name: str) -> Callable:
  """'auto' picks the Pallas kernel on GPU/TPU once it passed `kernel_self_check` there, and the XLA
  reference on CPU (where Pallas only interprets). $JAXRESTORE_KERNELS=xla|pallas|auto overrides
  what 'auto' means, e.g. to rule kernels out on an accelerator."""
  table = IMPLEMENTATIONS[what]
  if name == 'auto':
    name = os.environ.get(KERNEL_ENV, 'auto') or 'auto'
    if name == 'auto':
      platform = _platform()
      name = ('pallas' if platform in ACCELERATOR_PLATFORMS and 'pallas' in table
              and kernel_self_check(what, platform) else 'xla')
  try:
    return table[name]
  except KeyError:
    raise ValueError(f'unknown {what} implementation {name!r}; available: {sorted(table)} or "auto"'
                     + (f' (from ${KERNEL_ENV})' if name == os.environ.get(KERNEL_ENV) else '')) from None


register_window_attention('pallas', window_attention)
register_channel_attention('pallas', channel_attention)


def get_window_attention(name: str = 'auto') -> Callable:
  return _pick('window-attention', name)


def get_channel_attention(name: str = 'auto') -> Callable:
  return _pick('channel-attention', name)
