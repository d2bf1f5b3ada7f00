"""HAIR (hypernetwork-based all-in-one image restoration) in Flax NNX, faithful to the official model.

Reimplements `net/HAIR.py` and its classifier `utils/ResNet.py` of toummHus/HAIR. HAIR is Restormer
(blocks from `restormer.py`) whose latent, decoder and refinement levels get their conv weights
from a hypernetwork:

* a classifier ResNet on the level-4 encoder features (conv_in; 3 levels of 3 ResNet blocks, the
  first two followed by a stride-2 3x3 conv after a (0, 1, 0, 1) zero pad; a middle block with
  single-head spatial attention; GroupNorm with 24 groups and eps 1e-6; swish) whose spatial mean
  is the "global information vector" (96 values per image);
* per level one weight bank `kernel_box` of shape (num_box, total): each row holds the six
  flattened conv kernels of one transformer block in the order qkv 1x1 | qkv depth-wise 3x3 |
  attention projection 1x1 | FFN project_in 1x1 | FFN depth-wise 3x3 | FFN project_out 1x1
  (OIHW, no biases), and per block a selector MLP (3 x (Linear + exact GELU), Linear, softmax over
  the rows) that mixes the bank into that block's kernels for each sample.

The per-sample kernels are applied without a loop over the batch: 1x1 convs as a batched einsum,
depth-wise convs as shifted products with per-sample taps (`layers.depthwise_conv2d`).

Quirks kept from the original: `num_box` is max(4, n) + 1 for latent, decoder_level2,
decoder_level1 and refinement but max(4, n) (no +1) for decoder_level3; `reduce_chan_level3`
hardcodes 2*dim + 192 input channels (so dim must be 48); the hyper-convs ignore `bias`;
`reduce_latent` has a bias whatever `bias` says. The original needs H and W to be multiples of 8
and at least 32 (the classifier's two stride-2 convs need 4x4 level-4 features); like every
jaxrestore model this one reflect-pads to the multiple and crops back (`padding='strict'` refuses
other sizes instead). NHWC in, NHWC out.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxrestore import layers
from jaxrestore.mapping import ParamMap, Rule, count_children, linear_oi_to_io
from jaxrestore.models.base import Architecture, all_in_one_comparison_preset, Preset, TorchReference
from jaxrestore.models import restormer
from jaxrestore.models.restormer import (ChannelLayerNorm, Downsample, OverlapPatchEmbed, Upsample,
                                         conv_kwargs, gated_gelu, run_blocks, transformer_blocks,
                                         transposed_attention)

MIN_SIZE = 32
GROUPS, GROUP_NORM_EPS = 24, 1e-6
MLP_DEPTH = 3


@dataclasses.dataclass(frozen=True)
class HAIRConfig(restormer.UNetConfig):
  """Hyperparameters with the official constructor's names and defaults."""

  def __post_init__(self):
    super().__post_init__()
    if self.dim != 48:
      raise ValueError(f'HAIR: dim must be 48 (reduce_chan_level3 hardcodes 2*dim + 192 channels), got {self.dim}')
    if self.inp_channels != self.out_channels:
      raise ValueError(f'HAIR: the global residual needs inp_channels == out_channels, got '
                       f'{self.inp_channels} and {self.out_channels}')

  @property
  def min_size(self) -> int:
    """32 once padded to a multiple of 8."""
    return MIN_SIZE if self.padding == 'strict' else MIN_SIZE - restormer.MULTIPLE + 1

  @property
  def num_boxes(self) -> dict[str, int]:
    """Rows of each level's weight bank, with the original's missing +1 at decoder_level3."""
    nb = self.num_blocks
    return dict(latent=max(4, nb[3]) + 1, decoder_level3=max(4, nb[2]), decoder_level2=max(4, nb[1]) + 1,
                decoder_level1=max(4, nb[0]) + 1, refinement=max(4, self.num_refinement_blocks) + 1)


# ----- the classifier (utils/ResNet.py) --------------------------------------------------------------

def swish(x):
  return x * jax.nn.sigmoid(x)


