"""`jaxrestore restore`: formats, EXIF, folders and globs, and a clear one-line error per bad input
while the rest of the batch is still processed."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from jaxrestore import cli
from jaxrestore.imageio import read_image


@pytest.fixture
def inputs(tmp_path, data_dir):
  src = tmp_path / 'in'
  src.mkdir()
  gray = np.asarray(Image.open(data_dir / 'testsets' / 'Set12' / '01.png'))[:96, :80]
  Image.fromarray(gray).save(src / 'gray.png')
  Image.fromarray(np.stack([gray] * 3, -1)).save(src / 'color.jpg', quality=90)
  Image.fromarray(np.stack([gray, gray // 2, gray, gray], -1)).save(src / 'alpha.png')
  Image.fromarray(gray.astype(np.uint16) * 257).save(src / 'deep.tif')
  Image.fromarray(gray).convert('RGB').save(src / 'photo.webp')
  Image.fromarray(gray).save(src / 'bitmap.bmp')
  return src


def _run(args, capsys):
  code = cli.main(['restore', *map(str, args), '--model', 'dncnn-gray-25', '--quiet'])
  captured = capsys.readouterr()
  return code, captured.err


def test_restores_a_folder_of_mixed_formats(inputs, tmp_path, capsys):
  out = tmp_path / 'out'
  code, err = _run([inputs, '-o', out, '--tile', '64', '--overlap', '16'], capsys)
  assert code == 0, err
  names = sorted(p.name for p in out.iterdir())
  assert names == ['alpha.png', 'bitmap.png', 'color.png', 'deep.png', 'gray.png', 'photo.png']
  assert read_image(out / 'alpha.png').shape == (96, 80, 4)
  assert read_image(out / 'deep.png').dtype == np.uint16
  assert read_image(out / 'color.png').shape == (96, 80, 3)


def test_exif_orientation_is_respected(tmp_path, capsys):
  img = Image.fromarray(np.tile(np.arange(60, dtype=np.uint8)[None, :], (40, 1)))
  exif = Image.Exif()
  exif[0x0112] = 6  # rotate 90 degrees clockwise on display
  img.save(tmp_path / 'rotated.jpg', exif=exif, quality=95)
  code, err = _run([tmp_path / 'rotated.jpg', '-o', tmp_path / 'out'], capsys)
  assert code == 0, err
  assert read_image(tmp_path / 'out' / 'rotated.png').shape == (60, 40)


def test_bad_inputs_fail_one_by_one(inputs, tmp_path, capsys):
  (tmp_path / 'empty.png').write_bytes(b'')
  (tmp_path / 'text.png').write_text('not an image')
  good = (inputs / 'gray.png').read_bytes()
  (tmp_path / 'truncated.png').write_bytes(good[:len(good) // 3])
  Image.new('CMYK', (32, 32)).save(tmp_path / 'cmyk.tif')
  Image.new('L', (3, 3)).save(tmp_path / 'tiny.png')
  args = [inputs / 'gray.png', tmp_path / 'missing.png', tmp_path / 'empty.png', tmp_path / 'text.png',
          tmp_path / 'truncated.png', tmp_path / 'cmyk.tif', tmp_path / 'tiny.png', str(tmp_path / 'none*.png')]
  code, err = _run([*args, '-o', tmp_path / 'out'], capsys)
  assert code == 1
  lines = err.strip().splitlines()
  assert len(lines) == 7, err
  for needle in ('missing.png: no such file', 'empty.png: empty file', 'text.png: not an image',
                 'truncated.png: unreadable or truncated', 'unsupported image mode CMYK',
                 'tiny.png: image of 3x3 pixels is smaller than the model minimum', 'none*.png: no file matches'):
    assert any(needle in line for line in lines), (needle, err)
  assert (tmp_path / 'out' / 'gray.png').is_file()  # the good file was still restored


def test_never_overwrites(inputs, tmp_path, capsys):
  out = tmp_path / 'out'
  assert _run([inputs / 'gray.png', '-o', out], capsys)[0] == 0
  before = (out / 'gray.png').read_bytes()
  code, err = _run([inputs / 'gray.png', '-o', out], capsys)
  assert code == 1 and 'exists; pass --overwrite' in err
  assert (out / 'gray.png').read_bytes() == before
  original = (inputs / 'gray.png').read_bytes()
  code, err = _run([inputs / 'gray.png', '-o', inputs], capsys)
  assert code == 1 and 'would overwrite an input' in err
  assert (inputs / 'gray.png').read_bytes() == original
  assert _run([inputs / 'gray.png', '-o', out, '--overwrite'], capsys)[0] == 0


def test_weights_that_do_not_match_the_preset(tmp_path, data_dir, capsys):
  shutil.copy(data_dir / 'checkpoints' / 'saoyan_dncnn_s15.pth', tmp_path / 'w.pth')
  code = cli.main(['restore', str(data_dir / 'testsets' / 'Set12' / '01.png'), '-o', str(tmp_path / 'o'),
                   '--model', 'swinir-gray-dn15', '--weights', str(tmp_path / 'w.pth'), '--quiet'])
  err = capsys.readouterr().err
  assert code == 2
  assert len(err.strip().splitlines()) == 1 and 'dncnn' in err and 'swinir' in err


def test_glob_inputs(inputs, tmp_path, capsys):
  code, err = _run([str(inputs / '*.png'), '-o', tmp_path / 'out', '--batch-size', '2'], capsys)
  assert code == 0, err
  assert sorted(p.name for p in (tmp_path / 'out').iterdir()) == ['alpha.png', 'gray.png']
