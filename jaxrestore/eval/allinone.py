"""The all-in-one evaluation protocol of PromptIR and HAIR (`test.py`, `utils/val_utils.py`,
`utils/dataset_utils.py`, `utils/image_utils.py` of va1shn9v/PromptIR and toummHus/HAIR).

Per image, as the original test code does:
  * read as RGB uint8 (`Image.open(path).convert('RGB')`) and centre-crop to a multiple of 16
    (`crop_img(base=16)`: the odd rows/columns are split, the extra one going to the bottom/right);
  * denoising: the input is made from the clean uint8 image as
    `np.clip(clean + np.random.randn(*clean.shape) * sigma, 0, 255).astype(np.uint8)`, i.e. float64
    noise, clipped, then truncated (not rounded) to uint8, drawn from ONE global stream seeded once
    (`np.random.seed(0)` at the start of test.py) that runs on across images and across the sigma
    15, 25, 50 passes; derain / dehaze: the degraded file is the input;
  * input and target are `ToTensor()`ed (uint8 / 255 in float32), the network output is clamped to
    [0, 1] (float32, never rounded to uint8) and scored against the float target with scikit-image:
    `peak_signal_noise_ratio(clean, restored, data_range=1)` and
    `structural_similarity(clean, restored, data_range=1, channel_axis=2)`, i.e. SSIM with a 7x7
    uniform window, sample covariance, K1 = 0.01, K2 = 0.03, per RGB channel then averaged, computed
    in float32 because the inputs are float32; averaged over the images.

`psnr` and `ssim` below re-implement those two scikit-image functions in numpy with the same
arithmetic (float32 data, float64 window sums as scipy's `uniform_filter` keeps them, float64
means), so they agree with scikit-image to the last few ulps.

How this differs from the SwinIR/KAIR protocol (`jaxrestore.eval.protocol`, `metrics`):
  * colour: PSNR/SSIM on RGB in [0, 1] here; SwinIR reports RGB and Y-channel (BT.601) scores;
  * quantisation: here the *noisy input* is clipped and truncated to uint8 (a -0.5/255 mean shift and
    less noise near black and white) and the *output* stays float; SwinIR adds float noise that is
    neither clipped nor quantised and rounds the *output* to uint8 before scoring;
  * SSIM: scikit-image's 7x7 uniform window with sample covariance here, MATLAB-style 11x11
    Gaussian window (sigma 1.5) in float64 there -- different numbers for the same image pair;
  * noise stream: one global stream across images (so results depend on the image order; the
    original uses os.listdir order) here, `np.random.seed(0)` per image there;
  * geometry: images centre-cropped to a multiple of 16 here, full images (padded for the
    network, cropped back) there.
Each of these moves PSNR by a few hundredths to tenths of a dB, and SSIM by more, so numbers from
the two protocols are not comparable and must not be mixed in one table: an all-in-one model's
"BSD68 sigma 25" under this protocol is not the same measurement as SwinIR's or DnCNN's.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from jaxrestore import imageio

TASKS = ('denoise', 'derain', 'dehaze')
SSIM_WINDOW = 7
K1, K2 = 0.01, 0.03


# ----- data preparation --------------------------------------------------------------------------

def crop_img(image: np.ndarray, base: int = 16) -> np.ndarray:
  """Centre crop to a multiple of `base` (the original's `crop_img`)."""
  h, w = image.shape[:2]
  crop_h, crop_w = h % base, w % base
  return image[crop_h // 2:h - crop_h + crop_h // 2, crop_w // 2:w - crop_w + crop_w // 2]


def read_rgb(path: str | os.PathLike) -> np.ndarray:
  """`Image.open(path).convert('RGB')`; a file that cannot be read is one ImageReadError naming it."""
  with imageio.open_image(path) as im:
    return np.array(im.convert('RGB'))


def add_gaussian_noise_uint8(clean: np.ndarray, sigma: float, rng: np.random.RandomState) -> np.ndarray:
  """The original's `_add_gaussian_noise`: float64 noise on uint8, clipped, truncated to uint8."""
  noise = rng.randn(*clean.shape)
  return np.clip(clean + noise * sigma, 0, 255).astype(np.uint8)


def to_tensor(image: np.ndarray) -> np.ndarray:
  """torchvision's ToTensor on uint8 HWC (float32 division by 255), kept HWC."""
  return image.astype(np.float32) / np.float32(255)


def official_target_path(degraded: str | os.PathLike, task: str) -> Path:
  """Ground truth of a degraded test image under the original's naming.

  derain: `<set>/input/rain-XXX.png` -> `<set>/target/norain-XXX.png`. (The original replaces
  'input' and 'rain' anywhere in the path string; only the folder and file name are rewritten here,
  so a parent folder called e.g. 'derain' keeps its name.)
  dehaze: `<set>/input/NAME_<anything>.png` -> `<set>/target/NAME.png`.
  """
  degraded = Path(degraded)
  if degraded.parent.name != 'input':
    raise ValueError(f'{degraded}: the official layout keeps degraded images in an "input" folder')
  target_dir = degraded.parent.parent / 'target'
  if task == 'derain':
    return target_dir / degraded.name.replace('rain', 'norain')
  if task == 'dehaze':
    return target_dir / (degraded.name.split('_')[0] + '.png')
  raise ValueError(f'task {task!r} has no official target naming; pass target_paths')


# ----- metrics (scikit-image semantics) -------------------------------------------------------------

def _float_type(dtype) -> type:
  """scikit-image's _supported_float_type: float16/float32 compute in float32, the rest in float64."""
  return np.float32 if np.dtype(dtype) in (np.float16, np.float32) else np.float64


def psnr(clean: np.ndarray, restored: np.ndarray, data_range: float = 1.0) -> float:
  """skimage.metrics.peak_signal_noise_ratio(clean, restored, data_range=...)."""
  ft = np.result_type(_float_type(clean.dtype), _float_type(restored.dtype))
  a, b = np.asarray(clean).astype(ft), np.asarray(restored).astype(ft)
  mse = np.mean((a - b) ** 2, dtype=np.float64)
  return float(10 * np.log10((data_range ** 2) / mse))


def _uniform_filter1d(x: np.ndarray, size: int, axis: int) -> np.ndarray:
  """scipy.ndimage.uniform_filter1d(mode='reflect'): a float64 running mean, first window summed in
  order, then `mean += (entering - leaving) / size`, exactly as scipy's C loop."""
  x = np.moveaxis(np.asarray(x, np.float64), axis, -1)
  n, left = x.shape[-1], size // 2
  xp = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(left, size - 1 - left)], mode='symmetric')
  first = xp[..., 0]
  for i in range(1, size):
    first = first + xp[..., i]
  steps = (xp[..., size:size + n - 1] - xp[..., :n - 1]) / size
  out = np.cumsum(np.concatenate([(first / size)[..., None], steps], axis=-1), axis=-1)
  return np.moveaxis(out, -1, axis)


