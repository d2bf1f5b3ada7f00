"""Converted checkpoints: a directory with `jaxrestore.json` (architecture, hyperparameters,
provenance) and `params/` (an orbax checkpoint of {dotted.param.path: array}). Reading one needs
neither PyTorch nor the original file."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from jaxrestore.mapping import CheckpointMismatchError, format_path, parse_path

FORMAT = 'jaxrestore-converted'
FORMAT_VERSION = 1
METADATA_FILE = 'jaxrestore.json'


def release_freed_memory() -> None:
  """Returns freed heap pages to the OS (glibc `malloc_trim`; a no-op elsewhere). Converting
  thousands of tensors of a few MB each otherwise leaves every freed source buffer in the heap, and
  a 4.4 GB conversion peaks at twice its size."""
  global _MALLOC_TRIM
  if _MALLOC_TRIM is None:
    try:
      import ctypes
      _MALLOC_TRIM = ctypes.CDLL('libc.so.6').malloc_trim
    except (OSError, AttributeError):
      _MALLOC_TRIM = False
  if _MALLOC_TRIM:
    _MALLOC_TRIM(0)


_MALLOC_TRIM = None


def is_converted_checkpoint(path) -> bool:
  return Path(path).is_dir() and (Path(path) / METADATA_FILE).is_file()


def save_converted(dst, params: dict[tuple, Any], *, architecture: str,
                   hyperparameters: Mapping[str, Any], overwrite: bool = False,
                   **provenance) -> Path:
  """Writes atomically: a failure never leaves a half-written `dst` or damages an existing one.

  Streaming: `params` is emptied as its arrays are moved into the checkpoint, and orbax writes at
  most about 1 GB at a time, so peak memory stays near one copy of the weights.
  """
  import jax.numpy as jnp
  import orbax.checkpoint as ocp  # heavy import, only needed here

  dst = Path(dst).absolute()
  if dst.exists() and not overwrite:
    raise FileExistsError(f'{dst} already exists; pass overwrite=True (CLI: --overwrite) to replace it')
  if dst.exists() and not is_converted_checkpoint(dst):
    raise FileExistsError(f'{dst} exists and is not a jaxrestore checkpoint; refusing to replace it')
  dst.parent.mkdir(parents=True, exist_ok=True)
  staging = Path(tempfile.mkdtemp(prefix=f'.{dst.name}.', dir=dst.parent))
  umask = os.umask(0)
  os.umask(umask)
  staging.chmod(0o777 & ~umask)  # mkdtemp makes it private; the result is an ordinary folder
  try:
    num_params = int(sum(np.size(v) for v in params.values()))
    flat = {}
    for i, p in enumerate(list(params)):
      flat[format_path(p)] = jnp.asarray(params.pop(p))
      if i % 64 == 63:
        release_freed_memory()
    release_freed_memory()
    checkpointer = ocp.Checkpointer(ocp.PyTreeCheckpointHandler(save_concurrent_gb=1, use_compression=False))
    checkpointer.save(staging / 'params', flat)
    meta = dict(format=FORMAT, format_version=FORMAT_VERSION, architecture=architecture,
                hyperparameters=_jsonable(dict(hyperparameters)), num_params=num_params, **provenance)
    (staging / METADATA_FILE).write_text(json.dumps(meta, indent=2) + '\n')
    if dst.exists():
      backup = dst.with_name(f'.{dst.name}.old')
      os.replace(dst, backup)
      os.replace(staging, dst)
      shutil.rmtree(backup, ignore_errors=True)
    else:
      os.replace(staging, dst)
  finally:
    if staging.exists():
      shutil.rmtree(staging, ignore_errors=True)
  return dst


def read_metadata(path) -> dict:
  path = Path(path)
  try:
    meta = json.loads((path / METADATA_FILE).read_text())
  except (OSError, json.JSONDecodeError) as e:
    raise CheckpointMismatchError(f'{path}: unreadable {METADATA_FILE}: {e}') from None
  if meta.get('format') != FORMAT or meta.get('format_version', 0) > FORMAT_VERSION:
    raise CheckpointMismatchError(f'{path}: not a jaxrestore checkpoint of a supported version '
                                  f'(format={meta.get("format")!r}, version={meta.get("format_version")!r})')
  return meta


def read_converted_params(path, expected: Mapping[tuple, tuple[tuple[int, ...], Any]]) -> dict[tuple, np.ndarray]:
  """Restores the params of a converted checkpoint, strictly against the model's `expected` shapes."""
  import jax
  import orbax.checkpoint as ocp

  path = Path(path).absolute()
  target = {format_path(p): jax.ShapeDtypeStruct(tuple(s), d) for p, (s, d) in expected.items()}
  stored = ocp.StandardCheckpointer().metadata(path / 'params')
  stored_tree = getattr(stored, 'item_metadata', stored)
  stored_tree = getattr(stored_tree, 'tree', stored_tree)
  stored_shapes = {k: tuple(getattr(v, 'shape', ())) for k, v in dict(stored_tree).items()}
  missing = [f'{k} {target[k].shape}' for k in target if k not in stored_shapes]
  unexpected = [f'{k} {s}' for k, s in stored_shapes.items() if k not in target]
  mismatched = [f'{k}: found {stored_shapes[k]}, expected {target[k].shape}'
                for k in target if k in stored_shapes and stored_shapes[k] != target[k].shape]
  if missing or unexpected or mismatched:
    parts = [f'{path} does not match the model:']
    for label, items in (('missing', missing), ('unexpected', unexpected), ('shape mismatch', mismatched)):
      if items:
        parts.append(f'  {label} ({len(items)}): ' + ', '.join(items))
    raise CheckpointMismatchError('\n'.join(parts))
  restored = ocp.StandardCheckpointer().restore(path / 'params', target)
  out = {}
  for i, k in enumerate(list(restored)):
    out[parse_path(k)] = np.asarray(restored.pop(k))
    if i % 64 == 63:
      release_freed_memory()
  return out


def _jsonable(value):
  if isinstance(value, dict):
    return {k: _jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_jsonable(v) for v in value]
  if isinstance(value, np.generic):
    return value.item()
  return value
