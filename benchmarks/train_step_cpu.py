"""Training-step time on CPU: the hand-written backward passes of `jaxrestore.layers` (depth-wise
convolution, channel matmul) against plain autodiff of the same forward, same process, same shapes.

    python benchmarks/train_step_cpu.py [--models dualfreq,restormer,hair,promptir] [--batch 8] [--patch 64]

The models are `benchmarks/allinone_compare.py`'s comparison configurations (~16-17 M parameters);
one step = value_and_grad of the L1 loss on a (batch, patch, patch, 3) input, jitted, median of
`--repeats`. Check `uptime` first: the load average is printed, and times taken under load are not
comparable.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np


def autodiff_layers():
  """The same forward functions with their custom VJPs stripped (what `jax.grad` derives by itself)."""
  import jax.numpy as jnp
  from jaxrestore import layers

  def depthwise(x, kernel):
    kh, kw = kernel.shape[-3:-1]
    return layers._shifted_products(x, kernel, kh // 2, kw // 2)

  def matmul(x, kernel):
    return jnp.einsum('...i,io->...o', x, kernel)

  return {'depthwise_conv2d': depthwise, 'channel_matmul': matmul}


def step_seconds(model_spec: dict, batch: int, patch: int, repeats: int) -> tuple[float, float]:
  import jax
  import jax.numpy as jnp
  from flax import nnx
  from jaxrestore.train.trainer import resolve_model
  arch, config = resolve_model(model_spec)
  model = arch.model_cls(config, rngs=nnx.Rngs(0))
  graphdef, state = nnx.split(model)
  x = jnp.asarray(np.random.default_rng(0).random((batch, patch, patch, 3), dtype=np.float32))

  def loss(state, x):
    return jnp.mean(jnp.abs(nnx.merge(graphdef, state)(x) - x))

  step = jax.jit(jax.value_and_grad(loss))
  t0 = time.perf_counter()
  jax.block_until_ready(step(state, x))
  first = time.perf_counter() - t0
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(step(state, x))
    times.append(time.perf_counter() - t0)
  return float(np.median(times)), first


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--models', default='dualfreq,restormer,hair,promptir')
  parser.add_argument('--batch', type=int, default=8)
  parser.add_argument('--patch', type=int, default=64)
  parser.add_argument('--repeats', type=int, default=3)
  args = parser.parse_args(argv)
  sys.path.insert(0, str(Path(__file__).parent))
  import allinone_compare
  import jax
  from jaxrestore import layers
  print(f'load average {" / ".join(f"{v:.2f}" for v in os.getloadavg())}, {os.cpu_count()} cores, jax {jax.__version__}')
  print('| model | params | autodiff step | hand-written backward step | speed-up |\n|---|---|---|---|---|')
  custom = {name: getattr(layers, name) for name in ('depthwise_conv2d', 'channel_matmul')}
  for name in args.models.split(','):
    spec = allinone_compare.MODELS[name]
    times = {}
    for label, impl in (('autodiff', autodiff_layers()), ('custom', custom)):
      for attr, fn in impl.items():
        setattr(layers, attr, fn)
      times[label] = step_seconds(spec, args.batch, args.patch, args.repeats)
    for attr, fn in custom.items():
      setattr(layers, attr, fn)
    (a, _), (c, _) = times['autodiff'], times['custom']
    print(f'| {name} | {allinone_compare.param_count(spec) / 1e6:.2f}M | {a:.2f} s | {c:.2f} s | {a / c:.2f}× |', flush=True)
  print(f'load average after {" / ".join(f"{v:.2f}" for v in os.getloadavg())}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