def _uniform_filter(x: np.ndarray, size: int) -> np.ndarray:
  """scipy.ndimage.uniform_filter: one axis after the other, stored in x's dtype in between."""
  for axis in range(x.ndim):
    x = _uniform_filter1d(x, size, axis).astype(x.dtype)
  return x


def _ssim_2d(x: np.ndarray, y: np.ndarray, data_range: float, win_size: int) -> np.ndarray:
  f = lambda v: _uniform_filter(v, win_size)  # noqa: E731
  ux, uy = f(x), f(y)
  uxx, uyy, uxy = f(x * x), f(y * y), f(x * y)
  n = win_size ** x.ndim
  cov_norm = n / (n - 1)  # sample covariance
  vx = cov_norm * (uxx - ux * ux)
  vy = cov_norm * (uyy - uy * uy)
  vxy = cov_norm * (uxy - ux * uy)
  c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
  a1, a2 = 2 * ux * uy + c1, 2 * vxy + c2
  b1, b2 = ux ** 2 + uy ** 2 + c1, vx + vy + c2
  s = (a1 * a2) / (b1 * b2)
  pad = (win_size - 1) // 2
  return s[pad:-pad, pad:-pad].mean(dtype=np.float64)


def ssim(clean: np.ndarray, restored: np.ndarray, data_range: float = 1.0, *,
         channel_axis: int | None = -1, win_size: int = SSIM_WINDOW) -> float:
  """skimage.metrics.structural_similarity(clean, restored, data_range=..., channel_axis=...) with
  its defaults (7x7 uniform window, sample covariance); HW input needs channel_axis=None."""
  clean, restored = np.asarray(clean), np.asarray(restored)
  if clean.shape != restored.shape:
    raise ValueError(f'SSIM of differently shaped images {clean.shape} and {restored.shape}')
  ft = _float_type(clean.dtype)
  x, y = clean.astype(ft), restored.astype(ft)
  if channel_axis is None:
    if x.ndim != 2:
      raise ValueError(f'SSIM without channel_axis needs an HW image, got shape {x.shape}')
    return float(_ssim_2d(x, y, data_range, win_size))
  x, y = np.moveaxis(x, channel_axis, -1), np.moveaxis(y, channel_axis, -1)
  if min(x.shape[:2]) < win_size:
    raise ValueError(f'SSIM needs images of at least {win_size}x{win_size} pixels, got {x.shape[:2]}')
  per_channel = np.array([_ssim_2d(x[..., c], y[..., c], data_range, win_size) for c in range(x.shape[-1])], ft)
  return float(per_channel.mean())


