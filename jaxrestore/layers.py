"""Layers that reproduce PyTorch semantics in NHWC, shared by all models."""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


_SMALLEST_DRAW = 1 << 12


@functools.partial(jax.jit, static_argnums=(1, 2))
def _scaled_uniform_draw(key, size: int, dtype, minval, maxval, scale):
  return jax.random.uniform(key, (size,), dtype, minval, maxval) * scale


def uniform(key, shape, dtype=jnp.float32, minval=0.0, maxval=1.0, *, scale=None):
  """`jax.random.uniform(key, shape, dtype, minval, maxval)` (times `scale` if given), bit for bit,
  built from few compiled programs.

  Called eagerly, `jax.random.uniform` compiles one program per parameter shape: 73 for HAIR, about
  13 s of its 21 s random initialisation and 230 MiB of resident executables. Threefry bits are a
  function of the element index alone (`jax_threefry_partitionable`, JAX's default), so a draw of a
  power-of-two size holds the requested one as its prefix. Eagerly on CPU this draws that size and
  copies the prefix on the host; under tracing, on accelerators, or with the partitionable setting
  off it calls `jax.random.uniform` directly.
  """
  shape = tuple(int(d) for d in shape)
  size = math.prod(shape)
  direct = (isinstance(key, jax.core.Tracer) or not jax.config.jax_threefry_partitionable
            or jax.default_backend() != 'cpu' or not jnp.issubdtype(dtype, jnp.floating))
  if direct:
    out = jax.random.uniform(key, shape, dtype, minval, maxval)
    return out if scale is None else out * scale
  dtype = jnp.dtype(dtype)
  draw_size = max(_SMALLEST_DRAW, 1 << max(size - 1, 0).bit_length())
  as_dtype = lambda v: np.asarray(v, dtype)  # noqa: E731 -- the casts the direct path makes
  draw = _scaled_uniform_draw(key, draw_size, dtype, as_dtype(minval), as_dtype(maxval),
                              as_dtype(1.0 if scale is None else scale))
  return jax.device_put(_aligned_copy(np.asarray(draw)[:size]).reshape(shape))


def _aligned_copy(values: np.ndarray, alignment: int = 64) -> np.ndarray:
  """A copy at a 64-byte-aligned address, which `jax.device_put` adopts on CPU instead of copying
  again: the parameter then owns exactly its own values, not the whole power-of-two draw."""
  raw = np.empty(values.nbytes + alignment, np.uint8)
  start = -raw.ctypes.data % alignment
  out = raw[start:start + values.nbytes].view(values.dtype)
  out[...] = values
  return out


