"""Declarative PyTorch -> Flax NNX parameter mapping, shared by every architecture.

Each architecture declares a `ParamMap`: an ordered list of `Rule`s (a regex over PyTorch state-dict
keys, the dotted NNX path it becomes, and a small array transform) plus the buffers the original
saves that we recognise and skip. `ParamMap.apply` converts a whole state dict strictly: every key
must map, every model parameter must be filled, every shape must agree — or one error lists them all.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable, Iterable, Mapping

import numpy as np

Path = tuple  # an NNX state path, e.g. ('layers', 0, 'conv', 'kernel')


class CheckpointMismatchError(ValueError):
  """The checkpoint's keys or shapes do not fit the model."""


# ----- transforms (numpy in, numpy out; one tensor at a time) --------------------------------------

def identity(x: np.ndarray) -> np.ndarray:
  return x


def conv_oihw_to_hwio(x: np.ndarray) -> np.ndarray:
  if x.ndim != 4:
    raise CheckpointMismatchError(f'expected a 4-d OIHW conv weight, got shape {x.shape}')
  return x.transpose(2, 3, 1, 0)


def linear_oi_to_io(x: np.ndarray) -> np.ndarray:
  if x.ndim != 2:
    raise CheckpointMismatchError(f'expected a 2-d (out, in) linear weight, got shape {x.shape}')
  return x.T


@dataclasses.dataclass(frozen=True)
class Rule:
  """`pattern` full-matches a PyTorch key; `target` is its dotted NNX path (re.sub template).

  `ndim`, when set, restricts the rule to tensors of that rank (e.g. a BatchNorm `.weight` vs a
  conv `.weight` under the same Sequential index).
  """
  pattern: str
  target: str
  transform: Callable[[np.ndarray], np.ndarray] = identity
  ndim: int | None = None

  def match(self, key: str, ndim: int | None = None) -> str | None:
    if self.ndim is not None and ndim is not None and ndim != self.ndim:
      return None
    m = re.fullmatch(self.pattern, key)
    return None if m is None else m.expand(self.target)


def count_children(state_dict: Mapping[str, Any], prefix: str) -> int:
  """Number of consecutive integer children `prefix.{0,1,...}.` among a state dict's keys (the
  depth of an nn.Sequential / nn.ModuleList)."""
  pattern = re.compile(re.escape(prefix) + r'\.(\d+)\.')
  found = {int(m.group(1)) for k in state_dict for m in [pattern.match(k)] if m}
  n = 0
  while n in found:
    n += 1
  return n


def parse_path(dotted: str) -> Path:
  return tuple(int(p) if p.isdigit() else p for p in dotted.split('.'))


def format_path(path: Iterable) -> str:
  return '.'.join(str(p) for p in path)


@dataclasses.dataclass(frozen=True)
class ParamMap:
  rules: tuple[Rule, ...]
  ignore: tuple[str, ...] = ()  # regexes of saved buffers that we rebuild ourselves

  def target(self, key: str, ndim: int | None = None) -> tuple[Path, Callable] | None:
    for rule in self.rules:
      dotted = rule.match(key, ndim)
      if dotted is not None:
        return parse_path(dotted), rule.transform
    return None

  def is_ignored(self, key: str) -> bool:
    return any(re.fullmatch(p, key) for p in self.ignore)

  def apply(self, state_dict: Mapping[str, Any], expected: Mapping[Path, tuple[tuple[int, ...], Any]],
            *, source: str = 'checkpoint') -> dict[Path, np.ndarray]:
    """Converts `state_dict` into {path: array} for a model whose params are `expected`.

    `expected` maps each NNX param path to (shape, dtype). Tensors are materialised one at a time,
    so a lazily read checkpoint is never held twice in memory.
    """
    out: dict[Path, np.ndarray] = {}
    unexpected, mismatched = [], []
    for key, tensor in state_dict.items():
      if self.is_ignored(key):
        continue
      hit = self.target(key, np.ndim(tensor))
      if hit is None or hit[0] not in expected:
        unexpected.append(f'{key} {tuple(np.shape(tensor))}')
        continue
      path, transform = hit
      if path in out:
        raise CheckpointMismatchError(f'{source}: two keys map to the same parameter {format_path(path)}')
      shape, dtype = expected[path]
      arr = np.asarray(tensor)
      try:
        arr = transform(arr)
      except CheckpointMismatchError as e:
        mismatched.append(f'{key}: {e}')
        continue
      if tuple(arr.shape) != tuple(shape):
        mismatched.append(f'{key} -> {format_path(path)}: found {tuple(np.shape(tensor))} '
                          f'(as {tuple(arr.shape)}), expected {tuple(shape)}')
        continue
      out[path] = np.ascontiguousarray(arr.astype(dtype, copy=False))
    missing = [f'{format_path(p)} {tuple(s)}' for p, (s, _) in expected.items() if p not in out]
    if unexpected or missing or mismatched:
      parts = [f'{source} does not match the model:']
      if missing:
        parts.append(f'  missing ({len(missing)}): ' + ', '.join(missing))
      if unexpected:
        parts.append(f'  unexpected ({len(unexpected)}): ' + ', '.join(unexpected))
      if mismatched:
        parts.append(f'  shape mismatch ({len(mismatched)}): ' + '; '.join(mismatched))
      raise CheckpointMismatchError('\n'.join(parts))
    return out
