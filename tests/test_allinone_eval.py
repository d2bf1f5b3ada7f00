"""The all-in-one (PromptIR/HAIR) protocol against a straightforward scikit-image computation."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from jaxrestore.eval import allinone
from jaxrestore.eval.protocol import list_images


def _skimage_reference(paths, sigma, seed=0):
  """What PromptIR's / HAIR's test.py computes for an identity network, written out plainly."""
  rng = np.random.RandomState(seed)
  psnrs, ssims = [], []
  for path in paths:
    img = np.array(Image.open(path).convert('RGB'))
    h, w = img.shape[:2]
    ch, cw = h % 16, w % 16
    clean = img[ch // 2:h - ch + ch // 2, cw // 2:w - cw + cw // 2, :]
    noisy = np.clip(clean + rng.randn(*clean.shape) * sigma, 0, 255).astype(np.uint8)
    restored = np.clip(noisy.astype(np.float32) / 255, 0, 1)
    target = np.clip(clean.astype(np.float32) / 255, 0, 1)
    psnrs.append(peak_signal_noise_ratio(target, restored, data_range=1))
    ssims.append(structural_similarity(target, restored, data_range=1, channel_axis=2))
  return psnrs, ssims


def test_identity_denoising_on_cbsd68_matches_skimage(data_dir):
  paths = list_images(data_dir / 'testsets' / 'CBSD68')[:3]
  result = allinone.evaluate_allinone(lambda x: x, paths, task='denoise', sigma=25)
  ref_psnr, ref_ssim = _skimage_reference(paths, 25)
  assert result.names == [p.name for p in paths]
  np.testing.assert_allclose(result.psnr, ref_psnr, rtol=0, atol=1e-9)
  np.testing.assert_allclose(result.ssim, ref_ssim, rtol=0, atol=1e-6)
  assert abs(result.mean()['psnr'] - np.mean(ref_psnr)) <= 1e-9
  assert 20 < result.mean()['psnr'] < 22  # sigma 25 on 8-bit images


def test_one_noise_stream_across_sigmas_like_test_py(data_dir):
  """test.py seeds once and runs sigma 15, 25, 50 on one stream: a shared RandomState reproduces it."""
  paths = list_images(data_dir / 'testsets' / 'CBSD68')[:2]
  rng = np.random.RandomState(0)
  first = allinone.evaluate_allinone(lambda x: x, paths, task='denoise', sigma=15, rng=rng)
  second = allinone.evaluate_allinone(lambda x: x, paths, task='denoise', sigma=25, rng=rng)
  assert first.psnr == pytest.approx(_skimage_reference(paths, 15)[0], abs=1e-9)
  fresh = allinone.evaluate_allinone(lambda x: x, paths, task='denoise', sigma=25)
  assert second.psnr != fresh.psnr


@pytest.mark.parametrize('shape,dtype', [((37, 29, 3), np.float32), ((16, 23), np.float32),
                                         ((40, 33, 3), np.float64), ((9, 12, 1), np.float32)])
def test_metrics_match_skimage(shape, dtype):
  rng = np.random.default_rng(0)
  clean = rng.random(shape).astype(dtype)
  restored = np.clip(clean + 0.1 * rng.standard_normal(shape), 0, 1).astype(dtype)
  axis = None if len(shape) == 2 else 2
  ref = structural_similarity(clean, restored, data_range=1, channel_axis=axis)
  ours = allinone.ssim(clean, restored, 1.0, channel_axis=axis)
  assert abs(ours - ref) <= (1e-6 if dtype == np.float32 else 1e-13)
  assert abs(allinone.psnr(clean, restored) - peak_signal_noise_ratio(clean, restored, data_range=1)) <= 1e-10


def test_crop_img_centres_the_crop():
  img = np.arange(50 * 37).reshape(50, 37, 1)
  out = allinone.crop_img(img, 16)
  assert out.shape == (48, 32, 1)
  assert out[0, 0, 0] == img[1, 2, 0]  # 2 extra rows -> 1 top; 5 extra columns -> 2 left, 3 right


def test_noise_is_clipped_and_truncated_to_uint8():
  clean = np.array([[[0, 128, 255]]], np.uint8)
  noisy = allinone.add_gaussian_noise_uint8(clean, 50, np.random.RandomState(3))
  noise = np.random.RandomState(3).randn(1, 1, 3)
  np.testing.assert_array_equal(noisy, np.floor(np.clip(clean + noise * 50, 0, 255)).astype(np.uint8))


@pytest.mark.parametrize('task,degraded,target', [('derain', 'rain-012.png', 'norain-012.png'),
                                                  ('dehaze', '0001_0.8_0.2.jpg', '0001.png')])
def test_paired_tasks_find_targets_by_the_official_naming(tmp_path, task, degraded, target):
  rng = np.random.default_rng(1)
  (tmp_path / 'input').mkdir()
  (tmp_path / 'target').mkdir()
  clean = rng.integers(0, 256, (35, 50, 3), dtype=np.uint8)
  bad = np.clip(clean.astype(int) + rng.integers(-20, 20, clean.shape), 0, 255).astype(np.uint8)
  Image.fromarray(clean).save(tmp_path / 'target' / target)
  Image.fromarray(bad).save(tmp_path / 'input' / degraded, quality=100)
  result = allinone.evaluate_allinone(lambda x: x, [tmp_path / 'input' / degraded], task=task)
  inp = allinone.crop_img(np.array(Image.open(tmp_path / 'input' / degraded).convert('RGB')))
  ref = np.array(Image.open(tmp_path / 'target' / target).convert('RGB'))[1:33, 1:49]
  assert inp.shape == ref.shape == (32, 48, 3)
  expected = peak_signal_noise_ratio(ref.astype(np.float32) / 255, inp.astype(np.float32) / 255, data_range=1)
  assert result.psnr[0] == pytest.approx(expected, abs=1e-9)


def test_denoise_needs_sigma_and_known_task():
  with pytest.raises(ValueError, match='sigma'):
    allinone.evaluate_allinone(lambda x: x, [], task='denoise')
  with pytest.raises(ValueError, match='unknown all-in-one task'):
    allinone.evaluate_allinone(lambda x: x, [], task='deblur')
