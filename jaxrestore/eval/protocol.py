"""The official test protocol of every task a preset can have, keyed by task.

Each task names the published test code it reproduces (`TASKS[task].official`):

* gray_dn / color_dn / jpeg_car / color_jpeg_car / classical_sr / lightweight_sr: SwinIR's
  `main_test_swinir.py` (and KAIR's `main_test_dncnn.py`). Per image: read the ground truth, make the
  low-quality input exactly as the original does (Gaussian noise with `np.random.seed(0)` per image,
  drawn in BGR order for colour; JPEG at quality q; the bicubic LR file for SR), restore, crop,
  clip, round to uint8 and score PSNR / SSIM (and Y-channel and PSNR-B where the original reports
  them) with the task's border crop.
* real_sr / motion_deblur / real_dn / blind_restore: a folder of low-quality inputs and one of ground truths with
  the same file names; uint8 PSNR / SSIM on RGB and on Y (SwinIR's metrics; the original deblurring
  evaluation computes PSNR the same way but SSIM with MATLAB's 3-D `ssim`, which is not reproduced).
* derain: Restormer's `Deraining/test.py` + `evaluate_PSNR_SSIM.m`: uint8 output, PSNR and SSIM on
  MATLAB's `rgb2ycbcr` Y channel (rounded to uint8), 11x11 Gaussian SSIM.
* defocus_deblur / defocus_deblur_dual: Restormer's `test_*_defocus_deblur.py`: 16-bit inputs / 65535,
  output clamped and kept float, PSNR on [0, 1], scikit-image SSIM (7x7 uniform window), MAE. The
  dual-pixel network takes the left and right views concatenated on channels ([L RGB, R RGB]).
* all_in_one: PromptIR's / HAIR's `test.py` (`jaxrestore.eval.allinone`).

Models whose official script pads the input itself (`config.eval_pad_multiple`, e.g. SwinIR's
window) are padded here the same way (flip-concatenation to `(h // m + 1) * m`) and cropped back.
"""
from __future__ import annotations

import dataclasses
import io
import math
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from jaxrestore import datasets, imageio
from . import degrade, metrics

IMAGE_SUFFIXES = datasets.IMAGE_SUFFIXES
list_images = datasets.list_images


@dataclasses.dataclass(frozen=True)
class TaskSpec:
  """What a task needs and how it is scored."""
  name: str
  kind: str                 # 'synthetic' (degrade the ground truth), 'sr', 'paired', 'dual_pixel', 'all_in_one'
  scoring: str              # 'swinir', 'matlab_y', 'dpdd', 'allinone'
  options: frozenset        # the eval options the task reads (see OPTION_FLAGS)
  official: str             # the test code it reproduces
  color: bool | None = None  # None: as the image is

  @property
  def needs_noise(self) -> bool:
    return self.name.endswith('_dn') and self.kind == 'synthetic'


# Eval options a task may read, by their command-line flag.
OPTION_FLAGS = {'noise': '--noise', 'jpeg': '--jpeg', 'lq': '--lq', 'gt': '--gt', 'lq_right': '--lq-right',
                'float_psnr': '--float-psnr'}

