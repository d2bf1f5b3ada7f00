"""Image-quality metrics that reproduce SwinIR's evaluation protocol.

The reference is `utils/util_calculate_psnr_ssim.py` of JingyunLiang/SwinIR (used by its
`main_test_swinir.py`): `calculate_psnr`, `calculate_ssim`, `calculate_psnrb` and the MATLAB-style
BT.601 `bgr2ycbcr`. This module is an independent re-implementation: the per-pixel work runs in JAX
(jit-compiled, batched over a leading image axis), and for uint8 images the results agree with the
original to ~1e-13 (PSNR: bit for bit), see "Numerics" below.

Conventions
  * Images are numpy or JAX arrays with values in [0, 255] (uint8 or float), shaped HW, HWC or,
    batched, BHWC. `psnr`/`ssim`/`psnrb` return a Python float for HW/HWC input and a float64 numpy
    vector (one value per image) for BHWC input; the `*_batch` functions require BHWC and always
    return that vector.
  * Colour images are RGB by default (this library's convention). SwinIR evaluates OpenCV's BGR
    arrays; pass `channel_order='BGR'` for such data. Only the Y-channel conversion
    (`test_y_channel=True` with 3 channels) depends on the order; the Y values of RGB input are
    bit-identical to SwinIR's on the same picture in BGR.
  * `crop_border` removes that many pixels from each edge before anything else (as the original).
  * `psnrb(restored, ground_truth)`: the blocking-effect factor is measured on the FIRST argument.

Numerics (what is computed in which precision, and why)
  All JAX work runs inside a local `jax.enable_x64(True)` context, so float64 is used where the
  original uses float64 whatever the global `jax_enable_x64` setting is (which is left untouched).
  Two XLA behaviours matter for bit-exactness and are worked around:
    - XLA turns `x / c` (c a constant or a broadcast scalar) into `x * (1/c)`, which is not correctly
      rounded (`k / 255.` differs from numpy for 24 of the 256 uint8 values k). `_exact_div` keeps a
      true IEEE division. Means are computed as sums in JAX divided by the count in numpy.
    - XLA:CPU (and GPU) contract `a*b + c` into fused multiply-adds inside a fusion, so float32
      values that must be rounded exactly like numpy's (the Y channel) are returned from their own
      jitted function (materialised, hence rounded) before anything else uses them.

  * PSNR (RGB/gray): like the original, float64 `mean((a-b)**2)`. For uint8 input all partial sums
    are exact integers, so the result is bit-identical; float input differs only by summation
    order (measured <= 1e-14 dB).
  * Y channel (`test_y_channel=True`): the original's `to_y_channel` goes through float32:
    `img.astype(float32) / 255`, a float64 dot product `B*24.966 + G*128.553 + R*65.481 + 16`,
    `/ 255`, cast to float32, `* 255` in float32. It then evaluates PSNR with a float32 `np.mean`
    and float32 `log10` (the original returns an `np.float32`). We compute the same float32 Y
    values in JAX (bit-identical for all 2**24 uint8 colours, checked exhaustively in the tests;
    float inputs could in principle differ by one float32 ulp in rare pixels because of FMA
    contraction in the dot product) and do the PSNR arithmetic on them in numpy exactly as the
    original, so Y-channel PSNR of uint8 images is bit-identical too.
  * SSIM: 11x11 Gaussian window (sigma 1.5; equal to `cv2.getGaussianKernel(11, 1.5)` to within two
    ulps) applied as two 1-D 'valid' float64 convolutions (`lax.conv_general_dilated`, precision
    HIGHEST). The original uses `cv2.filter2D` with the 2-D outer-product window on the full image
    and crops `[5:-5, 5:-5]` -- exactly the 'valid' region, so no border handling is involved. The
    two differ only by rounding (measured <= 6e-14 in SSIM on LIVE1 and Classic5). Y-channel SSIM
    uses the float32 Y values cast to float64, as the original does.
  * PSNR-B: float64 on images divided by 255, block size 8, with the original's definition as is:
    block-boundary pairs are columns/rows (7|8, 15|16, ... < W-1) but the normalising counts are
    `H*(W//8 - 1)` and `W*(H//8 - 1)` even when W or H is not a multiple of 8 (then one boundary
    column/row more is summed than counted); BEF = log2(8)/log2(min(H, W)) * (D_B - D_Bc), set to 0
    when D_B <= D_Bc; per channel `10*log10(1/(MSE + BEF))`, averaged over channels. With
    `test_y_channel=True` the original runs this in float32 torch arithmetic; we take the same
    float32 inputs (float32 Y / 255) but reduce in float64, so Y-channel PSNR-B differs from the
    original by the original's own float32 rounding: measured <= 3e-6 dB on JPEG-compressed
    LIVE1 / Classic5 images (uint8) and <= 1.4e-5 dB on float images.
"""
from __future__ import annotations

