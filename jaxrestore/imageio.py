"""Reading and writing images for the CLI: Pillow formats, EXIF orientation, clear errors."""
from __future__ import annotations

import contextlib
import io
import os
import re
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

READ_SUFFIXES = ('.png', '.jpg', '.jpeg', '.tif', '.tiff', '.bmp', '.webp')
WRITE_FORMATS = {'png': 'PNG', 'jpg': 'JPEG', 'jpeg': 'JPEG', 'tif': 'TIFF', 'tiff': 'TIFF', 'bmp': 'BMP',
                 'webp': 'WEBP'}
# Pillow modes we restore, and what they become: 8-bit L/LA/RGB/RGBA, 16-bit gray.
_CONVERT = {'1': 'L', 'P': None, 'L': 'L', 'LA': 'LA', 'RGB': 'RGB', 'RGBA': 'RGBA', 'I;16': 'I;16',
            'I;16B': 'I;16', 'I;16L': 'I;16'}


# Pixels (width x height) an image may have before it is refused unread: 8192 x 8192. A 64 MP RGB
# image takes ~0.8 GB as float32 input and as much again (times scale**2) for the blended output.
DEFAULT_MAX_PIXELS = 8192 * 8192


class ImageReadError(ValueError):
  """The file cannot be restored (missing, empty, truncated, not an image, too large, unsupported)."""


@contextlib.contextmanager
def _pixel_limit(max_pixels: int | None):
  """Pillow's own decompression-bomb guard set to our limit (None/0: off) for one read; ours is
  checked on the header. Reader warnings (a corrupt EXIF block, Pillow's bomb warning) are dropped:
  a file that then fails gets one error naming it, one that decodes needs no second line."""
  old = Image.MAX_IMAGE_PIXELS
  Image.MAX_IMAGE_PIXELS = int(max_pixels) if max_pixels else None
  try:
    with warnings.catch_warnings():
      warnings.simplefilter('ignore')
      yield
  finally:
    Image.MAX_IMAGE_PIXELS = old


def _too_large(label: str, pixels: str, max_pixels: int) -> ImageReadError:
  return ImageReadError(f'{label}: image of {pixels} pixels exceeds the limit of {max_pixels:,} pixels '
                        f'(--max-pixels; 0 = no limit)')


@contextlib.contextmanager
def open_image(source: str | Path | io.BytesIO, label: str | Path | None = None, *,
               max_pixels: int | None = DEFAULT_MAX_PIXELS):
  """A decoded Pillow image; every reader failure becomes an ImageReadError naming `label`."""
  label = str(label if label is not None else source)
  if isinstance(source, (str, Path)):
    path = Path(source)
    if path.is_dir():
      raise ImageReadError(f'{label}: is a folder, not an image file')
    if not path.is_file():
      raise ImageReadError(f'{label}: {"not a regular file" if path.exists() else "no such file"}')
    if path.stat().st_size == 0:
      raise ImageReadError(f'{label}: empty file')
  elif isinstance(source, io.BytesIO) and not source.getbuffer().nbytes:
    raise ImageReadError(f'{label}: empty file')
  im = None
  try:
    with _pixel_limit(max_pixels):
      im = Image.open(source)
      width, height = im.size
      if max_pixels and width * height > max_pixels:
        raise _too_large(label, f'{width}x{height} = {width * height:,}', max_pixels)
      if width == 0 or height == 0:
        raise ImageReadError(f'{label}: image of {width}x{height} pixels has no content')
      im.load()
  except ImageReadError:
    _close(im)
    raise
  except Image.DecompressionBombError as e:
    _close(im)
    found = re.search(r'\((\d+) pixels\)', str(e))
    raise _too_large(label, f'{int(found.group(1)):,}' if found else 'more', max_pixels or 0) from None
  except UnidentifiedImageError:
    _close(im)
    raise ImageReadError(f'{label}: not an image (or a format Pillow cannot read)') from None
  except MemoryError:
    _close(im)
    raise ImageReadError(f'{label}: not enough memory to decode this image') from None
  except PermissionError:
    _close(im)
    raise ImageReadError(f'{label}: permission denied') from None
  except Exception as e:  # any decoder error (OSError, SyntaxError, ValueError, struct.error, ...)
    _close(im)
    detail = ' '.join(str(e).split()) or type(e).__name__
    raise ImageReadError(f'{label}: unreadable or truncated image ({detail})') from None
  try:
    yield im
  finally:
    im.close()


def _close(im) -> None:
  if im is not None:
    try:
      im.close()
    except Exception:  # noqa: BLE001 -- closing a broken file must not hide why it broke
      pass


def is_16bit(im: Image.Image) -> bool:
  """True for 16-bit samples, including the 16-bit RGB PNGs Pillow decodes to 8 bits."""
  return im.mode.startswith('I;16') or any('16' in str(getattr(t, 'args', '') or '') for t in (im.tile or ()))


