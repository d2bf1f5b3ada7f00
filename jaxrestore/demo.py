"""`jaxrestore demo`: degrade the bundled image, restore it with the bundled DnCNN, show both."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from jaxrestore.api import ASSETS

DEMO_IMAGE = ASSETS / 'kodim23.png'
DEMO_PRESET = 'dncnn-gray-25'
DEMO_SIGMA = 25


def output_path(out_dir: str | Path) -> Path:
  return Path(out_dir) / 'demo_dncnn_sigma25.png'


def run_demo(out_dir: str | Path = 'demo_out', *, overwrite: bool = False) -> dict:
  import jaxrestore
  from jaxrestore.eval import metrics
  from jaxrestore.eval.evaluator import Evaluator

  out_dir = Path(out_dir)
  out_path = output_path(out_dir)
  if out_path.exists() and not overwrite:
    raise FileExistsError(f'{out_path} exists; pass --overwrite to replace it')
  rgb = np.asarray(Image.open(DEMO_IMAGE).convert('RGB'))
  clean = np.asarray(Image.fromarray(rgb).convert('L'), np.float32) / 255.0
  rng = np.random.RandomState(0)
  noisy = (clean + rng.normal(0, DEMO_SIGMA / 255.0, clean.shape)).astype(np.float32)

  model = jaxrestore.load(DEMO_PRESET, pretrained=True)
  restored = Evaluator(model).restore(noisy[:, :, None])[:, :, 0]  # the noisy input is not clipped

  to_u8 = lambda x: np.round(np.clip(x, 0, 1) * 255).astype(np.uint8)
  clean8, noisy8, restored8 = to_u8(clean), to_u8(noisy), to_u8(restored)
  result = dict(psnr_noisy=metrics.psnr(noisy8, clean8), ssim_noisy=metrics.ssim(noisy8, clean8),
                psnr_restored=metrics.psnr(restored8, clean8), ssim_restored=metrics.ssim(restored8, clean8))
  out_dir.mkdir(parents=True, exist_ok=True)
  gap = np.full((clean8.shape[0], 8), 255, np.uint8)
  Image.fromarray(np.concatenate([noisy8, gap, restored8, gap, clean8], axis=1)).save(out_path)
  result['output'] = str(out_path)
  return result
