"""AutoencoderKL (the SD VAE) parity against diffusers' PyTorch `AutoencoderKL`, loading, tiling."""
from __future__ import annotations

import json

import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jaxrestore.convert import components
from jaxrestore.mapping import CheckpointMismatchError
from jaxrestore.models import autoencoder_kl as ak

from torch_reference import float64_error_bound, randomize_, state_dict_numpy




from torch_reference import no_torchvision  # noqa: E402

with no_torchvision():
  from diffusers import AutoencoderKL as TorchAutoencoderKL

# Three levels (two resamplings), widths that change (shortcut convs), 4 groups.
TINY = dict(in_channels=3, out_channels=3, down_block_types=['DownEncoderBlock2D'] * 3,
            up_block_types=['UpDecoderBlock2D'] * 3, block_out_channels=[8, 16, 16], layers_per_block=1,
            latent_channels=4, norm_num_groups=4, sample_size=32)
SD = dict(in_channels=3, out_channels=3, down_block_types=['DownEncoderBlock2D'] * 4,
          up_block_types=['UpDecoderBlock2D'] * 4, block_out_channels=[128, 256, 512, 512], layers_per_block=2,
          latent_channels=4, norm_num_groups=32, sample_size=256)
LEGACY = {'to_q': 'query', 'to_k': 'key', 'to_v': 'value', 'to_out.0': 'proj_attn'}


def nchw(x):
  return torch.from_numpy(np.ascontiguousarray(np.asarray(x).transpose(0, 3, 1, 2)))


def nhwc(t):
  return t.detach().numpy().transpose(0, 2, 3, 1)


def torch_encode(model, x):
  with torch.no_grad():
    return nhwc(model.encode(nchw(x).to(model.dtype)).latent_dist.mode())


def torch_decode(model, z):
  with torch.no_grad():
    return nhwc(model.decode(nchw(z).to(model.dtype)).sample)


@pytest.fixture(scope='module')
def tiny():
  torch.manual_seed(0)
  model = randomize_(TorchAutoencoderKL(**TINY), seed=1)
  jax_model = components.vae_from_state_dict(ak.AutoencoderKLConfig.from_diffusers(dict(model.config)),
                                     state_dict_numpy(model))
  return model, jax_model


@pytest.fixture(scope='module')
def tiny_io(tiny):
  """Odd-sized inputs and the untiled JAX outputs (shared, so that each shape compiles once)."""
  _, jax_model = tiny
  rng = np.random.default_rng(0)
  x = rng.uniform(-1, 1, (2, 25, 39, 3)).astype(np.float32)     # 25x39 -> 12x19 -> 6x9 latents
  z = rng.standard_normal((2, 7, 11, 4)).astype(np.float32)     # -> 28x44 images
  return x, z, np.asarray(jax_model.encode(jnp.asarray(x))), np.asarray(jax_model.decode(jnp.asarray(z)))


def test_tiny_parity_at_odd_sizes(tiny, tiny_io):
  model, _ = tiny
  x, z, mean, image = tiny_io
  ref_mean, ref_image = torch_encode(model, x), torch_decode(model, z)
  assert mean.shape == ref_mean.shape == (2, 6, 9, 4)
  assert image.shape == ref_image.shape == (2, 28, 44, 3)
  # Outputs of order 1-3: float32 agreement (measured: encode 2.2e-6, decode 3.1e-6; PyTorch's own
  # float32 error against its float64 run: 2.3e-6 and 3.1e-6).
  assert np.max(np.abs(mean - ref_mean)) <= 1e-5
  assert np.max(np.abs(image - ref_image)) <= 1e-5


