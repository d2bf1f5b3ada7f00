"""PromptIR (Potlapalli et al., NeurIPS 2023) in Flax NNX, numerically faithful to the official model.

Reimplements `net/model.py` of va1shn9v/PromptIR with `decoder=True` (the released all-in-one model;
with `decoder=False` the official forward fails on a channel mismatch). It is Restormer (blocks from
`restormer.py`) with a prompt generation block before each of the three decoder levels: the
spatial mean of the features -> linear -> softmax over 5 learned prompts -> their weighted sum ->
bilinear resize to the feature size (`F.interpolate(mode='bilinear')`, align_corners False, no
antialias: reproduced by `layers.resize_bilinear`) -> 3x3 conv; the prompt is concatenated to the
features and mixed in by a transformer block ("noise_level", always heads[2] heads) and a 1x1 conv.

Quirks kept from the original: the channel counts of the prompt path are hardcoded for dim=48;
`reduce_noise_level2` widens to 4*dim channels (not 2*dim) before `up3_2`; the state dict carries
`chnl_reduce1/2/3` and `reduce_noise_channel_1/2/3`, which forward never uses (accepted and ignored
when loading). The original network needs H and W to be multiples of 8; like every jaxrestore model
this one reflect-pads to the multiple and crops back, as the official demo.py does
(`padding='strict'` refuses other sizes instead). NHWC in, NHWC out.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from jaxrestore import layers
from jaxrestore.mapping import ParamMap, Rule, linear_oi_to_io
from jaxrestore.models.base import Architecture, all_in_one_comparison_preset, Preset, TorchReference
from jaxrestore.models import restormer
from jaxrestore.models.restormer import (Downsample, OverlapPatchEmbed, TransformerBlock, Upsample,
                                         conv_kwargs, run_blocks, transformer_blocks)

PROMPT_LEN = 5


@dataclasses.dataclass(frozen=True)
class PromptIRConfig(restormer.UNetConfig):
  """Hyperparameters with the official constructor's names and defaults (but decoder=True, as released)."""
  decoder: bool = True

  def __post_init__(self):
    super().__post_init__()
    if self.dim != 48:
      raise ValueError(f'PromptIR: dim must be 48 (the prompt path hardcodes its channel counts), got {self.dim}')
    if not self.decoder:
      raise ValueError('PromptIR: decoder=False cannot run (the official forward fails on a channel '
                       'mismatch); the released model uses decoder=True')
    if self.inp_channels != self.out_channels:
      raise ValueError(f'PromptIR: the global residual needs inp_channels == out_channels, got '
                       f'{self.inp_channels} and {self.out_channels}')


class PromptGenBlock(nnx.Module):
  """Picks a mix of `prompt_len` learned prompts from the features' mean and resizes it to them."""

  def __init__(self, prompt_dim: int, prompt_len: int, prompt_size: int, lin_dim: int, cfg, *,
               rngs: nnx.Rngs):
    # Stored NHWC as (prompt_len, size, size, prompt_dim); the original's (1, len, dim, size, size).
    self.prompt_param = nnx.Param(layers.uniform(
        rngs.params(), (prompt_len, prompt_size, prompt_size, prompt_dim), cfg.param_dtype))
    self.linear_layer = layers.linear(lin_dim, prompt_len, rngs=rngs, **conv_kwargs(cfg))
    self.conv3x3 = layers.conv2d(prompt_dim, prompt_dim, 3, use_bias=False, rngs=rngs, **conv_kwargs(cfg))

  def __call__(self, x):
    _, h, w, _ = x.shape
    weights = jax.nn.softmax(self.linear_layer(jnp.mean(x, axis=(1, 2))), axis=-1)
    prompts = self.prompt_param[...].astype(x.dtype)
    prompt = jnp.sum(weights[:, :, None, None, None] * prompts[None], axis=1)
    return self.conv3x3(layers.resize_bilinear(prompt, (h, w)))


