"""Shifted-window attention: softmax(q·kᵀ·scale + bias + mask)·v per window and head.

`window_attention_reference` is the plain `jax.numpy` twin that every kernel implementation is
tested against, and the default on CPU. Shapes follow SwinIR's layout:

  q, k, v: (windows, heads, N, D)  windows ordered batch-major: w = b * mask_windows + i
  bias:    (heads, N, N)           the gathered relative-position bias
  mask:    (mask_windows, N, N)    the shift mask; window w uses mask[w % mask_windows]

`window_attention` is the fused Pallas kernel with the same signature: one kernel computes scores,
float32 softmax and the weighted sum for a block of windows of one head, and a second Pallas kernel
computes dq, dk, dv and dbias in the backward pass (`jax.custom_vjp`). Like FlashAttention it keeps
no (N, N) probabilities between the passes: the backward recomputes them from q and k, so the
residuals are just the inputs.

Lowering (see `resolve_backend`): CPU runs the kernel in Pallas interpret mode (what CI tests), NVIDIA
GPUs use the Pallas *Triton* lowering (selected explicitly with `pallas.triton.CompilerParams`; plain
`pallas_call` on GPU now defaults to Mosaic GPU), TPUs Mosaic TPU. Why Triton and not Mosaic GPU:
the kernel bodies are plain `jnp` on ref slices, which the Triton lowering, the CPU interpreter and
Mosaic TPU all accept, so the code CI runs is the code the GPU runs, and the tests lower it to Triton
IR on a CPU host. A Mosaic GPU kernel needs a separate warpgroup-level body (`plgpu.kernel`, explicit
SMEM/TMA copies, barriers, wgmma tile layouts) that CPU CI cannot exercise. The cost: the Triton
lowering is deprecated in favour of Mosaic GPU from JAX 0.11, and it needs power-of-two tensors
(hence the padding to powers of two below).
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

__all__ = ['window_attention', 'window_attention_reference', 'resolve_backend']

# Large-negative logit for padded keys: finite so that `s - max` never makes inf - inf = NaN.
MASK_VALUE = -1e30
BACKENDS = ('interpret', 'triton', 'mosaic_tpu')


def window_attention_reference(q, k, v, bias, mask=None, *, scale=None):
  """Unfused XLA window attention, with float32 softmax for low-precision inputs."""
  windows, heads, n, d = q.shape
  if scale is None:
    scale = d ** -0.5
  if scale != 1:  # callers that fold the scale into q's projection pass scale=1
    q = q * jnp.asarray(scale, q.dtype)
  scores = jnp.einsum('whnd,whmd->whnm', q, k, preferred_element_type=jnp.float32)
  bias = bias.astype(jnp.float32)
  if mask is None:
    scores = scores + bias[None]
  else:
    mask_windows = mask.shape[0]
    if windows % mask_windows:
      raise ValueError(f'window_attention: {windows} windows is not a multiple of the '
                       f'{mask_windows} mask windows')
    # bias + mask as one (mask_windows, heads, N, N) term, broadcast only over the batch: adding
    # the mask to the scores on its own makes XLA:CPU materialise it for every head and image.
    bias = bias[None] + mask.astype(jnp.float32)[:, None]
    scores = scores.reshape(windows // mask_windows, mask_windows, heads, n, n) + bias[None]
    scores = scores.reshape(windows, heads, n, n)
  # Normalise after the weighted sum: dividing (N, D) outputs instead of (N, N) probabilities is
  # the same softmax up to rounding, and cheaper on XLA:CPU (README: SwinIR speed on CPU).
  unnormalised = jnp.exp(scores - jax.lax.stop_gradient(scores.max(axis=-1, keepdims=True)))
  out = jnp.einsum('whnm,whmd->whnd', unnormalised.astype(v.dtype), v,
                   preferred_element_type=jnp.float32)
  return (out / unnormalised.sum(axis=-1, keepdims=True)).astype(q.dtype)


# --- shared Pallas plumbing (also used by channel_attention.py and frequency.py) -----------------

def resolve_backend(backend: str | None = None) -> str:
  """'interpret' on CPU, 'triton' on NVIDIA/AMD GPUs, 'mosaic_tpu' on TPU.

  Passing a backend explicitly lets a CPU host lower a kernel for another platform ahead of time
  (`jax.jit(f).trace(...).lower(lowering_platforms=('cuda',))`), which the tests use to check that
  the kernels lower to Triton IR and Mosaic TPU without a GPU or TPU.
  """
  if backend is None:
    platform = jax.default_backend()
    backend = {'gpu': 'triton', 'cuda': 'triton', 'rocm': 'triton', 'tpu': 'mosaic_tpu'}.get(
        platform, 'interpret')
  if backend not in BACKENDS:
    raise ValueError(f'unknown Pallas backend {backend!r}; expected one of {BACKENDS}')
  return backend


def pallas_call_options(backend: str, parallel_axes: int, *, num_warps: int = 4,
                        num_stages: int = 2) -> dict:
  """pallas_call keyword arguments selecting the lowering: interpret, Triton or Mosaic TPU."""
  if backend == 'interpret':
    return {'interpret': True}
  if backend == 'triton':
    try:
      from jax.experimental.pallas import triton as pltriton
    except ImportError:  # a JAX that dropped the deprecated Triton lowering
      raise RuntimeError('this JAX has no Pallas Triton lowering; use the XLA '
                                "implementation (attention='xla')") from None
    return {'compiler_params': pltriton.CompilerParams(num_warps=num_warps, num_stages=num_stages)}
  from jax.experimental.pallas import tpu as pltpu
  return {'compiler_params': pltpu.CompilerParams(dimension_semantics=('parallel',) * parallel_axes)}


def matmul_precision(dtype):
  """float32 inputs get true float32 products (Triton's default would be TF32, TPU's bf16 passes)."""
  return lax.Precision.HIGHEST if jnp.dtype(dtype) == jnp.float32 else None


def padded_size(n: int, minimum: int = 16) -> int:
  """Power of two ≥ n (Triton tensors), at least 16 (the smallest Triton `dot` operand)."""
  return max(minimum, pl.next_power_of_2(n))


def pad_axes(x, sizes: dict[int, int]):
  """Zero-pad the given axes up to the given sizes; no copy when nothing needs padding."""
  widths = [(0, 0)] * x.ndim
  for axis, size in sizes.items():
    widths[axis] = (0, size - x.shape[axis])
  if all(w == (0, 0) for w in widths):
    return x
  return jnp.pad(x, widths)


def dot_nt(a, b, precision):
  """a · bᵀ with float32 accumulation."""
  return lax.dot_general(a, b, (((1,), (1,)), ((), ())), precision=precision,
                         preferred_element_type=jnp.float32)


def dot_tn(a, b, precision):
  """aᵀ · b with float32 accumulation."""
  return lax.dot_general(a, b, (((0,), (0,)), ((), ())), precision=precision,
                         preferred_element_type=jnp.float32)


def dot_nn(a, b, precision):
  """a · b with float32 accumulation."""
  return lax.dot_general(a, b, (((1,), (0,)), ((), ())), precision=precision,
                         preferred_element_type=jnp.float32)


# --- the fused kernel ----------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class _Config:
  scale: float
  n_valid: int            # real tokens per window; the rest of the padded N are masked keys
  block_windows: int      # windows per grid step
  mask_blocks: int        # period // block_windows, period = padded mask windows (or all windows)
  backend: str


BACKWARD_BLOCK_FACTOR = 4


def _key_masked_bias(bias, n_valid):
  """Adds the large negative logit to padded key columns once per program, not per window."""
  bias = bias.astype(jnp.float32)
  if n_valid < bias.shape[-1]:
    col = lax.broadcasted_iota(jnp.int32, bias.shape, 1)
    bias = jnp.where(col < n_valid, bias, MASK_VALUE)
  return bias


def _probs(q, k, bias, mask, scale, precision):
  """Row softmax of q·kᵀ·scale + bias (+ mask), all in float32."""
  s = dot_nt(q, k, precision) * scale + bias
  if mask is not None:
    s = s + mask.astype(jnp.float32)
  s = s - jnp.max(s, axis=1, keepdims=True)
  p = jnp.exp(s)
  return p / jnp.sum(p, axis=1, keepdims=True)


def _forward_kernel(*refs, cfg: _Config, has_mask: bool):
  if has_mask:
    q_ref, k_ref, v_ref, bias_ref, mask_ref, o_ref = refs
  else:
    (q_ref, k_ref, v_ref, bias_ref, o_ref), mask_ref = refs, None
  precision = matmul_precision(q_ref.dtype)
  bias = _key_masked_bias(bias_ref[...], cfg.n_valid)

  def window(w, carry):
    v = v_ref[w]
    p = _probs(q_ref[w], k_ref[w], bias, None if mask_ref is None else mask_ref[w], cfg.scale,
               precision)
    o_ref[w] = dot_nn(p.astype(v.dtype), v, precision).astype(o_ref.dtype)
    return carry

  lax.fori_loop(0, cfg.block_windows, window, 0)


def _backward_kernel(*refs, cfg: _Config, has_mask: bool):
  if has_mask:
    q_ref, k_ref, v_ref, bias_ref, mask_ref, do_ref, dq_ref, dk_ref, dv_ref, dbias_ref = refs
  else:
    q_ref, k_ref, v_ref, bias_ref, do_ref, dq_ref, dk_ref, dv_ref, dbias_ref = refs
    mask_ref = None
  precision = matmul_precision(q_ref.dtype)
  bias = _key_masked_bias(bias_ref[...], cfg.n_valid)

  def window(w, dbias):
    q, k, v, do = q_ref[w], k_ref[w], v_ref[w], do_ref[w]
    p = _probs(q, k, bias, None if mask_ref is None else mask_ref[w], cfg.scale, precision)
    dv_ref[w] = dot_tn(p.astype(do.dtype), do, precision).astype(dv_ref.dtype)
    dp = dot_nt(do, v, precision)
    # Softmax backward; rowsum(p * dp) equals rowsum(dO * O), so O is not needed.
    ds = p * (dp - jnp.sum(p * dp, axis=1, keepdims=True))
    ds_in = ds.astype(q.dtype)
    dq_ref[w] = (dot_nn(ds_in, k, precision) * cfg.scale).astype(dq_ref.dtype)
    dk_ref[w] = (dot_tn(ds_in, q, precision) * cfg.scale).astype(dk_ref.dtype)
    return dbias + ds

  n_pad = bias.shape[-1]
  dbias_ref[...] = lax.fori_loop(0, cfg.block_windows, window,
                                 jnp.zeros((n_pad, n_pad), jnp.float32))


def _specs(cfg: _Config, shape, has_mask: bool):
  windows, heads, n_pad, d_pad = shape
  wb = cfg.block_windows
  qkv = pl.BlockSpec((wb, None, n_pad, d_pad), lambda i, h: (i, h, 0, 0))
  specs = [qkv, qkv, qkv, pl.BlockSpec((None, n_pad, n_pad), lambda i, h: (h, 0, 0))]
  if has_mask:
    # Window block i covers windows [i*wb, (i+1)*wb) whose masks are one contiguous block, because
    # wb divides the (padded) mask_windows. With heads the fastest grid axis the mask block index
    # repeats for consecutive steps, so Mosaic TPU skips re-fetching it.
    period = cfg.mask_blocks
    specs.append(pl.BlockSpec((wb, n_pad, n_pad), lambda i, h: (i % period, 0, 0)))
  return qkv, specs, (windows // wb, heads)


def _forward(q, k, v, bias, mask, cfg: _Config):
  has_mask = mask is not None
  qkv_spec, in_specs, grid = _specs(cfg, q.shape, has_mask)
  args = (q, k, v, bias) + ((mask,) if has_mask else ())
  return pl.pallas_call(
      functools.partial(_forward_kernel, cfg=cfg, has_mask=has_mask),
      out_shape=jax.ShapeDtypeStruct(q.shape, q.dtype),
      grid=grid, in_specs=in_specs, out_specs=qkv_spec,
      name='window_attention_fwd', **pallas_call_options(cfg.backend, 2),
  )(*args)


def _backward_config(cfg: _Config) -> _Config:
  """The backward writes one (N, N) float32 dbias partial per (window block, head); a window block
  BACKWARD_BLOCK_FACTOR times the forward's (still dividing the padded mask period) keeps those
  partials a few percent of the q/k/v traffic."""
  period = cfg.block_windows * cfg.mask_blocks
  block = max(b for b in range(cfg.block_windows, BACKWARD_BLOCK_FACTOR * cfg.block_windows + 1)
              if period % b == 0)
  return dataclasses.replace(cfg, block_windows=block, mask_blocks=period // block)


def _backward(q, k, v, bias, mask, do, cfg: _Config):
  cfg = _backward_config(cfg)
  has_mask = mask is not None
  qkv_spec, in_specs, grid = _specs(cfg, q.shape, has_mask)
  n_pad = q.shape[2]
  args = (q, k, v, bias) + ((mask,) if has_mask else ()) + (do,)
  # dbias is summed over windows: one float32 partial per (window block, head), reduced below.
  dbias_spec = pl.BlockSpec((None, None, n_pad, n_pad), lambda i, h: (i, h, 0, 0))
  dq, dk, dv, dbias = pl.pallas_call(
      functools.partial(_backward_kernel, cfg=cfg, has_mask=has_mask),
      out_shape=(jax.ShapeDtypeStruct(q.shape, q.dtype), jax.ShapeDtypeStruct(k.shape, k.dtype),
                 jax.ShapeDtypeStruct(v.shape, v.dtype),
                 jax.ShapeDtypeStruct((grid[0], grid[1], n_pad, n_pad), jnp.float32)),
      grid=grid, in_specs=in_specs + [qkv_spec],
      out_specs=(qkv_spec, qkv_spec, qkv_spec, dbias_spec),
      name='window_attention_bwd', **pallas_call_options(cfg.backend, 2),
  )(*args)
  return dq, dk, dv, jnp.sum(dbias, axis=0).astype(bias.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def _window_attention_padded(q, k, v, bias, mask, cfg: _Config):
  return _forward(q, k, v, bias, mask, cfg)


def _window_attention_padded_fwd(q, k, v, bias, mask, cfg: _Config):
  return _forward(q, k, v, bias, mask, cfg), (q, k, v, bias, mask)


def _window_attention_padded_bwd(cfg: _Config, residuals, do):
  q, k, v, bias, mask = residuals
  dq, dk, dv, dbias = _backward(q, k, v, bias, mask, do, cfg)
  # The shift mask is a constant of the architecture: its cotangent is defined as zero.
  return dq, dk, dv, dbias, None if mask is None else jnp.zeros_like(mask)


_window_attention_padded.defvjp(_window_attention_padded_fwd, _window_attention_padded_bwd)


def _window_blocking(count: int, target: int) -> tuple[int, int]:
  """(windows per block, padded count): the largest divisor of count up to target, unless that is
  so small that padding count up to a multiple of a bigger block wastes less than tiny grid steps."""
  target = max(1, min(target, count))
  block = max(b for b in range(1, target + 1) if count % b == 0)
  if 4 * block >= target:
    return block, count
  # Pad to the block that wastes the fewest windows, among blocks no smaller than target/2.
  best = min(range(max(1, target // 2), target + 1), key=lambda b: ((-count) % b, -b))
  return best, -(-count // best) * best


DEFAULT_BLOCK_WINDOWS = {'interpret': 8, 'triton': 8, 'mosaic_tpu': 32}


def window_attention(q, k, v, bias, mask=None, *, scale=None, block_windows: int | None = None,
                     backend: str | None = None):
  """Fused Pallas window attention, same contract as `window_attention_reference`.

  Pads N to a power of two ≥ 16 (padded keys masked out) and D likewise, and the window count to a
  multiple of the window block; gradients flow to q, k, v and bias (summed over windows), the mask
  gets a zero cotangent. `scale` must be a Python number (default D**-0.5). `block_windows` sets
  the windows per grid step; `backend` overrides the lowering (see `resolve_backend`).
  """
  windows, heads, n, d = q.shape
  if k.shape != q.shape or v.shape != q.shape:
    raise ValueError(f'window_attention: q, k, v shapes differ: {q.shape}, {k.shape}, {v.shape}')
  if bias.shape != (heads, n, n):
    raise ValueError(f'window_attention: bias shape {bias.shape}, expected {(heads, n, n)}')
  scale = d ** -0.5 if scale is None else float(scale)
  backend = resolve_backend(backend)
  if mask is None:
    groups, per = 1, windows
  else:
    if mask.ndim != 3 or mask.shape[1:] != (n, n):
      raise ValueError(f'window_attention: mask shape {mask.shape}, expected (mask_windows, {n}, {n})')
    per = mask.shape[0]
    if windows % per:
      raise ValueError(f'window_attention: {windows} windows is not a multiple of the '
                       f'{per} mask windows')
    groups = windows // per
  n_pad, d_pad = padded_size(n), padded_size(d)
  block, per_pad = _window_blocking(per, block_windows or DEFAULT_BLOCK_WINDOWS[backend])
  cfg = _Config(scale=scale, n_valid=n, block_windows=block, mask_blocks=per_pad // block,
                backend=backend)

  def prepare(x):
    x = pad_axes(x.reshape(groups, per, heads, n, d), {1: per_pad, 3: n_pad, 4: d_pad})
    return x.reshape(groups * per_pad, heads, n_pad, d_pad)

  bias_p = pad_axes(bias, {1: n_pad, 2: n_pad})
  mask_p = None if mask is None else pad_axes(lax.stop_gradient(mask), {0: per_pad, 1: n_pad,
                                                                       2: n_pad})
  out = _window_attention_padded(prepare(q), prepare(k), prepare(v), bias_p, mask_p, cfg)
  out = out.reshape(groups, per_pad, heads, n_pad, d_pad)[:, :per, :, :n, :d]
  return out.reshape(windows, heads, n, d)
