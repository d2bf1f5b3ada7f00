"""Restormer presets: one per checkpoint released with swz30/Restormer (release v1.0).

Hyperparameters are those the official test scripts and `demo.py` build for each task (the
default Restormer(); 'BiasFree' LayerNorm for the denoisers; 1 channel for gray denoising; 6 input
channels and the extra skip conv for dual-pixel defocus deblurring). The checkpoints store the
state dict under 'params'.
"""
from __future__ import annotations

from .presets import Preset

RELEASE_URL = 'https://github.com/swz30/Restormer/releases/download/v1.0/'
LICENSE = ('Academic Public License, non-commercial (swz30/Restormer LICENSE.md at release; '
           'check the repository for the current terms)')
BASE = dict(dim=48, num_blocks=(4, 6, 6, 8), num_refinement_blocks=4, heads=(1, 2, 4, 8),
            ffn_expansion_factor=2.66, bias=False, LayerNorm_type='WithBias', dual_pixel_task=False)


def _preset(name, file, *, task, channels, hp=None, **meta) -> Preset:
  in_ch = 6 if (hp or {}).get('dual_pixel_task') else channels
  out_ch = 3 if in_ch == 6 else channels
  return Preset(name=name, architecture='restormer',
                hyperparameters=dict(BASE, inp_channels=in_ch, out_channels=out_ch, **(hp or {})),
                task=task, channels=in_ch, checkpoint_file=file, checkpoint_key='params',
                weights_url=RELEASE_URL + file, weights_license=LICENSE, **meta)


def restormer_presets() -> list[Preset]:
  presets = [
      _preset('restormer-motion-deblur', 'motion_deblurring.pth', task='motion_deblur', channels=3,
              notes='trained on GoPro; Motion_Deblurring/test.py'),
      _preset('restormer-defocus-single', 'single_image_defocus_deblurring.pth', task='defocus_deblur',
              channels=3, notes='DPDD, single image (centre view)'),
      _preset('restormer-defocus-dual', 'dual_pixel_defocus_deblurring.pth', task='defocus_deblur_dual',
              channels=6, hp=dict(dual_pixel_task=True),
              notes='DPDD dual-pixel: input is the left and right views concatenated (6 channels, '
                    '16-bit images / 65535), output RGB, no global residual'),
      _preset('restormer-derain', 'deraining.pth', task='derain', channels=3,
              notes='Rain13K; Deraining/test.py (scored on the Y channel in MATLAB)'),
      _preset('restormer-real-dn', 'real_denoising.pth', task='real_dn', channels=3,
              hp=dict(LayerNorm_type='BiasFree'), notes='SIDD real noise'),
  ]
  # Gaussian denoising: one blind model per colour type and one per sigma (15, 25, 50).
  for color, channels, task in (('color', 3, 'color_dn'), ('gray', 1, 'gray_dn')):
    presets.append(_preset(
        f'restormer-{color}-dn-blind', f'gaussian_{color}_denoising_blind.pth', task=task, channels=channels,
        hp=dict(LayerNorm_type='BiasFree'), notes='blind: one model for sigma in [0, 50]'))
    for sigma in (15, 25, 50):
      presets.append(_preset(
          f'restormer-{color}-dn{sigma}', f'gaussian_{color}_denoising_sigma{sigma}.pth', task=task,
          channels=channels, noise_level=sigma, hp=dict(LayerNorm_type='BiasFree'),
          notes='official test: float noise (np.random.seed(0) per image, RGB order), not clipped'))
  return presets
