"""benchmarks/allinone_compare.py end to end on a tiny fake data root: prepare pins every input by
sha256, train runs the shared recipe and stores float16 weights, evaluate scores them and refuses a
tampered input, ship copies them into an assets folder with the table."""
from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
from PIL import Image

from conftest import REPO

TINY_DUALFREQ = dict(preset='dualfreq-small', hyperparameters=dict(
    dim=8, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1, heads=[1, 1, 2, 2], prior_dim=16, dformer_depth=1,
    dformer_heads=2, dformer_grid=2, dwt_levels=2))


@pytest.fixture(scope='module')
def harness():
  spec = importlib.util.spec_from_file_location('allinone_compare', REPO / 'benchmarks' / 'allinone_compare.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _images(folder, n, size, rng, suffix='.png'):
  folder.mkdir(parents=True, exist_ok=True)
  for i in range(n):
    Image.fromarray(rng.integers(0, 256, size + (3,), dtype=np.uint8)).save(folder / f'im{i}{suffix}')


@pytest.fixture()
def fake_root(tmp_path, monkeypatch):
  rng = np.random.default_rng(0)
  root = tmp_path / 'data'
  _images(root / 'testsets' / 'CBSD68', 2, (40, 56), rng)
  _images(root / 'testsets' / 'Rain100H' / 'input', 2, (48, 40), rng)
  _images(root / 'testsets' / 'Kodak24', 1, (260, 270), rng)
  _images(root / 'testsets' / 'McMaster', 1, (256, 258), rng, suffix='.tif')
  for name in ('im0.png', 'im1.png'):
    (root / 'testsets' / 'Rain100H' / 'target').mkdir(parents=True, exist_ok=True)
    rainy = np.asarray(Image.open(root / 'testsets' / 'Rain100H' / 'input' / name))
    Image.fromarray(rainy // 2).save(root / 'testsets' / 'Rain100H' / 'target' / name)
  _images(root / 'trainsets' / 'BSDS500_test200', 3, (80, 72), rng)
  monkeypatch.setenv('JAXRESTORE_DATA', str(root))
  return root


def test_prepare_train_evaluate_ship(harness, fake_root, tmp_path, monkeypatch):
  monkeypatch.setitem(harness.MODELS, 'dualfreq', TINY_DUALFREQ)
  out = tmp_path / 'aio'
  manifest = harness.prepare(out / 'testsets')
  assert set(manifest['sets']) == set(harness.SET_ORDER)
  for set_name, files in manifest['sets'].items():
    for name, sums in files.items():
      assert harness.sha256_file(out / 'testsets' / set_name / 'lq' / name) == sums['lq']
  # The synthetic sets are centre crops; CBSD68 is cropped to a multiple of 16 like the protocol.
  assert Image.open(out / 'testsets' / 'haze_kodak24' / 'gt' / 'im0.png').size == (256, 256)
  with pytest.raises(SystemExit, match='exists'):
    harness.prepare(out / 'testsets')  # never overwrites pinned inputs

  summary = harness.train('dualfreq', out, steps=2, seed=0)
  assert summary['steps'] == 2
  weights = out / 'runs' / 'dualfreq' / 'weights'
  meta = json.loads((weights / 'jaxrestore.json').read_text())
  assert meta['stored_dtype'] == 'float16' and meta['steps'] == 2 and 'BSDS500_test200' in meta['data']

  assets, record = tmp_path / 'assets', tmp_path / 'record'
  harness.ship(out, assets, record)  # trained, not scored: nothing ships ...
  assert not (assets / 'dualfreq-aio-small').exists()
  harness.ship(out, assets, record, unscored=True)  # ... unless asked: weights without scores
  early = json.loads((assets / 'dualfreq-aio-small' / 'jaxrestore.json').read_text())
  assert 'results' not in early and early['preset'] == 'dualfreq-aio-small'

  results = harness.evaluate(out, ['dualfreq'])
  assert list(results) == ['degraded input', 'dualfreq']
  scores = results['dualfreq']['scores']
  assert set(scores) == set(harness.SET_ORDER) and all(np.isfinite(v['psnr']) for v in scores.values())
  table = (out / 'results.md').read_text()
  assert table.splitlines()[0].startswith('| model | params | train min | cbsd68_sigma15 |') and '| dualfreq |' in table

  (record / 'hair.json').write_text(json.dumps(dict(results['dualfreq'], params=7)))  # an earlier run's row
  harness.ship(out, assets, record)
  shipped = json.loads((assets / 'dualfreq-aio-small' / 'jaxrestore.json').read_text())
  assert shipped['results'] == scores and shipped['preset'] == 'dualfreq-aio-small'
  assert json.loads((record / 'dualfreq.json').read_text())['scores'] == scores
  assert (record / 'manifest.json').read_bytes() == (out / 'testsets' / 'manifest.json').read_bytes()
  rows = [line.split(' | ')[0] for line in (record / 'results.md').read_text().splitlines()[2:]]
  assert rows == ['| degraded input', '| dualfreq', '| hair']  # kept, in the comparison's order
  (record / 'manifest.json').write_text('{}')
  with pytest.raises(SystemExit, match='other test inputs'):
    harness.ship(out, assets, record)  # rows on other inputs never mix

  (out / 'runs' / 'dualfreq' / 'scores.json').unlink()
  harness.ship(out, assets, tmp_path / 'record2', unscored=True)  # unscored never replaces scored weights
  assert json.loads((assets / 'dualfreq-aio-small' / 'jaxrestore.json').read_text())['results'] == scores
  lq = next((out / 'testsets' / 'rain100h' / 'lq').iterdir())
  lq.write_bytes(lq.read_bytes() + b'x')
  with pytest.raises(SystemExit, match='checksum differs'):
    harness.evaluate(out, ['dualfreq'])


def test_comparison_models_have_equal_parameter_counts(harness):
  counts = {name: harness.param_count(spec) for name, spec in harness.MODELS.items()}
  low, high = min(counts.values()), max(counts.values())
  assert high <= 1.1 * low, counts  # within 10 %
