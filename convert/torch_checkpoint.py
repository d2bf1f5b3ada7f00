"""Safe, torch-free reader for PyTorch (and a few other) checkpoint files.

Research repositories ship weights as ``.pth``/``.pt``/``.ckpt`` files written by ``torch.save``.
Those are pickles, and unpickling an untrusted pickle can run arbitrary code. This module reads them
**without importing PyTorch and without executing anything from the file**: the pickles are loaded
with a restricted unpickler whose ``find_class`` only hands out this module's own inert stand-ins
for an explicit allow-list of globals (containers, tensor-rebuild functions, storage/dtype markers,
a few builtins). Any other global raises :class:`UnsafeCheckpointError`.

Supported formats (detected from the file's first bytes, never from its extension):

* PyTorch zip checkpoints (``torch.save`` since torch 1.6): ``<prefix>/data.pkl`` + raw storages
  in ``<prefix>/data/<key>``; ``<prefix>/byteorder`` is honoured (big-endian data is byte-swapped).
* Legacy PyTorch checkpoints (torch < 1.6, or ``_use_new_zipfile_serialization=False``): a magic
  number pickle, a protocol-version pickle, a sys-info pickle, the main pickle, the list of storage
  keys, then each storage as an int64 element count followed by its raw (little-endian) bytes.
  Storage locations (``'cuda:0'`` ...) are ignored: nothing ever touches a device.
* ``.safetensors`` (header parsed here with ``json``/``numpy``; the ``safetensors`` package is not
  needed).
* ``.npz`` archives (arrays of plain dtypes only, like ``numpy.load(allow_pickle=False)``).

TorchScript archives, the torch < 0.4 tar format and plain (non-``torch.save``) pickles are refused
with a :class:`CheckpointError` that says so.

Memory: tensors are returned as :class:`LazyArray` objects that only record where their bytes live
(file offset, shape, strides, dtype); reading a checkpoint loads only its pickle.
``np.asarray(x)`` (or ``x.numpy()``) materialises one tensor as a fresh C-contiguous array: a
contiguous tensor is read straight from the file into the result; a strided view (transposed,
sliced, expanded) memory-maps the byte range it spans read-only, gathers it with ``as_strided`` and
unmaps it again.  So a converter that materialises one tensor at a time holds about one tensor in
memory, even for multi-GB checkpoints.  Materialisation is not cached: each call reads the file
again, and the file must still exist (unchanged) when a tensor is materialised.  Compressed zip
members (torch never writes them, but hand-made archives may) are decompressed on each
materialisation instead.  This module assumes a little-endian host (as numpy/JAX users have).

Public API::

  read_checkpoint(path) -> object tree with LazyArray leaves
  read_state_dict(path, *, key=None) -> {name: LazyArray}
  unwrap_state_dict(obj, *, key=None, source='<checkpoint>') -> {name: LazyArray}
  materialize(obj) -> the same tree with every LazyArray replaced by an np.ndarray
  LazyArray, CheckpointError, UnsafeCheckpointError
"""

from __future__ import annotations

import ast
import collections
import contextvars
import io
import json
import math
import os
import pickle
import re
import struct
import zipfile
from collections.abc import Mapping
from typing import Any

import ml_dtypes
import numpy as np

__all__ = [
  'CheckpointError',
  'LazyArray',
  'UnsafeCheckpointError',
  'materialize',
  'read_checkpoint',
  'read_state_dict',
  'unwrap_state_dict',
]


# --------------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------------


class CheckpointError(ValueError):
  """A checkpoint could not be read (unknown format, corrupt, unsupported content, ...).

  The message names the file and the problem.
  """


class UnsafeCheckpointError(CheckpointError):
  """A pickle in the checkpoint asked for a global that is not on the allow-list.

  Nothing from the file has been executed when this is raised.
  """


def _with_source(exc: CheckpointError, source: str) -> CheckpointError:
  """Return ``exc`` re-created with ``source`` in front of its message (if missing)."""
  msg = str(exc)
  if msg.startswith(source + ':'):
    return exc
  return type(exc)(f'{source}: {msg}')


# --------------------------------------------------------------------------------------------------
# dtypes
# --------------------------------------------------------------------------------------------------


def _opt_ml_dtype(name: str) -> np.dtype | None:
  t = getattr(ml_dtypes, name, None)
  return None if t is None else np.dtype(t)


# torch dtype name -> numpy dtype (None: known torch dtype without a numpy equivalent)
_TORCH_DTYPES: dict[str, np.dtype | None] = {
  'float32': np.dtype(np.float32),
  'float': np.dtype(np.float32),
  'float64': np.dtype(np.float64),
  'double': np.dtype(np.float64),
  'float16': np.dtype(np.float16),
  'half': np.dtype(np.float16),
  'bfloat16': np.dtype(ml_dtypes.bfloat16),
  'complex64': np.dtype(np.complex64),
  'cfloat': np.dtype(np.complex64),
  'complex128': np.dtype(np.complex128),
  'cdouble': np.dtype(np.complex128),
  'uint8': np.dtype(np.uint8),
  'int8': np.dtype(np.int8),
  'int16': np.dtype(np.int16),
  'short': np.dtype(np.int16),
  'int32': np.dtype(np.int32),
  'int': np.dtype(np.int32),
  'int64': np.dtype(np.int64),
  'long': np.dtype(np.int64),
  'bool': np.dtype(np.bool_),
  'uint16': np.dtype(np.uint16),
  'uint32': np.dtype(np.uint32),
  'uint64': np.dtype(np.uint64),
  'float8_e4m3fn': _opt_ml_dtype('float8_e4m3fn'),
  'float8_e5m2': _opt_ml_dtype('float8_e5m2'),
  'float8_e4m3fnuz': _opt_ml_dtype('float8_e4m3fnuz'),
  'float8_e5m2fnuz': _opt_ml_dtype('float8_e5m2fnuz'),
  'float8_e8m0fnu': _opt_ml_dtype('float8_e8m0fnu'),
  # Known torch dtypes that numpy cannot represent: allowed as inert markers, refused when used.
  'complex32': None,
  'chalf': None,
  'float4_e2m1fn_x2': None,
  'qint8': None,
  'quint8': None,
  'qint32': None,
  'quint4x2': None,
  'quint2x4': None,
}

# legacy typed storage class name -> numpy dtype
_STORAGE_DTYPES: dict[str, np.dtype] = {
  'FloatStorage': np.dtype(np.float32),
  'DoubleStorage': np.dtype(np.float64),
  'HalfStorage': np.dtype(np.float16),
  'BFloat16Storage': np.dtype(ml_dtypes.bfloat16),
  'LongStorage': np.dtype(np.int64),
  'IntStorage': np.dtype(np.int32),
  'ShortStorage': np.dtype(np.int16),
  'CharStorage': np.dtype(np.int8),
  'ByteStorage': np.dtype(np.uint8),
  'BoolStorage': np.dtype(np.bool_),
  'ComplexFloatStorage': np.dtype(np.complex64),
  'ComplexDoubleStorage': np.dtype(np.complex128),
}