from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    'psnr',
    'ssim',
    'psnrb',
    'psnr_batch',
    'ssim_batch',
    'psnrb_batch',
    'rgb2ycbcr',
    'bgr2ycbcr',
    'gaussian_kernel_1d',
]

# BT.601 ("MATLAB rgb2ycbcr") coefficients for R, G, B in [0, 1]; Y in [16, 235], Cb/Cr in [16, 240].
_Y_R, _Y_G, _Y_B = 65.481, 128.553, 24.966
_CB_R, _CB_G, _CB_B = -37.797, -74.203, 112.0
_CR_R, _CR_G, _CR_B = 112.0, -93.786, -18.214

_SSIM_C1 = (0.01 * 255) ** 2
_SSIM_C2 = (0.03 * 255) ** 2
_SSIM_KSIZE = 11
_SSIM_SIGMA = 1.5
_BLOCK = 8


def gaussian_kernel_1d(ksize: int = _SSIM_KSIZE, sigma: float = _SSIM_SIGMA) -> np.ndarray:
  """Normalised 1-D Gaussian `exp(-x^2 / (2 sigma^2))`, x = i - (ksize-1)/2, float64.

  The kernel of `cv2.getGaussianKernel(ksize, sigma)` (sigma > 0); equal to OpenCV's to within two
  ulps (OpenCV uses its own software `exp`).
  """
  x = np.arange(ksize, dtype=np.float64) - (ksize - 1) / 2
  t = np.exp(-(x * x) / (2 * sigma * sigma))
  return t / t.sum()


_GAUSS_1D = gaussian_kernel_1d()


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------
def _x64():
  return jax.enable_x64(True)


def _exact_div(x, d: float):
  """`x / d` as a correctly rounded IEEE division (as numpy / torch do it).

  XLA rewrites `x / broadcast(constant)` into `x * (1 / constant)`. Hiding the divisor behind an
  optimisation barrier keeps a true division; the barrier is dropped after the algebraic
  simplifier has run, so the broadcast is still fused (no extra memory).
  """
  den = jax.lax.optimization_barrier(jnp.full(x.shape, d, x.dtype))
  return x / den


def _check_order(channel_order: str) -> str:
  order = str(channel_order).upper()
  if order not in ('RGB', 'BGR'):
    raise ValueError(f"channel_order must be 'RGB' or 'BGR', got {channel_order!r}")
  return order


def _as_bhwc(img: Any) -> tuple[Any, bool]:
  """(array shaped BHWC, whether the input was batched). JAX arrays stay on their device."""
  arr = img if isinstance(img, jax.Array) else np.asarray(img)
  if arr.ndim == 2:
    return arr[None, :, :, None], False
  if arr.ndim == 3:
    return arr[None], False
  if arr.ndim == 4:
    return arr, True
  raise ValueError(f'expected an HW, HWC or BHWC image, got shape {tuple(arr.shape)}')


def _pair(img1: Any, img2: Any, *, batch_only: bool = False):
  if tuple(np.shape(img1)) != tuple(np.shape(img2)):
    raise ValueError(f'Image shapes are different: {tuple(np.shape(img1))}, {tuple(np.shape(img2))}.')
  a, batched = _as_bhwc(img1)
  b, _ = _as_bhwc(img2)
  if batch_only and not batched:
    raise ValueError(f'expected a BHWC batch, got shape {tuple(a.shape[1:])}')
  return a, b, batched


def _cropped_hw(x, crop_border: int) -> tuple[int, int]:
  h, w = int(x.shape[1]) - 2 * crop_border, int(x.shape[2]) - 2 * crop_border
  if crop_border < 0 or h <= 0 or w <= 0:
    raise ValueError(f'invalid crop_border={crop_border} for images of size '
                     f'{int(x.shape[1])}x{int(x.shape[2])}')
  return h, w


