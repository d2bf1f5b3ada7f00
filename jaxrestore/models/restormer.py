"""Restormer (Zamir et al., CVPR 2022) in Flax NNX, numerically faithful to the official PyTorch model.

Reimplements `basicsr/models/archs/restormer_arch.py` of swz30/Restormer: a 4-level U-Net of
transformer blocks made of MDTA (transposed "channel" attention: L2-normalised q and k over pixels,
a (C x C) softmax scaled by a learned per-head temperature) and GDFN (gated depth-wise feed-forward
with exact GELU), LayerNorm over channels in the 'WithBias' or 'BiasFree' flavour (the latter scales
x, not x - mean), PixelUnshuffle/PixelShuffle resampling in PyTorch's channel order, a global
residual (none for dual-pixel defocus deblurring, which maps 6 channels to 3 with an extra skip conv).

The network needs H and W divisible by 8 (three 2x downsamplings). Like the official demo.py and
test scripts, the module reflect-pads the bottom/right edges up to a multiple of 8 and
crops the output back, so it accepts any size reflect padding allows: multiples of 8, or at least
5 pixels per side (padding by p rows needs more than p rows). Activations are NHWC; images in
[0, 1] map to images.

The blocks here are shared by PromptIR and HAIR (`promptir.py`, `hair.py`), which copy them.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxrestore import kernels
from jaxrestore import layers
from jaxrestore.mapping import CheckpointMismatchError, ParamMap, Rule, conv_oihw_to_hwio, count_children
from jaxrestore.models.base import Architecture, all_in_one_comparison_preset, ModelConfig, Preset, TorchReference, runtime_field

LAYER_NORM_TYPES = ('WithBias', 'BiasFree')
MULTIPLE = 8  # three PixelUnshuffle(2)


@dataclasses.dataclass(frozen=True)
class UNetConfig(ModelConfig):
  """The official constructor keywords (and defaults) Restormer, PromptIR and HAIR share.
  Subclasses add their own keywords and checks in `__post_init__` after calling this one."""
  inp_channels: int = 3
  out_channels: int = 3
  dim: int = 48
  num_blocks: tuple[int, ...] = (4, 6, 6, 8)
  num_refinement_blocks: int = 4
  heads: tuple[int, ...] = (1, 2, 4, 8)
  ffn_expansion_factor: float = 2.66
  bias: bool = False
  LayerNorm_type: str = 'WithBias'  # noqa: N815  (the official keyword)
  # Not in the originals: which channel-attention implementation to run (see jaxrestore.kernels).
  attention: str = runtime_field('auto')
  dtype: Any = runtime_field(None)
  param_dtype: Any = runtime_field(jnp.float32)
  # 'reflect': pad H, W to a multiple of 8 and crop back, as Restormer's test scripts and PromptIR's
  # demo.py do; 'strict': refuse other sizes, as the PromptIR and HAIR networks themselves do.
  padding: str = runtime_field('reflect')

  def __post_init__(self):
    self.check_padding()
    object.__setattr__(self, 'num_blocks', tuple(int(n) for n in self.num_blocks))
    object.__setattr__(self, 'heads', tuple(int(h) for h in self.heads))
    name = self.model_name
    if len(self.num_blocks) != 4 or len(self.heads) != 4:
      raise ValueError(f'{name}: num_blocks {self.num_blocks} and heads {self.heads} need 4 levels each')
    if self.LayerNorm_type not in LAYER_NORM_TYPES:
      raise ValueError(f'{name}: LayerNorm_type must be one of {LAYER_NORM_TYPES}, got {self.LayerNorm_type!r}')
    for level, heads in enumerate(self.heads):
      if (self.dim * 2 ** level) % heads:
        raise ValueError(f'{name}: level {level + 1} width {self.dim * 2 ** level} is not divisible by {heads} heads')

  @property
  def model_name(self) -> str:
    return type(self).__name__.removesuffix('Config')

  @property
  def in_chans(self) -> int:
    return self.inp_channels

  @property
  def out_chans(self) -> int:
    return self.out_channels

  @property
  def size_multiple(self) -> int:
    """Image sides the U-Net takes without padding (three 2x downsamplings)."""
    return MULTIPLE

  @property
  def min_size(self) -> int:
    """Reflect padding by up to 7 rows needs at least 5 (strict: one multiple of 8)."""
    return MULTIPLE if self.padding == 'strict' else MULTIPLE // 2 + 1


@dataclasses.dataclass(frozen=True)
class RestormerConfig(UNetConfig):
  """Hyperparameters with the official constructor's names and defaults."""
  dual_pixel_task: bool = False

  def __post_init__(self):
    super().__post_init__()
    if not self.dual_pixel_task and self.inp_channels != self.out_channels:
      raise ValueError(f'Restormer: the global residual needs inp_channels == out_channels '
                       f'({self.inp_channels} != {self.out_channels}); only dual_pixel_task maps 6 to 3')