class ResnetBlock(nnx.Module):
  """GroupNorm, swish, 3x3 conv, twice, plus the input (same width, no time embedding)."""

  def __init__(self, channels: int, cfg, *, rngs: nnx.Rngs):
    ck = conv_kwargs(cfg)
    self.norm1 = layers.group_norm(channels, GROUPS, epsilon=GROUP_NORM_EPS, rngs=rngs, **ck)
    self.conv1 = layers.conv2d(channels, channels, 3, rngs=rngs, **ck)
    self.norm2 = layers.group_norm(channels, GROUPS, epsilon=GROUP_NORM_EPS, rngs=rngs, **ck)
    self.conv2 = layers.conv2d(channels, channels, 3, rngs=rngs, **ck)

  def __call__(self, x):
    h = self.conv1(swish(self.norm1(x)))
    return x + self.conv2(swish(self.norm2(h)))


class AttnBlock(nnx.Module):
  """Single-head softmax attention over all pixels (the 'vanilla' AttnBlock), residual."""

  def __init__(self, channels: int, cfg, *, rngs: nnx.Rngs):
    ck = conv_kwargs(cfg)
    self.norm = layers.group_norm(channels, GROUPS, epsilon=GROUP_NORM_EPS, rngs=rngs, **ck)
    self.q = layers.PointwiseConv(channels, channels, rngs=rngs, **ck)
    self.k = layers.PointwiseConv(channels, channels, rngs=rngs, **ck)
    self.v = layers.PointwiseConv(channels, channels, rngs=rngs, **ck)
    self.proj_out = layers.PointwiseConv(channels, channels, rngs=rngs, **ck)

  def __call__(self, x):
    b, h, w, c = x.shape
    y = self.norm(x)
    q, k, v = (f(y).reshape(b, h * w, c) for f in (self.q, self.k, self.v))
    attn = jax.nn.softmax(jnp.einsum('bic,bjc->bij', q, k) * (int(c) ** -0.5), axis=-1)
    out = jnp.einsum('bij,bjc->bic', attn, v).reshape(b, h, w, c)
    return x + self.proj_out(out)


class StridedDownsample(nnx.Module):
  """Zero pad (0, 1, 0, 1) then a 3x3 stride-2 conv ("no asymmetric padding in torch conv")."""

  def __init__(self, channels: int, cfg, *, rngs: nnx.Rngs):
    self.conv = nnx.Conv(channels, channels, (3, 3), strides=2, padding=((0, 1), (0, 1)),
                         kernel_init=layers.torch_kernel_init, bias_init=layers.torch_uniform_init(channels * 9),
                         conv_general_dilated=layers.conv_general_dilated, rngs=rngs, **conv_kwargs(cfg))

  def __call__(self, x):
    return self.conv(x)


class DownLevel(nnx.Module):

  def __init__(self, channels: int, num_res_blocks: int, downsample: bool, cfg, *, rngs: nnx.Rngs):
    self.block = nnx.List([ResnetBlock(channels, cfg, rngs=rngs) for _ in range(num_res_blocks)])
    self.downsample = StridedDownsample(channels, cfg, rngs=rngs) if downsample else None

  def __call__(self, x):
    x = run_blocks(self.block, x)
    return x if self.downsample is None else self.downsample(x)


class MidLevel(nnx.Module):

  def __init__(self, channels: int, cfg, *, rngs: nnx.Rngs):
    self.block_1 = ResnetBlock(channels, cfg, rngs=rngs)
    self.attn_1 = AttnBlock(channels, cfg, rngs=rngs)
    self.block_2 = ResnetBlock(channels, cfg, rngs=rngs)

  def __call__(self, x):
    return self.block_2(self.attn_1(self.block_1(x)))


class Classifier(nnx.Module):
  """The official `ResNet(ch, out_ch, in_channels, ch_mult=(1, 1, 1), num_res_blocks=3)` encoder."""

  def __init__(self, ch: int, out_ch: int, in_channels: int, cfg, *, rngs: nnx.Rngs, levels: int = 3,
               num_res_blocks: int = 3):
    ck = conv_kwargs(cfg)
    self.conv_in = layers.conv2d(in_channels, ch, 3, rngs=rngs, **ck)
    self.down = nnx.List([DownLevel(ch, num_res_blocks, i != levels - 1, cfg, rngs=rngs) for i in range(levels)])
    self.mid = MidLevel(ch, cfg, rngs=rngs)
    self.norm_out = layers.group_norm(ch, GROUPS, epsilon=GROUP_NORM_EPS, rngs=rngs, **ck)
    self.conv_out = layers.conv2d(ch, out_ch, 3, rngs=rngs, **ck)

  def __call__(self, x):
    x = run_blocks(self.down, self.conv_in(x))
    return self.conv_out(swish(self.norm_out(self.mid(x))))


