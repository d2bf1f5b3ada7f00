"""Tests for the torch-free, code-free checkpoint reader `jaxrestore.convert.torch_checkpoint`.

torch is only used here to WRITE checkpoints and as the reference reader
(`torch.load(weights_only=True)`).
"""
from __future__ import annotations

import collections
import gc
import json
import os
import pickle
import pickletools
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

from jaxrestore.convert import torch_checkpoint as tc
from jaxrestore.convert.torch_checkpoint import (
    CheckpointError, LazyArray, UnsafeCheckpointError, read_checkpoint, read_state_dict,
    unwrap_state_dict)

import torch  # noqa: E402  (test extra)

FORMATS = ['zip', 'legacy']


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------


def _save(obj, path: Path, fmt: str) -> Path:
  torch.save(obj, path, _use_new_zipfile_serialization=(fmt == 'zip'))
  return path


def _torch_to_numpy(t) -> np.ndarray:
  t = t.detach().resolve_conj().resolve_neg().contiguous()
  special = {torch.bfloat16: (torch.int16, ml_dtypes.bfloat16),
             torch.float8_e4m3fn: (torch.uint8, ml_dtypes.float8_e4m3fn),
             torch.float8_e5m2: (torch.uint8, ml_dtypes.float8_e5m2)}
  if t.dtype in special:
    as_int, np_dtype = special[t.dtype]
    return t.view(as_int).numpy().view(np_dtype)
  return t.numpy()


def _assert_same_array(ours, ref, where: str = '') -> None:
  assert isinstance(ours, LazyArray), (where, type(ours))
  expected = _torch_to_numpy(ref)
  assert ours.shape == tuple(ref.shape), where
  assert ours.dtype == expected.dtype, (where, ours.dtype, expected.dtype)
  got = np.asarray(ours)
  assert type(got) is np.ndarray and got.flags.c_contiguous and got.dtype == expected.dtype, where
  assert got.shape == expected.shape, where
  # Bitwise: NaNs, -0.0 and infinities must survive.
  assert got.tobytes() == expected.tobytes(), where


def _assert_same_tree(ours, ref, where: str = 'root') -> None:
  if isinstance(ref, torch.Tensor):
    _assert_same_array(ours, ref, where)
  elif isinstance(ref, dict):
    assert isinstance(ours, dict), (where, type(ours))
    ordered = collections.OrderedDict
    assert isinstance(ours, ordered) == isinstance(ref, ordered), where
    assert list(ours.keys()) == list(ref.keys()), where
    assert getattr(ours, '_metadata', None) == getattr(ref, '_metadata', None), where
    for k in ref:
      _assert_same_tree(ours[k], ref[k], f'{where}/{k}')
  elif isinstance(ref, torch.Size):
    assert ours == tuple(ref), where
  elif isinstance(ref, (list, tuple)):
    assert type(ours) is type(ref) and len(ours) == len(ref), where
    for i, (a, b) in enumerate(zip(ours, ref)):
      _assert_same_tree(a, b, f'{where}[{i}]')
  elif isinstance(ref, torch.dtype):
    raise AssertionError(f'{where}: dtype objects are not compared')
  else:
    same = ours == ref or (ours != ours and ref != ref)  # NaN == NaN here
    assert type(ours) is type(ref) and same, (where, ours, ref)


def _check_against_torch(path: Path):
  ours = read_checkpoint(path)
  ref = torch.load(path, weights_only=True, map_location='cpu')
  _assert_same_tree(ours, ref)
  return ours, ref


# Hand-assembled pickles (for checkpoints torch would never write).
def _frag(obj) -> bytes:
  """Protocol-2 opcodes pushing `obj` (no PROTO header, no STOP, no memo puts)."""
  return pickletools.optimize(pickle.dumps(obj, protocol=2))[2:-1]


def _global(module: str, name: str) -> bytes:
  return b'c' + f'{module}\n{name}\n'.encode()


def _pid(stype: str, key: str, numel: int, *, legacy_view=False, view=None) -> bytes:
  body = (b'(' + _frag('storage') + _global('torch', stype) + _frag(key) + _frag('cpu')
          + _frag(numel))
  if legacy_view:
    body += _frag(view)
  return body + b'tQ'


def _tensor_op(pid: bytes, offset: int, size, stride) -> bytes:
  return (_global('torch._utils', '_rebuild_tensor_v2') + b'(' + pid + _frag(offset)
          + _frag(tuple(size)) + _frag(tuple(stride)) + b'\x89'
          + _global('collections', 'OrderedDict') + b')R' + b'tR')