_SAFETENSORS_DTYPES: dict[str, np.dtype | None] = {
  'F64': np.dtype(np.float64),
  'F32': np.dtype(np.float32),
  'F16': np.dtype(np.float16),
  'BF16': np.dtype(ml_dtypes.bfloat16),
  'I64': np.dtype(np.int64),
  'I32': np.dtype(np.int32),
  'I16': np.dtype(np.int16),
  'I8': np.dtype(np.int8),
  'U64': np.dtype(np.uint64),
  'U32': np.dtype(np.uint32),
  'U16': np.dtype(np.uint16),
  'U8': np.dtype(np.uint8),
  'BOOL': np.dtype(np.bool_),
  'C64': np.dtype(np.complex64),
  'F8_E4M3': _opt_ml_dtype('float8_e4m3fn'),
  'F8_E5M2': _opt_ml_dtype('float8_e5m2'),
}


# --------------------------------------------------------------------------------------------------
# Byte sources ("blobs") and LazyArray
# --------------------------------------------------------------------------------------------------


class _FileBlob:
  """``nbytes`` raw bytes at ``offset`` in the file ``path``, read on demand."""

  __slots__ = ('path', 'offset', 'nbytes', 'big_endian')

  def __init__(self, path: str, offset: int | None, nbytes: int | None, big_endian: bool = False):
    self.path = path
    self.offset = offset  # None until resolved (legacy format: known only after the pickle)
    self.nbytes = nbytes
    self.big_endian = big_endian

  def read(self, start: int, stop: int) -> np.ndarray:
    """Bytes ``[start, stop)`` of the blob as a read-only uint8 array (a memmap)."""
    if self.offset is None or self.nbytes is None:
      raise CheckpointError(f'{self.path}: storage data was never located in the file')
    if not (0 <= start <= stop <= self.nbytes):
      raise CheckpointError(f'{self.path}: internal error, read outside a storage')
    try:
      return np.memmap(
        self.path, dtype=np.uint8, mode='r', offset=self.offset + start, shape=(stop - start,)
      )
    except (OSError, ValueError) as e:
      raise CheckpointError(f'{self.path}: cannot map tensor data ({e})') from e

  def read_into(self, start: int, out: memoryview) -> None:
    """Fill ``out`` with the blob's bytes from ``start`` on (one copy, no mapping)."""
    if self.offset is None or self.nbytes is None:
      raise CheckpointError(f'{self.path}: storage data was never located in the file')
    if not (0 <= start <= start + out.nbytes <= self.nbytes):
      raise CheckpointError(f'{self.path}: internal error, read outside a storage')
    try:
      with open(self.path, 'rb', buffering=0) as f:
        f.seek(self.offset + start)
        done = 0
        while done < out.nbytes:
          n = f.readinto(out[done:])
          if not n:
            raise CheckpointError(
              f'{self.path}: file ends inside tensor data (changed since it was read?)')
          done += n
    except OSError as e:
      raise CheckpointError(f'{self.path}: cannot read tensor data ({e})') from e


class _ZipMemberBlob:
  """A compressed zip member (decompressed on every read), starting ``skip`` bytes in."""

  __slots__ = ('path', 'member', 'skip', 'nbytes', 'big_endian')

  def __init__(self, path: str, member: str, skip: int, nbytes: int, big_endian: bool = False):
    self.path = path
    self.member = member
    self.skip = skip
    self.nbytes = nbytes
    self.big_endian = big_endian

  def read(self, start: int, stop: int) -> np.ndarray:
    if not (0 <= start <= stop <= self.nbytes):
      raise CheckpointError(f'{self.path}: internal error, read outside a storage')
    try:
      with zipfile.ZipFile(self.path) as zf, zf.open(self.member) as f:
        _skip_stream(f, self.skip + start)
        data = f.read(stop - start)
    except (OSError, zipfile.BadZipFile, EOFError, RuntimeError) as e:
      raise CheckpointError(f'{self.path}: cannot read member {self.member!r} ({e})') from e
    if len(data) != stop - start:
      raise CheckpointError(f'{self.path}: member {self.member!r} is truncated')
    return np.frombuffer(data, dtype=np.uint8)


class _MemoryBlob:
  """Bytes held in memory (numpy arrays pickled inside a checkpoint)."""

  __slots__ = ('data', 'nbytes', 'big_endian', 'path')

  def __init__(self, data: bytes, path: str = '<pickle>'):
    self.data = data
    self.nbytes = len(data)
    self.big_endian = False
    self.path = path

  def read(self, start: int, stop: int) -> np.ndarray:
    return np.frombuffer(self.data, dtype=np.uint8, count=stop - start, offset=start)


def _skip_stream(f, n: int) -> None:
  while n > 0:
    chunk = f.read(min(n, 1 << 24))
    if not chunk:
      raise EOFError('unexpected end of member')
    n -= len(chunk)


def _c_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
  strides = []
  acc = 1
  for n in reversed(shape):
    strides.append(acc)
    acc *= max(n, 1)
  return tuple(reversed(strides))


def _is_c_contiguous(shape: tuple[int, ...], strides: tuple[int, ...]) -> bool:
  expected = 1
  for n, s in zip(reversed(shape), reversed(strides)):
    if n != 1 and s != expected:
      return False
    expected *= n
  return True


class LazyArray:
  """A tensor whose data still lives in the checkpoint file.

  ``np.asarray(x)``, ``np.array(x)`` or ``x.numpy()`` materialise it as a fresh, C-contiguous,
  native-endian ``numpy.ndarray`` (with its original dtype: float16 stays float16, bfloat16 is
  ``ml_dtypes.bfloat16``).  The result is not cached; every call reads the file again.
  """

  __slots__ = ('_blob', '_offset', '_shape', '_strides', '_dtype', '_conj', '_neg', '__weakref__')

  def __init__(self, blob, offset: int, shape, strides, dtype: np.dtype, conj=False, neg=False):
    self._blob = blob
    self._offset = int(offset)  # bytes into the blob
    self._shape = tuple(int(n) for n in shape)
    self._strides = tuple(int(s) for s in strides)  # in elements
    self._dtype = np.dtype(dtype)
    self._conj = bool(conj)
    self._neg = bool(neg)

  # Guard against pickle BUILD opcodes mutating an already-validated object.
  def __setstate__(self, state):
    raise pickle.UnpicklingError('refusing to set state on a tensor')

  def __reduce__(self):
    return (np.asarray, (self.numpy(),))

  @property
  def shape(self) -> tuple[int, ...]:
    return self._shape

  @property
  def dtype(self) -> np.dtype:
    return self._dtype

  @property
  def ndim(self) -> int:
    return len(self._shape)

  @property
  def size(self) -> int:
    return math.prod(self._shape)

  @property
  def nbytes(self) -> int:
    return self.size * self._dtype.itemsize

  def __len__(self) -> int:
    if not self._shape:
      raise TypeError('len() of a 0-d array')
    return self._shape[0]

  def __repr__(self) -> str:
    return f'LazyArray(shape={self._shape}, dtype={self._dtype.name})'

  def _extent_bytes(self) -> int:
    """Bytes spanned from the first element to the end of the last one (0 if empty)."""
    if self.size == 0:
      return 0
    last = sum((n - 1) * s for n, s in zip(self._shape, self._strides))
    return (last + 1) * self._dtype.itemsize

  def numpy(self) -> np.ndarray:
    """Materialise: a fresh C-contiguous native-endian array."""
    dt = self._dtype
    if self._blob is None:
      raise CheckpointError('array data was never provided by the pickle')
    if self.size == 0:
      return np.empty(self._shape, dtype=dt)
    extent = self._extent_bytes()
    if isinstance(self._blob, _FileBlob) and _is_c_contiguous(self._shape, self._strides):
      # Contiguous (the usual case): read straight into the result, no mapping, one copy.
      out = np.empty(self._shape, dtype=dt)
      self._blob.read_into(self._offset, memoryview(out.reshape(-1).view(np.uint8)))
      return self._fix_values(out)
    # Strided views: map the byte range they span, gather with as_strided, unmap.
    buf = self._blob.read(self._offset, self._offset + extent)
    try:
      # Strided copy on opaque fixed-size items (as_strided cannot handle every ml_dtypes type),
      # then reinterpret the fresh contiguous copy as the real dtype.
      flat = buf.view(np.dtype((np.void, dt.itemsize)))
      view = np.lib.stride_tricks.as_strided(
        flat,
        shape=self._shape,
        strides=tuple(s * dt.itemsize for s in self._strides),
        writeable=False,
      )
      out = np.array(view, order='C', copy=True).view(dt)
    finally:
      del buf
    return self._fix_values(out)

  def _fix_values(self, out: np.ndarray) -> np.ndarray:
    dt = self._dtype
    if self._blob.big_endian and dt.itemsize > 1:
      unit = dt.itemsize // 2 if dt.kind == 'c' else dt.itemsize
      out.reshape(-1).view(f'u{unit}').byteswap(inplace=True)
    if self._conj:
      out = np.conj(out)
    if self._neg:
      out = np.negative(out)
    return out

  def __array__(self, dtype=None, copy=None):
    out = self.numpy()
    if dtype is not None and np.dtype(dtype) != out.dtype:
      out = out.astype(dtype)
    return out

  def astype(self, dtype) -> np.ndarray:
    """Materialise and convert (convenience)."""
    return self.numpy().astype(dtype)


