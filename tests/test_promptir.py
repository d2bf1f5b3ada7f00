"""PromptIR against the golden outputs of the official code (../shared/data/golden), loaded the way a
user loads a checkpoint: `jaxrestore.load(weights=...)` with architecture auto-detection."""
from __future__ import annotations

import json

import jax
import numpy as np
import pytest
import torch
from flax import nnx

import jaxrestore
from jaxrestore import layers
from jaxrestore.convert.torch_checkpoint import read_state_dict
from jaxrestore.models import promptir
from jaxrestore.registry import detect_architecture

from torch_reference import assert_golden_output, run_golden_float64, run_jax_nchw as _run

CASE = 'promptir_small'
SIZES = ['', '_96x80', '_136x152']  # exact 2x prompt downscale, non-integer downscale, upscale

@pytest.fixture(scope='module')
def model(golden):
  return jaxrestore.load(weights=golden / f'{CASE}.pth')


def test_checkpoint_is_detected_with_the_golden_config(model, golden):
  kwargs = json.loads((golden / f'{CASE}.json').read_text())['constructor_kwargs']
  assert isinstance(model, promptir.PromptIR)
  assert model.config == promptir.PromptIRConfig(**kwargs)


@pytest.mark.parametrize('size', SIZES)
def test_golden_output_within_float32_rounding(model, golden, size):
  """No further from the float64 run than 3x PyTorch's own float32 error; <= 1e-5 at output scale 1.

  The 96x80 input runs in a batch with its mirror image: batching must not change its output."""
  npz = np.load(golden / f'{CASE}{size}.npz')
  x = npz['input'] if size != '_96x80' else np.concatenate([npz['input'], npz['input'][..., ::-1]])
  assert_golden_output(_run(model, x)[:1], npz, size)


def test_float64_run_matches_output_f64(golden):
  """Same weights in float64: agrees with the official float64 run to ~1e-13 (structure is exact)."""
  npz = np.load(golden / f'{CASE}.npz')
  ours = run_golden_float64(golden / f'{CASE}.pth', npz['input'])
  assert ours.dtype == np.float64
  assert np.max(np.abs(ours - npz['output_f64'])) <= 1e-10


def test_unused_state_dict_entries_are_ignored(golden):
  sd = read_state_dict(golden / f'{CASE}.pth')
  unused = [k for k in sd if k.startswith(('chnl_reduce', 'reduce_noise_channel_'))]
  assert len(unused) == 6 and all(promptir.TORCH_PARAMS.is_ignored(k) for k in unused)
  assert detect_architecture(sd)[0].name == 'promptir'


def test_strict_padding_refuses_sizes_that_are_not_multiples_of_8():
  model = nnx.eval_shape(lambda: promptir.PromptIR(promptir.PromptIRConfig(num_blocks=(1, 1, 1, 1), padding='strict'),
                                                   rngs=nnx.Rngs(0)))
  with pytest.raises(ValueError, match="multiples of 8.*padding='reflect'"):
    model(np.zeros((1, 60, 64, 3), np.float32))


def test_config_rejects_what_the_original_cannot_run():
  with pytest.raises(ValueError, match='dim must be 48'):
    promptir.PromptIRConfig(dim=32)
  with pytest.raises(ValueError, match='decoder=False'):
    promptir.PromptIRConfig(decoder=False)


@pytest.mark.parametrize('src,dst', [((64, 64), (32, 32)), ((32, 32), (12, 10)), ((16, 16), (17, 19)),
                                     ((16, 16), (16, 7)), ((5, 7), (40, 3))])
def test_resize_bilinear_matches_torch_interpolate(src, dst):
  x = np.random.default_rng(0).standard_normal((2, *src, 5)).astype(np.float32)
  ref = torch.nn.functional.interpolate(torch.from_numpy(x.transpose(0, 3, 1, 2)), dst, mode='bilinear')
  ours = np.asarray(jax.jit(lambda v: layers.resize_bilinear(v, dst))(x))
  # Same indices and weights; PyTorch's build fuses some products into FMAs: a few ulps apart.
  np.testing.assert_allclose(ours, ref.numpy().transpose(0, 2, 3, 1), rtol=0,
                             atol=4 * np.finfo(np.float32).eps * np.abs(x).max())
