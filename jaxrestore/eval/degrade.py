"""Test-time degradations of SwinIR's `main_test_swinir.py` (and KAIR's test scripts).

  * `add_gaussian_noise` -- AWGN of the `gray_dn` / `color_dn` tasks: `np.random.seed(seed)`, then
    `img + np.random.normal(0, sigma / 255., img.shape)`; bit-identical to the original.
  * `jpeg_compress` -- JPEG of the `jpeg_car` (gray) / `color_jpeg_car` (colour) tasks. The original
    uses `cv2.imencode('.jpg', img, [cv2.IMWRITE_JPEG_QUALITY, q])` and `cv2.imdecode`; we use Pillow
    (the runtime depends on jax, numpy and pillow only). With the settings below (`quality=q`,
    baseline, no Huffman optimisation, 4:2:0 chroma subsampling for colour, Pillow's defaults for
    gray) Pillow 13 writes byte-identical files to opencv-python-headless 5.0's `cv2.imencode`
    (both bundle libjpeg-turbo): checked on every image of Classic5 and LIVE1, gray and colour,
    q = 10, 20, 30, 40; the decoded images are identical (max pixel difference 0).
  * `jpeg_gray_target` -- the gray ground truth of `jpeg_car`: a gray image as is, a colour image
    replaced by its BT.601 Y channel rounded to uint8.

Images are RGB by default (this library's convention); `channel_order='BGR'` takes OpenCV data.
"""
from __future__ import annotations

import io

import numpy as np
from PIL import Image

from .metrics import bgr2ycbcr, rgb2ycbcr

__all__ = ['add_gaussian_noise', 'jpeg_compress', 'jpeg_gray_target', 'jpeg_roundtrip']


def _check_order(channel_order: str) -> str:
  order = str(channel_order).upper()
  if order not in ('RGB', 'BGR'):
    raise ValueError(f"channel_order must be 'RGB' or 'BGR', got {channel_order!r}")
  return order


def add_gaussian_noise(img_float32_hwc, sigma: float, *, seed: int | None = 0,
                       channel_order: str = 'RGB') -> np.ndarray:
  """Add white Gaussian noise exactly as SwinIR / KAIR do at test time.

  The original (`main_test_swinir.py`, tasks `gray_dn` / `color_dn`; KAIR's test scripts):

      img = cv2.imread(path, ...).astype(np.float32) / 255.   # HW (gray) or HWC in BGR order
      np.random.seed(seed=0)
      img_lq = img + np.random.normal(0, sigma / 255., img.shape)

  The same numbers are drawn from a private `np.random.RandomState(seed)` (the legacy global
  generator seeded with `seed` produces the identical stream), so numpy's global random state is
  neither used nor changed. `seed=None` draws fresh, unrepeatable noise.

  Args:
    img_float32_hwc: clean image in [0, 1], HW, HW1 or HW3; float32 as in the original (a uint8
      image is first converted with `astype(float32) / 255.`, as the original loads it).
    sigma: noise standard deviation on the [0, 255] scale (15, 25, 50 in the benchmarks).
    seed: seed of the generator (the protocol uses 0 for every image).
    channel_order: order of a 3-channel image. The original draws the noise for an OpenCV BGR
      array: noise[..., c] goes to BGR channel c. With 'RGB' (default) the noise array is reversed
      along the channel axis before it is added, so the result is bit-identical to the original's
      result on the BGR array with its channels reversed; 'BGR' adds the noise as drawn. Gray
      images are unaffected (HW and HW1 images get the same numbers in the same pixels).

  Returns:
    the noisy image, float64 (float32 image + float64 noise is float64 in the original too), same
    shape as the input, neither clipped nor quantised.
  """
  order = _check_order(channel_order)
  img = np.asarray(img_float32_hwc)
  if img.dtype == np.uint8:
    img = img.astype(np.float32) / 255.
  if img.ndim not in (2, 3):
    raise ValueError(f'expected an HW or HWC image, got shape {img.shape}')
  rng = np.random.RandomState(seed)
  noise = rng.normal(0, sigma / 255., img.shape)
  if img.ndim == 3 and img.shape[2] == 3 and order == 'RGB':
    noise = noise[..., ::-1]
  return img + noise


def _encode(arr: np.ndarray, quality: int) -> bytes:
  """JPEG file bytes of an HW (gray) or HW3 (RGB) uint8 array, as `cv2.imencode` writes them."""
  pil = Image.fromarray(arr)
  kwargs = dict(quality=int(quality), optimize=False, progressive=False)
  if pil.mode == 'RGB':
    # 4:2:0 is libjpeg's (and OpenCV's) default; stated so that a change of Pillow's default cannot
    # change the protocol. A gray image must not get `subsampling`: Pillow would then write 2x2
    # sampling factors into the frame header and the file would differ from OpenCV's.
    kwargs['subsampling'] = 2
  buf = io.BytesIO()
  pil.save(buf, format='JPEG', **kwargs)
  return buf.getvalue()


