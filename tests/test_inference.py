"""Tiled, batched, sharded inference: seams, compile counts, devices, dtypes and image kinds."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from PIL import Image

import jaxrestore
from jaxrestore import inference
from jaxrestore.eval import metrics
from jaxrestore.models.swinir import SwinIR, SwinIRConfig

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope='module')
def dncnn():
  return jaxrestore.load('dncnn-gray-25')


@pytest.fixture(scope='module')
def noisy_house(data_dir):
  clean = np.asarray(Image.open(data_dir / 'testsets' / 'Set12' / '08.png'), np.float32) / 255.0
  return (clean + np.random.RandomState(0).normal(0, 25 / 255.0, clean.shape)).astype(np.float32)


def _small_swinir(**overrides):
  cfg = SwinIRConfig(**{**dict(img_size=16, in_chans=3, embed_dim=12, depths=(2,), num_heads=(2,),
                               window_size=8, mlp_ratio=2.0, upscale=1, upsampler=''), **overrides})
  return SwinIR(cfg, rngs=nnx.Rngs(0))


def test_tiles_without_seams_when_the_receptive_field_fits(dncnn, noisy_house):
  # DnCNN-17 sees 17 pixels each way: overlap // 4 >= 17 makes tiling exact.
  crop = noisy_house[:300, :417]  # odd size: the last row and column of tiles overlap more
  tiled = inference.restore(dncnn, crop, tile=128, overlap=72, batch_size=3)
  np.testing.assert_allclose(tiled, inference.restore(dncnn, crop), atol=2e-6, rtol=0)
  whole = inference.restore(dncnn, noisy_house)
  assert np.max(np.abs(inference.restore(dncnn, noisy_house, tile=160, overlap=80) - whole)) <= 2e-6


def test_a_short_overlap_leaves_a_small_bounded_seam(dncnn, noisy_house):
  whole = inference.restore(dncnn, noisy_house)
  err = np.abs(inference.restore(dncnn, noisy_house, tile=128, overlap=32) - whole)
  assert 1e-6 < err.max() < 0.05  # smooth blending keeps the receptive-field cut small


def test_one_compilation_per_tile_shape(dncnn):
  rng = np.random.default_rng(0)
  restorer = inference.get_restorer(dncnn)
  before = restorer.traces
  for h, w in [(150, 200), (333, 171), (97, 260), (400, 400)]:
    inference.restore(dncnn, rng.random((h, w), dtype=np.float32), tile=96, overlap=32, batch_size=4)
  assert restorer.traces - before == 1


def test_each_step_shape_compiles_once_and_releases_the_compilers_heap(monkeypatch):
  releases = []
  monkeypatch.setattr(inference.converted, 'release_freed_memory', lambda: releases.append(1))
  restorer = inference.Restorer(_small_swinir())
  x = np.random.default_rng(0).random((1, 16, 16, 3), dtype=np.float32)
  compiled = restorer.compile(x)
  assert restorer.compile(x) is compiled and restorer.traces == 1 and len(releases) == 1
  np.testing.assert_array_equal(restorer(x), restorer(x))
  assert restorer.traces == 1 and len(releases) == 1          # the kept step ran, nothing recompiled
  restorer(np.concatenate([x, x]))                             # steps of one image: the same shape
  restorer.micro_batch = 0
  restorer(np.concatenate([x, x]))
  assert restorer.traces == 2 and len(releases) == 2


def test_bfloat16_within_0_05_db_of_float32_on_set12(dncnn, data_dir):
  deltas = []
  for path in sorted((data_dir / 'testsets' / 'Set12').glob('*.png'))[:6]:
    clean = np.asarray(Image.open(path))
    noisy = clean.astype(np.float32) / 255 + np.random.RandomState(0).normal(0, 25 / 255, clean.shape)
    scores = []
    for dtype in (None, jnp.bfloat16):
      out = inference.restore(dncnn, noisy.astype(np.float32), tile=256, overlap=72, dtype=dtype)
      scores.append(metrics.psnr(np.round(out[:, :, 0] * 255).astype(np.uint8), clean))
    deltas.append(scores[0] - scores[1])
  assert abs(np.mean(deltas)) <= 0.05, deltas


def test_sr_scale_alpha_and_16_bit():
  model = _small_swinir(upscale=2, upsampler='pixelshuffledirect')
  rgba = np.random.default_rng(0).integers(0, 65536, (21, 30, 4), dtype=np.uint16)
  out = inference.restore(model, rgba, tile=16, overlap=8)
  assert out.shape == (42, 60, 4) and out.dtype == np.float32
  assert 0.0 <= out.min() and out.max() <= 1.0
  alpha = rgba[:, :, 3].astype(np.float32) / 65535
  np.testing.assert_allclose(out[::2, ::2, 3].mean(), alpha.mean(), atol=0.02)  # passed through, upscaled


def test_gray_model_restores_each_colour_channel(dncnn):
  rgb = np.random.default_rng(1).random((40, 50, 3), dtype=np.float32)
  out = inference.restore(dncnn, rgb)
  for c in range(3):
    np.testing.assert_array_equal(out[:, :, c], inference.restore(dncnn, rgb[:, :, c])[:, :, 0])


def test_uint8_and_float_inputs_agree(dncnn):
  u8 = np.random.default_rng(2).integers(0, 256, (33, 47), dtype=np.uint8)
  np.testing.assert_array_equal(inference.restore(dncnn, u8), inference.restore(dncnn, u8.astype(np.float32) / 255))


def test_bad_images_are_refused(dncnn):
  with pytest.raises(ValueError, match='NaN'):
    inference.restore(dncnn, np.full((8, 8), np.nan, np.float32))
  with pytest.raises(ValueError, match='dtype'):
    inference.restore(dncnn, np.zeros((8, 8), np.int64))
  with pytest.raises(ValueError, match='overlap'):
    inference.restore(dncnn, np.zeros((80, 80), np.float32), tile=32, overlap=32)


SHARDED = textwrap.dedent('''
    import os, sys
    import numpy as np, jax
    from flax import nnx
    from jaxrestore import inference
    from jaxrestore.models.swinir import SwinIR, SwinIRConfig
    assert jax.local_device_count() == 8, jax.local_devices()
    cfg = SwinIRConfig(img_size=16, in_chans=3, embed_dim=12, depths=(2,), num_heads=(2,), window_size=8,
                       mlp_ratio=2.0, upscale=2, upsampler='pixelshuffle')
    model = SwinIR(cfg, rngs=nnx.Rngs(0))
    image = np.random.default_rng(0).random((75, 61, 3), dtype=np.float32)
    many = inference.restore(model, image, tile=32, overlap=16, batch_size=8)
    # Same per-device shape (one tile per device and step) on a single device.
    one = inference.restore(model, image, tile=32, overlap=16, batch_size=1,
                            mesh=inference.data_mesh(jax.local_devices()[:1]))
    np.save(sys.argv[1], np.stack([many, one]))
    # A batch of 24 as three steps of one image per device equals it in one step, to float32 rounding.
    batch = np.random.default_rng(1).random((24, 16, 16, 3), dtype=np.float32)
    stepped, whole = inference.Restorer(model, micro_batch=1), inference.Restorer(model, micro_batch=0)
    np.testing.assert_allclose(stepped(batch), whole(batch), atol=2e-6, rtol=0)
    assert stepped.traces == whole.traces == 1
''')


def test_eight_devices_give_the_single_device_result(tmp_path):
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=8', JAX_PLATFORMS='cpu')
  out = tmp_path / 'out.npy'
  subprocess.run([sys.executable, '-c', SHARDED, str(out)], check=True, env=env, cwd=tmp_path, timeout=600)
  many, one = np.load(out)
  assert many.shape == (150, 122, 3)
  np.testing.assert_array_equal(many, one)


def test_a_batch_runs_in_micro_batches_with_the_whole_batch_result():
  model = _small_swinir()
  batch = np.random.default_rng(0).random((5, 24, 24, 3), dtype=np.float32)
  assert inference.default_micro_batch() == 1  # CPU: one image per device per step
  stepped, whole = inference.Restorer(model, micro_batch=2), inference.Restorer(model, micro_batch=0)
  out = stepped(batch)
  assert out.shape == (5, 24, 24, 3) and stepped.traces == 2  # steps of 2, 2 and 1 images
  np.testing.assert_allclose(out, whole(batch), atol=2e-6, rtol=0)
  assert whole.traces == 1
  with pytest.raises(ValueError, match='micro_batch must be >= 0'):
    inference.Restorer(model, micro_batch=-1)
  image = batch[0]
  inference.restore(model, image, micro_batch=0)
  inference.restore(model, image)  # an earlier call's micro_batch does not stick
  assert inference.get_restorer(model).micro_batch == inference.default_micro_batch()


def test_restorer_cache_never_serves_stale_weights():
  """The cache reuses placed weights and compilations, but not after the model's weights change."""
  model = _small_swinir()
  image = np.random.default_rng(0).random((24, 24, 3), dtype=np.float32)
  first = inference.restore(model, image)
  restorer = inference.get_restorer(model)
  assert inference.get_restorer(model) is restorer  # unchanged model: same placed weights
  state = nnx.state(model, nnx.Param)
  nnx.update(model, jax.tree.map(lambda a: a * 1.5, state))
  second = inference.restore(model, image)
  assert inference.get_restorer(model) is restorer and restorer.traces == 1  # re-placed, not recompiled
  fresh = _small_swinir()
  nnx.update(fresh, nnx.state(model, nnx.Param))
  np.testing.assert_array_equal(second, inference.restore(fresh, image))
  assert np.max(np.abs(second - first)) > 1e-3
