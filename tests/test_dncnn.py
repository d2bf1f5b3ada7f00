"""DnCNN parity: spandrel's KAIR DnCNN (random weights, with and without BatchNorm), a SaoYan-style
PyTorch stack, and the real checkpoints in the shared data folder."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from flax import nnx

import jaxrestore
from jaxrestore.models import dncnn
from jaxrestore.registry import detect_architecture

from torch_reference import randomize_, run_nchw

from spandrel.architectures.DnCNN import DnCNN as KairDnCNN  # noqa: E402  (after the shim)


def _forward(model, x):
  return np.asarray(nnx.jit(lambda m, v: m(v))(model, x))


def _randomize_bn_stats_(model, seed=0):
  g = torch.Generator().manual_seed(seed)
  for m in model.modules():
    if isinstance(m, nn.BatchNorm2d):
      m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
      m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
  return model


def _saoyan_dncnn(channels=1, depth=17, features=64):
  """The SaoYan/DnCNN-PyTorch network, written from its published structure."""
  layers = [nn.Conv2d(channels, features, 3, padding=1, bias=False), nn.ReLU(inplace=True)]
  for _ in range(depth - 2):
    layers += [nn.Conv2d(features, features, 3, padding=1, bias=False), nn.BatchNorm2d(features),
               nn.ReLU(inplace=True)]
  layers.append(nn.Conv2d(features, channels, 3, padding=1, bias=False))
  net = nn.Module()
  net.dncnn = nn.Sequential(*layers)
  return net


@pytest.mark.parametrize('act_mode,nb,channels', [('R', 17, 1), ('BR', 7, 3), ('R', 20, 3)])
def test_kair_dncnn_random_weights(act_mode, nb, channels, tmp_path):
  tmodel = KairDnCNN(in_nc=channels, out_nc=channels, nc=32, nb=nb, act_mode=act_mode)
  _randomize_bn_stats_(randomize_(tmodel, seed=nb))
  torch.save(tmodel.state_dict(), tmp_path / 'kair.pth')
  model = jaxrestore.load(weights=tmp_path / 'kair.pth')
  assert model.config == dncnn.DnCNNConfig(in_chans=channels, out_chans=channels, features=32, depth=nb,
                                           batch_norm=act_mode == 'BR', conv_bias=True)
  x = np.random.default_rng(0).random((2, 23, 31, channels), dtype=np.float32)
  np.testing.assert_allclose(_forward(model, x), run_nchw(tmodel, x), atol=1e-5, rtol=0)


def test_saoyan_dataparallel_checkpoint(tmp_path):
  net = _saoyan_dncnn(depth=9, features=16)
  _randomize_bn_stats_(randomize_(net, seed=2))
  sd = {f'module.{k}': v for k, v in net.state_dict().items() if not k.endswith('num_batches_tracked')}
  torch.save(sd, tmp_path / 'net.pth', _use_new_zipfile_serialization=False)
  model = jaxrestore.load(weights=tmp_path / 'net.pth')
  assert model.config.batch_norm and not model.config.conv_bias and model.config.depth == 9
  x = np.random.default_rng(1).random((1, 29, 17, 1), dtype=np.float32)
  with torch.no_grad():
    noise = net.dncnn(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy().transpose(0, 2, 3, 1)
  np.testing.assert_allclose(_forward(model, x), x - noise, atol=1e-5, rtol=0)


@pytest.mark.parametrize('name,batch_norm', [('dncnn_25.pth', False), ('saoyan_dncnn_s15.pth', True),
                                             ('saoyan_dncnn_s25.pth', True)])
def test_real_checkpoints_match_pytorch(data_dir, name, batch_norm):
  path = data_dir / 'checkpoints' / name
  model = jaxrestore.load(weights=path)
  assert model.config.depth == 17 and model.config.batch_norm == batch_norm
  sd = torch.load(path, map_location='cpu', weights_only=True)
  if batch_norm:
    net = _saoyan_dncnn()
    net.load_state_dict({k.removeprefix('module.'): v for k, v in sd.items()}, strict=False)
    forward = lambda t: t - net.dncnn(t)
  else:
    net = KairDnCNN(in_nc=1, out_nc=1, nc=64, nb=17, act_mode='R')
    net.load_state_dict(sd)
    forward = net
  net.eval()
  x = np.random.default_rng(0).random((1, 41, 37, 1), dtype=np.float32)
  with torch.no_grad():
    ref = forward(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy().transpose(0, 2, 3, 1)
  np.testing.assert_allclose(_forward(model, x), ref, atol=1e-5, rtol=0)


def test_bundled_preset_is_the_kair_checkpoint(data_dir):
  bundled = jaxrestore.load('dncnn-gray-25')
  shared = jaxrestore.load(weights=data_dir / 'checkpoints' / 'dncnn_25.pth')
  x = np.random.default_rng(2).random((1, 16, 16, 1), dtype=np.float32)
  np.testing.assert_array_equal(_forward(bundled, x), _forward(shared, x))


def test_detection_rejects_a_broken_stack():
  sd = {f'model.{i}.weight': np.zeros((8, 8, 3, 3), np.float32) for i in (0, 2, 6)}
  with pytest.raises(ValueError, match='expected'):
    detect_architecture(sd)
