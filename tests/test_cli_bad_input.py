"""Nothing a user feeds the CLI aborts a batch or loses work (issue #16, one test per case).

Exit codes: 0 done, 1 some input failed, 2 usage error found before any work, 130 interrupted."""
from __future__ import annotations

import json
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

import jaxrestore
from jaxrestore import cli, inference
from jaxrestore.imageio import read_image


def _png_header_only(path, width, height):
  """A tiny PNG whose header claims width x height pixels (a decompression bomb)."""
  def chunk(kind, data):
    return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data) & 0xffffffff)
  path.write_bytes(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', width, height, 8, 0, 0, 0, 0))
                   + chunk(b'IDAT', zlib.compress(b'\0' * 100)) + chunk(b'IEND', b''))


@pytest.fixture
def folder(tmp_path):
  src = tmp_path / 'in'
  src.mkdir()
  rng = np.random.default_rng(0)
  for name in ('a.png', 'z.png'):
    Image.fromarray(rng.integers(0, 256, (24, 20), dtype=np.uint8)).save(src / name)
  return src


def _restore(args, capsys, model='dncnn-gray-25'):
  code = cli.main(['restore', *map(str, args), *(['--model', model] if model else []), '--quiet'])
  out, err = capsys.readouterr()
  return code, out, err


def _no_work(monkeypatch):
  """Make any model load fail loudly: the command must stop before it."""
  def refuse(*args, **kwargs):
    raise AssertionError('work started before the command line was checked')
  monkeypatch.setattr(jaxrestore, 'load', refuse)


# 1 -- decompression bombs and every other reader error are that file's one-line error ---------------

def test_decompression_bomb_is_one_line_and_the_batch_goes_on(folder, tmp_path, capsys):
  _png_header_only(folder / 'm_bomb.png', 100000, 100000)
  code, _, err = _restore([folder, '-o', tmp_path / 'out'], capsys)
  assert code == 1
  assert err.strip().splitlines() == [l for l in err.strip().splitlines() if 'm_bomb.png' in l]
  assert 'm_bomb.png: image of 10,000,000,000 pixels exceeds the limit' in err and '--max-pixels' in err
  assert sorted(p.name for p in (tmp_path / 'out').iterdir()) == ['a.png', 'z.png']


def test_max_pixels_refuses_a_large_image_before_decoding(folder, tmp_path, capsys):
  code, _, err = _restore([folder / 'a.png', folder / 'z.png', '-o', tmp_path / 'out', '--max-pixels', '400'],
                          capsys)
  assert code == 1 and len(err.strip().splitlines()) == 2
  assert 'a.png: image of 20x24 = 480 pixels exceeds the limit of 400 pixels' in err
  assert not (tmp_path / 'out').exists()  # nothing written, no folder made
  assert _restore([folder / 'a.png', '-o', tmp_path / 'out', '--max-pixels', '480'], capsys)[0] == 0
  assert '--max-pixels N' in cli.build_parser()._subparsers._group_actions[0].choices['restore'].format_help()


def test_any_reader_error_is_that_files_one_line(folder, tmp_path, capsys, monkeypatch):
  """Not just the exception types the reader knows: whatever Pillow raises for one file."""
  real_open = Image.open

  def flaky_open(fp, *args, **kwargs):
    if str(fp).endswith('a.png'):
      raise struct.error('unpack requires a buffer of 4 bytes')
    return real_open(fp, *args, **kwargs)

  monkeypatch.setattr(Image, 'open', flaky_open)
  code, _, err = _restore([folder, '-o', tmp_path / 'out'], capsys)
  assert code == 1 and len(err.strip().splitlines()) == 1
  assert 'a.png: unreadable or truncated image (unpack requires a buffer of 4 bytes)' in err
  assert (tmp_path / 'out' / 'z.png').is_file()


