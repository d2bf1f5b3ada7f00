"""Kernels (installed as `jaxrestore.kernels`): each beside its plain `jax.numpy` reference twin.

Models pick an implementation by name through `get_window_attention`, so a faster kernel can be
swapped in without touching model code.
"""
from __future__ import annotations

from typing import Callable

import jax

from .channel_attention import channel_attention_reference
from .window_attention import window_attention_reference

__all__ = ['window_attention_reference', 'get_window_attention', 'register_window_attention',
           'WINDOW_ATTENTION_IMPLEMENTATIONS', 'channel_attention_reference', 'get_channel_attention',
           'register_channel_attention', 'CHANNEL_ATTENTION_IMPLEMENTATIONS']

WINDOW_ATTENTION_IMPLEMENTATIONS: dict[str, Callable] = {
    'reference': window_attention_reference,
    'xla': window_attention_reference,
}


CHANNEL_ATTENTION_IMPLEMENTATIONS: dict[str, Callable] = {
    'reference': channel_attention_reference,
    'xla': channel_attention_reference,
}


def register_window_attention(name: str, fn: Callable) -> None:
  WINDOW_ATTENTION_IMPLEMENTATIONS[name] = fn


def register_channel_attention(name: str, fn: Callable) -> None:
  CHANNEL_ATTENTION_IMPLEMENTATIONS[name] = fn


def _pick(table: dict[str, Callable], name: str, what: str) -> Callable:
  """'auto' picks a fused kernel on GPU/TPU when one is registered, the XLA reference otherwise."""
  if name == 'auto':
    name = 'pallas' if jax.default_backend() in ('gpu', 'tpu') and 'pallas' in table else 'xla'
  try:
    return table[name]
  except KeyError:
    raise ValueError(f'unknown {what} implementation {name!r}; available: {sorted(table)} or "auto"') from None


def get_window_attention(name: str = 'auto') -> Callable:
  return _pick(WINDOW_ATTENTION_IMPLEMENTATIONS, name, 'window-attention')


def get_channel_attention(name: str = 'auto') -> Callable:
  return _pick(CHANNEL_ATTENTION_IMPLEMENTATIONS, name, 'channel-attention')
