"""Presets of models trained by jaxrestore itself (`jaxrestore train`), weights bundled in
`jaxrestore/assets/<name>/` as converted directories (raw parameters of the last step).

Both are DnCNN-17 (64 features, no BatchNorm, KAIR's layout) trained on a 2-core CPU from the
`dncnn_gray` recipe's `cpu` variant: BSD400, random 40x40 patches with flips/rotations, batch 16,
L1 loss, Adam 1e-3 (warm-up 100 steps, cosine to 1e-5, gradient clipping at 1.0), He init,
1100 steps (17,600 patches, under one pass of DnCNN's 238k-patch epoch). The weights are the last
step's raw parameters. The two runs shared the 2 cores with each other and with other work, so
~33 minutes of wall-clock training each. Reproduce with

    jaxrestore train dncnn_gray:sigma=15,cpu --workdir runs/dn15
    jaxrestore train dncnn_gray:task=car,quality=20,cpu --workdir runs/car20

PSNRs below are measured with `jaxrestore eval`'s official protocols (KAIR's seeded noise, uint8
PSNR; SwinIR's jpeg_car). They are what ~33 CPU-minutes buy: 7.1 dB over the noisy input on
Set12 but below BM3D (32.37) and the published DnCNN-S (32.86), trained for hours on GPUs; +1.0 dB
PSNR and +3.0 dB PSNR-B over JPEG q20 on Classic5, below DnCNN-3 (31.63).
"""
from __future__ import annotations

from .presets import Preset

DNCNN17 = dict(in_chans=1, out_chans=1, features=64, depth=17, batch_norm=False, conv_bias=True)
LICENSE = 'Apache-2.0 (trained by jaxrestore on BSD400)'

# Measured with benchmarks/train_trained_defaults.py on the bundled weights (official protocols).
RESULTS = {
    'trained-dncnn-gray-dn15': dict(steps=1100, minutes=32.9, set12=31.78, bsd68=30.96, set12_input=24.70,
                                    bsd68_input=24.81),
    'trained-dncnn-gray-car20': dict(steps=1100, minutes=32.7, classic5=31.13, classic5_input=30.12,
                                     classic5_psnrb=30.46, classic5_psnrb_input=27.50),
}


def _fmt(value) -> str:
  return 'n/a' if value is None else f'{value:.2f}'


def trained_presets() -> list[Preset]:
  dn, car = RESULTS['trained-dncnn-gray-dn15'], RESULTS['trained-dncnn-gray-car20']
  return [
      Preset(name='trained-dncnn-gray-dn15', architecture='dncnn', hyperparameters=dict(DNCNN17),
             task='gray_dn', channels=1, noise_level=15, bundled_weights='trained-dncnn-gray-dn15',
             weights_license=LICENSE,
             notes=(f'jaxrestore train dncnn_gray:sigma=15,cpu -- {dn["steps"]} steps x 16 patches of 40x40, '
                    f'{_fmt(dn["minutes"])} min of training on a shared 2-core CPU; Set12 {_fmt(dn["set12"])} dB '
                    f'(noisy {_fmt(dn["set12_input"])}), BSD68 {_fmt(dn["bsd68"])} dB '
                    f'(noisy {_fmt(dn["bsd68_input"])}); DnCNN-S paper: 32.86 / 31.73, BM3D 32.37 / 31.07')),
      Preset(name='trained-dncnn-gray-car20', architecture='dncnn', hyperparameters=dict(DNCNN17),
             task='jpeg_car', channels=1, jpeg_quality=20, bundled_weights='trained-dncnn-gray-car20',
             weights_license=LICENSE,
             notes=(f'jaxrestore train dncnn_gray:task=car,quality=20,cpu -- {car["steps"]} steps x 16 patches '
                    f'of 40x40, {_fmt(car["minutes"])} min of training on a shared 2-core CPU; '
                    f'Classic5 {_fmt(car["classic5"])} dB '
                    f'(JPEG {_fmt(car["classic5_input"])}), PSNR-B {_fmt(car["classic5_psnrb"])} '
                    f'(JPEG {_fmt(car["classic5_psnrb_input"])}); DnCNN-3 paper: 31.63')),
  ]
