"""HAIR against the golden outputs of the official code (../shared/data/golden), loaded the way a
user loads a checkpoint: `jaxrestore.load(weights=...)` with architecture auto-detection."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from flax import nnx

import jaxrestore
from jaxrestore.convert.torch_checkpoint import read_state_dict
from jaxrestore.models import hair

from torch_reference import assert_golden_output, run_golden_float64, run_jax_nchw as _run

CASE = 'hair_small'
@pytest.fixture(scope='module')
def model(golden):
  return jaxrestore.load(weights=golden / f'{CASE}.pth')


def test_checkpoint_is_detected_with_the_golden_config(model, golden):
  kwargs = json.loads((golden / f'{CASE}.json').read_text())['constructor_kwargs']
  assert isinstance(model, hair.HAIR)
  assert model.config == hair.HAIRConfig(**kwargs)


def test_golden_output_64x64(model, golden):
  npz = np.load(golden / f'{CASE}.npz')
  assert_golden_output(_run(model, npz['input']), npz)


def test_golden_output_96x80_batched_and_padded(model, golden):
  """Batch of two different images: the first must still give the golden output (the per-sample
  kernels do not mix samples). The second is a crop of it reflect-padded by hand, which must equal
  what the default padding='reflect' (official demo.py's pad_input: reflect bottom/right, run, crop) gives."""
  npz = np.load(golden / f'{CASE}_96x80.npz')
  crop = npz['input'][:, :, :90, :77]
  by_hand = np.pad(crop, ((0, 0), (0, 0), (0, 6), (0, 3)), mode='reflect')
  both = _run(model, np.concatenate([npz['input'], by_hand]))
  assert_golden_output(both[:1], npz)
  padded_model = jaxrestore.load(weights=golden / f'{CASE}.pth', padding='reflect')
  # Equal up to float32 rounding (batch 1 and batch 2 compile to differently ordered sums).
  np.testing.assert_allclose(_run(padded_model, crop), both[1:, :, :90, :77], rtol=0, atol=1e-5)


def test_float64_run_matches_output_f64(golden):
  npz = np.load(golden / f'{CASE}.npz')
  ours = run_golden_float64(golden / f'{CASE}.pth', npz['input'])
  assert np.max(np.abs(ours - npz['output_f64'])) <= 1e-10


def test_unsupported_sizes_are_a_clear_error():
  small = dict(num_blocks=(1, 1, 1, 1), num_refinement_blocks=1)
  strict = nnx.eval_shape(lambda: hair.HAIR(hair.HAIRConfig(**small, padding='strict'), rngs=nnx.Rngs(0)))
  with pytest.raises(ValueError, match='multiples of 8'):
    strict(np.zeros((1, 64, 60, 3), np.float32))
  with pytest.raises(ValueError, match='at least 32'):
    strict(np.zeros((1, 24, 24, 3), np.float32))
  padded = nnx.eval_shape(lambda: hair.HAIR(hair.HAIRConfig(**small), rngs=nnx.Rngs(0)))
  with pytest.raises(ValueError, match='at least 25'):  # 25 pads to 32
    padded(np.zeros((1, 24, 40, 3), np.float32))


def test_weight_banks_have_the_original_sizes(golden):
  """num_box = max(4, n) + 1, except decoder_level3 (max(4, n)); six kernels per row."""
  assert hair.HAIRConfig().num_boxes == dict(latent=9, decoder_level3=6, decoder_level2=7, decoder_level1=5,
                                             refinement=5)
  sd = read_state_dict(golden / f'{CASE}.pth')
  boxes = hair.HAIRConfig(num_blocks=(1, 1, 1, 2), num_refinement_blocks=1).num_boxes
  for level, dim in (('latent', 384), ('decoder_level3', 192), ('decoder_level2', 96), ('refinement', 96)):
    hidden = int(dim * 2.66)
    assert np.shape(sd[f'{level}.kernel_box']) == (boxes[level], sum(hair.kernel_segments(dim, hidden)))


def _torch_hyper_conv(x, w, out_channels, in_channels, kernel_size, groups):
  """The original HyConv2d trick: fold the batch into channels, one grouped conv for all samples."""
  b = x.shape[0]
  w = w.reshape(b * out_channels, in_channels // groups, kernel_size, kernel_size)
  y = F.conv2d(x.reshape(1, -1, *x.shape[2:]), w, padding=kernel_size // 2, groups=b * groups)
  return y.reshape(b, -1, *y.shape[2:])


def test_per_sample_convolutions_match_the_grouped_conv_of_the_original():
  rng = np.random.default_rng(0)
  b, c, o = 3, 6, 5
  x = rng.standard_normal((b, 7, 9, c)).astype(np.float32)
  xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
  w1 = rng.standard_normal((b, o * c)).astype(np.float32)
  ref = _torch_hyper_conv(xt, torch.from_numpy(w1), o, c, 1, 1).numpy().transpose(0, 2, 3, 1)
  np.testing.assert_allclose(np.asarray(hair.pointwise_per_sample(x, w1.reshape(b, o, c))), ref, atol=2e-6)
  w3 = rng.standard_normal((b, c * 9)).astype(np.float32)
  ref = _torch_hyper_conv(xt, torch.from_numpy(w3), c, c, 3, c).numpy().transpose(0, 2, 3, 1)
  np.testing.assert_allclose(np.asarray(hair.depthwise_per_sample(x, w3)), ref, atol=2e-6)
