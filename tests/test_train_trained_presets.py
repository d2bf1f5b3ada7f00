"""The bundled trained defaults: presets resolve to assets that `jaxrestore.load` reads, and the
models beat their degraded input under the official protocol."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrestore
from jaxrestore.api import ASSETS, find_weights
from jaxrestore.configs.trained import RESULTS, trained_presets
from jaxrestore.eval.protocol import evaluate, list_images, protocol_for

CASES = {'trained-dncnn-gray-dn15': ('Set12', 5.5), 'trained-dncnn-gray-car20': ('Classic5', 0.5)}


@pytest.mark.parametrize('preset', trained_presets(), ids=lambda p: p.name)
def test_trained_preset_loads_and_restores(preset, data_dir):
  weights = find_weights(preset)
  assert weights == ASSETS / preset.bundled_weights and (weights / 'jaxrestore.json').is_file()
  model = jaxrestore.load(weights=weights, **preset.hyperparameters)
  assert type(model).__name__ == 'DnCNN' and model.config.depth == 17
  dataset, margin = CASES[preset.name]
  images = list_images(data_dir / 'testsets' / dataset)[:2]
  protocol = protocol_for(preset)
  apply = jax.jit(lambda x: model(x))
  restored = evaluate(lambda x: np.asarray(apply(jnp.asarray(x)[None]))[0], images, protocol).mean()['psnr']
  degraded = evaluate(lambda x: x, images, protocol).mean()['psnr']
  assert restored > degraded + margin, (restored, degraded)
  assert str(RESULTS[preset.name]['steps']) in preset.notes and 'dB' in preset.notes