def test_crafted_bad_files_each_get_one_line(folder, tmp_path, capsys):
  bad = tmp_path / 'bad'
  bad.mkdir()
  _png_header_only(bad / 'bomb.png', 70000, 70000)
  _png_header_only(bad / 'zero.png', 0, 0)
  (bad / 'empty.jpg').write_bytes(b'')
  (bad / 'text.tif').write_text('II*\0 not really a tiff')
  good = (folder / 'a.png').read_bytes()
  (bad / 'cut.png').write_bytes(good[:60])
  (bad / 'dir.png').mkdir()
  Image.new('F', (8, 8)).save(bad / 'float.tif')
  Image.new('I', (8, 8)).save(bad / 'int32.tif')
  before = {p.name: p.read_bytes() for p in folder.iterdir()}
  out = tmp_path / 'out'
  code, _, err = _restore([folder, bad, bad / 'dir.png', '-o', out], capsys)
  lines = err.strip().splitlines()
  assert code == 1
  for name in ('bomb.png', 'zero.png', 'empty.jpg', 'text.tif', 'cut.png', 'dir.png', 'float.tif', 'int32.tif'):
    assert sum(name in line for line in lines) == 1, (name, err)
  assert len(lines) == 8, err
  assert sorted(p.name for p in out.iterdir()) == ['a.png', 'z.png']
  assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


# 2 -- an unreadable image in an eval: named, nothing scored (or --skip-unreadable) ---------------------

