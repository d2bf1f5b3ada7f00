"""Peak memory of converting a full-size DreamClear-1024 checkpoint to bfloat16 (`jaxrestore convert`).

Writes a synthetic stand-in for the official `DreamClear-1024.pth` on the fly: `torch.save({'state_dict':
sd})` with exactly the official key set, order and shapes (2,413 tensors including the
`base_model.pos_embed` buffer, 2.217 G float32 numbers, 8.9 GB; `dreamclear.torch_state_dict_shapes`). The
tensor values are zeros: each tensor is a private mapping of its own sparse file (`torch.from_file`), so
writing the checkpoint never holds 8.9 GB of anonymous memory. Then runs `jaxrestore convert SRC OUT
--dtype bfloat16` in a fresh process and reports its peak RSS against the converted size; the claim
checked is peak RSS <= converted output + 1 GB. Temporary files are deleted.

  python benchmarks/dreamclear_convert_rss.py [--dir /tmp] [--keep]
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
  print(f'PEAK_RSS_BYTES {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}', file=sys.stderr)
'''

WRITER = r'''
import sys
from pathlib import Path
import torch
from jaxrestore.models import dreamclear as dc
src, scratch = Path(sys.argv[1]), Path(sys.argv[2])
sd = {}
for i, (key, shape) in enumerate(dc.torch_state_dict_shapes(dc.DreamClearConfig(**dc.OFFICIAL)).items()):
  n = 1
  for s in shape:
    n *= s
  backing = scratch / f'{i}.bin'
  with open(backing, 'wb') as f:
    f.truncate(4 * n)   # sparse: reads as zeros, costs no memory until touched
  sd[key] = torch.from_file(str(backing), shared=False, size=n, dtype=torch.float32).view(shape)
torch.save({'state_dict': sd}, src)
print(len(sd), sum(t.numel() for t in sd.values()))
'''


def _gb(n: float) -> str:
  return f'{n / 1e9:.2f} GB'


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument('--dir', default=tempfile.gettempdir(), help='where the ~13 GB of temporary files go')
  ap.add_argument('--keep', action='store_true', help='keep the synthetic checkpoint and the output')
  args = ap.parse_args()
  free = shutil.disk_usage(args.dir).free
  if free < 16e9:
    raise SystemExit(f'{args.dir} has {_gb(free)} free; the synthetic checkpoint (8.9 GB) and its bf16 '
                     f'conversion (4.4 GB) need ~14 GB')
  tmp = Path(tempfile.mkdtemp(prefix='jaxrestore-dreamclear-', dir=args.dir))
  try:
    scratch = tmp / 'scratch'
    scratch.mkdir()
    src = tmp / 'DreamClear-1024.pth'
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, '-c', WRITER, str(src), str(scratch)], capture_output=True, text=True)
    if proc.returncode:
      raise SystemExit(proc.stderr)
    shutil.rmtree(scratch)
    count, numel = (int(v) for v in proc.stdout.split())
    print(f'synthetic checkpoint: {count} tensors, {numel:,} numbers, {_gb(src.stat().st_size)} '
          f'(written in {time.perf_counter() - t0:.0f} s)')

    out = tmp / 'converted'
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, '-c', RSS_WRAPPER, 'convert', str(src), str(out), '--dtype', 'bfloat16'],
                          capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
      raise SystemExit(proc.stderr[-5000:])
    peak = int([l for l in proc.stderr.splitlines() if l.startswith('PEAK_RSS_BYTES')][-1].split()[1])
    out_bytes = sum(p.stat().st_size for p in out.rglob('*') if p.is_file())
    budget = out_bytes + 1e9
    print(f'converted to bfloat16: {_gb(out_bytes)} in {wall:.0f} s')
    print(f'peak RSS of `jaxrestore convert`: {_gb(peak)} ({peak / 2**30:.2f} GiB); '
          f'budget converted + 1 GB = {_gb(budget)}: {"OK" if peak <= budget else "EXCEEDED"}')
    if peak > budget:
      raise SystemExit(1)
  finally:
    if args.keep:
      print(f'kept {tmp}')
    else:
      shutil.rmtree(tmp, ignore_errors=True)


if __name__ == '__main__':
  main()
