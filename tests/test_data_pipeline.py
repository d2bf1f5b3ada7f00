"""jaxrestore.data: tfds builders without TensorFlow, grain pipeline determinism, degradations."""
from __future__ import annotations

import shutil
import sys

import numpy as np
import pytest
from PIL import Image

from jaxrestore import data
from jaxrestore.data import pipeline
from jaxrestore.eval import degrade


@pytest.fixture(scope='module')
def tfds_dir(tmp_path_factory):
  return tmp_path_factory.mktemp('tfds')


@pytest.fixture(scope='module')
def small_folder(data_dir, tmp_path_factory):
  folder = tmp_path_factory.mktemp('bsd_small')
  for p in sorted((data_dir / 'trainsets' / 'BSD400').glob('*.png'))[:6]:
    shutil.copy(p, folder / p.name)
  return folder


@pytest.fixture(scope='module')
def sources(small_folder, tfds_dir):
  return pipeline.InMemory(data.prepare(small_folder, mode='L', data_dir=tfds_dir))


def test_builder_stores_images_losslessly_without_tensorflow(small_folder, tfds_dir, data_dir):
  records = data.prepare(small_folder, mode='L', data_dir=tfds_dir)
  assert len(records) == 6
  for i in range(len(records)):
    r = records[i]
    name = r['name'].decode() if isinstance(r['name'], bytes) else r['name']
    expected = np.asarray(Image.open(small_folder / name).convert('L'))
    assert r['image'].shape == (*expected.shape, 1) and r['image'].dtype == np.uint8
    np.testing.assert_array_equal(r['image'][..., 0], expected)
  # A test set as a named dataset; preparing twice reuses the records.
  set12 = data.prepare_known('set12', data_dir=tfds_dir)
  assert len(set12) == 12 and len(data.prepare_known('set12', data_dir=tfds_dir)) == 12
  assert 'tensorflow' not in sys.modules


def test_paired_builder_matches_by_stem(small_folder, tfds_dir, tmp_path):
  lq = tmp_path / 'lq'
  lq.mkdir()
  for p in small_folder.glob('*.png'):
    img = np.asarray(Image.open(p).convert('L'))
    Image.fromarray(degrade.jpeg_compress(img, 10, mode='gray')).save(lq / (p.stem + '.bmp'))
  records = data.prepare(small_folder, mode='L', lq_folder=lq, data_dir=tfds_dir)
  assert len(records) == 6
  r = records[0]
  name = r['name'].decode() if isinstance(r['name'], bytes) else r['name']
  gt = np.asarray(Image.open(small_folder / name).convert('L'))
  np.testing.assert_array_equal(r['gt'][..., 0], gt)
  np.testing.assert_array_equal(r['lq'][..., 0], degrade.jpeg_compress(gt, 10, mode='gray'))
  # Paired patches are cropped and augmented together: the LQ patch is the JPEG of the GT patch.
  it = data.make_iterator([data.Source(records)], patch_size=32, global_batch=4, num_steps=2, seed=3)
  batch = next(it)
  assert batch['lq'].shape == batch['gt'].shape == (4, 32, 32, 1)
  assert 20 < _psnr(batch['lq'], batch['gt']) < 40


def _psnr(a, b):
  return 10 * np.log10(1.0 / np.mean((np.asarray(a, np.float64) - b) ** 2))


def _iterator(sources, seed=0, **kw):
  kw = dict(dict(patch_size=24, global_batch=4, num_steps=20, seed=seed), **kw)
  return data.make_iterator([data.Source(sources, data.GaussianNoise(25))], **kw)


def test_pipeline_is_a_function_of_seed_and_step(sources):
  a = [next(it) for it in [_iterator(sources)] for _ in range(5)]
  b = [next(it) for it in [_iterator(sources)] for _ in range(5)]
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x['lq'], y['lq'])
    np.testing.assert_array_equal(x['gt'], y['gt'])
  c = next(_iterator(sources, seed=1))
  assert not np.array_equal(c['gt'], a[0]['gt'])
  # Resuming from a saved iterator state gives exactly the batches that followed.
  it = _iterator(sources)
  for _ in range(3):
    next(it)
  state = it.get_state()
  resumed = _iterator(sources)
  resumed.set_state(state)
  for expected in a[3:]:
    got = next(resumed)
    np.testing.assert_array_equal(got['lq'], expected['lq'])
  # Two hosts each read half of every global batch; together they are the one-host batch.
  halves = [_iterator(sources, process_index=p, process_count=2) for p in range(2)]
  for expected in a[:3]:
    parts = [next(h) for h in halves]
    assert parts[0]['lq'].shape[0] == 2
    np.testing.assert_array_equal(np.concatenate([p['lq'] for p in parts]), expected['lq'])
  # Epochs are reshuffled: with 6 images and batch 4, steps 0-2 cover both epochs 0 and 1 (the
  # records' order differs), and crops/augmentations differ between repeats of an image.
  assert len({x['gt'].tobytes() for x in a}) == 5


