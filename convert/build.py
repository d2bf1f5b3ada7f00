"""Models from checkpoints: detect the architecture, build its config and an abstract model, and fill
it strictly from a PyTorch state dict or a converted directory, one tensor at a time."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import jax
import numpy as np
from flax import nnx

from jaxrestore.mapping import CheckpointMismatchError
from jaxrestore.models.base import Architecture, Preset
from jaxrestore.registry import detect_architecture, get_architecture

from . import checkpoint as converted

# What a checkpoint holds: trainable parameters and BatchNorm running statistics.
CHECKPOINT_STATE = (nnx.Param, nnx.BatchStat)
# Fields older converted checkpoints stored that are runtime choices now.
_LEGACY_RUNTIME_FIELDS = ('pad_to_multiple',)


def torch_checkpoint_config(weights: str | os.PathLike, preset: Preset | None, *, key: str | None = None,
                            **hyperparameters) -> tuple[Architecture, Any, Mapping[str, Any]]:
  """(architecture, config, lazily read state dict) of a PyTorch checkpoint file."""
  from .torch_checkpoint import CheckpointError, read_checkpoint, unwrap_state_dict
  tree = read_checkpoint(weights)
  try:
    state_dict = unwrap_state_dict(tree, key=key or (preset.checkpoint_key if preset else None), source=str(weights))
  except CheckpointError:
    if key is not None or preset is None or preset.checkpoint_key is None:
      raise
    # The preset's container key is a preference: re-saved checkpoints are often bare state dicts.
    state_dict = unwrap_state_dict(tree, source=str(weights))
  arch, detected_hp = detect_architecture(state_dict, source=str(weights))
  check_preset_architecture(preset, arch.name, weights)
  base = preset.hyperparameters if preset else detected_hp
  return arch, arch.make_config({**base, **hyperparameters}), state_dict


def converted_config(weights: str | os.PathLike, preset: Preset | None, **hyperparameters) -> tuple[Architecture, Any]:
  """(architecture, config) of a directory written by `from_torch` or `jaxrestore train`."""
  meta = converted.read_metadata(weights)
  arch = get_architecture(meta['architecture'])
  check_preset_architecture(preset, arch.name, weights)
  runtime = set(arch.config_cls.runtime_fields()) | set(_LEGACY_RUNTIME_FIELDS)
  stored = {k: v for k, v in meta['hyperparameters'].items() if k not in runtime}
  base = preset.hyperparameters if preset else stored
  return arch, arch.make_config({**base, **hyperparameters})


def abstract_model(arch: Architecture, config, seed: int = 0) -> nnx.Module:
  """The model's structure, shapes and dtypes, without allocating or initialising weights."""
  return nnx.eval_shape(lambda: arch.model_cls(config, rngs=nnx.Rngs(seed)))


def expected_params(model: nnx.Module) -> dict[tuple, tuple[tuple[int, ...], Any]]:
  return {tuple(path): (tuple(var.shape), var.dtype)
          for path, var in nnx.to_flat_state(nnx.state(model, CHECKPOINT_STATE))}


def params_of(model: nnx.Module) -> dict[tuple, np.ndarray]:
  return {tuple(path): np.asarray(var[...])
          for path, var in nnx.to_flat_state(nnx.state(model, CHECKPOINT_STATE))}


def fill_model(abstract: nnx.Module, params: dict[tuple, np.ndarray]) -> nnx.Module:
  """Fills an abstract model; `params` is emptied as arrays move to the device (one copy at a time)."""
  graphdef, state = nnx.split(abstract)
  leaves = []
  for i, (path, var) in enumerate(nnx.to_flat_state(state)):
    path = tuple(path)
    if path not in params:
      raise CheckpointMismatchError(f'no value for model state {".".join(map(str, path))}')
    leaves.append((path, var.replace(jax.numpy.asarray(params.pop(path)))))
    if i % 64 == 63:
      converted.release_freed_memory()
  converted.release_freed_memory()
  return nnx.merge(graphdef, nnx.from_flat_state(leaves))


def model_from_state_dict(arch: Architecture, config, state_dict: Mapping[str, Any], *,
                          source: str = 'state dict', seed: int = 0) -> nnx.Module:
  """Strictly loads a PyTorch state dict into `arch.model_cls(config)` without random init."""
  model = abstract_model(arch, config, seed)
  params = arch.torch_params.apply(state_dict, expected_params(model), source=source)
  return fill_model(model, params)


def model_from_converted(weights: str | os.PathLike, preset: Preset | None = None, *, seed: int = 0,
                         **hyperparameters) -> nnx.Module:
  arch, config = converted_config(weights, preset, **hyperparameters)
  model = abstract_model(arch, config, seed)
  return fill_model(model, converted.read_converted_params(Path(weights), expected_params(model)))


def check_preset_architecture(preset: Preset | None, arch_name: str, weights) -> None:
  if preset is not None and preset.architecture != arch_name:
    raise CheckpointMismatchError(f'{weights} holds a {arch_name} model but preset {preset.name!r} '
                                  f'is a {preset.architecture} model')
