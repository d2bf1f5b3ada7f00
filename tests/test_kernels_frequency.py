"""Frequency ops: the patch-wise DFT filter and Haar kernels (interpret mode on CPU) against their
`jnp.fft` / slicing twins, forward and gradients; coloured noise by its spectrum."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrestore.kernels import frequency as F


def _err(a, b):
  return float(jnp.max(jnp.abs(jnp.asarray(a, jnp.complex64) - jnp.asarray(b, jnp.complex64))))


def _filter_value_and_grads(fn, x, weight, do):
  def loss(x, weight):
    out = fn(x, weight)
    return jnp.sum(out.astype(jnp.float32) * do), out
  (_, out), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(x, weight)
  return (out,) + grads


def _filter_inputs(shape, p, complex_weight, dtype, seed=0):
  ks = jax.random.split(jax.random.key(seed), 4)
  x = jax.random.normal(ks[0], shape).astype(dtype)
  weight = jax.random.normal(ks[1], (shape[-1], p, p // 2 + 1))
  if complex_weight:
    weight = weight + 1j * jax.random.normal(ks[2], weight.shape)
  return x, weight, jax.random.normal(ks[3], shape)


@pytest.mark.parametrize('shape,p,complex_weight', [
    pytest.param((2, 16, 24, 3), 8, False, id='fftformer-real-p8'),
    pytest.param((1, 8, 8, 5), 8, True, id='complex-p8'),
    pytest.param((1, 8, 12, 2), 4, True, id='complex-p4'),
    pytest.param((1, 12, 6, 2), 6, False, id='real-p6-padded'),
])
def test_filter_float32_forward_and_gradients_match_fft(shape, p, complex_weight):
  x, weight, do = _filter_inputs(shape, p, complex_weight, jnp.float32)
  got = _filter_value_and_grads(F.frequency_filter, x, weight, do)
  want = _filter_value_and_grads(F.frequency_filter_reference, x, weight, do)
  for name, g, w in zip(('out', 'dx', 'dweight'), got, want):
    assert g.shape == w.shape and g.dtype == w.dtype, name
    assert _err(g, w) <= 1e-5 * max(1.0, float(jnp.max(jnp.abs(w)))), (name, _err(g, w))


def test_filter_bfloat16_input():
  x, weight, do = _filter_inputs((2, 16, 16, 4), 8, False, jnp.bfloat16, seed=1)
  got = _filter_value_and_grads(F.frequency_filter, x, weight, do)
  want = _filter_value_and_grads(F.frequency_filter_reference, x, weight, do)
  for name, g, w in zip(('out', 'dx', 'dweight'), got, want):
    assert g.dtype == w.dtype, name
    assert _err(g, w) <= 1e-2 * float(jnp.max(jnp.abs(w))), (name, _err(g, w))


def test_filter_of_ones_is_identity():
  """FFTformer initialises its filter to ones: irfft2(rfft2(patch)) is the patch."""
  x = jax.random.normal(jax.random.key(2), (1, 16, 8, 3))
  np.testing.assert_allclose(F.frequency_filter(x, jnp.ones((3, 8, 5))), x, atol=1e-5)


def test_dft_matrices_match_numpy_fft():
  rng = np.random.default_rng(0)
  p = 8
  kr, ki, ir, ii = F.dft_matrices(p)
  patch = rng.standard_normal((p, p))
  spectrum = np.fft.rfft2(patch)
  np.testing.assert_allclose(patch.reshape(-1) @ (kr + 1j * ki), spectrum.reshape(-1), atol=1e-12)
  z = rng.standard_normal((p, p // 2 + 1)) + 1j * rng.standard_normal((p, p // 2 + 1))
  want = np.fft.irfft2(z, s=(p, p)).reshape(-1)
  np.testing.assert_allclose(z.real.reshape(-1) @ ir + z.imag.reshape(-1) @ ii, want, atol=1e-12)


def test_filter_rejects_bad_shapes():
  with pytest.raises(ValueError, match='multiple'):
    F.frequency_filter(jnp.zeros((1, 12, 16, 2)), jnp.ones((2, 8, 5)))
  with pytest.raises(ValueError, match='weight'):
    F.frequency_filter(jnp.zeros((1, 16, 16, 2)), jnp.ones((3, 8, 5)))


@pytest.mark.parametrize('shape,dtype', [
    ((2, 8, 12, 3), jnp.float32),       # RGB: 3 channels, one per channel tile
    ((1, 6, 10, 64), jnp.float32),      # odd half-height and half-width
    ((1, 4, 8, 6), jnp.bfloat16),
])
def test_haar_matches_reference_and_inverts(shape, dtype):
  x = jax.random.normal(jax.random.key(0), shape).astype(dtype)
  bands = F.haar_dwt(x)
  want = F.haar_dwt_reference(x)
  assert bands.shape == (shape[0], shape[1] // 2, shape[2] // 2, 4 * shape[3])
  assert bands.dtype == dtype
  np.testing.assert_allclose(np.asarray(bands, np.float32), np.asarray(want, np.float32), atol=1e-6)
  back = F.haar_idwt(bands)
  np.testing.assert_allclose(np.asarray(back, np.float32),
                             np.asarray(F.haar_idwt_reference(want), np.float32), atol=1e-6)
  tol = 1e-6 if dtype == jnp.float32 else 1e-2 * float(jnp.max(jnp.abs(x.astype(jnp.float32))))
  np.testing.assert_allclose(np.asarray(back, np.float32), np.asarray(x, np.float32), atol=tol)
  if dtype == jnp.float32:   # orthonormal: energy is preserved
    np.testing.assert_allclose(jnp.sum(bands ** 2), jnp.sum(x ** 2), rtol=1e-5)


def test_haar_subband_convention():
  """One 2×2 block [[a, b], [c, d]] -> [LL, HL, LH, HH] as in MWCNN's dwt_init."""
  a, b, c, d = 1.0, 2.0, 3.0, 5.0
  x = jnp.array([[a, b], [c, d]]).reshape(1, 2, 2, 1)
  want = np.array([a + b + c + d, b + d - a - c, c + d - a - b, a + d - b - c]) / 2
  np.testing.assert_allclose(np.asarray(F.haar_dwt(x)).reshape(-1), want, atol=1e-6)


