"""Pallas kernels against their XLA reference twins on the current device, plus whole SwinIR-M.

  python benchmarks/kernels.py                 # GPU/TPU: SwinIR-M and Restormer shapes
  python benchmarks/kernels.py --smoke         # CPU: tiny shapes, 2 repeats, interpret mode

Each row is the median of --repeats device-synchronised runs (`block_until_ready`) after a
compile-and-warm-up call. TFLOP/s counts the algorithmic matmul FLOPs (no padding, no backward
recompute), GB/s the minimum HBM bytes (each input read once, each output written once); both are
also shown as a percentage of this device's measured peak (a large matmul, a large copy). On CPU
the kernels run in Pallas interpret mode, so --smoke numbers only show that everything runs.
"""
from __future__ import annotations

import argparse
import json
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np


def _median_seconds(fn, *args, repeats: int) -> float:
  jax.block_until_ready(fn(*args))   # compile
  jax.block_until_ready(fn(*args))   # warm up
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t0)
  return float(np.median(times))


def measure_peak(smoke: bool, repeats: int) -> dict:
  """Achievable peaks: a square matmul per dtype, and a read+write streaming copy."""
  n = 256 if smoke else 8192
  peak = {}
  for name, dtype in (('bf16', jnp.bfloat16), ('f32', jnp.float32)):
    a = jax.random.normal(jax.random.key(0), (n, n), dtype)
    t = _median_seconds(jax.jit(lambda x: x @ x), a, repeats=repeats)
    peak[f'matmul_{name}_tflops'] = 2 * n ** 3 / t / 1e12
  size = 2 ** 20 if smoke else 2 ** 28
  x = jnp.ones((size,), jnp.float32)
  t = _median_seconds(jax.jit(lambda v: v + 1.0), x, repeats=repeats)
  peak['copy_gbs'] = 2 * size * 4 / t / 1e9
  return peak


def _loss_grad(fn, argnums):
  def loss(*args):
    *inputs, ct = args
    return jnp.sum(fn(*inputs).astype(jnp.float32) * ct.astype(jnp.float32))
  return jax.jit(jax.grad(loss, argnums=argnums))


def _row(rows, peak, op, shape, dtype, impl, mode, seconds, flops, nbytes, base=None):
  dkey = 'bf16' if dtype == jnp.bfloat16 else 'f32'
  tflops, gbs = flops / seconds / 1e12, nbytes / seconds / 1e9
  row = dict(op=op, shape=shape, dtype=dkey, impl=impl, mode=mode, ms=seconds * 1e3,
             tflops=tflops, gbs=gbs, pct_flops=100 * tflops / peak[f'matmul_{dkey}_tflops'],
             pct_bw=100 * gbs / peak['copy_gbs'],
             speedup=None if base is None else base / seconds)
  rows.append(row)
  speed = '' if base is None else f'  x{base / seconds:.2f} vs xla'
  print(f'| {op:<18} | {shape:<26} | {dkey:<4} | {impl:<6} | {mode:<7} | {row["ms"]:9.3f} ms | '
        f'{tflops:7.2f} TFLOP/s ({row["pct_flops"]:5.1f}%) | {gbs:8.1f} GB/s ({row["pct_bw"]:5.1f}%)'
        f'{speed}', flush=True)


def _compare(rows, peak, op, shape, dtype, impls, args, flops, nbytes, repeats, argnums,
             backward=True):
  """Forward and forward+backward of each implementation; the first one is the baseline."""
  ct = jnp.ones_like(impls[0][1](*args))
  for mode in ('fwd', 'fwd+bwd') if backward else ('fwd',):
    base = None
    for name, fn in impls:
      f = jax.jit(fn) if mode == 'fwd' else _loss_grad(fn, argnums)
      fargs = args if mode == 'fwd' else args + (ct,)
      t = _median_seconds(f, *fargs, repeats=repeats)
      _row(rows, peak, op, shape, dtype, name, mode, t, flops[mode], nbytes[mode], base)
      base = t if base is None else base


