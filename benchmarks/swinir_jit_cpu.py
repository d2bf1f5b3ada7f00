"""SwinIR's compile time, forward time and XLA temporary buffers on CPU, JAX only.

    python benchmarks/swinir_jit_cpu.py [--preset swinir-color-dn15] [--size 128] [--batch 1] [--repeats 4]

Prints one JSON line: `jit(...).lower().compile()` seconds, the median forward time, XLA's temporary
buffer size (`memory_analysis`), peak RSS and the load average. Run it with two checkouts (one
virtual environment each, alternating fresh processes) to A/B a change in the same conditions;
check `uptime` first.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import time

import numpy as np


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--preset', default='swinir-color-dn15')
  parser.add_argument('--size', type=int, default=128)
  parser.add_argument('--batch', type=int, default=1)
  parser.add_argument('--repeats', type=int, default=4)
  args = parser.parse_args(argv)

  import jax
  import jax.numpy as jnp
  from flax import nnx
  import jaxrestore

  model = jaxrestore.load(args.preset, pretrained=False)
  x = jnp.asarray(np.random.default_rng(0).random((args.batch, args.size, args.size, model.config.in_chans)),
                  jnp.float32)
  graphdef, state = nnx.split(model)
  forward = jax.jit(lambda st, v: nnx.merge(graphdef, st)(v))
  t0 = time.perf_counter()
  compiled = forward.lower(state, x).compile()
  compile_s = time.perf_counter() - t0
  jax.block_until_ready(compiled(state, x))
  times = []
  for _ in range(args.repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(compiled(state, x))
    times.append(time.perf_counter() - t0)
  print(json.dumps(dict(
      code=jaxrestore.__file__, preset=args.preset, size=args.size, batch=args.batch,
      compile_s=round(compile_s, 2), median_s=round(float(np.median(times)), 3), times=[round(t, 3) for t in times],
      xla_temp_mib=round(compiled.memory_analysis().temp_size_in_bytes / 2 ** 20),
      peak_rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024, load_average=os.getloadavg())))
  return 0


if __name__ == '__main__':
  raise SystemExit(main())
