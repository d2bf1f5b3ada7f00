"""Readers for the pipeline components that come as Hugging Face / diffusers folders: the Stable
Diffusion VAE (`config.json` + `diffusion_pytorch_model.safetensors|.bin`) and the T5 encoder
(`config.json` + sharded `*.safetensors` / `pytorch_model-*.bin`). Tensors are read lazily and without
executing pickled code (`torch_checkpoint`), mapped by the models' declarative tables, and filled
into abstract models one at a time.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import jax.numpy as jnp
from flax import nnx

from jaxrestore.mapping import CheckpointMismatchError
from jaxrestore.models import autoencoder_kl, t5

from .build import expected_params, fill_model
from .torch_checkpoint import read_state_dict


def vae_from_state_dict(config: autoencoder_kl.AutoencoderKLConfig, state_dict: Mapping[str, Any], *,
                        source: str = 'state dict') -> autoencoder_kl.AutoencoderKL:
  """Strictly loads a diffusers AutoencoderKL state dict (current or legacy attention names), one
  tensor at a time, into a model that is never randomly initialised."""
  model = nnx.eval_shape(lambda: autoencoder_kl.AutoencoderKL(config, rngs=nnx.Rngs(0)))
  return fill_model(model, autoencoder_kl.TORCH_PARAMS.apply(state_dict, expected_params(model), source=source))


WEIGHT_FILES = ('diffusion_pytorch_model.safetensors', 'diffusion_pytorch_model.bin',
                'diffusion_pytorch_model.fp16.safetensors', 'diffusion_pytorch_model.fp16.bin')


def load_diffusers_vae(folder: str | os.PathLike, *, dtype=jnp.float32, compute_dtype=None) -> autoencoder_kl.AutoencoderKL:
  """Loads a diffusers AutoencoderKL folder (`config.json` + `diffusion_pytorch_model.safetensors`
  or `.bin`) without executing pickle code. `dtype` is the parameter dtype; computation runs in
  `compute_dtype` (default: `dtype`)."""
  folder = Path(folder)
  cfg_path = folder / 'config.json'
  if not cfg_path.is_file():
    raise FileNotFoundError(f'{folder}: no config.json (expected a diffusers AutoencoderKL folder, e.g. sd-vae-ft-ema/)')
  weights = next((folder / n for n in WEIGHT_FILES if (folder / n).is_file()), None)
  if weights is None:
    raise FileNotFoundError(f'{folder}: none of {", ".join(WEIGHT_FILES)} found')
  config = autoencoder_kl.AutoencoderKLConfig.from_diffusers(json.loads(cfg_path.read_text()), param_dtype=dtype,
                                              dtype=compute_dtype or dtype)
  return vae_from_state_dict(config, read_state_dict(weights), source=str(weights))


# Tensors of a full T5 (encoder-decoder) checkpoint that the encoder does not use.
_NOT_ENCODER = ('decoder.', 'lm_head.')
INDEX_FILES = ('model.safetensors.index.json', 'pytorch_model.bin.index.json')
SINGLE_FILES = ('model.safetensors', 'pytorch_model.bin')


def checkpoint_files(folder: str | os.PathLike) -> list[Path]:
  """The weight files of a Hugging Face folder: an index's shards, or the single file."""
  folder = Path(folder)
  for name in INDEX_FILES:
    index = folder / name
    if index.is_file():
      try:
        weight_map = json.loads(index.read_text())['weight_map']
      except (OSError, ValueError, KeyError) as e:
        raise CheckpointMismatchError(f'{index}: not a Hugging Face checkpoint index ({e})') from None
      shards = [folder / s for s in dict.fromkeys(weight_map.values())]
      absent = [s.name for s in shards if not s.is_file()]
      if absent:
        raise FileNotFoundError(f'{index} lists shards that are missing: {", ".join(absent)}')
      return shards
  for name in SINGLE_FILES:
    if (folder / name).is_file():
      return [folder / name]
  raise FileNotFoundError(f'{folder}: no T5 weights (none of {", ".join(INDEX_FILES + SINGLE_FILES)})')


def encoder_tensors(state_dict: Mapping[str, Any]) -> dict[str, Any]:
  """The encoder's entries of a T5 state dict: decoder and LM-head tensors dropped, and
  `encoder.embed_tokens.weight` (the tied copy of `shared.weight`) used only without `shared.weight`."""
  sd = {k: v for k, v in state_dict.items() if not k.startswith(_NOT_ENCODER)}
  tied = sd.pop('encoder.embed_tokens.weight', None)
  if 'shared.weight' not in sd and tied is not None:
    sd['shared.weight'] = tied
  return sd


def encoder_state_dict(files) -> dict[str, Any]:
  """The encoder's tensors of all shards, lazily: nothing is read until a tensor is materialised."""
  sd: dict[str, Any] = {}
  for f in files:
    for key, tensor in read_state_dict(f).items():
      if key in sd:
        raise CheckpointMismatchError(f'{f}: tensor {key} appears in two shards')
      sd[key] = tensor
  return encoder_tensors(sd)


def t5_from_state_dict(config: t5.T5Config, state_dict: Mapping[str, Any], *, source: str = 'state dict') -> t5.T5Encoder:
  """Strictly fills a t5.T5Encoder from a Hugging Face T5 state dict (its encoder part), one tensor at a
  time, into a model that is never randomly initialised."""
  model = nnx.eval_shape(lambda: t5.T5Encoder(config, rngs=nnx.Rngs(0)))
  params = t5.TORCH_PARAMS.apply(encoder_tensors(state_dict), expected_params(model), source=source)
  return fill_model(model, params)


def load_t5_encoder(folder: str | os.PathLike, *, dtype=jnp.float32, compute_dtype=None,
                    expected_width: int | None = None, keep_wo_float32: bool | None = None) -> t5.T5Encoder:
  """Loads the encoder of a Hugging Face T5 folder (`config.json` + weights, sharded or not).

  `dtype` is the parameter dtype (bfloat16 halves T5-XXL to ~9.5 GB), computation runs in
  `compute_dtype` (default `dtype`). `expected_width` is the caption width the consumer needs (the
  DreamClear denoiser's `caption_channels`, 4096): a checkpoint of another d_model is refused
  before any weight is read.
  """
  folder = Path(folder)
  cfg_path = folder / 'config.json'
  if not cfg_path.is_file():
    raise FileNotFoundError(f'{folder}: no config.json (expected a Hugging Face T5 folder, e.g. t5-v1_1-xxl/)')
  raw = json.loads(cfg_path.read_text())
  config = t5.T5Config.from_hf(raw, param_dtype=dtype, dtype=compute_dtype or dtype, keep_wo_float32=keep_wo_float32)
  if expected_width is not None and config.d_model != expected_width:
    raise CheckpointMismatchError(
        f'{folder}: this T5 encoder produces {config.d_model}-wide features (d_model), but the model that '
        f'consumes them expects {expected_width} caption channels; DreamClear needs t5-v1_1-xxl (4096)')
  files = checkpoint_files(folder)
  return t5_from_state_dict(config, encoder_state_dict(files), source=str(folder))