def materialize(obj: Any, _memo: dict[int, Any] | None = None) -> Any:
  """Return ``obj`` with every :class:`LazyArray` (in dicts, lists, tuples) materialised.

  This loads everything into memory at once; prefer materialising tensors one at a time.
  Shared (and self-referencing) containers stay shared.
  """
  memo = {} if _memo is None else _memo
  if id(obj) in memo:
    return memo[id(obj)]
  if isinstance(obj, LazyArray):
    out = memo[id(obj)] = obj.numpy()
  elif isinstance(obj, dict):
    ordered = isinstance(obj, collections.OrderedDict)
    out = memo[id(obj)] = collections.OrderedDict() if ordered else {}
    for k, v in obj.items():
      out[k] = materialize(v, memo)
    md = getattr(obj, '_metadata', None)
    if md is not None:
      out._metadata = md  # type: ignore[attr-defined]
  elif isinstance(obj, list):
    out = memo[id(obj)] = []
    out.extend(materialize(v, memo) for v in obj)
  elif isinstance(obj, tuple):
    out = memo[id(obj)] = tuple(materialize(v, memo) for v in obj)
  else:
    out = obj
  return out


# --------------------------------------------------------------------------------------------------
# Restricted unpickling: stand-ins
# --------------------------------------------------------------------------------------------------


class _LoadContext:
  """Per-load bookkeeping: every tensor made, to be bounds-checked once storages are located."""

  def __init__(self, source: str):
    self.source = source
    self.tensors: list[tuple[LazyArray, _Storage]] = []
    self.ndarray_stubs: list[_NdarrayStub] = []


_CTX: contextvars.ContextVar[_LoadContext] = contextvars.ContextVar('_torch_checkpoint_ctx')


class _Inert:
  """Base of all stand-in objects handed to the unpickler: refuses pickle's BUILD opcode."""

  __slots__ = ()

  def __setstate__(self, state):
    raise pickle.UnpicklingError(f'refusing to set state on {self!r}')


class _StandInFunction(_Inert):
  """A callable stand-in for an allow-listed global function/class (positional args only)."""

  __slots__ = ('qualname', '_fn')

  def __init__(self, qualname: str, fn):
    object.__setattr__(self, 'qualname', qualname)
    object.__setattr__(self, '_fn', fn)

  def __setattr__(self, name, value):
    raise AttributeError('read-only')

  def __call__(self, *args):
    return self._fn(*args)

  def __repr__(self) -> str:
    return f'<stand-in for {self.qualname}>'


class _Marker(_Inert):
  """A non-callable marker (torch dtype, storage class, ``torch.Tensor``, ``numpy.ndarray``)."""

  __slots__ = ('qualname', 'dtype')

  def __init__(self, qualname: str, dtype: np.dtype | None = None):
    object.__setattr__(self, 'qualname', qualname)
    object.__setattr__(self, 'dtype', dtype)

  def __setattr__(self, name, value):
    raise AttributeError('read-only')

  def __repr__(self) -> str:
    return f'<{self.qualname}>'


class _StorageTypeMarker(_Marker):
  __slots__ = ()


class _TorchDtypeMarker(_Marker):
  __slots__ = ()


class _Storage(_Inert):
  """A storage reference produced by ``persistent_load``: a byte window of a blob, typed."""

  __slots__ = ('blob', 'byte_offset', 'nbytes', 'dtype', 'key')

  def __init__(self, blob, byte_offset: int, nbytes: int, dtype: np.dtype, key: str):
    self.blob = blob
    self.byte_offset = byte_offset
    self.nbytes = nbytes
    self.dtype = dtype
    self.key = key

  def __repr__(self) -> str:
    return f'<storage {self.key!r} {self.dtype.name} {self.nbytes} bytes>'


class OrderedDict(collections.OrderedDict):
  """``collections.OrderedDict`` that accepts pickle's BUILD only for torch's ``_metadata``."""

  def __setstate__(self, state):
    if not isinstance(state, dict) or set(state) - {'_metadata'}:
      raise pickle.UnpicklingError('unexpected state for an OrderedDict')
    if '_metadata' in state:
      # Plain data (version numbers per submodule); stored as an attribute like torch does.
      collections.OrderedDict.__setattr__(self, '_metadata', state['_metadata'])

  def __reduce__(self):
    state = {'_metadata': self._metadata} if hasattr(self, '_metadata') else None
    return (collections.OrderedDict, (), state, None, iter(self.items()))


def _bad(msg: str) -> CheckpointError:
  return CheckpointError(msg)


def _is_int(x) -> bool:
  return type(x) is int


def _int_tuple(x, what: str) -> tuple[int, ...]:
  if not isinstance(x, (tuple, list)) or len(x) > 64 or not all(_is_int(v) for v in x):
    raise _bad(f'invalid tensor {what}: {x!r}')
  return tuple(x)


def _make_tensor(storage, storage_offset, size, stride, dtype: np.dtype | None = None,
                 metadata=None) -> LazyArray:
  if not isinstance(storage, _Storage):
    raise _bad(f'tensor rebuilt from a non-storage object {type(storage).__name__}')
  if not _is_int(storage_offset) or storage_offset < 0:
    raise _bad(f'invalid tensor storage offset {storage_offset!r}')
  size = _int_tuple(size, 'size')
  stride = _int_tuple(stride, 'stride')
  if len(size) != len(stride) or any(n < 0 for n in size) or any(s < 0 for s in stride):
    raise _bad(f'invalid tensor size/stride {size!r}/{stride!r}')
  dt = storage.dtype if dtype is None else dtype
  conj = neg = False
  if metadata:
    if not isinstance(metadata, dict) or set(metadata) - {'conj', 'neg'}:
      raise _bad(f'unsupported tensor metadata {metadata!r}')
    conj = bool(metadata.get('conj', False))
    neg = bool(metadata.get('neg', False))
  arr = LazyArray(
    storage.blob, storage.byte_offset + storage_offset * dt.itemsize, size, stride, dt, conj, neg
  )
  ctx = _CTX.get(None)
  if ctx is None:
    raise _bad('tensor rebuilt outside of a checkpoint load')
  ctx.tensors.append((arr, storage))
  return arr


