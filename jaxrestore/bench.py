"""`jaxrestore bench`: forward throughput (megapixels/s) and peak memory, JAX vs PyTorch.

Every (framework, preset, size, batch) runs in a fresh subprocess so peak RSS is its own. PyTorch
rows need `torch` and `spandrel` (the test extra); without them only JAX rows are printed.
Random weights with the preset's hyperparameters: speed does not depend on the values.
"""
from __future__ import annotations

import itertools
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_PRESETS = ('swinir-color-dn15', 'swinir-lightweight-x2')
SHIM = Path(__file__).resolve().parent.parent / 'tests' / 'shims'


def _rss_mib() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _run_one(framework: str, preset_name: str, size: int, batch: int, repeats: int, dtype: str) -> dict:
  import numpy as np
  import jaxrestore
  preset = jaxrestore.get_preset(preset_name)
  x = np.random.default_rng(0).random((batch, size, size, preset.channels), dtype=np.float32)
  if framework == 'jax':
    import jax
    import jax.numpy as jnp
    from flax import nnx
    model = jaxrestore.load(preset_name, pretrained=False,
                            dtype=jnp.bfloat16 if dtype == 'bf16' else None)
    forward = nnx.jit(lambda m, v: m(v))
    xs = jnp.asarray(x, jnp.bfloat16 if dtype == 'bf16' else jnp.float32)
    t0 = time.perf_counter()
    forward(model, xs).block_until_ready()
    first = time.perf_counter() - t0
    run = lambda: forward(model, xs).block_until_ready()
    device = f'jax {jax.__version__} {jax.devices()[0].device_kind}'
  else:
    sys.path.insert(0, str(SHIM))
    import torch
    from spandrel.architectures.SwinIR import SwinIR as TorchSwinIR
    torch.set_num_threads(os.cpu_count())
    tmodel = TorchSwinIR(**preset.hyperparameters).eval()
    xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
    if dtype == 'bf16':
      tmodel, xt = tmodel.bfloat16(), xt.bfloat16()

    def run():
      with torch.no_grad():
        tmodel(xt)

    t0 = time.perf_counter()
    run()
    first = time.perf_counter() - t0
    device = f'torch {torch.__version__} ({torch.get_num_threads()} threads)'
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    run()
    times.append(time.perf_counter() - t0)
  median = float(np.median(times))
  return dict(framework=framework, preset=preset_name, size=size, batch=batch, dtype=dtype,
              seconds=median, first_call_s=first, mpix_per_s=batch * size * size / median / 1e6,
              peak_rss_mib=_rss_mib(), device=device)


def run_bench(presets=DEFAULT_PRESETS, sizes=(128, 256), batches=(1, 8), repeats=3, dtype='fp32',
              frameworks=('jax', 'torch'), timeout=3600, out=sys.stdout) -> list[dict]:
  rows = []
  for preset, size, batch, fw in itertools.product(presets, sizes, batches, frameworks):
    cmd = [sys.executable, '-m', 'jaxrestore.bench', '--one', fw, preset, str(size), str(batch), str(repeats), dtype]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
      last = (proc.stderr.strip().splitlines() or ['failed'])[-1]
      print(f'  {fw:5s} {preset} {size}² batch {batch}: skipped ({last})', file=out)
      continue
    rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
  return rows


def format_table(rows: list[dict]) -> str:
  lines = ['| preset | size | batch | dtype | JAX MP/s | PyTorch MP/s | JAX/PyTorch | JAX peak RSS | PyTorch peak RSS |',
           '|---|---|---|---|---|---|---|---|---|']
  keyed = {(r['preset'], r['size'], r['batch'], r['dtype'], r['framework']): r for r in rows}
  for (preset, size, batch, dtype) in dict.fromkeys((r['preset'], r['size'], r['batch'], r['dtype']) for r in rows):
    j = keyed.get((preset, size, batch, dtype, 'jax'))
    t = keyed.get((preset, size, batch, dtype, 'torch'))
    ratio = f'{j["mpix_per_s"] / t["mpix_per_s"]:.2f}×' if j and t else '—'
    cell = lambda r, k, f: f.format(r[k]) if r else '—'
    lines.append(f'| {preset} | {size}² | {batch} | {dtype} | {cell(j, "mpix_per_s", "{:.4f}")} | '
                 f'{cell(t, "mpix_per_s", "{:.4f}")} | {ratio} | {cell(j, "peak_rss_mib", "{:.0f} MiB")} | '
                 f'{cell(t, "peak_rss_mib", "{:.0f} MiB")} |')
  return '\n'.join(lines)


def machine_line() -> str:
  return f'{platform.machine()} {platform.processor() or ""}, {os.cpu_count()} cores, Python {platform.python_version()}'


if __name__ == '__main__' and len(sys.argv) > 1 and sys.argv[1] == '--one':
  fw, preset, size, batch, repeats, dtype = sys.argv[2:8]
  print(json.dumps(_run_one(fw, preset, int(size), int(batch), int(repeats), dtype)))