def _dict_op(items: dict[str, bytes]) -> bytes:
  return b'}(' + b''.join(_frag(k) + v for k, v in items.items()) + b'u'


def _pickle(body: bytes) -> bytes:
  return b'\x80\x02' + body + b'.'


def _write_torch_zip(path: Path, data_pkl: bytes, storages: dict[str, bytes], *,
                     byteorder: str | None = 'little', compress: int = zipfile.ZIP_STORED) -> Path:
  with zipfile.ZipFile(path, 'w') as zf:
    zf.writestr('archive/data.pkl', data_pkl)
    if byteorder is not None:
      zf.writestr('archive/byteorder', byteorder)
    for key, data in storages.items():
      zf.writestr(f'archive/data/{key}', data, compress_type=compress)
    zf.writestr('archive/version', '3\n')
  return path


def _write_legacy(path: Path, main_pkl: bytes, storages: dict[str, tuple[int, bytes]]) -> Path:
  sys_info = {'protocol_version': 1001, 'little_endian': True,
              'type_sizes': {'short': 2, 'int': 4, 'long': 4}}
  with open(path, 'wb') as f:
    f.write(pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2))
    f.write(pickle.dumps(1001, protocol=2))
    f.write(pickle.dumps(sys_info, protocol=2))
    f.write(main_pkl)
    f.write(pickle.dumps(list(storages), protocol=2))
    for numel, data in storages.values():
      f.write(struct.pack('<q', numel) + data)
  return path


def _vm_rss() -> int:
  with open('/proc/self/status') as f:
    for line in f:
      if line.startswith('VmRSS:'):
        return int(line.split()[1]) * 1024
  raise RuntimeError('no VmRSS')


# ------------------------------------------------------------------------------------------------
# round trips against torch.save / torch.load
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize('fmt', FORMATS)
def test_dtypes_round_trip(tmp_path, fmt):
  g = torch.Generator().manual_seed(0)
  base = torch.randn(3, 5, generator=g)
  base[0, 0], base[0, 1], base[0, 2], base[0, 3] = float('nan'), float('inf'), -0.0, -float('inf')
  obj = {
      'f32': base,
      'f16': base.half(),
      'bf16': base.bfloat16(),
      'f64': base.double() / 3,
      'i64': torch.randint(-2**62, 2**62, (4, 2), generator=g, dtype=torch.int64),
      'i32': torch.randint(-2**31, 2**31 - 1, (7,), generator=g, dtype=torch.int32),
      'i16': torch.tensor([-3, 300], dtype=torch.int16),
      'i8': torch.tensor([-128, 127], dtype=torch.int8),
      'u8': torch.randint(0, 256, (2, 3, 4), generator=g, dtype=torch.uint8),
      'bool': torch.tensor([[True, False], [False, True]]),
      'c64': torch.randn(3, dtype=torch.complex64, generator=g),
  }
  path = _save(obj, tmp_path / f'dtypes_{fmt}.pth', fmt)
  ours, _ = _check_against_torch(path)
  assert ours['bf16'].dtype == np.dtype(ml_dtypes.bfloat16)
  assert ours['f16'].dtype == np.float16


@pytest.mark.parametrize('fmt', FORMATS)
def test_non_contiguous_shared_and_degenerate(tmp_path, fmt):
  big = torch.arange(60, dtype=torch.float32).reshape(6, 10)
  conv = torch.randn(4, 3, 3, 3)
  obj = {
      'transposed': big.t(),
      'offset_slice': big[2:5, 3:7],
      'column': big[:, 4],
      'view_a': big[1],
      'view_b': big[4:, ::3],
      'expanded': torch.tensor([1.0, 2.0]).expand(3, 2),
      'channels_last': conv.to(memory_format=torch.channels_last),
      'scalar': torch.tensor(3.5),
      'scalar_view': big[2, 3],
      'empty': torch.zeros(0, 3),
      'empty_offset': big[6:, :],
      'empty_1d': torch.tensor([], dtype=torch.int64),
      'half_view': big.half()[::2, 1::2],
  }
  path = _save(obj, tmp_path / f'views_{fmt}.pth', fmt)
  ours, ref = _check_against_torch(path)
  assert ours['scalar'].shape == () and np.asarray(ours['scalar']) == np.float32(3.5)
  assert ours['empty'].shape == (0, 3) and np.asarray(ours['empty']).shape == (0, 3)
  # Views of one storage stay views of one storage in the file: nothing was duplicated.
  assert ours['view_a']._blob is ours['view_b']._blob is ours['transposed']._blob


