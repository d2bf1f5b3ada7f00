"""DnCNN-S (Zhang et al., TIP 2017) on BSD400, gray: Gaussian denoising (`task=dn`, `sigma`) or
JPEG deblocking (`task=car`, `quality`). The model is KAIR's BatchNorm-free DnCNN-17 (convs with
bias), the layout of its released `dncnn_*.pth`, so it trains without train-mode BatchNorm.

Published recipe (KAIR `options/train_dncnn.json`): random 40x40 patches of Train400 with the 8
flips/rotations, batch 64, Adam 1e-4, L1 loss, lr halved at [200k, 400k, 600k, 800k] steps; sigma
fixed per model (the paper's DnCNN-S). `cpu`: the recipe of the bundled trained defaults
(`configs/trained.py`): same model and data, Adam 1e-3 with warm-up and cosine decay to 1e-5,
batch 16, so that ~30 CPU-minutes get close to convergence. `tiny`: a 3-layer, 8-feature net on
24px patches for tests (seconds).

    jaxrestore train dncnn_gray:sigma=15,cpu
    jaxrestore train dncnn_gray:task=car,quality=20,cpu
"""
from __future__ import annotations

from . import base_config, parse_arg


def get_config(arg=None):
  a = parse_arg(arg, task='dn', sigma=15, quality=20, cpu=False, tiny=False, steps=0)
  c = base_config()
  c.model = dict(architecture='dncnn', init='kaiming_normal',  # He init, as the paper
                 hyperparameters=dict(in_chans=1, out_chans=1, features=64, depth=17, batch_norm=False,
                                      conv_bias=True))
  c.data.train = dict(dataset='bsd400', mode='L')
  c.data.patch_size = 40
  c.data.batch_size = 64
  if a.task == 'dn':
    c.data.degradation = dict(kind='gaussian', sigma=float(a.sigma))
    c.eval = dict(every=20_000, dataset='Set12', task='gray_dn', noise_level=float(a.sigma), max_images=None,
                  use_ema=True)
  elif a.task == 'car':
    c.data.degradation = dict(kind='jpeg', quality=int(a.quality))
    c.eval = dict(every=20_000, dataset='Classic5', task='jpeg_car', jpeg_quality=int(a.quality), max_images=None,
                  use_ema=True)
  else:
    raise ValueError(f"dncnn_gray: task must be 'dn' or 'car', got {a.task!r}")
  c.loss = dict(l1=1.0)
  c.optimizer = dict(name='adam', lr=1e-4, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0, clip_norm=None)
  c.total_steps = 1_000_000
  c.schedule = dict(kind='multistep', milestones=[200_000, 400_000, 600_000, 800_000], gamma=0.5,
                    warmup_steps=0)
  c.ema_decay = 0.999
  c.checkpoint = dict(every=10_000, keep=3, async_save=True)
  c.log_every = 200

  if a.cpu:
    c.total_steps = a.steps or 1100
    c.data.batch_size = 16
    c.optimizer.update(lr=1e-3, clip_norm=1.0)
    c.schedule = dict(kind='cosine', warmup_steps=100, warmup_init=0.01, end_value=1e-5)
    c.ema_decay = 0.999
    c.checkpoint = dict(every=200, keep=3, async_save=True)
    c.eval.update(every=400, max_images=4, use_ema=False)
    c.export = dict(which='params', dir=None)  # the bundled weights: the last step's raw parameters
    c.log_every = 50
  if a.tiny:
    c.model.hyperparameters.update(depth=3, features=8)
    c.total_steps = a.steps or 8
    c.data.patch_size = 24
    c.data.batch_size = 4
    c.data.num_threads = 1
    c.optimizer.update(lr=1e-3)
    c.schedule = dict(kind='constant', warmup_steps=0)
    c.ema_decay = 0.9
    c.checkpoint = dict(every=2, keep=3, async_save=True)
    c.eval = dict(every=0, dataset=None)
    c.log_every = 1
    c.tensorboard = False
  return c
