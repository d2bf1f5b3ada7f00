"""`jaxrestore bench --smoke` runs end to end (JAX and PyTorch rows); numbers are not asserted."""
from __future__ import annotations

from jaxrestore import cli


def test_bench_smoke(capsys):
  assert cli.main(['bench', '--smoke', '--presets', 'swinir-lightweight-x2']) == 0
  out = capsys.readouterr().out
  row = [l for l in out.splitlines() if l.startswith('| swinir-lightweight-x2 | 32²')]
  assert len(row) == 1 and '—' not in row[0], out
