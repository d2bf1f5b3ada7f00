"""Real DnCNN checkpoints reproduce their published PSNRs through `jaxrestore eval`, the command a
user runs (published numbers: ../shared/data/README.md)."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from jaxrestore import cli
from jaxrestore.eval import protocol as proto

# (preset, checkpoint file or None for the bundled weights, test set, published PSNR, the original
# PyTorch network under this protocol -- KAIR/SwinIR: np.random.seed(0) per image, uint8 PSNR).
PUBLISHED = [
    ('dncnn-gray-25', None, 'Set12', 30.44, 30.432),
    ('dncnn-gray-25', None, 'BSD68', 29.23, 29.233),
    ('dncnn-saoyan-s15', 'saoyan_dncnn_s15.pth', 'Set12', 32.837, 32.818),
    ('dncnn-saoyan-s15', 'saoyan_dncnn_s15.pth', 'BSD68', 31.71, 31.710),
    ('dncnn-saoyan-s25', 'saoyan_dncnn_s25.pth', 'Set12', 30.404, 30.392),
    ('dncnn-saoyan-s25', 'saoyan_dncnn_s25.pth', 'BSD68', 29.21, 29.208),
]


@pytest.mark.parametrize('preset,ckpt,dataset,published,pytorch', PUBLISHED)
def test_published_psnr_through_the_cli(preset, ckpt, dataset, published, pytorch, data_dir, tmp_path,
                                        monkeypatch, capsys):
  monkeypatch.setenv('JAXRESTORE_DATA', str(data_dir))
  args = ['eval', '--model', preset, '--dataset', dataset, '--quiet', '--json', str(tmp_path / 'r.json')]
  if ckpt:
    args += ['--weights', str(data_dir / 'checkpoints' / ckpt)]
  assert cli.main(args) == 0
  mean = float(re.search(r'average: psnr (\d+\.\d+)', capsys.readouterr().out).group(1))
  assert abs(mean - pytorch) <= 0.01, f'{preset} on {dataset}: {mean:.3f} dB, PyTorch network {pytorch}'
  assert abs(mean - published) <= 0.03, f'{preset} on {dataset}: {mean:.3f} dB, published {published}'
  report = json.loads((tmp_path / 'r.json').read_text())
  assert len(report['images']) == len(proto.list_images(data_dir / 'testsets' / dataset))


def test_csv_report(data_dir, tmp_path, monkeypatch, capsys):
  monkeypatch.setenv('JAXRESTORE_DATA', str(data_dir))
  assert cli.main(['eval', '--model', 'dncnn-gray-25', '--dataset', 'Set12', '--csv', str(tmp_path / 'r.csv')]) == 0
  rows = (tmp_path / 'r.csv').read_text().splitlines()
  assert rows[0] == 'image,psnr,ssim' and len(rows) == 15 and rows[1].startswith('01.png,')
  assert rows[13].startswith('mean,30.43') and rows[14].startswith('image_list_sha256,')
  out = capsys.readouterr().out
  assert 'average: psnr' in out and rows[14].split(',')[1] in out


def test_json_report_is_never_overwritten(data_dir, tmp_path, monkeypatch, capsys):
  monkeypatch.setenv('JAXRESTORE_DATA', str(data_dir))
  (tmp_path / 'r.json').write_text('keep')
  assert cli.main(['eval', '--model', 'dncnn-gray-25', '--dataset', 'Set12', '--quiet',
                   '--json', str(tmp_path / 'r.json')]) == 2
  assert (tmp_path / 'r.json').read_text() == 'keep'


@pytest.mark.parametrize('h,w,window', [(37, 45, 8), (16, 24, 8), (21, 14, 7)])
def test_window_padding_matches_the_official_script(h, w, window):
  x = np.random.default_rng(0).random((h, w, 3), dtype=np.float32)
  t = torch.from_numpy(x.transpose(2, 0, 1))[None]
  h_pad = (h // window + 1) * window - h
  w_pad = (w // window + 1) * window - w
  t = torch.cat([t, torch.flip(t, [2])], 2)[:, :, :h + h_pad, :]
  t = torch.cat([t, torch.flip(t, [3])], 3)[:, :, :, :w + w_pad]
  np.testing.assert_array_equal(proto.official_window_pad(x, window), t[0].numpy().transpose(1, 2, 0))


def test_protocol_needs_its_task_parameters():
  with pytest.raises(ValueError, match='needs a noise level'):
    proto.Protocol(task='gray_dn')
  with pytest.raises(ValueError, match='needs a JPEG quality'):
    proto.Protocol(task='color_jpeg_car')
  with pytest.raises(FileNotFoundError, match='low-resolution input'):
    proto.make_pair(proto.list_images(proto.Path(__file__).parent.parent / 'jaxrestore' / 'assets')[0],
                    proto.Protocol(task='classical_sr', scale=2), lq_folder=proto.Path('/nonexistent'))


def test_allinone_protocol_through_the_cli(data_dir, tmp_path, capsys, monkeypatch):
  """PromptIR's golden checkpoint under HAIR/PromptIR's own protocol: the CLI prints the per-image
  table, writes --json/--csv, honours --quiet, and its numbers are the library call's."""
  from PIL import Image
  import jaxrestore
  from jaxrestore.eval import allinone
  from jaxrestore.eval.evaluator import Evaluator
  folder = tmp_path / 'set'
  folder.mkdir()
  for name in ('kodim01.png', 'kodim02.png'):  # small crops: the protocol crops them to 48x64 anyway
    Image.open(data_dir / 'testsets' / 'Kodak24' / name).crop((0, 0, 70, 50)).save(folder / name)
  weights = data_dir / 'golden' / 'promptir_small.pth'
  model = jaxrestore.load(weights=weights)
  monkeypatch.setattr(jaxrestore, 'load', lambda *args, **kwargs: model)  # one model, compiled once
  args = ['eval', '--weights', str(weights), '--protocol', 'allinone', '--task', 'denoise', '--noise', '15',
          '--dataset', str(folder)]
  assert cli.main(args + ['--json', str(tmp_path / 'r.json'), '--csv', str(tmp_path / 'r.csv')]) == 0
  lines = capsys.readouterr().out.splitlines()
  assert lines[0].split() == ['image', 'psnr', 'ssim'] and lines[1].startswith('kodim01.png')
  printed = float(re.search(r'average: psnr (\d+\.\d+)', lines[-1]).group(1))
  direct = allinone.evaluate_allinone(Evaluator(model).restore, sorted(folder.glob('*.png')), task='denoise',
                                      sigma=15)
  assert abs(printed - direct.mean()['psnr']) < 1e-4
  report = json.loads((tmp_path / 'r.json').read_text())
  assert report['scores']['psnr'] == pytest.approx(direct.psnr, abs=1e-9) and report['images'] == direct.names
  assert report['protocol']['degradation'] == 'denoise' and len(report['image_list_sha256']) == 64
  rows = (tmp_path / 'r.csv').read_text().splitlines()
  assert rows[0] == 'image,psnr,ssim' and [r.split(',')[0] for r in rows[1:]] == [
      'kodim01.png', 'kodim02.png', 'mean', 'image_list_sha256']
  assert cli.main(args + ['--quiet']) == 0
  out = capsys.readouterr().out.splitlines()
  assert len(out) == 2 and 'list sha256' in out[0] and 'average: psnr' in out[1]
