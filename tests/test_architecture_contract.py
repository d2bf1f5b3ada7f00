"""A model joins jaxrestore through one `ARCHITECTURE` object and nothing else: an architecture
defined here, in a test module, is listed, detected, loaded, converted, restored and evaluated
without any library file naming it. Also: how detection scores competing architectures."""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxrestore
from jaxrestore import cli, layers, registry
from jaxrestore.mapping import CheckpointMismatchError, ParamMap, Rule, conv_oihw_to_hwio
from jaxrestore.models.base import Architecture, ModelConfig, Preset, runtime_field


@dataclasses.dataclass(frozen=True)
class ToyConfig(ModelConfig):
  """A residual 3x3 conv stack on 4-pixel blocks (so padding matters), gray or colour."""
  channels: int = 1
  features: int = 5
  dtype: Any = runtime_field(None)
  param_dtype: Any = runtime_field(jnp.float32)
  padding: str = runtime_field('reflect')

  def __post_init__(self):
    self.check_padding()

  in_chans = property(lambda self: self.channels)
  out_chans = property(lambda self: self.channels)
  size_multiple = property(lambda self: 4)
  min_size = property(lambda self: 3)


class Toy(nnx.Module):

  def __init__(self, config: ToyConfig, *, rngs: nnx.Rngs):
    self.config = config
    self.head = layers.conv2d(config.channels, config.features, 3, rngs=rngs)
    self.tail = layers.conv2d(config.features, config.channels, 3, rngs=rngs)

  def __call__(self, x):
    cfg = self.config
    h, w = x.shape[1:3]
    x = cfg.pad_input(x, 'Toy')
    return cfg.crop_output(x + 0.1 * self.tail(jax.nn.relu(self.head(x))), h, w)


def _toy_hyperparameters(sd) -> dict:
  features, channels = np.shape(sd['toy_head.weight'])[:2]
  return dict(channels=int(channels), features=int(features))


TOY = Architecture(
    name='toy', config_cls=ToyConfig, model_cls=Toy,
    torch_params=ParamMap(rules=(Rule(r'toy_(head|tail)\.weight', r'\1.kernel', conv_oihw_to_hwio),
                                 Rule(r'toy_(head|tail)\.bias', r'\1.bias'))),
    signature=('toy_head.weight', 'toy_tail.weight'), hyperparameters_from_state_dict=_toy_hyperparameters,
    presets=lambda: [Preset(name='toy-gray-dn25', architecture='toy', hyperparameters=dict(channels=1),
                            task='gray_dn', channels=1, noise_level=25)])


@pytest.fixture()
def toy():
  registry.register(TOY)
  yield TOY
  registry.unregister('toy')


def _torch_state_dict(channels=1, features=5, seed=0) -> dict[str, np.ndarray]:
  rng = np.random.default_rng(seed)
  return {'toy_head.weight': rng.standard_normal((features, channels, 3, 3)).astype(np.float32) * 0.3,
          'toy_head.bias': rng.standard_normal(features).astype(np.float32) * 0.1,
          'toy_tail.weight': rng.standard_normal((channels, features, 3, 3)).astype(np.float32) * 0.3,
          'toy_tail.bias': rng.standard_normal(channels).astype(np.float32) * 0.1}


def _numpy_forward(sd, image):
  """The toy network in float64 NumPy on an H x W x C image, with the contract's reflect padding."""
  h, w = image.shape[:2]
  x = np.pad(image.astype(np.float64), ((0, -h % 4), (0, -w % 4), (0, 0)), mode='reflect')

  def conv(x, weight, bias):
    xp = np.pad(x, ((1, 1), (1, 1), (0, 0)))
    out = np.zeros(x.shape[:2] + (weight.shape[0],))
    for i in range(3):
      for j in range(3):
        out += xp[i:i + x.shape[0], j:j + x.shape[1]] @ weight[:, :, i, j].T.astype(np.float64)
    return out + bias

  y = x + 0.1 * conv(np.maximum(conv(x, sd['toy_head.weight'], sd['toy_head.bias']), 0),
                     sd['toy_tail.weight'], sd['toy_tail.bias'])
  return y[:h, :w]


