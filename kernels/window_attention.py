"""Shifted-window attention: softmax(q·kᵀ·scale + bias + mask)·v per window and head.

`window_attention_reference` is the plain `jax.numpy` twin that every kernel implementation is
tested against, and the default on CPU. Shapes follow SwinIR's layout:

  q, k, v: (windows, heads, N, D)  windows ordered batch-major: w = b * mask_windows + i
  bias:    (heads, N, N)           the gathered relative-position bias
  mask:    (mask_windows, N, N)    the shift mask; window w uses mask[w % mask_windows]
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def window_attention_reference(q, k, v, bias, mask=None, *, scale=None):
  """Unfused XLA window attention, with float32 softmax for low-precision inputs."""
  windows, heads, n, d = q.shape
  if scale is None:
    scale = d ** -0.5
  scores = jnp.einsum('whnd,whmd->whnm', q * jnp.asarray(scale, q.dtype), k,
                      preferred_element_type=jnp.float32)
  scores = scores + bias.astype(jnp.float32)[None]
  if mask is not None:
    mask_windows = mask.shape[0]
    if windows % mask_windows:
      raise ValueError(f'window_attention: {windows} windows is not a multiple of the '
                       f'{mask_windows} mask windows')
    scores = scores.reshape(windows // mask_windows, mask_windows, heads, n, n)
    scores = scores + mask.astype(jnp.float32)[None, :, None]
    scores = scores.reshape(windows, heads, n, n)
  probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
  return jnp.einsum('whnm,whmd->whnd', probs, v,
                    preferred_element_type=jnp.float32).astype(q.dtype)
