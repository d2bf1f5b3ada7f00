"""Transposed "channel" attention (Restormer's MDTA), used by Restormer, PromptIR and HAIR.

Per batch and head, q and k are L2-normalised over pixels, reduced into a (C, C) attention scaled by
a learned temperature, softmaxed over the last axis and applied to v:

  q, k, v:      (batch, heads, channels, pixels)  channels = channels per head
  temperature:  (heads,)
  returns       (batch, heads, channels, pixels)

`channel_attention_reference` is the plain `jax.numpy` twin every kernel is tested against.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

NORMALIZE_EPS = 1e-12  # torch.nn.functional.normalize: x / max(||x||, eps)


def _l2_normalize(x):
  norm = jnp.sqrt(jnp.sum(jnp.square(x.astype(jnp.float32)), axis=-1, keepdims=True))
  return x / jnp.maximum(norm, NORMALIZE_EPS).astype(x.dtype)


def channel_attention_reference(q, k, v, temperature):
  """Unfused XLA MDTA core with float32 reductions and softmax."""
  q, k = _l2_normalize(q), _l2_normalize(k)
  scores = jnp.einsum('bhcn,bhdn->bhcd', q, k, preferred_element_type=jnp.float32)
  scores = scores * temperature.astype(jnp.float32).reshape(1, -1, 1, 1)
  probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
  return jnp.einsum('bhcd,bhdn->bhcn', probs, v, preferred_element_type=jnp.float32).astype(v.dtype)