def bench_window_attention(rows, peak, args, dtype):
  from jaxrestore.kernels import window_attention, window_attention_reference
  from jaxrestore.models.swinir import shift_window_mask
  heads, d, ws = 6, 30, 8
  n = ws * ws
  size = args.size
  mask_np = shift_window_mask(size, size, ws, ws // 2)
  for batch in args.batches:
    windows = batch * (size // ws) ** 2
    ks = jax.random.split(jax.random.key(batch), 4)
    q, k, v = (jax.random.normal(ks[i], (windows, heads, n, d), dtype) for i in range(3))
    bias = 0.02 * jax.random.normal(ks[3], (heads, n, n), dtype)
    for shifted in (False, True):
      mask = jnp.asarray(mask_np, dtype) if shifted else None
      item = jnp.dtype(dtype).itemsize
      io = windows * heads * n * d * item
      extra = bias.size * item + (0 if mask is None else mask.size * item)
      flops = {'fwd': 4 * windows * heads * n * n * d, 'fwd+bwd': 12 * windows * heads * n * n * d}
      nbytes = {'fwd': 4 * io + extra, 'fwd+bwd': 4 * io + 7 * io + 2 * extra}
      impls = [('xla', lambda q, k, v, b, m=mask: window_attention_reference(q, k, v, b, m)),
               ('pallas', lambda q, k, v, b, m=mask: window_attention(q, k, v, b, m))]
      shape = f'{batch}x{size}² W={windows} {"shift" if shifted else "noshift"}'
      _compare(rows, peak, 'window_attention', shape, dtype, impls, (q, k, v, bias), flops,
               nbytes, args.repeats, (0, 1, 2, 3))


# Restormer at 256²: (heads, channels per head, pixel divisor) per level, and the refinement.
RESTORMER_LEVELS = ((1, 48, 1), (2, 48, 4), (4, 48, 16), (8, 48, 64), (1, 96, 1))


def bench_channel_attention(rows, peak, args, dtype):
  from jaxrestore.kernels import channel_attention, channel_attention_reference
  levels = RESTORMER_LEVELS[::4] if args.smoke else RESTORMER_LEVELS   # smoke: first and last
  for batch in args.batches:
    for heads, c, div in levels:
      p = args.size * args.size // div
      ks = jax.random.split(jax.random.key(heads * c + batch), 3)
      q, k, v = (jax.random.normal(ks[i], (batch, heads, c, p), dtype) for i in range(3))
      t = jnp.linspace(0.5, 2.0, heads)
      io = batch * heads * c * p * jnp.dtype(dtype).itemsize
      flops = {'fwd': 4 * batch * heads * c * c * p, 'fwd+bwd': 12 * batch * heads * c * c * p}
      nbytes = {'fwd': 4 * io, 'fwd+bwd': 11 * io}
      impls = [('xla', channel_attention_reference), ('pallas', channel_attention)]
      _compare(rows, peak, 'channel_attention', f'b{batch} h{heads} C{c} P{p}', dtype, impls,
               (q, k, v, t), flops, nbytes, args.repeats, (0, 1, 2, 3))


def bench_frequency(rows, peak, args, dtype):
  from jaxrestore.kernels import frequency as F
  size, batch = args.size, args.batches[0]
  channels = 16 if args.smoke else 288          # FFTformer DFFN: 2 * hidden at level 1
  x = jax.random.normal(jax.random.key(0), (batch, size, size, channels), dtype)
  weight = jax.random.normal(jax.random.key(1), (channels, 8, 5))
  item = jnp.dtype(dtype).itemsize
  # Per 8x8 patch and channel: DFT (64x40 real and imaginary), inverse (40x64, twice).
  flops = batch * size * size * channels * 2 * (2 * 40 + 2 * 40)
  io = x.size * item
  _compare(rows, peak, 'frequency_filter', f'{batch}x{size}² C{channels} p8', dtype,
           [('xla', F.frequency_filter_reference), ('pallas', F.frequency_filter)], (x, weight),
           {'fwd': flops, 'fwd+bwd': 3 * flops}, {'fwd': 2 * io, 'fwd+bwd': 5 * io},
           args.repeats, (0, 1))
  channels = 8 if args.smoke else 64
  x = jax.random.normal(jax.random.key(2), (batch, size, size, channels), dtype)
  io = x.size * item
  _compare(rows, peak, 'haar_dwt', f'{batch}x{size}² C{channels}', dtype,
           [('xla', F.haar_dwt_reference), ('pallas', F.haar_dwt)], (x,),
           {'fwd': 3 * x.size, 'fwd+bwd': 6 * x.size}, {'fwd': 2 * io, 'fwd+bwd': 4 * io},
           args.repeats, (0,))


def bench_swinir(rows, args, dtype):
  """Whole SwinIR-M (swinir-color-dn15) forward, images per second, per attention kernel."""
  from flax import nnx

  import jaxrestore
  from jaxrestore.models.swinir import SwinIR, SwinIRConfig
  hp = dict(jaxrestore.get_preset('swinir-color-dn15').hyperparameters)
  size = args.model_size
  dkey = 'bf16' if dtype == jnp.bfloat16 else 'f32'
  for batch in args.model_batches:
    x = jax.random.uniform(jax.random.key(0), (batch, size, size, 3), jnp.float32)
    outputs, base = {}, None
    state = None
    for attention in ('xla', 'pallas'):
      model = SwinIR(SwinIRConfig(**hp, attention=attention, dtype=dtype), rngs=nnx.Rngs(0))
      graphdef, params = nnx.split(model)
      state = params if state is None else state      # identical weights for both
      forward = jax.jit(lambda s, v, g=graphdef: nnx.merge(g, s)(v))
      t = _median_seconds(forward, state, x, repeats=args.repeats)
      outputs[attention] = np.asarray(forward(state, x), np.float32)
      speed = '' if base is None else f'  x{base / t:.2f} vs xla'
      base = t if base is None else base
      rows.append(dict(op='swinir-M', shape=f'{batch}x{size}²', dtype=dkey, impl=attention,
                       mode='fwd', ms=t * 1e3, images_per_s=batch / t))
      print(f'| {"swinir-M forward":<18} | {f"{batch}x{size}²":<26} | {dkey:<4} | {attention:<6} | '
            f'fwd     | {t * 1e3:9.3f} ms | {batch / t:8.2f} images/s{speed}', flush=True)
    diff = float(np.max(np.abs(outputs['xla'] - outputs['pallas'])))
    print(f'|   max |pallas - xla| output difference: {diff:.2e}', flush=True)


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument('--smoke', action='store_true', help='tiny shapes and 2 repeats (CPU, interpret)')
  ap.add_argument('--repeats', type=int, default=None, help='timed runs per row (default 50)')
  ap.add_argument('--batches', default=None, help='comma-separated kernel batch sizes (1,8,32)')
  ap.add_argument('--model-batches', default=None, help='whole-model batch sizes (1,8)')
  ap.add_argument('--dtypes', default='f32,bf16', help='comma-separated: f32, bf16')
  ap.add_argument('--skip', default='', help='comma-separated: window, channel, frequency, model')
  ap.add_argument('--json', default=None, help='also write all rows to this JSON file')
  args = ap.parse_args(argv)
  args.repeats = args.repeats or (2 if args.smoke else 50)
  args.batches = [int(b) for b in (args.batches or ('1' if args.smoke else '1,8,32')).split(',')]
  args.model_batches = [int(b) for b in (args.model_batches or ('1' if args.smoke else '1,8')).split(',')]
  args.size = 32 if args.smoke else 256
  args.model_size = 16 if args.smoke else 256
  dtypes = [{'f32': jnp.float32, 'bf16': jnp.bfloat16}[d] for d in args.dtypes.split(',')]
  skip = set(filter(None, args.skip.split(',')))

  device = jax.devices()[0]
  print(f'device: {device.device_kind} ({jax.default_backend()}), jax {jax.__version__}, '
        f'{platform.machine()}; kernels run in '
        f'{"interpret mode" if jax.default_backend() == "cpu" else "Pallas " + ("Triton" if jax.default_backend() == "gpu" else "Mosaic")}')
  peak = measure_peak(args.smoke, args.repeats)
  print('measured peak: ' + ', '.join(f'{k} {v:.2f}' for k, v in peak.items()))
  print(f'median of {args.repeats} runs')
  rows = []
  for dtype in dtypes:
    if 'window' not in skip:
      bench_window_attention(rows, peak, args, dtype)
    if 'channel' not in skip:
      bench_channel_attention(rows, peak, args, dtype)
    if 'frequency' not in skip:
      bench_frequency(rows, peak, args, dtype)
    if 'model' not in skip:
      bench_swinir(rows, args, dtype)
  if args.json:
    with open(args.json, 'w') as f:
      json.dump({'device': device.device_kind, 'backend': jax.default_backend(),
                 'jax': jax.__version__, 'peak': peak, 'rows': rows}, f, indent=1)
  return 0


if __name__ == '__main__':
  raise SystemExit(main())