class PromptIR(nnx.Module):
  """PromptIR: NHWC images -> NHWC images."""

  def __init__(self, config: PromptIRConfig, *, rngs: nnx.Rngs):
    cfg = self.config = config
    dim, nb, heads, ck = cfg.dim, cfg.num_blocks, cfg.heads, conv_kwargs(cfg)

    def pointwise(cin, cout):
      return layers.PointwiseConv(cin, cout, use_bias=cfg.bias, rngs=rngs, **ck)

    self.patch_embed = OverlapPatchEmbed(cfg.inp_channels, dim, cfg, rngs=rngs)
    self.prompt1 = PromptGenBlock(64, PROMPT_LEN, 64, 96, cfg, rngs=rngs)
    self.prompt2 = PromptGenBlock(128, PROMPT_LEN, 32, 192, cfg, rngs=rngs)
    self.prompt3 = PromptGenBlock(320, PROMPT_LEN, 16, 384, cfg, rngs=rngs)
    self.encoder_level1 = transformer_blocks(dim, heads[0], nb[0], cfg, rngs)
    self.down1_2 = Downsample(dim, cfg, rngs=rngs)
    self.encoder_level2 = transformer_blocks(dim * 2, heads[1], nb[1], cfg, rngs)
    self.down2_3 = Downsample(dim * 2, cfg, rngs=rngs)
    self.encoder_level3 = transformer_blocks(dim * 4, heads[2], nb[2], cfg, rngs)
    self.down3_4 = Downsample(dim * 4, cfg, rngs=rngs)
    self.latent = transformer_blocks(dim * 8, heads[3], nb[3], cfg, rngs)

    self.noise_level3 = TransformerBlock(dim * 4 + 512, heads[2], cfg, rngs=rngs)
    self.reduce_noise_level3 = pointwise(dim * 4 + 512, dim * 4)
    self.up4_3 = Upsample(dim * 4, cfg, rngs=rngs)
    self.reduce_chan_level3 = pointwise(dim * 2 + 192, dim * 4)
    self.decoder_level3 = transformer_blocks(dim * 4, heads[2], nb[2], cfg, rngs)

    self.noise_level2 = TransformerBlock(dim * 2 + 224, heads[2], cfg, rngs=rngs)
    self.reduce_noise_level2 = pointwise(dim * 2 + 224, dim * 4)
    self.up3_2 = Upsample(dim * 4, cfg, rngs=rngs)
    self.reduce_chan_level2 = pointwise(dim * 4, dim * 2)
    self.decoder_level2 = transformer_blocks(dim * 2, heads[1], nb[1], cfg, rngs)

    self.noise_level1 = TransformerBlock(dim * 2 + 64, heads[2], cfg, rngs=rngs)
    self.reduce_noise_level1 = pointwise(dim * 2 + 64, dim * 2)
    self.up2_1 = Upsample(dim * 2, cfg, rngs=rngs)
    self.decoder_level1 = transformer_blocks(dim * 2, heads[0], nb[0], cfg, rngs)
    self.refinement = transformer_blocks(dim * 2, heads[0], cfg.num_refinement_blocks, cfg, rngs)
    self.output = layers.conv2d(dim * 2, cfg.out_channels, 3, use_bias=cfg.bias, rngs=rngs, **ck)

  def _prompted(self, x, prompt_block, noise_block, reduce):
    """Concatenates the prompt to the features and mixes it in (the original's `if self.decoder:`)."""
    return reduce(noise_block(jnp.concatenate([x, prompt_block(x)], axis=-1)))

  def __call__(self, x):
    cfg = self.config
    h, w = x.shape[1:3]
    x = cfg.pad_input(x.astype(cfg.dtype or x.dtype), 'PromptIR')

    enc1 = run_blocks(self.encoder_level1, self.patch_embed(x))
    enc2 = run_blocks(self.encoder_level2, self.down1_2(enc1))
    enc3 = run_blocks(self.encoder_level3, self.down2_3(enc2))
    latent = run_blocks(self.latent, self.down3_4(enc3))
    latent = self._prompted(latent, self.prompt3, self.noise_level3, self.reduce_noise_level3)

    dec3 = self.reduce_chan_level3(jnp.concatenate([self.up4_3(latent), enc3], axis=-1))
    dec3 = run_blocks(self.decoder_level3, dec3)
    dec3 = self._prompted(dec3, self.prompt2, self.noise_level2, self.reduce_noise_level2)

    dec2 = self.reduce_chan_level2(jnp.concatenate([self.up3_2(dec3), enc2], axis=-1))
    dec2 = run_blocks(self.decoder_level2, dec2)
    dec2 = self._prompted(dec2, self.prompt1, self.noise_level1, self.reduce_noise_level1)

    dec1 = run_blocks(self.decoder_level1, jnp.concatenate([self.up2_1(dec2), enc1], axis=-1))
    out = self.output(run_blocks(self.refinement, dec1)) + x
    return cfg.crop_output(out, h, w)


