"""SwinIR (Liang et al., 2021) in Flax NNX, numerically identical to the official PyTorch model.

Reimplements `models/network_swinir.py` of JingyunLiang/SwinIR, including its quirks:
reflect padding to a multiple of the window inside the forward pass (cropped back after), the
shift mask computed from the actual input size, the window clamp for tiny `img_size`, and the
LeakyReLU slopes (0.01 before upsampling, 0.2 elsewhere). Activations are NHWC throughout; the
module maps NHWC images in [0, 1] to NHWC images.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from flax.nnx.nn.dtypes import promote_dtype

from jaxrestore import kernels
from jaxrestore import layers
from jaxrestore.mapping import (CheckpointMismatchError, ParamMap, Rule, conv_oihw_to_hwio,
                                count_children, linear_oi_to_io)
from jaxrestore.models.base import Architecture, ModelConfig, Preset, TorchReference, runtime_field

RGB_MEAN = (0.4488, 0.4371, 0.4040)
UPSAMPLERS = ('', 'pixelshuffle', 'pixelshuffledirect', 'nearest+conv')


@dataclasses.dataclass(frozen=True)
class SwinIRConfig(ModelConfig):
  """Hyperparameters with the official constructor's names and defaults."""
  img_size: int | tuple[int, int] = 64
  patch_size: int = 1
  in_chans: int = 3
  embed_dim: int = 96
  depths: tuple[int, ...] = (6, 6, 6, 6)
  num_heads: tuple[int, ...] = (6, 6, 6, 6)
  window_size: int = 7
  mlp_ratio: float = 4.0
  qkv_bias: bool = True
  qk_scale: float | None = None
  patch_norm: bool = True
  upscale: int = 2
  img_range: float = 1.0
  upsampler: str = ''
  resi_connection: str = '1conv'
  num_feat: int = 64
  # DiffBIR's variant (the cleaner of DiffBIR and DreamClear): PixelUnshuffle(upscale) before
  # conv_first, so a x`upscale` upsampler restores at the input size.
  unshuffle: bool = False
  unshuffle_scale: int | None = None
  # Not in the original: which window-attention implementation to run (see jaxrestore.kernels).
  attention: str = runtime_field('auto')
  dtype: Any = runtime_field(None)
  param_dtype: Any = runtime_field(jnp.float32)
  padding: str = runtime_field('reflect')   # the original reflect-pads to the window itself
  # Run identical residual groups with one lax.scan (one compiled group instead of all of them).
  scan_layers: bool = runtime_field(False)

  def __post_init__(self):
    self.check_padding()
    object.__setattr__(self, 'depths', tuple(int(d) for d in self.depths))
    object.__setattr__(self, 'num_heads', tuple(int(h) for h in self.num_heads))
    if isinstance(self.img_size, (list, tuple)):
      object.__setattr__(self, 'img_size', tuple(int(s) for s in self.img_size))
    if len(self.depths) != len(self.num_heads):
      raise ValueError(f'SwinIR: depths {self.depths} and num_heads {self.num_heads} differ in length')
    if self.upsampler not in UPSAMPLERS:
      raise ValueError(f'SwinIR: unknown upsampler {self.upsampler!r}; expected one of {UPSAMPLERS}')
    if self.resi_connection not in ('1conv', '3conv'):
      raise ValueError(f"SwinIR: resi_connection must be '1conv' or '3conv', got {self.resi_connection!r}")
    for h in self.num_heads:
      if self.embed_dim % h:
        raise ValueError(f'SwinIR: embed_dim {self.embed_dim} is not divisible by {h} heads')
    if self.upsampler == 'pixelshuffle' and not (_is_power_of_two(self.upscale) or self.upscale == 3):
      raise ValueError(f'SwinIR: pixelshuffle supports scales 2^n and 3, got {self.upscale}')
    if self.upsampler == 'nearest+conv' and self.upscale not in (2, 4, 8):
      raise ValueError(f'SwinIR: nearest+conv supports scales 2, 4 and 8, got {self.upscale}')
    if self.unshuffle and (self.unshuffle_scale != self.upscale or not self.upsampler):
      raise ValueError(f'SwinIR: unshuffle needs unshuffle_scale equal to upscale and an upsampler (the original '
                       f'unshuffles by upscale and counts channels by unshuffle_scale), got '
                       f'unshuffle_scale={self.unshuffle_scale}, upscale={self.upscale}, upsampler={self.upsampler!r}')

  @property
  def scale(self) -> int:
    """Output/input size ratio (the original ignores `upscale` without an upsampler)."""
    return (self.upscale if self.upsampler else 1) // self.unshuffle_factor

  @property
  def unshuffle_factor(self) -> int:
    return self.unshuffle_scale if self.unshuffle else 1

  @property
  def out_chans(self) -> int:
    return self.in_chans

  @property
  def size_multiple(self) -> int:
    """The window, at feature resolution (so times the unshuffle factor in pixels)."""
    return self.window_size * self.unshuffle_factor

  @property
  def min_size(self) -> int:
    """Reflect padding to the window needs more than half a window."""
    return self.size_multiple // 2 + 1

  @property
  def eval_pad_multiple(self) -> int:
    """main_test_swinir.py flip-pads every input to (h // window + 1) * window."""
    return self.window_size

  @property
  def input_resolution(self) -> tuple[int, int]:
    size = self.img_size if isinstance(self.img_size, tuple) else (self.img_size, self.img_size)
    return size[0] // self.patch_size, size[1] // self.patch_size

  @property
  def block_window_size(self) -> int:
    """The original shrinks the window (and drops the shift) when img_size is not larger."""
    return min(self.window_size, min(self.input_resolution))

  @property
  def block_shift_size(self) -> int:
    return 0 if min(self.input_resolution) <= self.window_size else self.window_size // 2