@pytest.mark.parametrize('fmt', FORMATS)
def test_nested_containers_and_module_state_dict(tmp_path, fmt):
  nn = torch.nn
  net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Linear(2, 2))
  obj = collections.OrderedDict(
      model=net.state_dict(),
      params=[net[0].weight, (net[2].bias, 'text', None)],
      epoch=7, lr=1e-4, name='ünïcode', flag=True, nothing=None,
      nested={'a': {'b': [1, 2.5, (3, 'x')]}, 'size': torch.Size([2, 3])},
      param=torch.nn.Parameter(torch.ones(2, 2)),
  )
  path = _save(obj, tmp_path / f'nested_{fmt}.pth', fmt)
  ours, ref = _check_against_torch(path)
  assert isinstance(ours, collections.OrderedDict)
  assert ours['model']._metadata == ref['model']._metadata  # torch's per-module version record
  sd = unwrap_state_dict(ours, key='model')
  assert list(sd) == list(net.state_dict())


def test_zip_only_dtypes_and_metadata_bits(tmp_path):
  x = torch.randn(3, dtype=torch.complex64)
  obj = {
      'u16': torch.tensor([1, 2, 65535], dtype=torch.int32).to(torch.uint16),
      'u32': torch.tensor([1, 2**32 - 1], dtype=torch.int64).to(torch.uint32),
      'f8': torch.tensor([0.5, -2.0, 448.0]).to(torch.float8_e4m3fn),
      'f8b': torch.tensor([0.5, -2.0]).to(torch.float8_e5m2),
      'conj': x.conj(),
      'neg': torch.randn(4)._neg_view(),
  }
  a = torch.randn(2)
  a.extra_attribute = 3  # pickled through torch._tensor._rebuild_from_type_v2
  obj['with_attr'] = a
  path = _save(obj, tmp_path / 'v3.pth', 'zip')
  _check_against_torch(path)


def test_big_endian_zip_is_byteswapped(tmp_path):
  obj = {'f': torch.randn(3, 4), 'h': torch.randn(5).half(), 'b': torch.randn(2).bfloat16(),
         'c': torch.randn(2, dtype=torch.complex128), 'i': torch.arange(6).reshape(2, 3).t(),
         'u': torch.arange(5, dtype=torch.uint8)}
  little = _save(obj, tmp_path / 'little.pth', 'zip')
  itemsizes = {}
  with zipfile.ZipFile(little) as zf:
    data_pkl = next(zf.read(n) for n in zf.namelist() if n.endswith('/data.pkl'))
    keys = sorted(n.rsplit('/', 1)[1] for n in zf.namelist() if '/data/' in n)
    raw = {k: zf.read(next(n for n in zf.namelist() if n.endswith(f'/data/{k}'))) for k in keys}
  for name, t in obj.items():  # storage keys are assigned in order of first appearance
    itemsizes[str(list(obj).index(name))] = (t.element_size(), t.is_complex())
  swapped = {}
  for k, data in raw.items():
    size, cplx = itemsizes[k]
    unit = size // 2 if cplx else size
    swapped[k] = np.frombuffer(data, dtype=f'<u{unit}').byteswap().tobytes() if unit > 1 else data
  big = _write_torch_zip(tmp_path / 'big.pth', data_pkl, swapped, byteorder='big')
  _check_against_torch(big)  # torch honours the byteorder record too
  ours = read_checkpoint(big)
  for name, t in obj.items():
    assert np.asarray(ours[name]).tobytes() == _torch_to_numpy(t).tobytes()


def test_compressed_zip_members_fall_back_to_reading(tmp_path):
  obj = {'w': torch.randn(8, 3), 'v': torch.arange(10)[2:8:2]}
  src = _save(obj, tmp_path / 'plain.pth', 'zip')
  dst = tmp_path / 'deflated.pth'
  with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, 'w', zipfile.ZIP_DEFLATED) as zout:
    for info in zin.infolist():
      zout.writestr(info.filename, zin.read(info))
  with zipfile.ZipFile(dst) as zf:
    assert all(i.compress_type == zipfile.ZIP_DEFLATED for i in zf.infolist())
  _check_against_torch(dst)


def test_legacy_storage_views_and_shared_root(tmp_path):
  # torch < 1.0 could pickle storage views: ('storage', type, root, loc, numel, (view, off, n)).
  data = np.arange(12, dtype=np.float32)
  root = _pid('FloatStorage', 'root', 12, legacy_view=True, view=None)
  view = _pid('FloatStorage', 'root', 12, legacy_view=True, view=('v1', 4, 6))
  main = _pickle(_dict_op({
      'whole': _tensor_op(root, 0, (3, 4), (4, 1)),
      'view': _tensor_op(view, 1, (2, 2), (1, 2)),
  }))
  path = _write_legacy(tmp_path / 'views.pth', main, {'root': (12, data.tobytes())})
  ours, _ = _check_against_torch(path)
  expected = np.lib.stride_tricks.as_strided(data[5:], (2, 2), (4, 8))  # view = root[4:10]
  np.testing.assert_array_equal(np.asarray(ours['view']), expected)