# ----- checkpoints -----------------------------------------------------------------------------------

TORCH_PARAMS = ParamMap(
    rules=(
        # (1, len, dim, size, size) -> (len, size, size, dim)
        Rule(r'(prompt\d)\.prompt_param', r'\1.prompt_param', lambda p: p[0].transpose(0, 2, 3, 1), ndim=5),
        Rule(r'(prompt\d)\.linear_layer\.weight', r'\1.linear_layer.kernel', linear_oi_to_io, ndim=2),
    ) + restormer.FAMILY_RULES,
    # Created by the original's __init__ and saved in its checkpoints, but never used by forward.
    ignore=(r'chnl_reduce[123]\.(weight|bias)', r'reduce_noise_channel_[123]\.(weight|bias)'),
)

# Restormer's signature plus the prompt path: more specific, so detection prefers it.
SIGNATURE_KEYS = restormer.SIGNATURE_KEYS + (
    'prompt1.prompt_param', 'prompt2.prompt_param', 'prompt3.prompt_param', 'noise_level3.attn.temperature',
    'reduce_noise_level3.weight')


def hyperparameters_from_state_dict(sd) -> dict:
  """Recovers the constructor arguments of an official PromptIR checkpoint from keys and shapes."""
  return dict(restormer.unet_hyperparameters(sd), decoder=True)


# ----- presets --------------------------------------------------------------------------------------

PROMPTIR_3D = dict(inp_channels=3, out_channels=3, dim=48, num_blocks=(4, 6, 6, 8), num_refinement_blocks=4,
                   heads=(1, 2, 4, 8), ffn_expansion_factor=2.66, bias=False, LayerNorm_type='WithBias',
                   decoder=True)


def presets() -> list[Preset]:
  """The all-in-one model released with va1shn9v/PromptIR (`model.ckpt`, Lightning: `state_dict`
  with a `net.` prefix), trained jointly on Gaussian noise sigma 15/25/50, rain streaks and haze."""
  return [Preset(
      name='promptir-3d', architecture='promptir', hyperparameters=dict(PROMPTIR_3D), task='all_in_one',
      channels=3, checkpoint_file='model.ckpt', checkpoint_key='state_dict',
      weights_url='https://drive.google.com/file/d/1j-b5Od70pGF7oaCqKAfUzmf-N-xEAjYl/view',
      weights_license='Academic Public License, non-commercial (va1shn9v/PromptIR LICENSE.md)',
      notes='all-in-one, 3 degradations: denoise (BSD68, sigma 15/25/50), derain (Rain100L), '
            'dehaze (SOTS outdoor); the all-in-one protocol (jaxrestore.eval.allinone)'),
      all_in_one_comparison_preset('promptir-aio-small', 'promptir', dict(
          PROMPTIR_3D, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1))]


ARCHITECTURE = Architecture(
    name='promptir', config_cls=PromptIRConfig, model_cls=PromptIR, torch_params=TORCH_PARAMS,
    signature=SIGNATURE_KEYS, hyperparameters_from_state_dict=hyperparameters_from_state_dict,
    presets=presets, sharding_rules=restormer.ARCHITECTURE.sharding_rules,
    torch_reference=TorchReference('net.model', 'PromptIR', restormer.torch_kwargs,
                                   checkout='github.com/va1shn9v/PromptIR'),
    description='PromptIR (Potlapalli et al., NeurIPS 2023): prompt-guided all-in-one restoration')