def torch_uniform_init(fan_in: int):
  """PyTorch's default Conv/Linear bias init: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
  bound = 1.0 / math.sqrt(max(fan_in, 1))

  def init(key, shape, dtype=jnp.float32):
    return uniform(key, shape, dtype, -bound, bound)

  return init


def torch_kernel_init(key, shape, dtype=jnp.float32):
  """PyTorch's default kaiming_uniform(a=sqrt(5)) weight init, U(-1/sqrt(fan_in), 1/sqrt(fan_in))
  with fan_in = everything but the last axis (HWIO / (in, out) kernels): the values of
  `nnx.initializers.variance_scaling(1/3, 'fan_in', 'uniform')`, drawn through `uniform`."""
  shape = tuple(int(d) for d in shape)
  if len(shape) < 2:
    raise ValueError(f'torch_kernel_init: kernel shape {shape} has no input axis')
  fan_in = math.prod(shape[:-1])
  variance = np.asarray((1.0 / 3.0) / fan_in, dtype)
  return uniform(key, shape, dtype, -1.0, 1.0, scale=np.sqrt(np.asarray(3, dtype) * variance))


def _accumulating_in_float32(op):
  """`op` (`lax.dot_general` or `lax.conv_general_dilated`) with float16/bfloat16 operands of one
  dtype accumulated in float32 and rounded once to that dtype.

  XLA:CPU runs a bf16 × bf16 → float32 product natively (AVX-512 BF16), at 2–2.4× the rate of a
  bf16-result product, which it computes from float32 copies of its operands anyway
  (`python benchmarks/bf16_gemm_cpu.py`). Accelerators accumulate bf16 products in float32 as well."""
  @functools.wraps(op)
  def accumulating(lhs, rhs, *args, preferred_element_type=None, **kwargs):
    dtype = jnp.dtype(lhs.dtype)
    if (preferred_element_type is None and dtype == rhs.dtype and jnp.issubdtype(dtype, jnp.floating)
        and dtype.itemsize < 4):
      return op(lhs, rhs, *args, preferred_element_type=jnp.float32, **kwargs).astype(dtype)
    return op(lhs, rhs, *args, preferred_element_type=preferred_element_type, **kwargs)
  return accumulating


dot_general = _accumulating_in_float32(jax.lax.dot_general)
conv_general_dilated = _accumulating_in_float32(jax.lax.conv_general_dilated)


def exact_gelu(x):
  """torch.nn.GELU(): x·Φ(x) with the exact erf. float16/bfloat16 inputs are evaluated in float32
  and rounded once, which is more accurate and, on XLA:CPU, faster than a bfloat16 erf."""
  dtype = jnp.dtype(x.dtype)
  if jnp.issubdtype(dtype, jnp.floating) and dtype.itemsize < 4:
    return jax.nn.gelu(x.astype(jnp.float32), approximate=False).astype(dtype)
  return jax.nn.gelu(x, approximate=False)


def conv2d(in_features: int, out_features: int, kernel_size: int, *, rngs: nnx.Rngs,
           padding: int | None = None, groups: int = 1, use_bias: bool = True,
           dtype=None, param_dtype=jnp.float32, precision=None) -> nnx.Conv:
  """A stride-1 Conv2d with PyTorch's zero padding (kernel_size // 2 by default) and init."""
  pad = kernel_size // 2 if padding is None else padding
  fan_in = in_features // groups * kernel_size * kernel_size
  return nnx.Conv(in_features, out_features, (kernel_size, kernel_size), padding=((pad, pad), (pad, pad)),
                  feature_group_count=groups, use_bias=use_bias, kernel_init=torch_kernel_init,
                  bias_init=torch_uniform_init(fan_in), dtype=dtype, param_dtype=param_dtype,
                  precision=precision, conv_general_dilated=conv_general_dilated, rngs=rngs)


def linear(in_features: int, out_features: int, *, rngs: nnx.Rngs, use_bias: bool = True,
           kernel_init=None, bias_init=None, dtype=None, param_dtype=jnp.float32,
           precision=None) -> nnx.Linear:
  return nnx.Linear(in_features, out_features, use_bias=use_bias,
                    kernel_init=kernel_init or torch_kernel_init,
                    bias_init=bias_init or torch_uniform_init(in_features), dtype=dtype,
                    param_dtype=param_dtype, precision=precision, dot_general=dot_general, rngs=rngs)


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