def _is_power_of_two(n: int) -> bool:
  return n > 0 and (n & (n - 1)) == 0


@functools.lru_cache(maxsize=None)
def relative_position_index(window_size: int) -> np.ndarray:
  """(N, N) index into the (2w-1)^2 bias table, as the original's registered buffer."""
  coords = np.stack(np.meshgrid(np.arange(window_size), np.arange(window_size), indexing='ij'))
  coords = coords.reshape(2, -1)
  rel = (coords[:, :, None] - coords[:, None, :]).transpose(1, 2, 0) + (window_size - 1)
  return rel[..., 0] * (2 * window_size - 1) + rel[..., 1]


@functools.lru_cache(maxsize=None)
def shift_window_mask(height: int, width: int, window_size: int, shift_size: int) -> np.ndarray:
  """(num_windows, N, N) mask of 0 / -100 separating regions that the cyclic shift brought together."""
  region = np.zeros((height, width), np.float32)
  bounds = (slice(0, -window_size), slice(-window_size, -shift_size), slice(-shift_size, None))
  label = 0
  for hs in bounds:
    for ws in bounds:
      region[hs, ws] = label
      label += 1
  windows = window_partition(region[None, :, :, None], window_size).reshape(-1, window_size ** 2)
  diff = windows[:, None, :] - windows[:, :, None]
  return np.where(diff != 0, np.float32(-100.0), np.float32(0.0))


