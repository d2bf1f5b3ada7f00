"""Executes every notebook's code cells, in order, in one namespace (no Jupyter kernel needed).

Shell and magic lines (`!pip install ...`, `%matplotlib`) are Colab set-up and are skipped.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / 'notebooks').glob('*.ipynb'))


def code_cells(path: Path) -> list[str]:
  cells = json.loads(path.read_text())['cells']
  sources = [''.join(c['source']) for c in cells if c['cell_type'] == 'code']
  return ['\n'.join(l for l in s.splitlines() if not l.lstrip().startswith(('!', '%'))) for s in sources]


def test_there_are_notebooks():
  assert NOTEBOOKS


@pytest.mark.parametrize('path', NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  namespace = {'__name__': '__main__'}
  for i, source in enumerate(code_cells(path)):
    exec(compile(source, f'{path.name}[cell {i}]', 'exec'), namespace)