def test_haar_gradients_match_reference():
  x = jax.random.normal(jax.random.key(3), (2, 4, 6, 3))
  ct = jax.random.normal(jax.random.key(4), (2, 2, 3, 12))

  @jax.jit
  def cotangents(x, ct):
    pairs = ((F.haar_dwt, F.haar_dwt_reference, x, ct), (F.haar_idwt, F.haar_idwt_reference, ct, x))
    return [(jax.vjp(fn, arg)[1](cot)[0], jax.vjp(ref, arg)[1](cot)[0])
            for fn, ref, arg, cot in pairs]

  for got, want in cotangents(x, ct):
    np.testing.assert_allclose(got, want, atol=1e-6)


def _radial_slope(noise):
  """Slope of log power vs log |f| over radial frequency bins (DC excluded)."""
  _, h, w, _ = noise.shape
  power = np.mean(np.abs(np.fft.fft2(np.asarray(noise, np.float64), axes=(1, 2))) ** 2, axis=(0, 3))
  radius = np.sqrt(np.fft.fftfreq(h)[:, None] ** 2 + np.fft.fftfreq(w)[None, :] ** 2)
  edges = np.logspace(np.log10(2.0 / h), np.log10(0.5), 16)
  centers, means = [], []
  for lo, hi in zip(edges[:-1], edges[1:]):
    sel = (radius >= lo) & (radius < hi)
    if sel.any():
      centers.append(np.mean(radius[sel]))
      means.append(np.mean(power[sel]))
  return np.polyfit(np.log(centers), np.log(means), 1)[0]


@pytest.mark.parametrize('exponent', [0.0, 1.0, 2.0])
def test_colored_noise_spectrum_slope_and_normalisation(exponent):
  noise = F.colored_noise(jax.random.key(7), (4, 128, 128, 2), exponent)
  assert noise.shape == (4, 128, 128, 2) and noise.dtype == jnp.float32
  np.testing.assert_allclose(np.std(np.asarray(noise), axis=(1, 2)), 1.0, atol=1e-4)
  np.testing.assert_allclose(np.mean(np.asarray(noise), axis=(1, 2)), 0.0, atol=1e-4)
  assert abs(_radial_slope(noise) + exponent) < 0.1, _radial_slope(noise)


def test_colored_noise_traced_exponent_and_dtype():
  fn = jax.jit(lambda key, e: F.colored_noise(key, (1, 32, 16, 1), e, dtype=jnp.bfloat16))
  noise = fn(jax.random.key(0), jnp.float32(1.5))
  assert noise.shape == (1, 32, 16, 1) and noise.dtype == jnp.bfloat16


@pytest.mark.parametrize('platform,backend', [('cuda', 'triton'), ('tpu', 'mosaic_tpu')])
def test_lowers_for_gpu_and_tpu(platform, backend):
  """Without a GPU/TPU: forward and backward lower to Triton IR / Mosaic TPU (compiling them on
  the device is not tested here)."""
  x = jnp.zeros((1, 64, 64, 96), jnp.bfloat16)
  weight = jnp.ones((96, 8, 5), jnp.complex64)

  def loss(x, weight):
    y = F.frequency_filter(x, weight, backend=backend)
    y = F.haar_idwt(F.haar_dwt(y, backend=backend), backend=backend)
    return jnp.sum(y.astype(jnp.float32))

  text = jax.jit(jax.grad(loss, argnums=(0, 1))).trace(x, weight).lower(
      lowering_platforms=(platform,)).as_text()
  assert ('triton' if backend == 'triton' else 'tpu_custom_call') in text
