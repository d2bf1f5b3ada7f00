"""Transposed "channel" attention (Restormer's MDTA), used by Restormer, PromptIR and HAIR.

Per batch and head, q and k are L2-normalised over pixels, reduced into a (C, C) attention scaled by
a learned temperature, softmaxed over the last axis and applied to v:

  q, k, v:      (batch, heads, channels, pixels)  channels = channels per head
  temperature:  (heads,)
  returns       (batch, heads, channels, pixels)

`channel_attention_reference` is the plain `jax.numpy` twin every kernel is tested against.

`channel_attention` is the streaming Pallas version. Images are large and C small, so nothing of
size pixels × pixels or a normalised copy of q and k is ever formed:

  pass 1 (Pallas)  streams q and k over pixel blocks, accumulating G = q·kᵀ and the squared row
                   norms in float32 (split over pixel chunks for parallelism, partials summed);
  glue (jnp)       on (C, C) only: S = G / (|q| |k|ᵀ), A = softmax(S · temperature) in float32;
  pass 2 (Pallas)  streams v, writing A·v block by block.

The backward (`jax.custom_vjp`) has the same shape: one streaming reduction dA = dO·vᵀ, (C, C) glue
for the softmax, normalisation and temperature gradients, and one streaming pass writing
dq = dG·k + α_q∘q, dk = dGᵀ·q + α_k∘k and dv = Aᵀ·dO together. Channels are processed in tiles of
16/32/64 rows, so C = 48 (Restormer) needs no padding even under Triton's power-of-two tensors.
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from .window_attention import (dot_nn, dot_nt, matmul_precision, pad_axes, pallas_call_options,
                               resolve_backend)

__all__ = ['channel_attention', 'channel_attention_reference']

NORMALIZE_EPS = 1e-12  # torch.nn.functional.normalize: x / max(||x||, eps)


def _l2_normalize(x):
  norm = jnp.sqrt(jnp.sum(jnp.square(x.astype(jnp.float32)), axis=-1, keepdims=True))
  return x / jnp.maximum(norm, NORMALIZE_EPS).astype(x.dtype)


def channel_attention_reference(q, k, v, temperature):
  """Unfused XLA MDTA core with float32 reductions and softmax."""
  q, k = _l2_normalize(q), _l2_normalize(k)
  scores = jnp.einsum('bhcn,bhdn->bhcd', q, k, preferred_element_type=jnp.float32)
  scores = scores * temperature.astype(jnp.float32).reshape(1, -1, 1, 1)
  probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
  return jnp.einsum('bhcd,bhdn->bhcn', probs, v, preferred_element_type=jnp.float32).astype(v.dtype)


# --- kernels -------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class _Config:
  channels: int           # real channels per head (the rest of the padded rows are zeros)
  channel_tile: int       # rows per tile: 16, 32 or 64 (a power of two for Triton)
  block_pixels: int       # pixels per block (a power of two)
  steps: int              # pixel blocks per program in the streaming reductions
  splits: int             # programs per (batch, head) in the streaming reductions
  backend: str


def _row_tiles(ref, tile, start=None, size=None):
  """A (C, pixels) block as a list of (tile, pixels) tiles: power-of-two loads for Triton."""
  cols = slice(None) if start is None else pl.ds(start, size)
  return [ref[pl.ds(a * tile, tile), cols] for a in range(ref.shape[0] // tile)]


def _gram_kernel(x_ref, y_ref, g_ref, *norm_refs, cfg: _Config):
  """Partial x·yᵀ (and Σx², Σy² per row) over `steps` pixel blocks of one chunk, in float32."""
  tile, bp = cfg.channel_tile, cfg.block_pixels
  t = x_ref.shape[0] // tile
  precision = matmul_precision(x_ref.dtype)

  def step(j, carry):
    g, nx, ny = carry
    start = pl.multiple_of(j * bp, bp)
    xs = _row_tiles(x_ref, tile, start, bp)
    ys = _row_tiles(y_ref, tile, start, bp)
    g = tuple(tuple(g[a][b] + dot_nt(xs[a], ys[b], precision) for b in range(t)) for a in range(t))
    if norm_refs:
      nx = tuple(nx[a] + jnp.sum(jnp.square(xs[a].astype(jnp.float32)), axis=1, keepdims=True)
                 for a in range(t))
      ny = tuple(ny[a] + jnp.sum(jnp.square(ys[a].astype(jnp.float32)), axis=1, keepdims=True)
                 for a in range(t))
    return g, nx, ny

  zeros_g = tuple(tuple(jnp.zeros((tile, tile), jnp.float32) for _ in range(t)) for _ in range(t))
  zeros_n = tuple(jnp.zeros((tile, 1), jnp.float32) for _ in range(t)) if norm_refs else ()
  g, nx, ny = lax.fori_loop(0, cfg.steps, step, (zeros_g, zeros_n, zeros_n))
  for a in range(t):
    for b in range(t):
      g_ref[pl.ds(a * tile, tile), pl.ds(b * tile, tile)] = g[a][b]
    if norm_refs:
      norm_refs[0][pl.ds(a * tile, tile), :] = nx[a]
      norm_refs[1][pl.ds(a * tile, tile), :] = ny[a]


def _matrix_times(m_ref, xs, tile, precision):
  """(C, C) float32 matrix ref times a block given as row tiles; the matrix is cast to the block's
  dtype so low-precision inputs use their fast matmul, accumulation stays float32."""
  t = len(xs)
  out = []
  for a in range(t):
    acc = None
    for b in range(t):
      m = m_ref[pl.ds(a * tile, tile), pl.ds(b * tile, tile)].astype(xs[b].dtype)
      term = dot_nn(m, xs[b], precision)
      acc = term if acc is None else acc + term
    out.append(acc)
  return out


def _store_tiles(ref, tiles, tile):
  for a, x in enumerate(tiles):
    ref[pl.ds(a * tile, tile), :] = x.astype(ref.dtype)


def _apply_kernel(a_ref, v_ref, o_ref, *, cfg: _Config):
  """o = A·v for one pixel block."""
  tile = cfg.channel_tile
  vs = _row_tiles(v_ref, tile)
  _store_tiles(o_ref, _matrix_times(a_ref, vs, tile, matmul_precision(v_ref.dtype)), tile)


def _grad_apply_kernel(dg_ref, dgt_ref, at_ref, aq_ref, ak_ref, q_ref, k_ref, do_ref,
                       dq_ref, dk_ref, dv_ref, *, cfg: _Config):
  """dq = dG·k + α_q∘q, dk = dGᵀ·q + α_k∘k, dv = Aᵀ·dO for one pixel block."""
  tile = cfg.channel_tile
  precision = matmul_precision(q_ref.dtype)
  qs, ks = _row_tiles(q_ref, tile), _row_tiles(k_ref, tile)
  dq = _matrix_times(dg_ref, ks, tile, precision)
  dk = _matrix_times(dgt_ref, qs, tile, precision)
  dq = [d + aq_ref[pl.ds(a * tile, tile), :] * x.astype(jnp.float32)
        for a, (d, x) in enumerate(zip(dq, qs))]
  dk = [d + ak_ref[pl.ds(a * tile, tile), :] * x.astype(jnp.float32)
        for a, (d, x) in enumerate(zip(dk, ks))]
  _store_tiles(dq_ref, dq, tile)
  _store_tiles(dk_ref, dk, tile)
  _store_tiles(dv_ref, _matrix_times(at_ref, _row_tiles(do_ref, tile), tile, precision), tile)


def _gram(x, y, cfg: _Config, with_norms: bool):
  """Σ over pixels of x·yᵀ (bh, C, C) and, optionally, the squared row norms (bh, C) of x and y."""
  bh, c, _ = x.shape
  chunk = cfg.steps * cfg.block_pixels
  in_spec = pl.BlockSpec((None, c, chunk), lambda i, s: (i, 0, s))
  mat = jax.ShapeDtypeStruct((bh, cfg.splits, c, c), jnp.float32)
  vec = jax.ShapeDtypeStruct((bh, cfg.splits, c, 1), jnp.float32)
  mat_spec = pl.BlockSpec((None, None, c, c), lambda i, s: (i, s, 0, 0))
  vec_spec = pl.BlockSpec((None, None, c, 1), lambda i, s: (i, s, 0, 0))
  out = pl.pallas_call(
      functools.partial(_gram_kernel, cfg=cfg),
      out_shape=(mat, vec, vec) if with_norms else (mat,),
      grid=(bh, cfg.splits), in_specs=[in_spec, in_spec],
      out_specs=(mat_spec, vec_spec, vec_spec) if with_norms else (mat_spec,),
      name='channel_attention_gram', **pallas_call_options(cfg.backend, 2),
  )(x, y)
  # The per-chunk partials are (C, C) each: summing them is negligible next to the streaming.
  return tuple(jnp.sum(o, axis=1) for o in out)


def _pixel_grid(x, cfg: _Config):
  bh, c, p = x.shape
  return (bh, p // cfg.block_pixels), pl.BlockSpec((None, c, cfg.block_pixels),
                                                   lambda i, j: (i, 0, j))


def _apply(a, v, cfg: _Config):
  grid, spec = _pixel_grid(v, cfg)
  c = v.shape[1]
  return pl.pallas_call(
      functools.partial(_apply_kernel, cfg=cfg),
      out_shape=jax.ShapeDtypeStruct(v.shape, v.dtype), grid=grid,
      in_specs=[pl.BlockSpec((None, c, c), lambda i, j: (i, 0, 0)), spec], out_specs=spec,
      name='channel_attention_apply', **pallas_call_options(cfg.backend, 2),
  )(a, v)


def _grad_apply(dg, at, alpha_q, alpha_k, q, k, do, cfg: _Config):
  grid, spec = _pixel_grid(q, cfg)
  c = q.shape[1]
  mat = pl.BlockSpec((None, c, c), lambda i, j: (i, 0, 0))
  vec = pl.BlockSpec((None, c, 1), lambda i, j: (i, 0, 0))
  return pl.pallas_call(
      functools.partial(_grad_apply_kernel, cfg=cfg),
      out_shape=tuple(jax.ShapeDtypeStruct(x.shape, x.dtype) for x in (q, k, do)), grid=grid,
      in_specs=[mat, mat, mat, vec, vec, spec, spec, spec], out_specs=(spec, spec, spec),
      name='channel_attention_grad', **pallas_call_options(cfg.backend, 2),
  )(dg, jnp.swapaxes(dg, 1, 2), at, alpha_q[..., None], alpha_k[..., None], q, k, do)


# --- forward / backward on padded (batch*heads, C_pad, P_pad) arrays ------------------------------

def _attention_matrix(q, k, temperature, cfg: _Config):
  """Pass 1 and the (C, C) float32 glue: the probabilities and what the backward needs."""
  c = cfg.channels
  g, sq, sk = _gram(q, k, cfg, with_norms=True)
  g, sq, sk = g[:, :c, :c], sq[:, :c, 0], sk[:, :c, 0]
  nq = jnp.maximum(jnp.sqrt(sq), NORMALIZE_EPS)
  nk = jnp.maximum(jnp.sqrt(sk), NORMALIZE_EPS)
  s = g / (nq[:, :, None] * nk[:, None, :])
  probs = jax.nn.softmax(s * temperature[:, None, None], axis=-1)
  return probs, (s, sq, sk, nq, nk)


def _pad_square(x, size):
  return pad_axes(x, {1: size, 2: size})


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _channel_attention_padded(q, k, v, temperature, cfg: _Config):
  probs, _ = _attention_matrix(q, k, temperature, cfg)
  return _apply(_pad_square(probs, q.shape[1]), v, cfg)


def _channel_attention_padded_fwd(q, k, v, temperature, cfg: _Config):
  probs, stats = _attention_matrix(q, k, temperature, cfg)
  out = _apply(_pad_square(probs, q.shape[1]), v, cfg)
  return out, (q, k, v, temperature, probs, stats)


def _channel_attention_padded_bwd(cfg: _Config, residuals, do):
  q, k, v, temperature, probs, (s, sq, sk, nq, nk) = residuals
  c, c_pad = cfg.channels, q.shape[1]
  (da,) = _gram(do, v, cfg, with_norms=False)                 # dA = dO·vᵀ
  da = da[:, :c, :c]
  dz = probs * (da - jnp.sum(probs * da, axis=-1, keepdims=True))   # softmax backward
  dtemperature = jnp.sum(dz * s, axis=(1, 2))
  ds = dz * temperature[:, None, None]
  dg = ds / (nq[:, :, None] * nk[:, None, :])                  # S = G / (|q| |k|ᵀ)
  dsn = ds * s
  # d|q| = -Σ_d dS·S / |q|; |q| = max(sqrt(Σq²), eps) so dq gains (d|q| / sqrt(Σq²))·q when the
  # norm is above eps, nothing when clamped.
  rq, rk = jnp.sqrt(sq), jnp.sqrt(sk)
  alpha_q = jnp.where(rq > NORMALIZE_EPS, -jnp.sum(dsn, axis=2) / (nq * jnp.where(rq > 0, rq, 1)), 0)
  alpha_k = jnp.where(rk > NORMALIZE_EPS, -jnp.sum(dsn, axis=1) / (nk * jnp.where(rk > 0, rk, 1)), 0)
  pad_vec = lambda x: pad_axes(x, {1: c_pad})
  dq, dk, dv = _grad_apply(_pad_square(dg, c_pad), _pad_square(jnp.swapaxes(probs, 1, 2), c_pad),
                           pad_vec(alpha_q), pad_vec(alpha_k), q, k, do, cfg)
  return dq, dk, dv, dtemperature


_channel_attention_padded.defvjp(_channel_attention_padded_fwd, _channel_attention_padded_bwd)


def _largest_divisor_at_most(n: int, limit: int) -> int:
  return max(d for d in range(1, max(1, min(n, limit)) + 1) if n % d == 0)


DEFAULT_BLOCK_PIXELS = {'interpret': 128, 'triton': 128, 'mosaic_tpu': 512}
TARGET_PROGRAMS = 512   # streaming reductions: enough programs to fill a GPU
MIN_STEPS = 8           # ...while each still streams several blocks (fewer partials to sum)


def channel_attention(q, k, v, temperature, *, block_pixels: int | None = None,
                      backend: str | None = None):
  """Streaming Pallas MDTA core, same contract as `channel_attention_reference`.

  Channels are zero-padded to a multiple of 16 and pixels to a multiple of the pixel block only
  when needed; gradients flow to q, k, v and temperature. `block_pixels` (a power of two) sets the
  pixels per block; `backend` overrides the lowering (see `window_attention.resolve_backend`).
  """
  b, heads, c, p = q.shape
  if k.shape != q.shape or v.shape != q.shape:
    raise ValueError(f'channel_attention: q, k, v shapes differ: {q.shape}, {k.shape}, {v.shape}')
  if temperature.shape != (heads,):
    raise ValueError(f'channel_attention: temperature shape {temperature.shape}, expected ({heads},)')
  backend = resolve_backend(backend)
  bp = block_pixels or DEFAULT_BLOCK_PIXELS[backend]
  if bp & (bp - 1):
    raise ValueError(f'channel_attention: block_pixels must be a power of two, got {bp}')
  bp = min(bp, max(16, pl.next_power_of_2(p)))
  c_pad = -(-c // 16) * 16
  tile = next(t for t in (64, 32, 16) if c_pad % t == 0)
  n_blocks = -(-p // bp)
  bh = b * heads
  wanted_steps = min(n_blocks, max(MIN_STEPS, -(-n_blocks * bh // TARGET_PROGRAMS)))
  steps = _largest_divisor_at_most(n_blocks, wanted_steps)
  cfg = _Config(channels=c, channel_tile=tile, block_pixels=bp, steps=steps,
                splits=n_blocks // steps, backend=backend)

  def prepare(x):
    return pad_axes(x.reshape(bh, c, p), {1: c_pad, 2: n_blocks * bp})

  t = jnp.broadcast_to(temperature.astype(jnp.float32)[None], (b, heads)).reshape(bh)
  out = _channel_attention_padded(prepare(q), prepare(k), prepare(v), t, cfg)
  return out[:, :c, :p].reshape(b, heads, c, p)
