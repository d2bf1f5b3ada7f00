"""`jaxrestore.load`, `jaxrestore.convert.from_torch` and the `convert` CLI: round trips, detection
of every preset family, and strict loading errors."""
from __future__ import annotations

import collections

import numpy as np
import pytest
import torch
from flax import nnx

import jaxrestore
from jaxrestore import cli
from jaxrestore.mapping import CheckpointMismatchError
from jaxrestore.models import swinir
from jaxrestore.registry import detect_architecture

from torch_reference import randomize_, run_nchw

from spandrel.architectures.SwinIR import SwinIR as TorchSwinIR  # noqa: E402  (after the shim)

SMALL_SR = dict(in_chans=3, embed_dim=24, depths=(2, 2), num_heads=(2, 3), mlp_ratio=2.0, img_size=16,
                window_size=8, upscale=2, upsampler='pixelshuffle', img_range=1.0)


def _forward(model, x):
  return np.asarray(nnx.jit(lambda m, v: m(v))(model, x))


@pytest.fixture(scope='module')
def small_sr(tmp_path_factory):
  """A small random-weight SwinIR SR model saved the way the official release is: {'params': sd}."""
  tmodel = randomize_(TorchSwinIR(**SMALL_SR), seed=3)
  path = tmp_path_factory.mktemp('ckpt') / '001_small_x2.pth'
  torch.save({'params': tmodel.state_dict()}, path)
  return tmodel, path


def test_load_official_pth_detects_and_matches_torch(small_sr):
  tmodel, path = small_sr
  model = jaxrestore.load(weights=path)
  assert isinstance(model, swinir.SwinIR)
  assert model.config == swinir.SwinIRConfig(**SMALL_SR)
  x = np.random.default_rng(0).random((1, 19, 21, 3), dtype=np.float32)
  np.testing.assert_allclose(_forward(model, x), run_nchw(tmodel, x), atol=1e-5, rtol=0)


def test_convert_round_trip_reads_without_torch_checkpoint(small_sr, tmp_path):
  tmodel, path = small_sr
  dst = jaxrestore.convert.from_torch(path, tmp_path / 'converted')
  direct = jaxrestore.load(weights=path)
  from_dir = jaxrestore.load(weights=dst)
  assert from_dir.config == direct.config
  x = np.random.default_rng(1).random((2, 17, 24, 3), dtype=np.float32)
  np.testing.assert_array_equal(_forward(from_dir, x), _forward(direct, x))
  np.testing.assert_allclose(_forward(from_dir, x), run_nchw(tmodel, x), atol=1e-5, rtol=0)
  # Never overwrites without being asked.
  with pytest.raises(FileExistsError, match='already exists'):
    jaxrestore.convert.from_torch(path, dst)


def test_cli_convert_and_overwrite(small_sr, tmp_path, capsys):
  _, path = small_sr
  dst = tmp_path / 'cli_out'
  assert cli.main(['convert', str(path), str(dst), '--set', 'img_range=1.0']) == 0
  assert cli.main(['convert', str(path), str(dst)]) == 2
  assert 'already exists' in capsys.readouterr().err
  assert cli.main(['convert', str(path), str(dst), '--overwrite']) == 0
  assert jaxrestore.load(weights=dst).config.upscale == 2


def test_hyperparameter_override(small_sr):
  _, path = small_sr
  assert jaxrestore.load(weights=path, img_range=255.0).config.img_range == 255.0
  with pytest.raises(TypeError, match='unknown swinir hyperparameter'):
    jaxrestore.load(weights=path, not_a_field=1)


def _families():
  """One preset per distinct hyperparameter set: every SwinIR task, scale and size."""
  seen, out = set(), []
  for name, preset in jaxrestore.presets().items():
    key = (preset.architecture, repr(sorted(preset.hyperparameters.items())))
    if preset.architecture == 'swinir' and key not in seen:
      seen.add(key)
      out.append(name)
  return out


@pytest.mark.parametrize('name', _families())
def test_detection_recovers_every_swinir_preset(name):
  preset = jaxrestore.get_preset(name)
  config = swinir.SwinIRConfig(**preset.hyperparameters)
  sd = TorchSwinIR(**swinir.ARCHITECTURE.torch_reference.kwargs(config)).state_dict()
  if config.unshuffle:  # DiffBIR's layout: conv_first = Sequential(PixelUnshuffle, Conv2d)
    sd = {k.replace('conv_first.', 'conv_first.1.'): v for k, v in sd.items()}
  arch, hp = detect_architecture(sd)
  assert arch.name == 'swinir'
  assert swinir.SwinIRConfig(**hp) == swinir.SwinIRConfig(**preset.hyperparameters)


def _sd_copy(path):
  return collections.OrderedDict(torch.load(path, weights_only=True)['params'])


def test_strict_loading_names_the_missing_key(small_sr, tmp_path):
  _, path = small_sr
  sd = _sd_copy(path)
  del sd['layers.1.residual_group.blocks.0.mlp.fc2.bias']
  torch.save({'params': sd}, tmp_path / 'missing.pth')
  with pytest.raises(CheckpointMismatchError) as e:
    jaxrestore.load('swinir-classical-x2', weights=tmp_path / 'missing.pth', **SMALL_SR)
  assert 'missing (1): layers.1.residual_group.blocks.0.mlp.fc2.bias (24,)' in str(e.value)


