"""jaxrestore.eval.degrade against the SwinIR test-time protocol.

* Gaussian noise: bit-identical to the literal SwinIR/KAIR snippet (numpy's global generator).
* JPEG: the published "JPEG only" baselines (PSNR of the decoded JPEG vs the original, gray / Y,
  no border crop; ARCNN / DnCNN / SwinIR tables) and (opencv-python-headless, test extra)
  identity with `cv2.imencode` / `cv2.imdecode` (measured: byte-identical files, max pixel
  difference 0, on all of Classic5 and LIVE1, gray and colour, q = 10..40).

Measured here (Pillow 13.0 / libjpeg-turbo; identical with cv2 5.0):
  Classic5 gray  q=10 27.8211  q=20 30.1233  q=30 31.4840  q=40 32.4284   (published 27.82 30.12 31.48 32.43)
  LIVE1 Y        q=10 27.7698  q=20 30.0720  q=30 31.4074  q=40 32.3548   (published 27.77 30.07 31.41 32.35)
"""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from jaxrestore.eval import degrade, metrics

import cv2  # opencv-python-headless: the test extra's independent reference (what SwinIR's code calls)

QUALITIES = (10, 20, 30, 40)
PUBLISHED = {
    'Classic5': {10: 27.82, 20: 30.12, 30: 31.48, 40: 32.43},
    'LIVE1': {10: 27.77, 20: 30.07, 30: 31.41, 40: 32.35},
}


def _load_set(data_dir, name):
  folder = data_dir / 'testsets' / name
  files = sorted(p for p in folder.iterdir() if p.suffix.lower() in ('.bmp', '.png'))
  assert files, f'no images in {folder}'
  return {p.name: np.asarray(Image.open(p)) for p in files}


@pytest.fixture(scope='module')
def classic5(data_dir):
  imgs = _load_set(data_dir, 'Classic5')
  assert len(imgs) == 5 and all(a.ndim == 2 and a.dtype == np.uint8 for a in imgs.values())
  return imgs


@pytest.fixture(scope='module')
def live1(data_dir):
  imgs = _load_set(data_dir, 'LIVE1')
  assert len(imgs) == 29 and all(a.ndim == 3 and a.shape[2] == 3 for a in imgs.values())
  return imgs


def _psnr(a, b):
  mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
  return 20 * np.log10(255.0 / np.sqrt(mse))


def _swinir_y_uint8(rgb):
  """SwinIR's bgr2ycbcr(img_bgr, y_only=True) for uint8, written from its definition."""
  x = rgb.astype(np.float32) / np.float32(255)
  r, g, b = (x[..., k].astype(np.float64) for k in range(3))
  return (((b * 24.966 + g * 128.553) + r * 65.481) + 16.0).round().astype(np.uint8)


# ------------------------------------------------------------------------------------------------
# Gaussian noise
# ------------------------------------------------------------------------------------------------
def _clean(h, w, c, seed=3):
  rng = np.random.default_rng(seed)
  shape = (h, w) if c is None else (h, w, c)
  return rng.integers(0, 256, shape, dtype=np.uint8).astype(np.float32) / 255.


@pytest.mark.parametrize('sigma', [15, 25, 50])
def test_gaussian_noise_gray_is_swinirs(sigma):
  img = _clean(37, 53, None)
  state = np.random.get_state()
  got = degrade.add_gaussian_noise(img, sigma)
  # our call neither used nor changed numpy's global generator
  after = np.random.get_state()
  assert after[0] == state[0] and np.array_equal(after[1], state[1]) and after[2:] == state[2:]
  # the literal protocol (main_test_swinir.py, gray_dn)
  np.random.seed(seed=0)
  want = img + np.random.normal(0, sigma / 255., img.shape)
  assert got.dtype == np.float64 == want.dtype
  np.testing.assert_array_equal(got, want)
  # HW1 gets the same numbers; uint8 input is converted like the original's loading
  np.testing.assert_array_equal(degrade.add_gaussian_noise(img[..., None], sigma), want[..., None])
  u8 = np.round(img * 255).astype(np.uint8)
  np.testing.assert_array_equal(degrade.add_gaussian_noise(u8, sigma), want)
  # other seeds
  np.random.seed(seed=7)
  want7 = img + np.random.normal(0, sigma / 255., img.shape)
  np.testing.assert_array_equal(degrade.add_gaussian_noise(img, sigma, seed=7), want7)


def test_gaussian_noise_color_is_swinirs(data_dir):
  rgb = np.asarray(Image.open(data_dir / 'testsets' / 'CBSD68' / '101085.png'))[:96, :128]
  img_rgb = rgb.astype(np.float32) / 255.
  img_bgr = np.ascontiguousarray(img_rgb[..., ::-1])  # what cv2.imread gives the original
  # the literal protocol (main_test_swinir.py, color_dn), on the BGR array
  np.random.seed(seed=0)
  want_bgr = img_bgr + np.random.normal(0, 25 / 255., img_bgr.shape)
  got_rgb = degrade.add_gaussian_noise(img_rgb, 25)  # channel_order='RGB' is the default
  np.testing.assert_array_equal(got_rgb, want_bgr[..., ::-1])
  got_bgr = degrade.add_gaussian_noise(img_bgr, 25, channel_order='BGR')
  np.testing.assert_array_equal(got_bgr, want_bgr)
  assert got_rgb.dtype == np.float64 and got_rgb.shape == img_rgb.shape
  # not clipped
  assert got_rgb.min() < 0 or got_rgb.max() > 1
  with pytest.raises(ValueError):
    degrade.add_gaussian_noise(img_rgb, 25, channel_order='YUV')


