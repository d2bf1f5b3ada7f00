"""The evaluation protocol of SwinIR's `main_test_swinir.py` (and KAIR's `main_test_dncnn.py`).

Per image: read the ground truth, make the low-quality input exactly as the original does
(Gaussian noise with `np.random.seed(0)` per image, drawn in BGR order for colour; JPEG at quality
q; the bicubic LR file for SR), pad it to a window multiple the way the official script does
(flip-concatenation, at least one extra row/column for windowed models), restore, crop, clip,
round to uint8 and score with PSNR / SSIM (and Y-channel and PSNR-B where the original reports
them), with the task's border crop.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
from PIL import Image

from . import degrade, metrics

IMAGE_SUFFIXES = ('.png', '.bmp', '.jpg', '.jpeg', '.tif', '.tiff', '.webp')
TASKS = ('gray_dn', 'color_dn', 'jpeg_car', 'color_jpeg_car', 'classical_sr', 'lightweight_sr', 'real_sr')


@dataclasses.dataclass(frozen=True)
class Protocol:
  task: str
  noise_level: float | None = None
  jpeg_quality: int | None = None
  scale: int = 1
  border: int = 0
  window: int | None = None      # pad input as main_test_swinir.py does; None = no padding
  float_psnr: bool = False       # SaoYan/DnCNN-PyTorch's test.py: PSNR on clamped floats, not uint8
  seed: int = 0

  def __post_init__(self):
    if self.task not in TASKS:
      raise ValueError(f'unknown task {self.task!r}; expected one of {TASKS}')
    if self.task.endswith('_dn') and self.noise_level is None:
      raise ValueError(f'task {self.task} needs a noise level (sigma on the 0..255 scale)')
    if 'jpeg' in self.task and self.jpeg_quality is None:
      raise ValueError(f'task {self.task} needs a JPEG quality')

  @property
  def color(self) -> bool:
    return self.task not in ('gray_dn', 'jpeg_car')


def protocol_for(preset, **overrides) -> Protocol:
  """The official protocol of a preset's task; keyword arguments override (e.g. noise_level)."""
  hp = preset.hyperparameters
  window = hp.get('window_size') if preset.architecture == 'swinir' else None
  fields = dict(task=preset.task, noise_level=preset.noise_level, jpeg_quality=preset.jpeg_quality,
                scale=preset.scale, border=preset.border, window=window)
  fields.update({k: v for k, v in overrides.items() if v is not None})
  return Protocol(**fields)


def list_images(folder: str | os.PathLike) -> list[Path]:
  folder = Path(folder)
  if not folder.is_dir():
    raise FileNotFoundError(f'test-set folder {folder} does not exist')
  files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
  if not files:
    raise FileNotFoundError(f'no images ({", ".join(IMAGE_SUFFIXES)}) in {folder}')
  return files


def read_uint8(path: Path, mode: str) -> np.ndarray:
  """mode 'L' = cv2.IMREAD_GRAYSCALE, 'RGB' = IMREAD_COLOR (in RGB order), None = IMREAD_UNCHANGED."""
  with Image.open(path) as im:
    if mode is None:
      mode = 'L' if im.mode in ('L', 'I;16', 'I', '1') else 'RGB'
    return np.asarray(im.convert(mode))