def _check_hooks(hooks) -> None:
  if hooks is not None and not isinstance(hooks, Mapping):
    raise _bad(f'invalid backward hooks {type(hooks).__name__}')


def _rebuild_tensor(storage, storage_offset, size, stride):
  return _make_tensor(storage, storage_offset, size, stride)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks,
                       metadata=None):
  _check_hooks(backward_hooks)
  return _make_tensor(storage, storage_offset, size, stride, metadata=metadata)


def _rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, backward_hooks, dtype,
                       metadata=None):
  _check_hooks(backward_hooks)
  if not isinstance(dtype, _TorchDtypeMarker):
    raise _bad(f'invalid tensor dtype {dtype!r}')
  if dtype.dtype is None:
    raise _bad(f'tensor dtype {dtype.qualname} has no numpy equivalent (unsupported)')
  if isinstance(storage, _Storage) and storage.dtype != np.uint8:
    raise _bad('_rebuild_tensor_v3 expects an untyped storage')
  return _make_tensor(storage, storage_offset, size, stride, dtype=dtype.dtype, metadata=metadata)


def _rebuild_parameter(data, requires_grad, backward_hooks):
  if not isinstance(data, LazyArray):
    raise _bad(f'parameter rebuilt from {type(data).__name__}')
  _check_hooks(backward_hooks)
  return data


def _rebuild_parameter_with_state(data, requires_grad, backward_hooks, state):
  return _rebuild_parameter(data, requires_grad, backward_hooks)


_TENSOR_TYPE_MARKERS: dict[str, _Marker] = {
  q: _Marker(q) for q in ('torch.Tensor', 'torch._tensor.Tensor', 'torch.nn.parameter.Parameter')
}


def _rebuild_from_type_v2(func, new_type, args, state):
  # Tensors carrying Python attributes: rebuild the plain tensor, ignore the attributes.
  if not isinstance(func, _StandInFunction) or func.qualname not in _TENSOR_REBUILDERS:
    raise _bad(f'_rebuild_from_type_v2 with unsupported function {func!r}')
  if not isinstance(new_type, _Marker) or new_type.qualname not in _TENSOR_TYPE_MARKERS:
    raise _bad(f'_rebuild_from_type_v2 with unsupported type {new_type!r}')
  if not isinstance(args, tuple):
    raise _bad('_rebuild_from_type_v2 with non-tuple arguments')
  return func(*args)


def _torch_size(*args):
  if len(args) == 0:
    return ()
  if len(args) != 1:
    raise _bad('torch.Size takes one argument')
  return _int_tuple(args[0], 'torch.Size')


def _torch_device(*args):
  if not (1 <= len(args) <= 2) or not isinstance(args[0], str) or (
    len(args) == 2 and not (args[1] is None or _is_int(args[1]))
  ):
    raise _bad(f'invalid torch.device arguments {args!r}')
  return args[0] if len(args) == 1 or args[1] is None else f'{args[0]}:{args[1]}'


def _ordered_dict(*args):
  if len(args) > 1:
    raise _bad('OrderedDict takes at most one argument')
  if args and not isinstance(args[0], (list, tuple, dict)):
    raise _bad(f'OrderedDict built from {type(args[0]).__name__}')
  return OrderedDict(*args)


def _codecs_encode(*args):
  # Protocol-2 pickles encode bytes as _codecs.encode(<latin-1 str>, 'latin1').
  if len(args) == 1 and isinstance(args[0], str):
    return args[0].encode('utf-8')
  if (len(args) == 2 and isinstance(args[0], str) and isinstance(args[1], str)
      and args[1].lower().replace('_', '-') in ('latin1', 'latin-1', 'iso-8859-1')):
    return args[0].encode('latin-1')
  raise _bad(f'_codecs.encode with unsupported arguments {[type(a).__name__ for a in args]}')


def _builtin_bytes(*args):
  if not args:
    return b''
  if len(args) == 1 and isinstance(args[0], (bytes, bytearray)):
    return bytes(args[0])
  if len(args) == 1 and isinstance(args[0], list) and all(_is_int(v) for v in args[0]):
    return bytes(args[0])
  raise _bad('bytes() with unsupported arguments')


def _builtin_bytearray(*args):
  if len(args) == 2 and isinstance(args[0], str):
    return bytearray(_codecs_encode(*args))
  return bytearray(_builtin_bytes(*args))


def _builtin_set(*args):
  if len(args) > 1 or (args and not isinstance(args[0], (list, tuple, set, frozenset))):
    raise _bad('set() with unsupported arguments')
  return set(*args)


def _builtin_frozenset(*args):
  return frozenset(_builtin_set(*args))


def _builtin_complex(*args):
  if len(args) > 2 or not all(isinstance(a, (int, float)) for a in args):
    raise _bad('complex() with unsupported arguments')
  return complex(*args)


def _builtin_slice(*args):
  if not (1 <= len(args) <= 3) or not all(a is None or _is_int(a) for a in args):
    raise _bad('slice() with unsupported arguments')
  return slice(*args)


# ---- numpy (plain dtypes only) ----

_NP_DTYPE_CODE = re.compile(r'^(?:[biufc][1248]|b1|c16|f16|[SU][0-9]{1,9})$')


class _NpDtypeStub(_Inert):
  """Stand-in result of ``numpy.dtype(code, align, copy)``; only plain (non-object) dtypes."""

  __slots__ = ('dtype',)

  def __init__(self, dt: np.dtype):
    self.dtype = dt

  def __setstate__(self, state):
    # (version, byteorder, subarray, names, fields, elsize, alignment, flags[, metadata])
    if (not isinstance(state, tuple) or len(state) not in (8, 9) or state[0] not in (3, 4)
        or state[1] not in ('<', '>', '|', '=') or state[2] is not None
        or state[3] is not None or state[4] is not None
        or not all(_is_int(v) for v in state[5:8])
        or (len(state) == 9 and state[8] is not None)):
      raise pickle.UnpicklingError(f'unsupported numpy dtype state {state!r}')
    if state[7] & 0x3F and self.dtype.kind not in 'SU':  # object-related flags
      raise pickle.UnpicklingError('refusing numpy dtype flags of object dtypes')
    if state[1] in '<>' and self.dtype.itemsize > 1 and self.dtype.kind != 'S':
      self.dtype = self.dtype.newbyteorder(state[1])


def _np_dtype(*args):
  if not (1 <= len(args) <= 3) or not isinstance(args[0], str) or not all(
    isinstance(a, bool) for a in args[1:]
  ):
    raise _bad(f'numpy.dtype with unsupported arguments {args!r}')
  code = args[0]
  if not _NP_DTYPE_CODE.match(code):
    raise _bad(f'refusing numpy dtype {code!r} (only plain numeric/string dtypes)')
  return _NpDtypeStub(np.dtype(code))


