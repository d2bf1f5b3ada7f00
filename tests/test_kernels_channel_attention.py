"""The streaming Pallas MDTA kernel (interpret mode on CPU) against its XLA reference twin:
forward and gradients for q, k, v and temperature, float32 and bfloat16."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from jaxrestore.kernels.channel_attention import channel_attention, channel_attention_reference


def _inputs(b, heads, c, p, dtype, seed=0):
  ks = jax.random.split(jax.random.key(seed), 5)
  q, k, v, do = (jax.random.normal(ks[i], (b, heads, c, p)).astype(dtype) for i in (0, 1, 2, 4))
  temperature = jax.random.uniform(ks[3], (heads,), minval=0.5, maxval=4.0)
  return q, k, v, temperature, do


def _value_and_grads(fn, q, k, v, temperature, do, **kw):
  def loss(q, k, v, temperature):
    out = fn(q, k, v, temperature, **kw)
    return jnp.sum(out.astype(jnp.float32) * do.astype(jnp.float32)), out
  (_, out), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2, 3), has_aux=True))(
      q, k, v, temperature)
  return (out,) + grads


def _err(a, b):
  return float(jnp.max(jnp.abs(a.astype(jnp.float32) - b.astype(jnp.float32))))


NAMES = ('out', 'dq', 'dk', 'dv', 'dtemperature')


@pytest.mark.parametrize('b,heads,c,p,block', [
    pytest.param(1, 1, 16, 256, None, id='one-tile'),
    pytest.param(2, 2, 48, 300, None, id='restormer-c48-ragged-pixels'),
    pytest.param(1, 2, 8, 64, 16, id='c8-padded-channels-4-blocks'),
    pytest.param(3, 1, 32, 2048, 64, id='batch3-many-blocks-split'),
])
def test_float32_forward_and_gradients_match_reference(b, heads, c, p, block):
  q, k, v, t, do = _inputs(b, heads, c, p, jnp.float32)
  got = _value_and_grads(channel_attention, q, k, v, t, do, block_pixels=block)
  want = _value_and_grads(channel_attention_reference, q, k, v, t, do)
  for name, g, w in zip(NAMES, got, want):
    assert g.shape == w.shape and g.dtype == w.dtype, name
    assert _err(g, w) <= 1e-5 * max(1.0, float(jnp.max(jnp.abs(w)))), (name, _err(g, w))


def test_bfloat16_matches_float32_math_within_bf16_error():
  q, k, v, t, do = _inputs(2, 2, 48, 300, jnp.bfloat16, seed=1)
  got = _value_and_grads(channel_attention, q, k, v, t, do)
  ref16 = _value_and_grads(channel_attention_reference, q, k, v, t, do)
  f32 = lambda x: x.astype(jnp.float32)
  exact = _value_and_grads(channel_attention_reference, f32(q), f32(k), f32(v), t, f32(do))
  for name, g, r, e in zip(NAMES, got, ref16, exact):
    scale = float(jnp.max(jnp.abs(e)))
    assert _err(g, e) <= 2e-2 * scale, (name, _err(g, e), scale)
    assert _err(g, e) <= 2 * _err(r, e) + 1e-3 * scale, (name, _err(g, e), _err(r, e))


def test_rejects_bad_shapes():
  q, k, v, t, _ = _inputs(1, 2, 16, 64, jnp.float32)
  with pytest.raises(ValueError, match='temperature'):
    channel_attention(q, k, v, t[:1])
  with pytest.raises(ValueError, match='power of two'):
    channel_attention(q, k, v, t, block_pixels=48)


@pytest.mark.parametrize('platform,backend', [('cuda', 'triton'), ('tpu', 'mosaic_tpu')])
def test_lowers_for_gpu_and_tpu(platform, backend):
  """Without a GPU/TPU: forward and backward lower to Triton IR / Mosaic TPU (compiling them on
  the device is not tested here)."""
  q, t = jnp.zeros((1, 2, 48, 4096), jnp.bfloat16), jnp.ones((2,))

  def loss(q, k, v, t):
    return jnp.sum(channel_attention(q, k, v, t, backend=backend).astype(jnp.float32))

  text = jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3))).trace(q, q, q, t).lower(
      lowering_platforms=(platform,)).as_text()
  assert ('triton' if backend == 'triton' else 'tpu_custom_call') in text