def make_pair(path: Path, protocol: Protocol, lq_folder: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
  """(low-quality float32 HWC in [0, 1] -- float64 for noise, as the original -- , uint8 HWC gt)."""
  task = protocol.task
  if task in ('gray_dn', 'color_dn'):
    gt = read_uint8(path, 'L' if task == 'gray_dn' else 'RGB')
    gt = gt[..., None] if gt.ndim == 2 else gt
    clean = gt.astype(np.float32) / 255.0
    lq = degrade.add_gaussian_noise(clean, protocol.noise_level, seed=protocol.seed)
    return lq, gt
  if task == 'jpeg_car':
    lq, gt = degrade.jpeg_roundtrip(read_uint8(path, None), protocol.jpeg_quality, mode='gray')
    return lq[..., None].astype(np.float32) / 255.0, gt[..., None]
  if task == 'color_jpeg_car':
    lq, gt = degrade.jpeg_roundtrip(read_uint8(path, 'RGB'), protocol.jpeg_quality, mode='color')
    return lq.astype(np.float32) / 255.0, gt
  if task in ('classical_sr', 'lightweight_sr'):
    if lq_folder is None:
      raise ValueError(f'task {task} needs the folder of low-resolution inputs (--lq)')
    lq_path = Path(lq_folder) / f'{path.stem}x{protocol.scale}{path.suffix}'
    if not lq_path.is_file():
      raise FileNotFoundError(f'low-resolution input {lq_path} for {path.name} not found')
    return read_uint8(lq_path, 'RGB').astype(np.float32) / 255.0, read_uint8(path, 'RGB')
  raise ValueError(f'task {task} has no ground truth to evaluate against')


def official_window_pad(x: np.ndarray, window: int) -> np.ndarray:
  """main_test_swinir.py's padding: append the flipped image, keep (h // window + 1) * window rows
  (so even a multiple of the window grows by one window), same for columns."""
  h, w = x.shape[:2]
  x = np.concatenate([x, x[::-1]], axis=0)[:(h // window + 1) * window]
  return np.concatenate([x, x[:, ::-1]], axis=1)[:, :(w // window + 1) * window]


@dataclasses.dataclass
class EvalResult:
  protocol: Protocol
  names: list[str]
  scores: dict[str, list[float]]

  def mean(self) -> dict[str, float]:
    return {k: float(np.mean(v)) for k, v in self.scores.items()}

  def as_dict(self) -> dict[str, Any]:
    return dict(protocol=dataclasses.asdict(self.protocol), images=self.names, scores=self.scores,
                mean=self.mean())


def evaluate(restore: Callable[[np.ndarray], np.ndarray], images: Iterable[Path], protocol: Protocol, *,
             lq_folder: Path | None = None, on_image: Callable[[str, dict], None] | None = None) -> EvalResult:
  """Scores `restore` (HWC float32 in [0,1] -> HWC float in [0,1], scaled for SR) on `images`."""
  names, scores = [], {}
  for path in images:
    lq, gt = make_pair(Path(path), protocol, lq_folder)
    h, w = lq.shape[:2]
    x = official_window_pad(lq, protocol.window) if protocol.window else lq
    out = np.asarray(restore(x.astype(np.float32)), np.float64)[:h * protocol.scale, :w * protocol.scale]
    gt = gt[:h * protocol.scale, :w * protocol.scale]
    out = np.clip(out, 0.0, 1.0)
    row = _score(out, gt, protocol)
    names.append(Path(path).name)
    for k, v in row.items():
      scores.setdefault(k, []).append(v)
    if on_image:
      on_image(Path(path).name, row)
  return EvalResult(protocol, names, scores)


def _score(out: np.ndarray, gt: np.ndarray, protocol: Protocol) -> dict[str, float]:
  border = protocol.border
  if protocol.float_psnr:  # PSNR on clamped floats with data range 1
    mse = np.mean((out - gt.astype(np.float64) / 255.0) ** 2)
    return {'psnr': float(10 * np.log10(1.0 / mse))}
  out8 = np.round(out * 255.0).astype(np.uint8)
  if out8.shape[-1] == 1:
    out8, gt = out8[..., 0], gt[..., 0]
  row = {'psnr': metrics.psnr(out8, gt, crop_border=border), 'ssim': metrics.ssim(out8, gt, crop_border=border)}
  if out8.ndim == 3:
    row['psnr_y'] = metrics.psnr(out8, gt, crop_border=border, test_y_channel=True)
    row['ssim_y'] = metrics.ssim(out8, gt, crop_border=border, test_y_channel=True)
  if 'jpeg' in protocol.task:
    row['psnrb'] = metrics.psnrb(out8, gt, crop_border=border)
    if out8.ndim == 3:
      row['psnrb_y'] = metrics.psnrb(out8, gt, crop_border=border, test_y_channel=True)
  return {k: float(v) for k, v in row.items()}