# ----- hyper levels ----------------------------------------------------------------------------------

def kernel_segments(dim: int, hidden: int) -> tuple[int, ...]:
  """Sizes of the six flattened kernels in a `kernel_box` row, in the original's order."""
  return (3 * dim * dim, 3 * dim * 9, dim * dim, 2 * hidden * dim, 2 * hidden * 9, hidden * dim)


def init_kernel_box(key, dim: int, hidden: int, num_box: int, dtype):
  """Rows of default-initialised PyTorch conv weights, U(+-1/sqrt(fan_in)), as the original fills its bank."""
  fan_ins = (dim, 9, dim, dim, 9, hidden)
  keys = jax.random.split(key, len(fan_ins))
  return jnp.concatenate([layers.uniform(k, (num_box, n), dtype, -1 / np.sqrt(f), 1 / np.sqrt(f))
                          for k, n, f in zip(keys, kernel_segments(dim, hidden), fan_ins)], axis=1)


def pointwise_per_sample(x, kernel):
  """1x1 conv with one (out, in) matrix per sample: x (B, H, W, in), kernel (B, out, in)."""
  return jnp.einsum('bhwi,boi->bhwo', x, kernel)


def depthwise_per_sample(x, kernel):
  """Depth-wise 3x3 conv with per-sample OIHW kernels flattened as (B, C * 9)."""
  b, c = x.shape[0], x.shape[-1]
  return layers.depthwise_conv2d(x, kernel.reshape(b, c, 3, 3).transpose(0, 2, 3, 1))


