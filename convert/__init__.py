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
  preset = api.get_preset(name) if name is not None else None
  # Streaming: tensors are read and transformed one at a time into the converted copy, which is
  # the only full copy held (no model is built; shapes come from an abstract model).
  arch, config, state_dict = api.torch_checkpoint_config(src, preset, key=key, **hyperparameters)
  expected = api.expected_params(api.abstract_model(arch, config))
  params = arch.torch_params.apply(state_dict, expected, source=str(src))
  return save_converted(
      dst, params, architecture=arch.name, hyperparameters=api.hyperparameters_of(config),
      overwrite=overwrite, preset=name, source_file=src.name, source_sha256=_sha256(src))


def _sha256(path: Path) -> str:
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      digest.update(block)
  return digest.hexdigest()
