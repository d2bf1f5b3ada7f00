"""HAIR all-in-one restoration, 3 degradations (Cao et al. 2024; the PromptIR/AirNet setting):
Gaussian denoising (sigma 15/25/50 on BSD400+WED), deraining (Rain100L pairs) and dehazing
(SOTS-outdoor / RESIDE pairs), mixed in one stream. Recipe (PromptIR `train.py`, which HAIR
follows): 128x128 patches, batch 32 (8 per GPU x 4), AdamW 2e-4 with linear warm-up over 15 epochs
then cosine decay over 150 epochs (expressed here in steps), L1 loss.

The model is referenced by architecture name ('hair'): a jaxrestore without it registered
(`jaxrestore.registry.architectures()`) stops at once with a clear error instead of half-starting. The paired sets
are manual downloads: set `data.sources.1.folder`/`.lq_folder` (rain) and `data.sources.2.*` (haze).
"""
from __future__ import annotations

from . import base_config, parse_arg

STEPS_PER_EPOCH = 1_200   # ~38k training patches per PromptIR epoch / batch 32


def get_config(arg=None):
  a = parse_arg(arg, cpu=False, steps=0)
  c = base_config()
  c.model = dict(architecture='hair', hyperparameters=dict(inp_channels=3, out_channels=3))
  c.data.sources = [
      dict(dataset='bsd400', mode='RGB', weight=1.0,
           degradation=dict(kind='mixture', components=[dict(kind='gaussian', sigma=s) for s in (15, 25, 50)])),
      dict(dataset='rain100l', folder=None, lq_folder=None, mode='RGB', weight=1.0, degradation=None),
      dict(dataset='sots_outdoor', folder=None, lq_folder=None, mode='RGB', weight=1.0, degradation=None),
  ]
  c.data.patch_size = 128
  c.data.batch_size = 32
  c.loss = dict(l1=1.0)
  c.optimizer = dict(name='adamw', lr=2e-4, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.01, clip_norm=None)
  c.total_steps = 150 * STEPS_PER_EPOCH
  c.schedule = dict(kind='cosine', warmup_steps=15 * STEPS_PER_EPOCH, warmup_init=0.0, end_value=0.0)
  c.ema_decay = 0.0
  c.sharding = 'fsdp'
  c.checkpoint = dict(every=5_000, keep=3, async_save=True)
  c.log_every = 100
  c.eval = dict(every=10_000, dataset='CBSD68', task='color_dn', noise_level=25, max_images=None, use_ema=False)
  if a.cpu:
    c.model.hyperparameters.update(num_blocks=[1, 1, 1, 1], num_refinement_blocks=1)
    c.data.sources = c.data.sources[:1]
    c.data.patch_size = 48
    c.data.batch_size = 4
    c.total_steps = a.steps or 200
    c.schedule.warmup_steps = 20
    c.eval.update(every=100, max_images=2)
    c.log_every = 10
  return c
