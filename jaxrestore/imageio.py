"""Reading and writing images for the CLI: Pillow formats, EXIF orientation, clear errors."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

READ_SUFFIXES = ('.png', '.jpg', '.jpeg', '.tif', '.tiff', '.bmp', '.webp')
WRITE_FORMATS = {'png': 'PNG', 'jpg': 'JPEG', 'jpeg': 'JPEG', 'tif': 'TIFF', 'tiff': 'TIFF', 'bmp': 'BMP',
                 'webp': 'WEBP'}
# Pillow modes we restore, and what they become: 8-bit L/LA/RGB/RGBA, 16-bit gray.
_CONVERT = {'1': 'L', 'P': None, 'L': 'L', 'LA': 'LA', 'RGB': 'RGB', 'RGBA': 'RGBA', 'I;16': 'I;16',
            'I;16B': 'I;16', 'I;16L': 'I;16'}


class ImageReadError(ValueError):
  """The file cannot be restored (missing, empty, truncated, not an image, unsupported mode)."""


def read_image(path: str | Path) -> np.ndarray:
  """uint8 H×W[×C] (or uint16 H×W for 16-bit gray), EXIF orientation applied."""
  path = Path(path)
  if not path.is_file():
    raise ImageReadError(f'{path}: no such file')
  if path.stat().st_size == 0:
    raise ImageReadError(f'{path}: empty file')
  try:
    with Image.open(path) as im:
      im.load()
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
  except UnidentifiedImageError:
    raise ImageReadError(f'{path}: not an image (or a format Pillow cannot read)') from None
  except (OSError, SyntaxError, ValueError) as e:
    raise ImageReadError(f'{path}: unreadable or truncated image ({e})') from None
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
