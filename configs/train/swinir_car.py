"""SwinIR-M gray JPEG artifact removal (`quality` 10/20/30/40), the recipe of the released
`006_CAR_DFWB_s126w7_SwinIR-M_jpeg*.pth`: window 7 (JPEG blocks are 8x8), 126x126 patches, image
range 255, batch 8 per GPU, Adam 2e-4, lr halved at [250k, 400k, 450k, 475k] of 500k, Charbonnier
loss, EMA 0.999; validated on Classic5 with the official protocol. Trains on BSD400 here (DFWB in
the paper: add DIV2K/Flickr2K/WED folders with `data.sources`).
"""
from __future__ import annotations

from . import base_config, parse_arg, swinir_recipe


def get_config(arg=None):
  a = parse_arg(arg, quality=20, cpu=False, steps=0)
  c = base_config()
  c.model = dict(preset=f'swinir-gray-car{a.quality}', hyperparameters={})
  c.data.train = dict(dataset='bsd400', mode='L')
  swinir_recipe(c, patch_size=126)
  c.data.degradation = dict(kind='jpeg', quality=int(a.quality))
  c.eval = dict(every=5_000, dataset='Classic5', task='jpeg_car', jpeg_quality=int(a.quality), max_images=None,
                use_ema=True)
  if a.cpu:
    c.model.hyperparameters = dict(embed_dim=28, depths=[2, 2], num_heads=[4, 4], img_size=42)
    c.data.patch_size = 42
    c.data.batch_size = 4
    c.total_steps = a.steps or 200
    c.schedule.milestones = [c.total_steps // 2]
    c.checkpoint = dict(every=100, keep=2, async_save=True)
    c.eval.update(every=100, max_images=1)
    c.log_every = 10
  return c