def conv_kwargs(cfg) -> dict:
  return dict(dtype=cfg.dtype, param_dtype=cfg.param_dtype)


class ChannelLayerNorm(nnx.Module):
  """The original's LayerNorm over channels (eps 1e-5, biased variance): 'WithBias' is a standard
  LayerNorm; 'BiasFree' has no bias and divides x itself (not x - mean) by the standard deviation."""

  def __init__(self, dim: int, layer_norm_type: str, cfg, *, rngs: nnx.Rngs):
    del rngs  # deterministic init (ones / zeros), as the original
    self.scale = nnx.Param(jnp.ones((dim,), cfg.param_dtype))
    self.bias = nnx.Param(jnp.zeros((dim,), cfg.param_dtype)) if layer_norm_type == 'WithBias' else None

  def __call__(self, x):
    # Statistics in float32 at least (also under bfloat16 compute).
    xf = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    mu = jnp.mean(xf, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(xf - mu), axis=-1, keepdims=True)
    scale = self.scale[...].astype(xf.dtype)
    if self.bias is None:
      y = xf / jnp.sqrt(var + 1e-5) * scale
    else:
      y = (xf - mu) / jnp.sqrt(var + 1e-5) * scale + self.bias[...].astype(xf.dtype)
    return y.astype(x.dtype)


