"""SwinIR presets: one per official checkpoint of JingyunLiang/SwinIR (release v0.0).

Hyperparameters are those `main_test_swinir.py` builds for each task.
"""
from __future__ import annotations

from .presets import Preset

RELEASE_URL = 'https://github.com/JingyunLiang/SwinIR/releases/download/v0.0/'
LICENSE = 'Apache-2.0 (JingyunLiang/SwinIR)'

# SwinIR-M: the medium model used by every task but lightweight and large real-world SR.
MEDIUM = dict(embed_dim=180, depths=(6,) * 6, num_heads=(6,) * 6, window_size=8, mlp_ratio=2.0,
              resi_connection='1conv', img_range=1.0)


def _preset(name, file, key, *, task, channels, hp, **meta) -> Preset:
  return Preset(name=name, architecture='swinir', hyperparameters=hp, task=task, channels=channels,
                checkpoint_file=file, checkpoint_key=key, weights_url=RELEASE_URL + file,
                weights_license=LICENSE, **meta)


def swinir_presets() -> list[Preset]:
  presets = []
  # 001 classical SR: trained on DF2K with 64x64 patches, or on DIV2K with 48x48 patches.
  for scale in (2, 3, 4, 8):
    for data, patch, suffix in (('DF2K', 64, ''), ('DIV2K', 48, '-p48')):
      presets.append(_preset(
          f'swinir-classical-x{scale}{suffix}',
          f'001_classicalSR_{data}_s{patch}w8_SwinIR-M_x{scale}.pth', 'params',
          task='classical_sr', channels=3, scale=scale, border=scale,
          hp=dict(MEDIUM, in_chans=3, img_size=patch, upscale=scale, upsampler='pixelshuffle')))
  # 002 lightweight SR: SwinIR-S with a one-step pixel-shuffle head.
  for scale in (2, 3, 4):
    presets.append(_preset(
        f'swinir-lightweight-x{scale}', f'002_lightweightSR_DIV2K_s64w8_SwinIR-S_x{scale}.pth', 'params',
        task='lightweight_sr', channels=3, scale=scale, border=scale,
        hp=dict(in_chans=3, img_size=64, window_size=8, img_range=1.0, embed_dim=60, depths=(6,) * 4,
                num_heads=(6,) * 4, mlp_ratio=2.0, upscale=scale, upsampler='pixelshuffledirect',
                resi_connection='1conv')))
  # 003 real-world SR x4 (BSRGAN degradations): SwinIR-M and SwinIR-L, PSNR- and GAN-trained.
  large = dict(embed_dim=240, depths=(6,) * 9, num_heads=(8,) * 9, window_size=8, mlp_ratio=2.0,
               resi_connection='3conv', img_range=1.0)
  for size, data, hp in (('m', 'DFO', MEDIUM), ('l', 'DFOWMFC', large)):
    for kind in ('psnr', 'gan'):
      presets.append(_preset(
          f'swinir-real-x4-{size}-{kind}',
          f'003_realSR_BSRGAN_{data}_s64w8_SwinIR-{size.upper()}_x4_{kind.upper()}.pth', 'params_ema',
          task='real_sr', channels=3, scale=4,
          hp=dict(hp, in_chans=3, img_size=64, upscale=4, upsampler='nearest+conv')))
  # 004/005 gray and color denoising (Gaussian noise sigma 15/25/50, 128x128 training patches).
  for task, prefix, color, channels in (('gray_dn', '004_grayDN', 'gray', 1), ('color_dn', '005_colorDN', 'color', 3)):
    for sigma in (15, 25, 50):
      presets.append(_preset(
          f'swinir-{color}-dn{sigma}', f'{prefix}_DFWB_s128w8_SwinIR-M_noise{sigma}.pth', 'params',
          task=task, channels=channels, noise_level=sigma,
          hp=dict(MEDIUM, in_chans=channels, img_size=128, upscale=1, upsampler='')))
  # 006 JPEG artifact removal: window 7 (JPEG blocks are 8x8), img_size 126, img_range 255.
  for task, prefix, color, channels in (('jpeg_car', '006_CAR', 'gray', 1), ('color_jpeg_car', '006_colorCAR', 'color', 3)):
    for quality in (10, 20, 30, 40):
      presets.append(_preset(
          f'swinir-{color}-car{quality}', f'{prefix}_DFWB_s126w7_SwinIR-M_jpeg{quality}.pth', 'params',
          task=task, channels=channels, jpeg_quality=quality,
          hp=dict(MEDIUM, in_chans=channels, img_size=126, window_size=7, img_range=255.0, upscale=1,
                  upsampler='')))
  return presets