_SWINIR = 'SwinIR main_test_swinir.py'
TASKS: dict[str, TaskSpec] = {t.name: t for t in [
    TaskSpec('gray_dn', 'synthetic', 'swinir', frozenset({'noise', 'float_psnr'}), _SWINIR + ' / KAIR main_test_dncnn.py',
             color=False),
    TaskSpec('color_dn', 'synthetic', 'swinir', frozenset({'noise', 'float_psnr'}), _SWINIR, color=True),
    TaskSpec('jpeg_car', 'synthetic', 'swinir', frozenset({'jpeg'}), _SWINIR, color=False),
    TaskSpec('color_jpeg_car', 'synthetic', 'swinir', frozenset({'jpeg'}), _SWINIR, color=True),
    TaskSpec('classical_sr', 'sr', 'swinir', frozenset({'lq'}), _SWINIR, color=True),
    TaskSpec('lightweight_sr', 'sr', 'swinir', frozenset({'lq'}), _SWINIR, color=True),
    TaskSpec('real_sr', 'paired', 'swinir', frozenset({'lq', 'gt'}), _SWINIR + ' (real_sr, scored against --gt)',
             color=True),
    TaskSpec('motion_deblur', 'paired', 'swinir', frozenset({'lq', 'gt'}),
             'Restormer Motion_Deblurring/test.py (PSNR as evaluate_gopro_hide.m)', color=True),
    TaskSpec('real_dn', 'paired', 'swinir', frozenset({'lq', 'gt'}), 'Restormer Denoising (SIDD), on image pairs',
             color=True),
    TaskSpec('blind_restore', 'paired', 'swinir', frozenset({'lq', 'gt'}),
             'DiffBIR stage-1 cleaner (no official scoring script): paired PSNR / SSIM as SwinIR computes them',
             color=True),
    TaskSpec('derain', 'paired', 'matlab_y', frozenset({'lq', 'gt'}),
             'Restormer Deraining/test.py + evaluate_PSNR_SSIM.m', color=True),
    TaskSpec('defocus_deblur', 'paired', 'dpdd', frozenset({'lq', 'gt'}),
             'Restormer Defocus_Deblurring/test_single_image_defocus_deblur.py', color=True),
    TaskSpec('defocus_deblur_dual', 'dual_pixel', 'dpdd', frozenset({'lq', 'lq_right', 'gt'}),
             'Restormer Defocus_Deblurring/test_dual_pixel_defocus_deblur.py', color=True),
    TaskSpec('all_in_one', 'all_in_one', 'allinone', frozenset({'noise', 'gt'}), 'PromptIR / HAIR test.py',
             color=True),
]}

# Folder layouts a --dataset folder may have, per task kind: (low-quality, ground truth[, right view]).
PAIRED_LAYOUTS = (('input', 'target'), ('lq', 'gt'), ('LQ', 'GT'), ('inputC', 'target'),
                  ('test_c/source', 'test_c/target'))
DUAL_LAYOUTS = (('test_l/source', 'test_c/target', 'test_r/source'), ('inputL', 'target', 'inputR'))


def get_task(task: str) -> TaskSpec:
  try:
    return TASKS[task]
  except KeyError:
    raise ValueError(f'unknown task {task!r}; expected one of {", ".join(TASKS)}') from None


@dataclasses.dataclass(frozen=True)
class Protocol:
  task: str
  noise_level: float | None = None
  jpeg_quality: int | None = None
  scale: int = 1
  border: int = 0
  window: int | None = None      # pad input as the official script does; None = no padding
  float_psnr: bool = False       # SaoYan/DnCNN-PyTorch's test.py: PSNR on clamped floats, not uint8
  seed: int = 0
  degradation: str | None = None  # all_in_one: 'denoise', 'derain' or 'dehaze'

  def __post_init__(self):
    spec = get_task(self.task)
    if spec.needs_noise and self.noise_level is None:
      raise ValueError(f'task {self.task} needs a noise level (sigma on the 0..255 scale)')
    if self.noise_level is not None and not 0 <= self.noise_level <= 255:
      raise ValueError(f'noise level must be in [0, 255] (sigma on the 0..255 scale), got {self.noise_level:g}')
    if 'jpeg' in self.task and self.jpeg_quality is None:
      raise ValueError(f'task {self.task} needs a JPEG quality')
    if self.jpeg_quality is not None and not 1 <= self.jpeg_quality <= 100:
      raise ValueError(f'JPEG quality must be in [1, 100], got {self.jpeg_quality}')
    if self.scale < 1:
      raise ValueError(f'scale must be at least 1, got {self.scale}')
    if self.float_psnr and not spec.needs_noise:
      raise ValueError(f'float PSNR (SaoYan/DnCNN-PyTorch) applies to Gaussian denoising only, not {self.task}')
    if spec.kind == 'all_in_one':
      from .allinone import TASKS as DEGRADATIONS
      if self.degradation not in DEGRADATIONS:
        raise ValueError(f'the all-in-one protocol needs a degradation ({" / ".join(DEGRADATIONS)}), '
                         f'got {self.degradation!r}')
      if self.degradation == 'denoise' and self.noise_level is None:
        raise ValueError('all-in-one denoising needs a noise level (sigma on the 0..255 scale)')

  @property
  def spec(self) -> TaskSpec:
    return TASKS[self.task]

  @property
  def color(self) -> bool:
    return self.spec.color is not False

  def label(self) -> str:
    """'gray_dn, sigma 25' -- what the numbers were measured under."""
    parts = [self.task if self.degradation is None else f'{self.task} {self.degradation}']
    if self.noise_level is not None:
      parts.append(f'sigma {self.noise_level:g}')
    if self.jpeg_quality is not None:
      parts.append(f'q {self.jpeg_quality}')
    if self.scale > 1:
      parts.append(f'x{self.scale}')
    if self.float_psnr:
      parts.append('float PSNR')
    return ', '.join(parts)


