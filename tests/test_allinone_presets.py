"""The shipped all-in-one comparison presets (benchmarks/allinone_compare.py): each loads from the
package's assets, restores images it never saw, and `jaxrestore eval` reproduces the per-image
scores recorded in benchmarks/results/allinone/ for the same inputs. The trained DualFreq's Dformer
gives measurably different priors for different degradations (its reason to exist)."""
from __future__ import annotations

import hashlib
import json

import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

import jaxrestore
from jaxrestore import cli
from jaxrestore.api import ASSETS, find_weights
from jaxrestore.data import degradations
from jaxrestore.eval import allinone

from conftest import REPO

RECORD = REPO / 'benchmarks' / 'results' / 'allinone'
PRESETS = {'dualfreq-aio-small': 'dualfreq', 'hair-aio-small': 'hair', 'promptir-aio-small': 'promptir',
           'restormer-aio-small': 'restormer'}


def _set14(data_dir, size, count):
  """Centre crops of Set14 images (in neither the training data nor the comparison's test sets)."""
  out = []
  for path in sorted((data_dir / 'testsets' / 'Set14').iterdir()):
    image = np.asarray(Image.open(path).convert('RGB'), dtype=np.float32) / 255
    h, w = image.shape[:2]
    if min(h, w) >= size:
      out.append(image[(h - size) // 2:(h - size) // 2 + size, (w - size) // 2:(w - size) // 2 + size])
  return out[:count]


@pytest.mark.parametrize('name', sorted(PRESETS))
def test_preset_is_shipped_with_its_scores(name):
  preset = jaxrestore.get_preset(name)
  assert preset.bundled_weights == name and find_weights(preset) == ASSETS / name
  meta = json.loads((ASSETS / name / 'jaxrestore.json').read_text())
  recorded = json.loads((RECORD / f'{PRESETS[name]}.json').read_text())
  assert meta['stored_dtype'] == 'float16' and meta['steps'] == 300 and 'BSDS500_test200' in meta['data']
  assert preset.results == meta['results'] == recorded['scores'] and len(preset.results) == 12
  manifest = (RECORD / 'manifest.json').read_bytes()
  assert meta['test_manifest_sha256'] == recorded['manifest_sha256'] == hashlib.sha256(manifest).hexdigest()


def test_preset_says_when_its_weights_or_scores_are_missing(tmp_path, monkeypatch):
  """A preset declared before its run is shipped, or shipped before it is scored, says so."""
  from jaxrestore.models import base
  monkeypatch.setattr(base, 'ASSETS', tmp_path)
  hp = dict(dim=8)
  unshipped = base.all_in_one_comparison_preset('x-aio-small', 'restormer', hp)
  assert unshipped.bundled_weights is None and unshipped.notes.startswith('weights not shipped yet')
  (tmp_path / 'x-aio-small').mkdir()
  (tmp_path / 'x-aio-small' / 'jaxrestore.json').write_text(json.dumps(dict(steps=300)))
  unscored = base.all_in_one_comparison_preset('x-aio-small', 'restormer', hp)
  assert unscored.bundled_weights == 'x-aio-small' and unscored.results == {}
  assert unscored.notes.startswith('weights shipped, scores pending')
  (tmp_path / 'x-aio-small' / 'jaxrestore.json').write_text(json.dumps(dict(results={'a': {'psnr': 1.0}})))
  scored = base.all_in_one_comparison_preset('x-aio-small', 'restormer', hp)
  assert scored.results == {'a': {'psnr': 1.0}} and scored.notes.startswith('all-in-one')


@pytest.mark.parametrize('name', sorted(PRESETS))
def test_preset_restores_unseen_noisy_image_at_odd_size(name, data_dir):
  model = jaxrestore.load(name, pretrained=True)
  clean = _set14(data_dir, 160, 2)[1][:67, :93]  # odd size: padded inside, cropped back
  noisy = np.clip(clean + np.random.default_rng(0).normal(0, 25 / 255, clean.shape), 0, 1).astype(np.float32)
  restored = np.asarray(jaxrestore.restore(model, noisy))
  assert restored.shape == clean.shape and np.all(np.isfinite(restored))
  gain = allinone.psnr(clean, np.clip(restored, 0, 1)) - allinone.psnr(clean, noisy)
  assert gain > 4.0, (name, gain)  # 20.3 dB input; a trained denoiser gains several dB


@pytest.mark.parametrize('name', sorted(PRESETS))
def test_eval_reproduces_recorded_per_image_scores(name, tmp_path):
  """The user's `jaxrestore eval` path (all-in-one protocol, the same seeded noise stream) gives the
  scores the comparison recorded for the first CBSD68 sigma-15 images."""
  report_path = tmp_path / 'r.json'
  assert cli.main(['eval', '--model', name, '--dataset', 'CBSD68', '--task', 'denoise', '--noise', '15', '--limit', '2', '--quiet',
                   '--json', str(report_path)]) == 0
  report = json.loads(report_path.read_text())
  recorded = json.loads((RECORD / f'{PRESETS[name]}.json').read_text())['images']['cbsd68_sigma15']
  assert len(report['images']) == 2
  for image, psnr, ssim in zip(report['images'], report['scores']['psnr'], report['scores']['ssim']):
    assert abs(psnr - recorded[image][0]) < 0.01 and abs(ssim - recorded[image][1]) < 1e-4, image


CONDITIONS = {
    'clean': dict(kind='identity'), 'noise': dict(kind='gaussian', sigma=25.0),
    'coloured_noise': dict(kind='colored', sigma=25.0, exponent=1.5), 'rain': dict(kind='rain'),
    'haze': dict(kind='haze'), 'low_light': dict(kind='low_light'), 'blur': dict(kind='gaussian_blur', sigma=2.0),
    'jpeg': dict(kind='jpeg', quality=20)}


def prior_shifts(model, images) -> dict:
  """For each degradation, how the prior moves from the clean image's prior, paired per image:
  `consistency` = mean pairwise cosine of the per-image shift vectors (1 = every image moves the same
  way), `distance` = the mean shift's norm in units of the mean per-image deviation from it; plus the
  leave-one-out nearest-centroid accuracy over all classes (chance = 1 / classes)."""
  priors = {}
  for c, (condition, spec) in enumerate(CONDITIONS.items()):
    degrade = degradations.make_degradation(spec)
    batch = np.stack([np.clip(degrade(im, np.random.default_rng(100 * c + i)), 0, 1)
                      for i, im in enumerate(images)]).astype(np.float32)
    priors[condition] = np.asarray(model.prior(jnp.asarray(batch)), np.float64)
  out = {}
  for condition, prior in priors.items():
    if condition == 'clean':
      continue
    shift = prior - priors['clean']
    unit = shift / np.linalg.norm(shift, axis=1, keepdims=True)
    mean = shift.mean(0)
    out[condition] = dict(consistency=float((unit @ unit.T)[np.triu_indices(len(unit), 1)].mean()),
                          distance=float(np.linalg.norm(mean) / np.linalg.norm(shift - mean, axis=1).mean()))
  feats = np.concatenate(list(priors.values()))
  feats = (feats - feats.mean(0)) / (feats.std(0) + 1e-8)
  labels = np.repeat(np.arange(len(priors)), len(images))
  correct = 0
  for i in range(len(feats)):
    keep = np.arange(len(feats)) != i
    centroids = np.stack([feats[keep & (labels == k)].mean(0) for k in range(len(priors))])
    correct += int(np.argmin(np.linalg.norm(centroids - feats[i], axis=1)) == labels[i])
  return dict(shifts=out, accuracy=correct / len(feats))


def test_trained_dualfreq_priors_tell_degradations_apart(data_dir):
  """What the 300-step DualFreq's Dformer learned (docs/dualfreq.md): low light, haze and blur move
  its prior consistently and by different amounts; noise, rain and JPEG barely do (the untrained
  Dformer does respond to noise; training made it invariant to it, a finding, not asserted here)."""
  images = _set14(data_dir, 128, 8)
  trained = prior_shifts(jaxrestore.load('dualfreq-aio-small', pretrained=True), images)
  print(trained)
  shifts = trained['shifts']
  for condition in ('low_light', 'haze'):
    assert shifts[condition]['consistency'] > 0.7 and shifts[condition]['distance'] > 1.2, (condition, shifts)
  assert shifts['blur']['consistency'] > 0.3, shifts
  assert shifts['low_light']['distance'] > 2 * shifts['haze']['distance'], shifts  # distinct, not one axis
  assert trained['accuracy'] >= 2 / len(CONDITIONS), trained  # twice chance over 8 classes