def window_partition(x, window_size: int):
  """(B, H, W, C) -> (B * H/w * W/w, w*w, C), windows in batch-major, row-major order."""
  b, h, w, c = x.shape
  x = x.reshape(b, h // window_size, window_size, w // window_size, window_size, c)
  return x.transpose(0, 1, 3, 2, 4, 5).reshape(-1, window_size * window_size, c)


def window_reverse(windows, window_size: int, height: int, width: int):
  c = windows.shape[-1]
  x = windows.reshape(-1, height // window_size, width // window_size, window_size, window_size, c)
  return x.transpose(0, 1, 3, 2, 4, 5).reshape(-1, height, width, c)


def linear_with_weights(linear: nnx.Linear, x, kernel, bias):
  """`linear(x)` computed with rescaled copies of its kernel and bias, promoting dtypes as nnx.Linear does."""
  x, kernel, bias = promote_dtype((x, kernel, bias), dtype=linear.dtype)
  y = layers.dot_general(x, kernel, (((x.ndim - 1,), (0,)), ((), ())), precision=linear.precision)
  return y if bias is None else y + bias


class Mlp(nnx.Module):

  def __init__(self, dim: int, hidden: int, cfg: SwinIRConfig, *, rngs: nnx.Rngs):
    kw = _linear_kwargs(cfg)
    self.fc1 = layers.linear(dim, hidden, rngs=rngs, **kw)
    self.fc2 = layers.linear(hidden, dim, rngs=rngs, **kw)

  def __call__(self, x):
    """fc2(gelu(fc1(x))) with exact GELU, h · erfc(−h/√2) / 2, whose halving is folded into fc2's
    kernel (exact: a power of two). XLA:CPU otherwise materialised a broadcast ½ as large as the
    hidden activations, kept alive for the whole forward."""
    h = self.fc1(x)
    g = h * jax.lax.erfc(-h * jnp.asarray(0.7071067811865476, h.dtype))
    kernel = self.fc2.kernel[...] * jnp.asarray(0.5, self.fc2.kernel.dtype)
    return linear_with_weights(self.fc2, g, kernel, None if self.fc2.bias is None else self.fc2.bias[...])


class WindowAttention(nnx.Module):
  """W-MSA with relative-position bias; the softmax itself runs in `kernels`."""

  def __init__(self, dim: int, window_size: int, num_heads: int, cfg: SwinIRConfig, *, rngs: nnx.Rngs):
    self.window_size = window_size
    self.num_heads = num_heads
    self.scale = cfg.qk_scale or (dim // num_heads) ** -0.5
    self.attention = cfg.attention
    table_shape = ((2 * window_size - 1) ** 2, num_heads)
    self.relative_position_bias_table = nnx.Param(
        0.02 * jax.random.truncated_normal(rngs.params(), -2.0, 2.0, table_shape, cfg.param_dtype))
    kw = _linear_kwargs(cfg)
    self.qkv = layers.linear(dim, 3 * dim, use_bias=cfg.qkv_bias, rngs=rngs, **kw)
    self.proj = layers.linear(dim, dim, rngs=rngs, **kw)

  def relative_position_bias(self):
    """(heads, N, N) bias gathered from the table."""
    n = self.window_size ** 2
    index = relative_position_index(self.window_size).reshape(-1)
    bias = self.relative_position_bias_table[...][index].reshape(n, n, self.num_heads)
    return bias.transpose(2, 0, 1)

  def scaled_qkv(self, x):
    """q, k and v as three products, each moved to (windows, heads, N, d) before the next is made.
    The attention scale is folded into q's weights: scaling the (C, C) block once costs nothing,
    while scaling q itself makes XLA:CPU materialise a full-size broadcast of the scale. One
    (C, 3C) product would keep the whole qkv output and its rearranged copy alive together, which at
    256² is 90 MiB more of XLA's temporary buffers (`benchmarks/swinir_jit_cpu.py --size 256`)."""
    windows, n, c = x.shape
    kernel = self.qkv.kernel[...]
    bias = None if self.qkv.bias is None else self.qkv.bias[...]
    parts = []
    for i in range(3):
      part_kernel = kernel[:, i * c:(i + 1) * c]
      part_bias = None if bias is None else bias[i * c:(i + 1) * c]
      if i == 0:
        part_kernel = part_kernel * jnp.asarray(self.scale, part_kernel.dtype)
        part_bias = None if part_bias is None else part_bias * jnp.asarray(self.scale, part_bias.dtype)
      y = linear_with_weights(self.qkv, x, part_kernel, part_bias)
      parts.append(y.reshape(windows, n, self.num_heads, c // self.num_heads).transpose(0, 2, 1, 3))
    return parts

  def __call__(self, x, mask=None):
    windows, n, c = x.shape
    q, k, v = self.scaled_qkv(x)
    attend = kernels.get_window_attention(self.attention)
    out = attend(q, k, v, self.relative_position_bias().astype(q.dtype),
                 None if mask is None else jnp.asarray(mask, q.dtype), scale=1.0)
    return self.proj(out.transpose(0, 2, 1, 3).reshape(windows, n, c))


class SwinTransformerBlock(nnx.Module):

  def __init__(self, dim: int, num_heads: int, shift_size: int, cfg: SwinIRConfig, *, rngs: nnx.Rngs):
    self.window_size = cfg.block_window_size
    self.shift_size = shift_size
    kw = _norm_kwargs(cfg)
    self.norm1 = layers.layer_norm(dim, rngs=rngs, **kw)
    self.attn = WindowAttention(dim, self.window_size, num_heads, cfg, rngs=rngs)
    self.norm2 = layers.layer_norm(dim, rngs=rngs, **kw)
    self.mlp = Mlp(dim, int(dim * cfg.mlp_ratio), cfg, rngs=rngs)

  def __call__(self, x):
    """x: (B, H, W, C) with H and W multiples of the window."""
    _, h, w, _ = x.shape
    ws, shift = self.window_size, self.shift_size
    if h % ws or w % ws:
      raise ValueError(f'SwinIR: feature map {h}x{w} is not a multiple of the block window {ws} '
                       '(img_size smaller than the window makes the original clamp the window)')
    shortcut = x
    x = self.norm1(x)
    if shift:
      x = jnp.roll(x, (-shift, -shift), axis=(1, 2))
    mask = shift_window_mask(h, w, ws, shift) if shift else None
    x = window_reverse(self.attn(window_partition(x, ws), mask), ws, h, w)
    if shift:
      x = jnp.roll(x, (shift, shift), axis=(1, 2))
    x = shortcut + x
    return x + self.mlp(self.norm2(x))


class BasicLayer(nnx.Module):

  def __init__(self, dim: int, depth: int, num_heads: int, cfg: SwinIRConfig, *, rngs: nnx.Rngs):
    self.blocks = nnx.List([
        SwinTransformerBlock(dim, num_heads, 0 if i % 2 == 0 else cfg.block_shift_size, cfg, rngs=rngs)
        for i in range(depth)])

  def __call__(self, x):
    for block in self.blocks:
      x = block(x)
    return x


def _residual_conv(dim: int, cfg: SwinIRConfig, rngs: nnx.Rngs):
  """The conv closing each residual group: one 3x3 conv, or the cheaper '3conv' bottleneck."""
  kw = _conv_kwargs(cfg)
  if cfg.resi_connection == '1conv':
    return layers.conv2d(dim, dim, 3, rngs=rngs, **kw)
  lrelu = functools.partial(jax.nn.leaky_relu, negative_slope=0.2)
  return nnx.Sequential(
      layers.conv2d(dim, dim // 4, 3, rngs=rngs, **kw), lrelu,
      layers.conv2d(dim // 4, dim // 4, 1, rngs=rngs, **kw), lrelu,
      layers.conv2d(dim // 4, dim, 3, rngs=rngs, **kw))


class RSTB(nnx.Module):
  """Residual Swin Transformer Block."""

  def __init__(self, dim: int, depth: int, num_heads: int, cfg: SwinIRConfig, *, rngs: nnx.Rngs):
    self.residual_group = BasicLayer(dim, depth, num_heads, cfg, rngs=rngs)
    self.conv = _residual_conv(dim, cfg, rngs)

  def __call__(self, x):
    return self.conv(self.residual_group(x)) + x


class PatchEmbed(nnx.Module):
  """patch_size is only bookkeeping in the original: tokens are pixels, optionally normalised."""

  def __init__(self, dim: int, cfg: SwinIRConfig, *, rngs: nnx.Rngs):
    self.norm = layers.layer_norm(dim, rngs=rngs, **_norm_kwargs(cfg)) if cfg.patch_norm else None

  def __call__(self, x):
    return x if self.norm is None else self.norm(x)


class SwinIR(nnx.Module):
  """SwinIR: NHWC images in [0, 1] -> NHWC images, scaled by `config.scale`."""

  def __init__(self, config: SwinIRConfig, *, rngs: nnx.Rngs):
    cfg = self.config = config
    dim, ck = cfg.embed_dim, _conv_kwargs(cfg)
    self.conv_first = layers.conv2d(cfg.in_chans * cfg.unshuffle_factor ** 2, dim, 3, rngs=rngs, **ck)
    self.patch_embed = PatchEmbed(dim, cfg, rngs=rngs)
    self.layers = nnx.List([RSTB(dim, d, h, cfg, rngs=rngs) for d, h in zip(cfg.depths, cfg.num_heads)])
    self.norm = layers.layer_norm(dim, rngs=rngs, **_norm_kwargs(cfg))
    self.conv_after_body = _residual_conv(dim, cfg, rngs)
    out_ch, nf = cfg.in_chans, cfg.num_feat
    if cfg.upsampler in ('pixelshuffle', 'nearest+conv'):
      self.conv_before_upsample = nnx.Sequential(
          layers.conv2d(dim, nf, 3, rngs=rngs, **ck),
          functools.partial(jax.nn.leaky_relu, negative_slope=0.01))
    if cfg.upsampler == 'pixelshuffle':
      self.upsample = nnx.Sequential(*_pixelshuffle_upsample(cfg.upscale, nf, cfg, rngs))
      self.conv_last = layers.conv2d(nf, out_ch, 3, rngs=rngs, **ck)
    elif cfg.upsampler == 'pixelshuffledirect':
      self.upsample = nnx.Sequential(
          layers.conv2d(dim, cfg.upscale ** 2 * out_ch, 3, rngs=rngs, **ck),
          functools.partial(layers.pixel_shuffle, factor=cfg.upscale))
    elif cfg.upsampler == 'nearest+conv':
      for i in range(1, int(math.log2(cfg.upscale)) + 1):
        setattr(self, f'conv_up{i}', layers.conv2d(nf, nf, 3, rngs=rngs, **ck))
      self.conv_hr = layers.conv2d(nf, nf, 3, rngs=rngs, **ck)
      self.conv_last = layers.conv2d(nf, out_ch, 3, rngs=rngs, **ck)
    else:
      self.conv_last = layers.conv2d(dim, out_ch, 3, rngs=rngs, **ck)

  def forward_features(self, x):
    x = self.patch_embed(x)
    x = _run_identical(self.layers, x) if self.config.scan_layers else _run_each(self.layers, x)
    return self.norm(x)

  def __call__(self, x):
    cfg = self.config
    height, width = x.shape[1:3]
    dtype = cfg.dtype or x.dtype
    x = cfg.pad_input(x.astype(dtype), 'SwinIR')
    mean = jnp.asarray(RGB_MEAN if cfg.in_chans == 3 else (0.0,) * cfg.in_chans, jnp.float32).astype(dtype)
    x = (x - mean) * cfg.img_range
    if cfg.unshuffle:
      x = layers.pixel_unshuffle(x, cfg.unshuffle_factor)

    if cfg.upsampler == '':
      x_first = self.conv_first(x)
      res = self.conv_after_body(self.forward_features(x_first)) + x_first
      x = x + self.conv_last(res)
    else:
      x = self.conv_first(x)
      x = self.conv_after_body(self.forward_features(x)) + x
      if cfg.upsampler == 'pixelshuffle':
        x = self.conv_last(self.upsample(self.conv_before_upsample(x)))
      elif cfg.upsampler == 'pixelshuffledirect':
        x = self.upsample(x)
      else:
        x = self.conv_before_upsample(x)
        for i in range(1, int(math.log2(cfg.upscale)) + 1):
          conv_up = getattr(self, f'conv_up{i}')
          x = jax.nn.leaky_relu(conv_up(layers.upsample_nearest(x, 2)), 0.2)
        x = self.conv_last(jax.nn.leaky_relu(self.conv_hr(x), 0.2))

    x = x / cfg.img_range + mean
    return cfg.crop_output(x, height, width)


def _run_each(modules, x):
  for module in modules:
    x = module(x)
  return x


def _run_identical(modules, x):
  """Applies `modules` in order with one `lax.scan` when they share one structure (the same graph,
  shapes and static attributes), so XLA compiles one residual group instead of all of them."""
  splits = [nnx.split(m) for m in modules]
  graphdef = splits[0][0]
  if len(splits) < 2 or any(g != graphdef for g, _ in splits[1:]):
    return _run_each(modules, x)
  stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *[state for _, state in splits])
  x, _ = jax.lax.scan(lambda h, state: (nnx.merge(graphdef, state)(h), None), x, stacked)
  return x


def _pixelshuffle_upsample(scale: int, nf: int, cfg: SwinIRConfig, rngs: nnx.Rngs) -> list:
  ck = _conv_kwargs(cfg)
  if scale == 3:
    return [layers.conv2d(nf, 9 * nf, 3, rngs=rngs, **ck), functools.partial(layers.pixel_shuffle, factor=3)]
  stages = []
  for _ in range(int(math.log2(scale))):
    stages += [layers.conv2d(nf, 4 * nf, 3, rngs=rngs, **ck), functools.partial(layers.pixel_shuffle, factor=2)]
  return stages


def _conv_kwargs(cfg: SwinIRConfig) -> dict:
  return dict(dtype=cfg.dtype, param_dtype=cfg.param_dtype)


def _norm_kwargs(cfg: SwinIRConfig) -> dict:
  # LayerNorm statistics stay float32 under bf16 compute.
  return dict(dtype=None if cfg.dtype is None else jnp.float32, param_dtype=cfg.param_dtype)


def _linear_kwargs(cfg: SwinIRConfig) -> dict:
  return dict(dtype=cfg.dtype, param_dtype=cfg.param_dtype)


# ----- checkpoints -----------------------------------------------------------------------------------

_SEQUENTIALS = r'(conv_after_body|conv_before_upsample|upsample|layers\.\d+\.conv)'

TORCH_PARAMS = ParamMap(
    rules=(
        Rule(r'(.+)\.(qkv|proj|fc1|fc2)\.weight', r'\1.\2.kernel', linear_oi_to_io),
        # DiffBIR: conv_first = Sequential(PixelUnshuffle, Conv2d); we unshuffle in the forward pass.
        Rule(r'conv_first\.1\.weight', r'conv_first.kernel', conv_oihw_to_hwio),
        Rule(r'conv_first\.1\.bias', r'conv_first.bias'),
        Rule(r'(.*norm\d?)\.weight', r'\1.scale'),
        Rule(r'(.+\.relative_position_bias_table)', r'\1'),
        Rule(_SEQUENTIALS + r'\.(\d+)\.weight', r'\1.layers.\2.kernel', conv_oihw_to_hwio),
        Rule(_SEQUENTIALS + r'\.(\d+)\.bias', r'\1.layers.\2.bias'),
        Rule(r'(.+)\.weight', r'\1.kernel', conv_oihw_to_hwio),
        Rule(r'(.+)\.bias', r'\1.bias'),
    ),
    ignore=(r'.+\.relative_position_index', r'.+\.attn_mask'),
)

_BODY_KEYS = (
    'layers.0.residual_group.blocks.0.norm1.weight',
    'layers.0.residual_group.blocks.0.attn.relative_position_bias_table',
    'layers.0.residual_group.blocks.0.mlp.fc1.weight',
)
# The official layout, and DiffBIR's with PixelUnshuffle in front of the first conv.
SIGNATURE_KEYS = (('conv_first.weight',) + _BODY_KEYS, ('conv_first.1.weight',) + _BODY_KEYS)


def hyperparameters_from_state_dict(sd) -> dict:
  """Recovers the constructor arguments of an official SwinIR checkpoint from keys and shapes."""
  if 'absolute_pos_embed' in sd:
    raise CheckpointMismatchError('SwinIR with an absolute position embedding (ape=True) is not supported')
  shape = lambda k: tuple(np.shape(sd[k]))
  first = 'conv_first.weight' if 'conv_first.weight' in sd else 'conv_first.1.weight'
  embed_dim, in_chans = shape(first)[:2]
  num_layers = count_children(sd, 'layers')
  depths = tuple(count_children(sd, f'layers.{i}.residual_group.blocks') for i in range(num_layers))
  num_heads = tuple(shape(f'layers.{i}.residual_group.blocks.0.attn.relative_position_bias_table')[1]
                    for i in range(num_layers))
  table = shape('layers.0.residual_group.blocks.0.attn.relative_position_bias_table')[0]
  window_size = (int(round(math.sqrt(table))) + 1) // 2
  hp: dict[str, Any] = dict(
      in_chans=in_chans, embed_dim=embed_dim, depths=depths, num_heads=num_heads,
      window_size=window_size,
      mlp_ratio=shape('layers.0.residual_group.blocks.0.mlp.fc1.weight')[0] / embed_dim,
      qkv_bias='layers.0.residual_group.blocks.0.attn.qkv.bias' in sd,
      patch_norm='patch_embed.norm.weight' in sd,
      resi_connection='1conv' if 'conv_after_body.weight' in sd else '3conv',
      # The official JPEG models are the only ones with window 7, and they use img_range 255.
      img_range=255.0 if window_size == 7 else 1.0,
  )
  # img_size only matters through the stored shift mask: (img_size / window)^2 windows.
  mask_key = next((f'layers.0.residual_group.blocks.{j}.attn_mask' for j in range(1, depths[0])
                   if f'layers.0.residual_group.blocks.{j}.attn_mask' in sd), None)
  if mask_key is not None and np.ndim(sd[mask_key]) == 3:
    hp['img_size'] = int(round(math.sqrt(shape(mask_key)[0]))) * window_size
  else:  # no shifted block saved: the original clamped the window to img_size (or depth is 1)
    hp['img_size'] = window_size if depths[0] > 1 else 64
  if 'conv_before_upsample.0.weight' in sd:
    hp['num_feat'] = shape('conv_before_upsample.0.weight')[0]
    if 'conv_up1.weight' in sd:
      hp['upsampler'] = 'nearest+conv'
      hp['upscale'] = 2 ** sum(1 for i in (1, 2, 3) if f'conv_up{i}.weight' in sd)
    else:
      hp['upsampler'] = 'pixelshuffle'
      stages = sorted(int(m.group(1)) for k in sd for m in [re.fullmatch(r'upsample\.(\d+)\.weight', k)] if m)
      first_out = shape(f'upsample.{stages[0]}.weight')[0]
      hp['upscale'] = 3 if first_out == 9 * hp['num_feat'] else 2 ** len(stages)
  elif 'upsample.0.weight' in sd:
    hp['upsampler'] = 'pixelshuffledirect'
    hp['upscale'] = int(round(math.sqrt(shape('upsample.0.weight')[0] // in_chans)))
  else:
    hp['upsampler'] = ''
    hp['upscale'] = 1
  if first == 'conv_first.1.weight':  # unshuffled by the upscale factor before the conv
    hp.update(unshuffle=True, unshuffle_scale=hp['upscale'], in_chans=in_chans // hp['upscale'] ** 2)
  return hp


# ----- presets: one per official checkpoint of JingyunLiang/SwinIR (release v0.0) --------------------
# Hyperparameters are those `main_test_swinir.py` builds for each task.

RELEASE_URL = 'https://github.com/JingyunLiang/SwinIR/releases/download/v0.0/'
LICENSE = 'Apache-2.0 (JingyunLiang/SwinIR)'

# SwinIR-M: the medium model used by every task but lightweight and large real-world SR.
MEDIUM = dict(embed_dim=180, depths=(6,) * 6, num_heads=(6,) * 6, window_size=8, mlp_ratio=2.0,
              resi_connection='1conv', img_range=1.0)


def _preset(name, file, key, *, task, channels, hp, **meta) -> Preset:
  return Preset(name=name, architecture='swinir', hyperparameters=hp, task=task, channels=channels,
                checkpoint_file=file, checkpoint_key=key, weights_url=RELEASE_URL + file,
                weights_license=LICENSE, **meta)


def presets() -> list[Preset]:
  out = []
  # 001 classical SR: trained on DF2K with 64x64 patches, or on DIV2K with 48x48 patches.
  for scale in (2, 3, 4, 8):
    for data, patch, suffix in (('DF2K', 64, ''), ('DIV2K', 48, '-p48')):
      out.append(_preset(
          f'swinir-classical-x{scale}{suffix}',
          f'001_classicalSR_{data}_s{patch}w8_SwinIR-M_x{scale}.pth', 'params',
          task='classical_sr', channels=3, scale=scale, border=scale,
          hp=dict(MEDIUM, in_chans=3, img_size=patch, upscale=scale, upsampler='pixelshuffle')))
  # 002 lightweight SR: SwinIR-S with a one-step pixel-shuffle head.
  for scale in (2, 3, 4):
    out.append(_preset(
        f'swinir-lightweight-x{scale}', f'002_lightweightSR_DIV2K_s64w8_SwinIR-S_x{scale}.pth', 'params',
        task='lightweight_sr', channels=3, scale=scale, border=scale,
        hp=dict(in_chans=3, img_size=64, window_size=8, img_range=1.0, embed_dim=60, depths=(6,) * 4,
                num_heads=(6,) * 4, mlp_ratio=2.0, upscale=scale, upsampler='pixelshuffledirect',
                resi_connection='1conv')))
  # 003 real-world SR x4 (BSRGAN degradations): SwinIR-M and SwinIR-L, PSNR- and GAN-trained.
  large = dict(embed_dim=240, depths=(6,) * 9, num_heads=(8,) * 9, window_size=8, mlp_ratio=2.0,
               resi_connection='3conv', img_range=1.0)
  for size, data, hp in (('m', 'DFO', MEDIUM), ('l', 'DFOWMFC', large)):
    for kind in ('psnr', 'gan'):
      out.append(_preset(
          f'swinir-real-x4-{size}-{kind}',
          f'003_realSR_BSRGAN_{data}_s64w8_SwinIR-{size.upper()}_x4_{kind.upper()}.pth', 'params_ema',
          task='real_sr', channels=3, scale=4,
          hp=dict(hp, in_chans=3, img_size=64, upscale=4, upsampler='nearest+conv')))
  # 004/005 gray and color denoising (Gaussian noise sigma 15/25/50, 128x128 training patches).
  for task, prefix, color, channels in (('gray_dn', '004_grayDN', 'gray', 1), ('color_dn', '005_colorDN', 'color', 3)):
    for sigma in (15, 25, 50):
      out.append(_preset(
          f'swinir-{color}-dn{sigma}', f'{prefix}_DFWB_s128w8_SwinIR-M_noise{sigma}.pth', 'params',
          task=task, channels=channels, noise_level=sigma,
          hp=dict(MEDIUM, in_chans=channels, img_size=128, upscale=1, upsampler='')))
  # 006 JPEG artifact removal: window 7 (JPEG blocks are 8x8), img_size 126, img_range 255.
  for task, prefix, color, channels in (('jpeg_car', '006_CAR', 'gray', 1), ('color_jpeg_car', '006_colorCAR', 'color', 3)):
    for quality in (10, 20, 30, 40):
      out.append(_preset(
          f'swinir-{color}-car{quality}', f'{prefix}_DFWB_s126w7_SwinIR-M_jpeg{quality}.pth', 'params',
          task=task, channels=channels, jpeg_quality=quality,
          hp=dict(MEDIUM, in_chans=channels, img_size=126, window_size=7, img_range=255.0, upscale=1,
                  upsampler='')))
  # DiffBIR's general-purpose cleaner (also DreamClear's pre-restorer): SwinIR-M with 8 RSTBs behind
  # PixelUnshuffle(8) and a nearest+conv x8 head, so it restores at the input size.
  out.append(Preset(
      name='swinir-diffbir-general', architecture='swinir', task='blind_restore', channels=3,
      hyperparameters=dict(MEDIUM, depths=(6,) * 8, num_heads=(6,) * 8, in_chans=3, img_size=64, upscale=8,
                           upsampler='nearest+conv', unshuffle=True, unshuffle_scale=8),
      checkpoint_file='general_swinir_v1.ckpt', checkpoint_key='state_dict',
      weights_url='https://huggingface.co/lxq007/DiffBIR/resolve/main/general_swinir_v1.ckpt',
      weights_license='Apache-2.0 (XPixelGroup/DiffBIR)',
      notes='stage-1 cleaner of DiffBIR and DreamClear (blind real-world degradations, output at input size)'))
  return out


def _torch_kwargs(cfg: SwinIRConfig) -> dict:
  """spandrel's SwinIR keywords (its `start_unshuffle` is DiffBIR's unshuffle)."""
  kwargs = dict(cfg.hyperparameters(), depths=list(cfg.depths), num_heads=list(cfg.num_heads),
                start_unshuffle=cfg.unshuffle_factor)
  for name in ('unshuffle', 'unshuffle_scale', 'num_feat'):
    kwargs.pop(name)
  return kwargs


ARCHITECTURE = Architecture(
    name='swinir', config_cls=SwinIRConfig, model_cls=SwinIR, torch_params=TORCH_PARAMS,
    signature=SIGNATURE_KEYS, hyperparameters_from_state_dict=hyperparameters_from_state_dict,
    presets=presets,
    sharding_rules=(
        (r'.*attn/qkv/kernel', ('data', 'model')), (r'.*attn/qkv/bias', ('model',)),
        (r'.*attn/proj/kernel', ('model', 'data')),
        (r'.*mlp/fc1/kernel', ('data', 'model')), (r'.*mlp/fc1/bias', ('model',)),
        (r'.*mlp/fc2/kernel', ('model', 'data')),
    ),
    torch_reference=TorchReference('spandrel.architectures.SwinIR', 'SwinIR', _torch_kwargs, 'spandrel==0.4.2'),
    description='SwinIR (Liang et al., ICCVW 2021): Swin-transformer restoration, every official task')
