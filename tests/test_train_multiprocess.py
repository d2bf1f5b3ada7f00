"""Two local CPU processes (jax.distributed over gloo, each reading its half of every global batch)
train exactly like one process with the same global batch."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _losses(workdir):
  rows = [json.loads(line) for line in (workdir / 'metrics.jsonl').read_text().splitlines() if line.strip()]
  return [(r['step'], r['loss']) for r in rows if 'loss' in r]


def test_two_processes_equal_one_process(data_dir, tmp_path):
  images = tmp_path / 'images'
  images.mkdir()
  for p in sorted((data_dir / 'trainsets' / 'BSD400').glob('*.png'))[:8]:
    shutil.copy(p, images / p.name)
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  base = [sys.executable, '-m', 'jaxrestore.train.cli', 'dncnn_gray:tiny', '--no-progress',
          '--set', f'data.train.folder={images}', '--set', f'data.tfds_dir={tmp_path / "tfds"}',
          '--set', 'total_steps=6', '--set', 'data.batch_size=4']
  # Prepare the records once, so the two processes do not build the same tfds folder concurrently.
  single = subprocess.run(base + ['--workdir', str(tmp_path / 'single')], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
  assert single.returncode == 0, single.stderr[-3000:]

  port = _free_port()
  procs = [subprocess.Popen(base + ['--workdir', str(tmp_path / 'multi'), '--coordinator', f'127.0.0.1:{port}',
                                    '--num-processes', '2', '--process-id', str(i)],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for i in range(2)]
  outs = [p.communicate(timeout=300) for p in procs]
  for p, (_, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  assert 'multi-process run' in outs[0][1]

  a, b = _losses(tmp_path / 'single'), _losses(tmp_path / 'multi')
  assert [s for s, _ in a] == [s for s, _ in b] == list(range(1, 7))
  diffs = [abs(x - y) / y for (_, x), (_, y) in zip(a, b)]
  print(f'two-process vs one-process: max relative loss difference = {max(diffs):.3g}')
  # float32 tolerance: the cross-process gradient all-reduce sums in another order than one process,
  # and Adam's normalised steps carry those last-bit differences on (1e-8..1e-5 over 6 steps).
  assert max(diffs) < 2e-4
  # Each process wrote its own data-iterator state into the shared checkpoint.
  data_files = sorted(p.name for p in (tmp_path / 'multi' / 'checkpoints' / '6' / 'data').glob('*.json'))
  assert data_files == ['process_0-of-2.json', 'process_1-of-2.json']

  # The two-process checkpoint exports in one process and equals the one-process export.
  export = subprocess.run(base + ['--workdir', str(tmp_path / 'multi'), '--export-only'], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
  assert export.returncode == 0, export.stderr[-3000:]
  import jaxrestore
  from jaxrestore.convert.build import params_of
  one = params_of(jaxrestore.load(weights=tmp_path / 'single' / 'export'))
  two = params_of(jaxrestore.load(weights=tmp_path / 'multi' / 'export'))
  assert one.keys() == two.keys()
  assert max(float(np.max(np.abs(one[k] - two[k]))) for k in one) < 1e-4