def test_augment_covers_the_eight_symmetries():
  img = np.arange(12, dtype=np.float32).reshape(3, 4, 1)[:3, :3]
  outs = {pipeline.augment(img, m).tobytes() for m in range(8)}
  assert len(outs) == 8


def test_gaussian_noise_sigma_fixed_and_blind():
  rng = np.random.default_rng(0)
  clean = np.full((96, 96, 1), 0.5, np.float32)
  measured = np.std(data.GaussianNoise(15)(clean, rng) - clean) * 255
  assert abs(measured - 15) < 0.3
  blind = data.GaussianNoise((5, 50))
  sigmas = [np.std(blind(clean, rng) - clean) * 255 for _ in range(40)]
  assert 4.5 < min(sigmas) < 12 and 43 < max(sigmas) < 50.5
  assert np.std(sigmas) > 8  # spread over the range, not one level


def test_jpeg_degradation_matches_eval_protocol_and_quality_orders_psnr(sources):
  rng = np.random.default_rng(0)
  clean = sources[0]['image'][:96, :96].astype(np.float32) / 255.0
  lq20 = data.JPEG(20)(clean, rng)
  expected = degrade.jpeg_compress(sources[0]['image'][:96, :96], 20, mode='gray').astype(np.float32) / 255.0
  np.testing.assert_array_equal(lq20, expected)
  psnrs = [_psnr(data.JPEG(q)(clean, rng), clean) for q in (5, 10, 20, 40, 80)]
  assert all(a < b for a, b in zip(psnrs, psnrs[1:])), psnrs
  qs = {int(round(_psnr(data.JPEG((10, 40))(clean, rng), clean) * 10)) for _ in range(12)}
  assert len(qs) > 3  # a quality range draws different qualities


@pytest.mark.parametrize('exponent', [0.0, 1.0, 2.0])
def test_colored_noise_spectrum_slope(exponent):
  rng = np.random.default_rng(0)
  clean = np.zeros((128, 128, 1), np.float32)
  deg = data.ColoredNoise(sigma=20, exponent=exponent)
  noise = np.stack([deg(clean, rng) for _ in range(4)], -1)[..., 0, :]
  slope = data.radial_power_slope(noise)
  assert abs(slope + exponent) < 0.15, (exponent, slope)
  assert abs(np.std(noise) * 255 - 20) < 0.5


def test_mixture_and_config_spec(sources):
  deg = data.make_degradation(dict(kind='mixture', weights=[3, 1], components=[
      dict(kind='gaussian', sigma=[10, 30]), dict(kind='jpeg', quality=10)]))
  rng = np.random.default_rng(0)
  clean = sources[1]['image'][:64, :64].astype(np.float32) / 255.0
  outs = [deg(clean, rng) for _ in range(200)]
  is_jpeg = [np.array_equal(o, np.round(o * 255) / 255) for o in outs]  # JPEG output is on the uint8 grid
  assert 0.15 < np.mean(is_jpeg) < 0.35
  with pytest.raises(ValueError, match='unknown degradation kind'):
    data.make_degradation(dict(kind='blur'))
  with pytest.raises(ValueError, match='unknown fields'):
    data.make_degradation(dict(kind='gaussian', sigmaa=3))


def test_mixed_sources_follow_weights(small_folder, tfds_dir):
  noisy = data.Source(pipeline.InMemory(data.prepare(small_folder, mode='L', data_dir=tfds_dir)),
                      data.GaussianNoise(50), weight=1.0)
  clean = data.Source(noisy.records, data.Identity(), weight=3.0)
  it = data.make_iterator([noisy, clean], patch_size=16, global_batch=40, num_steps=1, seed=0)
  b = next(it)
  identical = np.all(b['lq'] == b['gt'], axis=(1, 2, 3))
  assert 22 <= identical.sum() <= 38


def test_worker_processes_give_the_same_batches(sources):
  threads = _iterator(sources)
  workers = _iterator(sources, num_workers=2)
  try:
    for _ in range(3):
      a, b = next(threads), next(workers)
      np.testing.assert_array_equal(a['lq'], b['lq'])
      np.testing.assert_array_equal(a['gt'], b['gt'])
    state = workers.get_state()
    expected = next(threads)
  finally:
    workers.close()
  resumed = _iterator(sources, num_workers=2)
  try:
    resumed.set_state(state)
    np.testing.assert_array_equal(next(resumed)['lq'], expected['lq'])
  finally:
    resumed.close()
