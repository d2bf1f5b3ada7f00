"""Where SwinIR-M's forward time goes on CPU: per-stage timings, JAX and PyTorch side by side.

    python benchmarks/profile_swinir_cpu.py [--size 128] [--batch 1] [--repeats 7] [--preset swinir-color-dn15]

Each stage of one Swin block (LayerNorm, qkv projection, window partition + cyclic shift, the
attention core, output projection, reverse, MLP) and of the convolutions is jitted on its own at the
real shapes of SwinIR-M and timed (median of `repeats`, JAX and PyTorch interleaved), then
multiplied by how often the network runs it. The sum is compared with the whole forward pass, and
the matmul-rate floor (FLOPs / the best measured GEMM rate) is printed. A standalone JAX stage gets a
fresh output buffer per call, and glibc maps buffers above 32 MiB anew each time (the qkv output at
128²), so that stage's time includes page faults the whole forward does not pay; read the traced
breakdown below for where the forward's time goes.

Then the whole jitted forward is traced (`jax.profiler`) and XLA:CPU's own per-thunk times are grouped
by what each fused kernel computes (its HLO ops and output shape): this is the profile of the code
that actually runs, fusions included, and its top 5 are what the README cites. From it, the XLA
ceiling: the matmuls, convolutions and attention core alone, at the speed XLA:CPU ran them, which
bounds what any rewrite around XLA's own kernels can reach. `--xla-only` prints just that part.
Check `uptime` first: the load average is printed, and timings taken under load are not comparable.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np


def median_time(fn, repeats: int) -> float:
  fn()
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return float(np.median(times))


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--preset', default='swinir-color-dn15')
  parser.add_argument('--size', type=int, default=128)
  parser.add_argument('--batch', type=int, default=1)
  parser.add_argument('--repeats', type=int, default=7)
  parser.add_argument('--no-torch', action='store_true')
  parser.add_argument('--xla-only', action='store_true', help='only the traced whole-forward breakdown')
  args = parser.parse_args(argv)

  import jax
  import jax.numpy as jnp
  from flax import nnx
  import jaxrestore
  from jaxrestore.models import swinir

  print(f'load average {" / ".join(f"{v:.2f}" for v in os.getloadavg())}, {os.cpu_count()} cores, '
        f'jax {jax.__version__}')
  model = jaxrestore.load(args.preset, pretrained=False)
  if args.xla_only:
    x = jnp.asarray(np.random.default_rng(0).random((args.batch, args.size, args.size, model.config.in_chans)),
                    jnp.float32)
    print_xla_ceiling(*print_xla_profile(model, x))
    return 0
  cfg = model.config
  b, s, c = args.batch, args.size, cfg.embed_dim
  ws, heads = cfg.window_size, cfg.num_heads[0]
  n_blocks = sum(cfg.depths)
  rng = np.random.default_rng(0)
  feat = jnp.asarray(rng.standard_normal((b, s, s, c)), jnp.float32)
  block = model.layers[0].residual_group.blocks[1]  # a shifted block
  attn = block.attn
  windows = swinir.window_partition(feat, ws)
  nw, n = windows.shape[:2]
  qkv_w = block.attn.qkv
  hidden = int(c * cfg.mlp_ratio)
  mask = jnp.asarray(swinir.shift_window_mask(s, s, ws, ws // 2))
  from jaxrestore import kernels
  core = kernels.get_window_attention('xla')
  q = k = v = jnp.asarray(rng.standard_normal((nw, heads, n, c // heads)), jnp.float32)
  bias = attn.relative_position_bias()
  h1 = jnp.asarray(rng.standard_normal((b * s * s, hidden)), jnp.float32)

  def jit_run(f, *a):
    g = jax.jit(f)
    return lambda: jax.block_until_ready(g(*a))

  stages = {
      'norm1 (LayerNorm)': (jit_run(lambda m, x: m(x), block.norm1, feat), n_blocks),
      'qkv projection': (jit_run(lambda m, x: m(x), qkv_w, windows), n_blocks),
      'roll + window partition': (jit_run(lambda x: swinir.window_partition(jnp.roll(x, (-4, -4), (1, 2)), ws), feat),
                                  n_blocks),
      'attention core (qk, bias, mask, softmax, v)': (jit_run(lambda q, k, v, bb, m: core(q, k, v, bb, m,
                                                                                          scale=attn.scale),
                                                               q, k, v, bias, mask), n_blocks),
      'output projection': (jit_run(lambda m, x: m(x), attn.proj, windows), n_blocks),
      'window reverse + roll': (jit_run(lambda w: jnp.roll(swinir.window_reverse(w, ws, s, s), (4, 4), (1, 2)),
                                        windows), n_blocks),
      'norm2 (LayerNorm)': (jit_run(lambda m, x: m(x), block.norm2, feat), n_blocks),
      'mlp fc1': (jit_run(lambda m, x: m(x), block.mlp.fc1, feat), n_blocks),
      'mlp GELU (exact)': (jit_run(lambda x: jax.nn.gelu(x, approximate=False), h1), n_blocks),
      'mlp fc2': (jit_run(lambda m, x: m(x), block.mlp.fc2, h1.reshape(b, s, s, hidden)), n_blocks),
      'conv 3x3 180->180': (jit_run(lambda m, x: m(x), model.conv_after_body, feat), len(cfg.depths) + 1),
  }
  whole = jit_run(lambda m, x: m(x), model, jnp.asarray(rng.random((b, s, s, cfg.in_chans)), jnp.float32))

  torch_stages, torch_whole = {}, None
  if not args.no_torch:
    import torch
    from jaxrestore.bench import import_torch_reference
    from jaxrestore.registry import get_architecture
    torch.set_num_threads(os.cpu_count())
    arch = get_architecture('swinir')
    tmodel = import_torch_reference(arch.torch_reference)(**arch.torch_reference.kwargs(cfg)).eval()
    tb = tmodel.layers[0].residual_group.blocks[1]
    t = lambda a: torch.from_numpy(np.array(a))
    tfeat, twin, th1 = t(feat), t(windows), t(h1)
    tq, tbias, tmask = t(q), t(bias), t(mask)

    def tcore():
      a = (tq * attn.scale) @ tq.transpose(-2, -1) + tbias[None]
      a = a.view(nw // mask.shape[0], mask.shape[0], heads, n, n) + tmask[None, :, None]
      return torch.softmax(a.view(-1, heads, n, n), -1) @ tq

    def trun(f):
      def g():
        with torch.no_grad():
          f()
      return g

    torch_stages = {
        'norm1 (LayerNorm)': trun(lambda: tb.norm1(tfeat)),
        'qkv projection': trun(lambda: tb.attn.qkv(twin)),
        'roll + window partition': trun(lambda: torch.roll(tfeat, (-4, -4), (1, 2)).view(
            b, s // ws, ws, s // ws, ws, c).permute(0, 1, 3, 2, 4, 5).contiguous()),
        'attention core (qk, bias, mask, softmax, v)': trun(tcore),
        'output projection': trun(lambda: tb.attn.proj(twin)),
        'window reverse + roll': trun(lambda: torch.roll(twin.view(b, s // ws, s // ws, ws, ws, c).permute(
            0, 1, 3, 2, 4, 5).contiguous().view(b, s, s, c), (4, 4), (1, 2))),
        'norm2 (LayerNorm)': trun(lambda: tb.norm2(tfeat)),
        'mlp fc1': trun(lambda: tb.mlp.fc1(tfeat)),
        'mlp GELU (exact)': trun(lambda: torch.nn.functional.gelu(th1)),
        'mlp fc2': trun(lambda: tb.mlp.fc2(th1)),
        'conv 3x3 180->180': trun(lambda: tmodel.conv_after_body(tfeat.permute(0, 3, 1, 2))),
    }
    timg = torch.from_numpy(rng.random((b, cfg.in_chans, s, s), dtype=np.float32))
    torch_whole = trun(lambda: tmodel(timg))

  print(f'\n{args.preset} at {s}x{s}, batch {b}, float32; per call (ms) x calls per forward = total (s)\n')
  print(f'| stage | calls | JAX ms | JAX total s | PyTorch ms | PyTorch total s |')
  print('|---|---|---|---|---|---|')
  tot_j = tot_t = 0.0
  rows = []
  for name, (fn, calls) in stages.items():
    tj = median_time(fn, args.repeats)
    tt = median_time(torch_stages[name], args.repeats) if name in torch_stages else float('nan')
    tot_j += tj * calls
    tot_t += tt * calls
    rows.append((tj * calls, name))
    print(f'| {name} | {calls} | {tj * 1e3:.1f} | {tj * calls:.2f} | {tt * 1e3:.1f} | {tt * calls:.2f} |')
  wj = median_time(whole, max(3, args.repeats // 2))
  wt = median_time(torch_whole, max(3, args.repeats // 2)) if torch_whole else float('nan')
  print(f'| sum of stages | | | {tot_j:.2f} | | {tot_t:.2f} |')
  print(f'| whole forward (jit) | 1 | | {wj:.2f} | | {wt:.2f} |')
  print(f'\nPyTorch / JAX whole forward: {wt / wj:.2f}x')
  print('top 5 JAX costs: ' + '; '.join(f'{name} {t:.2f} s' for t, name in sorted(rows, reverse=True)[:5]))
  flops = 2 * b * s * s * n_blocks * (c * 3 * c + c * c + 2 * c * hidden + 2 * n * c)
  flops += 2 * b * s * s * 9 * c * c * (len(cfg.depths) + 1)
  gemm = jax.jit(lambda a, w: a @ w)
  a2 = jnp.asarray(rng.standard_normal((2048, 2048)), jnp.float32)
  best = 2 * 2048 ** 3 / median_time(lambda: jax.block_until_ready(gemm(a2, a2)), args.repeats)
  print(f'{flops / 1e9:.1f} GFLOP per forward; best JAX GEMM rate (2048^3) {best / 1e9:.0f} GFLOP/s; '
        f'floor {flops / best:.2f} s; whole forward reaches {flops / best / wj * 100:.0f}% of it')
  ceiling = print_xla_ceiling(*print_xla_profile(model, jnp.asarray(rng.random((b, s, s, cfg.in_chans)),
                                                                           jnp.float32)))
  print(f'PyTorch eager / XLA ceiling: {wt / ceiling:.2f}x (the most XLA:CPU\'s own kernels allow against '
        f'this PyTorch run); whole forward / ceiling: {wj / ceiling:.2f}')
  print(f'load average after: {" / ".join(f"{v:.2f}" for v in os.getloadavg())}')
  return 0


def describe_fusion(ops: list[tuple[str, str]]) -> str:
  """A readable name for one fused kernel from its HLO ops: [(opcode, shape), ...]."""
  kinds = [k for k, _ in ops]
  dots = [shape for k, shape in ops if k == 'dot']
  if 'convolution' in kinds:
    return 'convolution' + (' + LayerNorm' if 'rsqrt' in kinds else '')
  if len(dots) >= 2 and 'exponential' in kinds:
    return 'attention core (q·kᵀ, bias, mask, softmax, ·v)'
  if dots:
    return ('LayerNorm + ' if 'rsqrt' in kinds else '') + f'matmul -> {dots[-1]}'
  if 'erf' in kinds or ('abs' in kinds and 'compare' in kinds and kinds.count('multiply') > 4):
    return 'GELU (exact erf)'
  if 'rsqrt' in kinds:
    return 'LayerNorm'
  if 'transpose' in kinds and 'slice' in kinds:
    return 'bias + split into q, k, v (transpose)'
  if 'transpose' in kinds:
    return 'window partition / reverse (transpose)' + (' + residual add' if 'add' in kinds else '')
  if 'concatenate' in kinds:
    return 'cyclic shift (roll)' + (' + residual add' if 'add' in kinds else '')
  if kinds == ['broadcast']:
    return 'materialised broadcast'
  return ' + '.join(sorted(set(k for k in kinds if k not in ('bitcast', 'constant', 'broadcast')))) or 'other'


def print_xla_profile(model, x, rounds: int = 2):
  """Traces the jitted forward and prints XLA:CPU's per-thunk time grouped by fused-kernel kind.
  Returns the rows [(s per forward, kind)] and each forward's thunks as (start s, end s, kind)."""
  import collections
  import glob
  import gzip
  import json
  import re
  import tempfile

  import jax
  from flax import nnx
  graphdef, state = nnx.split(model)
  forward = jax.jit(lambda st, v: nnx.merge(graphdef, st)(v))
  compiled = forward.lower(state, x).compile()
  hlo = compiled.as_text()
  computations, current = {}, None
  for line in hlo.splitlines():
    head = re.match(r'^(?:ENTRY )?%([\w.\-]+) .*\{$', line)
    if head:
      current = computations.setdefault(head.group(1), [])
      continue
    op = re.match(r'\s*(?:ROOT )?%[\w.\-]+ = (\S+) ([\w\-]+)\(', line)
    if current is not None and op:
      current.append((op.group(2), op.group(1).split('{')[0]))
  labels = {}
  for line in hlo.splitlines():
    inst = re.match(r'\s*(?:ROOT )?%([\w.\-]+) = (\S+) (\w[\w\-]*)\((.*)', line)
    if not inst:
      continue
    name, shape, opcode, rest = inst.groups()
    called = re.search(r'calls=%([\w.\-]+)', rest)
    ops = [o for o in computations.get(called.group(1), []) if o[0] != 'parameter'] if called else [(opcode, shape)]
    labels[name] = describe_fusion(ops)
  jax.block_until_ready(compiled(state, x))
  with tempfile.TemporaryDirectory() as trace_dir:
    with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
      for _ in range(rounds):
        jax.block_until_ready(compiled(state, x))
    trace = json.load(gzip.open(glob.glob(f'{trace_dir}/**/*.trace.json.gz', recursive=True)[0]))
  events = trace['traceEvents'] if isinstance(trace, dict) else trace
  total = collections.Counter()
  calls = collections.Counter()
  spans = []
  for event in events:
    if event.get('ph') == 'X' and event['name'] in labels:
      total[labels[event['name']]] += event.get('dur', 0) / 1e6 / rounds
      calls[labels[event['name']]] += 1
      start = event['ts'] / 1e6 / rounds
      spans.append((start, start + event.get('dur', 0) / 1e6 / rounds, labels[event['name']]))
  busy = sum(total.values())
  print(f'\nXLA:CPU per-thunk time of the whole jitted forward ({rounds} traced runs; kernels may run '
        f'concurrently, so the sum {busy:.2f} s can exceed the wall time):\n')
  print('| fused kernel | calls | s per forward | share |')
  print('|---|---|---|---|')
  rows = sorted(((t, name) for name, t in total.items()), reverse=True)
  for t, name in rows:
    if t >= 0.005:
      print(f'| {name} | {calls[name] // rounds} | {t:.3f} | {t / busy:.0%} |')
  print('top 5 (traced): ' + '; '.join(f'{name} {t:.2f} s' for t, name in rows[:5]))
  return rows, spans


def print_xla_ceiling(rows: list[tuple[float, str]], spans: list[tuple[float, float, str]]) -> float:
  """The forward's time if everything but its matrix products, convolutions and attention core were
  free, each of those at the speed XLA:CPU ran it inside this forward: what no rewrite around XLA's
  own kernels can beat, only a faster kernel. Counted as the time at least one of them runs, since
  XLA:CPU runs independent kernels (q, k and v's products) concurrently."""
  kernel_kinds = ('matmul', 'LayerNorm + matmul', 'attention core', 'convolution')
  ceiling, covered_to = 0.0, float('-inf')
  for start, end, name in sorted(sp for sp in spans if sp[2].startswith(kernel_kinds)):
    ceiling += max(0.0, end - max(start, covered_to))
    covered_to = max(covered_to, end)
  print(f'XLA ceiling: matmuls, convolutions and the attention core alone take {ceiling:.2f} s '
        f'of {sum(t for t, _ in rows):.2f} s')
  return ceiling


if __name__ == '__main__':
  sys.exit(main())
