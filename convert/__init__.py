"""PyTorch checkpoints -> JAX (installed as `jaxrestore.convert`).

Reading never executes pickled code (`torch_checkpoint`); each architecture declares how its
PyTorch parameters map onto its NNX module (`jaxrestore.mapping.ParamMap`, in the model's file);
`build` detects the architecture and fills models; results are orbax checkpoints (`checkpoint`)
that `jaxrestore.load` reads.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from jaxrestore.mapping import CheckpointMismatchError
from jaxrestore.registry import get_preset

__all__ = ['from_torch', 'CheckpointMismatchError']

DTYPES = {'float32': np.float32, 'fp32': np.float32, 'bfloat16': 'bfloat16', 'bf16': 'bfloat16',
          'float16': np.float16, 'fp16': np.float16}


def from_torch(src: str | os.PathLike, dst: str | os.PathLike, *, name: str | None = None,
               key: str | None = None, overwrite: bool = False, dtype: str | None = None,
               **hyperparameters) -> Path:
  """Converts an official PyTorch checkpoint into a jaxrestore checkpoint directory at `dst`.

  The architecture and its hyperparameters come from the preset `name`, or are detected from the
  state dict; keyword hyperparameters override them. `dtype` ('bfloat16', 'float16', 'float32')
  stores floating-point parameters in that type (default: the model's parameter dtype, float32).
  Returns the written directory.
  """
  from . import build
  from .checkpoint import save_converted

  src = Path(src)
  dst = Path(dst)
  if dst.exists() and not overwrite:  # fail before doing any work
    raise FileExistsError(f'{dst} already exists; pass overwrite=True (CLI: --overwrite) to replace it')
  if dst.absolute() == src.absolute():
    raise FileExistsError(f'refusing to write the converted checkpoint over its source {src}')
  store_dtype = None
  if dtype is not None:
    if str(dtype) not in DTYPES:
      raise ValueError(f'dtype must be one of {sorted(DTYPES)}, got {dtype!r}')
    import ml_dtypes
    store_dtype = np.dtype(ml_dtypes.bfloat16 if DTYPES[str(dtype)] == 'bfloat16' else DTYPES[str(dtype)])
  preset = get_preset(name) if name is not None else None
  # Streaming: tensors are read and transformed one at a time into the converted copy, which is
  # the only full copy held (no model is built; shapes come from an abstract model).
  arch, config, state_dict = build.torch_checkpoint_config(src, preset, key=key, **hyperparameters)
  expected = build.expected_params(build.abstract_model(arch, config))
  if store_dtype is not None:
    expected = {p: (shape, store_dtype if np.issubdtype(np.dtype(dt), np.floating) or np.dtype(dt) == store_dtype
                    else dt) for p, (shape, dt) in expected.items()}
  params = arch.torch_params.apply(state_dict, expected, source=str(src))
  return save_converted(
      dst, params, architecture=arch.name, hyperparameters=config.hyperparameters(),
      overwrite=overwrite, preset=name, source_file=src.name, source_sha256=_sha256(src))


def _sha256(path: Path) -> str:
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      digest.update(block)
  return digest.hexdigest()
