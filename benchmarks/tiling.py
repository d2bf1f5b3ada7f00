"""Tiled inference at scale: seam error against an untiled run, and peak memory on a 4096×4096 RGB
image with SwinIR-M.

  python benchmarks/tiling.py seams            # SwinIR-M (random weights) and DnCNN (real), default overlap
  python benchmarks/tiling.py memory [--max-tiles N] [--batch 4 --micro-batch 0]   # 4096² RGB, SwinIR-M, tile 256: peak RSS

`memory` can stop after N tiles: the accumulators for the whole output are allocated before the
first tile and nothing grows per tile, so the peak is reached within the first batches; the full
run's time is extrapolated from the measured per-tile time and printed as such.
"""
from __future__ import annotations

import argparse
import resource
import time

import numpy as np
from PIL import Image


def _rss_mib():
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def seams():
  import jaxrestore
  from jaxrestore import inference
  from jaxrestore.api import ASSETS
  rgb = np.asarray(Image.open(ASSETS / 'kodim23.png').convert('RGB'), np.float32)[:256, :256] / 255
  noisy = (rgb + np.random.RandomState(0).normal(0, 15 / 255, rgb.shape)).astype(np.float32)
  print(f'default overlap {inference.DEFAULT_OVERLAP} px, tile 128, 256x256 input')
  swinir = jaxrestore.load('swinir-color-dn15', pretrained=False)
  dncnn = jaxrestore.load('dncnn-gray-25')
  for name, model, x in (('SwinIR-M (swinir-color-dn15, random weights)', swinir, noisy),
                         ('DnCNN (dncnn-gray-25, KAIR weights)', dncnn, noisy[:, :, :1])):
    whole = inference.restore(model, x)
    tiled = inference.restore(model, x, tile=128)
    err = np.abs(tiled - whole)
    psnr = 10 * np.log10(1.0 / max(np.mean(err ** 2), 1e-20))
    print(f'{name}: max |tiled - untiled| {err.max():.2e}, mean {err.mean():.2e}, PSNR {psnr:.1f} dB')


def memory(max_tiles: int | None, tile: int, batch: int, micro_batch: int | None):
  import jaxrestore
  from jaxrestore import inference
  model = jaxrestore.load('swinir-color-dn15', pretrained=False)
  image = np.random.default_rng(0).integers(0, 256, (4096, 4096, 3), dtype=np.uint8)
  base = _rss_mib()
  grid = inference.plan_tiles(4096, 4096, tile, inference.DEFAULT_OVERLAP, 8)
  total = len(grid.origins)
  stamps = []

  class Stop(Exception):
    pass

  def progress(done, of):
    stamps.append((done, time.perf_counter(), _rss_mib()))
    if max_tiles and done >= max_tiles:
      raise Stop

  t0 = time.perf_counter()
  try:
    inference.restore(model, image, tile=tile, batch_size=batch, progress=progress, micro_batch=micro_batch)
    finished = True
  except Stop:
    finished = False
  done, t_end, _ = stamps[-1]
  per_tile = (t_end - stamps[0][1]) / max(done - stamps[0][0], 1) if len(stamps) > 1 else t_end - t0
  print(f'4096x4096 RGB, SwinIR-M, tile {tile}, overlap {inference.DEFAULT_OVERLAP}, batch {batch}, '
        f'micro-batch {inference.get_restorer(model).micro_batch}: {total} tiles')
  print(f'RSS after loading the model and image: {base:.0f} MiB; peak: {_rss_mib():.0f} MiB '
        f'(after {done} of {total} tiles; per batch: ' + ', '.join(f'{r:.0f}' for _, _, r in stamps) + ' MiB)')
  print(f'{"finished" if finished else "stopped early"}; {per_tile:.2f} s per tile after the first batch, '
        f'so about {per_tile * total / 60:.0f} min for the whole image on this machine')


if __name__ == '__main__':
  ap = argparse.ArgumentParser()
  ap.add_argument('what', choices=['seams', 'memory'])
  ap.add_argument('--max-tiles', type=int, default=None)
  ap.add_argument('--tile', type=int, default=256)
  ap.add_argument('--batch', type=int, default=1)
  ap.add_argument('--micro-batch', type=int, default=None, help='tiles per compiled step (0 = the whole batch)')
  args = ap.parse_args()
  seams() if args.what == 'seams' else memory(args.max_tiles, args.tile, args.batch, args.micro_batch)