def test_a_registered_architecture_is_listed_detected_loaded_converted_and_restored(toy, tmp_path, capsys):
  assert 'toy-gray-dn25' in jaxrestore.presets() and registry.architectures()['toy'] is toy
  assert cli.main(['presets', '--architecture', 'toy']) == 0
  assert 'toy-gray-dn25' in capsys.readouterr().out

  sd = _torch_state_dict()
  np.savez(tmp_path / 'toy.npz', **sd)
  model = jaxrestore.load(weights=tmp_path / 'toy.npz')
  assert isinstance(model, Toy) and model.config == ToyConfig(channels=1, features=5)

  image = np.random.default_rng(1).random((13, 18), dtype=np.float32)  # not a multiple of 4: padded inside
  restored = jaxrestore.restore(model, image)
  expected = np.clip(_numpy_forward(sd, image[:, :, None]), 0, 1)
  np.testing.assert_allclose(restored, expected, rtol=0, atol=1e-5)

  dst = jaxrestore.convert.from_torch(tmp_path / 'toy.npz', tmp_path / 'converted')
  again = jaxrestore.load(weights=dst)
  np.testing.assert_array_equal(jaxrestore.restore(again, image), restored)
  assert jaxrestore.load('toy-gray-dn25', weights=dst).config == model.config

  strict = jaxrestore.load(weights=dst, padding='strict')
  with pytest.raises(ValueError, match='multiples of 4'):
    strict(jnp.zeros((1, 13, 18, 1)))

  # The evaluator scores it with its preset's protocol (gray denoising, sigma 25), through the engine.
  from PIL import Image
  from jaxrestore.eval import protocol as proto
  from jaxrestore.eval.evaluator import Evaluator
  folder = tmp_path / 'set'
  folder.mkdir()
  rng = np.random.default_rng(2)
  for i in range(2):
    Image.fromarray((rng.random((21, 26)) * 255).astype(np.uint8)).save(folder / f'{i}.png')
  protocol = proto.protocol_for(jaxrestore.get_preset('toy-gray-dn25'), model.config)
  evaluator = Evaluator(model)
  result = evaluator.evaluate(evaluator.prepare(protocol, dataset=folder), protocol)
  assert result.names == ['0.png', '1.png'] and all(np.isfinite(v) for v in result.mean().values())
  assert set(result.mean()) >= {'psnr', 'ssim'}


def test_runtime_fields_are_never_stored_in_a_converted_checkpoint(toy, tmp_path):
  np.savez(tmp_path / 'toy.npz', **_torch_state_dict())
  dst = jaxrestore.convert.from_torch(tmp_path / 'toy.npz', tmp_path / 'c', padding='strict', dtype='bfloat16')
  from jaxrestore.convert import checkpoint
  meta = checkpoint.read_metadata(dst)
  assert meta['hyperparameters'] == {'channels': 1, 'features': 5}
  assert ToyConfig.runtime_fields() == ('dtype', 'param_dtype', 'padding')
  assert jaxrestore.load(weights=dst).config.padding == 'reflect'


def test_detection_prefers_the_most_specific_signature_and_refuses_ties(toy):
  sd = _torch_state_dict()
  # A descendant: toy's keys plus one more, declared without toy knowing about it.
  child = dataclasses.replace(TOY, name='toychild', signature=TOY.signature + ('toy_extra.weight',),
                              presets=tuple)
  registry.register(child)
  try:
    assert registry.detect_architecture(sd)[0].name == 'toy'
    assert registry.detect_architecture({**sd, 'toy_extra.weight': np.zeros(1)})[0].name == 'toychild'
    twin = dataclasses.replace(TOY, name='toytwin', presets=tuple)
    registry.register(twin)
    with pytest.raises(CheckpointMismatchError, match="ambiguous.*'toy'.*'toytwin'|ambiguous.*'toytwin'.*'toy'"):
      registry.detect_architecture(sd)
  finally:
    registry.unregister('toychild')
    registry.unregister('toytwin')


def test_registration_errors_are_clear(toy):
  with pytest.raises(ValueError, match="'toy' is already registered"):
    registry.register(TOY)
  clash = dataclasses.replace(TOY, name='toy2', presets=TOY.presets)
  with pytest.raises(ValueError, match="preset 'toy-gray-dn25' of architecture 'toy2' names architecture 'toy'"):
    registry.register(clash)
  with pytest.raises(TypeError, match='ModelConfig'):
    Architecture(name='bad', config_cls=dict, model_cls=Toy, torch_params=TOY.torch_params, signature=('a',),
                 hyperparameters_from_state_dict=dict)


def test_nothing_outside_models_branches_on_an_architecture_name():
  """The contract replaces `arch.name == 'swinir'` style branches and `getattr(config, ...)` probes."""
  import re
  from pathlib import Path
  root = Path(jaxrestore.__file__).parent
  names = sorted(registry.architectures())
  offenders = []
  for path in list(root.rglob('*.py')) + list(Path(jaxrestore.convert.__file__).parent.rglob('*.py')):
    if path.parent == root / 'models':
      continue
    text = path.read_text()
    for name in names:
      if re.search(rf"""==\s*['"]{name}['"]|['"]{name}['"]\s*==|in\s*\(['"]{name}['"]""", text):
        offenders.append(f'{path.name}: compares with {name!r}')
    if re.search(r"getattr\((model\.)?config,", text) or re.search(r"getattr\(setup\.model_config", text):
      offenders.append(f'{path.name}: getattr on a config')
  assert not offenders, offenders
