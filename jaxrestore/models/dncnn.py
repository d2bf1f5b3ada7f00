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
from jaxrestore.convert.mapping import CheckpointMismatchError, ParamMap, Rule, conv_oihw_to_hwio


@dataclasses.dataclass(frozen=True)
class DnCNNConfig:
  in_chans: int = 1
  out_chans: int = 1
  features: int = 64
  depth: int = 17                 # number of conv layers
  batch_norm: bool = False        # BatchNorm after every middle conv (False: merged into the convs)
  conv_bias: bool = True
  dtype: Any = None
  param_dtype: Any = jnp.float32

  def __post_init__(self):
    if self.depth < 2:
      raise ValueError(f'DnCNN needs at least 2 conv layers, got depth={self.depth}')

  @property
  def scale(self) -> int:
    return 1

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
    if x.ndim != 4 or x.shape[-1] != cfg.in_chans:
      raise ValueError(f'DnCNN expects NHWC input with {cfg.in_chans} channels, got shape {x.shape}')
    x = x.astype(cfg.dtype or x.dtype)
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


def missing_signature(sd) -> list[str]:
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
