"""Kernels (installed as `jaxrestore.kernels`): each beside its plain `jax.numpy` reference twin.

Models pick an implementation by name through `get_window_attention`, so a faster kernel can be
swapped in without touching model code.
"""
from __future__ import annotations

from typing import Callable

import jax

from .window_attention import window_attention_reference

__all__ = ['window_attention_reference', 'get_window_attention', 'register_window_attention',
           'WINDOW_ATTENTION_IMPLEMENTATIONS']

WINDOW_ATTENTION_IMPLEMENTATIONS: dict[str, Callable] = {
    'reference': window_attention_reference,
    'xla': window_attention_reference,
}


def register_window_attention(name: str, fn: Callable) -> None:
  WINDOW_ATTENTION_IMPLEMENTATIONS[name] = fn


def get_window_attention(name: str = 'auto') -> Callable:
  """'auto' picks a fused kernel on GPU/TPU when one is registered, the XLA reference otherwise."""
  if name == 'auto':
    backend = jax.default_backend()
    if backend in ('gpu', 'tpu') and 'pallas' in WINDOW_ATTENTION_IMPLEMENTATIONS:
      name = 'pallas'
    else:
      name = 'xla'
  try:
    return WINDOW_ATTENTION_IMPLEMENTATIONS[name]
  except KeyError:
    raise ValueError(f'unknown window-attention implementation {name!r}; available: '
                     f'{sorted(WINDOW_ATTENTION_IMPLEMENTATIONS)} or "auto"') from None