class Selector(nnx.Module):
  """The original's `FullyCon`: MLP (widths halving, exact GELU) -> softmax over the bank's rows."""

  def __init__(self, depth: int, num_box: int, ch_fea: int, cfg, *, rngs: nnx.Rngs):
    stack: list = []
    ch = ch_fea
    for _ in range(depth):
      stack += [layers.linear(ch, ch // 2, rngs=rngs, **conv_kwargs(cfg)), layers.exact_gelu]
      ch //= 2
    stack.append(layers.linear(ch, num_box, rngs=rngs, **conv_kwargs(cfg)))
    self.net = nnx.Sequential(*stack)

  def __call__(self, feature):
    return jax.nn.softmax(self.net(feature), axis=-1)


class HyperAttention(nnx.Module):
  """MDTA whose three convs are given per sample; only the temperature is a parameter."""

  def __init__(self, num_heads: int, cfg):
    self.num_heads = num_heads
    self.implementation = cfg.attention
    self.temperature = nnx.Param(jnp.ones((num_heads, 1, 1), cfg.param_dtype))

  def __call__(self, x, w_qkv, w_dw, w_proj):
    b, c = x.shape[0], x.shape[-1]
    qkv = depthwise_per_sample(pointwise_per_sample(x, w_qkv.reshape(b, 3 * c, c)), w_dw)
    out = transposed_attention(qkv, self.temperature[...], self.num_heads, self.implementation)
    return pointwise_per_sample(out, w_proj.reshape(b, c, c))


def hyper_feed_forward(x, w_in, w_dw, w_out, hidden: int):
  """GDFN with per-sample kernels (the original's `HyFF`, which has no parameters)."""
  b, c = x.shape[0], x.shape[-1]
  x = depthwise_per_sample(pointwise_per_sample(x, w_in.reshape(b, 2 * hidden, c)), w_dw)
  return pointwise_per_sample(gated_gelu(x), w_out.reshape(b, c, hidden))


class HyperBlock(nnx.Module):
  """The original's `Hytrans`: a transformer block run with the kernels its selector mixed."""

  def __init__(self, dim: int, num_heads: int, cfg, *, rngs: nnx.Rngs):
    self.hidden = int(dim * cfg.ffn_expansion_factor)
    self.norm1 = ChannelLayerNorm(dim, cfg.LayerNorm_type, cfg, rngs=rngs)
    self.attn = HyperAttention(num_heads, cfg)
    self.norm2 = ChannelLayerNorm(dim, cfg.LayerNorm_type, cfg, rngs=rngs)

  def __call__(self, x, kernels):
    x = x + self.attn(self.norm1(x), *kernels[:3])
    return x + hyper_feed_forward(self.norm2(x), *kernels[3:], hidden=self.hidden)


class HyperLevel(nnx.Module):
  """The original's `HyLevel`: blocks, one selector per block, and the level's shared weight bank."""

  def __init__(self, dim: int, num_heads: int, num_blocks: int, num_box: int, ch_fea: int, cfg, *,
               rngs: nnx.Rngs):
    hidden = int(dim * cfg.ffn_expansion_factor)
    self.blocks = nnx.List([HyperBlock(dim, num_heads, cfg, rngs=rngs) for _ in range(num_blocks)])
    self.extracts = nnx.List([Selector(MLP_DEPTH, num_box, ch_fea, cfg, rngs=rngs) for _ in range(num_blocks)])
    self.offsets = tuple(int(o) for o in np.cumsum(kernel_segments(dim, hidden))[:-1])
    self.kernel_box = nnx.Param(init_kernel_box(rngs.params(), dim, hidden, num_box, cfg.param_dtype))

  def __call__(self, x, feature):
    box = self.kernel_box[...].astype(x.dtype)
    for block, extract in zip(self.blocks, self.extracts):
      weights = extract(feature) @ box  # (B, total): this block's six kernels for every sample
      x = block(x, jnp.split(weights, self.offsets, axis=1))
    return x


class HAIR(nnx.Module):
  """HAIR: NHWC images (at least 32 pixels a side once padded) -> NHWC images."""

  def __init__(self, config: HAIRConfig, *, rngs: nnx.Rngs):
    cfg = self.config = config
    dim, nb, heads, ck, boxes = cfg.dim, cfg.num_blocks, cfg.heads, conv_kwargs(cfg), cfg.num_boxes
    ch_fea = dim * 2

    def hyper(name, width, num_heads, depth):
      return HyperLevel(width, num_heads, depth, boxes[name], ch_fea, cfg, rngs=rngs)

    self.patch_embed = OverlapPatchEmbed(cfg.inp_channels, dim, cfg, rngs=rngs)
    self.encoder_level1 = transformer_blocks(dim, heads[0], nb[0], cfg, rngs)
    self.down1_2 = Downsample(dim, cfg, rngs=rngs)
    self.encoder_level2 = transformer_blocks(dim * 2, heads[1], nb[1], cfg, rngs)
    self.down2_3 = Downsample(dim * 2, cfg, rngs=rngs)
    self.encoder_level3 = transformer_blocks(dim * 4, heads[2], nb[2], cfg, rngs)
    self.down3_4 = Downsample(dim * 4, cfg, rngs=rngs)
    self.latent = hyper('latent', dim * 8, heads[3], nb[3])
    self.reduce_latent = layers.conv2d(dim * 8, dim * 4, 3, rngs=rngs, **ck)
    self.feature = Classifier(int(dim * 1.5), ch_fea, dim * 8, cfg, rngs=rngs)
    self.up4_3 = Upsample(dim * 4, cfg, rngs=rngs)
    self.reduce_chan_level3 = layers.PointwiseConv(dim * 2 + 192, dim * 4, use_bias=cfg.bias, rngs=rngs, **ck)
    self.decoder_level3 = hyper('decoder_level3', dim * 4, heads[2], nb[2])
    self.up3_2 = Upsample(dim * 4, cfg, rngs=rngs)
    self.reduce_chan_level2 = layers.PointwiseConv(dim * 4, dim * 2, use_bias=cfg.bias, rngs=rngs, **ck)
    self.decoder_level2 = hyper('decoder_level2', dim * 2, heads[1], nb[1])
    self.up2_1 = Upsample(dim * 2, cfg, rngs=rngs)
    self.decoder_level1 = hyper('decoder_level1', dim * 2, heads[0], nb[0])
    self.refinement = hyper('refinement', dim * 2, heads[0], cfg.num_refinement_blocks)
    self.output = layers.conv2d(dim * 2, cfg.out_channels, 3, use_bias=cfg.bias, rngs=rngs, **ck)

  def __call__(self, x):
    cfg = self.config
    h, w = x.shape[1:3]
    x = cfg.pad_input(x.astype(cfg.dtype or x.dtype), 'HAIR')

    enc1 = run_blocks(self.encoder_level1, self.patch_embed(x))
    enc2 = run_blocks(self.encoder_level2, self.down1_2(enc1))
    enc3 = run_blocks(self.encoder_level3, self.down2_3(enc2))
    enc4 = self.down3_4(enc3)
    feature = jnp.mean(self.feature(enc4), axis=(1, 2))  # the global information vector

    latent = self.reduce_latent(self.latent(enc4, feature))
    dec3 = self.reduce_chan_level3(jnp.concatenate([self.up4_3(latent), enc3], axis=-1))
    dec3 = self.decoder_level3(dec3, feature)
    dec2 = self.reduce_chan_level2(jnp.concatenate([self.up3_2(dec3), enc2], axis=-1))
    dec2 = self.decoder_level2(dec2, feature)
    dec1 = self.decoder_level1(jnp.concatenate([self.up2_1(dec2), enc1], axis=-1), feature)
    out = self.output(self.refinement(dec1, feature)) + x
    return cfg.crop_output(out, h, w)


# ----- checkpoints -----------------------------------------------------------------------------------

TORCH_PARAMS = ParamMap(
    rules=(
        Rule(r'(.+)\.kernel_box', r'\1.kernel_box', ndim=2),
        Rule(r'(.+)\.net\.(\d+)\.weight', r'\1.net.layers.\2.kernel', linear_oi_to_io, ndim=2),
        Rule(r'(.+)\.net\.(\d+)\.bias', r'\1.net.layers.\2.bias', ndim=1),
        Rule(r'(feature\..+)\.weight', r'\1.scale', ndim=1),  # GroupNorm
    ) + restormer.FAMILY_RULES,
)

SIGNATURE_KEYS = ('patch_embed.proj.weight', 'latent.kernel_box', 'latent.blocks.0.attn.temperature',
                  'latent.extracts.0.net.0.weight', 'decoder_level3.kernel_box', 'refinement.kernel_box',
                  'feature.conv_in.weight', 'reduce_latent.weight', 'output.weight')


def hyperparameters_from_state_dict(sd) -> dict:
  """Recovers the constructor arguments of an official HAIR checkpoint from keys and shapes."""
  hp = restormer.unet_hyperparameters(sd, latent_prefix='latent.blocks')
  hp['num_refinement_blocks'] = count_children(sd, 'refinement.blocks')
  return hp


# ----- presets --------------------------------------------------------------------------------------

HAIR_3D = dict(inp_channels=3, out_channels=3, dim=48, num_blocks=(4, 6, 6, 8), num_refinement_blocks=4,
               heads=(1, 2, 4, 8), ffn_expansion_factor=2.66, bias=False, LayerNorm_type='WithBias')


def presets() -> list[Preset]:
  """The 3-degradation all-in-one model released with toummHus/HAIR (`hair3d.ckpt`, Lightning:
  `state_dict` with a `net.` prefix). The paper's 5-degradation model is not released there."""
  return [Preset(
      name='hair-3d', architecture='hair', hyperparameters=dict(HAIR_3D), task='all_in_one', channels=3,
      checkpoint_file='hair3d.ckpt', checkpoint_key='state_dict',
      weights_url='https://drive.google.com/file/d/1Zr0gy8MPFI6q0rytGXuqyqLKrk8bBeQg/view',
      weights_license='no licence file in toummHus/HAIR (all rights reserved unless the authors say otherwise)',
      notes='all-in-one, 3 degradations: denoise (BSD68, sigma 15/25/50), derain (Rain100L), '
            'dehaze (SOTS outdoor); the all-in-one protocol (jaxrestore.eval.allinone)'),
      all_in_one_comparison_preset('hair-aio-small', 'hair', dict(
          HAIR_3D, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1))]


ARCHITECTURE = Architecture(
    name='hair', config_cls=HAIRConfig, model_cls=HAIR, torch_params=TORCH_PARAMS,
    signature=SIGNATURE_KEYS, hyperparameters_from_state_dict=hyperparameters_from_state_dict,
    presets=presets,
    sharding_rules=((r'.*/kernel_box', (None, 'model')),) + restormer.ARCHITECTURE.sharding_rules,
    torch_reference=TorchReference('net.HAIR', 'HAIR', restormer.torch_kwargs, checkout='github.com/toummHus/HAIR'),
    description='HAIR (hypernetwork-based all-in-one restoration)')