def test_numpy_objects_inside_a_checkpoint(tmp_path):
  obj = {'best_psnr': np.float64(31.25), 'step': np.int64(7),
         'arr': np.arange(6, dtype='>i4').reshape(2, 3),
         'farr': np.asfortranarray(np.arange(6, dtype=np.float32).reshape(2, 3)),
         'w': torch.ones(2)}
  path = _save(obj, tmp_path / 'np.pth', 'zip')
  ours = read_checkpoint(path)
  assert ours['best_psnr'] == 31.25 and type(ours['best_psnr']) is np.float64
  assert ours['step'] == 7 and type(ours['step']) is np.int64
  np.testing.assert_array_equal(np.asarray(ours['arr']), obj['arr'])
  assert np.asarray(ours['arr']).dtype == np.dtype('int32')
  np.testing.assert_array_equal(np.asarray(ours['farr']), obj['farr'])
  # Object arrays (which would need arbitrary pickles) are refused.
  bad = _save({'o': np.array([{'a': 1}], dtype=object)}, tmp_path / 'obj.pth', 'zip')
  with pytest.raises(CheckpointError, match='obj.pth'):
    read_checkpoint(bad)


# ------------------------------------------------------------------------------------------------
# real checkpoints
# ------------------------------------------------------------------------------------------------

REAL = {
    'checkpoints/dncnn_25.pth': ('model.0.weight', 'model.0.weight'),
    'checkpoints/saoyan_dncnn_s15.pth': ('module.dncnn.0.weight', 'dncnn.0.weight'),
    'checkpoints/saoyan_dncnn_s25.pth': ('module.dncnn.0.weight', 'dncnn.0.weight'),
    'golden/hair_small.pth': (None, None),
}


@pytest.mark.parametrize('rel', sorted(REAL))
def test_real_checkpoints_match_torch(data_dir, rel):
  path = data_dir / rel
  ours, ref = _check_against_torch(path)
  sd = read_state_dict(path)
  raw_first, first = REAL[rel]
  ref_sd = ref if 'state_dict' not in ref else ref['state_dict']
  if raw_first is not None:
    assert list(ref_sd)[0] == raw_first and list(sd)[0] == first
  assert len(sd) == len(ref_sd)
  for (k, v), (rk, rv) in zip(sd.items(), ref_sd.items()):
    assert rk.endswith(k)
    _assert_same_array(v, rv, k)


def test_golden_lightning_checkpoint_unwraps(data_dir):
  path = data_dir / 'golden' / 'hair_small.pth'
  sd = read_state_dict(path)
  ref = torch.load(path, weights_only=True, map_location='cpu')['state_dict']
  assert list(sd) == [k[len('net.'):] for k in ref]
  assert {v.dtype for v in sd.values()} == {np.dtype(np.float16)}
  assert sd['patch_embed.proj.weight'].shape == tuple(ref['net.patch_embed.proj.weight'].shape)


# ------------------------------------------------------------------------------------------------
# security
# ------------------------------------------------------------------------------------------------


class _Evil:

  def __init__(self, marker: Path):
    self.marker = marker

  def __reduce__(self):
    return (os.system, (f'touch {self.marker}',))


def _evil_pickle(marker: Path) -> bytes:
  return pickle.dumps({'weight': _Evil(marker)}, protocol=2)


def test_evil_payload_is_live(tmp_path):
  # Proves the payload used below really executes under plain pickle (in a throwaway process).
  marker = tmp_path / 'live_marker'
  payload = _evil_pickle(marker)
  subprocess.run([sys.executable, '-c', 'import pickle,sys; pickle.loads(sys.stdin.buffer.read())'],
                 input=payload, check=True)
  assert marker.exists()


@pytest.mark.parametrize('packing', ['raw_pickle', 'legacy', 'zip'])
def test_os_system_is_refused(tmp_path, packing):
  marker = tmp_path / 'pwned'
  payload = _evil_pickle(marker)
  path = tmp_path / f'evil_{packing}.pth'
  if packing == 'raw_pickle':
    path.write_bytes(payload)
  elif packing == 'legacy':
    _write_legacy(path, payload, {})
  else:
    _write_torch_zip(path, payload, {})
  with pytest.raises(UnsafeCheckpointError) as err:
    read_checkpoint(path)
  msg = str(err.value)
  assert 'posix.system' in msg or 'os.system' in msg
  assert path.name in msg
  assert not marker.exists()
  with pytest.raises(UnsafeCheckpointError):
    read_state_dict(path)
  assert not marker.exists()


