"""The all-in-one training degradations (rain, haze, blur, low light): deterministic in the
Generator, pinned by checksums, and each doing what its name says."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest

from jaxrestore.data import degradations as d

PINNED = {  # sha256 of the uint8-rounded output on the input below, Generator seed 7
    'rain': '7114a0535ae63f314bbbda24882759e9832bc82327dd4f6a5e8b2b8ef7ddfcb8',
    'haze': '39b4eaa9cdd3bca9149c71569ee6d07baa3dc432032a01af1b51417c5f8ed643',
    'gaussian_blur': 'd2801b508e2aacc03bedb6a4640761fd2dce44ad4f1b7039c8df249731729215',
    'motion_blur': '9c4613d3711fe56439c4224375fb3ffd98275eb72efeba29fa181b808c65ccea',
    'low_light': 'e99cbf2875cfcad0a741b9251c5b437f00778d55f30fb837d2a3428d6342e4af',
}
KINDS = [d.RainStreaks(), d.Haze(), d.GaussianBlur(), d.MotionBlur(), d.LowLight()]


def _input():
  return np.random.default_rng(123).random((40, 56, 3), dtype=np.float32)


def _sha(x):
  return hashlib.sha256(np.clip(np.round(x * 255), 0, 255).astype(np.uint8).tobytes()).hexdigest()


@pytest.mark.parametrize('kind', KINDS, ids=lambda k: k.name)
def test_deterministic_and_pinned(kind):
  a, b = kind(_input(), np.random.default_rng(7)), kind(_input(), np.random.default_rng(7))
  np.testing.assert_array_equal(a, b)
  assert a.dtype == np.float32 and a.shape == (40, 56, 3)
  assert _sha(a) == PINNED[kind.name]
  assert _sha(kind(_input(), np.random.default_rng(8))) != PINNED[kind.name]


def _smooth_image():
  y, x = np.mgrid[0:64, 0:64].astype(np.float32) / 63
  return np.stack([0.2 + 0.6 * x, 0.3 + 0.4 * y, 0.5 * np.ones_like(x)], axis=-1).astype(np.float32)


def _high_frequency_energy(img):
  return float(np.mean(np.diff(img, axis=0) ** 2) + np.mean(np.diff(img, axis=1) ** 2))


def test_each_degradation_does_what_it_says():
  rng = lambda: np.random.default_rng(0)
  smooth = _smooth_image()
  rain = d.RainStreaks()(smooth, rng())
  assert np.all(rain >= smooth - 1e-6) and np.mean(rain > smooth + 0.05) > 0.01   # bright additive streaks
  haze = d.Haze()(smooth, rng())
  assert np.std(haze) < np.std(smooth) and np.mean(haze) > np.mean(smooth)          # veil: lighter, flatter
  flat = np.full((64, 64, 3), 0.2, np.float32)
  flat_haze = d.Haze()(flat, rng())
  assert np.mean(flat_haze[:16]) > np.mean(flat_haze[-16:]) > 0.2  # denser towards the (far) top
  texture = np.random.default_rng(1).random((64, 64, 3), dtype=np.float32)
  for blur in (d.GaussianBlur(), d.MotionBlur()):
    assert _high_frequency_energy(blur(texture, rng())) < 0.5 * _high_frequency_energy(texture)
    np.testing.assert_allclose(blur(smooth, rng())[8:-8, 8:-8], smooth[8:-8, 8:-8], atol=2e-3)  # linear ramps pass
  dark = d.LowLight()(smooth, rng())
  assert np.mean(dark) < 0.35 * np.mean(smooth) and np.all((dark >= 0) & (dark <= 1))


def test_line_kernel_points_along_its_angle():
  vertical = d.line_kernel(9, 90.0)
  assert abs(float(vertical.sum()) - 1) < 1e-6
  assert vertical[:, 4].sum() > 0.95 and vertical[4, :].sum() < 0.2
  horizontal = d.line_kernel(9, 0.0)
  assert horizontal[4, :].sum() > 0.95


def test_config_specs_build_every_kind():
  spec = {'kind': 'mixture', 'components': [{'kind': 'rain'}, {'kind': 'haze', 'beta': [0.5, 1.0]},
                                            {'kind': 'gaussian_blur', 'sigma': [1.0, 2.0]}, {'kind': 'motion_blur'},
                                            {'kind': 'low_light'}]}
  mix = d.make_degradation(spec)
  outs = {_sha(mix(_input(), np.random.default_rng(s))) for s in range(12)}
  assert len(outs) == 12
  with pytest.raises(ValueError, match='haze degradation: unknown fields'):
    d.make_degradation({'kind': 'haze', 'density': 1})
