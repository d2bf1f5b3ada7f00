"""bfloat16 matrix products on CPU: XLA:CPU against PyTorch (oneDNN), at SwinIR-M's qkv shape.

    python benchmarks/bf16_gemm_cpu.py [--m 16384 --k 180 --n 540] [--repeats 10]

Times one (m, k) · (k, n) product in float32 and in bfloat16: JAX as `a @ b` (bf16 output) and with
float32 accumulation requested (`preferred_element_type`), PyTorch as `a @ b` on all cores. glibc is
told to keep freed memory first (`mallopt`), so a fresh output buffer's page faults are not timed.
Explains why a bf16 forward is no faster than float32 in JAX on a CPU with AVX-512 BF16 while
PyTorch's is. Check `uptime` first.
"""
from __future__ import annotations

import argparse
import os

import numpy as np

from swinir_layout_cpu import best_time, keep_freed_memory


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--m', type=int, default=16384)
  parser.add_argument('--k', type=int, default=180)
  parser.add_argument('--n', type=int, default=540)
  parser.add_argument('--repeats', type=int, default=10)
  args = parser.parse_args(argv)
  keep_freed_memory()

  import jax
  import jax.numpy as jnp
  import torch
  torch.set_num_threads(os.cpu_count())
  flags = set()
  if os.path.exists('/proc/cpuinfo'):
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('flags'):
          flags.update(line.split(':', 1)[1].split())
  bf16_isa = sorted(flags & {'avx512_bf16', 'amx_bf16'})
  print(f'load average {" / ".join(f"{v:.2f}" for v in os.getloadavg())}, {os.cpu_count()} cores, '
        f'jax {jax.__version__}, torch {torch.__version__}, CPU bf16 instructions: {bf16_isa or "none"}')
  m, k, n = args.m, args.k, args.n
  flop = 2 * m * k * n
  rng = np.random.default_rng(0)
  a_np, b_np = rng.random((m, k), dtype=np.float32), rng.random((k, n), dtype=np.float32)
  print(f'\n({m}, {k}) · ({k}, {n}), ms (GFLOP/s)\n')
  print('| dtype | JAX a @ b | JAX, float32 accumulation | PyTorch a @ b |')
  print('|---|---|---|---|')
  for jdt, tdt in ((jnp.float32, torch.float32), (jnp.bfloat16, torch.bfloat16)):
    a, b = jnp.asarray(a_np, jdt), jnp.asarray(b_np, jdt)
    plain = jax.jit(lambda x, y: x @ y)
    wide = jax.jit(lambda x, y: jnp.dot(x, y, preferred_element_type=jnp.float32))
    ta, tb = torch.from_numpy(a_np).to(tdt), torch.from_numpy(b_np).to(tdt)
    times = (best_time(lambda: jax.block_until_ready(plain(a, b)), args.repeats),
             best_time(lambda: jax.block_until_ready(wide(a, b)), args.repeats),
             best_time(lambda: ta @ tb, args.repeats))
    print(f'| {jnp.dtype(jdt).name} | ' + ' | '.join(f'{t * 1e3:.1f} ({flop / t / 1e9:.0f})' for t in times) + ' |')
  print(f'load average after: {" / ".join(f"{v:.2f}" for v in os.getloadavg())}')
  return 0


if __name__ == '__main__':
  raise SystemExit(main())