def _crop(x, crop_border: int):
  if crop_border != 0:
    x = x[:, crop_border:-crop_border, crop_border:-crop_border, :]
  return x


def _y_channel_f32(x, order: str):
  """SwinIR's `to_y_channel` on a float64 BHWC batch: float32 BHW1 with values in [0, 255].

  `img.astype(float32) / 255`; with 3 channels `bgr2ycbcr(., y_only=True)` on that float32 image:
  float64 `B*24.966 + G*128.553 + R*65.481 + 16` (summed in this order, as `np.dot` on BGR data),
  `/ 255` in float64, cast to float32; finally `* 255` in float32. Other channel counts only make
  the float32 `/ 255 * 255` round trip, as in the original.
  """
  a = _exact_div(x.astype(jnp.float32), 255.0)
  if a.shape[-1] == 3:
    a64 = a.astype(jnp.float64)
    if order == 'BGR':
      b, g, r = a64[..., 0], a64[..., 1], a64[..., 2]
    else:
      r, g, b = a64[..., 0], a64[..., 1], a64[..., 2]
    y = b * _Y_B + g * _Y_G + r * _Y_R + 16.0
    a = _exact_div(y, 255.0).astype(jnp.float32)[..., None]
  return a * jnp.float32(255.0)


@partial(jax.jit, static_argnames=('crop_border', 'order'))
def _y_core(x, crop_border: int, order: str):
  """Cropped float32 Y channel (B, H, W, 1), materialised so that it is rounded like numpy's."""
  return _y_channel_f32(_crop(x.astype(jnp.float64), crop_border), order)


def _inputs(a, b, crop_border: int, test_y: bool, order: str):
  """What the metric cores get: the images and crop, or the cropped float32 Y maps and crop 0."""
  if not test_y:
    return a, b, crop_border
  return _y_core(a, crop_border=crop_border, order=order), _y_core(b, crop_border=crop_border,
                                                                  order=order), 0


# ------------------------------------------------------------------------------------------------
# jitted cores
# ------------------------------------------------------------------------------------------------
@partial(jax.jit, static_argnames=('crop_border',))
def _sse_core(a, b, crop_border: int):
  """Per-image float64 sum of squared differences (B,); numpy divides by the count."""
  d = _crop(a.astype(jnp.float64), crop_border) - _crop(b.astype(jnp.float64), crop_border)
  return jnp.sum(d * d, axis=(1, 2, 3))


def _gauss_filter_valid(x):
  """'valid' 11x11 separable Gaussian filtering of an (N, H, W) float64 stack."""
  k = jnp.asarray(_GAUSS_1D, dtype=x.dtype)
  dn = ('NCHW', 'OIHW', 'NCHW')
  hi = jax.lax.Precision.HIGHEST
  y = jax.lax.conv_general_dilated(x[:, None], k.reshape(1, 1, -1, 1), (1, 1), 'VALID',
                                   dimension_numbers=dn, precision=hi)
  y = jax.lax.conv_general_dilated(y, k.reshape(1, 1, 1, -1), (1, 1), 'VALID',
                                   dimension_numbers=dn, precision=hi)
  return y[:, 0]


@partial(jax.jit, static_argnames=('crop_border',))
def _ssim_core(a, b, crop_border: int):
  """Per-image, per-channel (B, C) sum of the 'valid' SSIM map, float64."""
  a = _crop(a.astype(jnp.float64), crop_border)
  b = _crop(b.astype(jnp.float64), crop_border)
  nb, h, w, c = a.shape
  a = jnp.transpose(a, (0, 3, 1, 2)).reshape(nb * c, h, w)
  b = jnp.transpose(b, (0, 3, 1, 2)).reshape(nb * c, h, w)
  f = _gauss_filter_valid(jnp.concatenate([a, b, a * a, b * b, a * b], axis=0))
  mu1, mu2, e11, e22, e12 = jnp.split(f, 5, axis=0)
  mu1_sq = mu1 ** 2
  mu2_sq = mu2 ** 2
  mu1_mu2 = mu1 * mu2
  sigma1_sq = e11 - mu1_sq
  sigma2_sq = e22 - mu2_sq
  sigma12 = e12 - mu1_mu2
  num = (2 * mu1_mu2 + _SSIM_C1) * (2 * sigma12 + _SSIM_C2)
  den = (mu1_sq + mu2_sq + _SSIM_C1) * (sigma1_sq + sigma2_sq + _SSIM_C2)
  return jnp.sum(num / den, axis=(1, 2)).reshape(nb, c)