def _np_scalar(*args):
  if len(args) != 2 or not isinstance(args[0], _NpDtypeStub):
    raise _bad('numpy scalar with unsupported arguments')
  dt, data = args[0].dtype, args[1]
  if isinstance(data, str):  # Python-2 era pickles
    data = data.encode('latin-1')
  if not isinstance(data, bytes) or len(data) != dt.itemsize:
    raise _bad('numpy scalar with invalid data')
  return np.frombuffer(data, dtype=dt, count=1)[0]


class _NdarrayStub(LazyArray):
  """Result of ``numpy.core.multiarray._reconstruct``; receives its data through BUILD."""

  __slots__ = ()

  def __setstate__(self, state):
    if self._blob is not None:
      raise pickle.UnpicklingError('numpy array state set twice')
    if isinstance(state, tuple) and len(state) == 5 and state[0] == 1:
      state = state[1:]
    if not isinstance(state, tuple) or len(state) != 4:
      raise pickle.UnpicklingError('unsupported numpy array state')
    shape, dstub, fortran, raw = state
    shape = _int_tuple(shape, 'numpy array shape')
    if not isinstance(dstub, _NpDtypeStub) or not isinstance(fortran, bool):
      raise pickle.UnpicklingError('unsupported numpy array state')
    if isinstance(raw, str):
      raw = raw.encode('latin-1')
    if not isinstance(raw, (bytes, bytearray)):
      raise pickle.UnpicklingError('refusing numpy array with non-bytes data (object array?)')
    dt = dstub.dtype
    if any(n < 0 for n in shape) or len(raw) != math.prod(shape) * dt.itemsize:
      raise pickle.UnpicklingError('numpy array data size does not match its shape')
    strides = _c_strides(shape) if not fortran else tuple(reversed(_c_strides(shape[::-1])))
    blob = _MemoryBlob(bytes(raw))
    blob.big_endian = dt.byteorder == '>'  # (this module assumes a little-endian host)
    native = dt.newbyteorder('=') if dt.byteorder in '<>' else dt
    LazyArray.__init__(self, blob, 0, shape, strides, native)


def _np_reconstruct(*args):
  if len(args) != 3 or not isinstance(args[0], _Marker) or args[0].qualname != 'numpy.ndarray':
    raise _bad('numpy _reconstruct with unsupported arguments')
  stub = _NdarrayStub(None, 0, (0,), (1,), np.uint8)
  ctx = _CTX.get(None)
  if ctx is not None:
    ctx.ndarray_stubs.append(stub)
  return stub


_TENSOR_REBUILDERS = {
  'torch._utils._rebuild_tensor': _rebuild_tensor,
  'torch._utils._rebuild_tensor_v2': _rebuild_tensor_v2,
  'torch._utils._rebuild_tensor_v3': _rebuild_tensor_v3,
  'torch._utils._rebuild_parameter': _rebuild_parameter,
  'torch._utils._rebuild_parameter_with_state': _rebuild_parameter_with_state,
}


def _build_allow_list() -> dict[str, Any]:
  allowed: dict[str, Any] = {}
  fns = dict(_TENSOR_REBUILDERS)
  fns.update({
    'torch._tensor._rebuild_from_type_v2': _rebuild_from_type_v2,
    'collections.OrderedDict': _ordered_dict,
    'torch.Size': _torch_size,
    'torch.device': _torch_device,
    '_codecs.encode': _codecs_encode,
    'builtins.bytes': _builtin_bytes,
    'builtins.bytearray': _builtin_bytearray,
    'builtins.set': _builtin_set,
    'builtins.frozenset': _builtin_frozenset,
    'builtins.complex': _builtin_complex,
    'builtins.slice': _builtin_slice,
    'numpy.dtype': _np_dtype,
    'numpy.core.multiarray.scalar': _np_scalar,
    'numpy._core.multiarray.scalar': _np_scalar,
    'numpy.core.multiarray._reconstruct': _np_reconstruct,
    'numpy._core.multiarray._reconstruct': _np_reconstruct,
  })
  for q, fn in fns.items():
    allowed[q] = _StandInFunction(q, fn)
  allowed['numpy.ndarray'] = _Marker('numpy.ndarray')
  allowed.update(_TENSOR_TYPE_MARKERS)
  for name, dt in _TORCH_DTYPES.items():
    allowed[f'torch.{name}'] = _TorchDtypeMarker(f'torch.{name}', dt)
  for name, dt in _STORAGE_DTYPES.items():
    for mod in ('torch', 'torch.cuda'):
      allowed[f'{mod}.{name}'] = _StorageTypeMarker(f'{mod}.{name}', dt)
  untyped = _StorageTypeMarker('torch.UntypedStorage', np.dtype(np.uint8))
  allowed['torch.UntypedStorage'] = untyped
  allowed['torch.storage.UntypedStorage'] = untyped
  return allowed


_ALLOWED_GLOBALS: dict[str, Any] = _build_allow_list()

# Python-2 module names that protocol <= 2 pickles use.
_PY2_MODULES = {'__builtin__': 'builtins'}


class _RestrictedUnpickler(pickle.Unpickler):
  """Unpickler that only resolves allow-listed globals, to inert stand-ins."""

  def __init__(self, file, source: str, persistent_load=None):
    super().__init__(file, encoding='utf-8')
    self._source = source
    self._persistent = persistent_load

  def find_class(self, module: str, name: str):
    mod = _PY2_MODULES.get(module, module)
    obj = _ALLOWED_GLOBALS.get(f'{mod}.{name}')
    if obj is None:
      raise UnsafeCheckpointError(
        f"{self._source}: refusing to load global '{module}.{name}': it is not on the "
        'allow-list of tensor/container types, and unpickling it could execute code. '
        'If this checkpoint pickles a whole model object or custom classes, load it once '
        'with PyTorch in a trusted environment and re-save model.state_dict().'
      )
    return obj

  def persistent_load(self, pid):
    if self._persistent is None:
      raise CheckpointError(f'{self._source}: unexpected persistent id in pickle')
    return self._persistent(pid)


def _ascii(x) -> str:
  if isinstance(x, bytes):
    return x.decode('ascii')
  if not isinstance(x, str):
    raise _bad(f'expected a string in a persistent id, got {type(x).__name__}')
  return x


def _storage_type_dtype(stype) -> np.dtype:
  if not isinstance(stype, _StorageTypeMarker):
    raise _bad(f'persistent id with invalid storage type {stype!r}')
  return stype.dtype


def _validate_tensors(ctx: _LoadContext) -> None:
  for arr, storage in ctx.tensors:
    blob = storage.blob
    if blob.nbytes is None or (isinstance(blob, _FileBlob) and blob.offset is None):
      raise _bad(f'storage {storage.key!r} has no data in the file')
    if storage.byte_offset + storage.nbytes > blob.nbytes:
      raise _bad(
        f'storage {storage.key!r} needs {storage.byte_offset + storage.nbytes} bytes but '
        f'only {blob.nbytes} are present (truncated file?)'
      )
    if arr.size:
      end = arr._offset + arr._extent_bytes()
      if arr._offset < storage.byte_offset or end > storage.byte_offset + storage.nbytes:
        raise _bad(
          f'tensor of shape {arr.shape} (strides {arr._strides}) reaches outside its '
          f'storage {storage.key!r} ({storage.nbytes} bytes)'
        )
  for stub in ctx.ndarray_stubs:
    if stub._blob is None:
      raise _bad('a pickled numpy array never received its data')
  ctx.tensors.clear()


