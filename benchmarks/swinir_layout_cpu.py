"""Would SwinIR-M run faster on XLA:CPU with its activations stored feature-major?

    python benchmarks/swinir_layout_cpu.py [--size 128] [--rounds 6]

1. The four linear layers of a Swin block at SwinIR-M's shapes (tokens × 180 → 540, 180, 360 and
   360 → 180), each as a standalone jitted product in the four layouts of input and output:
   tokens-major (T, C), as the library stores activations, or feature-major (C, T). glibc is told to
   keep freed memory first (`mallopt`), because a standalone product gets a fresh output buffer per
   call and, above 32 MiB, the page faults of that buffer would be timed too.
2. One residual group of SwinIR-M (6 blocks, random weights) as the library runs it against the same
   group rewritten feature-major inside: (C, B, H, W) activations, LayerNorm over the leading axis,
   every linear layer computing (out, T) = Wᵀ·X, window attention with d-major keys and values. The
   two run alternately in one process; each round prints the best of 3 calls of each.

Check `uptime` first: the load average is printed, and timings taken under load are not comparable.
"""
from __future__ import annotations

import argparse
import ctypes
import os
import time

import numpy as np


def keep_freed_memory():
  """glibc: no fresh mappings or trims for big buffers (M_TRIM_THRESHOLD -1, M_MMAP_THRESHOLD -3)."""
  try:
    libc = ctypes.CDLL('libc.so.6')
  except OSError:
    return
  libc.mallopt(-1, 1 << 30)
  libc.mallopt(-3, 1 << 30)


def best_time(fn, repeats: int) -> float:
  fn()
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return min(times)


def gemm_layouts(tokens: int, repeats: int):
  import jax
  from jax import lax
  import jax.numpy as jnp
  rng = np.random.default_rng(0)
  print(f'\nlinear layers at {tokens} tokens, ms (GFLOP/s); T = tokens, C = features\n')
  print('| in → out features | (T,C) → (T,C) | (T,C) → (C,T) | (C,T) → (C,T) | (C,T) → (T,C) |')
  print('|---|---|---|---|---|')
  for k, n in ((180, 540), (180, 180), (180, 360), (360, 180)):
    x_tc = jnp.asarray(rng.random((tokens, k)), jnp.float32)
    x_ct = jnp.asarray(rng.random((k, tokens)), jnp.float32)
    w_kn = jnp.asarray(rng.random((k, n)), jnp.float32)
    w_nk = jnp.asarray(rng.random((n, k)), jnp.float32)
    variants = (
        (lambda x, w: x @ w, x_tc, w_kn),
        (lambda x, w: lax.dot_general(w, x, (((1,), (1,)), ((), ()))), x_tc, w_nk),
        (lambda x, w: w @ x, x_ct, w_nk),
        (lambda x, w: lax.dot_general(x, w, (((0,), (0,)), ((), ()))), x_ct, w_kn),
    )
    cells = []
    for f, x, w in variants:
      g = jax.jit(f)
      t = best_time(lambda: jax.block_until_ready(g(x, w)), repeats)
      cells.append(f'{t * 1e3:.2f} ({2 * tokens * k * n / t / 1e9:.0f})')
    print(f'| {k} → {n} | ' + ' | '.join(cells) + ' |')