def compute_psnr_ssim(restored: np.ndarray, clean: np.ndarray) -> tuple[float, float]:
  """The original's `compute_psnr_ssim` for one HWC RGB image: both clipped to [0, 1]."""
  restored, clean = np.clip(restored, 0, 1), np.clip(clean, 0, 1)
  return psnr(clean, restored, 1.0), ssim(clean, restored, 1.0, channel_axis=-1)


# ----- the protocol ----------------------------------------------------------------------------------

@dataclasses.dataclass
class AllInOneResult:
  task: str
  sigma: float | None
  names: list[str]
  psnr: list[float]
  ssim: list[float]

  @property
  def scores(self) -> dict[str, list[float]]:
    return {'psnr': self.psnr, 'ssim': self.ssim}

  def mean(self) -> dict[str, float]:
    return {'psnr': float(np.mean(self.psnr)), 'ssim': float(np.mean(self.ssim))}

  def as_dict(self) -> dict[str, Any]:
    return dict(protocol='all-in-one (PromptIR/HAIR test.py)', task=self.task, sigma=self.sigma,
                images=self.names, scores={'psnr': self.psnr, 'ssim': self.ssim}, mean=self.mean())


def evaluate_allinone(restore_fn: Callable[[np.ndarray], np.ndarray], image_paths: Iterable[str | os.PathLike],
                      *, task: str, sigma: float | None = None,
                      target_paths: Sequence[str | os.PathLike] | None = None,
                      rng: np.random.RandomState | None = None, seed: int = 0, base: int = 16,
                      on_image: Callable[[str, dict], None] | None = None) -> AllInOneResult:
  """Scores `restore_fn` (HWC float32 RGB in [0, 1] -> HWC RGB) under the all-in-one protocol.

  task 'denoise': `image_paths` are clean images, noised with `sigma` (0..255 scale) from `rng`.
    The original draws all noise from one stream seeded once with 0 and runs sigma 15, 25, 50 in
    that order over the same images: pass one `np.random.RandomState(0)` as `rng` to all three calls
    (and the images in the original's os.listdir order) to reproduce it; by default each call starts
    a fresh `RandomState(seed)`.
  task 'derain' / 'dehaze': `image_paths` are degraded images; their ground truths are
    `target_paths` (same order) or, by default, found with the original's naming
    (`official_target_path`).
  The network output is taken as float32, as the original's is, before clamping and scoring.
  """
  if task not in TASKS:
    raise ValueError(f'unknown all-in-one task {task!r}; expected one of {TASKS}')
  if task == 'denoise' and sigma is None:
    raise ValueError('task denoise needs sigma (noise level on the 0..255 scale)')
  image_paths = [Path(p) for p in image_paths]
  if target_paths is not None:
    target_paths = [Path(p) for p in target_paths]
    if len(target_paths) != len(image_paths):
      raise ValueError(f'{len(image_paths)} images but {len(target_paths)} target paths')
  rng = np.random.RandomState(seed) if rng is None else rng
  result = AllInOneResult(task, sigma if task == 'denoise' else None, [], [], [])
  for i, path in enumerate(image_paths):
    if task == 'denoise':
      clean = crop_img(read_rgb(path), base)
      degraded = add_gaussian_noise_uint8(clean, sigma, rng)
    else:
      target = target_paths[i] if target_paths is not None else official_target_path(path, task)
      degraded, clean = crop_img(read_rgb(path), base), crop_img(read_rgb(target), base)
    restored = np.asarray(restore_fn(to_tensor(degraded)), np.float32)
    if restored.shape != clean.shape:
      raise ValueError(f'{path.name}: restore_fn returned shape {restored.shape}, expected {clean.shape}')
    p, s = compute_psnr_ssim(restored, to_tensor(clean))
    result.names.append(path.name)
    result.psnr.append(p)
    result.ssim.append(s)
    if on_image:
      on_image(path.name, {'psnr': p, 'ssim': s})
  return result
