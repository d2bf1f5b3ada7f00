"""Peak memory of reading a large PyTorch checkpoint with `jaxrestore.convert.torch_checkpoint`.

Writes a synthetic float32 checkpoint with torch (default ~2 GB: 32 tensors of 64 MiB) into a
temporary folder, then, in a fresh Python process, reads it with `read_state_dict` and materialises
the tensors one at a time (sum, check, drop), and prints the reader's peak RSS (ru_maxrss) and wall
time.  The temporary files are always deleted.

    .venv/bin/python benchmarks/convert_peak_rss.py [--size-gb 2] [--tensor-mb 64] [--compare-torch]

`--compare-torch` also measures `torch.load(weights_only=True)` on the same file (reference only).
Note that the freshly written file is in the OS page cache, so the times are not cold-disk times.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

WRITER = r'''
import sys, torch
path, n_tensors, numel = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
# Tensor i is filled with the value i, so the reader can check every element cheaply.
obj = {f'blocks.{i}.weight': torch.full((numel // 4096, 4096), float(i)) for i in range(n_tensors)}
torch.save(obj, path)
'''

READER = r'''
import json, resource, sys, time
import numpy as np
from jaxrestore.convert.torch_checkpoint import LazyArray, read_state_dict
path = sys.argv[1]
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
sd = read_state_dict(path)
t_read = time.perf_counter() - t0
after_read = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
total = 0
for i, (name, lazy) in enumerate(sd.items()):
    assert type(lazy) is LazyArray
    arr = np.asarray(lazy)
    s = float(arr.sum(dtype=np.float64))
    assert s == float(i) * arr.size, (name, s)
    total += arr.nbytes
    del arr
wall = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps(dict(tensors=len(sd), bytes=total, base_kb=base, after_read_kb=after_read,
                      peak_kb=peak, read_s=t_read, wall_s=wall)))
'''

TORCH_READER = r'''
import json, resource, sys, time
import torch
path = sys.argv[1]
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
sd = torch.load(path, weights_only=True, map_location='cpu')
total = sum(t.numel() * t.element_size() for t in sd.values())  # torch.load reads all data
wall = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps(dict(tensors=len(sd), bytes=total, base_kb=base, peak_kb=peak, wall_s=wall)))
'''


def _run(code: str, *args: str) -> dict:
  out = subprocess.run([sys.executable, '-c', code, *args], check=True, capture_output=True,
                       text=True, cwd=REPO)
  return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--size-gb', type=float, default=2.0)
  parser.add_argument('--tensor-mb', type=int, default=64)
  parser.add_argument('--compare-torch', action='store_true')
  args = parser.parse_args()

  numel = args.tensor_mb * (1 << 20) // 4
  n_tensors = max(1, round(args.size_gb * 1e9 / (numel * 4)))
  tmp = Path(tempfile.mkdtemp(prefix='jaxrestore_peak_rss_'))
  try:
    path = tmp / 'synthetic.pth'
    t0 = time.perf_counter()
    subprocess.run([sys.executable, '-c', WRITER, str(path), str(n_tensors), str(numel)],
                   check=True)
    size = path.stat().st_size
    print(f'wrote {path.name}: {n_tensors} x {args.tensor_mb} MiB float32 = {size / 1e9:.2f} GB '
          f'in {time.perf_counter() - t0:.1f} s')

    r = _run(READER, str(path))
    mib = 1024  # ru_maxrss is in KiB on Linux
    print(f'jaxrestore read_state_dict + one-at-a-time materialisation of {r["tensors"]} tensors '
          f'({r["bytes"] / 1e9:.2f} GB):')
    print(f'  RSS after imports     {r["base_kb"] / mib:8.1f} MiB')
    print(f'  peak after reading    {r["after_read_kb"] / mib:8.1f} MiB   '
          f'(read_state_dict: {r["read_s"] * 1e3:.1f} ms)')
    print(f'  peak overall          {r["peak_kb"] / mib:8.1f} MiB   '
          f'(+{(r["peak_kb"] - r["base_kb"]) / mib:.1f} MiB over imports; one tensor is '
          f'{args.tensor_mb} MiB)')
    print(f'  wall time             {r["wall_s"]:8.2f} s')
    if args.compare_torch:
      t = _run(TORCH_READER, str(path))
      print('reference: torch.load(weights_only=True) of the same file:')
      print(f'  peak overall          {t["peak_kb"] / mib:8.1f} MiB   '
            f'(+{(t["peak_kb"] - t["base_kb"]) / mib:.1f} MiB over imports)')
      print(f'  wall time             {t["wall_s"]:8.2f} s')
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == '__main__':
  main()
