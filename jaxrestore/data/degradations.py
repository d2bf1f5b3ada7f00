"""On-the-fly training degradations: clean float32 HWC patch in [0, 1] + numpy Generator -> LQ patch.

Every random choice is drawn from the Generator the pipeline derives from (seed, global example
index), so a degradation is a pure function of its inputs and a resumed run sees the same data.

  * `GaussianNoise(sigma)`: AWGN, sigma on the 0..255 scale; a (lo, hi) pair draws sigma uniformly
    per patch (blind training, KAIR's DnCNN-B / FFDNet). Not clipped, as KAIR trains.
  * `ColoredNoise(sigma, exponent)`: Gaussian noise with power spectrum ∝ 1/|f|^exponent
    (`jaxrestore.kernels.colored_noise`), scaled to std sigma/255; both may be ranges.
  * `JPEG(quality)`: Pillow round trip byte-identical to the evaluation's cv2 protocol
    (`jaxrestore.eval.degrade.jpeg_compress`); a (lo, hi) pair draws an integer quality per patch.
  * `RainStreaks`: Rain100L-style synthetic rain, additive streaks (seeds drawn at a density,
    smeared along one random angle by a line kernel, softened), clipped.
  * `Haze`: the atmospheric scattering model I = J t + A (1 - t) with t = exp(-beta d) and a smooth
    random depth map d (a bicubically upsampled random grid plus a top-to-bottom ramp).
  * `GaussianBlur(sigma)` and `MotionBlur(length)` (a line kernel at a random angle).
  * `LowLight`: darkening (exposure and gamma) with Poisson–Gaussian sensor noise.
  * `Mixture([(degradation, weight), ...])`: one component per patch (all-in-one training).
All are functions of (clean, Generator) only, so fixed seeds give byte-identical outputs (tested
against pinned checksums).
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


def filter2d(img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
  """Correlates each channel of HWC `img` with a 2-D kernel (odd sides), reflect borders."""
  kh, kw = kernel.shape
  pad = ((kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0))
  xp = np.pad(img, pad, mode='reflect') if min(img.shape[:2]) > max(kh, kw) // 2 else np.pad(img, pad, mode='edge')
  out = np.zeros_like(img, dtype=np.float32)
  h, w = img.shape[:2]
  for i, j in zip(*np.nonzero(kernel)):
    out += np.float32(kernel[i, j]) * xp[i:i + h, j:j + w]
  return out


def gaussian_kernel(sigma: float) -> np.ndarray:
  radius = max(1, int(np.ceil(3 * sigma)))
  t = np.arange(-radius, radius + 1, dtype=np.float64)
  g = np.exp(-0.5 * (t / sigma) ** 2)
  k = np.outer(g, g)
  return (k / k.sum()).astype(np.float32)


def line_kernel(length: int, angle: float) -> np.ndarray:
  """A normalised anti-aliased line of `length` pixels through the centre at `angle` degrees."""
  size = int(length) | 1
  k = np.zeros((size, size), np.float64)
  c = size // 2
  dy, dx = -np.sin(np.deg2rad(angle)), np.cos(np.deg2rad(angle))
  for t in np.linspace(-(length - 1) / 2, (length - 1) / 2, 4 * int(length)):
    y, x = c + t * dy, c + t * dx
    y0, x0 = int(np.floor(y)), int(np.floor(x))
    for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
      for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
        if 0 <= yy < size and 0 <= xx < size:
          k[yy, xx] += wy * wx
  return (k / k.sum()).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class RainStreaks:
  density: Range = (0.002, 0.006)     # fraction of pixels that seed a streak
  length: Range = (10, 25)            # streak length in pixels
  angle: Range = (60.0, 120.0)        # degrees from horizontal (90 = vertical)
  intensity: Range = (0.6, 1.0)       # peak brightness added
  name = 'rain'

  def __call__(self, clean, rng):
    h, w = clean.shape[:2]
    density, intensity = _draw(self.density, rng), _draw(self.intensity, rng)
    length, angle = _draw(self.length, rng, integer=True), _draw(self.angle, rng)
    seeds = (rng.random((h, w), dtype=np.float32) < density).astype(np.float32)
    seeds *= rng.uniform(0.5, 1.0, (h, w)).astype(np.float32)
    streaks = filter2d(seeds[:, :, None], line_kernel(length, angle))[:, :, 0]
    streaks = filter2d(streaks[:, :, None], gaussian_kernel(0.6))[:, :, 0]
    streaks *= np.float32(intensity / max(float(streaks.max()), 1e-6))
    return np.clip(clean + streaks[:, :, None], 0.0, 1.0).astype(np.float32)


def smooth_field(h: int, w: int, rng: np.random.Generator, cells: int = 4) -> np.ndarray:
  """A smooth random field in [0, 1]: a (cells+1)^2 random grid upsampled bicubically."""
  from PIL import Image
  grid = rng.random((cells + 1, cells + 1)).astype(np.float32)
  field = np.asarray(Image.fromarray(grid, mode='F').resize((w, h), Image.BICUBIC), np.float32)
  lo, hi = float(field.min()), float(field.max())
  return (field - lo) / max(hi - lo, 1e-6)


@dataclasses.dataclass(frozen=True)
class Haze:
  beta: Range = (0.6, 1.8)            # scattering coefficient
  airlight: Range = (0.7, 1.0)        # global atmospheric light A
  name = 'haze'

  def __call__(self, clean, rng):
    h, w = clean.shape[:2]
    beta, airlight = _draw(self.beta, rng), _draw(self.airlight, rng)
    ramp = np.linspace(1.0, 0.3, h, dtype=np.float32)[:, None]  # farther towards the top
    depth = 0.6 * ramp + 0.4 * smooth_field(h, w, rng)
    t = np.exp(-beta * depth).astype(np.float32)[:, :, None]
    tint = np.float32(airlight) * (1.0 - 0.05 * rng.random(clean.shape[-1])).astype(np.float32)
    return (clean * t + tint * (1.0 - t)).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class GaussianBlur:
  sigma: Range = (0.8, 3.0)
  name = 'gaussian_blur'

  def __call__(self, clean, rng):
    return filter2d(clean, gaussian_kernel(_draw(self.sigma, rng)))


@dataclasses.dataclass(frozen=True)
class MotionBlur:
  length: Range = (5, 21)
  angle: Range = (0.0, 180.0)
  name = 'motion_blur'

  def __call__(self, clean, rng):
    length, angle = _draw(self.length, rng, integer=True), _draw(self.angle, rng)
    return filter2d(clean, line_kernel(length, angle))


@dataclasses.dataclass(frozen=True)
class LowLight:
  exposure: Range = (0.05, 0.3)       # scale of the linear intensity
  gamma: Range = (1.5, 2.5)           # darkening curve applied before scaling
  peak: Range = (50.0, 300.0)         # photons at full scale (Poisson shot noise)
  read_sigma: Range = (0.002, 0.01)   # Gaussian read noise (0..1 scale)
  name = 'low_light'

  def __call__(self, clean, rng):
    exposure, gamma = _draw(self.exposure, rng), _draw(self.gamma, rng)
    peak, read = _draw(self.peak, rng), _draw(self.read_sigma, rng)
    dark = np.float32(exposure) * np.power(np.clip(clean, 0.0, 1.0), np.float32(gamma))
    shot = rng.poisson(dark.astype(np.float64) * peak).astype(np.float32) / np.float32(peak)
    return np.clip(shot + rng.standard_normal(clean.shape, dtype=np.float32) * np.float32(read), 0.0, 1.0)


@dataclasses.dataclass(frozen=True)
class Mixture:
  components: tuple[Any, ...]
  weights: tuple[float, ...] | None = None
  name = 'mixture'

  def __call__(self, clean, rng):
    p = None if self.weights is None else np.asarray(self.weights, np.float64) / np.sum(self.weights)
    return self.components[int(rng.choice(len(self.components), p=p))](clean, rng)


KINDS = {'identity': Identity, 'none': Identity, 'gaussian': GaussianNoise, 'colored': ColoredNoise,
         'jpeg': JPEG, 'rain': RainStreaks, 'haze': Haze, 'gaussian_blur': GaussianBlur,
         'motion_blur': MotionBlur, 'low_light': LowLight, 'mixture': Mixture}


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


__all__ = ['Identity', 'GaussianNoise', 'ColoredNoise', 'JPEG', 'RainStreaks', 'Haze', 'GaussianBlur',
           'MotionBlur', 'LowLight', 'Mixture', 'make_degradation', 'radial_power_slope', 'KINDS']

