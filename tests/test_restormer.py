"""Restormer parity against spandrel_extra_arches' PyTorch Restormer (the official network code)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from flax import nnx

import jaxrestore
from jaxrestore import kernels
from jaxrestore.convert.build import model_from_state_dict
from jaxrestore.convert.torch_checkpoint import read_state_dict
from jaxrestore.models import restormer
from jaxrestore.registry import architectures, detect_architecture, get_architecture

from torch_reference import float64_error_bound, randomize_, state_dict_numpy

from spandrel_extra_arches.architectures.Restormer import Restormer as TorchRestormer  # noqa: E402

SMALL = dict(dim=8, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1, heads=(1, 2, 2, 4),
             ffn_expansion_factor=2.66)

# Colour and gray, both LayerNorm types, with and without conv biases, dual-pixel, and a
# non-default expansion factor and depths.
CASES = {
    'color-withbias': dict(SMALL, inp_channels=3, out_channels=3, bias=False, LayerNorm_type='WithBias'),
    'gray-biasfree-bias': dict(SMALL, inp_channels=1, out_channels=1, bias=True, LayerNorm_type='BiasFree'),
    'dual-pixel': dict(SMALL, inp_channels=6, out_channels=3, bias=False, LayerNorm_type='WithBias',
                       dual_pixel_task=True),
    'deeper-ffn2': dict(dim=12, num_blocks=(2, 1, 1, 2), num_refinement_blocks=2, heads=(2, 2, 4, 4),
                        ffn_expansion_factor=2.0, inp_channels=3, out_channels=3, bias=True,
                        LayerNorm_type='BiasFree'),
}

# (batch, H, W) per case: odd sizes (reflect-padded inside the model to a multiple of 8, as the
# official scripts do) and an exact multiple. Every size is one XLA compile (seconds on CI).
SIZES = {
    'color-withbias': (2, 21, 30),
    'gray-biasfree-bias': (1, 13, 37),
    'dual-pixel': (1, 16, 16),
    'deeper-ffn2': (2, 19, 10),
}


def _torch_forward(model, x_nhwc, dtype=torch.float32):
  """The official scripts' recipe: reflect-pad bottom/right to a multiple of 8, run, crop."""
  h, w = x_nhwc.shape[1:3]
  x = torch.from_numpy(np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2))).to(dtype)
  x = F.pad(x, (0, (-w) % 8, 0, (-h) % 8), 'reflect')
  with torch.no_grad():
    y = model.to(dtype)(x)[:, :, :h, :w]
  model.float()
  return y.numpy().transpose(0, 2, 3, 1)


def _jax_forward(model, x):
  return np.asarray(nnx.jit(lambda m, v: m(v))(model, x))


@pytest.mark.parametrize('name', list(CASES))
def test_parity_random_weights(name):
  hp = CASES[name]
  tmodel = randomize_(TorchRestormer(**hp), seed=3)
  model = model_from_state_dict(get_architecture('restormer'), restormer.RestormerConfig(**hp),
                                state_dict_numpy(tmodel))
  b, h, w = SIZES[name]
  x = np.random.default_rng(0).random((b, h, w, hp['inp_channels']), dtype=np.float32)
  ours = _jax_forward(model, x)
  ref32 = _torch_forward(tmodel, x)
  assert ours.shape == ref32.shape == (b, h, w, hp['out_channels'])
  # 1e-5 for outputs of order 1; random weights push some outputs to ~5, scale the bound with them.
  err, magnitude = float(np.max(np.abs(ours - ref32))), max(1.0, float(np.max(np.abs(ref32))))
  assert err <= 1e-5 * magnitude, f'{name} {h}x{w}: max |JAX - PyTorch| = {err:.3g} (|out| <= {magnitude:.3g})'
  err64, allowed = float64_error_bound(ours, ref32, _torch_forward(tmodel, x, torch.float64))
  assert err64 <= max(allowed, 1e-6), f'{name} {h}x{w}: {err64:.3g} vs float64, PyTorch f32 {allowed / 3:.3g}'