@pytest.mark.parametrize('module,name', [
    ('builtins', 'eval'), ('builtins', 'exec'), ('__builtin__', 'eval'), ('subprocess', 'Popen'),
    ('torch._utils', 'some_unlisted_func'), ('torch', 'load'), ('torch.serialization', 'load'),
    ('numpy', 'load'), ('collections', 'namedtuple'), ('builtins', 'getattr'),
    ('torch._utils', '_rebuild_tensor_v2._fn'), ('copyreg', '_reconstructor'),
])
@pytest.mark.parametrize('opcode', ['GLOBAL', 'STACK_GLOBAL'])
def test_unlisted_globals_are_refused(tmp_path, module, name, opcode):
  if opcode == 'GLOBAL':
    body = b'\x80\x02' + _global(module, name)
  else:  # protocol 4
    body = b'\x80\x04' + _frag(module) + _frag(name) + b'\x93'
  payload = body + _frag(('print(1)',)) + b'R.'
  path = _write_torch_zip(tmp_path / 'g.pth', payload, {})
  with pytest.raises(UnsafeCheckpointError, match=f'{module}.{name}'.replace('.', r'\.')):
    read_checkpoint(path)


@pytest.mark.parametrize('fmt', FORMATS)
def test_whole_module_pickles_are_refused_with_a_hint(tmp_path, fmt):
  path = _save(torch.nn.Conv2d(1, 1, 1), tmp_path / f'module_{fmt}.pth', fmt)
  with pytest.raises(UnsafeCheckpointError, match=r'torch\.nn\.modules\.conv\.Conv2d') as err:
    read_checkpoint(path)
  assert 'state_dict()' in str(err.value)


def test_allowed_stand_ins_cannot_be_abused(tmp_path):
  cases = {
      # _codecs.encode only turns str into bytes
      'codecs': _global('_codecs', 'encode') + _frag((1, 'rot13')) + b'R',
      # _rebuild_from_type_v2 only accepts the tensor rebuild stand-ins
      'from_type': (_global('torch._tensor', '_rebuild_from_type_v2') + b'('
                    + _global('_codecs', 'encode') + _global('torch', 'Tensor')
                    + _frag(('x', 'latin1')) + b'}' + b'tR'),
      # BUILD cannot rewrite a validated tensor's shape/strides
      'build_tensor': (_tensor_op(_pid('FloatStorage', '0', 4), 0, (2, 2), (2, 1))
                       + _frag({'_shape': (1000000,), '_strides': (1,)}) + b'b'),
      # BUILD on a stand-in function
      'build_function': _global('torch', 'Size') + _frag((None, {'_fn': 1})) + b'b',
      # a storage is not callable
      'call_storage': _pid('FloatStorage', '0', 4) + b')R',
      # numpy object dtypes are refused
      'np_object': _global('numpy', 'dtype') + _frag(('O8', False, True)) + b'R',
      # bytes() cannot allocate huge buffers
      'bytes_alloc': _global('__builtin__', 'bytes') + _frag((10**12,)) + b'R',
  }
  for name, body in cases.items():
    path = _write_torch_zip(tmp_path / f'{name}.pth', _pickle(body), {'0': bytes(16)})
    with pytest.raises(CheckpointError, match=f'{name}.pth'):
      read_checkpoint(path)


def test_out_of_bounds_tensors_are_refused(tmp_path):
  storage = {'0': np.arange(4, dtype=np.float32).tobytes()}
  cases = {
      'stride': _tensor_op(_pid('FloatStorage', '0', 4), 0, (2, 2), (3, 1)),
      'offset': _tensor_op(_pid('FloatStorage', '0', 4), 3, (2,), (1,)),
      'numel_past_member': _tensor_op(_pid('FloatStorage', '0', 400), 0, (100,), (1,)),
      'negative_stride': _tensor_op(_pid('FloatStorage', '0', 4), 3, (2,), (-1,)),
      'missing_member': _tensor_op(_pid('FloatStorage', '9', 4), 0, (2,), (1,)),
  }
  for name, body in cases.items():
    path = _write_torch_zip(tmp_path / f'{name}.pth', _pickle(body), storage)
    with pytest.raises(CheckpointError, match=f'{name}.pth'):
      read_checkpoint(path)
  # Sanity: the same construction with valid numbers reads back.
  ok = _write_torch_zip(tmp_path / 'ok.pth',
                        _pickle(_tensor_op(_pid('FloatStorage', '0', 4), 1, (3,), (1,))), storage)
  np.testing.assert_array_equal(np.asarray(read_checkpoint(ok)), [1, 2, 3])