def _unpickle(data_or_file, source: str, persistent_load=None) -> Any:
  f = io.BytesIO(data_or_file) if isinstance(data_or_file, (bytes, bytearray)) else data_or_file
  return _RestrictedUnpickler(f, source, persistent_load).load()


# --------------------------------------------------------------------------------------------------
# Format: PyTorch zip
# --------------------------------------------------------------------------------------------------


def _member_data_offset(raw, info: zipfile.ZipInfo, file_size: int, source: str) -> int:
  raw.seek(info.header_offset)
  hdr = raw.read(30)
  if len(hdr) != 30 or hdr[:4] != b'PK\x03\x04':
    raise _bad(f'bad local zip header for member {info.filename!r}')
  name_len, extra_len = struct.unpack('<HH', hdr[26:30])
  off = info.header_offset + 30 + name_len + extra_len
  if off + info.file_size > file_size:
    raise _bad(f'member {info.filename!r} extends past the end of the file (truncated?)')
  return off


def _read_torch_zip(path: str, zf: zipfile.ZipFile, file_size: int, source: str,
                    pkl_name: str) -> Any:
  prefix = pkl_name[: -len('data.pkl')]
  infos = {i.filename: i for i in zf.infolist()}
  if prefix + 'constants.pkl' in infos or any(n.startswith(prefix + 'code/') for n in infos):
    raise _bad(
      'this is a TorchScript archive (torch.jit.save), which is not supported; '
      "save the model's state_dict() with torch.save instead"
    )
  big_endian = False
  if prefix + 'byteorder' in infos:
    bo = zf.read(prefix + 'byteorder').strip()
    if bo == b'big':
      big_endian = True
    elif bo != b'little':
      raise _bad(f'unknown byteorder record {bo[:20]!r}')
  data_pkl = zf.read(pkl_name)
  blobs: dict[str, Any] = {}

  with open(path, 'rb') as raw:

    def blob_for(key: str):
      if key in blobs:
        return blobs[key]
      name = f'{prefix}data/{key}'
      info = infos.get(name)
      if info is None:
        raise _bad(f'storage {key!r} is referenced but member {name!r} is missing')
      if info.flag_bits & 0x1:
        raise _bad(f'member {name!r} is encrypted')
      if info.compress_type == zipfile.ZIP_STORED:
        off = _member_data_offset(raw, info, file_size, source)
        blob = _FileBlob(path, off, info.file_size, big_endian)
      else:
        blob = _ZipMemberBlob(path, name, 0, info.file_size, big_endian)
      blobs[key] = blob
      return blob

    def persistent_load(pid):
      if not isinstance(pid, tuple) or len(pid) != 5:
        raise _bad(f'invalid persistent id {pid!r:.200}')
      typename, stype, key, location, numel = pid
      if _ascii(typename) != 'storage':
        raise _bad(f'unsupported persistent id type {typename!r:.50}')
      dt = _storage_type_dtype(stype)
      key = _ascii(key)
      _ascii(location)
      if not _is_int(numel) or numel < 0:
        raise _bad(f'invalid storage size {numel!r}')
      return _Storage(blob_for(key), 0, numel * dt.itemsize, dt, key)

    ctx = _LoadContext(source)
    token = _CTX.set(ctx)
    try:
      obj = _unpickle(data_pkl, source, persistent_load)
      _validate_tensors(ctx)
    finally:
      _CTX.reset(token)
  return obj


# --------------------------------------------------------------------------------------------------
# Format: legacy PyTorch (torch < 1.6)
# --------------------------------------------------------------------------------------------------

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001


def _read_legacy(path: str, file_size: int, source: str) -> Any:
  roots: dict[str, tuple[_FileBlob, np.dtype, int]] = {}

  def persistent_load(pid):
    if not isinstance(pid, tuple) or not pid:
      raise _bad(f'invalid persistent id {pid!r:.200}')
    typename = _ascii(pid[0])
    if typename == 'module':
      raise UnsafeCheckpointError(
        f'{source}: the checkpoint pickles a whole nn.Module, which cannot be loaded '
        'safely; re-save model.state_dict() with PyTorch'
      )
    if typename != 'storage' or len(pid) != 6:
      raise _bad(f'unsupported persistent id {pid!r:.200}')
    _, stype, root_key, location, numel, view_metadata = pid
    dt = _storage_type_dtype(stype)
    root_key = _ascii(root_key)
    _ascii(location)
    if not _is_int(numel) or numel < 0:
      raise _bad(f'invalid storage size {numel!r}')
    if root_key in roots:
      blob, rdt, rnumel = roots[root_key]
      if rdt != dt:
        raise _bad(f'storage {root_key!r} is used with two dtypes')
    else:
      blob = _FileBlob(path, None, None)
      roots[root_key] = (blob, dt, numel)
      rnumel = numel
    if view_metadata is None:
      return _Storage(blob, 0, rnumel * dt.itemsize, dt, root_key)
    if (not isinstance(view_metadata, tuple) or len(view_metadata) != 3
        or not _is_int(view_metadata[1]) or not _is_int(view_metadata[2])
        or view_metadata[1] < 0 or view_metadata[2] < 0):
      raise _bad(f'invalid storage view metadata {view_metadata!r:.200}')
    _, off, vsize = view_metadata
    return _Storage(blob, off * dt.itemsize, vsize * dt.itemsize, dt, root_key)

  ctx = _LoadContext(source)
  with open(path, 'rb') as f:
    magic = _unpickle(f, source)
    if magic != _LEGACY_MAGIC:
      raise _bad(
        'a pickle file, but not a torch.save checkpoint (wrong magic number); '
        'plain pickles are not supported'
      )
    proto = _unpickle(f, source)
    if proto != _LEGACY_PROTOCOL:
      raise _bad(f'unsupported legacy protocol version {proto!r}')
    sys_info = _unpickle(f, source)
    if not isinstance(sys_info, dict):
      raise _bad('invalid sys_info record')
    token = _CTX.set(ctx)
    try:
      obj = _unpickle(f, source, persistent_load)
    finally:
      _CTX.reset(token)
    keys = _unpickle(f, source)
    if not isinstance(keys, list):
      raise _bad('invalid storage key list')
    offset = f.tell()
    for key in keys:
      key = _ascii(key)
      if key not in roots:
        raise _bad(f'storage key {key!r} was never referenced')
      blob, dt, numel = roots[key]
      head = f.read(8)
      if len(head) != 8:
        raise _bad(f'file ends before the data of storage {key!r} (truncated?)')
      n_le = struct.unpack('<q', head)[0]
      n_be = struct.unpack('>q', head)[0]
      # Sizes are native-endian in files written on big-endian hosts; the data itself is
      # always little-endian in this format.
      n = n_le if n_le == numel or n_be != numel else n_be
      if n < 0:
        raise _bad(f'invalid size record for storage {key!r}')
      blob.offset = offset + 8
      blob.nbytes = n * dt.itemsize
      offset = blob.offset + blob.nbytes
      if offset > file_size:
        raise _bad(f'file ends inside the data of storage {key!r} (truncated?)')
      f.seek(offset)
  for key, (blob, _, _) in roots.items():
    if blob.offset is None:
      raise _bad(f'storage {key!r} has no data in the file')
  _validate_tensors(ctx)
  return obj


# --------------------------------------------------------------------------------------------------
# Format: safetensors
# --------------------------------------------------------------------------------------------------