def transposed_attention(qkv, temperature, num_heads: int, implementation: str):
  """MDTA core on NHWC `qkv` (channels q | k | v, each split into heads as '(head c)'): returns NHWC.

  The normalise-reduce-softmax-apply part runs in `kernels.get_channel_attention`, which takes
  (batch, heads, channels, pixels) like the original's 'b head c (h w)'.
  """
  b, h, w, c3 = qkv.shape
  c = c3 // 3
  qkv = qkv.reshape(b, h * w, 3, num_heads, c // num_heads).transpose(2, 0, 3, 4, 1)
  attend = kernels.get_channel_attention(implementation)
  out = attend(qkv[0], qkv[1], qkv[2], temperature.reshape(-1).astype(qkv.dtype))
  return out.transpose(0, 3, 1, 2).reshape(b, h, w, c)


class Attention(nnx.Module):
  """MDTA: 1x1 then depth-wise 3x3 conv to q, k, v; transposed attention; 1x1 projection."""

  def __init__(self, dim: int, num_heads: int, bias: bool, cfg, *, rngs: nnx.Rngs):
    self.num_heads = num_heads
    self.implementation = cfg.attention
    self.temperature = nnx.Param(jnp.ones((num_heads, 1, 1), cfg.param_dtype))
    ck = conv_kwargs(cfg)
    self.qkv = layers.PointwiseConv(dim, dim * 3, use_bias=bias, rngs=rngs, **ck)
    self.qkv_dwconv = layers.DepthwiseConv(dim * 3, 3, use_bias=bias, rngs=rngs, **ck)
    self.project_out = layers.PointwiseConv(dim, dim, use_bias=bias, rngs=rngs, **ck)

  def __call__(self, x):
    qkv = self.qkv_dwconv(self.qkv(x))
    return self.project_out(transposed_attention(qkv, self.temperature[...], self.num_heads,
                                                 self.implementation))


def gated_gelu(x):
  """GDFN gate: the first half of the channels through exact GELU times the second half."""
  x1, x2 = jnp.split(x, 2, axis=-1)
  return layers.exact_gelu(x1) * x2


class FeedForward(nnx.Module):
  """GDFN: 1x1 to 2 * hidden, depth-wise 3x3, gate, 1x1 back (hidden = int(dim * factor))."""

  def __init__(self, dim: int, ffn_expansion_factor: float, bias: bool, cfg, *, rngs: nnx.Rngs):
    hidden = int(dim * ffn_expansion_factor)
    ck = conv_kwargs(cfg)
    self.project_in = layers.PointwiseConv(dim, hidden * 2, use_bias=bias, rngs=rngs, **ck)
    self.dwconv = layers.DepthwiseConv(hidden * 2, 3, use_bias=bias, rngs=rngs, **ck)
    self.project_out = layers.PointwiseConv(hidden, dim, use_bias=bias, rngs=rngs, **ck)

  def __call__(self, x):
    return self.project_out(gated_gelu(self.dwconv(self.project_in(x))))


class TransformerBlock(nnx.Module):

  def __init__(self, dim: int, num_heads: int, cfg, *, rngs: nnx.Rngs):
    self.norm1 = ChannelLayerNorm(dim, cfg.LayerNorm_type, cfg, rngs=rngs)
    self.attn = Attention(dim, num_heads, cfg.bias, cfg, rngs=rngs)
    self.norm2 = ChannelLayerNorm(dim, cfg.LayerNorm_type, cfg, rngs=rngs)
    self.ffn = FeedForward(dim, cfg.ffn_expansion_factor, cfg.bias, cfg, rngs=rngs)

  def __call__(self, x):
    x = x + self.attn(self.norm1(x))
    return x + self.ffn(self.norm2(x))


def transformer_blocks(dim: int, num_heads: int, depth: int, cfg, rngs: nnx.Rngs) -> nnx.List:
  return nnx.List([TransformerBlock(dim, num_heads, cfg, rngs=rngs) for _ in range(depth)])


def run_blocks(blocks, x):
  for block in blocks:
    x = block(x)
  return x


class OverlapPatchEmbed(nnx.Module):
  """3x3 conv embedding; bias-free whatever `bias` says, as in the original."""

  def __init__(self, in_c: int, embed_dim: int, cfg, *, rngs: nnx.Rngs):
    self.proj = layers.conv2d(in_c, embed_dim, 3, use_bias=False, rngs=rngs, **conv_kwargs(cfg))

  def __call__(self, x):
    return self.proj(x)


class Downsample(nnx.Module):
  """Conv to n/2 channels, then PixelUnshuffle(2): (H, W, n) -> (H/2, W/2, 2n)."""

  def __init__(self, n_feat: int, cfg, *, rngs: nnx.Rngs):
    self.body = nnx.Sequential(
        layers.conv2d(n_feat, n_feat // 2, 3, use_bias=False, rngs=rngs, **conv_kwargs(cfg)),
        functools.partial(layers.pixel_unshuffle, factor=2))

  def __call__(self, x):
    return self.body(x)


class Upsample(nnx.Module):
  """Conv to 2n channels, then PixelShuffle(2): (H, W, n) -> (2H, 2W, n/2)."""

  def __init__(self, n_feat: int, cfg, *, rngs: nnx.Rngs):
    self.body = nnx.Sequential(
        layers.conv2d(n_feat, n_feat * 2, 3, use_bias=False, rngs=rngs, **conv_kwargs(cfg)),
        functools.partial(layers.pixel_shuffle, factor=2))

  def __call__(self, x):
    return self.body(x)


class Restormer(nnx.Module):
  """Restormer: NHWC images (padded internally to a multiple of 8) -> NHWC."""

  def __init__(self, config: RestormerConfig, *, rngs: nnx.Rngs):
    cfg = self.config = config
    dim, nb, heads, ck = cfg.dim, cfg.num_blocks, cfg.heads, conv_kwargs(cfg)
    self.patch_embed = OverlapPatchEmbed(cfg.inp_channels, dim, cfg, rngs=rngs)
    self.encoder_level1 = transformer_blocks(dim, heads[0], nb[0], cfg, rngs)
    self.down1_2 = Downsample(dim, cfg, rngs=rngs)
    self.encoder_level2 = transformer_blocks(dim * 2, heads[1], nb[1], cfg, rngs)
    self.down2_3 = Downsample(dim * 2, cfg, rngs=rngs)
    self.encoder_level3 = transformer_blocks(dim * 4, heads[2], nb[2], cfg, rngs)
    self.down3_4 = Downsample(dim * 4, cfg, rngs=rngs)
    self.latent = transformer_blocks(dim * 8, heads[3], nb[3], cfg, rngs)
    self.up4_3 = Upsample(dim * 8, cfg, rngs=rngs)
    self.reduce_chan_level3 = layers.PointwiseConv(dim * 8, dim * 4, use_bias=cfg.bias, rngs=rngs, **ck)
    self.decoder_level3 = transformer_blocks(dim * 4, heads[2], nb[2], cfg, rngs)
    self.up3_2 = Upsample(dim * 4, cfg, rngs=rngs)
    self.reduce_chan_level2 = layers.PointwiseConv(dim * 4, dim * 2, use_bias=cfg.bias, rngs=rngs, **ck)
    self.decoder_level2 = transformer_blocks(dim * 2, heads[1], nb[1], cfg, rngs)
    self.up2_1 = Upsample(dim * 2, cfg, rngs=rngs)
    self.decoder_level1 = transformer_blocks(dim * 2, heads[0], nb[0], cfg, rngs)
    self.refinement = transformer_blocks(dim * 2, heads[0], cfg.num_refinement_blocks, cfg, rngs)
    if cfg.dual_pixel_task:
      self.skip_conv = layers.PointwiseConv(dim, dim * 2, use_bias=cfg.bias, rngs=rngs, **ck)
    self.output = layers.conv2d(dim * 2, cfg.out_channels, 3, use_bias=cfg.bias, rngs=rngs, **ck)

  def __call__(self, x):
    cfg = self.config
    h, w = x.shape[1:3]
    x = cfg.pad_input(x.astype(cfg.dtype or x.dtype), 'Restormer')

    enc1_in = self.patch_embed(x)
    enc1 = run_blocks(self.encoder_level1, enc1_in)
    enc2 = run_blocks(self.encoder_level2, self.down1_2(enc1))
    enc3 = run_blocks(self.encoder_level3, self.down2_3(enc2))
    latent = run_blocks(self.latent, self.down3_4(enc3))

    dec3 = self.reduce_chan_level3(jnp.concatenate([self.up4_3(latent), enc3], axis=-1))
    dec3 = run_blocks(self.decoder_level3, dec3)
    dec2 = self.reduce_chan_level2(jnp.concatenate([self.up3_2(dec3), enc2], axis=-1))
    dec2 = run_blocks(self.decoder_level2, dec2)
    dec1 = run_blocks(self.decoder_level1, jnp.concatenate([self.up2_1(dec2), enc1], axis=-1))
    dec1 = run_blocks(self.refinement, dec1)
    if cfg.dual_pixel_task:
      out = self.output(dec1 + self.skip_conv(enc1_in))
    else:
      out = self.output(dec1) + x
    return cfg.crop_output(out, h, w)


# ----- checkpoints -----------------------------------------------------------------------------------

# Rules shared by the Restormer family (PromptIR and HAIR add theirs in front).
FAMILY_RULES = (
    Rule(r'(.+)\.body\.weight', r'\1.scale', ndim=1),                  # LayerNorm (WithBias / BiasFree)
    Rule(r'(.+)\.body\.bias', r'\1.bias', ndim=1),
    Rule(r'(.+)\.body\.(\d+)\.weight', r'\1.body.layers.\2.kernel', conv_oihw_to_hwio),  # Down/Upsample
    Rule(r'(.+\.temperature)', r'\1', ndim=3),
    Rule(r'(.+)\.weight', r'\1.kernel', conv_oihw_to_hwio, ndim=4),
    Rule(r'(.+)\.bias', r'\1.bias', ndim=1),
)

TORCH_PARAMS = ParamMap(rules=FAMILY_RULES)

SIGNATURE_KEYS = (
    'patch_embed.proj.weight', 'encoder_level1.0.norm1.body.weight', 'encoder_level1.0.attn.temperature',
    'encoder_level1.0.attn.qkv.weight', 'encoder_level1.0.attn.qkv_dwconv.weight',
    'encoder_level1.0.ffn.project_in.weight', 'down1_2.body.0.weight', 'latent.0.attn.temperature',
    'up4_3.body.0.weight', 'reduce_chan_level3.weight', 'decoder_level3.0.attn.temperature',
    'refinement.0.attn.temperature', 'output.weight',
)
def shape_of(sd, key: str) -> tuple[int, ...]:
  return tuple(int(s) for s in np.shape(sd[key]))


def ffn_expansion_factor_from(sd, dims_and_keys) -> float:
  """The factor f with int(dim * f) equal to every stored hidden width (2.66 in all releases)."""
  hidden = [(dim, shape_of(sd, key)[1]) for dim, key in dims_and_keys]
  dim0, hidden0 = hidden[0]
  for f in (2.66, hidden0 / dim0):
    if all(int(d * f) == hd for d, hd in hidden):
      return f
  raise CheckpointMismatchError(f'no ffn_expansion_factor reproduces the hidden widths {hidden}')


def unet_hyperparameters(sd, *, latent_prefix: str = 'latent') -> dict:
  """Constructor arguments that Restormer, PromptIR and HAIR store the same way."""
  dim, inp = shape_of(sd, 'patch_embed.proj.weight')[:2]
  levels = ('encoder_level1', 'encoder_level2', 'encoder_level3', latent_prefix)
  num_blocks = tuple(count_children(sd, p) for p in levels)
  heads = tuple(shape_of(sd, f'{p}.0.attn.temperature')[0] for p in levels)
  ffn = ffn_expansion_factor_from(
      sd, [(dim * 2 ** i, f'{p}.0.ffn.project_out.weight') for i, p in enumerate(levels[:3])])
  return dict(
      inp_channels=inp, out_channels=shape_of(sd, 'output.weight')[0], dim=dim, num_blocks=num_blocks,
      num_refinement_blocks=count_children(sd, 'refinement'), heads=heads, ffn_expansion_factor=ffn,
      bias='encoder_level1.0.attn.qkv.bias' in sd,
      LayerNorm_type='WithBias' if 'encoder_level1.0.norm1.body.bias' in sd else 'BiasFree')


def hyperparameters_from_state_dict(sd) -> dict:
  """Recovers the constructor arguments of an official Restormer checkpoint from keys and shapes."""
  hp = unet_hyperparameters(sd)
  hp['dual_pixel_task'] = 'skip_conv.weight' in sd
  return hp


# ----- presets: one per checkpoint released with swz30/Restormer (release v1.0) ---------------------
# Hyperparameters are those the official test scripts and `demo.py` build for each task (the default
# Restormer(); 'BiasFree' LayerNorm for the denoisers; 1 channel for gray denoising; 6 input channels
# and the extra skip conv for dual-pixel defocus deblurring). Weights are stored under 'params'.

RELEASE_URL = 'https://github.com/swz30/Restormer/releases/download/v1.0/'
LICENSE = ('Academic Public License, non-commercial (swz30/Restormer LICENSE.md at release; '
           'check the repository for the current terms)')
BASE = dict(dim=48, num_blocks=(4, 6, 6, 8), num_refinement_blocks=4, heads=(1, 2, 4, 8),
            ffn_expansion_factor=2.66, bias=False, LayerNorm_type='WithBias', dual_pixel_task=False)


def _preset(name, file, *, task, channels, hp=None, **meta) -> Preset:
  in_ch = 6 if (hp or {}).get('dual_pixel_task') else channels
  out_ch = 3 if in_ch == 6 else channels
  return Preset(name=name, architecture='restormer',
                hyperparameters=dict(BASE, inp_channels=in_ch, out_channels=out_ch, **(hp or {})),
                task=task, channels=in_ch, checkpoint_file=file, checkpoint_key='params',
                weights_url=RELEASE_URL + file, weights_license=LICENSE, **meta)


def presets() -> list[Preset]:
  out = [
      _preset('restormer-motion-deblur', 'motion_deblurring.pth', task='motion_deblur', channels=3,
              notes='trained on GoPro; Motion_Deblurring/test.py'),
      _preset('restormer-defocus-single', 'single_image_defocus_deblurring.pth', task='defocus_deblur',
              channels=3, notes='DPDD, single image (centre view)'),
      _preset('restormer-defocus-dual', 'dual_pixel_defocus_deblurring.pth', task='defocus_deblur_dual',
              channels=6, hp=dict(dual_pixel_task=True),
              notes='DPDD dual-pixel: input is the left and right views concatenated (6 channels, '
                    '16-bit images / 65535), output RGB, no global residual'),
      _preset('restormer-derain', 'deraining.pth', task='derain', channels=3,
              notes='Rain13K; Deraining/test.py (scored on the Y channel in MATLAB)'),
      _preset('restormer-real-dn', 'real_denoising.pth', task='real_dn', channels=3,
              hp=dict(LayerNorm_type='BiasFree'), notes='SIDD real noise'),
  ]
  # Gaussian denoising: one blind model per colour type and one per sigma (15, 25, 50).
  for color, channels, task in (('color', 3, 'color_dn'), ('gray', 1, 'gray_dn')):
    out.append(_preset(
        f'restormer-{color}-dn-blind', f'gaussian_{color}_denoising_blind.pth', task=task, channels=channels,
        hp=dict(LayerNorm_type='BiasFree'), notes='blind: one model for sigma in [0, 50]'))
    for sigma in (15, 25, 50):
      out.append(_preset(
          f'restormer-{color}-dn{sigma}', f'gaussian_{color}_denoising_sigma{sigma}.pth', task=task,
          channels=channels, noise_level=sigma, hp=dict(LayerNorm_type='BiasFree'),
          notes='official test: float noise (np.random.seed(0) per image, RGB order), not clipped'))
  out.append(all_in_one_comparison_preset('restormer-aio-small', 'restormer', dict(
      BASE, inp_channels=3, out_channels=3, num_blocks=(2, 3, 3, 5), num_refinement_blocks=2)))
  return out


def torch_kwargs(cfg: UNetConfig) -> dict:
  """The official constructor keywords (lists where the original takes lists)."""
  return dict(cfg.hyperparameters(), num_blocks=list(cfg.num_blocks), heads=list(cfg.heads))


ARCHITECTURE = Architecture(
    name='restormer', config_cls=RestormerConfig, model_cls=Restormer, torch_params=TORCH_PARAMS,
    signature=SIGNATURE_KEYS, hyperparameters_from_state_dict=hyperparameters_from_state_dict,
    presets=presets,
    # qkv and the FFN's project_in are 1x1 convs (1, 1, C, kC); project_out/out-proj (1, 1, kC, C).
    sharding_rules=(
        (r'.*attn/qkv/kernel', (None, None, 'data', 'model')),
        (r'.*attn/qkv_dwconv/kernel', (None, None, None, 'model')),
        (r'.*attn/project_out/kernel', (None, None, 'model', 'data')),
        (r'.*ffn/project_in/kernel', (None, None, 'data', 'model')),
        (r'.*ffn/dwconv/kernel', (None, None, None, 'model')),
        (r'.*ffn/project_out/kernel', (None, None, 'model', 'data')),
    ),
    torch_reference=TorchReference('spandrel_extra_arches.architectures.Restormer', 'Restormer', torch_kwargs,
                                   'spandrel-extra-arches==0.2.0'),
    description='Restormer (Zamir et al., CVPR 2022): every released task')
