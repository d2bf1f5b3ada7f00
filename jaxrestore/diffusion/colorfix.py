"""Colour correction of a restored image against a reference (DreamClear's `diffusion/utils/align_color.py`,
after StableSR): keep the restored image's high frequencies and take the reference's low ones (wavelet),
or match per-channel mean and standard deviation (AdaIN). Images are NHWC float arrays."""
from __future__ import annotations

import jax
import jax.numpy as jnp

# The 3x3 binomial kernel [1 2 1]^T [1 2 1] / 16 of one a-trous wavelet level.
_TAPS = ((0.0625, 0.125, 0.0625), (0.125, 0.25, 0.125), (0.0625, 0.125, 0.0625))


def wavelet_blur(image: jax.Array, radius: int) -> jax.Array:
  """Depth-wise 3x3 binomial blur with dilation `radius` after replicate padding by `radius`
  (same size out). The original hardcodes 3 channels; any count works here."""
  _, h, w, _ = image.shape
  padded = jnp.pad(image, ((0, 0), (radius, radius), (radius, radius), (0, 0)), mode='edge')
  out = None
  for i in range(3):
    for j in range(3):
      term = padded[:, i * radius:i * radius + h, j * radius:j * radius + w, :] * jnp.asarray(_TAPS[i][j], image.dtype)
      out = term if out is None else out + term
  return out


def wavelet_decomposition(image: jax.Array, levels: int = 5) -> tuple[jax.Array, jax.Array]:
  """(high, low): low is the image blurred at radii 1, 2, ..., 2^(levels-1); high the sum of the
  details removed on the way (high + low == image up to rounding)."""
  high = jnp.zeros_like(image)
  low = image
  for i in range(levels):
    low = wavelet_blur(image, 2 ** i)
    high = high + (image - low)
    image = low
  return high, low


def wavelet_reconstruction(content: jax.Array, style: jax.Array) -> jax.Array:
  """High frequencies of `content` (the restored image) plus low frequencies of `style` (the
  reference, e.g. the SwinIR pre-restored image). test.py clamps the result to [0, 1] afterwards."""
  content_high, _ = wavelet_decomposition(content)
  _, style_low = wavelet_decomposition(style)
  return content_high + style_low


def _mean_std(x: jax.Array, eps: float):
  """Per-(batch, channel) mean and sqrt(unbiased variance + eps) over H x W."""
  flat = x.reshape(x.shape[0], -1, x.shape[-1])
  mean = flat.mean(axis=1)
  var = jnp.square(flat - mean[:, None]).sum(axis=1) / (flat.shape[1] - 1)
  return mean[:, None, None, :], jnp.sqrt(var + eps)[:, None, None, :]


def adaptive_instance_normalization(content: jax.Array, style: jax.Array, eps: float = 1e-5) -> jax.Array:
  """(content - mean_c) / std_c * std_s + mean_s, per channel (unbiased variance, as torch .var)."""
  style_mean, style_std = _mean_std(style, eps)
  content_mean, content_std = _mean_std(content, eps)
  return (content - content_mean) / content_std * style_std + style_mean
