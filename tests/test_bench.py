"""`jaxrestore bench --smoke` runs end to end, with each architecture's own PyTorch reference;
numbers are not asserted."""
from __future__ import annotations

import io

from jaxrestore import bench, cli


def test_bench_smoke(capsys):
  assert cli.main(['bench', '--smoke', '--presets', 'swinir-lightweight-x2,dncnn-gray-25']) == 0
  out = capsys.readouterr().out
  for preset in ('swinir-lightweight-x2', 'dncnn-gray-25'):
    row = [l for l in out.splitlines() if l.startswith(f'| {preset} | 32²')]
    assert len(row) == 1 and '—' not in row[0], out  # JAX and PyTorch (spandrel's SwinIR / DnCNN) rows
  assert 'load average' in out


def test_bench_says_which_architectures_it_cannot_compare():
  out = io.StringIO()
  rows = bench.run_bench(('hair-3d',), (32,), (1,), 1, 'fp32', frameworks=('torch',), out=out)
  assert rows == []
  assert 'hair-3d: no PyTorch row' in out.getvalue() and 'allinone_forward_cpu.py' in out.getvalue()


def test_bench_compare_compile_adds_a_torch_compile_column(capsys):
  assert cli.main(['bench', '--smoke', '--compare-compile', '--presets', 'dncnn-gray-25']) == 0
  out = capsys.readouterr().out
  header = [l for l in out.splitlines() if l.startswith('| preset |')][0]
  assert 'torch.compile MP/s' in header and 'JAX/compile' in header and 'JAX first call' in header
  row = [l for l in out.splitlines() if l.startswith('| dncnn-gray-25 | 32²')]
  assert len(row) == 1 and '—' not in row[0], out  # JAX, eager and compiled PyTorch all measured