@jax.custom_vjp
def channel_matmul(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """x[..., i] @ kernel[i, o] over the last axis of x, with a backward laid out for XLA:CPU.

  Autodiff of the 4-D contraction gives a weight gradient that XLA:CPU runs as a transposed,
  non-library dot after copying the (larger) output gradient; here the smaller operand is
  transposed and the product is a plain (M, K) x (K, N) matmul.
  """
  return jnp.dot(x.reshape(-1, x.shape[-1]), kernel).reshape(*x.shape[:-1], kernel.shape[-1])


def _channel_matmul_fwd(x, kernel):
  return channel_matmul(x, kernel), (x, kernel)


def _channel_matmul_bwd(residuals, g):
  x, kernel = residuals
  x2, g2 = x.reshape(-1, x.shape[-1]), g.reshape(-1, g.shape[-1]).astype(x.dtype)
  dx = jnp.dot(g2, kernel.T.astype(g2.dtype)).reshape(x.shape)
  if x2.shape[1] <= g2.shape[1]:
    dk = jnp.dot(jax.lax.optimization_barrier(x2.T), g2)
  else:
    dk = jnp.dot(jax.lax.optimization_barrier(g2.T), x2).T
  return dx.astype(x.dtype), dk.astype(kernel.dtype)


channel_matmul.defvjp(_channel_matmul_fwd, _channel_matmul_bwd)


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
    y = channel_matmul(x.astype(dtype), self.kernel[...][0, 0].astype(dtype))
    return y if self.bias is None else y + self.bias[...].astype(dtype)


def _shifted_products(x: jax.Array, kernel: jax.Array, pad_top: int, pad_left: int) -> jax.Array:
  """sum_ij x[y + i - pad_top, x + j - pad_left] * kernel[i, j] with zeros outside: one fused pass.
  float16/bfloat16 inputs are summed in float32 and rounded once: rounding after every tap made
  XLA:CPU's fused pass convert back and forth per tap, which made Restormer's bf16 forward 3-4x
  slower than its float32 one (README: bfloat16 rows)."""
  dtype = jnp.dtype(x.dtype)
  if jnp.issubdtype(dtype, jnp.floating) and dtype.itemsize < 4:
    return _shifted_products(x.astype(jnp.float32), kernel.astype(jnp.float32), pad_top, pad_left).astype(dtype)
  kh, kw = kernel.shape[-3:-1]
  _, h, w, _ = x.shape
  xp = jnp.pad(x, ((0, 0), (pad_top, kh - 1 - pad_top), (pad_left, kw - 1 - pad_left), (0, 0)))
  out = None
  for i in range(kh):
    for j in range(kw):
      tap = kernel[:, i, j][:, None, None, :] if kernel.ndim == 4 else kernel[i, j]
      term = xp[:, i:i + h, j:j + w, :] * tap
      out = term if out is None else out + term
  return out


def _row_chunk(h: int, row_bytes: int, budget: int = 1 << 21) -> int:
  """The largest divisor of h whose rows (of row_bytes each) fit in about `budget` bytes."""
  best = 1
  for r in range(1, h + 1):
    if h % r == 0 and r * row_bytes <= budget:
      best = r
  return best


def _kernel_gradient(x: jax.Array, g: jax.Array, kh: int, kw: int, per_sample: bool) -> jax.Array:
  """d kernel[(b,) i, j, c] = sum over pixels of x shifted by (i, j) times g.

  Accumulated a few rows of one image at a time (halo included) so that the kh * kw passes over
  each chunk hit cache: as whole-tensor reductions they were memory-bound and took most of a
  Restormer training step on CPU.
  """
  b, h, w, c = x.shape
  acc = jnp.promote_types(x.dtype, jnp.float32)
  xp = jnp.pad(x, ((0, 0), (kh // 2, kh - 1 - kh // 2), (kw // 2, kw - 1 - kw // 2), (0, 0)))
  rows = _row_chunk(h, (w + kw) * c * x.dtype.itemsize * 2)

  def image(args):
    xi, gi = args

    def chunk(r, total):
      xc = jax.lax.dynamic_slice_in_dim(xi, r * rows, rows + kh - 1, axis=0)
      gc = jax.lax.dynamic_slice_in_dim(gi, r * rows, rows, axis=0)
      return total + jnp.stack([jnp.sum((xc[i:i + rows, j:j + w] * gc).astype(acc), axis=(0, 1))
                                for i in range(kh) for j in range(kw)])

    return jax.lax.fori_loop(0, h // rows, chunk, jnp.zeros((kh * kw, c), acc))

  per_image = jax.lax.map(image, (xp, g)).reshape(b, kh, kw, c)
  return per_image if per_sample else per_image.sum(axis=0)


@jax.custom_vjp
def depthwise_conv2d(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """Depth-wise, stride-1, zero-padded ('same') convolution of NHWC `x` as a sum of shifted products.

  kernel: (kh, kw, C), or (B, kh, kw, C) for a different kernel per sample. XLA:CPU lowers
  `feature_group_count` convolutions about 10x slower than this fused elementwise form. The
  gradient is written out (a depth-wise convolution of g with the flipped kernel, and chunked tap
  reductions): autodiff of the shifted slices materialises a padded copy per tap, about 10x slower.
  """
  kh, kw = kernel.shape[-3:-1]
  return _shifted_products(x, kernel, kh // 2, kw // 2)


def _depthwise_fwd(x, kernel):
  return depthwise_conv2d(x, kernel), (x, kernel)


def _depthwise_bwd(residuals, g):
  x, kernel = residuals
  kh, kw = kernel.shape[-3:-1]
  flipped = kernel[..., ::-1, ::-1, :]
  dx = _shifted_products(g.astype(x.dtype), flipped, kh - 1 - kh // 2, kw - 1 - kw // 2)
  dk = _kernel_gradient(x, g.astype(x.dtype), kh, kw, per_sample=kernel.ndim == 4)
  return dx.astype(x.dtype), dk.astype(kernel.dtype)


depthwise_conv2d.defvjp(_depthwise_fwd, _depthwise_bwd)


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
