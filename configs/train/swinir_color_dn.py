"""SwinIR-M colour Gaussian denoising (`sigma` 15/25/50), the recipe of the released
`005_colorDN_DFWB_s128w8_SwinIR-M_noise*.pth`: 128x128 patches, batch 8 per GPU, Adam 2e-4, lr
halved at [250k, 400k, 450k, 475k] of 500k, Charbonnier loss, EMA 0.999. Training data is DFWB
(DIV2K + Flickr2K + WED + BSD500 colour images), which is not in shared data: point
`data.train.folder` at it (or list several in `data.sources`).

`cpu`: a 2-block SwinIR on Kodak24 crops validated on 4 McMaster images -- a smoke run of the
whole pipeline, not a usable model (Kodak24 and McMaster are test sets).
"""
from __future__ import annotations

from . import base_config, parse_arg, swinir_recipe


def get_config(arg=None):
  a = parse_arg(arg, sigma=15, cpu=False, steps=0)
  c = base_config()
  c.model = dict(preset=f'swinir-color-dn{a.sigma}', hyperparameters={})
  c.data.train = dict(dataset=None, folder=None, mode='RGB')   # set data.train.folder=/path/to/DFWB
  swinir_recipe(c, patch_size=128)
  c.data.degradation = dict(kind='gaussian', sigma=float(a.sigma))
  c.eval = dict(every=5_000, dataset='McMaster', task='color_dn', noise_level=float(a.sigma), max_images=None,
                use_ema=True)
  if a.cpu:
    c.model.hyperparameters = dict(embed_dim=30, depths=[2, 2], num_heads=[6, 6], img_size=48)
    c.data.train = dict(dataset='kodak24', mode='RGB')
    c.data.patch_size = 48
    c.data.batch_size = 4
    c.total_steps = a.steps or 200
    c.schedule.milestones = [c.total_steps // 2]
    c.checkpoint = dict(every=100, keep=2, async_save=True)
    c.eval.update(every=100, max_images=2)
    c.log_every = 10
  return c
