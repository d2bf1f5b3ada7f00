"""SwinIR parity against spandrel's PyTorch SwinIR (the official network code)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from flax import nnx

import jaxrestore
from jaxrestore import layers
from jaxrestore.convert.build import model_from_state_dict
from jaxrestore.models import swinir
from jaxrestore.registry import detect_architecture, get_architecture

from torch_reference import float64_error_bound, randomize_, run_nchw, state_dict_numpy

from spandrel.architectures.SwinIR import SwinIR as TorchSwinIR  # noqa: E402  (after the shim)

SMALL = dict(embed_dim=24, depths=(2, 2), num_heads=(2, 3), mlp_ratio=2.0)

# Every upsampler, both residual types, window 7 and 8, gray and color, img_range 1 and 255,
# and the original's window clamp for an img_size smaller than the window.
CASES = {
    'dn-color-w8': dict(SMALL, in_chans=3, img_size=16, window_size=8, upscale=1, upsampler=''),
    'dn-gray-w8-3conv': dict(SMALL, in_chans=1, img_size=16, window_size=8, upscale=1, upsampler='',
                             resi_connection='3conv'),
    'car-gray-w7-r255': dict(SMALL, in_chans=1, img_size=14, window_size=7, img_range=255.0, upscale=1,
                             upsampler=''),
    'car-color-w7-r255': dict(SMALL, in_chans=3, img_size=21, window_size=7, img_range=255.0, upscale=1,
                              upsampler=''),
    'sr-pixelshuffle-x2': dict(SMALL, in_chans=3, img_size=16, window_size=8, upscale=2,
                               upsampler='pixelshuffle'),
    'sr-pixelshuffle-x3-w7': dict(SMALL, in_chans=3, img_size=14, window_size=7, upscale=3,
                                  upsampler='pixelshuffle'),
    'sr-pixelshuffle-x8-gray': dict(SMALL, in_chans=1, img_size=16, window_size=8, upscale=8,
                                    upsampler='pixelshuffle'),
    'sr-direct-x3': dict(SMALL, in_chans=3, img_size=16, window_size=8, upscale=3,
                         upsampler='pixelshuffledirect'),
    'sr-direct-x4-gray': dict(SMALL, in_chans=1, img_size=16, window_size=8, upscale=4,
                              upsampler='pixelshuffledirect'),
    'sr-nearest-x4-3conv': dict(SMALL, in_chans=3, img_size=16, window_size=8, upscale=4,
                                upsampler='nearest+conv', resi_connection='3conv'),
    'sr-nearest-x4-1conv-r255': dict(SMALL, in_chans=3, img_size=16, window_size=8, upscale=4,
                                     img_range=255.0, upsampler='nearest+conv'),
    'tiny-img-size-clamps-window': dict(SMALL, in_chans=3, img_size=4, window_size=8, upscale=1,
                                        upsampler=''),
    'depth-3-heads-5': dict(embed_dim=20, depths=(3,), num_heads=(5,), mlp_ratio=1.5, in_chans=3,
                            img_size=24, window_size=8, upscale=2, upsampler='pixelshuffle'),
}

# Odd sizes that are not multiples of the window (reflect padding inside the forward pass).
SIZES = [(37, 45), (16, 16), (9, 23)]


def _torch_model(hp: dict, seed: int = 0):
  return randomize_(TorchSwinIR(**hp), seed)


def _jax_forward(model, x):
  return np.asarray(nnx.jit(lambda m, v: m(v))(model, x))


@pytest.mark.parametrize('name', list(CASES))
def test_parity_random_weights(name):
  hp = CASES[name]
  tmodel = _torch_model(hp)
  sd = state_dict_numpy(tmodel)
  config = swinir.SwinIRConfig(**hp)
  model = model_from_state_dict(get_architecture('swinir'), config, sd)
  rng = np.random.default_rng(0)
  for h, w in SIZES:
    x = rng.random((2, h, w, hp['in_chans']), dtype=np.float32)
    ours = _jax_forward(model, x)
    ref32 = run_nchw(tmodel, x)
    assert ours.shape == ref32.shape == (2, h * config.scale, w * config.scale, hp['in_chans'])
    err = float(np.max(np.abs(ours - ref32)))
    assert err <= 1e-5, f'{name} {h}x{w}: max |JAX - PyTorch| = {err:.3g}'


def test_full_size_preset_within_float32_rounding():
  """SwinIR-M (color denoising, 36 Swin blocks) on a small odd input, judged against float64."""
  preset = jaxrestore.get_preset('swinir-color-dn15')
  tmodel = _torch_model(preset.hyperparameters, seed=1)
  model = model_from_state_dict(get_architecture('swinir'),
                                swinir.SwinIRConfig(**preset.hyperparameters), state_dict_numpy(tmodel))
  x = np.random.default_rng(1).random((1, 27, 35, 3), dtype=np.float32)
  ours = _jax_forward(model, x)
  ref32 = run_nchw(tmodel, x)
  ref64 = run_nchw(tmodel, x, torch.float64)
  err, allowed = float64_error_bound(ours, ref32, ref64)
  assert err <= max(allowed, 1e-6), f'JAX float32 error {err:.3g} vs float64 exceeds 3x PyTorch\'s ({allowed:.3g})'
  assert np.max(np.abs(ours - ref32)) <= 1e-4


@pytest.mark.parametrize('factor', [2, 3])
def test_pixel_shuffle_matches_torch_channel_order(factor):
  x = np.random.default_rng(0).standard_normal((2, 5, 7, 3 * factor * factor)).astype(np.float32)
  ref = torch.nn.PixelShuffle(factor)(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy().transpose(0, 2, 3, 1)
  np.testing.assert_array_equal(np.asarray(layers.pixel_shuffle(x, factor)), ref)
  back = torch.nn.PixelUnshuffle(factor)(torch.from_numpy(ref.transpose(0, 3, 1, 2))).numpy().transpose(0, 2, 3, 1)
  np.testing.assert_array_equal(np.asarray(layers.pixel_unshuffle(ref, factor)), back)


def test_shift_mask_and_relative_index_match_the_original_buffers():
  hp = dict(SMALL, in_chans=3, img_size=24, window_size=8, upscale=1, upsampler='')
  sd = state_dict_numpy(TorchSwinIR(**hp))
  np.testing.assert_array_equal(swinir.relative_position_index(8),
                                sd['layers.0.residual_group.blocks.0.attn.relative_position_index'])
  np.testing.assert_array_equal(swinir.shift_window_mask(24, 24, 8, 4),
                                sd['layers.0.residual_group.blocks.1.attn_mask'])


@pytest.mark.parametrize('name', list(CASES))
def test_detection_recovers_hyperparameters(name):
  hp = CASES[name]
  _, detected = detect_architecture(state_dict_numpy(TorchSwinIR(**hp)))
  expected = swinir.SwinIRConfig(**hp)
  # img_range is not stored in a checkpoint: detection guesses 255 for window 7 (the official JPEG
  # models); a user overrides it the same way (jaxrestore.load(weights=..., img_range=1.0)).
  got = swinir.SwinIRConfig(**{**detected, 'img_range': hp.get('img_range', 1.0)})
  if expected.block_shift_size == 0:
    # The original clamped the window to img_size and saved no shift mask: the blocks are recovered
    # exactly, but not the window it pads the input to.
    assert got.block_window_size == expected.block_window_size and got.block_shift_size == 0
    got = got.replace(img_size=expected.img_size, window_size=expected.window_size)
  assert got == expected


def test_diffbir_unshuffle_variant_matches_spandrel_and_is_detected(tmp_path):
  """DiffBIR's cleaner: PixelUnshuffle(8) -> conv_first.1, nearest+conv x8, restoring at the input
  size. The checkpoint is laid out as DiffBIR saves it ({'state_dict': {'module.conv_first.1.weight',
  ...}}); the reference is spandrel's SwinIR with start_unshuffle (the same computation)."""
  hp = dict(embed_dim=12, depths=(2,), num_heads=(2,), mlp_ratio=2.0, in_chans=3, img_size=16, window_size=4,
            upscale=8, upsampler='nearest+conv', resi_connection='1conv')
  tmodel = randomize_(TorchSwinIR(**hp, start_unshuffle=8), 3)
  sd = {('module.conv_first.1.' + k[len('conv_first.'):] if k.startswith('conv_first.') else 'module.' + k): v
        for k, v in tmodel.state_dict().items()}
  torch.save({'state_dict': sd}, tmp_path / 'general_swinir_small.ckpt')
  model = jaxrestore.load(weights=tmp_path / 'general_swinir_small.ckpt')
  cfg = model.config
  assert (cfg.unshuffle, cfg.unshuffle_scale, cfg.upscale, cfg.in_chans, cfg.scale) == (True, 8, 8, 3, 1)
  assert cfg.size_multiple == 32 and cfg.min_size == 17
  rng = np.random.default_rng(1)
  x = rng.random((1, 64, 96, 3), dtype=np.float32)  # a multiple of window x 8: no padding anywhere
  err = float(np.max(np.abs(_jax_forward(model, x) - run_nchw(tmodel, x))))
  assert err <= 1e-5, err
  # Odd sizes: jaxrestore reflect-pads the image to 32 and crops back (the original would need H/8 to
  # be a multiple of the window); equal to the reference run on the padded image.
  odd = rng.random((1, 37, 45, 3), dtype=np.float32)
  padded = np.pad(odd, ((0, 0), (0, 27), (0, 19), (0, 0)), mode='reflect')
  err = float(np.max(np.abs(_jax_forward(model, odd) - run_nchw(tmodel, padded)[:, :37, :45])))
  assert err <= 1e-5, err
  full = jaxrestore.get_preset('swinir-diffbir-general').hyperparameters
  assert swinir.SwinIRConfig(**full).scale == 1
  with pytest.raises(ValueError, match='unshuffle_scale equal to upscale'):
    swinir.SwinIRConfig(**dict(hp, unshuffle=True, unshuffle_scale=4))
