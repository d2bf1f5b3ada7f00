"""The T5 encoder (v1.1, as `t5-v1_1-xxl`) in Flax NNX, numerically faithful to Hugging Face's
PyTorch `T5EncoderModel`.

What makes it T5: token embeddings without scaling or position embeddings; a learned relative
position bias (bidirectional log-spaced buckets) computed by the first layer and added to every
layer's attention scores; attention without the 1/sqrt(d) scaling; RMS norms (T5LayerNorm: no mean,
no bias, the variance in float32) before each sub-layer and at the end; no biases anywhere; v1.1's
gated-GELU feed-forward (tanh GELU) instead of v1.0's ReLU.

Tokens (B, L) int with a (B, L) 0/1 padding mask -> hidden states (B, L, d_model). Padded keys get
float32's most negative value added, as Hugging Face does. Under bfloat16 the norms, the residual
stream and the softmax stay float32 (transformers keeps the stream in the weights' dtype). Under
float16 weights the feed-forward output projections `wo` stay float32, as transformers'
`_keep_in_fp32_modules = ['wo']` does for float16 only (DreamClear loads its T5 in bfloat16, where
`wo` is bfloat16 too); `keep_wo_float32=True` keeps them float32 under bfloat16 as well.

`jaxrestore.convert.components.load_t5_encoder` reads a Hugging Face folder (sharded or single `.safetensors` / `.bin`, through the
safe reader: no pickle code runs), keeps only the encoder's tensors and materialises them one at a
time. The tokenizer is in `jaxrestore.models.t5_tokenizer`.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import PartitionSpec as P

from jaxrestore import layers
from jaxrestore.mapping import ParamMap, Rule, linear_oi_to_io

ACTIVATIONS = {
    'relu': jax.nn.relu,
    'gelu': layers.exact_gelu,
    'gelu_new': lambda x: jax.nn.gelu(x, approximate=True),     # transformers' NewGELUActivation
    'gelu_pytorch_tanh': lambda x: jax.nn.gelu(x, approximate=True),
    'silu': jax.nn.silu,
    'swish': jax.nn.silu,
}
HALF = (jnp.bfloat16, jnp.float16)


@dataclasses.dataclass(frozen=True)
class T5Config:
  """Hugging Face `T5Config` fields the encoder uses (defaults: t5-v1_1-xxl) plus runtime dtypes."""
  vocab_size: int = 32128
  d_model: int = 4096
  d_kv: int = 64
  d_ff: int = 10240
  num_heads: int = 64
  num_layers: int = 24
  relative_attention_num_buckets: int = 32
  relative_attention_max_distance: int = 128
  layer_norm_epsilon: float = 1e-6
  feed_forward_proj: str = 'gated-gelu'
  # Not Hugging Face fields: compute / parameter dtypes, and float32 `wo` weights (None: under
  # float16 weights only, as transformers).
  dtype: Any = None
  param_dtype: Any = jnp.float32
  keep_wo_float32: bool | None = None

  def __post_init__(self):
    parts = self.feed_forward_proj.split('-')
    if len(parts) > 2 or (len(parts) == 2 and parts[0] != 'gated') or self.dense_act_fn not in ACTIVATIONS:
      raise ValueError(f'T5: unsupported feed_forward_proj {self.feed_forward_proj!r}; expected "ACT" or '
                       f'"gated-ACT" with ACT one of {sorted(ACTIVATIONS)}')

  @property
  def is_gated_act(self) -> bool:
    return self.feed_forward_proj.startswith('gated-')

  @property
  def dense_act_fn(self) -> str:
    """As T5Config: the last part of feed_forward_proj, except that 'gated-gelu' means tanh GELU."""
    return 'gelu_new' if self.feed_forward_proj == 'gated-gelu' else self.feed_forward_proj.split('-')[-1]

  @property
  def inner_dim(self) -> int:
    return self.num_heads * self.d_kv

  @property
  def wo_float32(self) -> bool:
    """Whether the feed-forward output projections stay float32 under half-precision weights."""
    half = any(jnp.dtype(self.param_dtype) == jnp.dtype(h) for h in HALF)
    if self.keep_wo_float32 is None:
      return jnp.dtype(self.param_dtype) == jnp.dtype(jnp.float16)
    return half and self.keep_wo_float32

  @classmethod
  def from_hf(cls, config: Mapping[str, Any], **runtime) -> 'T5Config':
    """From a Hugging Face `config.json` (keys the encoder does not use are ignored)."""
    fields = {f.name for f in dataclasses.fields(cls)} - {'dtype', 'param_dtype', 'keep_wo_float32'}
    cfg = cls(**{k: config[k] for k in fields if k in config}, **runtime)
    act = config.get('dense_act_fn')
    if act is not None and act != cfg.dense_act_fn:
      raise ValueError(f'T5 config: dense_act_fn {act!r} contradicts feed_forward_proj {cfg.feed_forward_proj!r}')
    if config.get('is_gated_act') is not None and bool(config['is_gated_act']) != cfg.is_gated_act:
      raise ValueError(f'T5 config: is_gated_act {config["is_gated_act"]} contradicts feed_forward_proj '
                       f'{cfg.feed_forward_proj!r}')
    return cfg


def relative_position_buckets(query_length: int, key_length: int, num_buckets: int = 32,
                              max_distance: int = 128) -> np.ndarray:
  """T5's bidirectional bucket of (key - query) positions, (query_length, key_length) int32.

  Half the buckets per direction; distances below a quarter of `num_buckets` get their own bucket,
  larger ones log-spaced up to `max_distance`. Float32 arithmetic as the original (the truncation
  to int decides the bucket at exact powers of two).
  """
  rel = np.arange(key_length)[None, :] - np.arange(query_length)[:, None]
  half = num_buckets // 2
  buckets = (rel > 0).astype(np.int64) * half
  n = np.abs(rel)
  max_exact = half // 2
  with np.errstate(divide='ignore'):
    ratio = (n.astype(np.float32) / np.float32(max_exact))
    logv = np.log(ratio.astype(np.float64)).astype(np.float32)  # correctly rounded float32 log
  scaled = logv / np.float32(math.log(max_distance / max_exact)) * np.float32(half - max_exact)
  large = max_exact + np.where(n < max_exact, 0, scaled).astype(np.int64)
  large = np.minimum(large, half - 1)
  return (buckets + np.where(n < max_exact, n, large)).astype(np.int32)


class RMSNorm(nnx.Module):
  """T5LayerNorm: x / sqrt(mean(x^2) + eps) with the mean square in float32, then the weight (the
  normalised value is cast to the weight's dtype first when that is half precision)."""

  def __init__(self, dim: int, eps: float, cfg: T5Config):
    self.scale = nnx.Param(jnp.ones((dim,), cfg.param_dtype))
    self.eps = eps

  def __call__(self, x):
    xf = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    y = xf * jax.lax.rsqrt(jnp.mean(jnp.square(xf), axis=-1, keepdims=True) + self.eps)
    scale = self.scale[...]
    if any(scale.dtype == jnp.dtype(h) for h in HALF):
      y = y.astype(scale.dtype)
    return scale * y


def _linear(din: int, dout: int, cfg: T5Config, rngs: nnx.Rngs, *, float32: bool = False) -> nnx.Linear:
  """A bias-free nn.Linear; `float32` keeps weights and matmul in float32 (the kept `wo`)."""
  if float32:
    return layers.linear(din, dout, rngs=rngs, use_bias=False, dtype=None, param_dtype=jnp.float32)
  return layers.linear(din, dout, rngs=rngs, use_bias=False, dtype=cfg.dtype, param_dtype=cfg.param_dtype)


class SelfAttention(nnx.Module):
  def __init__(self, cfg: T5Config, *, rngs: nnx.Rngs):
    self.num_heads, self.d_kv = cfg.num_heads, cfg.d_kv
    self.q = _linear(cfg.d_model, cfg.inner_dim, cfg, rngs)
    self.k = _linear(cfg.d_model, cfg.inner_dim, cfg, rngs)
    self.v = _linear(cfg.d_model, cfg.inner_dim, cfg, rngs)
    self.o = _linear(cfg.inner_dim, cfg.d_model, cfg, rngs)

  def __call__(self, x, bias):
    """x (B, L, d_model); bias (B or 1, heads, L, L) float32: position bias plus mask."""
    b, n, _ = x.shape
    q, k, v = (p(x).reshape(b, n, self.num_heads, self.d_kv) for p in (self.q, self.k, self.v))
    scores = jnp.einsum('bqhd,bkhd->bhqk', q, k, preferred_element_type=jnp.float32) + bias  # no 1/sqrt(d)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    out = jnp.einsum('bhqk,bkhd->bqhd', probs, v, preferred_element_type=jnp.float32).astype(v.dtype)
    return self.o(out.reshape(b, n, self.num_heads * self.d_kv))


class FeedForward(nnx.Module):
  """T5DenseGatedActDense (wi_0, wi_1, wo) or T5DenseActDense (wi, wo)."""

  def __init__(self, cfg: T5Config, *, rngs: nnx.Rngs):
    self.gated = cfg.is_gated_act
    self.act = ACTIVATIONS[cfg.dense_act_fn]
    if self.gated:
      self.wi_0 = _linear(cfg.d_model, cfg.d_ff, cfg, rngs)
      self.wi_1 = _linear(cfg.d_model, cfg.d_ff, cfg, rngs)
    else:
      self.wi = _linear(cfg.d_model, cfg.d_ff, cfg, rngs)
    self.wo = _linear(cfg.d_ff, cfg.d_model, cfg, rngs, float32=cfg.wo_float32)

  def __call__(self, x):
    h = self.act(self.wi_0(x)) * self.wi_1(x) if self.gated else self.act(self.wi(x))
    return self.wo(h.astype(self.wo.kernel.dtype))    # as transformers: to wo's dtype first


class Block(nnx.Module):
  def __init__(self, cfg: T5Config, *, rngs: nnx.Rngs):
    self.attn_norm = RMSNorm(cfg.d_model, cfg.layer_norm_epsilon, cfg)
    self.attn = SelfAttention(cfg, rngs=rngs)
    self.ffn_norm = RMSNorm(cfg.d_model, cfg.layer_norm_epsilon, cfg)
    self.ffn = FeedForward(cfg, rngs=rngs)

  def __call__(self, x, bias):
    x = x + self.attn(self.attn_norm(x), bias).astype(x.dtype)
    return x + self.ffn(self.ffn_norm(x)).astype(x.dtype)


class T5Encoder(nnx.Module):
  """`T5EncoderModel`: (input_ids (B, L), attention_mask (B, L) or None) -> last hidden state."""

  def __init__(self, config: T5Config, *, rngs: nnx.Rngs):
    cfg = self.config = config
    embed_init = nnx.initializers.normal(1.0)
    self.shared = nnx.Embed(cfg.vocab_size, cfg.d_model, embedding_init=embed_init, param_dtype=cfg.param_dtype,
                            rngs=rngs)
    # Hugging Face keeps this in block 0's attention; every layer adds the same bias.
    self.relative_attention_bias = nnx.Embed(cfg.relative_attention_num_buckets, cfg.num_heads,
                                             embedding_init=embed_init, param_dtype=cfg.param_dtype, rngs=rngs)
    self.blocks = nnx.List([Block(cfg, rngs=rngs) for _ in range(cfg.num_layers)])
    self.final_norm = RMSNorm(cfg.d_model, cfg.layer_norm_epsilon, cfg)

  def position_bias(self, length: int):
    """(1, heads, L, L) float32."""
    cfg = self.config
    buckets = relative_position_buckets(length, length, cfg.relative_attention_num_buckets,
                                        cfg.relative_attention_max_distance)
    values = self.relative_attention_bias.embedding[...][jnp.asarray(buckets)]   # (L, L, heads)
    return values.transpose(2, 0, 1)[None].astype(jnp.float32)

  def __call__(self, input_ids, attention_mask=None):
    _, n = input_ids.shape
    bias = self.position_bias(n)
    if attention_mask is not None:
      masked = jnp.asarray(attention_mask)[:, None, None, :] == 0
      bias = bias + jnp.where(masked, jnp.finfo(jnp.float32).min, 0.0).astype(jnp.float32)
    # The residual stream is float32 (Hugging Face's becomes float32 after the first float32 `wo`).
    x = self.shared.embedding[...][input_ids].astype(jnp.float32)
    for block in self.blocks:
      x = block(x, bias)
    return self.final_norm(x)


@nnx.jit
def encode(model: T5Encoder, input_ids, attention_mask):
  """Jitted `model(input_ids, attention_mask)`."""
  return model(input_ids, attention_mask)


# Tensor parallelism along `model` (Megatron-style: q/k/v and wi split their outputs, i.e. the heads
# and the FFN width; o and wo their inputs) and FSDP along `data` for the rest, in the rule format of
# `jaxrestore.train.sharding` (use with rules='fsdp_tp', model_rules=SHARDING_RULES). T5-XXL's 64
# heads and d_ff 10240 divide by 2, 4 and 8.
SHARDING_RULES = (
    (r'.*/attn/(q|k|v)/kernel', P('data', 'model')),
    (r'.*/attn/o/kernel', P('model', 'data')),
    (r'.*/ffn/(wi|wi_0|wi_1)/kernel', P('data', 'model')),
    (r'.*/ffn/wo/kernel', P('model', 'data')),
    (r'.*', 'fsdp'),
)


# ----- checkpoints -------------------------------------------------------------------------------------

_BLOCK = r'encoder\.block\.(\d+)\.layer\.'
TORCH_PARAMS = ParamMap(rules=(
    Rule(r'shared\.weight', 'shared.embedding'),
    Rule(r'encoder\.block\.0\.layer\.0\.SelfAttention\.relative_attention_bias\.weight',
         'relative_attention_bias.embedding'),
    Rule(_BLOCK + r'0\.SelfAttention\.(q|k|v|o)\.weight', r'blocks.\1.attn.\2.kernel', linear_oi_to_io),
    Rule(_BLOCK + r'0\.layer_norm\.weight', r'blocks.\1.attn_norm.scale'),
    Rule(_BLOCK + r'1\.DenseReluDense\.(wi|wi_0|wi_1|wo)\.weight', r'blocks.\1.ffn.\2.kernel', linear_oi_to_io),
    Rule(_BLOCK + r'1\.layer_norm\.weight', r'blocks.\1.ffn_norm.scale'),
    Rule(r'encoder\.final_layer_norm\.weight', 'final_norm.scale'),
))
