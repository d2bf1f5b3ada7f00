"""PyTorch checkpoints -> JAX (installed as `jaxrestore.convert`).

Reading never executes pickled code (see `torch_checkpoint`); conversion is a declarative
per-architecture `mapping.ParamMap`; results are orbax checkpoints that `jaxrestore.load` reads.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from .mapping import CheckpointMismatchError

__all__ = ['from_torch', 'CheckpointMismatchError']


def from_torch(src: str | os.PathLike, dst: str | os.PathLike, *, name: str | None = None,
               key: str | None = None, overwrite: bool = False, **hyperparameters) -> Path:
  """Converts an official PyTorch checkpoint into a jaxrestore checkpoint directory at `dst`.

  The architecture and its hyperparameters come from the preset `name`, or are detected from the
  state dict; keyword hyperparameters override them. Returns the written directory.
  """
  from jaxrestore import api
  from .checkpoint import save_converted

  src = Path(src)
  dst = Path(dst)
  if dst.exists() and not overwrite:  # fail before doing any work
    raise FileExistsError(f'{dst} already exists; pass overwrite=True (CLI: --overwrite) to replace it')
  if dst.absolute() == src.absolute():
    raise FileExistsError(f'refusing to write the converted checkpoint over its source {src}')
  model = api.load(name, src, key=key, **hyperparameters)
  return save_converted(
      dst, api.params_of(model), architecture=_architecture_of(model),
      hyperparameters=api.hyperparameters_of(model), overwrite=overwrite, preset=name,
      source_file=src.name, source_sha256=_sha256(src))


def _architecture_of(model) -> str:
  from jaxrestore.registry import ARCHITECTURES
  for arch in ARCHITECTURES.values():
    if isinstance(model, arch.model_cls):
      return arch.name
  raise TypeError(f'{type(model).__name__} is not a registered architecture')


def _sha256(path: Path) -> str:
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      digest.update(block)
  return digest.hexdigest()