def _decode(data: bytes) -> np.ndarray:
  with Image.open(io.BytesIO(data)) as dec:
    dec.load()
    return np.asarray(dec)


def jpeg_gray_target(img_uint8, *, channel_order: str = 'RGB') -> np.ndarray:
  """The uint8 gray image that SwinIR's `jpeg_car` compresses and scores against.

  `img = cv2.imread(path, cv2.IMREAD_UNCHANGED)`, then `if img.ndim != 2: img = bgr2ycbcr(img,
  y_only=True)`: a gray image is used as is, a colour image is replaced by its BT.601 Y channel
  (16..235) rounded to uint8. Returns an HW uint8 array (an HW1 image is squeezed).
  """
  order = _check_order(channel_order)
  img = np.asarray(img_uint8)
  if img.dtype != np.uint8:
    raise TypeError(f'expected a uint8 image, got {img.dtype}')
  if img.ndim == 3 and img.shape[2] == 1:
    img = img[..., 0]
  if img.ndim == 2:
    return img
  if img.ndim == 3 and img.shape[2] == 3:
    return (rgb2ycbcr if order == 'RGB' else bgr2ycbcr)(img, y_only=True)
  raise ValueError(f'expected an HW, HW1 or HW3 image, got shape {img.shape}')


def jpeg_compress(img_uint8, quality: int, *, mode: str, channel_order: str = 'RGB') -> np.ndarray:
  """JPEG-compress and decode an image as SwinIR's `jpeg_car` / `color_jpeg_car` do.

  Args:
    img_uint8: uint8 image, HW / HW1 (gray) or HW3 (colour).
    quality: libjpeg quality factor 1..100 (the benchmarks use 10, 20, 30, 40).
    mode: 'gray' -- compress the image of `jpeg_gray_target` (the gray image itself, or the BT.601
      Y channel of a colour image) as a one-component JPEG; returns HW uint8 (HW1 for HW1 input).
      'color' -- compress the HW3 image (YCbCr with 4:2:0 chroma subsampling, as `cv2.imencode` of
      the BGR array does); returns HW3 uint8 in the input's channel order.
    channel_order: 'RGB' (default) or 'BGR', for 3-channel input.

  Returns:
    the decoded uint8 image. Pillow settings: `quality=q, optimize=False, progressive=False`, plus
    `subsampling=2` (4:2:0) for colour: byte-identical to `cv2.imencode` at the same quality with
    the libjpeg-turbo builds of Pillow 13 and opencv-python-headless 5.0.
  """
  order = _check_order(channel_order)
  q = int(quality)
  if not 1 <= q <= 100:
    raise ValueError(f'quality must be in 1..100, got {quality}')
  img = np.asarray(img_uint8)
  if img.dtype != np.uint8:
    raise TypeError(f'expected a uint8 image, got {img.dtype}')
  if mode == 'gray':
    gray = np.ascontiguousarray(jpeg_gray_target(img, channel_order=order))
    out = _decode(_encode(gray, q))
    return out[..., None] if img.ndim == 3 and img.shape[2] == 1 else out
  if mode == 'color':
    if img.ndim != 3 or img.shape[2] != 3:
      raise ValueError(f"mode='color' needs an HW3 image, got shape {img.shape}")
    rgb = img if order == 'RGB' else img[..., ::-1]
    out = _decode(_encode(np.ascontiguousarray(rgb), q))
    return out if order == 'RGB' else np.ascontiguousarray(out[..., ::-1])
  raise ValueError(f"mode must be 'gray' or 'color', got {mode!r}")


def jpeg_roundtrip(img_uint8, quality: int, *, mode: str,
                   channel_order: str = 'RGB') -> tuple[np.ndarray, np.ndarray]:
  """The `(low_quality, ground_truth)` uint8 pair of SwinIR's JPEG tasks.

  mode='gray': `(jpeg_compress(img, q, mode='gray'), jpeg_gray_target(img))`, both HW;
  mode='color': `(jpeg_compress(img, q, mode='color'), img)`.
  """
  lq = jpeg_compress(img_uint8, quality, mode=mode, channel_order=channel_order)
  if mode == 'gray':
    if lq.ndim == 3:
      lq = lq[..., 0]
    return lq, jpeg_gray_target(img_uint8, channel_order=channel_order)
  return lq, np.asarray(img_uint8)
