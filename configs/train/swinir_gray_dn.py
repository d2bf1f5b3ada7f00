"""SwinIR gray Gaussian denoising (Liang et al., ICCVW 2021), SwinIR-S by default (`size=m` for
the released SwinIR-M). Recipe of SwinIR / KAIR `train_swinir_denoising_gray.json`: random 128x128
patches with the 8 flips/rotations, noise sigma fixed per model, batch 8 per GPU, Adam 2e-4
(betas 0.9/0.99), lr halved at [250k, 400k, 450k, 475k] of 500k steps, Charbonnier loss
(eps 1e-9 as KAIR), parameter EMA 0.999. SwinIR trained on DFWB (DIV2K+Flickr2K+WED+BSD400);
BSD400 is the part shipped in shared data: add the others with `data.sources`.

    jaxrestore train swinir_gray_dn                 # SwinIR-S, sigma 15
    jaxrestore train swinir_gray_dn:sigma=25,size=m
    jaxrestore train swinir_gray_dn:cpu             # minutes on a CPU
"""
from __future__ import annotations

from . import base_config, parse_arg, swinir_recipe

SMALL = dict(embed_dim=60, depths=[6, 6, 6, 6], num_heads=[6, 6, 6, 6])
MEDIUM = dict(embed_dim=180, depths=[6] * 6, num_heads=[6] * 6)


def get_config(arg=None):
  a = parse_arg(arg, sigma=15, size='s', cpu=False, steps=0)
  c = base_config()
  c.model = dict(architecture='swinir', hyperparameters=dict(
      SMALL if a.size == 's' else MEDIUM, in_chans=1, img_size=128, window_size=8, mlp_ratio=2.0, img_range=1.0,
      upscale=1, upsampler='', resi_connection='1conv'))
  c.data.train = dict(dataset='bsd400', mode='L')
  swinir_recipe(c, patch_size=128)
  c.data.degradation = dict(kind='gaussian', sigma=float(a.sigma))
  c.eval = dict(every=5_000, dataset='Set12', task='gray_dn', noise_level=float(a.sigma), max_images=None,
                use_ema=True)
  if a.cpu:
    c.model.hyperparameters.update(embed_dim=30, depths=[2, 2], num_heads=[6, 6], img_size=48)
    c.data.patch_size = 48
    c.data.batch_size = 4
    c.total_steps = a.steps or 300
    c.schedule = dict(kind='multistep', milestones=[c.total_steps // 2, c.total_steps * 4 // 5], gamma=0.5,
                      warmup_steps=0)
    c.checkpoint = dict(every=100, keep=2, async_save=True)
    c.eval.update(every=150, max_images=2)
    c.log_every = 10
  return c
