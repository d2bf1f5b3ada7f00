"""The small public API: `load` a model by preset name and/or weights file, list `presets`."""
from __future__ import annotations

import dataclasses
import difflib
import os
import warnings
from pathlib import Path
from typing import Any, Mapping

import jax
import numpy as np
from flax import nnx

from jaxrestore.configs import PRESETS, Preset
from jaxrestore.convert import checkpoint as converted
from jaxrestore.convert.mapping import CheckpointMismatchError
from jaxrestore.registry import Architecture, detect_architecture, get_architecture

ASSETS = Path(__file__).parent / 'assets'
# Config fields that are runtime choices, not part of a checkpoint's identity.
RUNTIME_FIELDS = ('attention', 'dtype', 'param_dtype')


def presets() -> dict[str, Preset]:
  """Every preset name with its metadata (architecture, task, noise/quality/scale, weights source)."""
  return dict(PRESETS)


def get_preset(name: str) -> Preset:
  try:
    return PRESETS[name]
  except KeyError:
    close = difflib.get_close_matches(name, PRESETS, n=3)
    hint = f'; did you mean {", ".join(close)}?' if close else ''
    raise ValueError(f'unknown preset {name!r}{hint} (jaxrestore.presets() lists all)') from None


def weights_search_path() -> list[Path]:
  """Folders searched for a preset's official file: $JAXRESTORE_WEIGHTS (os.pathsep-separated), then
  ~/.cache/jaxrestore. Nothing is ever downloaded."""
  env = os.environ.get('JAXRESTORE_WEIGHTS', '')
  dirs = [Path(p).expanduser() for p in env.split(os.pathsep) if p]
  return dirs + [Path('~/.cache/jaxrestore').expanduser()]


def find_weights(preset: Preset) -> Path | None:
  if preset.bundled_weights:
    return ASSETS / preset.bundled_weights
  for folder in weights_search_path():
    for candidate in (folder / preset.name, folder / (preset.checkpoint_file or '')):
      if candidate.name and (candidate.is_file() or converted.is_converted_checkpoint(candidate)):
        return candidate
  return None


def load(name: str | None = None, weights: str | os.PathLike | None = None, *,
         pretrained: bool | None = None, seed: int = 0, key: str | None = None,
         **hyperparameters) -> nnx.Module:
  """Builds a model from a preset name and/or a weights file.

  name: a preset (see `presets()`); with name=None, `weights` must be given and the architecture
    and its hyperparameters are detected from the checkpoint.
  weights: an official PyTorch checkpoint (.pth/.pt/.safetensors/.npz, read without executing
    pickled code) or a directory written by `jaxrestore.convert.from_torch`.
  pretrained: None = use the preset's weights when they can be found, else warn and return a
    randomly initialised model; True = fail if they cannot be found; False = random init.
  key: container key of the state dict ('params', 'params_ema'); the preset's by default.
  hyperparameters: override the preset's or the detected hyperparameters (e.g. img_range=255,
    attention='xla', dtype=jnp.bfloat16).
  """
  preset = get_preset(name) if name is not None else None
  if preset is None and weights is None:
    raise ValueError('jaxrestore.load needs a preset name, a weights file, or both')
  if weights is None and pretrained is not False:
    weights = find_weights(preset)
    if weights is None:
      where = ', '.join(str(d) for d in weights_search_path())
      message = (f'no weights found for preset {preset.name!r}: download {preset.weights_url} into one '
                 f'of [{where}] (or pass weights=...)')
      if pretrained:
        raise FileNotFoundError(message)
      warnings.warn(message + '; returning a randomly initialised model', stacklevel=2)
  if weights is None:
    arch = get_architecture(preset.architecture)
    config = _make_config(arch, {**preset.hyperparameters, **hyperparameters})
    return arch.model_cls(config, rngs=nnx.Rngs(seed))

  weights = Path(weights)
  if not weights.exists():
    raise FileNotFoundError(f'weights file {weights} does not exist')
  if converted.is_converted_checkpoint(weights):
    meta = converted.read_metadata(weights)
    arch_name, stored_hp = meta['architecture'], meta['hyperparameters']
    _check_preset_architecture(preset, arch_name, weights)
    arch = get_architecture(arch_name)
    base = preset.hyperparameters if preset else stored_hp
    config = _make_config(arch, {**base, **hyperparameters})
    model = abstract_model(arch, config, seed)
    params = converted.read_converted_params(weights, expected_params(model))
    return _with_params(model, params)

  arch, config, state_dict = torch_checkpoint_config(weights, preset, key=key, **hyperparameters)
  return model_from_state_dict(arch, config, state_dict, source=str(weights), seed=seed)


