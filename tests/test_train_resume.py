"""Kill-and-resume equality and corrupted-checkpoint fallback, with real subprocesses of
`jaxrestore train` (tiny DnCNN, a few images, a step every few milliseconds)."""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope='module')
def folders(data_dir, tmp_path_factory):
  images = tmp_path_factory.mktemp('images')
  for p in sorted((data_dir / 'trainsets' / 'BSD400').glob('*.png'))[:8]:
    shutil.copy(p, images / p.name)
  return images, tmp_path_factory.mktemp('tfds')


def command(folders, workdir, *extra):
  images, tfds = folders
  return [sys.executable, '-m', 'jaxrestore.train.cli', 'dncnn_gray:tiny', '--workdir', str(workdir),
          '--no-progress', '--set', f'data.train.folder={images}', '--set', f'data.tfds_dir={tfds}', *extra]


def env():
  e = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  e['PYTHONWARNINGS'] = 'default'
  return e


def run(cmd) -> subprocess.CompletedProcess:
  out = subprocess.run(cmd, cwd=REPO, env=env(), capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  return out


def losses(workdir) -> dict[int, float]:
  rows = [json.loads(line) for line in (Path(workdir) / 'metrics.jsonl').read_text().splitlines() if line.strip()]
  return {r['step']: r['loss'] for r in rows if 'loss' in r}


def test_sigkill_at_an_arbitrary_step_then_same_command_continues_identically(folders, tmp_path):
  total = 60
  args = ('--set', f'total_steps={total}', '--set', 'checkpoint.every=3')
  reference = tmp_path / 'reference'
  run(command(folders, reference, *args))
  expected = losses(reference)
  assert sorted(expected) == list(range(1, total + 1))

  kill_at = random.Random(time.time_ns()).randint(10, 30)
  workdir = tmp_path / 'killed'
  proc = subprocess.Popen(command(folders, workdir, *args), cwd=REPO, env=env(), stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  metrics = workdir / 'metrics.jsonl'
  deadline = time.time() + 240
  while time.time() < deadline and proc.poll() is None:
    if metrics.exists() and len(metrics.read_text().splitlines()) >= kill_at:
      break
    time.sleep(0.005)
  os.kill(proc.pid, signal.SIGKILL)
  proc.wait()
  assert proc.returncode == -signal.SIGKILL
  before = losses(workdir)
  assert 0 < max(before) < total, f'killed at step {max(before)}: the run was not interrupted'
  committed = [int(p.name) for p in (workdir / 'checkpoints').iterdir() if p.name.isdigit()]

  out = run(command(folders, workdir, *args))  # the same command again
  after = losses(workdir)
  saved = [int(line.split('/')[-1]) for line in out.stderr.splitlines() if line.startswith('resumed from')]
  print(f'SIGKILL after step {max(before)} (target {kill_at}); checkpoints {sorted(committed)}; '
        f'resumed from step {saved}')
  assert committed and saved == [max(committed)] and saved[0] < max(before)
  assert after == expected  # every step's loss, bit for bit, and nothing duplicated or missing


def test_corrupted_latest_checkpoints_fall_back_with_a_warning(folders, tmp_path):
  args = ('--set', 'total_steps=8', '--set', 'checkpoint.every=2', '--set', 'checkpoint.keep=3')
  workdir = tmp_path / 'run'
  run(command(folders, workdir, *args))
  expected = losses(workdir)
  ckpts = workdir / 'checkpoints'
  assert sorted(p.name for p in ckpts.iterdir() if p.name.isdigit()) == ['4', '6', '8']
  # 8: every array file of the state truncated; 6: the arrays decode but one value changed
  # (caught by the fingerprint); plus a leftover temporary folder of a save that was killed.
  for f in (ckpts / '8' / 'state').rglob('*'):
    if f.is_file() and f.parent.name == 'd':
      f.write_bytes(f.read_bytes()[:7])
  meta = json.loads((ckpts / '6' / 'meta' / 'metadata').read_text())
  meta['fingerprint'][0] = (meta['fingerprint'][0] + 1) % 2**32
  (ckpts / '6' / 'meta' / 'metadata').write_text(json.dumps(meta))
  shutil.copytree(ckpts / '4', ckpts / '10.orbax-checkpoint-tmp-123')

  out = run(command(folders, workdir, *args))
  assert out.stderr.count('is unusable') == 2, out.stderr[-3000:]
  assert 'resumed from' in out.stderr and out.stderr.split('resumed from')[1].split()[0].endswith('/4')
  assert losses(workdir) == expected
  names = sorted(p.name for p in ckpts.iterdir())
  assert any(n.startswith('8.corrupt-') for n in names) and any(n.startswith('6.corrupt-') for n in names)
  assert {'4', '6', '8'} <= set(names)

  # Nothing usable at all: a warning per checkpoint and a fresh start, not a crash.
  for p in ckpts.iterdir():
    if p.name.isdigit():
      shutil.rmtree(p / 'state')
  out = run(command(folders, workdir, *args))
  assert 'resumed from' not in out.stderr and out.stderr.count('is unusable') == 3
  assert losses(workdir) == expected
