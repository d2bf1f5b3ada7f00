"""jaxrestore.eval.metrics against independent references (skimage, cv2/scipy, hand-written loops).

The references below are written from the published definitions (SwinIR's
utils/util_calculate_psnr_ssim.py protocol, Wang et al. SSIM, Yim & Bovik PSNR-B), not copied from
the implementation under test.  Tolerances:

* PSNR (uint8 input, RGB/gray and Y channel): bit-identical to the protocol (asserted with ==).
* PSNR vs skimage on float64 data: 1e-10 dB.
* SSIM vs a cv2.filter2D / scipy reference of the original formula: 1e-10.
* SSIM vs skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False, data_range=255): 1e-10.  The definitions agree exactly here: skimage
  filters with a truncate=3.5 Gaussian (radius int(3.5*1.5+0.5) = 5, i.e. 11x11) in 'reflect' mode
  and then drops a 5-pixel border, which is the same 'valid' region as the original's
  filter2D(...)[5:-5, 5:-5]; only rounding differs (measured 3e-16; vs the cv2/scipy references 1e-14).
* PSNR-B vs a plain-Python loop implementation: 1e-10 dB.
"""
from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage
import skimage.color
import skimage.metrics

from jaxrestore.eval import metrics

import cv2  # opencv-python-headless: the test extra's independent reference (what SwinIR's code calls)


# ------------------------------------------------------------------------------------------------
# test data: a smooth random scene plus a JPEG-like degraded copy (blocky, so BEF > 0)
# ------------------------------------------------------------------------------------------------
def _scene(h, w, c, seed):
  rng = np.random.default_rng(seed)
  base = scipy.ndimage.gaussian_filter(rng.uniform(0, 255, (h, w, c)), sigma=(3, 3, 0))
  base = (base - base.min()) / (base.max() - base.min()) * 235 + 10
  return np.clip(np.round(base + rng.normal(0, 6, base.shape)), 0, 255).astype(np.uint8)


def _blocky(img, seed):
  """8x8 block means blended with the image: a cheap stand-in for JPEG blocking."""
  rng = np.random.default_rng(seed)
  h, w = img.shape[:2]
  x = img.astype(np.float64)
  out = x.copy()
  for i in range(0, h, 8):
    for j in range(0, w, 8):
      blk = x[i:i + 8, j:j + 8]
      out[i:i + 8, j:j + 8] = 0.6 * blk + 0.4 * blk.mean(axis=(0, 1))
  return np.clip(np.round(out + rng.normal(0, 2, out.shape)), 0, 255).astype(np.uint8)


SHAPES = [(48, 64, 3), (45, 37, 3), (40, 56, 1)]  # 45x37: H, W not multiples of 8


@pytest.fixture(scope='module', params=SHAPES, ids=lambda s: 'x'.join(map(str, s)))
def pair(request):
  h, w, c = request.param
  gt = _scene(h, w, c, seed=h * w + c)
  return _blocky(gt, seed=c), gt


# ------------------------------------------------------------------------------------------------
# references
# ------------------------------------------------------------------------------------------------
def ref_y_f32(img_rgb):
  """The protocol's Y channel of an RGB image (float32 path), written from its definition:
  Y/255 = (16 + 65.481 R + 128.553 G + 24.966 B) / 255 with R, G, B = float32(x) / 255, the dot
  product in float64 summed in B, G, R order (the original works on BGR arrays), cast to float32,
  times 255 in float32."""
  x = img_rgb.astype(np.float32) / np.float32(255)
  if x.shape[-1] != 3:
    return x * np.float32(255)
  r, g, b = (x[..., k].astype(np.float64) for k in range(3))
  y = (((b * 24.966 + g * 128.553) + r * 65.481) + 16.0) / 255.0
  return y.astype(np.float32)[..., None] * np.float32(255)


def ref_psnr(a, b, crop=0, y=False):
  a = a.astype(np.float64)
  b = b.astype(np.float64)
  if a.ndim == 2:
    a, b = a[..., None], b[..., None]
  if crop:
    a, b = a[crop:-crop, crop:-crop], b[crop:-crop, crop:-crop]
  if y:
    a, b = ref_y_f32(a), ref_y_f32(b)
  mse = np.mean((a - b) ** 2)
  return float('inf') if mse == 0 else float(20 * np.log10(255.0 / np.sqrt(mse)))


def _window():
  if cv2 is not None:
    k = cv2.getGaussianKernel(11, 1.5)
  else:
    x = np.arange(11) - 5.0
    k = np.exp(-x * x / (2 * 1.5 ** 2))
    k = (k / k.sum())[:, None]
  return k @ k.T


