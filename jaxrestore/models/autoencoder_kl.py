"""The Stable Diffusion VAE (diffusers' `AutoencoderKL`) in Flax NNX, numerically faithful to diffusers.

Reimplements `AutoencoderKL` with `DownEncoderBlock2D` / `UpDecoderBlock2D` blocks (the layout of
every SD 1.x/2.x VAE, e.g. `stabilityai/sd-vae-ft-ema`):

* encoder: 3x3 `conv_in`; per level `layers_per_block` ResnetBlock2Ds and (except the last level) a
  Downsample2D, i.e. a zero pad of one row/column at the bottom/right then a 3x3 stride-2 conv
  without padding; a mid block (resnet, one single-head self-attention over all pixels, resnet);
  GroupNorm, SiLU and a 3x3 `conv_out` to 2 * latent channels (mean | log-variance);
* `quant_conv` (1x1); `encode` returns `latent_dist.mode()`, the mean;
* `post_quant_conv` (1x1); decoder: `conv_in`, the mid block, per level `layers_per_block + 1`
  resnets and (except the last) nearest x2 + 3x3 conv, GroupNorm, SiLU, `conv_out`.

All GroupNorms have `norm_num_groups` groups and eps 1e-6; the attention scale is 1/sqrt(channels).
The latent scaling factor (0.18215 for SD) is the caller's business: it is exposed as
`config.scaling_factor` and never applied here.

Activations are NHWC; images in [-1, 1]. Under a bfloat16 `dtype`, convolutions and matmuls run in
bfloat16 while GroupNorm statistics and normalisation, and the attention softmax, run in float32.

Tiling (`encode(x, tile=...)`, `decode(z, tile=...)`) bounds the memory of large images without
changing the result: the network is cut at every GroupNorm into local stages (norm -> SiLU -> conv
[+ shortcut]); each stage runs tile by tile on windows with a one-pixel halo (zero padding wherever
the window leaves the image, exactly like the convolution's own padding), its full-size output is
kept in host memory, and the next GroupNorm gets *global* statistics merged from per-tile partial
moments (Chan's formula in float64). The mid block (global attention) runs untiled at the lowest
resolution. So tiled and untiled outputs differ only by float rounding (different reduction orders):
the documented seam bound is max |tiled - untiled| <= TILE_SEAM_BOUND * max(1, max |untiled|), and
there is no seam to blend (independent tiles blended across overlaps, as diffusers' tiling does,
cannot have such a bound: their GroupNorm statistics and attention are per tile). A tile at least
as large as the image takes the untiled path: the result is identical. What the device holds is
one stage of one tile, plus the untiled lowest-resolution part; the tiled path runs eagerly (it
cannot be traced into an outer jit), and `tile` must be a multiple of `config.downscale` (8 for SD).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxrestore import layers
from jaxrestore.mapping import CheckpointMismatchError, ParamMap, Rule, conv_oihw_to_hwio

# Tiled and untiled outputs agree to within this fraction of max(1, max |untiled output|) in
# float32 (measured: 3e-6 relative on the SD-sized model with random weights, 64x64 images in
# 32-pixel tiles; 1.5e-6 on the tiny test model).
TILE_SEAM_BOUND = 5e-5

# Query rows per attention block: the score matrix of one block is ATTENTION_CHUNK x pixels.
ATTENTION_CHUNK = 4096

SUPPORTED_DOWN = ('DownEncoderBlock2D',)
SUPPORTED_UP = ('UpDecoderBlock2D',)
SUPPORTED_ACT = ('silu', 'swish')
# config.json keys that carry no architecture (or that the caller applies): accepted and kept/ignored.
_IGNORED_CONFIG_KEYS = ('latents_mean', 'latents_std', 'force_upcast', 'sample_size')


@dataclasses.dataclass(frozen=True)
class AutoencoderKLConfig:
  """diffusers' `AutoencoderKL` constructor keywords (defaults as diffusers') plus runtime dtypes."""
  in_channels: int = 3
  out_channels: int = 3
  down_block_types: tuple[str, ...] = ('DownEncoderBlock2D',)
  up_block_types: tuple[str, ...] = ('UpDecoderBlock2D',)
  block_out_channels: tuple[int, ...] = (64,)
  layers_per_block: int = 1
  act_fn: str = 'silu'
  latent_channels: int = 4
  norm_num_groups: int = 32
  sample_size: int = 32
  scaling_factor: float = 0.18215
  shift_factor: float | None = None
  force_upcast: bool = True
  use_quant_conv: bool = True
  use_post_quant_conv: bool = True
  mid_block_add_attention: bool = True
  # Not diffusers keywords: compute and parameter dtypes.
  dtype: Any = None
  param_dtype: Any = jnp.float32

  def __post_init__(self):
    for name in ('down_block_types', 'up_block_types', 'block_out_channels'):
      object.__setattr__(self, name, tuple(getattr(self, name)))
    object.__setattr__(self, 'block_out_channels', tuple(int(c) for c in self.block_out_channels))
    n = len(self.block_out_channels)
    if n == 0:
      raise ValueError('AutoencoderKL: block_out_channels is empty')
    if len(self.down_block_types) != n or len(self.up_block_types) != n:
      raise ValueError(f'AutoencoderKL: {len(self.down_block_types)} down and {len(self.up_block_types)} up block '
                       f'types for {n} levels (block_out_channels {self.block_out_channels})')
    bad = sorted({t for t in self.down_block_types if t not in SUPPORTED_DOWN} |
                 {t for t in self.up_block_types if t not in SUPPORTED_UP})
    if bad:
      raise ValueError(f'AutoencoderKL: unsupported block types {bad}; supported: {SUPPORTED_DOWN + SUPPORTED_UP}')
    if self.act_fn not in SUPPORTED_ACT:
      raise ValueError(f'AutoencoderKL: unsupported act_fn {self.act_fn!r}; supported: {SUPPORTED_ACT}')
    for c in self.block_out_channels:
      if c % self.norm_num_groups:
        raise ValueError(f'AutoencoderKL: {c} channels are not divisible by norm_num_groups={self.norm_num_groups}')
    if self.layers_per_block < 1:
      raise ValueError(f'AutoencoderKL: layers_per_block must be >= 1, got {self.layers_per_block}')

  @property
  def num_levels(self) -> int:
    return len(self.block_out_channels)

  @property
  def downscale(self) -> int:
    """Image pixels per latent pixel (8 for SD)."""
    return 2 ** (self.num_levels - 1)

  @classmethod
  def from_diffusers(cls, config: Mapping[str, Any], **runtime) -> 'AutoencoderKLConfig':
    """From the keys of a diffusers `config.json` (`_class_name` and other `_` keys are skipped)."""
    if config.get('_class_name', 'AutoencoderKL') != 'AutoencoderKL':
      raise ValueError(f'not an AutoencoderKL config: _class_name={config["_class_name"]!r}')
    fields = {f.name for f in dataclasses.fields(cls)} - {'dtype', 'param_dtype'}
    unknown = sorted(k for k in config if not k.startswith('_') and k not in fields and k not in _IGNORED_CONFIG_KEYS)
    if unknown:
      raise ValueError(f'AutoencoderKL config: unsupported keys {unknown}')
    kwargs = {k: config[k] for k in fields if k in config and (config[k] is not None or k == 'shift_factor')}
    if isinstance(kwargs.get('sample_size'), (list, tuple)):
      kwargs['sample_size'] = int(kwargs['sample_size'][0])
    return cls(**kwargs, **runtime)


# ----- layers ------------------------------------------------------------------------------------------

class Conv2d(nnx.Module):
  """torch.nn.Conv2d parameters (HWIO kernel, PyTorch init) with the padding chosen per call, so the
  tiled path can run the same weights without padding on haloed windows."""

  def __init__(self, in_features: int, out_features: int, kernel_size: int, *, stride: int = 1,
               padding: int | None = None, cfg: AutoencoderKLConfig, rngs: nnx.Rngs):
    fan_in = in_features * kernel_size * kernel_size
    shape = (kernel_size, kernel_size, in_features, out_features)
    self.kernel = nnx.Param(layers.torch_kernel_init(rngs.params(), shape, cfg.param_dtype))
    self.bias = nnx.Param(layers.torch_uniform_init(fan_in)(rngs.params(), (out_features,), cfg.param_dtype))
    self.stride = stride
    self.padding = kernel_size // 2 if padding is None else padding
    self.dtype = cfg.dtype

  def __call__(self, x, *, padding: int | None = None):
    pad = self.padding if padding is None else padding
    dtype = self.dtype or jnp.result_type(x.dtype, self.kernel.dtype)
    y = jax.lax.conv_general_dilated(
        x.astype(dtype), self.kernel[...].astype(dtype), (self.stride, self.stride), ((pad, pad), (pad, pad)),
        dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    return y + self.bias[...].astype(dtype)


class GroupNorm(nnx.Module):
  """torch.nn.GroupNorm on NHWC (contiguous channel groups, biased variance) with float32 statistics.

  Normalises as torch's CPU kernel does, x * (rstd * gamma) + (beta - mean * rstd * gamma). The
  statistics can be given (`stats`), which is how the tiled path imposes global ones on a tile.
  """

  def __init__(self, channels: int, groups: int, *, eps: float = 1e-6, cfg: AutoencoderKLConfig):
    self.scale = nnx.Param(jnp.ones((channels,), cfg.param_dtype))
    self.bias = nnx.Param(jnp.zeros((channels,), cfg.param_dtype))
    self.groups = groups
    self.eps = eps

  def stats(self, x):
    """(mean, var), each (B, groups) float32, over H, W and the group's channels."""
    b, h, w, c = x.shape
    xf = x.astype(jnp.promote_types(x.dtype, jnp.float32)).reshape(b, h * w, self.groups, c // self.groups)
    mean = jnp.mean(xf, axis=(1, 3))
    var = jnp.mean(jnp.square(xf - mean[:, None, :, None]), axis=(1, 3))
    return mean, var

  def __call__(self, x, stats=None):
    mean, var = self.stats(x) if stats is None else stats
    b, h, w, c = x.shape
    g = self.groups
    xf = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    rstd = jax.lax.rsqrt(var.astype(xf.dtype) + self.eps)                        # (B, G)
    gamma = self.scale[...].astype(xf.dtype).reshape(g, c // g)
    beta = self.bias[...].astype(xf.dtype).reshape(g, c // g)
    a = (rstd[:, :, None] * gamma).reshape(b, 1, 1, c)
    shift = (beta - mean.astype(xf.dtype)[:, :, None] * rstd[:, :, None] * gamma).reshape(b, 1, 1, c)
    return (xf * a + shift).astype(x.dtype)


def attention(q, k, v, scale: float, chunk: int = ATTENTION_CHUNK):
  """softmax(q k^T * scale) v over (B, N, C), the softmax in float32, queries in blocks of `chunk`."""
  def block(qc):
    s = jnp.einsum('bqc,bkc->bqk', qc, k, preferred_element_type=jnp.float32) * scale
    p = jax.nn.softmax(s, axis=-1)
    return jnp.einsum('bqk,bkc->bqc', p.astype(v.dtype), v, preferred_element_type=jnp.float32).astype(v.dtype)

  b, n, c = q.shape
  if n <= chunk:
    return block(q)
  m = -(-n // chunk)
  qp = jnp.pad(q, ((0, 0), (0, m * chunk - n), (0, 0))).reshape(b, m, chunk, c).transpose(1, 0, 2, 3)
  out = jax.lax.map(block, qp)
  return out.transpose(1, 0, 2, 3).reshape(b, m * chunk, c)[:, :n]


class AttentionBlock(nnx.Module):
  """diffusers' mid-block `Attention`: GroupNorm, one head over all pixels, output projection, residual."""

  def __init__(self, channels: int, cfg: AutoencoderKLConfig, *, rngs: nnx.Rngs):
    self.group_norm = GroupNorm(channels, cfg.norm_num_groups, cfg=cfg)
    kw = dict(rngs=rngs, dtype=cfg.dtype, param_dtype=cfg.param_dtype)
    self.to_q = layers.linear(channels, channels, **kw)
    self.to_k = layers.linear(channels, channels, **kw)
    self.to_v = layers.linear(channels, channels, **kw)
    self.to_out = layers.linear(channels, channels, **kw)

  def __call__(self, x):
    b, h, w, c = x.shape
    hs = self.group_norm(x).reshape(b, h * w, c)
    out = attention(self.to_q(hs), self.to_k(hs), self.to_v(hs), c ** -0.5)
    return self.to_out(out).reshape(b, h, w, c).astype(x.dtype) + x


class ResnetBlock(nnx.Module):
  """ResnetBlock2D without a time embedding: norm1, SiLU, conv1, norm2, SiLU, conv2, plus a 1x1
  shortcut conv when the width changes."""

  def __init__(self, in_ch: int, out_ch: int, cfg: AutoencoderKLConfig, *, rngs: nnx.Rngs):
    g = cfg.norm_num_groups
    self.norm1 = GroupNorm(in_ch, g, cfg=cfg)
    self.conv1 = Conv2d(in_ch, out_ch, 3, cfg=cfg, rngs=rngs)
    self.norm2 = GroupNorm(out_ch, g, cfg=cfg)
    self.conv2 = Conv2d(out_ch, out_ch, 3, cfg=cfg, rngs=rngs)
    self.conv_shortcut = Conv2d(in_ch, out_ch, 1, cfg=cfg, rngs=rngs) if in_ch != out_ch else None

  def shortcut(self, x):
    return x if self.conv_shortcut is None else self.conv_shortcut(x)

  def __call__(self, x):
    h = self.conv1(jax.nn.silu(self.norm1(x)))
    h = self.conv2(jax.nn.silu(self.norm2(h)))
    return self.shortcut(x) + h


class MidBlock(nnx.Module):
  """UNetMidBlock2D: resnet, attention (unless `mid_block_add_attention` is off), resnet."""

  def __init__(self, channels: int, cfg: AutoencoderKLConfig, *, rngs: nnx.Rngs):
    self.resnets = nnx.List([ResnetBlock(channels, channels, cfg, rngs=rngs) for _ in range(2)])
    self.attention = AttentionBlock(channels, cfg, rngs=rngs) if cfg.mid_block_add_attention else None

  def __call__(self, x):
    x = self.resnets[0](x)
    if self.attention is not None:
      x = self.attention(x)
    return self.resnets[1](x)


class DownBlock(nnx.Module):
  def __init__(self, in_ch: int, out_ch: int, downsample: bool, cfg: AutoencoderKLConfig, *, rngs: nnx.Rngs):
    self.resnets = nnx.List([ResnetBlock(in_ch if i == 0 else out_ch, out_ch, cfg, rngs=rngs)
                             for i in range(cfg.layers_per_block)])
    # Downsample2D(padding=0): F.pad(x, (0, 1, 0, 1)) then a 3x3 stride-2 conv without padding.
    self.downsample = Conv2d(out_ch, out_ch, 3, stride=2, padding=0, cfg=cfg, rngs=rngs) if downsample else None

  def __call__(self, x):
    for resnet in self.resnets:
      x = resnet(x)
    if self.downsample is not None:
      x = self.downsample(jnp.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0))))
    return x


class UpBlock(nnx.Module):
  def __init__(self, in_ch: int, out_ch: int, upsample: bool, cfg: AutoencoderKLConfig, *, rngs: nnx.Rngs):
    self.resnets = nnx.List([ResnetBlock(in_ch if i == 0 else out_ch, out_ch, cfg, rngs=rngs)
                             for i in range(cfg.layers_per_block + 1)])
    self.upsample = Conv2d(out_ch, out_ch, 3, cfg=cfg, rngs=rngs) if upsample else None

  def __call__(self, x):
    for resnet in self.resnets:
      x = resnet(x)
    if self.upsample is not None:
      x = self.upsample(layers.upsample_nearest(x, 2))
    return x


class Encoder(nnx.Module):
  def __init__(self, cfg: AutoencoderKLConfig, *, rngs: nnx.Rngs):
    ch = cfg.block_out_channels
    self.conv_in = Conv2d(cfg.in_channels, ch[0], 3, cfg=cfg, rngs=rngs)
    self.down_blocks = nnx.List([
        DownBlock(ch[max(i - 1, 0)], ch[i], i < len(ch) - 1, cfg, rngs=rngs) for i in range(len(ch))])
    self.mid_block = MidBlock(ch[-1], cfg, rngs=rngs)
    self.conv_norm_out = GroupNorm(ch[-1], cfg.norm_num_groups, cfg=cfg)
    self.conv_out = Conv2d(ch[-1], 2 * cfg.latent_channels, 3, cfg=cfg, rngs=rngs)

  def head(self, x):
    """Mid block, norm, SiLU, conv_out: the part that runs untiled at the lowest resolution."""
    x = self.mid_block(x)
    return self.conv_out(jax.nn.silu(self.conv_norm_out(x)))

  def __call__(self, x):
    x = self.conv_in(x)
    for block in self.down_blocks:
      x = block(x)
    return self.head(x)


class Decoder(nnx.Module):
  def __init__(self, cfg: AutoencoderKLConfig, *, rngs: nnx.Rngs):
    rev = tuple(reversed(cfg.block_out_channels))
    self.conv_in = Conv2d(cfg.latent_channels, rev[0], 3, cfg=cfg, rngs=rngs)
    self.mid_block = MidBlock(rev[0], cfg, rngs=rngs)
    self.up_blocks = nnx.List([
        UpBlock(rev[max(i - 1, 0)], rev[i], i < len(rev) - 1, cfg, rngs=rngs) for i in range(len(rev))])
    self.conv_norm_out = GroupNorm(rev[-1], cfg.norm_num_groups, cfg=cfg)
    self.conv_out = Conv2d(rev[-1], cfg.out_channels, 3, cfg=cfg, rngs=rngs)

  def __call__(self, z):
    x = self.mid_block(self.conv_in(z))
    for block in self.up_blocks:
      x = block(x)
    return self.conv_out(jax.nn.silu(self.conv_norm_out(x)))


class AutoencoderKL(nnx.Module):
  """NHWC images in [-1, 1] <-> NHWC latents (unscaled: multiply by `config.scaling_factor` yourself)."""

  def __init__(self, config: AutoencoderKLConfig, *, rngs: nnx.Rngs):
    cfg = self.config = config
    self.encoder = Encoder(cfg, rngs=rngs)
    self.decoder = Decoder(cfg, rngs=rngs)
    lat = cfg.latent_channels
    self.quant_conv = Conv2d(2 * lat, 2 * lat, 1, cfg=cfg, rngs=rngs) if cfg.use_quant_conv else None
    self.post_quant_conv = Conv2d(lat, lat, 1, cfg=cfg, rngs=rngs) if cfg.use_post_quant_conv else None

  # -- traceable forward passes (jit them yourself, or use encode / decode) --

  def _compute(self, x):
    return x.astype(self.config.dtype or x.dtype)

  def moments(self, x):
    """Encoder + quant_conv: (B, h, w, 2 * latent_channels), the mean then the log-variance."""
    m = self.encoder(self._compute(x))
    return m if self.quant_conv is None else self.quant_conv(m)

  def encode_mean(self, x):
    """`latent_dist.mode()`: the posterior mean, in float32."""
    return self.moments(x)[..., :self.config.latent_channels].astype(jnp.float32)

  def decode_full(self, z):
    z = self._compute(z)
    if self.post_quant_conv is not None:
      z = self.post_quant_conv(z)
    return self.decoder(z).astype(jnp.float32)

  # -- eager entry points, tiled on request --

  def encode(self, x, *, tile: int | None = None) -> jax.Array:
    """The posterior mean of NHWC images; `tile` (image pixels) bounds memory, see the module doc."""
    _, h, w, _ = x.shape
    if tile is None or tile >= max(h, w):
      return _jit_encode(self, x)
    return _encode_tiled(self, x, _check_tile(tile, self.config))

  def decode(self, z, *, tile: int | None = None) -> jax.Array:
    """NHWC images from unscaled latents; `tile` is in output image pixels."""
    _, h, w, _ = z.shape
    f = self.config.downscale
    if tile is None or tile >= max(h, w) * f:
      return _jit_decode(self, z)
    return _decode_tiled(self, z, _check_tile(tile, self.config))


@nnx.jit
def _jit_encode(model: AutoencoderKL, x):
  return model.encode_mean(x)


@nnx.jit
def _jit_decode(model: AutoencoderKL, z):
  return model.decode_full(z)


# ----- tiling ------------------------------------------------------------------------------------------
# A stage maps full-size host arrays at one resolution to a full-size host array at the same, twice
# or half the resolution. Each output tile reads a window of its inputs with a halo, computes on the
# device, and reports partial moments (count, mean, M2 per sample and group) over the pixels it owns,
# so the next GroupNorm gets global statistics. Tiles have one shape per stage (the last tile along
# an axis is shifted back to end at the border and owns only its new pixels), so each stage compiles
# once, and stages of equal structure share that compilation.

def _check_tile(tile: int, cfg: AutoencoderKLConfig) -> int:
  tile = int(tile)
  f = cfg.downscale
  if tile < 2 * f or tile % f:
    raise ValueError(f'AutoencoderKL: tile must be a multiple of {f} and at least {2 * f} pixels, got {tile}')
  return tile


def _span(kind: str, halo: tuple[int, int], start: int, size: int) -> tuple[int, int]:
  """Input span (first index, length) of output indices [start, start + size), with the halo."""
  a, n = {'same': (start, size), 'up': (start // 2, size // 2), 'down': (2 * start, 2 * size)}[kind]
  return a - halo[0], n + halo[0] + halo[1]


def _tile_starts(size: int, tile: int) -> list[tuple[int, int]]:
  """(start, first owned index) of each tile along one axis; the last tile is shifted to fit."""
  out, own = [], 0
  for s in range(0, size, tile):
    start = min(s, size - tile)
    out.append((start, own))
    own = start + tile
  return out


def _valid(origin, n: int, size: int):
  idx = origin + jnp.arange(n)
  return (idx >= 0) & (idx < size)


def _mask(x, origin):
  """Zeroes the window pixels outside the image (the convolution's zero padding). `origin` holds
  the window's first row and column and the image's height and width."""
  my = _valid(origin[0], x.shape[1], origin[2])
  mx = _valid(origin[1], x.shape[2], origin[3])
  m = (my[:, None] & mx[None, :])[None, :, :, None]
  return jnp.where(m, x, jnp.zeros((), x.dtype))


def _partial_moments(y, own, groups: int):
  """(count, mean, M2) per (sample, group) over tile pixels at or after `own` (rows, cols)."""
  b, h, w, c = y.shape
  my = jnp.arange(h) >= own[0]
  mx = jnp.arange(w) >= own[1]
  m = (my[:, None] & mx[None, :]).astype(jnp.float32).reshape(1, h * w, 1, 1)
  yf = y.astype(jnp.float32).reshape(b, h * w, groups, c // groups)
  count = jnp.sum(m) * (c // groups)
  mean = jnp.sum(yf * m, axis=(1, 3)) / count
  m2 = jnp.sum(jnp.square(yf - mean[:, None, :, None]) * m, axis=(1, 3))
  return count, mean, m2


def _merge_moments(parts) -> tuple[np.ndarray, np.ndarray]:
  """Chan et al.'s parallel merge of partial moments, in float64: (mean, biased var) as float32."""
  n = 0.0
  mean = m2 = None
  for count, pmean, pm2 in parts:
    count, pmean, pm2 = float(count), np.asarray(pmean, np.float64), np.asarray(pm2, np.float64)
    if mean is None:
      n, mean, m2 = count, pmean, pm2
      continue
    delta = pmean - mean
    total = n + count
    mean = mean + delta * (count / total)
    m2 = m2 + pm2 + delta ** 2 * (n * count / total)
    n = total
  return mean.astype(np.float32), (m2 / n).astype(np.float32)


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _run_tile(body, graphdefs, groups: int, states, windows, stats, origin, own):
  """One tile of a stage; `groups` = 0 skips the moments (the network's output)."""
  modules = [nnx.merge(g, s) for g, s in zip(graphdefs, states)]
  y = body(modules, windows, stats, origin)
  return y, (_partial_moments(y, own, groups) if groups else None)


def _window(arr: np.ndarray, y0: int, ny: int, x0: int, nx: int) -> np.ndarray:
  """arr[:, y0:y0+ny, x0:x0+nx] with zeros wherever the window leaves the array."""
  b, h, w, c = arr.shape
  out = np.zeros((b, ny, nx, c), arr.dtype)
  sy0, sy1 = max(y0, 0), min(y0 + ny, h)
  sx0, sx1 = max(x0, 0), min(x0 + nx, w)
  if sy1 > sy0 and sx1 > sx0:
    out[:, sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = arr[:, sy0:sy1, sx0:sx1]
  return out


def _out_size(kind: str, n: int) -> int:
  # 'down': F.pad by one, then a 3x3 stride-2 conv without padding: floor((n + 1 - 3) / 2) + 1.
  return {'same': n, 'up': 2 * n, 'down': (n - 2) // 2 + 1}[kind]


def _run_stage(body, kind: str, modules, inputs, stats, tile: int, groups: int, halo=(1, 1)):
  """Runs `body` over the output in tiles; returns (full output on the host, its global GN stats)."""
  b, hi, wi, _ = inputs[0].shape
  out_hw = (_out_size(kind, hi), _out_size(kind, wi))
  th, tw = min(tile, out_hw[0]), min(tile, out_hw[1])
  graphdefs, states = zip(*(nnx.split(m) for m in modules))
  out, parts = None, []
  for ty, own_y in _tile_starts(out_hw[0], th):
    for tx, own_x in _tile_starts(out_hw[1], tw):
      y0, ny = _span(kind, halo, ty, th)
      x0, nx = _span(kind, halo, tx, tw)
      windows = tuple(_window(a, y0, ny, x0, nx) for a in inputs)
      y, moments = _run_tile(body, tuple(graphdefs), groups, tuple(states), windows, stats,
                             np.array([y0, x0, hi, wi], np.int32), np.array([own_y - ty, own_x - tx], np.int32))
      y = np.asarray(y)
      if out is None:
        out = np.empty((b, *out_hw, y.shape[-1]), y.dtype)
      out[:, ty:ty + th, tx:tx + tw] = y
      parts.append(moments)
  return out, (_merge_moments(parts) if groups else None)


# Stage bodies: (modules, windows, stats, window origin) -> output tile. Module-level
# functions, so that jit recognises them across calls.

def _body_conv(modules, windows, stats, origin):
  """A conv on raw (not normalised) input: conv_in, and the stride-2 conv of Downsample2D."""
  (conv,), (x,) = modules, windows
  return conv(_mask(x, origin), padding=0)


def _body_norm_conv(modules, windows, stats, origin):
  """GroupNorm (global stats) -> SiLU -> zero outside the image -> 3x3 conv."""
  (norm, conv), (x,) = modules, windows
  return conv(_mask(jax.nn.silu(norm(x, stats[0])), origin), padding=0)


def _body_resnet_out(modules, windows, stats, origin):
  """Second half of a ResnetBlock: shortcut(x) + conv2(SiLU(norm2(h)))."""
  (norm, conv, resnet), (x, h) = modules, windows
  x = x[:, 1:-1, 1:-1]
  return resnet.shortcut(x) + conv(_mask(jax.nn.silu(norm(h, stats[0])), origin), padding=0)


def _body_up(modules, windows, stats, origin):
  (conv,), (x,) = modules, windows
  x = layers.upsample_nearest(_mask(x, origin), 2)[:, 1:-1, 1:-1]
  return conv(x, padding=0)


def _resnet_tiled(resnet: ResnetBlock, x, stats, tile, groups):
  h, h_stats = _run_stage(_body_norm_conv, 'same', (resnet.norm1, resnet.conv1), (x,), (stats,), tile, groups)
  return _run_stage(_body_resnet_out, 'same', (resnet.norm2, resnet.conv2, resnet), (x, h), (h_stats,), tile,
                    groups)


def _host(x, dtype) -> np.ndarray:
  return np.asarray(jnp.asarray(x).astype(dtype))


def _encode_tiled(model: AutoencoderKL, x, tile: int):
  cfg = model.config
  g = cfg.norm_num_groups
  enc = model.encoder
  dtype = cfg.dtype or jnp.result_type(x.dtype, cfg.param_dtype)
  scale = 1  # image pixels per activation pixel
  h, stats = _run_stage(_body_conv, 'same', (enc.conv_in,), (_host(x, dtype),), (), tile, g)
  for block in enc.down_blocks:
    t = tile // scale
    for resnet in block.resnets:
      h, stats = _resnet_tiled(resnet, h, stats, t, g)
    if block.downsample is not None:
      scale *= 2
      h, stats = _run_stage(_body_conv, 'down', (block.downsample,), (h,), (), tile // scale, g, halo=(0, 1))
  return _jit_encoder_head(model, jnp.asarray(h))


@nnx.jit
def _jit_encoder_head(model: AutoencoderKL, h):
  m = model.encoder.head(h)
  if model.quant_conv is not None:
    m = model.quant_conv(m)
  return m[..., :model.config.latent_channels].astype(jnp.float32)


@nnx.jit
def _jit_decoder_head(model: AutoencoderKL, z):
  z = model._compute(z)
  if model.post_quant_conv is not None:
    z = model.post_quant_conv(z)
  x = model.decoder.mid_block(model.decoder.conv_in(z))
  return x, model.decoder.up_blocks[0].resnets[0].norm1.stats(x)


def _decode_tiled(model: AutoencoderKL, z, tile: int):
  cfg = model.config
  g = cfg.norm_num_groups
  dec = model.decoder
  scale = cfg.downscale
  x, stats = _jit_decoder_head(model, z)
  h = np.asarray(x)
  stats = tuple(np.asarray(s) for s in stats)
  for block in dec.up_blocks:
    for resnet in block.resnets:
      h, stats = _resnet_tiled(resnet, h, stats, tile // scale, g)
    if block.upsample is not None:
      scale //= 2
      h, stats = _run_stage(_body_up, 'up', (block.upsample,), (h,), (), tile // scale, g)
  out, _ = _run_stage(_body_norm_conv, 'same', (dec.conv_norm_out, dec.conv_out), (h,), (stats,), tile, 0)
  return jnp.asarray(out).astype(jnp.float32)


# ----- checkpoints -------------------------------------------------------------------------------------

def attention_weight_to_io(x: np.ndarray) -> np.ndarray:
  """A q/k/v/out projection: nn.Linear (out, in), or the (out, in, 1, 1) 1x1 conv of old exports."""
  if x.ndim == 4 and x.shape[2:] == (1, 1):
    x = x[:, :, 0, 0]
  if x.ndim != 2:
    raise CheckpointMismatchError(f'expected a 2-d (out, in) attention weight, got shape {x.shape}')
  return x.T


_ATTN = r'(encoder|decoder)\.mid_block\.attentions\.0\.'
TORCH_PARAMS = ParamMap(rules=(
    # Attention: current names (to_q/to_k/to_v/to_out.0) and the legacy ones of old exports
    # (query/key/value/proj_attn), as sd-vae-ft-ema's files still use.
    Rule(_ATTN + r'(to_q|to_k|to_v)\.weight', r'\1.mid_block.attention.\2.kernel', attention_weight_to_io),
    Rule(_ATTN + r'(to_q|to_k|to_v)\.bias', r'\1.mid_block.attention.\2.bias'),
    Rule(_ATTN + r'to_out\.0\.weight', r'\1.mid_block.attention.to_out.kernel', attention_weight_to_io),
    Rule(_ATTN + r'to_out\.0\.bias', r'\1.mid_block.attention.to_out.bias'),
    Rule(_ATTN + r'query\.weight', r'\1.mid_block.attention.to_q.kernel', attention_weight_to_io),
    Rule(_ATTN + r'key\.weight', r'\1.mid_block.attention.to_k.kernel', attention_weight_to_io),
    Rule(_ATTN + r'value\.weight', r'\1.mid_block.attention.to_v.kernel', attention_weight_to_io),
    Rule(_ATTN + r'proj_attn\.weight', r'\1.mid_block.attention.to_out.kernel', attention_weight_to_io),
    Rule(_ATTN + r'query\.bias', r'\1.mid_block.attention.to_q.bias'),
    Rule(_ATTN + r'key\.bias', r'\1.mid_block.attention.to_k.bias'),
    Rule(_ATTN + r'value\.bias', r'\1.mid_block.attention.to_v.bias'),
    Rule(_ATTN + r'proj_attn\.bias', r'\1.mid_block.attention.to_out.bias'),
    Rule(_ATTN + r'group_norm\.weight', r'\1.mid_block.attention.group_norm.scale'),
    Rule(_ATTN + r'group_norm\.bias', r'\1.mid_block.attention.group_norm.bias'),
    # GroupNorms.
    Rule(r'(.+\.(?:norm1|norm2|conv_norm_out))\.weight', r'\1.scale', ndim=1),
    # Resampling convs.
    Rule(r'encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.weight', r'encoder.down_blocks.\1.downsample.kernel',
         conv_oihw_to_hwio),
    Rule(r'encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.bias', r'encoder.down_blocks.\1.downsample.bias'),
    Rule(r'decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.weight', r'decoder.up_blocks.\1.upsample.kernel',
         conv_oihw_to_hwio),
    Rule(r'decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.bias', r'decoder.up_blocks.\1.upsample.bias'),
    # Every other conv.
    Rule(r'(.+)\.weight', r'\1.kernel', conv_oihw_to_hwio, ndim=4),
    Rule(r'(.+)\.bias', r'\1.bias', ndim=1),
))
