"""CPU time of one full-size DreamClear denoiser forward (official config, 2.2 B parameters, random weights)
in bfloat16 at latent 32^2 (256^2 images).

By default one classifier-free-guidance step as test.py runs it per sampling step (`forward_with_cfg`
on the (conditional, unconditional) batch of 2, 120 caption tokens of width 4096); `--raw` times the
plain forward with `--batch` samples instead. Prints compile time, then the median of `--repeats`
runs, with the machine's load average before and after (on a shared machine the numbers move with
it).

  python benchmarks/dreamclear_forward_cpu.py [--latent 32] [--repeats 3] [--raw --batch 1]
"""
from __future__ import annotations

import argparse
import os
import statistics
import time


def load_average() -> str:
  return ' '.join(f'{v:.2f}' for v in os.getloadavg())


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument('--latent', type=int, default=32)
  ap.add_argument('--repeats', type=int, default=3)
  ap.add_argument('--raw', action='store_true', help='time the plain forward instead of a CFG step')
  ap.add_argument('--batch', type=int, default=1, help='batch of the plain forward (--raw)')
  args = ap.parse_args()

  import jax
  import jax.numpy as jnp
  import numpy as np
  from flax import nnx

  from jaxrestore.models import dreamclear as dc

  print(f'jax {jax.__version__} on {jax.devices()[0].platform}, {os.cpu_count()} CPUs; load average before: '
        f'{load_average()}')
  cfg = dc.DreamClearConfig(**dc.OFFICIAL, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16)
  t0 = time.perf_counter()
  model = dc.DreamClear(cfg, rngs=nnx.Rngs(0))
  graphdef, state = nnx.split(model)
  n = sum(x.size for x in jax.tree.leaves(state))
  print(f'random bf16 weights: {n / 1e9:.3f} G parameters built in {time.perf_counter() - t0:.0f} s')

  rng = np.random.default_rng(0)
  s = args.latent
  b = 2 if not args.raw else args.batch
  x = rng.standard_normal((b, s, s, 4)).astype(np.float32)
  c_lq, c_pre = (rng.standard_normal((1, s, s, 4)).astype(np.float32) for _ in range(2))
  caption = rng.standard_normal((b, cfg.model_max_length, cfg.caption_channels)).astype(np.float32)
  mask = (np.arange(cfg.model_max_length) < 60)[None].astype(np.int32)
  t = np.full((b,), 999)

  @jax.jit
  def step(state, x, t, caption, mask, c_lq, c_pre):
    m = nnx.merge(graphdef, state)
    kw = dict(caption_mask=mask, c_lq=c_lq, c_pre=c_pre)
    return m(x, t, caption, **kw) if args.raw else m.forward_with_cfg(x, t, caption, 4.5, **kw)

  inputs = (state, x, t, caption, mask, c_lq, c_pre)
  t0 = time.perf_counter()
  out = jax.block_until_ready(step(*inputs))
  print(f'first call (compile + run): {time.perf_counter() - t0:.1f} s; output {out.shape} {out.dtype}, '
        f'finite: {bool(np.isfinite(np.asarray(out, np.float32)).all())}')
  times = []
  for _ in range(args.repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(step(*inputs))
    times.append(time.perf_counter() - t0)
  what = f'plain forward, batch {b}' if args.raw else 'CFG step (forward_with_cfg, batch 2)'
  print(f'{what} at latent {s}x{s}, bfloat16: median {statistics.median(times):.2f} s over {len(times)} runs '
        f'({", ".join(f"{v:.2f}" for v in times)}); load average after: {load_average()}')


if __name__ == '__main__':
  main()