def test_sd_config_parity_at_64(tmp_path):
  """The real SD VAE layout (84 M parameters) with random weights; tolerance from a float64 run."""
  torch.manual_seed(0)
  model = TorchAutoencoderKL(**SD).eval()   # diffusers' own random init (the tiny model covers norms)
  jax_model = components.vae_from_state_dict(ak.AutoencoderKLConfig.from_diffusers(dict(model.config)),
                                     state_dict_numpy(model))
  rng = np.random.default_rng(1)
  x = rng.uniform(-1, 1, (1, 64, 64, 3)).astype(np.float32)
  z = rng.standard_normal((1, 8, 8, 4)).astype(np.float32)
  mean = np.asarray(jax_model.encode(jnp.asarray(x)))
  image = np.asarray(jax_model.decode(jnp.asarray(z)))
  ref32 = torch_encode(model, x), torch_decode(model, z)
  model.double()
  ref64 = torch_encode(model, x), torch_decode(model, z)
  for ours, theirs32, theirs64, what in zip((mean, image), ref32, ref64, ('encode', 'decode')):
    assert ours.shape == theirs32.shape
    # No further from the float64 run than 3x PyTorch's own float32 error (measured: encode 1.0e-6
    # vs 6.2e-7, decode 5.6e-6 vs 3.5e-6), and float32-close to PyTorch at output scale ~1-3.
    err, allowed = float64_error_bound(ours, theirs32, theirs64)
    assert err <= max(allowed, 1e-6), f'{what}: {err:.3g} from float64, allowed {allowed:.3g}'
    assert np.max(np.abs(ours - theirs32)) <= 2e-5 * max(1.0, float(np.max(np.abs(theirs64))))


def _legacy_names(sd):
  out = {}
  for k, v in sd.items():
    for new, old in LEGACY.items():
      k = k.replace(f'.attentions.0.{new}.', f'.attentions.0.{old}.')
    out[k] = v
  return out


@pytest.mark.parametrize('fmt', ['safetensors', 'bin', 'legacy-safetensors', 'legacy-bin'])
def test_load_diffusers_folder(tiny, tmp_path, fmt):
  model, reference = tiny
  folder = tmp_path / 'sd-vae'
  if fmt in ('safetensors', 'bin'):
    model.save_pretrained(folder, safe_serialization=fmt == 'safetensors')
  else:
    # Old exports (sd-vae-ft-ema) name the attention projections query/key/value/proj_attn.
    import safetensors.torch
    model.save_pretrained(folder)
    (folder / 'diffusion_pytorch_model.safetensors').unlink()
    sd = _legacy_names({k: v.contiguous() for k, v in model.state_dict().items()})
    assert any('.attentions.0.query.weight' in k for k in sd)
    if fmt == 'legacy-safetensors':
      safetensors.torch.save_file(sd, folder / 'diffusion_pytorch_model.safetensors')
    else:
      torch.save(sd, folder / 'diffusion_pytorch_model.bin')
  expected = {'safetensors': 'safetensors', 'legacy-safetensors': 'safetensors'}.get(fmt, 'bin')
  assert (folder / f'diffusion_pytorch_model.{expected}').is_file()
  loaded = components.load_diffusers_vae(folder)
  assert loaded.config.scaling_factor == pytest.approx(0.18215)
  x = jnp.asarray(np.random.default_rng(2).uniform(-1, 1, (1, 16, 24, 3)).astype(np.float32))
  np.testing.assert_array_equal(np.asarray(loaded.encode(x)), np.asarray(reference.encode(x)))


def test_config_from_sd_vae_ft_ema_json():
  """The config.json of stabilityai/sd-vae-ft-ema (diffusers 0.4.2, no scaling_factor key)."""
  cfg = ak.AutoencoderKLConfig.from_diffusers({
      '_class_name': 'AutoencoderKL', '_diffusers_version': '0.4.2', 'act_fn': 'silu',
      'block_out_channels': [128, 256, 512, 512], 'down_block_types': ['DownEncoderBlock2D'] * 4,
      'in_channels': 3, 'latent_channels': 4, 'layers_per_block': 2, 'norm_num_groups': 32, 'out_channels': 3,
      'sample_size': 256, 'up_block_types': ['UpDecoderBlock2D'] * 4})
  assert cfg.scaling_factor == 0.18215 and cfg.downscale == 8 and cfg.block_out_channels == (128, 256, 512, 512)
  with pytest.raises(ValueError, match='unsupported block types'):
    ak.AutoencoderKLConfig.from_diffusers(dict(TINY, down_block_types=['AttnDownEncoderBlock2D'] * 3))
  with pytest.raises(ValueError, match='unsupported keys'):
    ak.AutoencoderKLConfig.from_diffusers(dict(TINY, mystery_option=1))