def _read_safetensors(path: str, file_size: int, source: str) -> dict[str, Any]:
  with open(path, 'rb') as f:
    (n,) = struct.unpack('<Q', f.read(8))
    if n > file_size - 8:
      raise _bad('safetensors header length exceeds the file size (truncated?)')
    header_bytes = f.read(n)
  try:
    header = json.loads(header_bytes.decode('utf-8'))
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    raise _bad(f'invalid safetensors JSON header ({e})') from e
  if not isinstance(header, dict):
    raise _bad('safetensors header is not a JSON object')
  data_start = 8 + n
  blob = _FileBlob(path, data_start, file_size - data_start)
  out: dict[str, Any] = {}
  for name, info in header.items():
    if name == '__metadata__':
      continue
    if not isinstance(info, dict):
      raise _bad(f'safetensors entry {name!r} is not an object')
    dt = _SAFETENSORS_DTYPES.get(info.get('dtype'), 'missing')
    if dt == 'missing' or dt is None:
      raise _bad(f"safetensors tensor {name!r} has unsupported dtype {info.get('dtype')!r}")
    shape = info.get('shape')
    offs = info.get('data_offsets')
    if (not isinstance(shape, list) or not all(_is_int(v) and v >= 0 for v in shape)
        or not isinstance(offs, list) or len(offs) != 2
        or not all(_is_int(v) for v in offs)):
      raise _bad(f'safetensors tensor {name!r} has an invalid shape/data_offsets')
    begin, end = offs
    if not (0 <= begin <= end <= blob.nbytes):
      raise _bad(f'safetensors tensor {name!r} lies outside the file (truncated?)')
    if end - begin != math.prod(shape) * dt.itemsize:
      raise _bad(f'safetensors tensor {name!r}: data size does not match shape and dtype')
    out[name] = LazyArray(blob, begin, tuple(shape), _c_strides(tuple(shape)), dt)
  return out


# --------------------------------------------------------------------------------------------------
# Format: npz
# --------------------------------------------------------------------------------------------------


def _read_npy_header(fp) -> tuple[tuple[int, ...], bool, np.dtype]:
  version = np.lib.format.read_magic(fp)
  if version == (1, 0):
    return np.lib.format.read_array_header_1_0(fp)
  if version == (2, 0):
    return np.lib.format.read_array_header_2_0(fp)
  if version == (3, 0):
    hlen = struct.unpack('<I', fp.read(4))[0]
    if hlen > 1 << 20:
      raise _bad('npy header too large')
    d = ast.literal_eval(fp.read(hlen).decode('utf-8'))
    if not isinstance(d, dict) or set(d) != {'descr', 'fortran_order', 'shape'}:
      raise _bad('invalid npy header')
    return tuple(d['shape']), bool(d['fortran_order']), np.lib.format.descr_to_dtype(d['descr'])
  raise _bad(f'unsupported npy version {version}')


def _read_npz(path: str, zf: zipfile.ZipFile, file_size: int, source: str) -> dict[str, Any]:
  out: dict[str, Any] = {}
  with open(path, 'rb') as raw:
    for info in zf.infolist():
      if info.is_dir():
        continue
      if not info.filename.endswith('.npy'):
        raise _bad(f'npz member {info.filename!r} is not a .npy array')
      name = info.filename[: -len('.npy')]
      with zf.open(info) as fp:
        shape, fortran, dt = _read_npy_header(fp)
        skip = fp.tell()
      if dt.hasobject or dt.fields is not None or dt.subdtype is not None:
        raise _bad(f'npz array {name!r} has a non-plain dtype {dt} (pickle not allowed)')
      shape = tuple(int(v) for v in shape)
      nbytes = math.prod(shape) * dt.itemsize
      if skip + nbytes > info.file_size:
        raise _bad(f'npz member {info.filename!r} is truncated')
      big = dt.byteorder == '>'
      native = dt.newbyteorder('=') if dt.byteorder in '<>' else dt
      if info.compress_type == zipfile.ZIP_STORED and not info.flag_bits & 0x1:
        off = _member_data_offset(raw, info, file_size, source) + skip
        blob = _FileBlob(path, off, nbytes, big)
      else:
        blob = _ZipMemberBlob(path, info.filename, skip, nbytes, big)
      strides = _c_strides(shape) if not fortran else tuple(reversed(_c_strides(shape[::-1])))
      out[name] = LazyArray(blob, 0, shape, strides, native)
  return out


# --------------------------------------------------------------------------------------------------
# Detection and public entry points
# --------------------------------------------------------------------------------------------------


def _read_zip(path: str, file_size: int, source: str) -> Any:
  try:
    zf = zipfile.ZipFile(path)
  except zipfile.BadZipFile as e:
    raise _bad(f'damaged or truncated zip archive ({e})') from e
  with zf:
    names = zf.namelist()
    pkls = [n for n in names if n == 'data.pkl' or (n.endswith('/data.pkl') and n.count('/') == 1)]
    if len(pkls) == 1:
      return _read_torch_zip(path, zf, file_size, source, pkls[0])
    if len(pkls) > 1:
      raise _bad(f'zip archive with several data.pkl records: {pkls[:5]}')
    files = [n for n in names if not n.endswith('/')]
    if files and all(n.endswith('.npy') for n in files):
      return _read_npz(path, zf, file_size, source)
    if any(n.endswith('constants.pkl') for n in names):
      raise _bad('this is a TorchScript archive (torch.jit.save), which is not supported')
    raise _bad(
      'a zip archive, but neither a torch.save checkpoint (no <name>/data.pkl) nor an .npz '
      f"(members: {names[:8]}{' ...' if len(names) > 8 else ''})"
    )


def _detect(head: bytes, file_size: int) -> str | None:
  if head[:4] in (b'PK\x03\x04', b'PK\x05\x06'):
    return 'zip'
  if len(head) >= 9:  # before pickles: a header of 0x280 bytes also starts with 80 02
    (n,) = struct.unpack('<Q', head[:8])
    if 2 <= n <= file_size - 8 and head[8:9] == b'{':
      return 'safetensors'
  if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
    return 'pickle'
  if len(head) >= 262 and head[257:262] == b'ustar':
    return 'tar'
  if head[:6] == b'\x93NUMPY':
    return 'npy'
  return None


def read_checkpoint(path: str | os.PathLike) -> Any:
  """Read a checkpoint file safely and return its object tree.

  The result is made of dict/OrderedDict/list/tuple/set/str/bytes/int/float/bool/None (and the
  odd numpy scalar), with every tensor as a :class:`LazyArray`; ``np.asarray(x)`` materialises
  one (see the module docstring).  For safetensors and npz files the tree is a flat
  ``{name: LazyArray}`` dict.  Raises :class:`CheckpointError` (or its subclass
  :class:`UnsafeCheckpointError`) for anything unreadable, unsupported or unsafe.
  """
  path = os.fspath(path)
  source = str(path)
  try:
    with open(path, 'rb') as f:
      file_size = os.fstat(f.fileno()).st_size
      head = f.read(512)
  except OSError as e:
    raise CheckpointError(f'{source}: cannot open checkpoint: {e.strerror or e}') from e
  if file_size == 0:
    raise CheckpointError(f'{source}: file is empty, not a checkpoint')
  fmt = _detect(head, file_size)
  if fmt is None:
    raise CheckpointError(
      f'{source}: not a recognised checkpoint format (expected a PyTorch zip or legacy '
      f'checkpoint, .safetensors or .npz); first bytes: {head[:16]!r}'
    )
  if fmt == 'tar':
    raise CheckpointError(
      f'{source}: a tar archive (the torch < 0.4 checkpoint format?), which is not supported'
    )
  if fmt == 'npy':
    raise CheckpointError(f'{source}: a single .npy array, not a checkpoint (use numpy.load)')
  readers = {'zip': _read_zip, 'pickle': _read_legacy, 'safetensors': _read_safetensors}
  try:
    return readers[fmt](path, file_size, source)
  except CheckpointError as e:
    raise _with_source(e, source) from None
  except RecursionError as e:
    raise CheckpointError(f'{source}: pickle nested too deeply') from e
  except Exception as e:  # corrupt input: never leak a raw traceback from deep inside
    what = {'zip': 'zip', 'pickle': 'legacy pickle', 'safetensors': 'safetensors'}[fmt]
    raise CheckpointError(
      f'{source}: corrupt or unsupported {what} checkpoint ({type(e).__name__}: {e})'
    ) from e