def protocol_for(preset, config=None, **overrides) -> Protocol:
  """The official protocol of a preset's task, padded as its model's official script pads
  (`config.eval_pad_multiple`; the preset's config when `config` is None). Keyword arguments
  override fields (e.g. noise_level); None values are ignored."""
  if config is None:
    from jaxrestore.registry import get_architecture
    config = get_architecture(preset.architecture).make_config(preset.hyperparameters)
  fields = dict(task=preset.task, noise_level=preset.noise_level, jpeg_quality=preset.jpeg_quality,
                scale=preset.scale, border=preset.border, window=config.eval_pad_multiple)
  fields.update({k: v for k, v in overrides.items() if v is not None})
  return Protocol(**fields)


# ----- test samples --------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Sample:
  """One scored image: its name and the files it is made from."""
  name: str
  gt: Path | None = None        # ground truth (synthetic tasks: the only file)
  lq: Path | None = None        # low-quality input (left view for dual-pixel)
  lq_right: Path | None = None  # dual-pixel right view

  def files(self) -> list[tuple[str, Path]]:
    """(role, path) of every file this sample reads."""
    return [(role, p) for role, p in (('gt', self.gt), ('lq', self.lq), ('lq_right', self.lq_right))
            if p is not None]


def _match(name: Path, folder: Path, what: str) -> Path:
  """The file in `folder` with the same name (or, failing that, the same stem) as `name`."""
  exact = folder / name.name
  if exact.is_file():
    return exact
  same_stem = [p for p in folder.iterdir() if p.stem == name.stem and p.suffix.lower() in IMAGE_SUFFIXES]
  if len(same_stem) == 1:
    return same_stem[0]
  raise FileNotFoundError(f'{what} for {name} not found: no {name.name} (or {name.stem}.*) in {folder}')


def sr_folders(dataset: Path, scale: int, lq: Path | None) -> tuple[Path, Path]:
  """(HR folder, LR folder) of an SR test set: --lq, or SwinIR's layout HR/ + LR_bicubic/X<scale>/."""
  hr = dataset / 'HR' if (dataset / 'HR').is_dir() else dataset
  if lq is None:
    candidate = hr.parent / 'LR_bicubic' / f'X{scale}'
    if not candidate.is_dir():
      raise FileNotFoundError(f'{dataset}: no low-resolution folder; pass --lq (files <name>x{scale}.<ext>) or '
                              f'use the layout HR/ + LR_bicubic/X{scale}/')
    lq = candidate
  return hr, lq


def paired_folders(dataset: Path, layouts: Sequence[tuple[str, ...]]) -> tuple[Path, ...]:
  for layout in layouts:
    if all((dataset / part).is_dir() for part in layout):
      return tuple(dataset / part for part in layout)
  wanted = ' or '.join(' + '.join(f'{p}/' for p in layout) for layout in layouts)
  raise FileNotFoundError(f'{dataset}: expected the sub-folders {wanted} (or pass the folders with --lq/--gt)')


