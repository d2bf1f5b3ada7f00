"""DreamClear's denoiser (Ai et al., NeurIPS 2024) in Flax NNX, faithful to the official PyTorch model.

Reimplements `ControlPixArtMSHalfSR2Branch` of shallowdream204/DreamClear
(`diffusion/model/nets/pixart_controlnet.py` on PixArt-alpha's `PixArtMS.py` / `PixArt_blocks.py`):
an adaLN-single DiT (patch embedding, 2-D sin-cos position embedding with `lewei_scale`, timestep,
image-size and aspect-ratio embedders, `t_block`, masked caption cross-attention, a final layer
predicting eps and the learned-range variance values) steered by two ControlFormer branches (copies
of the first `copy_blocks_num` blocks, fed with the LQ latent and the SwinIR pre-restored latent),
a degradation cross-attention between them (`cross_de`), an adaptive modulator of the pre branch
(`am_pre`) and a mixture of 3 adaptive modulators with a token-wise softmax gate (`am_lq`).

Quirks of the original kept on purpose:
* `cross_de` flattens the whole batch into ONE attention sequence of B*N tokens without a mask, so
  the samples of a batch (the conditional and unconditional halves of classifier-free guidance)
  attend to each other. Nothing else mixes samples.
* Classifier-free guidance (`forward_with_cfg`, `forward_with_cfg_tile`) guides output channels
  0-2 only; channel 3 of eps and the variance channels are returned per half, unguided.
* The position embedding's first half encodes the width coordinate; it is recomputed for the
  actual latent size (float64 numpy, as the original) and added to the three x embeddings only.
* The 256-d timestep / size sinusoids use torch's float32 frequency table bit for bit (see
  `timestep_frequencies`): arguments reach ~1000 rad, where one ulp of a frequency matters.
* Without `c_lq`/`c_pre` the original runs only the base blocks after the first `copy_blocks_num`
  (none in the official model): so does this port.

Latents are NHWC: x (B, h, w, 4) -> (B, h, w, 8) (channels 0-3 eps, 4-7 variance values).
Under a bfloat16 `dtype`, layer norms, softmaxes and the sinusoids run in float32.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import PartitionSpec as P

from jaxrestore import layers
from jaxrestore.mapping import (CheckpointMismatchError, ParamMap, Rule, conv_oihw_to_hwio,
                                count_children, linear_oi_to_io)
from jaxrestore.models.base import Architecture, ModelConfig, Preset, runtime_field

OFFICIAL_HEAD_DIM = 72   # PixArt-XL: 1152 / 16 heads
FREQUENCY_EMBEDDING_SIZE = 256
# test.py passes these constants as data_info for every image, whatever its size.
DEFAULT_IMG_HW = (1024.0, 1024.0)
DEFAULT_ASPECT_RATIO = 1.0


@dataclasses.dataclass(frozen=True)
class DreamClearConfig(ModelConfig):
  """PixArtMS / ControlPixArtMSHalfSR2Branch keywords; defaults are the official inference config
  (`configs/DreamClear/DreamClear_Test.py` on `PixArt_xl2_internal.py`, 1024^2 images)."""
  input_size: int = 128            # latent side of the base model: base_size = input_size // patch_size
  patch_size: int = 2
  in_channels: int = 4
  hidden_size: int = 1152
  depth: int = 28
  num_heads: int | None = None     # not in the weights; None = hidden_size // 72 (the official head dim)
  mlp_ratio: float = 4.0
  pred_sigma: bool = True          # learned sigma: 2 * in_channels outputs
  caption_channels: int = 4096     # T5-XXL features
  model_max_length: int = 120      # caption tokens (length of the null caption)
  lewei_scale: float = 2.0
  copy_blocks_num: int = 28
  num_experts: int = 3             # am_lq experts (gate width 8 * num_experts, as the original)
  dtype: Any = runtime_field(None)
  param_dtype: Any = runtime_field(jnp.float32)
  # A latent denoiser is never padded silently: sizes must be multiples of the patch size.
  padding: str = runtime_field('strict')

  def __post_init__(self):
    self.check_padding()
    heads = self.num_heads
    if heads is None:
      if self.hidden_size % OFFICIAL_HEAD_DIM:
        raise ValueError(f'DreamClear: hidden_size {self.hidden_size} is not a multiple of the official head '
                         f'dim {OFFICIAL_HEAD_DIM}; the head count is not stored in the weights, pass num_heads=')
      heads = self.hidden_size // OFFICIAL_HEAD_DIM
    object.__setattr__(self, 'num_heads', int(heads))
    d = self.hidden_size
    if d % self.num_heads:
      raise ValueError(f'DreamClear: hidden_size {d} is not divisible by {self.num_heads} heads')
    if d % 3 or d % 4:
      raise ValueError(f'DreamClear: hidden_size {d} must be divisible by 3 (size embedders of width '
                       f'hidden/3) and by 4 (2-D sin-cos position embedding)')
    if not 0 <= self.copy_blocks_num <= self.depth:
      raise ValueError(f'DreamClear: copy_blocks_num {self.copy_blocks_num} must lie in [0, depth={self.depth}]')
    if self.input_size % self.patch_size:
      raise ValueError(f'DreamClear: input_size {self.input_size} is not a multiple of patch_size {self.patch_size}')

  @property
  def in_chans(self) -> int:
    return self.in_channels

  @property
  def out_chans(self) -> int:
    return 2 * self.in_channels if self.pred_sigma else self.in_channels

  @property
  def size_multiple(self) -> int:
    return self.patch_size

  @property
  def min_size(self) -> int:
    return self.patch_size

  @property
  def base_size(self) -> int:
    return self.input_size // self.patch_size

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_heads


# ----- fixed embeddings --------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def timestep_frequencies(half: int = FREQUENCY_EMBEDDING_SIZE // 2) -> np.ndarray:
  """torch's float32 `exp(-ln(10000) * arange(half) / half)`, bit for bit.

  The argument is formed in float32 exactly as torch does; torch's CPU exp (SLEEF, 1 ulp) then
  differs from the correctly rounded value in two entries of the 128-entry table, both one ulp up.
  """
  arg = (np.float32(-math.log(10000)) * np.arange(half, dtype=np.float32)) / np.float32(half)
  freqs = np.exp(arg.astype(np.float64)).astype(np.float32)
  if half == 128:
    bits = freqs.view(np.uint32).copy()
    bits[[12, 106]] += 1
    freqs = bits.view(np.float32)
  return freqs


def timestep_embedding(t: jax.Array) -> jax.Array:
  """(N,) -> (N, 256) float32 [cos, sin] of t * f_k, the arguments rounded to float32 as in torch."""
  args = t.astype(jnp.float32)[:, None] * jnp.asarray(timestep_frequencies())[None]
  return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)


@functools.lru_cache(maxsize=64)
def position_embedding(h: int, w: int, dim: int, base_size: int, lewei_scale: float) -> np.ndarray:
  """(h*w, dim) float32, as `get_2d_sincos_pos_embed(dim, (h, w), lewei_scale, base_size)`.

  Token r*w + c gets [S(coord_w[c]), S(coord_h[r])] (width first), S(p) = [sin(p*omega), cos(p*omega)].
  The grid is float32, then float64 (the original keeps `lewei_scale` as a 1-tuple).
  """
  lewei = np.asarray((lewei_scale,), np.float64)
  coord_h = np.arange(h, dtype=np.float32) / np.float32(h / base_size) / lewei
  coord_w = np.arange(w, dtype=np.float32) / np.float32(w / base_size) / lewei
  quarter = dim // 4
  omega = np.arange(quarter, dtype=np.float64)
  omega /= quarter
  omega = 1.0 / 10000 ** omega

  def sincos(pos):
    out = np.outer(pos.reshape(-1), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)

  grid_w = np.broadcast_to(coord_w[None, :], (h, w))
  grid_h = np.broadcast_to(coord_h[:, None], (h, w))
  return np.concatenate([sincos(grid_w), sincos(grid_h)], axis=1).astype(np.float32)


def gaussian_tile_weights(tile: int) -> np.ndarray:
  """(tile, tile) float64 weights of `_gaussian_weights`: the column profile is centred on
  (tile - 1) / 2, the row profile on tile / 2, as in the original."""
  var = 0.01

  def profile(size, midpoint):
    return [np.exp(-(i - midpoint) * (i - midpoint) / (size * size) / (2 * var)) / np.sqrt(2 * np.pi * var)
            for i in range(size)]

  return np.outer(profile(tile, tile / 2), profile(tile, (tile - 1) / 2))


def tile_offsets(size: int, tile: int, overlap: int) -> list[int]:
  """Start offsets along one axis, as `forward_with_cfg_tile` walks it (the last tile is flush)."""
  count, cur = 0, 0
  while cur < size:
    if count and tile - overlap <= 0:
      raise ValueError(f'DreamClear tiling: overlap {overlap} must be smaller than the tile {tile}')
    cur = max(count * tile - overlap * count, 0) + tile
    count += 1
  return [size - tile if i == count - 1 else max(i * tile - overlap * i, 0) for i in range(count)]


# ----- building blocks ---------------------------------------------------------------------------------

def _gelu(x):
  return jax.nn.gelu(x, approximate=True)


def _norm(x: jax.Array, eps: float = 1e-6) -> jax.Array:
  """LayerNorm without affine (float32 statistics, two-pass variance)."""
  xf = x.astype(jnp.float32)
  mean = xf.mean(-1, keepdims=True)
  var = jnp.square(xf - mean).mean(-1, keepdims=True)
  return ((xf - mean) / jnp.sqrt(var + eps)).astype(x.dtype)


def _modulate(x, shift, scale):
  return x * (1 + scale) + shift


def attention(q: jax.Array, k: jax.Array, v: jax.Array, key_mask: jax.Array | None = None) -> jax.Array:
  """softmax(q k^T / sqrt(d)) v per batch element and head; (B, N, H, d) layout; float32 softmax.

  key_mask (B, Nk) bool: keys to attend to (a query with none gets zeros).
  """
  scale = q.shape[-1] ** -0.5
  logits = jnp.einsum('bqhd,bkhd->bhqk', q, k, preferred_element_type=jnp.float32) * scale
  if key_mask is not None:
    valid = key_mask[:, None, None, :]
    logits = jnp.where(valid, logits, -jnp.inf)
    peak = jnp.max(logits, axis=-1, keepdims=True)
    weights = jnp.exp(logits - jnp.where(jnp.isfinite(peak), peak, 0.0))
    weights = weights / jnp.maximum(jnp.sum(weights, axis=-1, keepdims=True), jnp.finfo(jnp.float32).tiny)
  else:
    weights = jax.nn.softmax(logits, axis=-1)
  out = jnp.einsum('bhqk,bkhd->bqhd', weights.astype(v.dtype), v, preferred_element_type=jnp.float32)
  return out.astype(q.dtype)


class _KeyStream:
  """Stands in for nnx.Rngs while building: keys fold_in(key, i) with a Python counter. nnx.Rngs
  updates a counter Variable per draw, which under `nnx.eval_shape` costs time proportional to the
  trace so far (flax 0.12 / jax 0.10): ~2,400 parameters then took minutes instead of seconds."""

  def __init__(self, key: jax.Array):
    self.key = key
    self.count = 0

  def params(self) -> jax.Array:
    self.count += 1
    return jax.random.fold_in(self.key, self.count)


def _dense(cfg: DreamClearConfig, rngs: nnx.Rngs, d_in: int, d_out: int) -> nnx.Linear:
  return layers.linear(d_in, d_out, rngs=rngs, dtype=cfg.dtype, param_dtype=cfg.param_dtype)


class PatchEmbed(nnx.Module):
  """Conv2d(k = s = patch) flattened to (B, h*w, D), tokens row-major."""

  def __init__(self, cfg: DreamClearConfig, *, rngs: nnx.Rngs):
    p = cfg.patch_size
    self.proj = nnx.Conv(cfg.in_channels, cfg.hidden_size, (p, p), strides=(p, p), padding='VALID',
                         kernel_init=layers.torch_kernel_init,
                         bias_init=layers.torch_uniform_init(cfg.in_channels * p * p),
                         dtype=cfg.dtype, param_dtype=cfg.param_dtype,
                         conv_general_dilated=layers.conv_general_dilated, rngs=rngs)

  def __call__(self, x):
    y = self.proj(x)
    return y.reshape(y.shape[0], -1, y.shape[-1])


class SelfAttention(nnx.Module):

  def __init__(self, cfg: DreamClearConfig, *, rngs: nnx.Rngs):
    d = cfg.hidden_size
    self.num_heads = cfg.num_heads
    self.qkv = _dense(cfg, rngs, d, 3 * d)
    self.proj = _dense(cfg, rngs, d, d)

  def __call__(self, x):
    b, n, d = x.shape
    q, k, v = jnp.moveaxis(self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads), 2, 0)
    return self.proj(attention(q, k, v).reshape(b, n, d))


class CaptionCrossAttention(nnx.Module):
  """Image tokens of sample b attend to the valid caption tokens of sample b only."""

  def __init__(self, cfg: DreamClearConfig, *, rngs: nnx.Rngs):
    d = cfg.hidden_size
    self.num_heads = cfg.num_heads
    self.q_linear = _dense(cfg, rngs, d, d)
    self.kv_linear = _dense(cfg, rngs, d, 2 * d)
    self.proj = _dense(cfg, rngs, d, d)

  def __call__(self, x, y, y_mask):
    b, n, d = x.shape
    h = self.num_heads
    q = self.q_linear(x).reshape(b, n, h, d // h)
    k, v = jnp.moveaxis(self.kv_linear(y).reshape(b, y.shape[1], 2, h, d // h), 2, 0)
    return self.proj(attention(q, k, v, y_mask).reshape(b, n, d))


class Mlp(nnx.Module):
  """timm Mlp: fc1, GELU-tanh, fc2."""

  def __init__(self, cfg: DreamClearConfig, d_in: int, hidden: int, d_out: int, *, rngs: nnx.Rngs):
    self.fc1 = _dense(cfg, rngs, d_in, hidden)
    self.fc2 = _dense(cfg, rngs, hidden, d_out)

  def __call__(self, x):
    return self.fc2(_gelu(self.fc1(x)))


class PixArtMSBlock(nnx.Module):
  """adaLN-single block: gated self-attention, ungated caption cross-attention, gated MLP."""

  def __init__(self, cfg: DreamClearConfig, *, rngs: nnx.Rngs):
    d = cfg.hidden_size
    self.attn = SelfAttention(cfg, rngs=rngs)
    self.cross_attn = CaptionCrossAttention(cfg, rngs=rngs)
    self.mlp = Mlp(cfg, d, int(d * cfg.mlp_ratio), d, rngs=rngs)
    self.scale_shift_table = nnx.Param(
        jax.random.normal(rngs.params(), (6, d), cfg.param_dtype) / d ** 0.5)

  def __call__(self, x, y, y_mask, t0):
    b = x.shape[0]
    mod = self.scale_shift_table[...][None].astype(t0.dtype) + t0.reshape(b, 6, -1)
    shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = (mod[:, i:i + 1] for i in range(6))
    x = x + gate_msa * self.attn(_modulate(_norm(x), shift_msa, scale_msa))
    x = x + self.cross_attn(x, y, y_mask)
    return x + gate_mlp * self.mlp(_modulate(_norm(x), shift_mlp, scale_mlp))


class ControlBlock(nnx.Module):
  """ControlT2IDitBlockHalfSR: a copy of a base block (the first one also adds the x embedding)."""

  def __init__(self, cfg: DreamClearConfig, *, rngs: nnx.Rngs):
    self.copied_block = PixArtMSBlock(cfg, rngs=rngs)

  def __call__(self, c, y, y_mask, t0):
    return self.copied_block(c, y, y_mask, t0)


class DegradationCrossAttention(nnx.Module):
  """Zero_MultiHeadCrossAttentionDe: LQ-branch queries over pre-branch keys/values -> (ref, de_map).

  The original reshapes the batch into one sequence before its unmasked attention: every token
  attends over the tokens of all samples (kept here; it matters for CFG batches).
  """

  def __init__(self, cfg: DreamClearConfig, *, rngs: nnx.Rngs):
    d = cfg.hidden_size
    self.num_heads = cfg.num_heads
    self.q_linear = _dense(cfg, rngs, d, d)
    self.kv_linear = _dense(cfg, rngs, d, 2 * d)
    self.proj = _dense(cfg, rngs, d, d)
    self.de_proj = _dense(cfg, rngs, d, d)
    norm_kw = dict(dtype=None if cfg.dtype is None else jnp.float32, param_dtype=cfg.param_dtype)
    self.norm1 = layers.layer_norm(d, rngs=rngs, **norm_kw)
    self.norm2 = layers.layer_norm(d, rngs=rngs, **norm_kw)

  def __call__(self, c_lq, c_pre):
    b, n, d = c_lq.shape
    h = self.num_heads
    q = self.q_linear(self.norm1(c_lq)).reshape(1, b * n, h, d // h)
    k, v = jnp.moveaxis(self.kv_linear(self.norm2(c_pre)).reshape(1, b * n, 2, h, d // h), 2, 0)
    out = attention(q, k, v).reshape(b, n, d).astype(c_lq.dtype)
    return self.proj(out), self.de_proj(out)


class AdaptiveModulator(nnx.Module):
  """(gamma, beta) = (proj_mul(a), proj_add(a)), a = GELU(shared_proj(c))."""

  def __init__(self, cfg: DreamClearConfig, *, rngs: nnx.Rngs):
    d = cfg.hidden_size
    self.shared_proj = _dense(cfg, rngs, d, d // 2)
    self.proj_add = _dense(cfg, rngs, d // 2, d)
    self.proj_mul = _dense(cfg, rngs, d // 2, d)

  def __call__(self, c):
    a = _gelu(self.shared_proj(c))
    return self.proj_mul(a), self.proj_add(a)


class MixtureOfModulators(nnx.Module):
  """Adaptive_Modulator_MoE: experts on the LQ branch mixed per token by softmax(gate(de_map))."""

  def __init__(self, cfg: DreamClearConfig, *, rngs: nnx.Rngs):
    d, e = cfg.hidden_size, cfg.num_experts
    self.experts = nnx.List([AdaptiveModulator(cfg, rngs=rngs) for _ in range(e)])
    self.gate = nnx.Sequential(_dense(cfg, rngs, d, 8 * e), _gelu, _dense(cfg, rngs, 8 * e, e))

  def __call__(self, c, de_map, capture=None, name=''):
    logits = self.gate(de_map)
    if capture is not None:
      capture[f'{name}.gate'] = logits
    weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(c.dtype)[..., None, :]
    outs = [expert(c) for expert in self.experts]
    gamma = jnp.sum(jnp.stack([g for g, _ in outs], axis=-1) * weights, axis=-1)
    beta = jnp.sum(jnp.stack([b for _, b in outs], axis=-1) * weights, axis=-1)
    return gamma, beta


class TimestepEmbedder(nnx.Module):
  """Sinusoid (256) -> Linear -> SiLU -> Linear; a SizeEmbedder embeds each column separately and
  concatenates them per sample."""

  def __init__(self, cfg: DreamClearConfig, width: int, *, rngs: nnx.Rngs):
    self.mlp = nnx.Sequential(_dense(cfg, rngs, FREQUENCY_EMBEDDING_SIZE, width), jax.nn.silu,
                              _dense(cfg, rngs, width, width))

  def __call__(self, s, dtype, capture=None, name=''):
    b, dims = s.shape
    freq = timestep_embedding(s.reshape(-1))
    if capture is not None:
      capture[f'{name.removesuffix("_embedder")}_freq'] = freq
    return self.mlp(freq.astype(dtype)).reshape(b, -1)


class CaptionEmbedder(nnx.Module):
  """y_proj (Linear, GELU-tanh, Linear) and the learned null caption `y_embedding` (L, C)."""

  def __init__(self, cfg: DreamClearConfig, *, rngs: nnx.Rngs):
    c, d = cfg.caption_channels, cfg.hidden_size
    self.y_proj = Mlp(cfg, c, d, d, rngs=rngs)
    self.y_embedding = nnx.Param(
        jax.random.normal(rngs.params(), (cfg.model_max_length, c), cfg.param_dtype) / c ** 0.5)

  def __call__(self, y):
    return self.y_proj(y)


class FinalLayer(nnx.Module):
  """T2IFinalLayer: (shift, scale) = table + t; Linear(LN(x) * (1 + scale) + shift)."""

  def __init__(self, cfg: DreamClearConfig, *, rngs: nnx.Rngs):
    d = cfg.hidden_size
    self.scale_shift_table = nnx.Param(jax.random.normal(rngs.params(), (2, d), cfg.param_dtype) / d ** 0.5)
    self.linear = _dense(cfg, rngs, d, cfg.patch_size ** 2 * cfg.out_chans)

  def __call__(self, x, t):
    mod = self.scale_shift_table[...][None].astype(t.dtype) + t[:, None]
    return self.linear(_modulate(_norm(x), mod[:, 0:1], mod[:, 1:2]))


class PixArtMS(nnx.Module):
  """The base DiT's parameters (its forward lives in `DreamClear`)."""

  def __init__(self, cfg: DreamClearConfig, *, rngs: nnx.Rngs):
    d = cfg.hidden_size
    self.x_embedder = PatchEmbed(cfg, rngs=rngs)
    self.t_embedder = TimestepEmbedder(cfg, d, rngs=rngs)
    self.t_block = nnx.Sequential(jax.nn.silu, _dense(cfg, rngs, d, 6 * d))
    self.y_embedder = CaptionEmbedder(cfg, rngs=rngs)
    self.csize_embedder = TimestepEmbedder(cfg, d // 3, rngs=rngs)
    self.ar_embedder = TimestepEmbedder(cfg, d // 3, rngs=rngs)
    self.blocks = nnx.List([PixArtMSBlock(cfg, rngs=rngs) for _ in range(cfg.depth)])
    self.final_layer = FinalLayer(cfg, rngs=rngs)


# ----- the network -------------------------------------------------------------------------------------

def _rows(a, b: int, name: str) -> jax.Array:
  """Repeats a batch-1 (or batch-b/k) conditioning array to batch b, as the original's .repeat."""
  if a.shape[0] == b:
    return a
  if a.shape[0] == 0 or b % a.shape[0]:
    raise ValueError(f'DreamClear: {name} has batch {a.shape[0]}, which does not divide the batch {b}')
  return jnp.tile(a, (b // a.shape[0],) + (1,) * (a.ndim - 1))


class DreamClear(nnx.Module):
  """ControlPixArtMSHalfSR2Branch. See the module docstring for the call and its quirks."""

  def __init__(self, config: DreamClearConfig, *, rngs: nnx.Rngs):
    cfg = self.config = config
    n = cfg.copy_blocks_num
    rngs = _KeyStream(rngs.params())
    self.base_model = PixArtMS(cfg, rngs=rngs)
    self.controlnet_lq = nnx.List([ControlBlock(cfg, rngs=rngs) for _ in range(n)])
    self.am_lq = nnx.List([MixtureOfModulators(cfg, rngs=rngs) for _ in range(n)])
    self.controlnet_pre = nnx.List([ControlBlock(cfg, rngs=rngs) for _ in range(n)])
    self.am_pre = nnx.List([AdaptiveModulator(cfg, rngs=rngs) for _ in range(n)])
    self.cross_de = nnx.List([DegradationCrossAttention(cfg, rngs=rngs) for _ in range(n)])
    self.c_embedder_lq = PatchEmbed(cfg, rngs=rngs)
    self.c_embedder_pre = PatchEmbed(cfg, rngs=rngs)
    self.x_embedder_lq = PatchEmbed(cfg, rngs=rngs)
    self.x_embedder_pre = PatchEmbed(cfg, rngs=rngs)

  @property
  def y_embedding(self) -> jax.Array:
    """The learned null caption (L, caption_channels) that classifier-free guidance pairs with."""
    return self.base_model.y_embedder.y_embedding[...]

  def null_caption(self, batch: int = 1) -> jax.Array:
    return jnp.broadcast_to(self.y_embedding[None], (batch,) + self.y_embedding.shape)

  def __call__(self, x, t, caption, *, caption_mask=None, c_lq=None, c_pre=None, img_hw=None,
               aspect_ratio=None):
    """x (B, h, w, C) noisy latent; t (B,) timesteps (original 0..999 scale); caption (B, L, Cc)
    (or (B, 1, L, Cc)); caption_mask (B or 1, L) nonzero = valid token, None = all valid;
    c_lq, c_pre (B or 1, h, w, C) latents of the LQ and pre-restored images; img_hw (B or 1, 2),
    aspect_ratio (B or 1, 1) (default: test.py's constants 1024x1024 and 1.0).
    Returns (B, h, w, out_chans): eps then the variance values."""
    return self._forward(x, t, caption, caption_mask, c_lq, c_pre, img_hw, aspect_ratio)

  def intermediates(self, x, t, caption, *, caption_mask=None, c_lq=None, c_pre=None, img_hw=None,
                    aspect_ratio=None) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The output and the named intermediates of one forward (names as the official modules:
    'x_embedder', 't_block', 'base_block.0', 'cross_de.0.out1', 'am_lq.0.gate', ...), for
    stage-by-stage comparisons. Tokens are (B, h*w, D), row-major."""
    capture: dict[str, jax.Array] = {}
    out = self._forward(x, t, caption, caption_mask, c_lq, c_pre, img_hw, aspect_ratio, capture)
    return out, capture

  def _forward(self, x, t, caption, caption_mask, c_lq, c_pre, img_hw, aspect_ratio, capture=None):
    cfg, base = self.config, self.base_model
    keep = (lambda name, v: capture.__setitem__(name, v)) if capture is not None else (lambda name, v: None)
    height, width = x.shape[1:3]
    dtype = cfg.dtype or (x.dtype if jnp.issubdtype(x.dtype, jnp.floating) else jnp.float32)
    x = cfg.pad_input(jnp.asarray(x).astype(dtype), 'DreamClear')
    b, hh, ww = x.shape[:3]
    p = cfg.patch_size
    h, w = hh // p, ww // p

    def latent(c, name):
      c = jnp.asarray(c).astype(dtype)
      if c.ndim != 4 or c.shape[1:3] != (height, width) or c.shape[-1] != cfg.in_channels:
        raise ValueError(f'DreamClear: {name} must be (B or 1, {height}, {width}, {cfg.in_channels}), '
                         f'got {tuple(c.shape)}')
      if (height, width) != (hh, ww):
        c = layers.pad_to_multiple(c, p, 'reflect')
      return _rows(c, b, name)

    control = c_lq is not None and c_pre is not None
    if control:
      c_lq = self.c_embedder_lq(latent(c_lq, 'c_lq'))
      c_pre = self.c_embedder_pre(latent(c_pre, 'c_pre'))
      keep('c_embedder_lq', c_lq)
      keep('c_embedder_pre', c_pre)

    t = jnp.broadcast_to(jnp.asarray(t).reshape(-1), (b,)) if jnp.size(t) == 1 else jnp.asarray(t).reshape(-1)
    if t.shape[0] != b:
      raise ValueError(f'DreamClear: t has {t.shape[0]} timesteps for a batch of {b}')
    # Timesteps and sizes stay float32 (the original's autocast inference keeps float32 weights).
    img_hw = jnp.asarray(DEFAULT_IMG_HW if img_hw is None else img_hw, jnp.float32).reshape(-1, 2)
    aspect_ratio = jnp.asarray(DEFAULT_ASPECT_RATIO if aspect_ratio is None else aspect_ratio,
                               jnp.float32).reshape(-1, 1)

    pos = jnp.asarray(position_embedding(h, w, cfg.hidden_size, cfg.base_size, float(cfg.lewei_scale)))[None]
    keep('pos_embed', pos)
    pos = pos.astype(dtype)
    if control:
      x_lq, x_pre = self.x_embedder_lq(x), self.x_embedder_pre(x)
      keep('x_embedder_lq', x_lq)
      keep('x_embedder_pre', x_pre)
      x_lq, x_pre = x_lq + pos, x_pre + pos
    xt = base.x_embedder(x)
    keep('x_embedder', xt)
    xt = xt + pos

    temb = base.t_embedder(t.astype(jnp.float32)[:, None], dtype, capture, 't_embedder')
    csize = base.csize_embedder(_rows(img_hw, b, 'img_hw'), dtype, capture, 'csize_embedder')
    ar = base.ar_embedder(_rows(aspect_ratio, b, 'aspect_ratio'), dtype, capture, 'ar_embedder')
    keep('t_embedder', temb)
    keep('csize_embedder', csize)
    keep('ar_embedder', ar)
    temb = temb + jnp.concatenate([csize, ar], axis=1)
    t0 = base.t_block(temb)
    keep('t_block', t0)

    caption = jnp.asarray(caption).astype(dtype)
    if caption.ndim == 4:
      caption = caption[:, 0]
    if caption.ndim != 3 or caption.shape[-1] != cfg.caption_channels:
      raise ValueError(f'DreamClear: caption must be (B, L, {cfg.caption_channels}), got {tuple(caption.shape)}')
    y = base.y_embedder(_rows(caption, b, 'caption'))
    keep('y_embedder', y)
    if caption_mask is None:
      y_mask = jnp.ones(y.shape[:2], bool)
    else:
      y_mask = _rows(jnp.asarray(caption_mask).reshape(-1, y.shape[1]) != 0, b, 'caption_mask')

    if control:
      for i in range(cfg.copy_blocks_num):
        c_lq = self.controlnet_lq[i](x_lq + c_lq if i == 0 else c_lq, y, y_mask, t0)
        c_pre = self.controlnet_pre[i](x_pre + c_pre if i == 0 else c_pre, y, y_mask, t0)
        keep(f'controlnet_lq.{i}', c_lq)
        keep(f'controlnet_pre.{i}', c_pre)
        keep(f'base_block.{i}.in', xt)
        xt = base.blocks[i](xt, y, y_mask, t0)
        keep(f'base_block.{i}', xt)
        ref, de_map = self.cross_de[i](c_lq, c_pre)
        keep(f'cross_de.{i}.out0', ref)
        keep(f'cross_de.{i}.out1', de_map)
        xt = xt + ref
        gamma1, beta1 = self.am_pre[i](c_pre)
        gamma2, beta2 = self.am_lq[i](c_lq, de_map, capture, f'am_lq.{i}')
        keep(f'am_pre.{i}.out0', gamma1)
        keep(f'am_pre.{i}.out1', beta1)
        keep(f'am_lq.{i}.out0', gamma2)
        keep(f'am_lq.{i}.out1', beta2)
        xt = (1 + gamma1) * xt + beta1
        xt = (1 + gamma2) * xt + beta2
    for i in range(cfg.copy_blocks_num, cfg.depth):
      xt = base.blocks[i](xt, y, y_mask, t0)
    keep('final_layer.in', xt)
    tokens = base.final_layer(xt, temb)
    keep('final_layer', tokens)
    c = cfg.out_chans
    out = tokens.reshape(b, h, w, p, p, c).transpose(0, 1, 3, 2, 4, 5).reshape(b, h * p, w * p, c)
    return cfg.crop_output(out, height, width)

  # ----- classifier-free guidance ----------------------------------------------------------------------

  def _cfg_inputs(self, x, caption):
    x = jnp.asarray(x)
    if x.shape[0] % 2:
      raise ValueError(f'DreamClear CFG: x must hold the (conditional, unconditional) pair batch 2B, got {x.shape[0]}')
    half = x[:x.shape[0] // 2]
    caption = jnp.asarray(caption)
    if caption.ndim == 4:
      caption = caption[:, 0]
    if caption.shape[0] * 2 == x.shape[0] and caption.shape[0] != x.shape[0]:
      # Only the conditional captions given: append the learned null caption.
      caption = jnp.concatenate([caption, self.null_caption(caption.shape[0]).astype(caption.dtype)])
    return jnp.concatenate([half, half]), caption

  @staticmethod
  def _guide(out, cfg_scale):
    """Guided channels 0-2 (computed and returned in float32, for the sampler)."""
    out = out.astype(jnp.float32)
    eps, rest = out[..., :3], out[..., 3:]
    cond, uncond = jnp.split(eps, 2, axis=0)
    half = uncond + cfg_scale * (cond - uncond)
    return jnp.concatenate([jnp.concatenate([half, half]), rest], axis=-1)

  def forward_with_cfg(self, x, t, caption, cfg_scale, *, caption_mask=None, c_lq=None, c_pre=None,
                       img_hw=None, aspect_ratio=None):
    """The official forward_with_cfg: x (2B, ...) whose first half is used twice; caption =
    concat(captions, null captions) (2B, L, C) (or just the B captions: the null caption
    `y_embedding` is appended). Guidance uncond + s (cond - uncond) on channels 0-2 only."""
    combined, caption = self._cfg_inputs(x, caption)
    out = self(combined, t, caption, caption_mask=caption_mask, c_lq=c_lq, c_pre=c_pre, img_hw=img_hw,
               aspect_ratio=aspect_ratio)
    return self._guide(out, cfg_scale)

  def forward_with_cfg_tile(self, x, t, caption, cfg_scale, tile: int = 128, overlap: int = 32, *,
                            caption_mask=None, c_lq=None, c_pre=None, img_hw=None, aspect_ratio=None):
    """The official forward_with_cfg_tile: square tiles of min(tile, h, w) latent pixels with
    `overlap`, each run through the network on its own (batch 2B), blended with the original's
    Gaussian weights, then guided like `forward_with_cfg`. (The original asserts h*w > tile^2;
    a latent that fits one tile is accepted here and equals the untiled result up to rounding.)"""
    combined, caption = self._cfg_inputs(x, caption)
    b, hgt, wid, _ = combined.shape
    if c_lq is None or c_pre is None:
      raise ValueError('DreamClear: forward_with_cfg_tile needs c_lq and c_pre')
    tile = min(int(tile), hgt, wid)
    weights = jnp.asarray(gaussian_tile_weights(tile), jnp.float32)[None, :, :, None]
    xs, ys = tile_offsets(wid, tile, overlap), tile_offsets(hgt, tile, overlap)
    windows = [(oy, ox) for ox in xs for oy in ys]   # the original's order: x offsets outer
    c_lq, c_pre = jnp.asarray(c_lq), jnp.asarray(c_pre)

    def crop(a, oy, ox):
      return a[:, oy:oy + tile, ox:ox + tile]

    tiles = tuple(jnp.stack([crop(a, oy, ox) for oy, ox in windows]) for a in (combined, c_lq, c_pre))

    def one(args):
      xt, lq, pre = args
      return self(xt, t, caption, caption_mask=caption_mask, c_lq=lq, c_pre=pre, img_hw=img_hw,
                  aspect_ratio=aspect_ratio).astype(jnp.float32)

    outs = jax.lax.map(one, tiles) if len(windows) > 1 else one(tuple(a[0] for a in tiles))[None]
    acc = jnp.zeros((b, hgt, wid, self.config.out_chans), jnp.float32)
    count = jnp.zeros((1, hgt, wid, 1), jnp.float32)
    for k, (oy, ox) in enumerate(windows):
      acc = acc.at[:, oy:oy + tile, ox:ox + tile].add(outs[k] * weights)
      count = count.at[:, oy:oy + tile, ox:ox + tile].add(weights)
    return self._guide(acc / count, cfg_scale)


# ----- checkpoints -------------------------------------------------------------------------------------

_SEQUENTIAL = r'(.+\.(?:mlp|t_block|gate))\.(\d+)'

TORCH_PARAMS = ParamMap(
    rules=(
        Rule(_SEQUENTIAL + r'\.weight', r'\1.layers.\2.kernel', linear_oi_to_io),
        Rule(_SEQUENTIAL + r'\.bias', r'\1.layers.\2.bias'),
        Rule(r'(.+\.proj)\.weight', r'\1.kernel', conv_oihw_to_hwio, ndim=4),
        Rule(r'(.+\.norm\d)\.weight', r'\1.scale'),
        Rule(r'(.+\.(?:scale_shift_table|y_embedding))', r'\1'),
        Rule(r'(.+)\.weight', r'\1.kernel', linear_oi_to_io),
        Rule(r'(.+)\.bias', r'\1.bias'),
    ),
    # The fixed sin-cos table of the training resolution: the original deletes it before loading
    # and recomputes the embedding for every input size.
    ignore=(r'base_model\.pos_embed',),
)

SIGNATURE_KEYS = (
    'base_model.x_embedder.proj.weight',
    'base_model.t_block.1.weight',
    'base_model.y_embedder.y_embedding',
    'base_model.csize_embedder.mlp.0.weight',
    'base_model.blocks.0.attn.qkv.weight',
    'controlnet_lq.0.copied_block.attn.qkv.weight',
    'controlnet_pre.0.copied_block.attn.qkv.weight',
    'cross_de.0.de_proj.weight',
    'am_pre.0.shared_proj.weight',
    'am_lq.0.gate.0.weight',
    'c_embedder_lq.proj.weight',
    'x_embedder_pre.proj.weight',
)


def torch_state_dict_shapes(cfg: DreamClearConfig) -> dict[str, tuple[int, ...]]:
  """Key -> shape of the official model's `state_dict()` for `cfg`, in its order (with the
  `base_model.pos_embed` buffer): what a DreamClear checkpoint holds, e.g. for synthetic ones."""
  d, p, c = cfg.hidden_size, cfg.patch_size, cfg.in_channels
  hidden, third = int(d * cfg.mlp_ratio), d // 3
  shapes: dict[str, tuple[int, ...]] = {}

  def linear(name, d_in, d_out):
    shapes[f'{name}.weight'] = (d_out, d_in)
    shapes[f'{name}.bias'] = (d_out,)

  def patch_embed(name):
    shapes[f'{name}.proj.weight'] = (d, c, p, p)
    shapes[f'{name}.proj.bias'] = (d,)

  def block(name):
    shapes[f'{name}.scale_shift_table'] = (6, d)
    linear(f'{name}.attn.qkv', d, 3 * d)
    linear(f'{name}.attn.proj', d, d)
    linear(f'{name}.cross_attn.q_linear', d, d)
    linear(f'{name}.cross_attn.kv_linear', d, 2 * d)
    linear(f'{name}.cross_attn.proj', d, d)
    linear(f'{name}.mlp.fc1', d, hidden)
    linear(f'{name}.mlp.fc2', hidden, d)

  def modulator(name):
    linear(f'{name}.shared_proj', d, d // 2)
    linear(f'{name}.proj_add', d // 2, d)
    linear(f'{name}.proj_mul', d // 2, d)

  shapes['base_model.pos_embed'] = (1, cfg.base_size ** 2, d)
  patch_embed('base_model.x_embedder')
  linear('base_model.t_embedder.mlp.0', FREQUENCY_EMBEDDING_SIZE, d)
  linear('base_model.t_embedder.mlp.2', d, d)
  linear('base_model.t_block.1', d, 6 * d)
  shapes['base_model.y_embedder.y_embedding'] = (cfg.model_max_length, cfg.caption_channels)
  linear('base_model.y_embedder.y_proj.fc1', cfg.caption_channels, d)
  linear('base_model.y_embedder.y_proj.fc2', d, d)
  for i in range(cfg.depth):
    block(f'base_model.blocks.{i}')
  shapes['base_model.final_layer.scale_shift_table'] = (2, d)
  linear('base_model.final_layer.linear', d, p * p * cfg.out_chans)
  for name in ('csize_embedder', 'ar_embedder'):
    linear(f'base_model.{name}.mlp.0', FREQUENCY_EMBEDDING_SIZE, third)
    linear(f'base_model.{name}.mlp.2', third, third)
  for i in range(cfg.copy_blocks_num):
    block(f'controlnet_lq.{i}.copied_block')
  for i in range(cfg.copy_blocks_num):
    for e in range(cfg.num_experts):
      modulator(f'am_lq.{i}.experts.{e}')
    linear(f'am_lq.{i}.gate.0', d, 8 * cfg.num_experts)
    linear(f'am_lq.{i}.gate.2', 8 * cfg.num_experts, cfg.num_experts)
  for i in range(cfg.copy_blocks_num):
    block(f'controlnet_pre.{i}.copied_block')
  for i in range(cfg.copy_blocks_num):
    modulator(f'am_pre.{i}')
  for i in range(cfg.copy_blocks_num):
    for name, d_out in (('q_linear', d), ('kv_linear', 2 * d), ('proj', d), ('de_proj', d)):
      linear(f'cross_de.{i}.{name}', d, d_out)
    for name in ('norm1', 'norm2'):
      shapes[f'cross_de.{i}.{name}.weight'] = (d,)
      shapes[f'cross_de.{i}.{name}.bias'] = (d,)
  for name in ('c_embedder_lq', 'c_embedder_pre', 'x_embedder_lq', 'x_embedder_pre'):
    patch_embed(name)
  return shapes


def hyperparameters_from_state_dict(sd) -> dict:
  """Widths, depths and token counts from the shapes. The head count is not stored: it is left to
  the config (hidden_size // 72 unless num_heads is given); lewei_scale is DreamClear's 2.0."""
  shape = lambda k: tuple(np.shape(sd[k]))
  hidden, in_channels, patch = shape('base_model.x_embedder.proj.weight')[:3]
  out_channels = shape('base_model.final_layer.linear.weight')[0] // (patch * patch)
  if out_channels not in (in_channels, 2 * in_channels):
    raise CheckpointMismatchError(f'DreamClear: final layer predicts {out_channels} channels for {in_channels} inputs')
  tokens, caption_channels = shape('base_model.y_embedder.y_embedding')
  hp: dict[str, Any] = dict(
      patch_size=patch, in_channels=in_channels, hidden_size=hidden,
      depth=count_children(sd, 'base_model.blocks'), copy_blocks_num=count_children(sd, 'controlnet_lq'),
      mlp_ratio=shape('base_model.blocks.0.mlp.fc1.weight')[0] / hidden,
      pred_sigma=out_channels == 2 * in_channels, caption_channels=caption_channels,
      model_max_length=tokens, num_experts=count_children(sd, 'am_lq.0.experts'))
  if 'base_model.pos_embed' in sd:   # (1, (input_size / patch)^2, D): the training latent size
    side = int(round(math.sqrt(shape('base_model.pos_embed')[1])))
    hp['input_size'] = side * patch
  return hp


# ----- presets, sharding ---------------------------------------------------------------------------------

OFFICIAL = dict(input_size=128, patch_size=2, in_channels=4, hidden_size=1152, depth=28, num_heads=16,
                mlp_ratio=4.0, pred_sigma=True, caption_channels=4096, model_max_length=120, lewei_scale=2.0,
                copy_blocks_num=28, num_experts=3)


def presets() -> list[Preset]:
  return [Preset(
      name='dreamclear-1024', architecture='dreamclear', hyperparameters=dict(OFFICIAL),
      task='real_sr', channels=4,
      checkpoint_file='DreamClear-1024.pth', checkpoint_key='state_dict',
      weights_url='https://huggingface.co/shallowdream204/DreamClear/blob/main/DreamClear-1024.pth',
      weights_license='Apache-2.0 (shallowdream204/DreamClear)',
      notes='The latent denoiser of DreamClear (SD VAE latents, 4 channels, 1024^2 images = 128^2 latents): '
            'IDDPM 50 steps, CFG 4.5 against the null caption, T5-XXL captions of 120 tokens.')]


# FSDP along `data` for every weight plus Megatron-style tensor parallelism along `model`: the
# projections into heads / hidden units (qkv, q/kv, fc1, shared_proj) split their outputs, those
# out of them (proj, de_proj, fc2, proj_add/mul) their inputs; t_block and the timestep MLP too.
# Everything else (norms, tables, gates, patch embeddings, biases of the row-parallel layers) is
# FSDP-sharded. On a (data=4, model=2) mesh every weight of >= 1M numbers is split 8 ways.
SHARDING_RULES = (
    (r'.*_embedder\w*/proj/.*', 'fsdp'),   # patch-embedding convs
    (r'.*/(qkv|q_linear|kv_linear|fc1|shared_proj)/kernel', P('data', 'model')),
    (r'.*/(qkv|q_linear|kv_linear|fc1|shared_proj)/bias', P('model')),
    (r'.*/(proj|de_proj|fc2|proj_add|proj_mul)/kernel', P('model', 'data')),
    (r'.*/t_block/layers/1/kernel', P('data', 'model')),
    (r'.*/t_embedder/mlp/layers/\d+/kernel', P('model', 'data')),
    (r'.*', 'fsdp'),
)

ARCHITECTURE = Architecture(
    name='dreamclear', config_cls=DreamClearConfig, model_cls=DreamClear, torch_params=TORCH_PARAMS,
    signature=SIGNATURE_KEYS, hyperparameters_from_state_dict=hyperparameters_from_state_dict,
    presets=presets, sharding_rules=SHARDING_RULES, torch_reference=None, pipeline='dreamclear',
    description='DreamClear (Ai et al., NeurIPS 2024): PixArt-alpha DiT denoiser with dual ControlFormer '
                'and a mixture of adaptive modulators (latent diffusion restoration)')
