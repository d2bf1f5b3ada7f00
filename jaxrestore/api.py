"""The small public API: `load` a model by preset name and/or weights file, list `presets`."""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from flax import nnx

from jaxrestore import registry
from jaxrestore.convert import build
from jaxrestore.convert import checkpoint as converted
from jaxrestore.models.base import ASSETS, Preset
from jaxrestore.registry import get_architecture



def presets() -> dict[str, Preset]:
  """Every preset name with its metadata (architecture, task, noise/quality/scale, weights source)."""
  return registry.presets()


def get_preset(name: str) -> Preset:
  return registry.get_preset(name)


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
      fetch = (f'download {preset.weights_url} into' if preset.weights_url else
               f'{preset.notes.split(";")[0]}; put them in')
      message = f'no weights found for preset {preset.name!r}: {fetch} one of [{where}] (or pass weights=...)'
      if pretrained:
        raise FileNotFoundError(message)
      warnings.warn(message + '; returning a randomly initialised model', stacklevel=2)
  if weights is None:
    arch = get_architecture(preset.architecture)
    config = arch.make_config({**preset.hyperparameters, **hyperparameters})
    return arch.model_cls(config, rngs=nnx.Rngs(seed))

  weights = Path(weights)
  if not weights.exists():
    raise FileNotFoundError(f'weights file {weights} does not exist')
  if converted.is_converted_checkpoint(weights):
    return build.model_from_converted(weights, preset, seed=seed, **hyperparameters)
  arch, config, state_dict = build.torch_checkpoint_config(weights, preset, key=key, **hyperparameters)
  return build.model_from_state_dict(arch, config, state_dict, source=str(weights), seed=seed)
