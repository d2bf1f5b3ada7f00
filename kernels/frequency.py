"""Frequency-domain ops: a patch-wise DFT filter (FFTformer), the Haar wavelet, coloured noise.

* `frequency_filter(x, weight)`: FFTformer's frequency block. x (B, H, W, C) is cut into p×p patches
  and each patch of each channel becomes `irfft2(rfft2(patch) * weight[c], s=(p, p))`, with weight
  (C, p, p//2 + 1) real (FFTformer's `fft` parameter, a real gain on the complex half-spectrum,
  there shaped (C, 1, 1, p, p//2 + 1)) or complex. The kernel does it as matmuls: the 2-D real DFT of
  a flattened patch is x·(Kr + iKi) with (p², p·(p//2+1)) DFT matrices, the filter a pointwise
  complex product, and the inverse real DFT Zr·Ir + Zi·Ii (which also drops the imaginary parts of
  the DC and Nyquist columns as irfft does). Computed in float32 like FFTformer's `x.float()`.
* `haar_dwt(x)` / `haar_idwt(y)`: the orthonormal 2×2 Haar transform with MWCNN's subband layout
  (`dwt_init`/`iwt_init`): for each 2×2 block [[a, b], [c, d]] of each channel
      LL = (a + b + c + d) / 2      HL = (b + d - a - c) / 2   (high-pass along width)
      LH = (c + d - a - b) / 2      HH = (a + d - b - c) / 2   (high-pass along height, both)
  returned as (B, H/2, W/2, 4C) with channel blocks [LL | HL | LH | HH]. Orthonormal, so the
  inverse is the transpose: each kernel's backward is the other kernel.
* `colored_noise(key, shape, exponent)`: plain `jnp.fft`; see its docstring.

Every kernel has a `*_reference` twin in plain `jax.numpy` (`jnp.fft` / strided slicing).
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.experimental import pallas as pl

from .window_attention import (dot_nn, dot_nt, pad_axes, padded_size, pallas_call_options,
                               resolve_backend)

__all__ = ['frequency_filter', 'frequency_filter_reference', 'haar_dwt', 'haar_dwt_reference',
           'haar_idwt', 'haar_idwt_reference', 'colored_noise', 'dft_matrices']

HIGHEST = lax.Precision.HIGHEST


# --- patch-wise DFT filter ------------------------------------------------------------------------

def _check_filter(x, weight):
  if x.ndim != 4:
    raise ValueError(f'frequency_filter: expected NHWC input, got shape {x.shape}')
  _, h, w, c = x.shape
  if weight.ndim != 3 or weight.shape[0] != c or weight.shape[2] != weight.shape[1] // 2 + 1:
    raise ValueError(f'frequency_filter: weight shape {weight.shape}, expected (C={c}, p, p//2+1)')
  p = weight.shape[1]
  if p % 2 or h % p or w % p:
    raise ValueError(f'frequency_filter: {h}x{w} is not a multiple of the (even) patch size {p}')
  return p


def frequency_filter_reference(x, weight):
  """irfft2(rfft2(patch) * weight) per p×p patch and channel, with `jnp.fft`, in float32."""
  p = _check_filter(x, weight)
  b, h, w, c = x.shape
  patches = x.astype(jnp.float32).reshape(b, h // p, p, w // p, p, c).transpose(0, 5, 1, 3, 2, 4)
  spectrum = jnp.fft.rfft2(patches) * weight[None, :, None, None]
  out = jnp.fft.irfft2(spectrum, s=(p, p))
  return out.transpose(0, 2, 4, 3, 5, 1).reshape(b, h, w, c).astype(x.dtype)


def dft_matrices(p: int):
  """(Kr, Ki, Ir, Ii) for a flattened p×p patch (row-major m·p + n) and half-spectrum (u·(p//2+1)
  + v): rfft2(X) = vec(X)·(Kr + iKi); irfft2(Z, s=(p, p)) = Re(Z)·Ir + Im(Z)·Ii. float64 numpy."""
  half = p // 2 + 1
  m = np.arange(p)
  u = np.arange(p)
  v = np.arange(half)
  # Forward: Y[u, v] = Σ_{m,n} X[m, n] exp(-2πi (um + vn) / p).
  phase = -2j * np.pi * (u[None, None, :, None] * m[:, None, None, None]
                         + v[None, None, None, :] * m[None, :, None, None]) / p
  k = np.exp(phase).reshape(p * p, p * half)
  # Inverse: complex IDFT over u, then irfft over v: Hermitian weights c_v (1 for DC and Nyquist,
  # 2 otherwise) and only the real part, which drops Im of the DC/Nyquist columns like irfft.
  c = np.where((v == 0) | (v == p // 2), 1.0, 2.0)
  g = (np.exp(2j * np.pi * (u[:, None, None, None] * m[None, None, :, None]
                            + v[None, :, None, None] * m[None, None, None, :]) / p)
       * c[None, :, None, None] / (p * p))
  g = g.reshape(p * half, p * p)
  return k.real, k.imag, g.real, -g.imag


@dataclasses.dataclass(frozen=True)
class _FilterConfig:
  complex_weight: bool
  backend: str


def _filter_forward_kernel(*refs, cfg: _FilterConfig):
  if cfg.complex_weight:
    x_ref, kr_ref, ki_ref, ir_ref, ii_ref, wr_ref, wi_ref, o_ref = refs
  else:
    x_ref, kr_ref, ki_ref, ir_ref, ii_ref, wr_ref, o_ref = refs
  x = x_ref[...].astype(jnp.float32)
  yr, yi = dot_nn(x, kr_ref[...], HIGHEST), dot_nn(x, ki_ref[...], HIGHEST)
  wr = wr_ref[...]
  if cfg.complex_weight:
    wi = wi_ref[...]
    zr, zi = yr * wr - yi * wi, yr * wi + yi * wr
  else:
    zr, zi = yr * wr, yi * wr
  out = dot_nn(zr, ir_ref[...], HIGHEST) + dot_nn(zi, ii_ref[...], HIGHEST)
  o_ref[...] = out.astype(o_ref.dtype)


def _filter_backward_kernel(*refs, cfg: _FilterConfig):
  if cfg.complex_weight:
    x_ref, kr_ref, ki_ref, ir_ref, ii_ref, wr_ref, wi_ref, do_ref, dx_ref, dwr_ref, dwi_ref = refs
  else:
    x_ref, kr_ref, ki_ref, ir_ref, ii_ref, wr_ref, do_ref, dx_ref, dwr_ref = refs
  x = x_ref[...].astype(jnp.float32)
  kr, ki = kr_ref[...], ki_ref[...]
  yr, yi = dot_nn(x, kr, HIGHEST), dot_nn(x, ki, HIGHEST)
  do = do_ref[...].astype(jnp.float32)
  dzr, dzi = dot_nt(do, ir_ref[...], HIGHEST), dot_nt(do, ii_ref[...], HIGHEST)
  wr = wr_ref[...]
  dwr_ref[...] = jnp.sum(yr * dzr + yi * dzi, axis=0, keepdims=True)
  if cfg.complex_weight:
    wi = wi_ref[...]
    dwi_ref[...] = jnp.sum(yr * dzi - yi * dzr, axis=0, keepdims=True)
    dyr, dyi = dzr * wr + dzi * wi, dzi * wr - dzr * wi
  else:
    dyr, dyi = dzr * wr, dzi * wr
  dx = dot_nt(dyr, kr, HIGHEST) + dot_nt(dyi, ki, HIGHEST)
  dx_ref[...] = dx.astype(dx_ref.dtype)


def _filter_specs(rows_block, n_pix, n_spec):
  row = pl.BlockSpec((None, rows_block, n_pix), lambda c, r: (c, r, 0))
  fwd_mat = pl.BlockSpec((n_pix, n_spec), lambda c, r: (0, 0))
  inv_mat = pl.BlockSpec((n_spec, n_pix), lambda c, r: (0, 0))
  weight = pl.BlockSpec((None, 1, n_spec), lambda c, r: (c, 0, 0))
  return row, [row, fwd_mat, fwd_mat, inv_mat, inv_mat], weight


def _filter_forward(x, mats, weights, cfg: _FilterConfig, rows_block: int):
  c, rows, n_pix = x.shape
  n_spec = mats[0].shape[1]
  row, specs, weight = _filter_specs(rows_block, n_pix, n_spec)
  return pl.pallas_call(
      functools.partial(_filter_forward_kernel, cfg=cfg),
      out_shape=jax.ShapeDtypeStruct(x.shape, x.dtype), grid=(c, rows // rows_block),
      in_specs=specs + [weight] * len(weights), out_specs=row,
      name='frequency_filter_fwd', **pallas_call_options(cfg.backend, 2),
  )(x, *mats, *weights)


def _filter_backward(x, mats, weights, do, cfg: _FilterConfig, rows_block: int):
  c, rows, n_pix = x.shape
  n_spec = mats[0].shape[1]
  row, specs, weight = _filter_specs(rows_block, n_pix, n_spec)
  blocks = rows // rows_block
  partial = jax.ShapeDtypeStruct((c, blocks, 1, n_spec), jnp.float32)
  partial_spec = pl.BlockSpec((None, None, 1, n_spec), lambda c, r: (c, r, 0, 0))
  dx, *dws = pl.pallas_call(
      functools.partial(_filter_backward_kernel, cfg=cfg),
      out_shape=(jax.ShapeDtypeStruct(x.shape, x.dtype),) + (partial,) * len(weights),
      grid=(c, blocks), in_specs=specs + [weight] * len(weights) + [row],
      out_specs=(row,) + (partial_spec,) * len(weights),
      name='frequency_filter_bwd', **pallas_call_options(cfg.backend, 2),
  )(x, *mats, *weights, do)
  # Filter gradients: one float32 partial per row block, summed here (tiny: (C, blocks, spectrum)).
  return dx, tuple(jnp.sum(d, axis=1) for d in dws)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _frequency_filter_rows(x, mats, weights, cfg, rows_block):
  return _filter_forward(x, mats, weights, cfg, rows_block)


def _frequency_filter_rows_fwd(x, mats, weights, cfg, rows_block):
  return _filter_forward(x, mats, weights, cfg, rows_block), (x, mats, weights)


def _frequency_filter_rows_bwd(cfg, rows_block, residuals, do):
  x, mats, weights = residuals
  dx, dws = _filter_backward(x, mats, weights, do, cfg, rows_block)
  return dx, tuple(jnp.zeros_like(m) for m in mats), dws


_frequency_filter_rows.defvjp(_frequency_filter_rows_fwd, _frequency_filter_rows_bwd)

DEFAULT_ROWS_BLOCK = {'interpret': 128, 'triton': 64, 'mosaic_tpu': 256}


def frequency_filter(x, weight, *, rows_block: int | None = None, backend: str | None = None):
  """Pallas patch-wise DFT filter, same contract as `frequency_filter_reference`.

  x: (B, H, W, C) with H, W multiples of p; weight: (C, p, p//2+1), real or complex (p even, from
  the weight's shape; FFTformer uses 8). Gradients flow to x and weight. `rows_block` (a power of
  two) sets the patches per grid step; `backend` overrides the lowering. The patch gather to
  (C, patches, p²) rows and the scatter back are XLA transposes around the kernel; the kernel does
  DFT, filter and inverse DFT for a block of patches without leaving registers/VMEM.
  """
  p = _check_filter(x, weight)
  backend = resolve_backend(backend)
  b, h, w, c = x.shape
  n_pix, n_spec = p * p, p * (p // 2 + 1)
  n_pix_pad, n_spec_pad = padded_size(n_pix), padded_size(n_spec)
  rows = b * (h // p) * (w // p)
  rb = rows_block or DEFAULT_ROWS_BLOCK[backend]
  if rb & (rb - 1):
    raise ValueError(f'frequency_filter: rows_block must be a power of two, got {rb}')
  rb = min(rb, max(16, pl.next_power_of_2(rows)))
  rows_pad = -(-rows // rb) * rb
  kr, ki, ir, ii = dft_matrices(p)
  mats = (pad_axes(jnp.asarray(kr, jnp.float32), {0: n_pix_pad, 1: n_spec_pad}),
          pad_axes(jnp.asarray(ki, jnp.float32), {0: n_pix_pad, 1: n_spec_pad}),
          pad_axes(jnp.asarray(ir, jnp.float32), {0: n_spec_pad, 1: n_pix_pad}),
          pad_axes(jnp.asarray(ii, jnp.float32), {0: n_spec_pad, 1: n_pix_pad}))
  complex_weight = jnp.iscomplexobj(weight)
  flat = lambda a: pad_axes(a.astype(jnp.float32).reshape(c, 1, n_spec), {2: n_spec_pad})
  weights = (flat(jnp.real(weight)), flat(jnp.imag(weight))) if complex_weight else (flat(weight),)
  # Patch rows grouped by channel, so a grid step has one channel's filter.
  patches = x.reshape(b, h // p, p, w // p, p, c).transpose(5, 0, 1, 3, 2, 4)
  patches = pad_axes(patches.reshape(c, rows, n_pix), {1: rows_pad, 2: n_pix_pad})
  cfg = _FilterConfig(complex_weight=bool(complex_weight), backend=backend)
  out = _frequency_filter_rows(patches, mats, weights, cfg, rb)[:, :rows, :n_pix]
  out = out.reshape(c, b, h // p, w // p, p, p).transpose(1, 2, 4, 3, 5, 0)
  return out.reshape(b, h, w, c)


# --- Haar wavelet ---------------------------------------------------------------------------------

def haar_dwt_reference(x):
  """(B, H, W, C) -> (B, H/2, W/2, 4C) subbands [LL | HL | LH | HH], by strided slicing."""
  xf = x.astype(jnp.float32)
  a, b = xf[:, 0::2, 0::2], xf[:, 0::2, 1::2]
  c, d = xf[:, 1::2, 0::2], xf[:, 1::2, 1::2]
  bands = ((a + b) + (c + d), (b + d) - (a + c), (c + d) - (a + b), (a + d) - (b + c))
  return (jnp.concatenate(bands, axis=-1) * 0.5).astype(x.dtype)


def haar_idwt_reference(y):
  """Inverse of `haar_dwt_reference`: (B, H/2, W/2, 4C) -> (B, H, W, C)."""
  bsz, h2, w2, c4 = y.shape
  c = c4 // 4
  ll, hl, lh, hh = (y[..., i * c:(i + 1) * c].astype(jnp.float32) for i in range(4))
  a, b = (ll - hl) - (lh - hh), (ll + hl) - (lh + hh)
  cc, d = (ll - hl) + (lh - hh), (ll + hl) + (lh + hh)
  top = jnp.stack([a, b], axis=3)        # (B, H/2, W/2, 2, C): columns 2j, 2j+1
  bottom = jnp.stack([cc, d], axis=3)
  out = jnp.stack([top, bottom], axis=2)  # (B, H/2, 2, W/2, 2, C)
  return (out.reshape(bsz, 2 * h2, 2 * w2, c) * 0.5).astype(y.dtype)


def _haar_tiles(half_h: int, half_w: int, c: int, backend: str) -> tuple[int, int, int]:
  """(rows, cols, channels) per load. Triton wants power-of-two loads small enough for registers
  (four live at once); Mosaic TPU wants the second-minor block dim to be the full width (or a
  multiple of 8), so it gets whole rows."""
  low_bit = lambda n, cap: min(n & -n, cap)   # largest power of two dividing n, capped
  budget = 1024 if backend == 'triton' else 8192
  cb = low_bit(c, 64)
  tw = half_w if backend == 'mosaic_tpu' else low_bit(half_w, max(1, budget // cb))
  th = low_bit(half_h, max(1, budget // (cb * pl.next_power_of_2(tw))))
  return th, tw, cb


def _dwt_kernel(x_ref, o_ref, *, c: int, cb: int):
  """x block (th, 2, tw, 2C): row parity on axis 1, column parity as the two C-halves of the last
  axis (a free reshape of NHWC). o block (th, tw, 4C)."""
  for g in range(c // cb):
    lo, hi = pl.ds(g * cb, cb), pl.ds(c + g * cb, cb)
    a, b = x_ref[:, 0, :, lo].astype(jnp.float32), x_ref[:, 0, :, hi].astype(jnp.float32)
    cc, d = x_ref[:, 1, :, lo].astype(jnp.float32), x_ref[:, 1, :, hi].astype(jnp.float32)
    for s, band in enumerate(((a + b) + (cc + d), (b + d) - (a + cc), (cc + d) - (a + b),
                              (a + d) - (b + cc))):
      o_ref[:, :, pl.ds(s * c + g * cb, cb)] = (band * 0.5).astype(o_ref.dtype)


def _idwt_kernel(y_ref, o_ref, *, c: int, cb: int):
  """y block (th, tw, 4C) -> o block (th, 2, tw, 2C)."""
  for g in range(c // cb):
    ll, hl, lh, hh = (y_ref[:, :, pl.ds(s * c + g * cb, cb)].astype(jnp.float32) for s in range(4))
    lo, hi = pl.ds(g * cb, cb), pl.ds(c + g * cb, cb)
    o_ref[:, 0, :, lo] = (((ll - hl) - (lh - hh)) * 0.5).astype(o_ref.dtype)
    o_ref[:, 0, :, hi] = (((ll + hl) - (lh + hh)) * 0.5).astype(o_ref.dtype)
    o_ref[:, 1, :, lo] = (((ll - hl) + (lh - hh)) * 0.5).astype(o_ref.dtype)
    o_ref[:, 1, :, hi] = (((ll + hl) + (lh + hh)) * 0.5).astype(o_ref.dtype)


def _haar_call(kernel, x, out_shape, backend: str):
  """x, out: (B, H/2, 2, W/2, 2C) and (B, H/2, W/2, 4C) in either role."""
  if kernel is _dwt_kernel:
    bsz, half_h, _, half_w, c2 = x.shape
    c = c2 // 2
  else:
    bsz, half_h, half_w, c4 = x.shape
    c = c4 // 4
  th, tw, cb = _haar_tiles(half_h, half_w, c, backend)
  spatial = pl.BlockSpec((None, th, 2, tw, 2 * c), lambda i, j, l: (i, j, 0, l, 0))
  bands = pl.BlockSpec((None, th, tw, 4 * c), lambda i, j, l: (i, j, l, 0))
  in_spec, out_spec = (spatial, bands) if kernel is _dwt_kernel else (bands, spatial)
  return pl.pallas_call(
      functools.partial(kernel, c=c, cb=cb),
      out_shape=jax.ShapeDtypeStruct(out_shape, x.dtype),
      grid=(bsz, half_h // th, half_w // tw), in_specs=[in_spec], out_specs=out_spec,
      name='haar_dwt' if kernel is _dwt_kernel else 'haar_idwt',
      **pallas_call_options(backend, 3),
  )(x)


def _dwt(x, backend):
  bsz, h, w, c = x.shape
  out = _haar_call(_dwt_kernel, x.reshape(bsz, h // 2, 2, w // 2, 2 * c),
                   (bsz, h // 2, w // 2, 4 * c), backend)
  return out


def _idwt(y, backend):
  bsz, h2, w2, c4 = y.shape
  out = _haar_call(_idwt_kernel, y, (bsz, h2, 2, w2, c4 // 2), backend)
  return out.reshape(bsz, 2 * h2, 2 * w2, c4 // 4)


# Orthonormal: the transpose of the DWT is the IDWT, so each kernel is the other's backward.
_dwt_vjp = jax.custom_vjp(_dwt, nondiff_argnums=(1,))
_dwt_vjp.defvjp(lambda x, backend: (_dwt(x, backend), None),
                lambda backend, _, g: (_idwt(g, backend),))
_idwt_vjp = jax.custom_vjp(_idwt, nondiff_argnums=(1,))
_idwt_vjp.defvjp(lambda y, backend: (_idwt(y, backend), None),
                 lambda backend, _, g: (_dwt(g, backend),))


def haar_dwt(x, *, backend: str | None = None):
  """Pallas Haar DWT: (B, H, W, C), H and W even -> (B, H/2, W/2, 4C) [LL | HL | LH | HH]."""
  if x.ndim != 4 or x.shape[1] % 2 or x.shape[2] % 2:
    raise ValueError(f'haar_dwt: expected NHWC input with even height and width, got {x.shape}')
  return _dwt_vjp(x, resolve_backend(backend))


def haar_idwt(y, *, backend: str | None = None):
  """Pallas inverse Haar DWT: (B, H/2, W/2, 4C) [LL | HL | LH | HH] -> (B, H, W, C)."""
  if y.ndim != 4 or y.shape[-1] % 4:
    raise ValueError(f'haar_idwt: expected (B, H/2, W/2, 4C) subbands, got {y.shape}')
  return _idwt_vjp(y, resolve_backend(backend))


# --- coloured noise -------------------------------------------------------------------------------

def colored_noise(key, shape, exponent, dtype=jnp.float32):
  """Gaussian noise with power spectrum ∝ 1/|f|^exponent over the two spatial axes of NHWC `shape`
  (0 white, 1 pink, 2 brown): white noise's spectrum (`jnp.fft.rfft2`) times |f|^(-exponent/2),
  with |f| in cycles per pixel. The DC coefficient is set to 0 (|f|^-e is infinite there), so each
  image/channel has zero mean; each is then scaled to unit standard deviation. `exponent` may be
  a traced scalar."""
  if len(shape) != 4:
    raise ValueError(f'colored_noise: expected an NHWC shape, got {shape}')
  _, h, w, _ = shape
  white = jax.random.normal(key, shape, jnp.float32)
  spectrum = jnp.fft.rfft2(white, axes=(1, 2))
  fy = jnp.fft.fftfreq(h)[:, None]
  fx = jnp.fft.rfftfreq(w)[None, :]
  radius = jnp.sqrt(fy * fy + fx * fx)
  safe = jnp.where(radius > 0, radius, 1.0)
  gain = jnp.where(radius > 0, safe ** (-0.5 * jnp.asarray(exponent, jnp.float32)), 0.0)
  noise = jnp.fft.irfft2(spectrum * gain[None, :, :, None], s=(h, w), axes=(1, 2))
  noise = noise - jnp.mean(noise, axis=(1, 2), keepdims=True)
  std = jnp.std(noise, axis=(1, 2), keepdims=True)
  return (noise / jnp.where(std > 0, std, 1.0)).astype(dtype)
