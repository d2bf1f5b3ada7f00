"""Layers that reproduce PyTorch semantics in NHWC, shared by all models."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
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


# ----- added for Restormer / PromptIR / HAIR ---------------------------------------------------------

class PointwiseConv(nnx.Module):
  """A 1x1 Conv2d (PyTorch init, HWIO kernel of shape (1, 1, in, out)) run as a matmul over channels:
  XLA:CPU runs 1x1 convolutions up to ~2x slower than the equivalent dot."""

  def __init__(self, in_features: int, out_features: int, *, rngs: nnx.Rngs, use_bias: bool = True,
               dtype=None, param_dtype=jnp.float32):
    self.kernel = nnx.Param(torch_kernel_init(rngs.params(), (1, 1, in_features, out_features), param_dtype))
    self.bias = (nnx.Param(torch_uniform_init(in_features)(rngs.params(), (out_features,), param_dtype))
                 if use_bias else None)
    self.dtype = dtype

  def __call__(self, x: jax.Array) -> jax.Array:
    dtype = self.dtype or jnp.result_type(x.dtype, self.kernel.dtype)
    y = jnp.einsum('bhwi,io->bhwo', x.astype(dtype), self.kernel[...][0, 0].astype(dtype))
    return y if self.bias is None else y + self.bias[...].astype(dtype)


def depthwise_conv2d(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """Depth-wise, stride-1, zero-padded ('same') convolution of NHWC `x` as a sum of shifted products.

  kernel: (kh, kw, C), or (B, kh, kw, C) for a different kernel per sample. XLA:CPU lowers
  `feature_group_count` convolutions about 20x slower than this fused elementwise form.
  """
  kh, kw = kernel.shape[-3:-1]
  _, h, w, _ = x.shape
  xp = jnp.pad(x, ((0, 0), (kh // 2, kh - 1 - kh // 2), (kw // 2, kw - 1 - kw // 2), (0, 0)))
  out = None
  for i in range(kh):
    for j in range(kw):
      tap = kernel[:, i, j][:, None, None, :] if kernel.ndim == 4 else kernel[i, j]
      term = xp[:, i:i + h, j:j + w, :] * tap
      out = term if out is None else out + term
  return out


class DepthwiseConv(nnx.Module):
  """nn.Conv2d(C, C, k, padding=k // 2, groups=C): kernel (k, k, 1, C) as nnx.Conv stores it."""

  def __init__(self, channels: int, kernel_size: int = 3, *, rngs: nnx.Rngs, use_bias: bool = True,
               dtype=None, param_dtype=jnp.float32):
    shape = (kernel_size, kernel_size, 1, channels)
    self.kernel = nnx.Param(torch_kernel_init(rngs.params(), shape, param_dtype))
    self.bias = (nnx.Param(torch_uniform_init(kernel_size ** 2)(rngs.params(), (channels,), param_dtype))
                 if use_bias else None)
    self.dtype = dtype

  def __call__(self, x: jax.Array) -> jax.Array:
    dtype = self.dtype or jnp.result_type(x.dtype, self.kernel.dtype)
    y = depthwise_conv2d(x.astype(dtype), self.kernel[...][:, :, 0, :].astype(dtype))
    return y if self.bias is None else y + self.bias[...].astype(dtype)


def group_norm(num_features: int, num_groups: int, *, rngs: nnx.Rngs, epsilon: float = 1e-5, dtype=None,
               param_dtype=jnp.float32) -> nnx.GroupNorm:
  """torch.nn.GroupNorm (contiguous channel groups, biased two-pass variance)."""
  return nnx.GroupNorm(num_features, num_groups=num_groups, epsilon=epsilon, use_fast_variance=False,
                       dtype=dtype, param_dtype=param_dtype, rngs=rngs)


def _linear_taps(in_size: int, out_size: int, dtype) -> tuple:
  """Source indices and weights of one axis of F.interpolate(mode='bilinear', align_corners=False),
  with PyTorch's CPU arithmetic (area_pixel_compute_source_index, guard_index_and_lambda) in `dtype`."""
  if in_size == out_size:  # PyTorch copies in this case
    idx = np.arange(out_size)
    return idx, idx, np.ones(out_size, dtype), np.zeros(out_size, dtype)
  t = np.dtype(dtype).type
  scale = t(in_size) / t(out_size)
  # PyTorch's CPU build contracts scale * (i + 0.5) - 0.5 into one fused multiply-add: evaluating it
  # in float64 and rounding once reproduces that exactly for float32.
  src = (np.float64(scale) * (np.arange(out_size) + 0.5) - 0.5).astype(dtype)
  src = np.maximum(src, t(0))
  i0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
  lam1 = np.clip(src - i0.astype(dtype), t(0), t(1))
  i1 = i0 + (i0 < in_size - 1)
  return i0, i1, t(1) - lam1, lam1


def resize_bilinear(x: jax.Array, size: tuple[int, int]) -> jax.Array:
  """F.interpolate(x, size, mode='bilinear', align_corners=False) (no antialias) on NHWC.

  Same source indices and weights as PyTorch's CPU kernel (bit for bit in float32) and its evaluation
  order, out = (x[h0, w0] l0w + x[h0, w1] l1w) l0h + (x[h1, w0] l0w + x[h1, w1] l1w) l1h, which
  agrees with PyTorch to an ulp or two (its build fuses some of these products into FMAs).
  jax.image.resize is not a substitute: it antialiases when downscaling and computes its weights
  differently.
  """
  _, in_h, in_w, _ = x.shape
  out_h, out_w = size
  wdtype = np.float64 if x.dtype == jnp.float64 else np.float32  # PyTorch's opmath type
  h0, h1, lh0, lh1 = _linear_taps(in_h, out_h, wdtype)
  w0, w1, lw0, lw1 = _linear_taps(in_w, out_w, wdtype)
  lw0, lw1 = (jnp.asarray(v.reshape(1, 1, -1, 1), x.dtype) for v in (lw0, lw1))
  lh0, lh1 = (jnp.asarray(v.reshape(1, -1, 1, 1), x.dtype) for v in (lh0, lh1))

  def along_width(rows):
    return rows[:, :, w0] * lw0 + rows[:, :, w1] * lw1

  return along_width(x[:, h0]) * lh0 + along_width(x[:, h1]) * lh1
