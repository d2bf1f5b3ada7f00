"""Which architectures jaxrestore has, their presets, and which one a checkpoint holds.

The registry is the list of model modules: every module of `jaxrestore.models` that defines an
`ARCHITECTURE` (see `jaxrestore.models.base`) is found here, so a model joins by existing. Code
outside the package (a test, a plugin) can add one with `register`.
"""
from __future__ import annotations

import difflib
import importlib
import pkgutil
from typing import Any, Mapping

from jaxrestore import models as _models_package
from jaxrestore.mapping import CheckpointMismatchError
from jaxrestore.models.base import Architecture, Preset

_ARCHITECTURES: dict[str, Architecture] = {}
_PRESETS: dict[str, Preset] = {}
_discovered = False


def _discover() -> None:
  global _discovered
  if _discovered:
    return
  _discovered = True
  for info in sorted(pkgutil.iter_modules(_models_package.__path__), key=lambda i: i.name):
    module = importlib.import_module(f'{_models_package.__name__}.{info.name}')
    arch = getattr(module, 'ARCHITECTURE', None)
    if isinstance(arch, Architecture):
      register(arch)


def register(arch: Architecture, *, replace: bool = False) -> Architecture:
  """Adds an architecture and its presets; names must be new unless `replace`."""
  _discover()
  if arch.name in _ARCHITECTURES and not replace:
    raise ValueError(f'architecture {arch.name!r} is already registered')
  presets = list(arch.presets())
  for p in presets:
    if p.architecture != arch.name:
      raise ValueError(f'preset {p.name!r} of architecture {arch.name!r} names architecture {p.architecture!r}')
    owner = _PRESETS.get(p.name)
    if owner is not None and owner.architecture != arch.name:
      raise ValueError(f'preset {p.name!r} is already defined by architecture {owner.architecture!r}')
  if replace:
    unregister(arch.name)
  _ARCHITECTURES[arch.name] = arch
  _PRESETS.update((p.name, p) for p in presets)
  return arch


def unregister(name: str) -> None:
  _ARCHITECTURES.pop(name, None)
  for preset_name in [n for n, p in _PRESETS.items() if p.architecture == name]:
    del _PRESETS[preset_name]


def architectures() -> dict[str, Architecture]:
  _discover()
  return dict(_ARCHITECTURES)


def presets() -> dict[str, Preset]:
  _discover()
  return dict(_PRESETS)


def get_architecture(name: str) -> Architecture:
  _discover()
  try:
    return _ARCHITECTURES[name]
  except KeyError:
    raise ValueError(f'unknown architecture {name!r}; known: {", ".join(sorted(_ARCHITECTURES))}') from None


def architecture_of(model) -> Architecture | None:
  """The registered architecture whose module class built `model`."""
  _discover()
  return next((a for a in _ARCHITECTURES.values() if type(model) is a.model_cls), None)


def get_preset(name: str) -> Preset:
  _discover()
  try:
    return _PRESETS[name]
  except KeyError:
    close = difflib.get_close_matches(name, _PRESETS, n=3)
    hint = f'; did you mean {", ".join(close)}?' if close else ''
    raise ValueError(f'unknown preset {name!r}{hint} (`jaxrestore presets` lists all)') from None


def detect_architecture(state_dict: Mapping[str, Any], *, source: str = 'checkpoint') -> tuple[Architecture, dict]:
  """(architecture, hyperparameters) of a PyTorch state dict.

  Every architecture whose whole signature is present is a candidate; the most specific one (most
  signature keys) wins, so a descendant (PromptIR over Restormer) needs no help from its parent.
  Two equally specific candidates are an error naming both.
  """
  _discover()
  scored = sorted(((arch.signature_score(state_dict), arch) for arch in _ARCHITECTURES.values()
                   if arch.signature_score(state_dict) is not None), key=lambda sa: -sa[0])
  problems: dict[str, str] = {}
  for i, (score, arch) in enumerate(scored):
    rivals = [a.name for s, a in scored if s == score and a is not arch]
    if rivals and i == 0:
      raise CheckpointMismatchError(
          f'{source}: ambiguous state dict: it matches architectures {arch.name!r} and '
          f'{", ".join(repr(r) for r in rivals)} equally ({score} signature keys each); '
          f'load it with a preset name or make one signature more specific')
    try:
      return arch, arch.hyperparameters_from_state_dict(state_dict)
    except (KeyError, IndexError, ValueError) as e:
      problems[arch.name] = f'hyperparameters could not be read: {e}'
  if problems:
    name, why = next(iter(problems.items()))
    raise CheckpointMismatchError(f'{source}: looks like a {name} checkpoint but {why}')
  closest = min(_ARCHITECTURES.values(), key=lambda a: len(a.missing_signature(state_dict)))
  why = closest.missing_signature(state_dict)
  sample = ', '.join(list(state_dict)[:5])
  raise CheckpointMismatchError(
      f'{source}: no known architecture matches this state dict ({len(state_dict)} tensors, e.g. {sample}). '
      f'Closest: {closest.name} ({"; ".join(why[:5])}{"; ..." if len(why) > 5 else ""})')
