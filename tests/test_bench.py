"""`jaxrestore bench --smoke` runs end to end, with each architecture's own PyTorch reference;
numbers are not asserted."""
from __future__ import annotations

import io
import json

import pytest

from jaxrestore import bench, cli


def test_bench_smoke(capsys):
  assert cli.main(['bench', '--smoke', '--presets', 'swinir-lightweight-x2,dncnn-gray-25']) == 0
  out = capsys.readouterr().out
  for preset in ('swinir-lightweight-x2', 'dncnn-gray-25'):
    row = [l for l in out.splitlines() if l.startswith(f'| {preset} | 32²')]
    assert len(row) == 1 and '—' not in row[0], out  # JAX and PyTorch (spandrel's SwinIR / DnCNN) rows
  assert 'load average' in out
  assert 'JAX runs a batch as steps of 1 image(s) per device' in out  # the CPU default, as restore runs it


def test_bench_says_which_architectures_it_cannot_compare():
  out = io.StringIO()
  rows = bench.run_bench(('hair-3d', 'dualfreq-small'), (32,), (1,), 1, 'fp32', frameworks=('torch',), out=out)
  assert rows == []
  text = out.getvalue()
  assert 'hair-3d: no PyTorch row' in text and 'github.com/toummHus/HAIR' in text and '--official hair=DIR' in text
  assert 'dualfreq-small: no PyTorch row -- dualfreq has no PyTorch reference' in text


FAKE_OFFICIAL_HAIR = """
import json, os
import torch

class HAIR(torch.nn.Module):  # stands in for the official class: records how the benchmark built it
  def __init__(self, **kwargs):
    super().__init__()
    self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)
    with open(os.path.join(os.path.dirname(__file__), 'constructed.json'), 'w') as f:
      json.dump(kwargs, f)

  def forward(self, x):
    return self.conv(x)
"""


def test_bench_runs_official_code_from_a_checkout(tmp_path):
  """PromptIR and HAIR have no pip package: their PyTorch rows import the official module from the
  checkout the user passes (`--official NAME=DIR`), built with the preset's constructor keywords."""
  (tmp_path / 'net').mkdir()
  (tmp_path / 'net' / 'HAIR.py').write_text(FAKE_OFFICIAL_HAIR)
  officials = bench.resolve_officials([f'hair={tmp_path}'])
  assert officials == {'hair': str(tmp_path.resolve())}
  out = io.StringIO()
  rows = bench.run_bench(('hair-aio-small',), (32,), (1,), 1, 'fp32', frameworks=('torch',), out=out,
                         officials=officials)
  assert [(r['framework'], r['preset'], r['size']) for r in rows] == [('torch', 'hair-aio-small', 32)], out.getvalue()
  assert rows[0]['reference'] == 'github.com/toummHus/HAIR at unknown commit'  # not a git checkout
  built = json.loads((tmp_path / 'net' / 'constructed.json').read_text())
  assert built == dict(inp_channels=3, out_channels=3, dim=48, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1,
                       heads=[1, 2, 4, 8], ffn_expansion_factor=2.66, bias=False, LayerNorm_type='WithBias')


@pytest.mark.parametrize('pair, message', [
    ('hair', 'expected NAME=DIR'),
    ('swinir={tmp}', 'swinir needs no checkout (its PyTorch reference is the pip package spandrel'),
    ('nonet={tmp}', "unknown architecture 'nonet'"),
    ('hair={tmp}', 'net/HAIR.py not found (expected a checkout of github.com/toummHus/HAIR)'),
])
def test_bench_official_checkout_errors(tmp_path, capsys, pair, message):
  assert cli.main(['bench', '--smoke', '--presets', 'hair-aio-small', '--official', pair.format(tmp=tmp_path)]) == 2
  assert message in capsys.readouterr().err


def test_bench_compare_compile_adds_a_torch_compile_column(capsys):
  assert cli.main(['bench', '--smoke', '--compare-compile', '--presets', 'dncnn-gray-25']) == 0
  out = capsys.readouterr().out
  header = [l for l in out.splitlines() if l.startswith('| preset |')][0]
  assert 'torch.compile MP/s' in header and 'JAX/compile' in header and 'JAX first call' in header
  row = [l for l in out.splitlines() if l.startswith('| dncnn-gray-25 | 32²')]
  assert len(row) == 1 and '—' not in row[0], out  # JAX, eager and compiled PyTorch all measured


def test_bench_bf16_pytorch_row_at_a_size_other_than_img_size():
  """spandrel's SwinIR builds its shift mask in float32 when the input is not img_size (64 here), which
  a bfloat16 model rejected with a dtype error; the PyTorch bf16 row runs under CPU autocast."""
  row = bench._run_one('torch', 'swinir-lightweight-x2', 24, 1, 1, 'bf16')
  assert row['dtype'] == 'bf16' and row['framework'] == 'torch' and row['seconds'] > 0
