"""DualFreq: the frequency-aware dual transformer for all-in-one restoration (Dformer + Rformer).

A first public implementation of "Learning Dual Transformers for All-In-One Image Restoration from a
Frequency Perspective" (arXiv 2407.01636). Only the abstract is public, so most of the design is
ours; `docs/dualfreq.md` says, component by component, what comes from the paper and what was
chosen and why. In short:

* **Dformer** (degradation estimation): a multi-level Haar DWT splits the degraded input into
  frequency subbands (LL of the coarsest level, and HL/LH/HH of every level). Each subband is
  embedded by a shared 3x3 conv; its mean and RMS (band energy) over each cell of a fixed grid
  (any input size) make one token, tagged with a learned subband embedding and a grid-position
  embedding; the tokens are mixed by a small pre-LN
  transformer. The degradation prior is the LayerNormed mean token, one vector per image.
* **Rformer** (restoration): a Restormer-style U-Net (our Restormer blocks' norms, depth-wise
  convs and channel attention) whose attention is degradation-adaptive. In every block the queries
  and keys are split into three orientation bands by a one-level Haar transform of the feature map
  (approximation, horizontal+vertical detail, diagonal detail; the bands sum back exactly to the
  features) and re-weighted per head and band by gates predicted from the prior, so each head can
  attend to the frequency content the degradation damaged most. The feed-forward network is
  modulated (FiLM) by the prior too.

Ablations (config flags): `use_prior=False` replaces the Dformer prior by a learned constant;
`band_attention=False` uses plain channel attention (the prior then acts through FiLM only).
NHWC in, NHWC out; pads to a multiple of 16 (three 2x downsamplings, and the Haar split of the
lowest level) and crops back.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxrestore import kernels, layers
from jaxrestore.mapping import ParamMap, Rule
from jaxrestore.models.base import Architecture, all_in_one_comparison_preset, ModelConfig, Preset, runtime_field
from jaxrestore.models.restormer import (ChannelLayerNorm, Downsample, FeedForward, OverlapPatchEmbed, Upsample,
                                         conv_kwargs, gated_gelu)

NUM_BANDS = 3  # Rformer's orientation bands: approximation, horizontal + vertical detail, diagonal


@dataclasses.dataclass(frozen=True)
class DualFreqConfig(ModelConfig):
  in_channels: int = 3
  dim: int = 32
  num_blocks: tuple[int, ...] = (2, 3, 3, 4)
  num_refinement_blocks: int = 2
  heads: tuple[int, ...] = (1, 2, 4, 8)
  ffn_expansion_factor: float = 2.66
  bias: bool = False
  LayerNorm_type: str = 'WithBias'  # noqa: N815  (Restormer's keyword)
  # Dformer
  dwt_levels: int = 3               # Haar levels of the input decomposition: 3 * levels + 1 subbands
  prior_dim: int = 64
  dformer_depth: int = 2
  dformer_heads: int = 4
  dformer_grid: int = 4             # tokens per subband: grid x grid average pools
  # Ablations
  use_prior: bool = True            # False: a learned constant instead of the Dformer's prior
  band_attention: bool = True       # False: plain channel attention (prior through FiLM only)
  attention: str = runtime_field('auto')
  dtype: Any = runtime_field(None)
  param_dtype: Any = runtime_field(jnp.float32)
  padding: str = runtime_field('reflect')

  def __post_init__(self):
    self.check_padding()
    object.__setattr__(self, 'num_blocks', tuple(int(n) for n in self.num_blocks))
    object.__setattr__(self, 'heads', tuple(int(h) for h in self.heads))
    if len(self.num_blocks) != 4 or len(self.heads) != 4:
      raise ValueError(f'DualFreq: num_blocks {self.num_blocks} and heads {self.heads} need 4 levels each')
    for level, h in enumerate(self.heads):
      if (self.dim * 2 ** level) % h:
        raise ValueError(f'DualFreq: level {level + 1} width {self.dim * 2 ** level} is not divisible by {h} heads')
    if self.prior_dim % self.dformer_heads:
      raise ValueError(f'DualFreq: prior_dim {self.prior_dim} is not divisible by {self.dformer_heads} heads')
    if not 1 <= self.dwt_levels <= 4:
      raise ValueError(f'DualFreq: dwt_levels must be 1..4, got {self.dwt_levels}')

  in_chans = property(lambda self: self.in_channels)
  out_chans = property(lambda self: self.in_channels)

  @property
  def size_multiple(self) -> int:
    """8 for the U-Net, times 2 for the Haar split at its lowest level, and the Dformer's DWT."""
    return max(16, 2 ** self.dwt_levels)

  @property
  def min_size(self) -> int:
    return self.size_multiple if self.padding == 'strict' else self.size_multiple // 2 + 1

  @property
  def num_subbands(self) -> int:
    return 3 * self.dwt_levels + 1


