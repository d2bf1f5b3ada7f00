"""Restoration losses on NHWC images; computed in float32 whatever the compute dtype.

  * `l1`: mean |x - y| (SwinIR SR, HAIR/PromptIR).
  * `charbonnier`: mean sqrt((x - y)^2 + eps^2) (SwinIR denoising/JPEG with eps=1e-9, as KAIR's
    `CharbonnierLoss`; the SwinIR paper states eps=1e-3).
  * `fft`: mean |(|F(x)| - |F(y)|)| of the 2-D real FFT magnitudes over H, W (a frequency term as in
    FFTformer/ELAN-style training), normalised by sqrt(H W) so its scale does not grow with the patch.
  * `mse`: mean (x - y)^2 (DnCNN's paper loss, up to a factor 1/2).

The `loss` config maps names to weights, e.g. {'charbonnier': 1.0, 'fft': 0.05}; a weight may be a
dict {'weight': w, 'eps': e} for parametrised terms.
"""
from __future__ import annotations

from typing import Callable

import jax.numpy as jnp


def l1(pred, target):
  return jnp.mean(jnp.abs(pred - target))


def mse(pred, target):
  return jnp.mean(jnp.square(pred - target))


def charbonnier(pred, target, eps: float = 1e-9):
  return jnp.mean(jnp.sqrt(jnp.square(pred - target) + eps * eps))


def fft(pred, target):
  h, w = pred.shape[1:3]
  mag = lambda x: jnp.abs(jnp.fft.rfft2(x, axes=(1, 2)))
  return jnp.mean(jnp.abs(mag(pred) - mag(target))) / jnp.sqrt(float(h * w))


LOSSES: dict[str, Callable] = {'l1': l1, 'mse': mse, 'charbonnier': charbonnier, 'fft': fft}


def make_loss(spec) -> Callable:
  """(pred, target) -> (total, {name: term}) from {name: weight | {'weight': w, **kwargs}}."""
  terms = []
  for name, value in dict(spec).items():
    if name not in LOSSES:
      raise ValueError(f'unknown loss {name!r}; known: {sorted(LOSSES)}')
    kwargs = dict(value) if isinstance(value, dict) else {'weight': value}
    weight = float(kwargs.pop('weight', 1.0))
    if weight:
      terms.append((name, weight, LOSSES[name], kwargs))
  if not terms:
    raise ValueError('the loss has no term with a non-zero weight')

  def loss(pred, target):
    pred, target = pred.astype(jnp.float32), target.astype(jnp.float32)
    parts = {name: fn(pred, target, **kw) for name, _, fn, kw in terms}
    total = sum(weight * parts[name] for name, weight, _, _ in terms)
    return total, parts

  return loss