def ref_ssim_channel(a, b, backend):
  """SSIM of one channel (Wang et al. 2004): Gaussian-weighted local statistics, mean of the map."""
  c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
  a = a.astype(np.float64)
  b = b.astype(np.float64)
  win = _window()
  if backend == 'cv2':
    filt = lambda z: cv2.filter2D(z, -1, win)[5:-5, 5:-5]
  else:
    filt = lambda z: scipy.ndimage.correlate(z, win, mode='mirror')[5:-5, 5:-5]
  mu_a, mu_b = filt(a), filt(b)
  var_a = filt(a * a) - mu_a ** 2
  var_b = filt(b * b) - mu_b ** 2
  cov = filt(a * b) - mu_a * mu_b
  m = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
  return m.mean()


def ref_ssim(a, b, crop=0, y=False, backend='scipy'):
  a = a.astype(np.float64)
  b = b.astype(np.float64)
  if crop:
    a, b = a[crop:-crop, crop:-crop], b[crop:-crop, crop:-crop]
  if y:
    a, b = ref_y_f32(a), ref_y_f32(b)
  return float(np.mean([ref_ssim_channel(a[..., i], b[..., i], backend) for i in range(a.shape[2])]))


def ref_psnrb(a, b):
  """PSNR-B with loops, from the definition used by SwinIR (block size 8).

  Per channel on [0, 1] data: BEF(a) = log2(8)/log2(min(H, W)) * max(0, D_B - D_Bc), D_B the mean
  squared difference across block boundaries (between pixel 8k+7 and 8k+8, horizontally and
  vertically; normaliser H*(W//8 - 1) + W*(H//8 - 1)), D_Bc the same over all other neighbouring
  pairs (normaliser H*(W-1) + W*(H-1) minus the former).  PSNR-B = 10 log10(1 / (MSE + BEF)),
  averaged over channels.
  """
  # scaled to [0, 1] in the dtype the protocol works in (float32 on the Y path), then float64
  a = (a / a.dtype.type(255) if a.dtype == np.float32 else a / 255.0).astype(np.float64)
  b = (b / b.dtype.type(255) if b.dtype == np.float32 else b / 255.0).astype(np.float64)
  h, w, c = a.shape
  total = 0.0
  for ch in range(c):
    x = a[..., ch]
    sb = sn = 0.0
    for i in range(h):
      for j in range(w - 1):
        d = (x[i, j] - x[i, j + 1]) ** 2
        if j % 8 == 7:
          sb += d
        else:
          sn += d
    for i in range(h - 1):
      for j in range(w):
        d = (x[i, j] - x[i + 1, j]) ** 2
        if i % 8 == 7:
          sb += d
        else:
          sn += d
    nb = h * (w // 8 - 1) + w * (h // 8 - 1)
    nn = h * (w - 1) + w * (h - 1) - nb
    db, dn = sb / nb, sn / nn
    bef = np.log2(8) / np.log2(min(h, w)) * (db - dn) if db > dn else 0.0
    mse = np.mean((x - b[..., ch]) ** 2)
    total += 10 * np.log10(1.0 / (mse + bef))
  return total / c


# ------------------------------------------------------------------------------------------------
# PSNR
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('crop', [0, 4])
def test_psnr_matches_skimage(pair, crop):
  out, gt = pair
  got = metrics.psnr(out, gt, crop_border=crop)
  a = out.astype(np.float64)
  b = gt.astype(np.float64)
  if crop:
    a, b = a[crop:-crop, crop:-crop], b[crop:-crop, crop:-crop]
  want = skimage.metrics.peak_signal_noise_ratio(b, a, data_range=255)
  assert isinstance(got, float)
  assert abs(got - want) < 1e-10
  assert got == ref_psnr(out, gt, crop)  # uint8: bit-identical to np.mean in float64


def test_psnr_hand_computed():
  a = np.zeros((4, 4), np.uint8)
  b = a.copy()
  b[1, 2] = 16  # MSE = 256 / 16 = 16
  assert metrics.psnr(a, b) == pytest.approx(20 * np.log10(255 / 4), abs=1e-12)
  assert metrics.psnr(a, a) == float('inf')
  # gray HW, HW1 and a float image give the same number
  assert metrics.psnr(a[..., None], b[..., None]) == metrics.psnr(a, b)
  assert metrics.psnr(a.astype(np.float32), b.astype(np.float64)) == metrics.psnr(a, b)


@pytest.mark.parametrize('crop', [0, 3])
def test_psnr_y_channel(pair, crop):
  out, gt = pair
  got = metrics.psnr(out, gt, crop_border=crop, test_y_channel=True)
  assert got == ref_psnr(out, gt, crop, y=True)  # float32 protocol, bit-identical
  if out.shape[-1] == 3:
    # BGR input with channel_order='BGR' gives the same Y
    assert metrics.psnr(out[..., ::-1], gt[..., ::-1], crop_border=crop, test_y_channel=True,
                        channel_order='BGR') == got
    # independent: skimage's BT.601 Y (float64) -- differs only by the float32 rounding of Y
    sl = slice(crop, -crop) if crop else slice(None)
    ya = skimage.color.rgb2ycbcr(out[sl, sl])[..., 0]
    yb = skimage.color.rgb2ycbcr(gt[sl, sl])[..., 0]
    assert abs(got - skimage.metrics.peak_signal_noise_ratio(yb, ya, data_range=255)) < 1e-4


def test_psnr_batch_and_jax_input(pair):
  out, gt = pair
  outs = np.stack([out, gt, out[::-1]])
  gts = np.stack([gt, gt, gt[::-1]])
  vec = metrics.psnr_batch(outs, gts, crop_border=2, test_y_channel=True)
  assert vec.shape == (3,) and vec.dtype == np.float64
  assert vec[1] == float('inf')
  for i in range(3):
    assert vec[i] == metrics.psnr(outs[i], gts[i], crop_border=2, test_y_channel=True)
  # BHWC through psnr() gives the vector, JAX arrays are accepted, global x64 state untouched
  x64_before = jax.config.jax_enable_x64
  got = metrics.psnr(jnp.asarray(outs), jnp.asarray(gts), crop_border=2, test_y_channel=True)
  np.testing.assert_array_equal(got, vec)
  assert jax.config.jax_enable_x64 == x64_before
  with pytest.raises(ValueError):
    metrics.psnr_batch(out, gt)


def test_input_validation():
  a = np.zeros((16, 16, 3), np.uint8)
  with pytest.raises(ValueError):
    metrics.psnr(a, a[:, :15])
  with pytest.raises(ValueError):
    metrics.psnr(a, a, test_y_channel=True, channel_order='YUV')
  with pytest.raises(ValueError):
    metrics.psnr(a, a, crop_border=8)
  with pytest.raises(ValueError):
    metrics.ssim(a, a, crop_border=3)  # 10x10 left: smaller than the 11x11 window


# ------------------------------------------------------------------------------------------------
# SSIM
# ------------------------------------------------------------------------------------------------
def test_gaussian_kernel_is_cv2s():
  # OpenCV computes it with its own software exp: equal up to rounding (<= 2 ulp)
  np.testing.assert_allclose(metrics.gaussian_kernel_1d(11, 1.5), cv2.getGaussianKernel(11, 1.5)[:, 0],
                             rtol=1e-15, atol=0)


@pytest.mark.parametrize('backend', ['scipy', 'cv2'])
@pytest.mark.parametrize('crop,y', [(0, False), (4, False), (0, True), (2, True)])
def test_ssim_matches_reference(pair, backend, crop, y):
  out, gt = pair
  got = metrics.ssim(out, gt, crop_border=crop, test_y_channel=y)
  assert isinstance(got, float)
  assert abs(got - ref_ssim(out, gt, crop, y, backend)) < 1e-10


def test_ssim_matches_skimage(pair):
  out, gt = pair
  got = metrics.ssim(out, gt)
  want = skimage.metrics.structural_similarity(
      out, gt, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255,
      channel_axis=-1)
  assert abs(got - want) < 1e-10
  assert metrics.ssim(gt, gt) == pytest.approx(1.0, abs=1e-12)


def test_ssim_batch(pair):
  out, gt = pair
  vec = metrics.ssim_batch(np.stack([out, gt]), np.stack([gt, gt]), test_y_channel=True)
  assert vec.shape == (2,)
  assert vec[0] == pytest.approx(metrics.ssim(out, gt, test_y_channel=True), abs=1e-13)
  assert vec[1] == pytest.approx(1.0, abs=1e-12)


# ------------------------------------------------------------------------------------------------
# PSNR-B
# ------------------------------------------------------------------------------------------------
def test_psnrb_matches_loop_reference(pair):
  out, gt = pair
  got = metrics.psnrb(out, gt)
  assert abs(got - ref_psnrb(out, gt)) < 1e-10
  # the blocky image has a positive blocking-effect factor, so PSNR-B < PSNR
  assert got < metrics.psnr(out, gt) - 0.01
  # BEF is measured on the first argument only
  assert metrics.psnrb(gt, out) != pytest.approx(got, abs=1e-3)
  # crop and Y channel: same definition applied to the cropped / Y images
  c = 3
  want = ref_psnrb(out[c:-c, c:-c], gt[c:-c, c:-c])
  assert abs(metrics.psnrb(out, gt, crop_border=c) - want) < 1e-10
  want_y = ref_psnrb(ref_y_f32(out), ref_y_f32(gt))
  assert abs(metrics.psnrb(out, gt, test_y_channel=True) - want_y) < 1e-10


def test_psnrb_equals_psnr_without_blocking(pair):
  out, gt = pair
  h, w, c = gt.shape
  # BEF = 0 when the restored image has no larger jumps across 8x8 block boundaries than inside
  # blocks; PSNR-B is then the PSNR of each channel (averaged over channels, so for colour it is
  # the mean of the per-channel PSNRs, not the PSNR of the pooled MSE).
  def per_channel_psnr(x, y):
    return np.mean([metrics.psnr(x[..., k], y[..., k]) for k in range(c)])

  # (1) a constant image: all differences are 0
  flat = np.full_like(gt, 117)
  assert abs(metrics.psnrb(flat, gt) - per_channel_psnr(flat, gt)) < 1e-10
  # (2) pixels 8k+7 and 8k+8 equal in both directions while the block interiors vary
  smooth = out.copy()
  for k in range(7, w - 1, 8):
    smooth[:, k + 1] = smooth[:, k]
  for k in range(7, h - 1, 8):
    smooth[k + 1] = smooth[k]
  assert abs(metrics.psnrb(smooth, gt) - per_channel_psnr(smooth, gt)) < 1e-10
  if c == 1:
    assert abs(metrics.psnrb(smooth, gt) - metrics.psnr(smooth, gt)) < 1e-10
  # identical images: MSE = 0, so PSNR-B is finite iff the image itself has blocking (BEF > 0)
  assert metrics.psnrb(flat, flat) == float('inf')
  assert metrics.psnrb(out, out) == pytest.approx(ref_psnrb(out, out), abs=1e-10)


def test_psnrb_batch(pair):
  out, gt = pair
  vec = metrics.psnrb_batch(np.stack([out, gt]), np.stack([gt, out]))
  assert vec[0] == pytest.approx(metrics.psnrb(out, gt), abs=1e-12)
  assert vec[1] == pytest.approx(metrics.psnrb(gt, out), abs=1e-12)


# ------------------------------------------------------------------------------------------------
# colour conversion
# ------------------------------------------------------------------------------------------------
def test_rgb2ycbcr_matches_skimage():
  rgb = _scene(33, 47, 3, seed=5)
  want = skimage.color.rgb2ycbcr(rgb)  # float64, Y in 16..235, Cb/Cr in 16..240
  # float32 [0, 1] input -> float32 [0, 1] output (SwinIR's _convert_output_type_range)
  got = metrics.rgb2ycbcr(rgb.astype(np.float32) / 255, y_only=False)
  assert got.dtype == np.float32 and got.shape == rgb.shape
  np.testing.assert_allclose(got.astype(np.float64) * 255, want, atol=1e-4)
  y = metrics.rgb2ycbcr(rgb.astype(np.float32) / 255)
  assert y.shape == rgb.shape[:2]
  np.testing.assert_allclose(y.astype(np.float64) * 255, want[..., 0], atol=1e-4)
  # uint8 input -> rounded uint8 output
  y8 = metrics.rgb2ycbcr(rgb)
  assert y8.dtype == np.uint8
  assert np.abs(y8.astype(np.float64) - want[..., 0]).max() <= 0.5 + 1e-6
  assert 16 <= y8.min() and y8.max() <= 235
  full8 = metrics.rgb2ycbcr(rgb, y_only=False)
  assert np.abs(full8.astype(np.float64) - want).max() <= 0.5 + 1e-6
  # BGR twin; JAX input; dtype check
  np.testing.assert_array_equal(metrics.bgr2ycbcr(rgb[..., ::-1]), y8)
  np.testing.assert_array_equal(metrics.rgb2ycbcr(jnp.asarray(rgb)), y8)
  with pytest.raises(TypeError):
    metrics.rgb2ycbcr(rgb.astype(np.float64))


def test_y_channel_exhaustive():
  """Y (float32 protocol path and uint8 bgr2ycbcr) for every one of the 2**24 uint8 colours."""
  v = np.arange(256, dtype=np.uint8)
  for r0 in range(0, 256, 64):
    r, g, b = np.meshgrid(v[r0:r0 + 64], v, v, indexing='ij')
    rgb = np.stack([r, g, b], -1).reshape(64 * 16, 4096, 3)  # 64*256*256 colours
    want = ref_y_f32(rgb)
    with jax.enable_x64(True):
      got = np.asarray(metrics._y_core(rgb[None], crop_border=0, order='RGB'))[0]
    np.testing.assert_array_equal(got, want)
    # SwinIR bgr2ycbcr(uint8, y_only=True): float64 result rounded half to even
    x = rgb.astype(np.float32) / np.float32(255)
    x = x.astype(np.float64)
    y8 = (((x[..., 2] * 24.966 + x[..., 1] * 128.553) + x[..., 0] * 65.481)
          + 16.0).round().astype(np.uint8)
    np.testing.assert_array_equal(metrics.rgb2ycbcr(rgb), y8)