def feature_major_group(group, x):
  """The residual group on NHWC x, computed with (C, B, H, W) activations inside."""
  import jax
  from jax import lax
  import jax.numpy as jnp
  from jaxrestore.models import swinir

  def layer_norm(v, norm):
    c = v.shape[0]
    flat = v.reshape(c, -1)
    average = jnp.full((1, c), 1.0 / c, v.dtype)  # reductions over the leading axis as products
    mean = average @ flat
    centred = flat - mean
    var = average @ jnp.square(centred)
    y = centred * lax.rsqrt(var + norm.epsilon)
    return (y * norm.scale[...][:, None] + norm.bias[...][:, None]).reshape(v.shape)

  def linear(v, kernel, bias):
    c, rest = v.shape[0], v.shape[1:]
    y = lax.dot_general(kernel, v.reshape(c, -1), (((0,), (0,)), ((), ()))).reshape(-1, *rest)
    return y if bias is None else y + bias.reshape(-1, *([1] * len(rest)))

  def block(blk, v):
    c, b, h, w = v.shape
    ws, shift, attn = blk.window_size, blk.shift_size, blk.attn
    heads, n = attn.num_heads, ws * ws
    d, nh, nw = c // heads, h // ws, w // ws
    y = layer_norm(v, blk.norm1)
    if shift:
      y = jnp.roll(y, (-shift, -shift), axis=(2, 3))
    column_scale = jnp.concatenate([jnp.full((c,), attn.scale, jnp.float32), jnp.ones((2 * c,), jnp.float32)])
    qkv = linear(y, attn.qkv.kernel[...] * column_scale, attn.qkv.bias[...] * column_scale)
    qkv = qkv.reshape(3, heads, d, b, nh, ws, nw, ws).transpose(0, 3, 4, 6, 1, 2, 5, 7)
    q, k, v_ = qkv.reshape(3, b * nh * nw, heads, d, n)
    scores = jnp.einsum('whid,whdj->whij', q.swapaxes(-1, -2), k)
    bias = attn.relative_position_bias()
    if shift:
      mask = jnp.asarray(swinir.shift_window_mask(h, w, ws, shift))
      term = bias[None] + mask[:, None]
      scores = (scores.reshape(-1, mask.shape[0], heads, n, n) + term[None]).reshape(-1, heads, n, n)
    else:
      scores = scores + bias[None]
    p = jnp.exp(scores - lax.stop_gradient(scores.max(axis=-1, keepdims=True)))
    out = jnp.einsum('whdj,whij->whdi', v_, p) / p.sum(axis=-1)[:, :, None, :]
    out = out.reshape(b, nh, nw, heads, d, ws, ws).transpose(3, 4, 0, 1, 5, 2, 6).reshape(c, b, h, w)
    if shift:
      out = jnp.roll(out, (shift, shift), axis=(2, 3))
    v = v + linear(out, attn.proj.kernel[...], attn.proj.bias[...])
    hidden = linear(layer_norm(v, blk.norm2), blk.mlp.fc1.kernel[...], blk.mlp.fc1.bias[...])
    gelu2 = hidden * lax.erfc(-hidden * jnp.asarray(0.7071067811865476, hidden.dtype))
    return v + linear(gelu2, blk.mlp.fc2.kernel[...] * 0.5, blk.mlp.fc2.bias[...])

  v = x.transpose(3, 0, 1, 2)
  for blk in group.blocks:
    v = block(blk, v)
  return v.transpose(1, 2, 3, 0)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--size', type=int, default=128)
  parser.add_argument('--rounds', type=int, default=6)
  parser.add_argument('--repeats', type=int, default=10)
  args = parser.parse_args(argv)
  keep_freed_memory()

  import jax
  import jax.numpy as jnp
  from flax import nnx
  import jaxrestore

  print(f'load average {" / ".join(f"{v:.2f}" for v in os.getloadavg())}, {os.cpu_count()} cores, '
        f'jax {jax.__version__}')
  gemm_layouts(args.size * args.size, args.repeats)

  model = jaxrestore.load('swinir-color-dn15', pretrained=False)
  group = model.layers[0].residual_group
  graphdef, state = nnx.split(group)
  tokens_major = jax.jit(lambda st, v: nnx.merge(graphdef, st)(v))
  features_major = jax.jit(lambda st, v: feature_major_group(nnx.merge(graphdef, st), v))
  x = jnp.asarray(np.random.default_rng(0).standard_normal((1, args.size, args.size, 180)), jnp.float32)
  diff = float(jnp.abs(tokens_major(state, x) - features_major(state, x)).max())
  print(f'\none residual group (6 blocks) at {args.size}²: max |feature-major − library| {diff:.1e}')
  print('| round | library (tokens-major) ms | feature-major ms |')
  print('|---|---|---|')
  results = {'tokens': [], 'features': []}
  for r in range(args.rounds):
    for name, f in (('tokens', tokens_major), ('features', features_major)):
      results[name].append(best_time(lambda: jax.block_until_ready(f(state, x)), 3))
    print(f'| {r + 1} | {results["tokens"][-1] * 1e3:.0f} | {results["features"][-1] * 1e3:.0f} |')
  print(f'median: library {np.median(results["tokens"]) * 1e3:.0f} ms, feature-major '
        f'{np.median(results["features"]) * 1e3:.0f} ms')
  print(f'load average after: {" / ".join(f"{v:.2f}" for v in os.getloadavg())}')
  return 0


if __name__ == '__main__':
  raise SystemExit(main())
