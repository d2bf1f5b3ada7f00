"""Peak memory of `jaxrestore convert` on a large checkpoint (end to end: read, map, write orbax).

Writes a synthetic ~2 GB DnCNN-shaped checkpoint (1024 features, 55 conv layers, float32) with torch,
converts it with the `jaxrestore convert` CLI in a fresh process, and prints that process's peak RSS
and wall time next to the checkpoint size. Temporary files are deleted.

  python benchmarks/convert_large_rss.py [--features 1024] [--depth 55]
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RSS_WRAPPER = r'''
import resource, runpy, sys
sys.argv = ['jaxrestore'] + sys.argv[1:]
try:
  runpy.run_module('jaxrestore.cli', run_name='__main__')
finally:
  print(f'PEAK_RSS_MIB {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}', file=sys.stderr)
'''


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument('--features', type=int, default=1024)
  ap.add_argument('--depth', type=int, default=55)
  args = ap.parse_args()
  import torch
  tmp = Path(tempfile.mkdtemp(prefix='jaxrestore-convert-'))
  try:
    f, sd = args.features, {}
    for i in range(args.depth):
      cin, cout = (1 if i == 0 else f), (1 if i == args.depth - 1 else f)
      sd[f'model.{2 * i}.weight'] = torch.randn(cout, cin, 3, 3)
      sd[f'model.{2 * i}.bias'] = torch.randn(cout)
    src = tmp / 'big_dncnn.pth'
    torch.save(sd, src)
    del sd
    size_gb = src.stat().st_size / 1e9
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, '-c', RSS_WRAPPER, 'convert', str(src), str(tmp / 'out')],
                          capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
      raise SystemExit(proc.stderr)
    peak = [l for l in proc.stderr.splitlines() if l.startswith('PEAK_RSS_MIB')][-1].split()[1]
    out_gb = sum(p.stat().st_size for p in (tmp / 'out').rglob('*') if p.is_file()) / 1e9
    print(f'checkpoint {size_gb:.2f} GB ({args.depth} convs x {f} features) -> converted {out_gb:.2f} GB '
          f'in {wall:.1f} s; peak RSS of `jaxrestore convert`: {peak} MiB')
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == '__main__':
  main()