def read_image(path: str | Path, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
  """uint8 H×W[×C] (or uint16 H×W for 16-bit gray), EXIF orientation applied."""
  path = Path(path)
  with open_image(path, max_pixels=max_pixels) as im, warnings.catch_warnings():
    warnings.simplefilter('ignore')  # e.g. a corrupt EXIF block: the image itself is fine
    try:
      im = ImageOps.exif_transpose(im)
      mode = im.mode
      if mode not in _CONVERT:
        raise ImageReadError(f'{path}: unsupported image mode {mode} (supported: gray, gray+alpha, RGB, '
                             'RGBA, palette, 16-bit gray)')
      if mode == 'P':
        im = im.convert('RGBA' if 'transparency' in im.info else 'RGB')
      elif _CONVERT[mode] != mode:
        im = im.convert(_CONVERT[mode])
      arr = np.asarray(im)
    except ImageReadError:
      raise
    except MemoryError:
      raise ImageReadError(f'{path}: not enough memory to decode this image') from None
    except Exception as e:  # a broken EXIF block, an odd palette, ...
      raise ImageReadError(f'{path}: unreadable image ({" ".join(str(e).split()) or type(e).__name__})') from None
  if arr.dtype == np.int32 or arr.dtype == np.uint16 or arr.dtype.str.endswith('u2'):
    arr = arr.astype(np.uint16)
  return arr


def write_image(path: str | Path, image: np.ndarray, *, bit_depth: int = 8, quality: int = 95) -> None:
  """Writes a float image in [0, 1]; 16-bit only for gray PNG/TIFF (Pillow's limit)."""
  path = Path(path)
  fmt = WRITE_FORMATS.get(path.suffix.lower().lstrip('.'))
  if fmt is None:
    raise ValueError(f'{path}: unsupported output format; use one of {sorted(WRITE_FORMATS)}')
  image = np.clip(np.asarray(image, np.float32), 0.0, 1.0)
  if image.ndim == 3 and image.shape[2] == 1:
    image = image[:, :, 0]
  if bit_depth == 16 and image.ndim == 2 and fmt in ('PNG', 'TIFF'):
    im = Image.fromarray(np.round(image * 65535.0).astype(np.uint16))
  else:
    arr = np.round(image * 255.0).astype(np.uint8)
    if fmt == 'JPEG' and arr.ndim == 3 and arr.shape[2] in (2, 4):
      arr = arr[:, :, :-1]  # JPEG has no alpha
    im = Image.fromarray(arr)
  kwargs = {'quality': quality} if fmt in ('JPEG', 'WEBP') else {}
  tmp = path.with_name(f'.{path.name}.partial')
  try:
    im.save(tmp, format=fmt, **kwargs)
    tmp.replace(path)
  finally:
    tmp.unlink(missing_ok=True)


# ----- output paths: checked before any work ------------------------------------------------------

class OutputPathError(ValueError):
  """An output path that cannot be written as asked; found before any work starts."""


def _writable_ancestor(path: Path) -> Path:
  for parent in [path, *path.parents]:
    if parent.exists():
      return parent
  return Path('.')


def check_new_file(path: str | None, flag: str) -> Path | None:
  """A report file: must not exist (never overwritten); its folder must exist and be writable."""
  if path is None:
    return None
  p = Path(path).expanduser()
  if p.exists() or p.is_symlink():
    raise OutputPathError(f'{flag} {path}: exists; reports are never overwritten, choose a new name')
  folder = p.parent
  if not folder.is_dir():
    raise OutputPathError(f'{flag} {path}: folder {folder} does not exist')
  if not os.access(folder, os.W_OK | os.X_OK):
    raise OutputPathError(f'{flag} {path}: folder {folder} is not writable')
  return p


def check_output_folder(path: str | None, flag: str) -> Path | None:
  """An output folder: an existing folder, or one that can be created when the first file is written."""
  if path is None:
    return None
  p = Path(path).expanduser()
  if p.exists() and not p.is_dir():
    raise OutputPathError(f'{flag} {path}: exists and is not a folder')
  base = _writable_ancestor(p)
  if not base.is_dir():
    raise OutputPathError(f'{flag} {path}: cannot create it, {base} is not a folder')
  if not os.access(base, os.W_OK | os.X_OK):
    raise OutputPathError(f'{flag} {path}: {base} is not writable')
  return p


def check_distinct(**paths) -> None:
  """Two outputs of one command may not be the same file."""
  seen = {}
  for flag, p in paths.items():
    if p is None:
      continue
    key = Path(p).absolute()
    if key in seen:
      raise OutputPathError(f'{seen[key]} and {flag} name the same file {p}')
    seen[key] = flag