def test_bad_persistent_ids_are_refused(tmp_path):
  for i, pid in enumerate([_frag('0') + b'Q', _frag(('storage', 1, 2)) + b'Q',
                           _frag(('module', 'x', 'y', 'z', 4)) + b'Q']):
    path = _write_torch_zip(tmp_path / f'pid{i}.pth', _pickle(pid), {})
    with pytest.raises(CheckpointError, match=f'pid{i}.pth'):
      read_checkpoint(path)


@pytest.mark.filterwarnings('ignore::DeprecationWarning')
def test_torchscript_archive_is_refused_clearly(tmp_path):
  m = torch.jit.script(torch.nn.Linear(2, 2))
  path = tmp_path / 'scripted.pt'
  torch.jit.save(m, str(path))
  with pytest.raises(CheckpointError, match='TorchScript'):
    read_checkpoint(path)


# ------------------------------------------------------------------------------------------------
# unwrap_state_dict
# ------------------------------------------------------------------------------------------------


def _sd(*names):
  return collections.OrderedDict((n, np.full((2,), i, np.float32)) for i, n in enumerate(names))


def test_unwrap_bare_state_dict_keeps_order_and_drops_non_tensors():
  sd = _sd('model.0.weight', 'model.0.bias', 'b')
  sd['_metadata'] = {'': {'version': 1}}
  sd['num_batches'] = 3
  out = unwrap_state_dict(sd)
  assert list(out) == ['model.0.weight', 'model.0.bias', 'b']  # model. is NOT stripped here
  assert all(out[k] is sd[k] for k in out)


def test_unwrap_params_and_params_ema():
  p, e = _sd('conv.weight', 'conv.bias'), _sd('conv.weight', 'x')
  assert list(unwrap_state_dict({'params': p})) == ['conv.weight', 'conv.bias']
  assert list(unwrap_state_dict({'params_ema': e})) == ['conv.weight', 'x']
  both = {'params': p, 'params_ema': e}
  assert unwrap_state_dict(both)['conv.weight'] is e['conv.weight']  # EMA preferred
  assert unwrap_state_dict(both, key='params')['conv.weight'] is p['conv.weight']
  with pytest.raises(CheckpointError) as err:
    unwrap_state_dict(both, key='params_g', source='swinir.pth')
  msg = str(err.value)
  assert 'swinir.pth' in msg and "'params_g'" in msg and "'params'" in msg and "'params_ema'" in msg


def test_unwrap_lightning_prefixes():
  sd = unwrap_state_dict({'state_dict': _sd('net.a.weight', 'net.b'), 'epoch': 4,
                          'optimizer_states': [{}]})
  assert list(sd) == ['a.weight', 'b']
  assert list(unwrap_state_dict({'state_dict': _sd('model.a', 'model.b')})) == ['a', 'b']
  # only when every tensor key has the prefix
  assert list(unwrap_state_dict({'state_dict': _sd('net.a', 'head.b')})) == ['net.a', 'head.b']
  out = unwrap_state_dict({'state_dict': _sd('net.a', 'net.b')}, key='state_dict')
  assert list(out) == ['a', 'b']


@pytest.mark.parametrize('wrapper', ['model', 'net', 'state_dict', 'model_state_dict'])
def test_unwrap_plain_wrappers(wrapper):
  out = unwrap_state_dict({wrapper: _sd('conv.weight', 'conv.bias'), 'epoch': 1, 'opt': {'lr': 1}})
  assert list(out) == ['conv.weight', 'conv.bias']


def test_unwrap_data_parallel_prefix():
  assert list(unwrap_state_dict(_sd('module.a', 'module.b'))) == ['a', 'b']
  assert list(unwrap_state_dict({'params': _sd('module.a', 'module.b')})) == ['a', 'b']
  assert list(unwrap_state_dict({'state_dict': _sd('module.net.a')})) == ['net.a']
  assert list(unwrap_state_dict(_sd('module.a', 'b'))) == ['module.a', 'b']


def test_unwrap_nested_wrappers():
  assert list(unwrap_state_dict({'model': {'params_ema': _sd('a')}})) == ['a']