def _bef(im):
  """Blocking-effect factor of a (B, C, H, W) float64 batch of [0, 1] images -> (B, C)."""
  h, w = im.shape[-2], im.shape[-1]
  dh = (im[..., :, :-1] - im[..., :, 1:]) ** 2  # column pairs j|j+1, j = 0 .. W-2
  dv = (im[..., :-1, :] - im[..., 1:, :]) ** 2  # row pairs i|i+1, i = 0 .. H-2
  col_block = (np.arange(w - 1) % _BLOCK) == _BLOCK - 1  # j = 7, 15, ... < W-1
  row_block = (np.arange(h - 1) % _BLOCK) == _BLOCK - 1
  axes = (-2, -1)
  h_block = jnp.sum(jnp.where(col_block, dh, 0.0), axis=axes)
  h_nonblock = jnp.sum(jnp.where(col_block, 0.0, dh), axis=axes)
  v_block = jnp.sum(jnp.where(row_block[:, None], dv, 0.0), axis=axes)
  v_nonblock = jnp.sum(jnp.where(row_block[:, None], 0.0, dv), axis=axes)
  # The original's counts (not the number of pairs summed when W or H is not a multiple of 8).
  n_boundary_horiz = h * (w // _BLOCK - 1)
  n_boundary_vert = w * (h // _BLOCK - 1)
  n_nonboundary_horiz = h * (w - 1) - n_boundary_horiz
  n_nonboundary_vert = w * (h - 1) - n_boundary_vert
  boundary = _exact_div(h_block + v_block, float(n_boundary_horiz + n_boundary_vert))
  nonboundary = _exact_div(h_nonblock + v_nonblock, float(n_nonboundary_horiz + n_nonboundary_vert))
  scaler = float(np.log2(_BLOCK) / np.log2(min(h, w)))
  bef = scaler * (boundary - nonboundary)
  return jnp.where(boundary <= nonboundary, 0.0, bef)


@partial(jax.jit, static_argnames=('crop_border', 'scale_in_f32'))
def _psnrb_core(a, b, crop_border: int, scale_in_f32: bool):
  """Per-image, per-channel (sum of squared differences, BEF) on [0, 1] images; (B, C) each.

  The division by 255 happens in float64, or in float32 for the float32 Y maps (as the original's
  torch code does), and is correctly rounded either way.
  """
  dtype = jnp.float32 if scale_in_f32 else jnp.float64
  a = _exact_div(_crop(a.astype(dtype), crop_border), 255.0).astype(jnp.float64)
  b = _exact_div(_crop(b.astype(dtype), crop_border), 255.0).astype(jnp.float64)
  a = jnp.transpose(a, (0, 3, 1, 2))
  b = jnp.transpose(b, (0, 3, 1, 2))
  d = a - b
  return jnp.sum(d * d, axis=(-2, -1)), _bef(a)


# ------------------------------------------------------------------------------------------------
# implementations (return one float64 per image)
# ------------------------------------------------------------------------------------------------
def _psnr_impl(img1, img2, crop_border, test_y, channel_order, batch_only=False) -> tuple:
  a, b, batched = _pair(img1, img2, batch_only=batch_only)
  crop_border, order = int(crop_border), _check_order(channel_order)
  h, w = _cropped_hw(a, crop_border)
  with _x64():
    if test_y:
      ya, yb = (np.asarray(y) for y in _inputs(a, b, crop_border, True, order)[:2])
    else:
      sse = np.asarray(_sse_core(a, b, crop_border=crop_border), dtype=np.float64)
  if test_y:
    # The original's float32 arithmetic on the (H, W, 1) float32 Y images, verbatim.
    vals = []
    for y1, y2 in zip(ya, yb):
      mse = np.mean((y1 - y2) ** 2)
      vals.append(float('inf') if mse == 0 else float(20. * np.log10(255. / np.sqrt(mse))))
    return np.asarray(vals, dtype=np.float64), batched
  mse = sse / (h * w * int(a.shape[3]))
  with np.errstate(divide='ignore'):
    res = 20. * np.log10(255. / np.sqrt(mse))
  return np.where(mse == 0, np.inf, res), batched


def _ssim_impl(img1, img2, crop_border, test_y, channel_order, batch_only=False) -> tuple:
  a, b, batched = _pair(img1, img2, batch_only=batch_only)
  crop_border, order = int(crop_border), _check_order(channel_order)
  h, w = _cropped_hw(a, crop_border)
  if h < _SSIM_KSIZE or w < _SSIM_KSIZE:
    raise ValueError(f'SSIM needs at least {_SSIM_KSIZE}x{_SSIM_KSIZE} pixels after cropping, '
                     f'got {h}x{w}')
  with _x64():
    a, b, crop = _inputs(a, b, crop_border, test_y, order)
    sums = np.asarray(_ssim_core(a, b, crop_border=crop), dtype=np.float64)
  per_channel = sums / ((h - _SSIM_KSIZE + 1) * (w - _SSIM_KSIZE + 1))
  return per_channel.mean(axis=1), batched


def _psnrb_impl(img1, img2, crop_border, test_y, channel_order, batch_only=False) -> tuple:
  a, b, batched = _pair(img1, img2, batch_only=batch_only)
  crop_border, order = int(crop_border), _check_order(channel_order)
  h, w = _cropped_hw(a, crop_border)
  with _x64():
    a, b, crop = _inputs(a, b, crop_border, test_y, order)
    sse, bef = _psnrb_core(a, b, crop_border=crop, scale_in_f32=bool(test_y))
    sse = np.asarray(sse, dtype=np.float64)
    bef = np.asarray(bef, dtype=np.float64)
  mse = sse / (h * w)
  with np.errstate(divide='ignore'):
    per_channel = 10 * np.log10(1 / (mse + bef))
  return per_channel.sum(axis=1) / per_channel.shape[1], batched


def _finish(result: tuple):
  values, batched = result
  return np.asarray(values, dtype=np.float64) if batched else float(values[0])


# ------------------------------------------------------------------------------------------------
# public API
# ------------------------------------------------------------------------------------------------
def psnr(img1, img2, *, crop_border: int = 0, test_y_channel: bool = False,
         channel_order: str = 'RGB'):
  """PSNR in dB as SwinIR's `calculate_psnr`: `20*log10(255/sqrt(MSE))`, `inf` when MSE == 0.

  Args:
    img1, img2: images in [0, 255] (uint8 or float), HW / HWC / BHWC, same shape.
    crop_border: pixels removed from each edge before evaluation.
    test_y_channel: evaluate on the BT.601 Y channel (the original's float32 path, see the module
      docstring). A 1-channel image then only makes the float32 `/255*255` round trip.
    channel_order: 'RGB' (default) or 'BGR' (SwinIR / OpenCV data); only used for the Y channel.

  Returns:
    a float for a single image; a float64 vector (one PSNR per image) for BHWC input.
  """
  return _finish(_psnr_impl(img1, img2, crop_border, test_y_channel, channel_order))


def psnr_batch(img1, img2, *, crop_border: int = 0, test_y_channel: bool = False,
               channel_order: str = 'RGB') -> np.ndarray:
  """Per-image PSNR of two BHWC batches: float64 vector of length B. See `psnr`."""
  return _finish(_psnr_impl(img1, img2, crop_border, test_y_channel, channel_order, True))


def ssim(img1, img2, *, crop_border: int = 0, test_y_channel: bool = False,
         channel_order: str = 'RGB'):
  """SSIM as SwinIR's `calculate_ssim` (the Wang et al. 2004 / MATLAB `ssim_index` definition).

  Per channel: 11x11 Gaussian window (sigma 1.5), 'valid' filtering, C1 = (0.01*255)^2,
  C2 = (0.03*255)^2, mean of the SSIM map; then the mean over channels. Needs H, W >= 11 after
  cropping. Arguments and return value as `psnr`.
  """
  return _finish(_ssim_impl(img1, img2, crop_border, test_y_channel, channel_order))


def ssim_batch(img1, img2, *, crop_border: int = 0, test_y_channel: bool = False,
               channel_order: str = 'RGB') -> np.ndarray:
  """Per-image SSIM of two BHWC batches: float64 vector of length B. See `ssim`."""
  return _finish(_ssim_impl(img1, img2, crop_border, test_y_channel, channel_order, True))


def psnrb(img1, img2, *, crop_border: int = 0, test_y_channel: bool = False,
          channel_order: str = 'RGB'):
  """PSNR-B (Yim & Bovik 2011) in dB as SwinIR's `calculate_psnrb`.

  `img1` is the restored (evaluated) image, `img2` the ground truth: the blocking effect factor
  (8x8 blocks) is measured on `img1` only. Per channel, on images divided by 255:
  `10*log10(1 / (MSE + BEF))`; the result is the mean over channels. Arguments and return value as
  `psnr`.
  """
  return _finish(_psnrb_impl(img1, img2, crop_border, test_y_channel, channel_order))


def psnrb_batch(img1, img2, *, crop_border: int = 0, test_y_channel: bool = False,
                channel_order: str = 'RGB') -> np.ndarray:
  """Per-image PSNR-B of two BHWC batches: float64 vector of length B. See `psnrb`."""
  return _finish(_psnrb_impl(img1, img2, crop_border, test_y_channel, channel_order, True))


# ------------------------------------------------------------------------------------------------
# colour conversion
# ------------------------------------------------------------------------------------------------
@partial(jax.jit, static_argnames=('y_only', 'order'))
def _ycbcr_core(a, y_only: bool, order: str):
  to_uint8 = a.dtype == jnp.uint8
  if to_uint8:
    a = _exact_div(a.astype(jnp.float32), 255.0)
  a = a.astype(jnp.float64)
  c0, c1, c2 = a[..., 0], a[..., 1], a[..., 2]
  if order == 'BGR':
    rows = ((_Y_B, _Y_G, _Y_R), (_CB_B, _CB_G, _CB_R), (_CR_B, _CR_G, _CR_R))
  else:
    rows = ((_Y_R, _Y_G, _Y_B), (_CB_R, _CB_G, _CB_B), (_CR_R, _CR_G, _CR_B))
  outs = [c0 * k0 + c1 * k1 + c2 * k2 + off
          for (k0, k1, k2), off in zip(rows[:1] if y_only else rows, (16.0, 128.0, 128.0))]
  out = outs[0] if y_only else jnp.stack(outs, axis=-1)
  if to_uint8:
    return jnp.round(out).astype(jnp.uint8)  # round half to even, as numpy
  return _exact_div(out, 255.0).astype(jnp.float32)


def _ycbcr(img, y_only: bool, order: str) -> np.ndarray:
  arr = img if isinstance(img, jax.Array) else np.asarray(img)
  dtype = np.dtype(arr.dtype)
  if dtype not in (np.dtype(np.uint8), np.dtype(np.float32)):
    raise TypeError(f'The img type should be np.float32 or np.uint8, but got {dtype}')
  if arr.ndim < 1 or arr.shape[-1] != 3:
    raise ValueError(f'expected a 3-channel image (..., 3), got shape {tuple(arr.shape)}')
  with _x64():
    return np.asarray(_ycbcr_core(arr, y_only=bool(y_only), order=order))


def rgb2ycbcr(img, *, y_only: bool = True) -> np.ndarray:
  """RGB -> YCbCr, ITU-R BT.601 as MATLAB's `rgb2ycbcr` (Y in [16, 235], Cb/Cr in [16, 240]).

  `Y = 16 + 65.481 R + 128.553 G + 24.966 B` for R, G, B in [0, 1]. Input/output types follow
  SwinIR's (BasicSR's) `_convert_input_type_range` / `_convert_output_type_range`:
    * uint8 input (range [0, 255]) -> `float32(img) / 255`, conversion in float64, rounded (half to
      even) and returned as uint8;
    * float32 input (range [0, 1]) -> returned as float32 in [0, 1] (i.e. Y / 255, not rounded);
    * any other dtype raises TypeError.
  `y_only=True` (the default here) returns Y only, shaped like the input without its channel axis;
  otherwise the last axis holds (Y, Cb, Cr). Takes numpy or JAX arrays shaped (..., 3); returns a
  numpy array. For every uint8 colour the result equals SwinIR's `bgr2ycbcr` of the BGR pixel
  (checked exhaustively).
  """
  return _ycbcr(img, y_only, 'RGB')


def bgr2ycbcr(img, *, y_only: bool = True) -> np.ndarray:
  """BGR version of `rgb2ycbcr`: SwinIR's `bgr2ycbcr` (which defaults to y_only=False)."""
  return _ycbcr(img, y_only, 'BGR')