def read_state_dict(path: str | os.PathLike, *, key: str | None = None) -> dict[str, np.ndarray]:
  """``unwrap_state_dict(read_checkpoint(path), key=key)``: a flat ``{name: LazyArray}`` dict.

  Values are :class:`LazyArray` objects (``np.asarray`` materialises them).
  """
  return unwrap_state_dict(read_checkpoint(path), key=key, source=str(os.fspath(path)))


# --------------------------------------------------------------------------------------------------
# Unwrapping containers into a flat state dict
# --------------------------------------------------------------------------------------------------

_PLAIN_WRAPPERS = ('state_dict', 'model_state_dict', 'model', 'net')
_LIGHTNING_PREFIXES = ('net.', 'model.')


def _is_tensor(v) -> bool:
  return isinstance(v, (LazyArray, np.ndarray))


def _has_tensors(m) -> bool:
  return isinstance(m, Mapping) and any(_is_tensor(v) for v in m.values())


def _looks_like_wrapper(m) -> bool:
  return isinstance(m, Mapping) and any(
    k in m and isinstance(m[k], Mapping) for k in ('params', 'params_ema', *_PLAIN_WRAPPERS)
  )


def _describe_keys(obj: Mapping, limit: int = 30) -> str:
  parts = []
  for i, (k, v) in enumerate(obj.items()):
    if i == limit:
      parts.append(f'... ({len(obj) - limit} more)')
      break
    if _is_tensor(v):
      t = f'tensor {tuple(v.shape)} {v.dtype}'
    elif isinstance(v, Mapping):
      n = sum(1 for x in v.values() if _is_tensor(x))
      t = f'{type(v).__name__} of {len(v)}, {n} tensors' if n else f'{type(v).__name__} of {len(v)}'
    elif isinstance(v, (list, tuple)):
      t = f'{type(v).__name__} of {len(v)}'
    else:
      t = type(v).__name__
    parts.append(f'{k!r} ({t})')
  return ', '.join(parts) if parts else '(none)'


def _strip_prefix(keys: list[str], prefix: str) -> list[str] | None:
  if keys and all(k.startswith(prefix) for k in keys):
    return [k[len(prefix):] for k in keys]
  return None


def _finish(sd: Mapping, lightning: bool, source: str, where: str) -> dict[str, Any]:
  items = [(k, v) for k, v in sd.items() if isinstance(k, str) and _is_tensor(v)]
  if not items:
    raise CheckpointError(
      f'{source}: {where} holds no tensors; its keys: {_describe_keys(sd)}'
    )
  keys = [k for k, _ in items]
  if lightning:
    for p in _LIGHTNING_PREFIXES:
      stripped = _strip_prefix(keys, p)
      if stripped is not None:
        keys = stripped
        break
  stripped = _strip_prefix(keys, 'module.')
  if stripped is not None:
    keys = stripped
  out = dict(zip(keys, (v for _, v in items)))
  if len(out) != len(items):
    raise CheckpointError(f'{source}: {where}: stripping a key prefix made names collide')
  return out


def _select(obj: Mapping, name: str, source: str, depth: int) -> dict[str, Any]:
  inner = obj[name]
  where = f'entry {name!r}'
  if not isinstance(inner, Mapping):
    raise CheckpointError(
      f'{source}: {where} is a {type(inner).__name__}, not a state dict'
    )
  if not _has_tensors(inner) and _looks_like_wrapper(inner) and depth < 4:
    return _unwrap(inner, None, source, depth + 1)
  return _finish(inner, lightning=(name == 'state_dict'), source=source, where=where)


def _unwrap(obj: Any, key: str | None, source: str, depth: int) -> dict[str, Any]:
  if not isinstance(obj, Mapping):
    raise CheckpointError(
      f'{source}: the checkpoint holds a {type(obj).__name__}, not a mapping of tensors'
    )
  if key is not None:
    if key not in obj:
      raise CheckpointError(
        f'{source}: key {key!r} not found; available keys: {_describe_keys(obj)}'
      )
    return _select(obj, key, source, depth)
  is_map = {k: isinstance(obj.get(k), Mapping) for k in ('params', 'params_ema', *_PLAIN_WRAPPERS)}
  # KAIR / BasicSR / SwinIR: prefer the EMA weights when both are present.
  if is_map['params_ema']:
    return _select(obj, 'params_ema', source, depth)
  if is_map['params']:
    return _select(obj, 'params', source, depth)
  for name in _PLAIN_WRAPPERS:
    if is_map[name] and (_has_tensors(obj[name]) or _looks_like_wrapper(obj[name])):
      return _select(obj, name, source, depth)
  nested = [k for k, v in obj.items() if _has_tensors(v)]
  if _has_tensors(obj) and not nested:
    return _finish(obj, lightning=False, source=source, where='the checkpoint')
  raise CheckpointError(
    f'{source}: no state dict found (pass key=... to pick one); top-level keys: '
    f'{_describe_keys(obj)}'
  )


def unwrap_state_dict(obj: Any, *, key: str | None = None,
                      source: str = '<checkpoint>') -> dict[str, np.ndarray]:
  """Turn a loaded checkpoint into a flat ``{name: array}`` dict (values may be LazyArrays).

  Rules, in order:

  * ``key`` given: use ``obj[key]`` (a :class:`CheckpointError` lists the available keys if it is
   missing); the Lightning prefix rule applies when ``key == 'state_dict'``.
  * KAIR/BasicSR/SwinIR ``{'params': sd}`` / ``{'params_ema': sd}``: when both are present
   ``'params_ema'`` is used (as SwinIR's real-SR test code does for its GAN models); otherwise
   the one present.  Pass ``key='params'`` to get the non-EMA weights.
  * Plain wrappers ``{'state_dict' | 'model_state_dict' | 'model' | 'net': sd, ...}`` (first match
   in that order).  For ``'state_dict'`` (PyTorch Lightning) a ``net.`` or ``model.`` prefix
   is stripped when every tensor key has it.  A wrapper holding another wrapper is unwrapped
   again.
  * Otherwise ``obj`` itself must be a bare state dict (a mapping with tensor values and no
   nested mappings of tensors).  A ``model.`` prefix is *not* stripped here (KAIR's DnCNN
   really names its layers ``model.0.weight``).

  In every case non-tensor entries (``_metadata``, ints, nested non-tensor dicts) are dropped,
  order is kept, and a ``module.`` prefix (``nn.DataParallel``) on every key is stripped.
  """
  return _unwrap(obj, key, source, 0)