# ------------------------------------------------------------------------------------------------
# JPEG
# ------------------------------------------------------------------------------------------------
def test_classic5_q20_baseline(classic5):
  """The headline check: Classic5, gray, q=20: 30.12 dB published; measured 30.1233 dB."""
  vals = [_psnr(degrade.jpeg_compress(img, 20, mode='gray'), img) for img in classic5.values()]
  assert abs(np.mean(vals) - 30.12) < 0.02
  assert np.mean(vals) == pytest.approx(30.1233, abs=1e-4)


@pytest.mark.parametrize('name', ['Classic5', 'LIVE1'])
def test_published_jpeg_baselines(name, classic5, live1):
  imgs = classic5 if name == 'Classic5' else live1
  targets = [degrade.jpeg_gray_target(img) for img in imgs.values()]
  for q in QUALITIES:
    vals = [_psnr(degrade.jpeg_compress(t, q, mode='gray'), t) for t in targets]
    # published values are rounded to 0.01 dB
    assert abs(np.mean(vals) - PUBLISHED[name][q]) <= 0.006, (name, q, np.mean(vals))


def test_jpeg_gray_of_color_uses_y(live1):
  rgb = next(iter(live1.values()))
  y = degrade.jpeg_gray_target(rgb)
  np.testing.assert_array_equal(y, _swinir_y_uint8(rgb))
  np.testing.assert_array_equal(degrade.jpeg_gray_target(rgb[..., ::-1], channel_order='BGR'), y)
  lq = degrade.jpeg_compress(rgb, 30, mode='gray')
  np.testing.assert_array_equal(lq, degrade.jpeg_compress(y, 30, mode='gray'))
  lq2, gt2 = degrade.jpeg_roundtrip(rgb, 30, mode='gray')
  np.testing.assert_array_equal(lq2, lq)
  np.testing.assert_array_equal(gt2, y)
  assert degrade.jpeg_compress(y[..., None], 30, mode='gray').shape == y.shape + (1,)


def test_jpeg_color_shapes_and_errors(live1):
  rgb = next(iter(live1.values()))
  out = degrade.jpeg_compress(rgb, 40, mode='color')
  assert out.shape == rgb.shape and out.dtype == np.uint8
  np.testing.assert_array_equal(
      degrade.jpeg_compress(np.ascontiguousarray(rgb[..., ::-1]), 40, mode='color', channel_order='BGR'),
      out[..., ::-1])
  assert 25 < _psnr(out, rgb) < 45
  lq, gt = degrade.jpeg_roundtrip(rgb, 40, mode='color')
  np.testing.assert_array_equal(lq, out)
  assert gt is rgb or np.array_equal(gt, rgb)
  with pytest.raises(ValueError):
    degrade.jpeg_compress(rgb, 40, mode='rgb')
  with pytest.raises(ValueError):
    degrade.jpeg_compress(rgb[..., 0], 40, mode='color')
  with pytest.raises(ValueError):
    degrade.jpeg_compress(rgb, 0, mode='color')
  with pytest.raises(TypeError):
    degrade.jpeg_compress(rgb.astype(np.float32), 40, mode='color')


@pytest.mark.parametrize('q', QUALITIES)
def test_jpeg_matches_cv2(q, classic5, live1):
  """SwinIR's own pipeline with cv2 vs ours with Pillow: byte-identical files, identical pixels."""
  enc = lambda img: cv2.imencode('.jpg', img, [int(cv2.IMWRITE_JPEG_QUALITY), q])[1].tobytes()
  for img in classic5.values():  # jpeg_car on a gray image
    data = enc(img)
    assert degrade._encode(img, q) == data
    np.testing.assert_array_equal(degrade.jpeg_compress(img, q, mode='gray'),
                                  cv2.imdecode(np.frombuffer(data, np.uint8), 0))
  for rgb in list(live1.values())[::3]:  # every third LIVE1 image (10 of 29), to stay fast
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    y = _swinir_y_uint8(rgb)  # jpeg_car on a colour image: Y channel
    data = enc(y)
    assert degrade._encode(y, q) == data
    np.testing.assert_array_equal(degrade.jpeg_compress(rgb, q, mode='gray'),
                                  cv2.imdecode(np.frombuffer(data, np.uint8), 0))
    data = enc(bgr)  # color_jpeg_car
    assert degrade._encode(rgb, q) == data
    want_bgr = cv2.imdecode(np.frombuffer(data, np.uint8), 1)
    np.testing.assert_array_equal(degrade.jpeg_compress(rgb, q, mode='color'), want_bgr[..., ::-1])
    np.testing.assert_array_equal(degrade.jpeg_compress(bgr, q, mode='color', channel_order='BGR'),
                                  want_bgr)


def test_metrics_on_jpeg(classic5):
  """PSNR-B < PSNR on JPEG-compressed images (blocking), as in the published CAR tables."""
  img = classic5['barbara.bmp']
  lq = degrade.jpeg_compress(img, 10, mode='gray')
  p, pb = metrics.psnr(lq, img), metrics.psnrb(lq, img)
  assert p == pytest.approx(_psnr(lq, img), abs=1e-12)
  assert pb < p - 0.3