def build_samples(protocol: Protocol, *, dataset: Path | None = None, lq: Path | None = None,
                  gt: Path | None = None, lq_right: Path | None = None) -> list[Sample]:
  """The samples of a test set, from a dataset folder (in a known layout) and/or explicit folders."""
  spec = protocol.spec
  if spec.kind == 'synthetic':
    if dataset is None:
      raise ValueError(f'task {protocol.task} needs --dataset (the clean images it degrades)')
    return [Sample(p.name, gt=p) for p in list_images(dataset)]
  if spec.kind == 'sr':
    if dataset is None:
      raise ValueError(f'task {protocol.task} needs --dataset (the high-resolution images)')
    hr, lq = sr_folders(dataset, protocol.scale, lq)
    samples = []
    for p in list_images(hr):
      lq_path = lq / f'{p.stem}x{protocol.scale}{p.suffix}'
      if not lq_path.is_file():
        raise FileNotFoundError(f'low-resolution input {lq_path} for {p.name} not found')
      samples.append(Sample(p.name, gt=p, lq=lq_path))
    return samples
  if spec.kind == 'all_in_one':
    if dataset is None:
      raise ValueError('the all-in-one protocol needs --dataset (clean images for denoise, degraded ones otherwise)')
    if protocol.degradation != 'denoise' and (dataset / 'input').is_dir():
      dataset = dataset / 'input'  # the official layout <set>/input + <set>/target, given as <set>
    images = list_images(dataset)
    if protocol.degradation == 'denoise':
      return [Sample(p.name, gt=p) for p in images]
    if gt is not None:
      return [Sample(p.name, lq=p, gt=_match(p, gt, 'ground truth')) for p in images]
    from .allinone import official_target_path
    return [Sample(p.name, lq=p, gt=official_target_path(p, protocol.degradation)) for p in images]
  if spec.kind == 'paired':
    if lq is None or gt is None:
      if dataset is None:
        raise ValueError(f'task {protocol.task} needs --lq DIR and --gt DIR, or --dataset DIR holding both')
      found_lq, found_gt = paired_folders(dataset, PAIRED_LAYOUTS)
      lq, gt = lq or found_lq, gt or found_gt
    return [Sample(p.name, lq=p, gt=_match(p, gt, 'ground truth')) for p in list_images(lq)]
  if spec.kind == 'dual_pixel':
    if lq is None or gt is None or lq_right is None:
      if dataset is None:
        raise ValueError(f'task {protocol.task} needs --lq LEFT_DIR --lq-right RIGHT_DIR --gt DIR, or --dataset '
                         f'DIR in the DPDD layout')
      found_lq, found_gt, found_right = paired_folders(dataset, DUAL_LAYOUTS)
      lq, gt, lq_right = lq or found_lq, gt or found_gt, lq_right or found_right
    return [Sample(p.name, lq=p, lq_right=_match(p, lq_right, 'right view'), gt=_match(p, gt, 'ground truth'))
            for p in list_images(lq)]
  raise ValueError(f'task {protocol.task}: unknown kind {spec.kind}')


# ----- reading ---------------------------------------------------------------------------------------

def read_array(source, mode: str | None, *, label=None, keep_16bit: bool = False,
               max_pixels: int | None = imageio.DEFAULT_MAX_PIXELS) -> np.ndarray:
  """mode 'L' = cv2.IMREAD_GRAYSCALE, 'RGB' = IMREAD_COLOR (in RGB order), None = gray stays gray.
  keep_16bit: 16-bit files come back as uint16 (IMREAD_UNCHANGED), as the 16-bit protocols read them."""
  label = label or source
  with imageio.open_image(source, label, max_pixels=max_pixels) as im:
    if keep_16bit and imageio.is_16bit(im):
      return _read_16bit(im, source, label, mode)
    if mode is None:
      mode = 'L' if im.mode in ('L', 'LA', 'I;16', 'I;16B', 'I;16L', 'I', '1') else 'RGB'
    try:
      return np.asarray(im.convert(mode))
    except Exception as e:  # noqa: BLE001 -- odd modes or palettes: one clear error naming the file
      raise imageio.ImageReadError(f'{label}: cannot convert a {im.mode} image to {mode} ({e})') from None


def _read_16bit(im, source, label, mode) -> np.ndarray:
  if im.mode.startswith('I;16'):
    gray = np.asarray(im).astype(np.uint16)
    return gray if mode in (None, 'L') else np.repeat(gray[..., None], 3, axis=2)
  try:
    import cv2
  except ImportError:
    raise imageio.ImageReadError(f'{label}: a 16-bit colour image, which Pillow decodes to 8 bits; install '
                                 f'opencv-python-headless to score it at full depth') from None
  data = source.getvalue() if isinstance(source, io.BytesIO) else Path(source).read_bytes()
  arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
  if arr is None or arr.ndim != 3 or arr.shape[2] < 3:
    raise imageio.ImageReadError(f'{label}: OpenCV cannot decode this 16-bit image')
  return np.ascontiguousarray(arr[:, :, 2::-1])


def read_uint8(path: Path, mode: str | None) -> np.ndarray:
  """Kept for callers of the SwinIR protocol's reader."""
  return read_array(path, mode)


def _as_float(arr: np.ndarray) -> np.ndarray:
  return arr.astype(np.float32) / (65535.0 if arr.dtype == np.uint16 else 255.0)