def torch_checkpoint_config(weights, preset: Preset | None, *, key: str | None = None,
                            **hyperparameters) -> tuple[Architecture, Any, Mapping[str, Any]]:
  """(architecture, config, lazily read state dict) of a PyTorch checkpoint file."""
  from jaxrestore.convert.torch_checkpoint import CheckpointError, read_checkpoint, unwrap_state_dict
  tree = read_checkpoint(weights)
  try:
    state_dict = unwrap_state_dict(tree, key=key or (preset.checkpoint_key if preset else None), source=str(weights))
  except CheckpointError:
    if key is not None or preset is None or preset.checkpoint_key is None:
      raise
    # The preset's container key is a preference: re-saved checkpoints are often bare state dicts.
    state_dict = unwrap_state_dict(tree, source=str(weights))
  arch_name, detected_hp = detect_architecture(state_dict, source=str(weights))
  _check_preset_architecture(preset, arch_name, weights)
  arch = get_architecture(arch_name)
  base = preset.hyperparameters if preset else detected_hp
  return arch, _make_config(arch, {**base, **hyperparameters}), state_dict


def abstract_model(arch: Architecture, config, seed: int = 0) -> nnx.Module:
  """The model's structure, shapes and dtypes, without allocating or initialising weights."""
  return nnx.eval_shape(lambda: arch.model_cls(config, rngs=nnx.Rngs(seed)))


def model_from_state_dict(arch: Architecture, config, state_dict: Mapping[str, Any], *,
                          source: str = 'state dict', seed: int = 0) -> nnx.Module:
  """Strictly loads a PyTorch state dict into `arch.model_cls(config)` without random init."""
  model = abstract_model(arch, config, seed)
  params = arch.torch_params.apply(state_dict, expected_params(model), source=source)
  return _with_params(model, params)


# What a checkpoint holds: trainable parameters and BatchNorm running statistics.
CHECKPOINT_STATE = (nnx.Param, nnx.BatchStat)


def expected_params(model: nnx.Module) -> dict[tuple, tuple[tuple[int, ...], Any]]:
  return {tuple(path): (tuple(var.shape), var.dtype)
          for path, var in nnx.to_flat_state(nnx.state(model, CHECKPOINT_STATE))}


def params_of(model: nnx.Module) -> dict[tuple, np.ndarray]:
  return {tuple(path): np.asarray(var[...])
          for path, var in nnx.to_flat_state(nnx.state(model, CHECKPOINT_STATE))}


def hyperparameters_of(config) -> dict[str, Any]:
  """A config's checkpoint-defining fields (runtime choices such as dtype left out)."""
  return {k: v for k, v in dataclasses.asdict(config).items() if k not in RUNTIME_FIELDS}


def _with_params(abstract_model: nnx.Module, params: dict[tuple, np.ndarray]) -> nnx.Module:
  """Fills an abstract model; `params` is emptied as arrays move to the device (one copy at a time)."""
  graphdef, state = nnx.split(abstract_model)
  leaves = []
  for path, var in nnx.to_flat_state(state):
    path = tuple(path)
    if path not in params:
      raise CheckpointMismatchError(f'no value for model state {".".join(map(str, path))}')
    leaves.append((path, var.replace(jax.numpy.asarray(params.pop(path)))))
  return nnx.merge(graphdef, nnx.from_flat_state(leaves))


def _make_config(arch: Architecture, hp: dict):
  fields = {f.name for f in dataclasses.fields(arch.config_cls)}
  unknown = sorted(set(hp) - fields)
  if unknown:
    raise TypeError(f'unknown {arch.name} hyperparameter(s) {unknown}; known: {sorted(fields)}')
  return arch.config_cls(**hp)


def _check_preset_architecture(preset: Preset | None, arch_name: str, weights) -> None:
  if preset is not None and preset.architecture != arch_name:
    raise CheckpointMismatchError(f'{weights} holds a {arch_name} model but preset {preset.name!r} '
                                  f'is a {preset.architecture} model')