def test_strict_key_errors(tiny, tmp_path):
  model, _ = tiny
  cfg = ak.AutoencoderKLConfig.from_diffusers(dict(model.config))
  sd = state_dict_numpy(model)
  missing = dict(sd)
  del missing['decoder.mid_block.attentions.0.to_k.weight']
  with pytest.raises(CheckpointMismatchError, match=r'missing \(1\): decoder\.mid_block\.attention\.to_k\.kernel'):
    components.vae_from_state_dict(cfg, missing)
  with pytest.raises(CheckpointMismatchError, match=r'unexpected \(1\): encoder\.extra\.weight'):
    components.vae_from_state_dict(cfg, dict(sd, **{'encoder.extra.weight': np.zeros((3, 3, 3, 3), np.float32)}))
  wrong = dict(sd, **{'encoder.conv_in.weight': np.zeros((8, 3, 5, 5), np.float32)})
  with pytest.raises(CheckpointMismatchError, match=r'shape mismatch \(1\): encoder\.conv_in\.weight'):
    components.vae_from_state_dict(cfg, wrong)
  with pytest.raises(FileNotFoundError, match='config.json'):
    components.load_diffusers_vae(tmp_path)
  (tmp_path / 'config.json').write_text(json.dumps(dict(model.config)))
  with pytest.raises(FileNotFoundError, match='diffusion_pytorch_model'):
    components.load_diffusers_vae(tmp_path)


def test_tiled_matches_untiled(tiny, tiny_io):
  _, jax_model = tiny
  x, z, ref_mean, ref_image = tiny_io
  # 16-pixel tiles: 2x3 tiles at full resolution (the last row/column shifted back to the border),
  # 4x4-pixel tiles at the latent level; every stage crosses tile borders.
  mean = np.asarray(jax_model.encode(jnp.asarray(x), tile=16))
  image = np.asarray(jax_model.decode(jnp.asarray(z), tile=16))
  for ours, ref in ((mean, ref_mean), (image, ref_image)):
    assert ours.shape == ref.shape
    assert np.max(np.abs(ours - ref)) <= ak.TILE_SEAM_BOUND * max(1.0, float(np.max(np.abs(ref))))
  # A tile at least as large as the image is the untiled computation, bit for bit.
  np.testing.assert_array_equal(np.asarray(jax_model.encode(jnp.asarray(x), tile=40)), ref_mean)
  np.testing.assert_array_equal(np.asarray(jax_model.decode(jnp.asarray(z), tile=44)), ref_image)
  with pytest.raises(ValueError, match='multiple of 4'):
    jax_model.encode(jnp.asarray(x), tile=18)


def test_bfloat16_runs_close_to_float32(tiny, tiny_io, tmp_path):
  """bfloat16 weights and compute (float32 GroupNorm and softmax) stay near the float32 result."""
  model, _ = tiny
  x, _, ref, _ = tiny_io
  model.save_pretrained(tmp_path / 'vae')
  bf16 = components.load_diffusers_vae(tmp_path / 'vae', dtype=jnp.bfloat16)
  assert bf16.encoder.conv_in.kernel.dtype == jnp.bfloat16
  ours = np.asarray(bf16.encode(jnp.asarray(x)))
  assert ours.dtype == np.float32
  assert np.max(np.abs(ours - ref)) <= 0.05 * max(1.0, float(np.max(np.abs(ref))))
