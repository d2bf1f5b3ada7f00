"""Layers that reproduce PyTorch semantics in NHWC, shared by all models."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx


def torch_uniform_init(fan_in: int):
  """PyTorch's default Conv/Linear bias init: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
  bound = 1.0 / math.sqrt(max(fan_in, 1))

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


# PyTorch's default kaiming_uniform(a=sqrt(5)) weight init is U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
torch_kernel_init = nnx.initializers.variance_scaling(1.0 / 3.0, 'fan_in', 'uniform')


def conv2d(in_features: int, out_features: int, kernel_size: int, *, rngs: nnx.Rngs,
           padding: int | None = None, groups: int = 1, use_bias: bool = True,
           dtype=None, param_dtype=jnp.float32, precision=None) -> nnx.Conv:
  """A stride-1 Conv2d with PyTorch's zero padding (kernel_size // 2 by default) and init."""
  pad = kernel_size // 2 if padding is None else padding
  fan_in = in_features // groups * kernel_size * kernel_size
  return nnx.Conv(in_features, out_features, (kernel_size, kernel_size), padding=((pad, pad), (pad, pad)),
                  feature_group_count=groups, use_bias=use_bias, kernel_init=torch_kernel_init,
                  bias_init=torch_uniform_init(fan_in), dtype=dtype, param_dtype=param_dtype,
                  precision=precision, rngs=rngs)


def linear(in_features: int, out_features: int, *, rngs: nnx.Rngs, use_bias: bool = True,
           kernel_init=None, bias_init=None, dtype=None, param_dtype=jnp.float32,
           precision=None) -> nnx.Linear:
  return nnx.Linear(in_features, out_features, use_bias=use_bias,
                    kernel_init=kernel_init or torch_kernel_init,
                    bias_init=bias_init or torch_uniform_init(in_features), dtype=dtype,
                    param_dtype=param_dtype, precision=precision, rngs=rngs)


def layer_norm(num_features: int, *, rngs: nnx.Rngs, epsilon: float = 1e-5, dtype=None,
               param_dtype=jnp.float32) -> nnx.LayerNorm:
  """torch.nn.LayerNorm: eps 1e-5 and a two-pass variance (Flax's fast variance is not)."""
  return nnx.LayerNorm(num_features, epsilon=epsilon, use_fast_variance=False, dtype=dtype,
                       param_dtype=param_dtype, rngs=rngs)


def pixel_shuffle(x: jax.Array, factor: int) -> jax.Array:
  """torch.nn.PixelShuffle on NHWC: input channel c*r*r + i*r + j lands at (h*r+i, w*r+j, c)."""
  b, h, w, c = x.shape
  out_c = c // (factor * factor)
  x = x.reshape(b, h, w, out_c, factor, factor)
  x = x.transpose(0, 1, 4, 2, 5, 3)
  return x.reshape(b, h * factor, w * factor, out_c)


def pixel_unshuffle(x: jax.Array, factor: int) -> jax.Array:
  """torch.nn.PixelUnshuffle on NHWC, the inverse of `pixel_shuffle`."""
  b, h, w, c = x.shape
  x = x.reshape(b, h // factor, factor, w // factor, factor, c)
  x = x.transpose(0, 1, 3, 5, 2, 4)
  return x.reshape(b, h // factor, w // factor, c * factor * factor)


def upsample_nearest(x: jax.Array, factor: int) -> jax.Array:
  """F.interpolate(mode='nearest') for an integer factor."""
  return jnp.repeat(jnp.repeat(x, factor, axis=1), factor, axis=2)


def pad_to_multiple(x: jax.Array, multiple: int, mode: str = 'reflect') -> jax.Array:
  """Pads H and W at the bottom/right up to a multiple (F.pad(..., mode) semantics)."""
  _, h, w, _ = x.shape
  ph, pw = (-h) % multiple, (-w) % multiple
  if not (ph or pw):
    return x
  if mode == 'reflect' and (ph >= h or pw >= w):
    raise ValueError(f'image of {h}x{w} pixels is too small to reflect-pad to a multiple of '
                     f'{multiple}: reflect padding by {ph} rows and {pw} columns needs more rows '
                     f'and columns than that')
  return jnp.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)), mode=mode)
