"""Architectures jaxrestore can build and load, and detection of which one a checkpoint holds."""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

from jaxrestore.convert.mapping import CheckpointMismatchError, ParamMap
from jaxrestore.models import dncnn, hair, promptir, restormer, swinir


@dataclasses.dataclass(frozen=True)
class Architecture:
  name: str
  config_cls: type
  model_cls: type
  torch_params: ParamMap
  missing_signature: Callable[[Mapping[str, Any]], list[str]]  # why a state dict is not this arch
  hyperparameters_from_state_dict: Callable[[Mapping[str, Any]], dict]


def _missing_keys(*keys: str) -> Callable[[Mapping[str, Any]], list[str]]:
  return lambda sd: [f'missing key {k}' for k in keys if k not in sd]


ARCHITECTURES: dict[str, Architecture] = {
    'swinir': Architecture('swinir', swinir.SwinIRConfig, swinir.SwinIR, swinir.TORCH_PARAMS,
                           _missing_keys(*swinir.SIGNATURE_KEYS), swinir.hyperparameters_from_state_dict),
    'dncnn': Architecture('dncnn', dncnn.DnCNNConfig, dncnn.DnCNN, dncnn.TORCH_PARAMS,
                          dncnn.missing_signature, dncnn.hyperparameters_from_state_dict),
    'restormer': Architecture('restormer', restormer.RestormerConfig, restormer.Restormer, restormer.TORCH_PARAMS,
                              restormer.missing_signature, restormer.hyperparameters_from_state_dict),
    'promptir': Architecture('promptir', promptir.PromptIRConfig, promptir.PromptIR, promptir.TORCH_PARAMS,
                             promptir.missing_signature, promptir.hyperparameters_from_state_dict),
    'hair': Architecture('hair', hair.HAIRConfig, hair.HAIR, hair.TORCH_PARAMS,
                         hair.missing_signature, hair.hyperparameters_from_state_dict),
}


def get_architecture(name: str) -> Architecture:
  try:
    return ARCHITECTURES[name]
  except KeyError:
    raise ValueError(f'unknown architecture {name!r}; known: {sorted(ARCHITECTURES)}') from None


def detect_architecture(state_dict: Mapping[str, Any], *, source: str = 'checkpoint') -> tuple[str, dict]:
  """Returns (architecture name, hyperparameters) recovered from a PyTorch state dict."""
  misses = {}
  for arch in ARCHITECTURES.values():
    missing = arch.missing_signature(state_dict)
    if not missing:
      try:
        return arch.name, arch.hyperparameters_from_state_dict(state_dict)
      except (KeyError, IndexError, ValueError) as e:
        misses[arch.name] = [f'hyperparameters could not be read: {e}']
    else:
      misses[arch.name] = missing
  closest = min(misses, key=lambda n: len(misses[n]))
  sample = ', '.join(list(state_dict)[:5])
  raise CheckpointMismatchError(
      f'{source}: no known architecture matches this state dict ({len(state_dict)} tensors, e.g. '
      f'{sample}). Closest: {closest} ({"; ".join(misses[closest][:5])})')