def _haar(x, inverse: bool = False):
  """Haar analysis/synthesis: the Pallas kernel on accelerators, its jax.numpy twin on CPU."""
  if jax.default_backend() == 'cpu':
    return kernels.haar_idwt_reference(x) if inverse else kernels.haar_dwt_reference(x)
  return kernels.haar_idwt(x) if inverse else kernels.haar_dwt(x)


def haar_subbands(x, levels: int) -> list:
  """[LL_L, HL_L, LH_L, HH_L, ..., HL_1, LH_1, HH_1] (coarsest first), each (B, h, w, C)."""
  c = x.shape[-1]
  details = []
  for _ in range(levels):
    y = _haar(x)
    x = y[..., :c]
    details.append([y[..., i * c:(i + 1) * c] for i in (1, 2, 3)])
  return [x] + [band for level in reversed(details) for band in level]


def orientation_bands(x) -> tuple:
  """(approximation, horizontal + vertical detail, diagonal detail), each the size of x; they sum to x."""
  c = x.shape[-1]
  y = _haar(x)
  zero = jnp.zeros_like(y[..., :c])
  ll, hl, lh, hh = (y[..., i * c:(i + 1) * c] for i in range(4))
  low = _haar(jnp.concatenate([ll, zero, zero, zero], axis=-1), inverse=True)
  diagonal = _haar(jnp.concatenate([zero, zero, zero, hh], axis=-1), inverse=True)
  return low, x - low - diagonal, diagonal


def adaptive_average_pool(x, grid: int):
  """torch.nn.AdaptiveAvgPool2d(grid) on NHWC: bin i covers [floor(i n / g), ceil((i + 1) n / g))."""

  def matrix(n):
    m = np.zeros((grid, n), np.float32)
    for i in range(grid):
      lo, hi = (i * n) // grid, -(-((i + 1) * n) // grid)
      m[i, lo:hi] = 1.0 / (hi - lo)
    return jnp.asarray(m)

  _, h, w, _ = x.shape
  return jnp.einsum('ih,bhwc,jw->bijc', matrix(h), x.astype(jnp.float32), matrix(w)).astype(x.dtype)


# ----- Dformer ---------------------------------------------------------------------------------------

