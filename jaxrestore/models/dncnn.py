"""DnCNN (Zhang et al., TIP 2017): a plain conv/ReLU stack that predicts the noise residual.

One module covers both checkpoint families people have: KAIR's (`model.N`, convs with bias,
BatchNorm already merged, or 'BR' with BatchNorm) and the common PyTorch port of
SaoYan/DnCNN-PyTorch (`module.dncnn.N`, bias-free convs + BatchNorm). Layer indices equal the
PyTorch `nn.Sequential` indices, so both map onto it by a rename. Like every jaxrestore model the
module returns the restored image, input − predicted noise.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxrestore import layers
from jaxrestore.mapping import CheckpointMismatchError, ParamMap, Rule, conv_oihw_to_hwio
from jaxrestore.models.base import Architecture, ModelConfig, Preset, TorchReference, runtime_field


@dataclasses.dataclass(frozen=True)
class DnCNNConfig(ModelConfig):
  in_chans: int = 1
  out_chans: int = 1
  features: int = 64
  depth: int = 17                 # number of conv layers
  batch_norm: bool = False        # BatchNorm after every middle conv (False: merged into the convs)
  conv_bias: bool = True
  dtype: Any = runtime_field(None)
  param_dtype: Any = runtime_field(jnp.float32)
  padding: str = runtime_field('reflect')  # a fully convolutional net: any size, nothing to pad

  def __post_init__(self):
    self.check_padding()
    if self.depth < 2:
      raise ValueError(f'DnCNN needs at least 2 conv layers, got depth={self.depth}')

  @property
  def residual(self) -> bool:
    """DnCNN predicts noise; an FDnCNN-style model with extra input channels predicts the image."""
    return self.in_chans == self.out_chans


class DnCNN(nnx.Module):
  """NHWC noisy image -> NHWC restored image (input − predicted noise)."""

  def __init__(self, config: DnCNNConfig, *, rngs: nnx.Rngs):
    self.config = cfg = config
    conv = lambda cin, cout, bias: layers.conv2d(cin, cout, 3, use_bias=bias, rngs=rngs, dtype=cfg.dtype,
                                                param_dtype=cfg.param_dtype)
    stack: list = [conv(cfg.in_chans, cfg.features, True if not cfg.batch_norm else cfg.conv_bias), jax.nn.relu]
    for _ in range(cfg.depth - 2):
      stack.append(conv(cfg.features, cfg.features, cfg.conv_bias))
      if cfg.batch_norm:
        stack.append(nnx.BatchNorm(cfg.features, use_running_average=True, epsilon=1e-5, momentum=0.9,
                                   dtype=None if cfg.dtype is None else jnp.float32,
                                   param_dtype=cfg.param_dtype, rngs=rngs))
      stack.append(jax.nn.relu)
    stack.append(conv(cfg.features, cfg.out_chans, cfg.conv_bias))
    self.body = nnx.Sequential(*stack)

  def __call__(self, x):
    cfg = self.config
    x = cfg.pad_input(x.astype(cfg.dtype or x.dtype), 'DnCNN')
    out = self.body(x)
    return x[..., :cfg.out_chans] - out if cfg.residual else out


# ----- checkpoints -----------------------------------------------------------------------------------

_LAYER = r'(?:model|dncnn)\.(\d+)'

TORCH_PARAMS = ParamMap(
    rules=(
        Rule(_LAYER + r'\.running_mean', r'body.layers.\1.mean'),
        Rule(_LAYER + r'\.running_var', r'body.layers.\1.var'),
        # Under one Sequential index, a 1-d weight is a BatchNorm scale, a 4-d one a conv kernel.
        Rule(_LAYER + r'\.weight', r'body.layers.\1.scale', ndim=1),
        Rule(_LAYER + r'\.weight', r'body.layers.\1.kernel', conv_oihw_to_hwio, ndim=4),
        Rule(_LAYER + r'\.bias', r'body.layers.\1.bias'),
    ),
    ignore=(_LAYER + r'\.num_batches_tracked',),
)

def _layer_indices(sd) -> tuple[str, list[int]]:
  for prefix in ('model', 'dncnn'):
    idx = sorted({int(m.group(1)) for k in sd for m in [re.fullmatch(prefix + r'\.(\d+)\.weight', k)] if m})
    if idx:
      return prefix, idx
  return '', []


def rejects(sd) -> list[str]:
  """A plain conv(-BN)-ReLU stack and nothing else."""
  prefix, idx = _layer_indices(sd)
  if not idx:
    return ['no model.N.weight / dncnn.N.weight conv keys']
  problems = []
  if idx[0] != 0:
    problems.append(f'first layer is {prefix}.{idx[0]}, expected {prefix}.0')
  if any(np.ndim(sd[f'{prefix}.{i}.weight']) not in (1, 4) for i in idx):
    problems.append('weights that are neither conv kernels nor BatchNorm scales')
  if any(k for k in sd if not re.match(r'(model|dncnn)\.\d+\.', k)):
    problems.append('keys outside the plain conv stack')
  return problems


def hyperparameters_from_state_dict(sd) -> dict:
  prefix, idx = _layer_indices(sd)
  convs = [i for i in idx if np.ndim(sd[f'{prefix}.{i}.weight']) == 4]
  norms = [i for i in idx if np.ndim(sd[f'{prefix}.{i}.weight']) == 1]
  first, last = np.shape(sd[f'{prefix}.{convs[0]}.weight']), np.shape(sd[f'{prefix}.{convs[-1]}.weight'])
  hp = dict(in_chans=first[1], out_chans=last[0], features=first[0], depth=len(convs),
            batch_norm=bool(norms), conv_bias=f'{prefix}.{convs[1] if len(convs) > 2 else convs[-1]}.bias' in sd)
  step = 3 if norms else 2
  expected = [0] + [2 + step * k for k in range(len(convs) - 1)]
  if convs != expected:
    raise CheckpointMismatchError(f'DnCNN conv layers at {prefix} indices {convs}, expected {expected} '
                                  f'for a {"conv-BN-ReLU" if norms else "conv-ReLU"} stack')
  return hp


# ----- presets --------------------------------------------------------------------------------------
# KAIR's model zoo (cszn/KAIR), SaoYan/DnCNN-PyTorch's released nets, and the two DnCNN-17s trained
# by jaxrestore itself on a 2-core CPU (weights bundled in jaxrestore/assets/<name>/).

KAIR_URL = 'https://github.com/cszn/KAIR/releases/download/v1.0/'
SAOYAN_URL = 'https://github.com/SaoYan/DnCNN-PyTorch/raw/master/logs/'
KAIR = dict(features=64, batch_norm=False, conv_bias=True)  # BatchNorm merged into the convs
DNCNN17 = dict(in_chans=1, out_chans=1, features=64, depth=17, batch_norm=False, conv_bias=True)
TRAINED_LICENSE = 'Apache-2.0 (trained by jaxrestore on BSD400)'
# Published PSNRs (KAIR README / DnCNN paper, Set12 and BSD68).
KAIR_PUBLISHED = {15: (32.86, 31.73), 25: (30.44, 29.23), 50: (27.18, 26.23)}


def _trained_presets() -> list[Preset]:
  """Trained from the `dncnn_gray` recipe's `cpu` variant: BSD400, random 40x40 patches with flips
  and rotations, batch 16, L1, Adam 1e-3 (warm-up 100, cosine to 1e-5, clipping 1.0), He init, 1100
  steps (17,600 patches, under one pass of DnCNN's 238k-patch epoch), the last step's raw weights,
  ~33 min each on a shared 2-core CPU. `results` are measured with `jaxrestore eval` (official
  protocols: KAIR's seeded noise, SwinIR's jpeg_car) and re-checked by tests/test_train_trained_presets.py.
  They are what ~33 CPU-minutes buy: +7 dB over the noisy input on Set12 but below BM3D (32.37) and the
  published DnCNN-S (32.86); +1.0 dB PSNR and +3.0 dB PSNR-B over JPEG q20 on Classic5, below DnCNN-3 (31.63).
  """
  return [
      Preset(name='trained-dncnn-gray-dn15', architecture='dncnn', hyperparameters=dict(DNCNN17),
             task='gray_dn', channels=1, noise_level=15, bundled_weights='trained-dncnn-gray-dn15',
             weights_license=TRAINED_LICENSE,
             results={'Set12': {'psnr': 31.78}, 'BSD68': {'psnr': 30.96}},
             notes='jaxrestore train dncnn_gray:sigma=15,cpu --workdir runs/dn15 -- 1100 steps x 16 patches '
                   'of 40x40, 32.9 min on a shared 2-core CPU; noisy input: Set12 24.70 dB, BSD68 24.81 dB; '
                   'DnCNN-S paper 32.86 / 31.73, BM3D 32.37 / 31.07'),
      Preset(name='trained-dncnn-gray-car20', architecture='dncnn', hyperparameters=dict(DNCNN17),
             task='jpeg_car', channels=1, jpeg_quality=20, bundled_weights='trained-dncnn-gray-car20',
             weights_license=TRAINED_LICENSE,
             results={'Classic5': {'psnr': 31.13, 'psnrb': 30.46}},
             notes='jaxrestore train dncnn_gray:task=car,quality=20,cpu --workdir runs/car20 -- 1100 steps x '
                   '16 patches of 40x40, 32.7 min on a shared 2-core CPU; JPEG q20 input: Classic5 30.12 dB, '
                   'PSNR-B 27.50; DnCNN-3 paper 31.63'),
  ]


def presets() -> list[Preset]:
  out = []
  for sigma in (15, 25, 50):
    set12, bsd68 = KAIR_PUBLISHED[sigma]
    out.append(Preset(
        name=f'dncnn-gray-{sigma}', architecture='dncnn', task='gray_dn', channels=1, noise_level=sigma,
        hyperparameters=dict(KAIR, in_chans=1, out_chans=1, depth=17),
        checkpoint_file=f'dncnn_{sigma}.pth', weights_url=KAIR_URL + f'dncnn_{sigma}.pth',
        weights_license='MIT (cszn/KAIR)', bundled_weights='dncnn-gray-25' if sigma == 25 else None,
        results={'Set12': {'psnr': set12}, 'BSD68': {'psnr': bsd68}}, notes='results: published'))
  for color, channels in (('gray', 1), ('color', 3)):
    out.append(Preset(
        name=f'dncnn-{color}-blind', architecture='dncnn', task=f'{color}_dn', channels=channels,
        hyperparameters=dict(KAIR, in_chans=channels, out_chans=channels, depth=20),
        checkpoint_file=f'dncnn_{color}_blind.pth', weights_url=KAIR_URL + f'dncnn_{color}_blind.pth',
        weights_license='MIT (cszn/KAIR)', notes='blind: trained for sigma in [0, 55]'))
  for sigma in (15, 25, 50):
    out.append(Preset(
        name=f'dncnn-saoyan-s{sigma}', architecture='dncnn', task='gray_dn', channels=1, noise_level=sigma,
        hyperparameters=dict(in_chans=1, out_chans=1, features=64, depth=17, batch_norm=True, conv_bias=False),
        checkpoint_file=f'DnCNN-S-{sigma}/net.pth', weights_url=SAOYAN_URL + f'DnCNN-S-{sigma}/net.pth',
        weights_license='GPL-3.0 (SaoYan/DnCNN-PyTorch)',
        notes='evaluated by its authors with clamp(noisy - noise, 0, 1) and float PSNR'))
  return out + _trained_presets()


def _torch_kwargs(cfg: DnCNNConfig) -> dict:
  """spandrel's KAIR DnCNN: conv-ReLU ('R') or conv-BN-ReLU ('BR'); the same cost as either layout."""
  return dict(in_nc=cfg.in_chans, out_nc=cfg.out_chans, nc=cfg.features, nb=cfg.depth,
              act_mode='BR' if cfg.batch_norm else 'R')


ARCHITECTURE = Architecture(
    name='dncnn', config_cls=DnCNNConfig, model_cls=DnCNN, torch_params=TORCH_PARAMS,
    signature=(('model.0.weight',), ('dncnn.0.weight',)), rejects=rejects,
    hyperparameters_from_state_dict=hyperparameters_from_state_dict, presets=presets,
    torch_reference=TorchReference('spandrel.architectures.DnCNN', 'DnCNN', _torch_kwargs, 'spandrel==0.4.2'),
    description='DnCNN (Zhang et al., TIP 2017): KAIR and SaoYan/DnCNN-PyTorch layouts')