def make_pair(sample: Sample | Path, protocol: Protocol, lq_folder: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
  """(low-quality float HWC in [0, 1] -- float64 for noise, as the original --, ground truth HWC:
  uint8, or uint16 for the 16-bit protocols)."""
  if not isinstance(sample, Sample):  # a ground-truth path, as the SwinIR protocol takes it
    path = Path(sample)
    if protocol.spec.kind == 'sr':
      if lq_folder is None:
        raise ValueError(f'task {protocol.task} needs the folder of low-resolution inputs (--lq)')
      lq_path = Path(lq_folder) / f'{path.stem}x{protocol.scale}{path.suffix}'
      if not lq_path.is_file():
        raise FileNotFoundError(f'low-resolution input {lq_path} for {path.name} not found')
      sample = Sample(path.name, gt=path, lq=lq_path)
    elif protocol.spec.kind == 'synthetic':
      sample = Sample(path.name, gt=path)
    else:
      raise ValueError(f'task {protocol.task} takes image pairs; pass a Sample')
  task, kind = protocol.task, protocol.spec.kind
  if task in ('gray_dn', 'color_dn'):
    gt = read_array(sample.gt, 'L' if task == 'gray_dn' else 'RGB')
    gt = gt[..., None] if gt.ndim == 2 else gt
    clean = gt.astype(np.float32) / 255.0
    return degrade.add_gaussian_noise(clean, protocol.noise_level, seed=protocol.seed), gt
  if task == 'jpeg_car':
    lq, gt = degrade.jpeg_roundtrip(read_array(sample.gt, None), protocol.jpeg_quality, mode='gray')
    return lq[..., None].astype(np.float32) / 255.0, gt[..., None]
  if task == 'color_jpeg_car':
    lq, gt = degrade.jpeg_roundtrip(read_array(sample.gt, 'RGB'), protocol.jpeg_quality, mode='color')
    return lq.astype(np.float32) / 255.0, gt
  if kind == 'sr':
    return _as_float(read_array(sample.lq, 'RGB')), read_array(sample.gt, 'RGB')
  keep16 = protocol.spec.scoring == 'dpdd'
  if kind == 'paired':
    lq = _as_float(read_array(sample.lq, 'RGB', keep_16bit=keep16))
    return lq, read_array(sample.gt, 'RGB', keep_16bit=keep16)
  if kind == 'dual_pixel':
    left = _as_float(read_array(sample.lq, 'RGB', keep_16bit=True))
    right = _as_float(read_array(sample.lq_right, 'RGB', keep_16bit=True))
    if left.shape != right.shape:
      raise ValueError(f'{sample.name}: left view {left.shape[1]}x{left.shape[0]} and right view '
                       f'{right.shape[1]}x{right.shape[0]} differ in size')
    return np.concatenate([left, right], axis=2), read_array(sample.gt, 'RGB', keep_16bit=True)
  raise ValueError(f'task {task} has no ground truth to evaluate against')


def official_window_pad(x: np.ndarray, window: int) -> np.ndarray:
  """main_test_swinir.py's padding: append the flipped image, keep (h // window + 1) * window rows
  (so even a multiple of the window grows by one window), same for columns."""
  h, w = x.shape[:2]
  x = np.concatenate([x, x[::-1]], axis=0)[:(h // window + 1) * window]
  return np.concatenate([x, x[:, ::-1]], axis=1)[:, :(w // window + 1) * window]


# ----- scoring ---------------------------------------------------------------------------------------

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


def evaluate(restore: Callable[[np.ndarray], np.ndarray], images: Iterable[Path | Sample], protocol: Protocol, *,
             lq_folder: Path | None = None, on_image: Callable[[str, dict], None] | None = None) -> EvalResult:
  """Scores `restore` (HWC float32 in [0,1] -> HWC float in [0,1], scaled for SR) on `images`
  (ground-truth paths for the synthetic and SR tasks, or `Sample`s)."""
  if protocol.spec.kind == 'all_in_one':
    return _evaluate_allinone(restore, list(images), protocol, on_image)
  names, scores = [], {}
  for item in images:
    name = item.name if isinstance(item, Sample) else Path(item).name
    lq, gt = make_pair(item, protocol, lq_folder)
    h, w = lq.shape[:2]
    s = protocol.scale
    x = official_window_pad(lq, protocol.window) if protocol.window else lq
    out = np.asarray(restore(x.astype(np.float32)), np.float64)[:h * s, :w * s]
    if gt.shape[0] < h * s or gt.shape[1] < w * s:
      raise ValueError(f'{name}: ground truth of {gt.shape[1]}x{gt.shape[0]} pixels is smaller than the '
                       f'{w * s}x{h * s} output')
    gt = gt[:h * s, :w * s]
    if out.shape[2] != gt.shape[2]:
      raise ValueError(f'{name}: the model returned {out.shape[2]} channels, the ground truth has {gt.shape[2]}')
    row = score(np.clip(out, 0.0, 1.0), gt, protocol)
    names.append(name)
    for k, v in row.items():
      scores.setdefault(k, []).append(v)
    if on_image:
      on_image(name, row)
  return EvalResult(protocol, names, scores)


def _evaluate_allinone(restore, samples, protocol, on_image) -> EvalResult:
  from . import allinone
  samples = [s if isinstance(s, Sample) else Sample(Path(s).name, gt=Path(s)) for s in samples]
  denoise = protocol.degradation == 'denoise'
  paths = [s.gt if denoise else s.lq for s in samples]
  targets = None if denoise else [s.gt for s in samples]
  result = allinone.evaluate_allinone(restore, paths, task=protocol.degradation, sigma=protocol.noise_level,
                                      target_paths=targets, seed=protocol.seed, on_image=on_image)
  return EvalResult(protocol, result.names, {'psnr': result.psnr, 'ssim': result.ssim})


def score(out: np.ndarray, gt: np.ndarray, protocol: Protocol) -> dict[str, float]:
  """One image's scores under the task's metrics; `out` is float HWC clipped to [0, 1]."""
  scoring = protocol.spec.scoring
  if scoring == 'dpdd':
    return _score_dpdd(out, gt)
  if protocol.float_psnr:  # PSNR on clamped floats with data range 1
    mse = np.mean((out - gt.astype(np.float64) / 255.0) ** 2)
    return {'psnr': float(10 * np.log10(1.0 / mse))}
  out8 = np.round(out * 255.0).astype(np.uint8)
  if gt.dtype != np.uint8:
    gt = np.round(gt.astype(np.float64) / 257.0).astype(np.uint8)
  if scoring == 'matlab_y':
    return _score_matlab_y(out8, gt)
  return _score_swinir(out8, gt, protocol)


_score = score  # the name older callers use


def _score_swinir(out8: np.ndarray, gt: np.ndarray, protocol: Protocol) -> dict[str, float]:
  border = protocol.border
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


def matlab_y_uint8(rgb: np.ndarray) -> np.ndarray:
  """MATLAB's `rgb2ycbcr` Y of a uint8 RGB image: BT.601 on [16, 235], rounded to uint8 (imlincomb)."""
  rgb = rgb.astype(np.float64)
  y = rgb[..., 0] * (65.481 / 255) + rgb[..., 1] * (128.553 / 255) + rgb[..., 2] * (24.966 / 255) + 16.0
  return np.clip(np.floor(y + 0.5), 0, 255).astype(np.uint8)


def _score_matlab_y(out8: np.ndarray, gt: np.ndarray) -> dict[str, float]:
  """evaluate_PSNR_SSIM.m: PSNR and SSIM (11x11 Gaussian, 'valid') of the uint8 Y channels; RGB too."""
  if out8.shape[-1] == 1:
    y_out, y_gt = out8[..., 0], gt[..., 0]
  else:
    y_out, y_gt = matlab_y_uint8(out8), matlab_y_uint8(gt)
  row = {'psnr_y': metrics.psnr(y_out, y_gt), 'ssim_y': metrics.ssim(y_out, y_gt),
         'psnr': metrics.psnr(out8, gt), 'ssim': metrics.ssim(out8, gt)}
  return {k: float(v) for k, v in row.items()}


def _score_dpdd(out: np.ndarray, gt: np.ndarray) -> dict[str, float]:
  """Restormer's Defocus_Deblurring/utils.py on float32 images in [0, 1]: PSNR, SSIM, MAE."""
  from .allinone import ssim as skimage_ssim
  target = _as_float(gt)
  restored = out.astype(np.float32)
  mse = float(np.mean((target - restored) ** 2))
  psnr = 100.0 if mse == 0 else 10 * math.log10(1 / mse)
  mae = float(np.mean([np.mean(np.abs(target[..., c] - restored[..., c])) for c in range(target.shape[2])]))
  return {'psnr': psnr, 'ssim': skimage_ssim(target, restored, 1.0, channel_axis=-1), 'mae': mae}


__all__ = ['TASKS', 'TaskSpec', 'Protocol', 'Sample', 'protocol_for', 'build_samples', 'make_pair', 'evaluate',
           'EvalResult', 'score', 'official_window_pad', 'list_images', 'read_array']