def test_unwrap_refuses_unknown_layouts():
  with pytest.raises(CheckpointError) as err:
    unwrap_state_dict({'generator': _sd('a'), 'discriminator': _sd('b'), 'iter': 5},
                      source='gan.pth')
  msg = str(err.value)
  assert 'gan.pth' in msg and "'generator' (OrderedDict of 1, 1 tensors)" in msg
  assert "'iter' (int)" in msg
  assert list(unwrap_state_dict({'generator': _sd('a'), 'discriminator': _sd('b')},
                                key='generator')) == ['a']
  with pytest.raises(CheckpointError, match='list'):
    unwrap_state_dict([np.zeros(2)])
  with pytest.raises(CheckpointError, match='no tensors'):
    unwrap_state_dict({'params': {'lr': 0.1}})
  with pytest.raises(CheckpointError, match='no state dict'):
    unwrap_state_dict({'epoch': 1})


def test_read_state_dict_from_a_real_basicsr_style_file(tmp_path):
  net = torch.nn.Conv2d(1, 2, 3)
  obj = {'params': {k: v + 1 for k, v in net.state_dict().items()}, 'params_ema': net.state_dict()}
  path = _save(obj, tmp_path / 'basicsr.pth', 'zip')
  sd = read_state_dict(path)
  np.testing.assert_array_equal(np.asarray(sd['weight']), net.weight.detach().numpy())
  sd = read_state_dict(path, key='params')
  np.testing.assert_array_equal(np.asarray(sd['bias']), net.bias.detach().numpy() + 1)
  with pytest.raises(CheckpointError, match="available keys: 'params'"):
    read_state_dict(path, key='state_dict')


# ------------------------------------------------------------------------------------------------
# safetensors and npz
# ------------------------------------------------------------------------------------------------


def test_safetensors_package_written(tmp_path):
  import safetensors.torch as st  # test extra
  g = torch.Generator().manual_seed(1)
  tensors = {
      'f32': torch.randn(3, 4, generator=g), 'f16': torch.randn(5, generator=g).half(),
      'bf16': torch.randn(2, 3, generator=g).bfloat16(),
      'f64': torch.randn(2, generator=g).double(),
      'i64': torch.arange(4), 'i32': torch.arange(3, dtype=torch.int32),
      'i16': torch.tensor([-1, 2], dtype=torch.int16), 'i8': torch.tensor([-1], dtype=torch.int8),
      'u8': torch.tensor([255], dtype=torch.uint8), 'bool': torch.tensor([True, False]),
      'scalar': torch.tensor(2.0), 'empty': torch.zeros(0, 4),
  }
  path = tmp_path / 'w.safetensors'
  st.save_file(tensors, str(path), metadata={'format': 'pt'})
  ours = read_checkpoint(path)
  assert set(ours) == set(tensors)
  for k, t in tensors.items():
    _assert_same_array(ours[k], t, k)
  assert set(read_state_dict(path)) == set(tensors)


def test_safetensors_hand_written(tmp_path):
  a = np.arange(6, dtype=np.float32).reshape(2, 3)
  b = np.array([1.5, -2], dtype=ml_dtypes.bfloat16)
  header = {'__metadata__': {'k': 'v'},
            'a': {'dtype': 'F32', 'shape': [2, 3], 'data_offsets': [0, 24]},
            'b': {'dtype': 'BF16', 'shape': [2], 'data_offsets': [24, 28]}}
  h = json.dumps(header).encode()
  h += b' ' * (0x280 - len(h))  # the length field then starts like a pickle: 80 02 ...
  path = tmp_path / 'hand.bin'  # the extension does not matter
  path.write_bytes(struct.pack('<Q', len(h)) + h + a.tobytes() + b.tobytes())
  ours = read_checkpoint(path)
  assert list(ours) == ['a', 'b']
  np.testing.assert_array_equal(np.asarray(ours['a']), a)
  assert np.asarray(ours['b']).dtype == b.dtype and np.asarray(ours['b']).tobytes() == b.tobytes()
  # A tensor reaching past the end of the file is refused.
  path.write_bytes(struct.pack('<Q', len(h)) + h + a.tobytes())
  with pytest.raises(CheckpointError, match='hand.bin'):
    read_checkpoint(path)


@pytest.mark.parametrize('compressed', [False, True])
def test_npz(tmp_path, compressed):
  arrays = {'w': np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32),
            'h': np.arange(5, dtype=np.float16),
            'f': np.asfortranarray(np.arange(6.0).reshape(2, 3)),
            'b': np.array([True, False]), 'be': np.arange(3, dtype='>i4'),
            's': np.array(3, np.int64),
            'e': np.zeros((0, 2), np.float32)}
  path = tmp_path / 'a.npz'
  (np.savez_compressed if compressed else np.savez)(path, **arrays)
  ours = read_checkpoint(path)
  assert list(ours) == list(arrays)
  for k, v in arrays.items():
    got = np.asarray(ours[k])
    assert got.dtype == v.dtype.newbyteorder('=') and got.shape == v.shape, k
    np.testing.assert_array_equal(got, v)
  obj_path = tmp_path / 'obj.npz'
  np.savez(obj_path, o=np.array([None, 1], dtype=object))
  with pytest.raises(CheckpointError, match='obj.npz'):
    read_checkpoint(obj_path)