def test_strict_loading_names_the_unexpected_key(small_sr, tmp_path):
  _, path = small_sr
  sd = _sd_copy(path)
  sd['layers.0.extra.weight'] = torch.zeros(3, 4)
  torch.save({'params': sd}, tmp_path / 'extra.pth')
  with pytest.raises(CheckpointMismatchError) as e:
    jaxrestore.load(weights=tmp_path / 'extra.pth')
  assert 'unexpected (1): layers.0.extra.weight (3, 4)' in str(e.value)
  assert 'missing' not in str(e.value)


def test_strict_loading_names_the_wrong_shape(small_sr, tmp_path):
  _, path = small_sr
  sd = _sd_copy(path)
  sd['conv_after_body.weight'] = torch.zeros(24, 24, 1, 1)
  torch.save({'params': sd}, tmp_path / 'shape.pth')
  with pytest.raises(CheckpointMismatchError) as e:
    jaxrestore.load(weights=tmp_path / 'shape.pth')
  message = str(e.value)
  assert 'conv_after_body.weight -> conv_after_body.kernel: found (24, 24, 1, 1)' in message
  assert 'expected (3, 3, 24, 24)' in message


def test_buffers_are_recognised_and_skipped(small_sr):
  _, path = small_sr
  sd = _sd_copy(path)
  assert any(k.endswith('attn_mask') for k in sd) and any(k.endswith('relative_position_index') for k in sd)
  jaxrestore.load(weights=path)  # strict, yet the saved buffers raise nothing


def test_weights_that_do_not_fit_the_preset(small_sr):
  _, path = small_sr
  with pytest.raises(CheckpointMismatchError, match='does not match the model'):
    jaxrestore.load('swinir-color-dn15', weights=path)


def test_unknown_architecture_lists_the_closest(tmp_path):
  torch.save({'encoder.weight': torch.zeros(3, 3)}, tmp_path / 'other.pth')
  with pytest.raises(CheckpointMismatchError, match='no known architecture matches'):
    jaxrestore.load(weights=tmp_path / 'other.pth')


def test_unknown_preset_suggests_names():
  with pytest.raises(ValueError, match='did you mean swinir-color-dn15'):
    jaxrestore.load('swinir-color-dn-15')


def test_preset_without_weights_warns_and_inits_randomly(monkeypatch, tmp_path):
  monkeypatch.setenv('JAXRESTORE_WEIGHTS', str(tmp_path))
  monkeypatch.setenv('HOME', str(tmp_path))
  with pytest.warns(UserWarning, match='no weights found for preset'):
    model = jaxrestore.load('swinir-lightweight-x2')
  assert model.config.embed_dim == 60 and model.config.upsampler == 'pixelshuffledirect'
  with pytest.raises(FileNotFoundError, match='002_lightweightSR_DIV2K_s64w8_SwinIR-S_x2.pth'):
    jaxrestore.load('swinir-lightweight-x2', pretrained=True)


def test_preset_weights_found_on_the_search_path(small_sr, tmp_path, monkeypatch):
  _, path = small_sr
  preset = jaxrestore.get_preset('swinir-classical-x2')
  (tmp_path / preset.checkpoint_file).write_bytes(path.read_bytes())
  monkeypatch.setenv('JAXRESTORE_WEIGHTS', str(tmp_path))
  model = jaxrestore.load('swinir-classical-x2', **SMALL_SR)
  assert model.config.embed_dim == 24


def test_presets_cover_every_official_swinir_checkpoint():
  files = {p.checkpoint_file for p in jaxrestore.presets().values() if p.architecture == 'swinir'}
  # classical, lightweight, real-world, denoising, JPEG; and DiffBIR's cleaner
  assert len(files) == 8 + 3 + 4 + 6 + 8 + 1 and 'general_swinir_v1.ckpt' in files
  for scale in (2, 3, 4, 8):
    assert f'001_classicalSR_DF2K_s64w8_SwinIR-M_x{scale}.pth' in files
    assert f'001_classicalSR_DIV2K_s48w8_SwinIR-M_x{scale}.pth' in files
  for q in (10, 20, 30, 40):
    assert f'006_CAR_DFWB_s126w7_SwinIR-M_jpeg{q}.pth' in files
    assert f'006_colorCAR_DFWB_s126w7_SwinIR-M_jpeg{q}.pth' in files
  assert jaxrestore.get_preset('swinir-color-dn15').checkpoint_file == '005_colorDN_DFWB_s128w8_SwinIR-M_noise15.pth'
  assert jaxrestore.get_preset('swinir-gray-car20').checkpoint_file == '006_CAR_DFWB_s126w7_SwinIR-M_jpeg20.pth'
  real = jaxrestore.get_preset('swinir-real-x4-l-gan')
  assert real.checkpoint_key == 'params_ema' and real.hyperparameters['resi_connection'] == '3conv'
