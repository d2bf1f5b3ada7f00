"""DnCNN presets: KAIR's model zoo (cszn/KAIR) and SaoYan/DnCNN-PyTorch's released nets."""
from __future__ import annotations

from .presets import Preset

KAIR_URL = 'https://github.com/cszn/KAIR/releases/download/v1.0/'
SAOYAN_URL = 'https://github.com/SaoYan/DnCNN-PyTorch/raw/master/logs/'
KAIR = dict(features=64, batch_norm=False, conv_bias=True)  # BatchNorm merged into the convs


def dncnn_presets() -> list[Preset]:
  presets = []
  for sigma in (15, 25, 50):
    presets.append(Preset(
        name=f'dncnn-gray-{sigma}', architecture='dncnn', task='gray_dn', channels=1, noise_level=sigma,
        hyperparameters=dict(KAIR, in_chans=1, out_chans=1, depth=17),
        checkpoint_file=f'dncnn_{sigma}.pth', weights_url=KAIR_URL + f'dncnn_{sigma}.pth',
        weights_license='MIT (cszn/KAIR)', bundled_weights='dncnn-gray-25' if sigma == 25 else None))
  for color, channels in (('gray', 1), ('color', 3)):
    presets.append(Preset(
        name=f'dncnn-{color}-blind', architecture='dncnn', task=f'{color}_dn', channels=channels,
        hyperparameters=dict(KAIR, in_chans=channels, out_chans=channels, depth=20),
        checkpoint_file=f'dncnn_{color}_blind.pth', weights_url=KAIR_URL + f'dncnn_{color}_blind.pth',
        weights_license='MIT (cszn/KAIR)', notes='blind: trained for sigma in [0, 55]'))
  for sigma in (15, 25, 50):
    presets.append(Preset(
        name=f'dncnn-saoyan-s{sigma}', architecture='dncnn', task='gray_dn', channels=1, noise_level=sigma,
        hyperparameters=dict(in_chans=1, out_chans=1, features=64, depth=17, batch_norm=True, conv_bias=False),
        checkpoint_file=f'DnCNN-S-{sigma}/net.pth', weights_url=SAOYAN_URL + f'DnCNN-S-{sigma}/net.pth',
        weights_license='GPL-3.0 (SaoYan/DnCNN-PyTorch)',
        notes='evaluated by its authors with clamp(noisy - noise, 0, 1) and float PSNR'))
  return presets
