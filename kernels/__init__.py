"""Kernels (installed as `jaxrestore.kernels`): each beside its plain `jax.numpy` reference twin.

Models pick an implementation by name through `get_window_attention`, so a faster kernel can be
swapped in without touching model code. The Pallas kernels are registered as 'pallas'; they run in
interpret mode on CPU (slow, for tests), the Triton lowering on GPUs and Mosaic on TPUs.
"""
from __future__ import annotations

from typing import Callable

import jax

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


def register_window_attention(name: str, fn: Callable) -> None:
  WINDOW_ATTENTION_IMPLEMENTATIONS[name] = fn


def register_channel_attention(name: str, fn: Callable) -> None:
  CHANNEL_ATTENTION_IMPLEMENTATIONS[name] = fn


# Backends on which the Pallas kernels have been validated on real hardware; 'auto' uses them
# only there. They pass in interpret mode and lower for Triton and Mosaic TPU, but have not yet run
# on a GPU or TPU, so 'auto' stays on XLA everywhere until they have (select 'pallas' explicitly).
VALIDATED_KERNEL_BACKENDS: frozenset[str] = frozenset()


def _pick(table: dict[str, Callable], name: str, what: str) -> Callable:
  """'auto' picks the fused kernel on validated accelerators, the XLA reference otherwise."""
  if name == 'auto':
    name = 'pallas' if jax.default_backend() in VALIDATED_KERNEL_BACKENDS and 'pallas' in table else 'xla'
  try:
    return table[name]
  except KeyError:
    raise ValueError(f'unknown {what} implementation {name!r}; available: {sorted(table)} or "auto"') from None


register_window_attention('pallas', window_attention)
register_channel_attention('pallas', channel_attention)


def get_window_attention(name: str = 'auto') -> Callable:
  return _pick(WINDOW_ATTENTION_IMPLEMENTATIONS, name, 'window-attention')


def get_channel_attention(name: str = 'auto') -> Callable:
  return _pick(CHANNEL_ATTENTION_IMPLEMENTATIONS, name, 'channel-attention')
