"""The Pallas window-attention kernel (interpret mode on CPU) against its XLA reference twin:
forward and gradients, float32 and bfloat16, SwinIR's shapes, and SwinIR end to end."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxrestore import kernels
from jaxrestore.kernels.window_attention import window_attention, window_attention_reference
from jaxrestore.models.swinir import SwinIR, SwinIRConfig, shift_window_mask


def _inputs(windows, heads, n, d, mask_windows, dtype, seed=0):
  ks = jax.random.split(jax.random.key(seed), 6)
  q, k, v, do = (jax.random.normal(ks[i], (windows, heads, n, d)).astype(dtype)
                 for i in (0, 1, 2, 5))
  bias = jax.random.normal(ks[3], (heads, n, n)).astype(dtype)
  mask = None
  if mask_windows:
    # SwinIR-like: 0 or -100, every query keeps at least its own key.
    mask = jnp.where(jax.random.uniform(ks[4], (mask_windows, n, n)) < 0.4, -100.0, 0.0)
    mask = jnp.where(jnp.eye(n, dtype=bool), 0.0, mask).astype(dtype)
  return q, k, v, bias, mask, do


def _value_and_grads(fn, q, k, v, bias, mask, do, **kw):
  def loss(q, k, v, bias):
    out = fn(q, k, v, bias, mask, **kw)
    return jnp.sum(out.astype(jnp.float32) * do.astype(jnp.float32)), out
  (_, out), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2, 3), has_aux=True))(
      q, k, v, bias)
  return (out,) + grads


def _max_err(a, b):
  return float(jnp.max(jnp.abs(a.astype(jnp.float32) - b.astype(jnp.float32))))


CASES = [
    # windows, heads, N, D, mask_windows, block_windows
    pytest.param(4, 2, 64, 32, None, None, id='8x8-d32-nomask'),
    pytest.param(6, 2, 49, 30, 3, None, id='7x7-d30-mask3'),
    pytest.param(1, 1, 49, 32, None, None, id='one-window'),
    pytest.param(1, 2, 64, 30, 1, None, id='batch1-one-mask-window'),
    pytest.param(16, 3, 64, 30, 4, 2, id='batch4-mask4-blocked'),
    pytest.param(22, 1, 64, 16, 11, 8, id='mask11-padded-window-blocks'),
]


@pytest.mark.parametrize('windows,heads,n,d,mask_windows,block', CASES)
def test_float32_forward_and_gradients_match_reference(windows, heads, n, d, mask_windows, block):
  q, k, v, bias, mask, do = _inputs(windows, heads, n, d, mask_windows, jnp.float32)
  got = _value_and_grads(window_attention, q, k, v, bias, mask, do, block_windows=block)
  want = _value_and_grads(window_attention_reference, q, k, v, bias, mask, do)
  for name, g, w in zip(('out', 'dq', 'dk', 'dv', 'dbias'), got, want):
    assert g.shape == w.shape and g.dtype == w.dtype, name
    # O(1) values; dbias sums over windows, so scale its bound by the window count.
    tol = 1e-5 * (max(1, windows // 4) if name == 'dbias' else 1)
    assert _max_err(g, w) <= tol, (name, _max_err(g, w))


def test_bfloat16_matches_float32_math_within_bf16_error():
  """bf16 inputs, float32 softmax/accumulation: the kernel is as close to exact float32 math on
  the same (bf16-rounded) inputs as the bf16 XLA reference is."""
  q, k, v, bias, mask, do = _inputs(8, 2, 64, 30, 4, jnp.bfloat16, seed=1)
  got = _value_and_grads(window_attention, q, k, v, bias, mask, do)
  ref16 = _value_and_grads(window_attention_reference, q, k, v, bias, mask, do)
  f32 = lambda x: None if x is None else x.astype(jnp.float32)
  exact = _value_and_grads(window_attention_reference, *map(f32, (q, k, v, bias, mask, do)))
  for name, g, r, e in zip(('out', 'dq', 'dk', 'dv', 'dbias'), got, ref16, exact):
    assert g.dtype == jnp.bfloat16, name
    scale = float(jnp.max(jnp.abs(e)))
    assert _max_err(g, e) <= 2e-2 * scale, (name, _max_err(g, e), scale)
    assert _max_err(g, e) <= 2 * _max_err(r, e) + 1e-3 * scale, (name, _max_err(g, e), _max_err(r, e))


def test_default_scale_and_explicit_scale():
  q, k, v, bias, mask, _ = _inputs(2, 1, 64, 30, 2, jnp.float32, seed=2)
  np.testing.assert_allclose(window_attention(q, k, v, bias, mask),
                             window_attention_reference(q, k, v, bias, mask), atol=1e-5)
  np.testing.assert_allclose(window_attention(q, k, v, bias, mask, scale=0.3),
                             window_attention_reference(q, k, v, bias, mask, scale=0.3), atol=1e-5)


def test_mask_is_not_differentiated():
  q, k, v, bias, mask, _ = _inputs(2, 1, 49, 16, 2, jnp.float32, seed=3)
  g = jax.grad(lambda m: jnp.sum(window_attention(q, k, v, bias, m)))(mask)
  assert g.shape == mask.shape and not np.any(np.asarray(g))


def test_rejects_bad_shapes():
  q, k, v, bias, mask, _ = _inputs(3, 1, 64, 16, 2, jnp.float32)
  with pytest.raises(ValueError, match='multiple'):
    window_attention(q, k, v, bias, mask)
  with pytest.raises(ValueError, match='bias'):
    window_attention(q, k, v, bias[:, :8], None)


def test_registered_as_pallas():
  assert kernels.get_window_attention('pallas') is window_attention
  assert kernels.get_channel_attention('pallas') is kernels.channel_attention
  assert kernels.get_window_attention('xla') is window_attention_reference
  # CPU: 'auto' keeps the XLA reference (interpret mode is for tests, not speed).
  if jax.default_backend() == 'cpu':
    assert kernels.get_window_attention('auto') is window_attention_reference


@pytest.mark.parametrize('platform,backend', [('cuda', 'triton'), ('tpu', 'mosaic_tpu')])
def test_lowers_for_gpu_and_tpu(platform, backend):
  """Without a GPU/TPU: forward and backward lower to Triton IR / Mosaic TPU (compiling them on
  the device is not tested here)."""
  q = jnp.zeros((16, 6, 64, 30), jnp.bfloat16)
  bias, mask = jnp.zeros((6, 64, 64), jnp.bfloat16), jnp.zeros((4, 64, 64), jnp.bfloat16)

  def loss(q, k, v, bias):
    return jnp.sum(window_attention(q, k, v, bias, mask, backend=backend).astype(jnp.float32))

  text = jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3))).trace(q, q, q, bias).lower(
      lowering_platforms=(platform,)).as_text()
  assert ('triton' if backend == 'triton' else 'tpu_custom_call') in text


def test_swinir_with_kernel_matches_swinir_with_reference():
  cfg = SwinIRConfig(img_size=16, embed_dim=30, depths=(2,), num_heads=(1,), window_size=8,
                     in_chans=3, upscale=1, upsampler='', attention='pallas')
  fused = SwinIR(cfg, rngs=nnx.Rngs(0))
  xla = SwinIR(cfg.replace(attention='xla'), rngs=nnx.Rngs(0))
  nnx.update(xla, nnx.state(fused, nnx.Param))
  x = jax.random.uniform(jax.random.key(1), (2, 16, 16, 3))
  # 16x16 with window 8: 4 windows per image; the second block is shifted, so the mask is used.
  assert shift_window_mask(16, 16, 8, 4).shape[0] == 4
  forward = nnx.jit(lambda model, x: model(x))
  np.testing.assert_allclose(forward(fused, x), forward(xla, x), atol=1e-5, rtol=0)


def test_benchmark_script_smoke(tmp_path, capsys):
  """benchmarks/kernels.py --smoke runs (window-attention rows only, to keep CI short)."""
  import importlib.util
  import json
  from pathlib import Path
  path = Path(__file__).resolve().parent.parent / 'benchmarks' / 'kernels.py'
  spec = importlib.util.spec_from_file_location('benchmark_kernels', path)
  bench = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(bench)
  out = tmp_path / 'rows.json'
  assert bench.main(['--smoke', '--dtypes', 'f32', '--repeats', '1',
                     '--skip', 'channel,frequency,model', '--json', str(out)]) == 0
  rows = json.loads(out.read_text())['rows']
  assert {(r['impl'], r['mode']) for r in rows} == {(i, m) for i in ('xla', 'pallas')
                                                    for m in ('fwd', 'fwd+bwd')}
  assert 'measured peak' in capsys.readouterr().out
