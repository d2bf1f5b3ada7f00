"""On-the-fly training degradations: clean float32 HWC patch in [0, 1] + numpy Generator -> LQ patch.

Every random choice is drawn from the Generator the pipeline derives from (seed, global example
index), so a degradation is a pure function of its inputs and a resumed run sees the same data.

  * `GaussianNoise(sigma)`: AWGN, sigma on the 0..255 scale; a (lo, hi) pair draws sigma uniformly
    per patch (blind training, KAIR's DnCNN-B / FFDNet). Not clipped, as KAIR trains.
  * `ColoredNoise(sigma, exponent)`: Gaussian noise with power spectrum ∝ 1/|f|^exponent
    (`jaxrestore.kernels.colored_noise`), scaled to std sigma/255; both may be ranges.
  * `JPEG(quality)`: Pillow round trip byte-identical to the evaluation's cv2 protocol
    (`jaxrestore.eval.degrade.jpeg_compress`); a (lo, hi) pair draws an integer quality per patch.
  * `Mixture([(degradation, weight), ...])`: one component per patch (all-in-one training).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any

import numpy as np

Range = float | tuple[float, float]


def _draw(value, rng: np.random.Generator, *, integer: bool = False):
  if isinstance(value, (tuple, list)):
    lo, hi = value
    return int(rng.integers(int(lo), int(hi) + 1)) if integer else float(rng.uniform(lo, hi))
  return value


@dataclasses.dataclass(frozen=True)
class Identity:
  name = 'identity'

  def __call__(self, clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return clean


@dataclasses.dataclass(frozen=True)
class GaussianNoise:
  sigma: Range = 15.0
  name = 'gaussian'

  def __call__(self, clean, rng):
    sigma = _draw(self.sigma, rng)
    return clean + rng.standard_normal(clean.shape, dtype=np.float32) * np.float32(sigma / 255.0)


@functools.cache
def _colored_noise_fn():
  import jax
  try:
    from jaxrestore.kernels import colored_noise
  except ImportError:  # exported from the package __init__ in a later revision
    from jaxrestore.kernels.frequency import colored_noise
  return jax.jit(colored_noise, static_argnums=1)


@dataclasses.dataclass(frozen=True)
class ColoredNoise:
  sigma: Range = 15.0
  exponent: Range = 1.0   # 0 white, 1 pink, 2 brown
  name = 'colored'

  def __call__(self, clean, rng):
    import jax
    sigma, exponent = _draw(self.sigma, rng), _draw(self.exponent, rng)
    key = jax.random.key(int(rng.integers(0, 2**31 - 1)))
    unit = _colored_noise_fn()(key, (1, *clean.shape), np.float32(exponent))
    return clean + np.asarray(unit[0]) * np.float32(sigma / 255.0)


@dataclasses.dataclass(frozen=True)
class JPEG:
  quality: Range = 20
  name = 'jpeg'

  def __call__(self, clean, rng):
    from jaxrestore.eval.degrade import jpeg_compress
    quality = _draw(self.quality, rng, integer=True)
    img = np.clip(np.round(clean * 255.0), 0, 255).astype(np.uint8)
    mode = 'color' if img.shape[-1] == 3 else 'gray'
    out = jpeg_compress(img, quality, mode=mode)
    return (out.reshape(img.shape).astype(np.float32) / 255.0)


@dataclasses.dataclass(frozen=True)
class Mixture:
  components: tuple[Any, ...]
  weights: tuple[float, ...] | None = None
  name = 'mixture'

  def __call__(self, clean, rng):
    p = None if self.weights is None else np.asarray(self.weights, np.float64) / np.sum(self.weights)
    return self.components[int(rng.choice(len(self.components), p=p))](clean, rng)


KINDS = {'identity': Identity, 'none': Identity, 'gaussian': GaussianNoise, 'colored': ColoredNoise,
         'jpeg': JPEG, 'mixture': Mixture}


def make_degradation(spec) -> Any:
  """From config data: {'kind': 'gaussian', 'sigma': 15}, {'kind': 'jpeg', 'quality': [10, 40]},
  {'kind': 'mixture', 'components': [...], 'weights': [...]}; None = identity (paired data)."""
  if spec is None:
    return Identity()
  if callable(spec):
    return spec
  spec = dict(spec)
  kind = spec.pop('kind', None)
  if kind not in KINDS:
    raise ValueError(f'unknown degradation kind {kind!r}; known: {sorted(KINDS)}')
  if kind == 'mixture':
    components = tuple(make_degradation(c) for c in spec.pop('components'))
    weights = spec.pop('weights', None)
    if spec:
      raise ValueError(f'mixture degradation: unknown fields {sorted(spec)}')
    return Mixture(components, None if weights is None else tuple(float(w) for w in weights))
  fields = {f.name for f in dataclasses.fields(KINDS[kind])}
  if set(spec) - fields:
    raise ValueError(f'{kind} degradation: unknown fields {sorted(set(spec) - fields)}; known: {sorted(fields)}')
  return KINDS[kind](**{k: tuple(v) if isinstance(v, list) else v for k, v in spec.items()})


def radial_power_slope(noise: np.ndarray, fmin: float = 0.02, fmax: float = 0.4) -> float:
  """Least-squares slope of log power vs log |f| of HW(C) noise: ≈ -exponent for colored noise."""
  x = np.asarray(noise, np.float64)
  x = x[..., None] if x.ndim == 2 else x
  h, w = x.shape[:2]
  power = np.mean(np.abs(np.fft.rfft2(x, axes=(0, 1))) ** 2, axis=-1)
  fy = np.fft.fftfreq(h)[:, None]
  fx = np.fft.rfftfreq(w)[None, :]
  radius = np.sqrt(fy ** 2 + fx ** 2)
  keep = (radius >= fmin) & (radius <= fmax)
  return float(np.polyfit(np.log(radius[keep]), np.log(power[keep]), 1)[0])


__all__ = ['Identity', 'GaussianNoise', 'ColoredNoise', 'JPEG', 'Mixture', 'make_degradation',
           'radial_power_slope', 'KINDS']