def test_full_size_preset_within_float32_rounding():
  """The released real-denoising configuration (26M parameters) on a small odd input."""
  preset = jaxrestore.get_preset('restormer-real-dn')
  tmodel = randomize_(TorchRestormer(**preset.hyperparameters), seed=1)
  model = model_from_state_dict(get_architecture('restormer'), restormer.RestormerConfig(**preset.hyperparameters),
                                state_dict_numpy(tmodel))
  x = np.random.default_rng(1).random((1, 19, 26, 3), dtype=np.float32)
  ours = _jax_forward(model, x)
  err, allowed = float64_error_bound(ours, _torch_forward(tmodel, x), _torch_forward(tmodel, x, torch.float64))
  assert err <= allowed, f'JAX float32 error {err:.3g} vs float64 exceeds 3x PyTorch\'s ({allowed:.3g})'


def _families():
  seen, out = set(), []
  for name, preset in jaxrestore.presets().items():
    key = repr(sorted(preset.hyperparameters.items()))
    if preset.architecture == 'restormer' and key not in seen:
      seen.add(key)
      out.append(name)
  return out


@pytest.mark.parametrize('name', _families())
def test_detection_recovers_every_released_config(name):
  preset = jaxrestore.get_preset(name)
  arch, hp = detect_architecture(TorchRestormer(**preset.hyperparameters).state_dict())
  assert arch.name == 'restormer'
  assert restormer.RestormerConfig(**hp) == restormer.RestormerConfig(**preset.hyperparameters)


@pytest.mark.parametrize('name', list(CASES))
def test_detection_recovers_small_configs(name):
  _, hp = detect_architecture(TorchRestormer(**CASES[name]).state_dict())
  assert restormer.RestormerConfig(**hp) == restormer.RestormerConfig(**CASES[name])


def test_family_checkpoints_are_told_apart(data_dir):
  """Restormer, PromptIR and HAIR share most keys: detection picks the most specific match, although
  PromptIR's state dict also carries Restormer's whole signature (no parent lists its children)."""
  sds = {'restormer': TorchRestormer(**CASES['color-withbias']).state_dict(),
         'promptir': read_state_dict(data_dir / 'golden' / 'promptir_small.pth'),
         'hair': read_state_dict(data_dir / 'golden' / 'hair_small.pth')}
  for expected, sd in sds.items():
    assert detect_architecture(sd)[0].name == expected
  promptir_sd = sds['promptir']
  assert architectures()['restormer'].signature_score(promptir_sd) is not None
  assert (architectures()['promptir'].signature_score(promptir_sd)
          > architectures()['restormer'].signature_score(promptir_sd))
  dncnn_sd = read_state_dict(data_dir / 'checkpoints' / 'dncnn_25.pth')
  for name in ('restormer', 'promptir', 'hair'):
    assert architectures()[name].missing_signature(dncnn_sd)


def test_too_small_for_reflect_padding_is_a_clear_error():
  # An abstract model is enough: the checks run before any parameter is read.
  model = nnx.eval_shape(lambda: restormer.Restormer(restormer.RestormerConfig(**CASES['color-withbias']),
                                                     rngs=nnx.Rngs(0)))
  with pytest.raises(ValueError, match='at least 5 pixels'):
    model(np.zeros((1, 4, 16, 3), np.float32))
  with pytest.raises(ValueError, match='3 channels'):
    model(np.zeros((1, 16, 16, 1), np.float32))


def test_channel_attention_reference_matches_torch_mdta_core():
  """F.normalize (x / max(||x||, 1e-12)), temperature, softmax over the last axis, attn @ v."""
  rng = np.random.default_rng(0)
  q, k, v = (rng.standard_normal((2, 3, 5, 40)).astype(np.float32) for _ in range(3))
  q[0, 1, 2] = 0.0  # an all-zero row: normalize must give 0, not NaN
  k[1, 0, 4] = 1e-30
  temperature = np.exp(rng.standard_normal(3)).astype(np.float32)
  tq, tk, tv = (torch.from_numpy(a) for a in (q, k, v))
  attn = F.normalize(tq, dim=-1) @ F.normalize(tk, dim=-1).transpose(-2, -1)
  ref = (attn * torch.from_numpy(temperature).reshape(3, 1, 1)).softmax(dim=-1) @ tv
  ours = np.asarray(kernels.channel_attention_reference(q, k, v, temperature))
  np.testing.assert_allclose(ours, ref.numpy(), rtol=0, atol=2e-6)