# ------------------------------------------------------------------------------------------------
# corrupt inputs
# ------------------------------------------------------------------------------------------------


def test_materialize_keeps_structure(tmp_path):
  shared = torch.randn(3)
  obj = collections.OrderedDict(a=shared, b=[shared[1:], {'c': (shared, 1)}], d='x')
  ours = tc.materialize(read_checkpoint(_save(obj, tmp_path / 'm.pth', 'zip')))
  assert isinstance(ours, collections.OrderedDict) and type(ours['a']) is np.ndarray
  np.testing.assert_array_equal(ours['b'][0], shared[1:].numpy())
  assert ours['b'][1]['c'][1] == 1 and ours['d'] == 'x'


def test_corrupt_inputs(tmp_path):
  good_zip = _save({'w': torch.randn(64, 64)}, tmp_path / 'good.pth', 'zip')
  good_legacy = _save({'w': torch.randn(64, 64)}, tmp_path / 'good_legacy.pth', 'legacy')
  cases = {
      'truncated_zip.pth': good_zip.read_bytes()[: good_zip.stat().st_size // 2],
      'truncated_zip_tail.pth': good_zip.read_bytes()[:-10],
      'truncated_legacy.pth': good_legacy.read_bytes()[:-100],
      'truncated_legacy_pickle.pth': good_legacy.read_bytes()[:200],
      'random.pth': np.random.default_rng(0).bytes(4096),
      'empty.pth': b'',
      'text.pth': b'version https://git-lfs.github.com/spec/v1\noid sha256:abc\n',
      'plain_pickle.pth': pickle.dumps({'w': [1, 2, 3]}, protocol=2),
      'zip_without_pkl.pth': None,
  }
  for name, data in cases.items():
    path = tmp_path / name
    if data is None:
      with zipfile.ZipFile(path, 'w') as zf:
        zf.writestr('hello.txt', 'hi')
    else:
      path.write_bytes(data)
    with pytest.raises(CheckpointError) as err:
      read_checkpoint(path)
    assert name in str(err.value), (name, str(err.value))
    assert not isinstance(err.value, UnsafeCheckpointError), name
  with pytest.raises(CheckpointError, match='not a recognised checkpoint format'):
    read_checkpoint(tmp_path / 'random.pth')
  with pytest.raises(CheckpointError, match='missing.pth'):
    read_checkpoint(tmp_path / 'missing.pth')


def test_file_changed_after_reading_gives_checkpoint_error(tmp_path):
  path = _save({'w': torch.randn(256, 256)}, tmp_path / 'gone.pth', 'zip')
  sd = read_state_dict(path)
  path.write_bytes(b'')
  with pytest.raises(CheckpointError, match='gone.pth'):
    np.asarray(sd['w'])


# ------------------------------------------------------------------------------------------------
# memory
# ------------------------------------------------------------------------------------------------


def test_large_checkpoint_is_read_lazily(tmp_path):
  n_tensors, numel = 50, 1 << 20  # 50 x 4 MiB float32 = 200 MiB
  path = tmp_path / 'big.pth'
  obj = {f'layer{i}.weight': torch.arange(numel, dtype=torch.float32).reshape(1024, 1024) + i
         for i in range(n_tensors)}
  torch.save(obj, path)
  del obj
  gc.collect()
  assert path.stat().st_size > 200e6

  rss0 = _vm_rss()
  sd = read_state_dict(path)
  rss1 = _vm_rss()
  assert len(sd) == n_tensors and all(type(v) is LazyArray for v in sd.values())
  grew = (rss1 - rss0) / 1e6
  assert grew < 30, f'reading without materialising grew RSS by {grew:.0f} MB'

  base = np.arange(numel, dtype=np.float32).reshape(1024, 1024)
  for i, (k, v) in enumerate(sd.items()):
    assert v.shape == (1024, 1024) and v.dtype == np.float32
    arr = v.numpy()
    assert np.array_equal(arr, base + np.float32(i)), k
    del arr
  gc.collect()
  rss2 = _vm_rss()
  # The whole file (200 MB) must not have stayed resident: one tensor at a time.
  assert rss2 - rss0 < 100e6, f'materialising grew RSS by {(rss2 - rss0) / 1e6:.0f} MB'