class EncoderLayer(nnx.Module):
  """Pre-LN transformer layer (multi-head self-attention, GELU MLP) over the subband tokens."""

  def __init__(self, dim: int, heads: int, cfg, *, rngs: nnx.Rngs):
    kw = dict(dtype=cfg.dtype, param_dtype=cfg.param_dtype)
    self.heads = heads
    # A learned logit scale per head (also makes the head count readable from a checkpoint).
    self.temperature = nnx.Param(jnp.full((heads,), 1.0 / math.sqrt(dim // heads), cfg.param_dtype))
    self.norm1 = layers.layer_norm(dim, rngs=rngs, dtype=None if cfg.dtype is None else jnp.float32,
                                   param_dtype=cfg.param_dtype)
    self.qkv = layers.linear(dim, 3 * dim, rngs=rngs, **kw)
    self.proj = layers.linear(dim, dim, rngs=rngs, **kw)
    self.norm2 = layers.layer_norm(dim, rngs=rngs, dtype=None if cfg.dtype is None else jnp.float32,
                                   param_dtype=cfg.param_dtype)
    self.fc1 = layers.linear(dim, 2 * dim, rngs=rngs, **kw)
    self.fc2 = layers.linear(2 * dim, dim, rngs=rngs, **kw)

  def __call__(self, x):
    b, n, c = x.shape
    qkv = self.qkv(self.norm1(x)).reshape(b, n, 3, self.heads, c // self.heads)
    q, k, v = qkv.transpose(2, 0, 3, 1, 4)
    logits = (jnp.einsum('bhqd,bhkd->bhqk', q, k).astype(jnp.float32)
              * self.temperature[...].astype(jnp.float32)[:, None, None])
    attn = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    x = x + self.proj(jnp.einsum('bhqk,bhkd->bqhd', attn, v).reshape(b, n, c))
    return x + self.fc2(layers.exact_gelu(self.fc1(self.norm2(x))))


class Dformer(nnx.Module):
  """Degraded image -> degradation prior (B, prior_dim), from how each frequency subband looks."""

  def __init__(self, cfg: DualFreqConfig, *, rngs: nnx.Rngs):
    d, g = cfg.prior_dim, cfg.dformer_grid
    self.levels, self.grid = cfg.dwt_levels, g
    self.embed = layers.conv2d(cfg.in_channels, d, 3, rngs=rngs, **conv_kwargs(cfg))
    # Token = W [pooled mean, pooled RMS] of the embedded band. The mean alone is linear in the input,
    # so zero-mean degradations (noise, most of rain's and blur's effect on detail bands) average out
    # of it; the RMS is the band's energy per grid cell, which they change.
    self.statistics = layers.linear(2 * d, d, rngs=rngs, **conv_kwargs(cfg))
    self.subband_embedding = nnx.Param(0.02 * jax.random.normal(rngs.params(), (cfg.num_subbands, 1, d),
                                                                cfg.param_dtype))
    self.position_embedding = nnx.Param(0.02 * jax.random.normal(rngs.params(), (1, g * g, d), cfg.param_dtype))
    self.layers = nnx.List([EncoderLayer(d, cfg.dformer_heads, cfg, rngs=rngs) for _ in range(cfg.dformer_depth)])
    self.norm = layers.layer_norm(d, rngs=rngs, dtype=None if cfg.dtype is None else jnp.float32,
                                  param_dtype=cfg.param_dtype)

  def tokens(self, x):
    """(B, subbands * grid², prior_dim): pooled statistics of every embedded subband, tagged."""
    b = x.shape[0]
    out = []
    for i, band in enumerate(haar_subbands(x, self.levels)):
      e = self.embed(band)
      mean = adaptive_average_pool(e, self.grid)
      energy = jnp.sqrt(adaptive_average_pool(jnp.square(e.astype(jnp.float32)), self.grid) + 1e-6)
      stats = jnp.concatenate([mean, energy.astype(mean.dtype)], axis=-1).reshape(b, self.grid ** 2, -1)
      token = self.statistics(stats)
      out.append(token + self.subband_embedding[...][i].astype(token.dtype)
                 + self.position_embedding[...].astype(token.dtype))
    return jnp.concatenate(out, axis=1)

  def __call__(self, x):
    t = self.tokens(x)
    for layer in self.layers:
      t = layer(t)
    return self.norm(jnp.mean(t, axis=1))


# ----- Rformer ---------------------------------------------------------------------------------------

class BandAdaptiveAttention(nnx.Module):
  """Restormer's MDTA whose queries and keys are re-weighted per head and orientation band by
  gates 1 + tanh(W prior): softmax(norm(q') norm(k')ᵀ · temperature) v, q' = Σ_b g_qb band_b(q)."""

  def __init__(self, dim: int, num_heads: int, cfg: DualFreqConfig, *, rngs: nnx.Rngs):
    ck = conv_kwargs(cfg)
    self.num_heads, self.band_attention, self.implementation = num_heads, cfg.band_attention, cfg.attention
    self.temperature = nnx.Param(jnp.ones((num_heads,), cfg.param_dtype))
    self.qkv = layers.PointwiseConv(dim, dim * 3, use_bias=cfg.bias, rngs=rngs, **ck)
    self.qkv_dwconv = layers.DepthwiseConv(dim * 3, 3, use_bias=cfg.bias, rngs=rngs, **ck)
    self.project_out = layers.PointwiseConv(dim, dim, use_bias=cfg.bias, rngs=rngs, **ck)
    if cfg.band_attention:
      self.gates = layers.linear(cfg.prior_dim, 2 * num_heads * NUM_BANDS, rngs=rngs,
                                 kernel_init=nnx.initializers.normal(0.02), bias_init=nnx.initializers.zeros,
                                 **ck)

  def band_gates(self, prior):
    """(2, B, heads, 1, bands): query and key gates, 1 at a zero prior projection."""
    g = 1.0 + jnp.tanh(self.gates(prior)).reshape(-1, 2, self.num_heads, NUM_BANDS)
    return g.transpose(1, 0, 2, 3)[:, :, :, None, :]

  def __call__(self, x, prior):
    b, h, w, c = x.shape
    q, k, v = jnp.split(self.qkv_dwconv(self.qkv(x)), 3, axis=-1)

    def heads(t):  # (B, H, W, C) -> (B, heads, C/heads, H*W), Restormer's 'b head c (h w)'
      return t.reshape(b, h * w, self.num_heads, c // self.num_heads).transpose(0, 2, 3, 1)

    if self.band_attention:
      gq, gk = self.band_gates(prior)

      def mix(t, gate):  # elementwise sum over the 3 bands (a size-3 reduction runs ~10x slower on CPU)
        terms = [heads(band) * gate[..., None, i].astype(t.dtype) for i, band in enumerate(orientation_bands(t))]
        return terms[0] + terms[1] + terms[2]

      q, k = mix(q, gq), mix(k, gk)
    else:
      q, k = heads(q), heads(k)
    attend = kernels.get_channel_attention(self.implementation)
    out = attend(q, k, heads(v), self.temperature[...].astype(v.dtype))
    return self.project_out(out.transpose(0, 3, 1, 2).reshape(b, h, w, c))


class PriorFeedForward(nnx.Module):
  """GDFN on features modulated by the prior: x (1 + s) + t with (s, t) = W prior."""

  def __init__(self, dim: int, cfg: DualFreqConfig, *, rngs: nnx.Rngs):
    self.ffn = FeedForward(dim, cfg.ffn_expansion_factor, cfg.bias, cfg, rngs=rngs)
    self.film = layers.linear(cfg.prior_dim, 2 * dim, rngs=rngs, kernel_init=nnx.initializers.normal(0.02),
                              bias_init=nnx.initializers.zeros, **conv_kwargs(cfg))

  def __call__(self, x, prior):
    scale, shift = jnp.split(self.film(prior)[:, None, None, :].astype(x.dtype), 2, axis=-1)
    ffn = self.ffn
    return ffn.project_out(gated_gelu(ffn.dwconv(ffn.project_in(x * (1 + scale) + shift))))


class DualFreqBlock(nnx.Module):

  def __init__(self, dim: int, num_heads: int, cfg: DualFreqConfig, *, rngs: nnx.Rngs):
    self.norm1 = ChannelLayerNorm(dim, cfg.LayerNorm_type, cfg, rngs=rngs)
    self.attn = BandAdaptiveAttention(dim, num_heads, cfg, rngs=rngs)
    self.norm2 = ChannelLayerNorm(dim, cfg.LayerNorm_type, cfg, rngs=rngs)
    self.ffn = PriorFeedForward(dim, cfg, rngs=rngs)

  def __call__(self, x, prior):
    x = x + self.attn(self.norm1(x), prior)
    return x + self.ffn(self.norm2(x), prior)


def _blocks(dim, heads, depth, cfg, rngs):
  return nnx.List([DualFreqBlock(dim, heads, cfg, rngs=rngs) for _ in range(depth)])


def _run(blocks, x, prior):
  for block in blocks:
    x = block(x, prior)
  return x


class DualFreq(nnx.Module):
  """Dformer (prior from the input's Haar subbands) + Rformer (band-adaptive U-Net): NHWC -> NHWC."""

  def __init__(self, config: DualFreqConfig, *, rngs: nnx.Rngs):
    cfg = self.config = config
    dim, nb, heads, ck = cfg.dim, cfg.num_blocks, cfg.heads, conv_kwargs(cfg)
    if cfg.use_prior:
      self.dformer = Dformer(cfg, rngs=rngs)
    else:
      self.constant_prior = nnx.Param(jax.random.normal(rngs.params(), (cfg.prior_dim,), cfg.param_dtype))
    self.patch_embed = OverlapPatchEmbed(cfg.in_channels, dim, cfg, rngs=rngs)
    self.encoder_level1 = _blocks(dim, heads[0], nb[0], cfg, rngs)
    self.down1_2 = Downsample(dim, cfg, rngs=rngs)
    self.encoder_level2 = _blocks(dim * 2, heads[1], nb[1], cfg, rngs)
    self.down2_3 = Downsample(dim * 2, cfg, rngs=rngs)
    self.encoder_level3 = _blocks(dim * 4, heads[2], nb[2], cfg, rngs)
    self.down3_4 = Downsample(dim * 4, cfg, rngs=rngs)
    self.latent = _blocks(dim * 8, heads[3], nb[3], cfg, rngs)
    self.up4_3 = Upsample(dim * 8, cfg, rngs=rngs)
    self.reduce_chan_level3 = layers.PointwiseConv(dim * 8, dim * 4, use_bias=cfg.bias, rngs=rngs, **ck)
    self.decoder_level3 = _blocks(dim * 4, heads[2], nb[2], cfg, rngs)
    self.up3_2 = Upsample(dim * 4, cfg, rngs=rngs)
    self.reduce_chan_level2 = layers.PointwiseConv(dim * 4, dim * 2, use_bias=cfg.bias, rngs=rngs, **ck)
    self.decoder_level2 = _blocks(dim * 2, heads[1], nb[1], cfg, rngs)
    self.up2_1 = Upsample(dim * 2, cfg, rngs=rngs)
    self.decoder_level1 = _blocks(dim * 2, heads[0], nb[0], cfg, rngs)
    self.refinement = _blocks(dim * 2, heads[0], cfg.num_refinement_blocks, cfg, rngs)
    self.output = layers.conv2d(dim * 2, cfg.in_channels, 3, use_bias=cfg.bias, rngs=rngs, **ck)

  def prior(self, x):
    """The degradation prior of (padded) NHWC images: (B, prior_dim)."""
    if self.config.use_prior:
      return self.dformer(x)
    return jnp.broadcast_to(self.constant_prior[...].astype(x.dtype), (x.shape[0], self.config.prior_dim))

  def __call__(self, x, prior=None):
    """`prior` overrides the Dformer's estimate (e.g. to probe what the prior does)."""
    cfg = self.config
    h, w = x.shape[1:3]
    x = cfg.pad_input(x.astype(cfg.dtype or x.dtype), 'DualFreq')
    p = self.prior(x) if prior is None else jnp.asarray(prior, x.dtype)
    enc1 = _run(self.encoder_level1, self.patch_embed(x), p)
    enc2 = _run(self.encoder_level2, self.down1_2(enc1), p)
    enc3 = _run(self.encoder_level3, self.down2_3(enc2), p)
    latent = _run(self.latent, self.down3_4(enc3), p)
    dec3 = _run(self.decoder_level3, self.reduce_chan_level3(jnp.concatenate([self.up4_3(latent), enc3], -1)), p)
    dec2 = _run(self.decoder_level2, self.reduce_chan_level2(jnp.concatenate([self.up3_2(dec3), enc2], -1)), p)
    dec1 = _run(self.decoder_level1, jnp.concatenate([self.up2_1(dec2), enc1], -1), p)
    out = self.output(_run(self.refinement, dec1, p)) + x
    return cfg.crop_output(out, h, w)


def parameter_counts(model: DualFreq) -> dict[str, int]:
  """{'dformer': n, 'rformer': n, 'total': n}."""
  counts = {'dformer': 0, 'rformer': 0}
  for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
    part = 'dformer' if path[0] in ('dformer', 'constant_prior') else 'rformer'
    counts[part] += int(np.prod(var.shape))
  counts['total'] = counts['dformer'] + counts['rformer']
  return counts


# ----- checkpoints, presets --------------------------------------------------------------------------
# There is no official PyTorch release. A state dict for this model uses its own parameter paths as
# keys ('encoder_level1.0.attn.qkv.kernel', NHWC/HWIO layouts), as `jaxrestore.convert.build.params_of`
# writes them to an .npz; `jaxrestore convert` turns such a file into a converted checkpoint.

TORCH_PARAMS = ParamMap(rules=(Rule(r'(.+)', r'\1'),))
SIGNATURE_KEYS = ('patch_embed.proj.kernel', 'encoder_level1.0.attn.qkv.kernel', 'latent.0.ffn.film.kernel',
                  'output.kernel')


def hyperparameters_from_state_dict(sd) -> dict:
  shape = lambda k: tuple(int(s) for s in np.shape(sd[k]))
  count = lambda prefix: len({k[len(prefix) + 1:].split('.')[0] for k in sd if k.startswith(prefix + '.')})
  dim = shape('patch_embed.proj.kernel')[3]
  levels = ('encoder_level1', 'encoder_level2', 'encoder_level3', 'latent')
  hp: dict[str, Any] = dict(
      in_channels=shape('patch_embed.proj.kernel')[2], dim=dim,
      num_blocks=tuple(count(p) for p in levels), num_refinement_blocks=count('refinement'),
      heads=tuple(shape(f'{p}.0.attn.temperature')[0] for p in levels),
      bias='encoder_level1.0.attn.qkv.bias' in sd,
      LayerNorm_type='WithBias' if 'encoder_level1.0.norm1.bias' in sd else 'BiasFree',
      prior_dim=shape('latent.0.ffn.film.kernel')[0],
      band_attention='latent.0.attn.gates.kernel' in sd, use_prior='dformer.embed.kernel' in sd)
  hidden = shape('encoder_level1.0.ffn.ffn.project_out.kernel')[2]
  hp['ffn_expansion_factor'] = 2.66 if int(dim * 2.66) == hidden else hidden / dim
  if hp['use_prior']:
    subbands = shape('dformer.subband_embedding')[0]
    hp.update(dwt_levels=(subbands - 1) // 3, dformer_depth=count('dformer.layers'),
              dformer_heads=shape('dformer.layers.0.temperature')[0],
              dformer_grid=int(round(math.sqrt(shape('dformer.position_embedding')[1]))))
  return hp


SMALL = dict(dim=24, num_blocks=(2, 2, 2, 3), num_refinement_blocks=2, heads=(1, 2, 4, 8), prior_dim=48,
             dformer_depth=2, dformer_heads=4, dformer_grid=4, dwt_levels=3)
BASE = dict(dim=48, num_blocks=(4, 6, 6, 8), num_refinement_blocks=4, heads=(1, 2, 4, 8), prior_dim=96,
            dformer_depth=4, dformer_heads=4, dformer_grid=4, dwt_levels=3)


def presets() -> list[Preset]:
  note = ('architecture only (random weights until trained): first public implementation of arXiv '
          '2407.01636 from its abstract; see docs/dualfreq.md')
  return [Preset(name='dualfreq-small', architecture='dualfreq', hyperparameters=dict(SMALL), task='all_in_one',
                 channels=3, notes=note),
          Preset(name='dualfreq-base', architecture='dualfreq', hyperparameters=dict(BASE), task='all_in_one',
                 channels=3, notes=note),
          # Sized to ~16.5 M parameters, the smallest HAIR and PromptIR can be (their prompt widths are fixed).
          all_in_one_comparison_preset('dualfreq-aio-small', 'dualfreq', dict(
              BASE, num_blocks=(2, 3, 3, 4), num_refinement_blocks=2, dformer_depth=2))]


ARCHITECTURE = Architecture(
    name='dualfreq', config_cls=DualFreqConfig, model_cls=DualFreq, torch_params=TORCH_PARAMS,
    signature=SIGNATURE_KEYS, hyperparameters_from_state_dict=hyperparameters_from_state_dict, presets=presets,
    sharding_rules=(
        (r'.*attn/qkv/kernel', (None, None, 'data', 'model')),
        (r'.*attn/project_out/kernel', (None, None, 'model', 'data')),
        (r'.*ffn/ffn/project_in/kernel', (None, None, 'data', 'model')),
        (r'.*ffn/ffn/project_out/kernel', (None, None, 'model', 'data')),
    ),
    description='DualFreq (Dformer + Rformer, arXiv 2407.01636): our implementation, no official code')