def test_eval_names_an_unreadable_file_and_scores_nothing(folder, tmp_path, capsys):
  good = (folder / 'a.png').read_bytes()
  (folder / 'm_truncated.png').write_bytes(good[:len(good) // 2])
  (folder / 'n_empty.png').write_bytes(b'')
  args = ['eval', '--model', 'dncnn-gray-25', '--dataset', str(folder)]
  assert cli.main(args + ['--csv', str(tmp_path / 'r.csv')]) == 1
  out, err = capsys.readouterr()
  assert out == '' and not (tmp_path / 'r.csv').exists()
  assert 'm_truncated.png: unreadable or truncated image' in err and 'n_empty.png: empty file' in err
  assert '--skip-unreadable' in err
  assert cli.main(args + ['--skip-unreadable', '--json', str(tmp_path / 'r.json')]) == 0
  out, err = capsys.readouterr()
  assert 'skipped m_truncated.png' in err and 'skipped n_empty.png' in err
  assert 'skipped 2 unreadable: m_truncated.png, n_empty.png' in out and '(gray_dn, sigma 25, 2 images)' in out
  report = json.loads((tmp_path / 'r.json').read_text())
  assert report['images'] == ['a.png', 'z.png']
  assert [s['image'] for s in report['test_set']['skipped']] == ['m_truncated.png', 'n_empty.png']


# 3 -- every output path is checked before any work ----------------------------------------------------

def test_output_paths_are_checked_before_any_work(folder, tmp_path, capsys, monkeypatch):
  _no_work(monkeypatch)
  (tmp_path / 'exists.csv').write_text('keep')
  (tmp_path / 'file').write_text('keep')
  eval_args = ['eval', '--model', 'dncnn-gray-25', '--dataset', str(folder)]
  cases = [
      (eval_args + ['--csv', str(tmp_path / 'exists.csv')], '--csv', 'exists'),
      (eval_args + ['--json', str(tmp_path / 'missing' / 'r.json')], '--json', 'does not exist'),
      (eval_args + ['--csv', str(tmp_path / 'r'), '--json', str(tmp_path / 'r')], '--json', 'same file'),
      (['restore', str(folder), '-o', str(tmp_path / 'file'), '--model', 'dncnn-gray-25'], '-o/--output',
       'not a folder'),
      (['restore', str(folder), '-o', str(tmp_path / 'file' / 'sub'), '--model', 'dncnn-gray-25'], '-o/--output',
       'not a folder'),
      (['convert', str(tmp_path / 'file'), str(tmp_path / 'exists.csv')], 'DST', 'exists and is not a folder'),
      (['convert', str(tmp_path / 'file'), str(tmp_path)], 'DST', 'already exists; pass --overwrite'),
      (['convert', str(tmp_path / 'file'), str(tmp_path / 'file' / 'x')], 'DST', 'not a folder'),
      (['bench', '--smoke', '--json', str(tmp_path / 'exists.csv')], '--json', 'exists'),
      (['train', 'dncnn_gray:tiny', '--workdir', str(tmp_path / 'file')], '--workdir', 'not a folder'),
      (['demo', '--out', str(tmp_path / 'file')], '--out', 'not a folder'),
  ]
  for args, flag, why in cases:
    assert cli.main(args) == 2, args
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and flag in err and why in err, (args, err)
  assert (tmp_path / 'exists.csv').read_text() == 'keep' and (tmp_path / 'file').read_text() == 'keep'


# 4 -- the all-in-one protocol writes --json/--csv, honours --quiet, prints the table: see
#      tests/test_eval_protocol.py::test_allinone_protocol_through_the_cli

# 5 -- options a task does not use, ranges in the option's terms, argument errors once -----------------

@pytest.mark.parametrize('extra,message', [
    (['--jpeg', '20'], '--jpeg does not apply to task gray_dn'),
    (['--lq', '.'], '--lq does not apply to task gray_dn'),
    (['--gt', '.'], '--gt does not apply to task gray_dn'),
    (['--task', 'jpeg_car', '--noise', '15'], '--noise does not apply to task jpeg_car'),
    (['--task', 'jpeg_car', '--jpeg', '20', '--float-psnr'], '--float-psnr does not apply to task jpeg_car'),
    (['--overlap', '8'], '--overlap applies between tiles'),
])
def test_eval_refuses_options_the_task_does_not_use(extra, message, folder, capsys, monkeypatch):
  _no_work(monkeypatch)
  assert cli.main(['eval', '--model', 'dncnn-gray-25', '--dataset', str(folder), *extra]) == 2
  err = capsys.readouterr().err
  assert message in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize('args,message', [
    (['eval', '--model', 'dncnn-gray-25', '--dataset', '.', '--noise', '-5'],
     'argument --noise: must be between 0 and 255 (sigma on the 0..255 scale), got -5'),
    (['eval', '--model', 'dncnn-gray-25', '--dataset', '.', '--jpeg', '0'], 'argument --jpeg: must be between 1 and 100'),
    (['eval', '--model', 'dncnn-gray-25', '--dataset', '.', '--limit', '0'], 'argument --limit: must be at least 1'),
    (['restore', 'x.png', '-o', 'o', '--batch-size', '0'], 'argument --batch-size: must be at least 1, got 0'),
    (['restore', 'x.png', '-o', 'o', '--batch-size', '-3'], 'argument --batch-size: must be at least 1, got -3'),
    (['restore', 'x.png', '-o', 'o', '--tile', '-5'], 'argument --tile: must be at least 0 (0 = whole image), got -5'),
    (['restore', 'x.png', '-o', 'o', '--max-pixels', '-1'], 'argument --max-pixels: must be at least 0'),
    (['bench', '--sizes', '0,128'], 'argument --sizes: every value must be at least 1'),
    (['bench', '--repeats', '0'], 'argument --repeats: must be at least 1'),
    (['train', 'dncnn_gray', '--num-processes', '0'], 'argument --num-processes: must be at least 1'),
])
def test_ranges_are_checked_in_the_options_terms(args, message, capsys):
  with pytest.raises(SystemExit) as exit_info:
    cli.main(args)
  assert exit_info.value.code == 2
  assert message in capsys.readouterr().err


def test_argument_errors_are_reported_once_before_any_image(folder, tmp_path, capsys):
  out = tmp_path / 'out'
  for extra, message in ((['--tile', '16', '--overlap', '32'], '--overlap 32 must be smaller than --tile 16'),
                         (['--tile', '0', '--overlap', '8'], '--overlap 8: applies between tiles'),
                         (['--tile', '2', '--overlap', '1'], '--tile 2: this model needs tiles of at least 4 pixels'),
                         (['--suffix', 'a/b'], '--suffix')):
    code, _, err = _restore([folder, '-o', out, *extra], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, (extra, err)
  assert not out.exists()


def test_no_output_folder_when_nothing_is_written(tmp_path, capsys):
  (tmp_path / 'bad.png').write_text('not an image')
  code, _, err = _restore([tmp_path / 'bad.png', tmp_path / 'missing.png', '-o', tmp_path / 'out'], capsys)
  assert code == 1 and len(err.strip().splitlines()) == 2
  assert not (tmp_path / 'out').exists()


# 6 -- errors whole, in the command line's terms ----------------------------------------------------------

def test_weight_errors_are_whole_and_name_the_cli_flag(data_dir, tmp_path, capsys, monkeypatch):
  import shutil
  shutil.copy(data_dir / 'checkpoints' / 'dncnn_25.pth', tmp_path / 'w.pth')
  code, _, err = _restore([data_dir / 'testsets' / 'Set12' / '01.png', '-o', tmp_path / 'o', '--weights',
                           tmp_path / 'w.pth'], capsys, model='dncnn-color-blind')
  assert code == 2 and len(err.strip().splitlines()) == 1
  assert len(err) > 400 and 'shape mismatch (' in err and '...' not in err
  assert err.count('expected (3, 3, 64, 64)') + err.count('expected (3, 3, 3, 64)') >= 1
  monkeypatch.setenv('JAXRESTORE_WEIGHTS', str(tmp_path / 'nowhere'))
  monkeypatch.setenv('HOME', str(tmp_path))
  code, _, err = _restore([data_dir / 'testsets' / 'Set12' / '01.png', '-o', tmp_path / 'o'], capsys,
                          model='dncnn-gray-50')
  assert code == 2 and 'pass --weights PATH' in err and 'weights=' not in err


def test_convert_set_errors_are_clear(data_dir, tmp_path, capsys):
  src = data_dir / 'checkpoints' / 'dncnn_25.pth'
  for args, message in ((['--set', 'depth=abc'], "--set depth=...: depth takes an integer, got 'abc'"),
                        (['--set', 'nosuch=1'], "has no setting 'nosuch'"),
                        (['--set', 'padding="strict"'], 'padding is a runtime choice')):
    assert cli.main(['convert', str(src), str(tmp_path / 'dst'), '--model', 'dncnn-gray-25', *args]) == 2
    assert message in capsys.readouterr().err
  with pytest.raises(SystemExit) as exit_info:
    cli.main(['convert', str(src), str(tmp_path / 'dst'), '--set', 'depth'])
  assert exit_info.value.code == 2
  assert "argument --set: expected KEY=VALUE, got 'depth'" in capsys.readouterr().err
  assert not (tmp_path / 'dst').exists()


# 7 -- Ctrl-C: one summary line, no traceback --------------------------------------------------------------

def test_ctrl_c_prints_one_summary_line(folder, tmp_path, capsys, monkeypatch):
  real_restore, calls = inference.restore, []

  def interrupted(*args, **kwargs):
    calls.append(1)
    if len(calls) == 2:
      raise KeyboardInterrupt
    return real_restore(*args, **kwargs)

  monkeypatch.setattr(inference, 'restore', interrupted)
  Image.fromarray(np.zeros((24, 20), np.uint8)).save(folder / 'b.png')
  out = tmp_path / 'out'
  code, _, err = _restore([folder, '-o', out], capsys)
  assert code == 130
  assert err.strip().splitlines() == [
      f'jaxrestore restore: interrupted: wrote 1 of 3 image(s) into {out}; not written: 2 (from b.png on); '
      f'resume with the same command plus --skip-existing']
  monkeypatch.setattr(inference, 'restore', real_restore)
  code, out_text, err = _restore([folder, '-o', out, '--skip-existing'], capsys)
  assert code == 0 and sorted(p.name for p in out.iterdir()) == ['a.png', 'b.png', 'z.png']


# 8 -- what a user reaches for next -------------------------------------------------------------------------

def test_version(capsys):
  with pytest.raises(SystemExit) as exit_info:
    cli.main(['--version'])
  assert exit_info.value.code == 0
  assert capsys.readouterr().out.startswith(f'jaxrestore {jaxrestore.__version__} (jax ')


def test_skip_existing_resumes_a_batch(folder, tmp_path, capsys):
  out = tmp_path / 'out'
  out.mkdir()
  (out / 'a.png').write_bytes(b'an earlier result')
  code = cli.main(['restore', str(folder), '-o', str(out), '--model', 'dncnn-gray-25', '--skip-existing'])
  printed = capsys.readouterr().out
  assert code == 0 and 'restored 1 of 2 image(s)' in printed and 'skipped 1 existing' in printed
  assert (out / 'a.png').read_bytes() == b'an earlier result' and read_image(out / 'z.png').shape == (24, 20)
  with pytest.raises(SystemExit):
    cli.main(['restore', str(folder), '-o', str(out), '--model', 'dncnn-gray-25', '--skip-existing', '--overwrite'])


def test_restore_with_a_self_describing_checkpoint_needs_no_model(folder, tmp_path, capsys):
  from jaxrestore.api import ASSETS
  code, _, err = _restore([folder / 'a.png', '-o', tmp_path / 'out', '--weights', ASSETS / 'dncnn-gray-25'], capsys,
                          model=None)
  assert code == 0, err
  assert read_image(tmp_path / 'out' / 'a.png').shape == (24, 20)
  code, _, err = _restore([folder / 'a.png', '-o', tmp_path / 'out2'], capsys, model=None)
  assert code == 2 and 'needs --model PRESET, or --weights PATH' in err


def test_tables_have_their_header_when_not_a_tty(folder, tmp_path, capsys):
  assert cli.main(['eval', '--model', 'dncnn-gray-25', '--dataset', str(folder)]) == 0
  lines = capsys.readouterr().out.splitlines()
  assert lines[0].split() == ['image', 'psnr', 'ssim'] and lines[1].startswith('a.png')
  assert cli.main(['restore', str(folder), '-o', str(tmp_path / 'out'), '--model', 'dncnn-gray-25']) == 0
  lines = capsys.readouterr().out.splitlines()
  assert lines[0].split()[:4] == ['image', 'input', 'output', 'seconds'] and lines[1].startswith('a.png')


def test_presets_of_an_unknown_architecture(capsys):
  assert cli.main(['presets', '--architecture', 'nosuch']) == 2
  err = capsys.readouterr().err
  assert 'unknown architecture' in err and all(a in err for a in ('dncnn', 'swinir', 'restormer'))


def test_restore_warns_on_float_input_above_one():
  model = jaxrestore.load('dncnn-gray-25')
  with pytest.warns(UserWarning, match=r'values up to 255; floats are expected in \[0, 1\]'):
    inference.restore(model, np.full((8, 8), 255.0, np.float32))


def test_warmup_longer_than_the_run_warns(capsys):
  from jaxrestore.train.cli import main as train_main
  assert train_main(['dncnn_gray:cpu', '--set', 'total_steps=50', '--print-config']) == 0
  err = capsys.readouterr().err
  assert 'warning: schedule.warmup_steps=100 is not shorter than total_steps=50' in err
  assert train_main(['dncnn_gray:cpu', '--set', 'total_steps=500', '--print-config']) == 0
  assert 'warning' not in capsys.readouterr().err
