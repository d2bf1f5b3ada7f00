"""DualFreq (Dformer + Rformer) all-in-one, 3 degradations — the PromptIR/AirNet setting that HAIR,
PromptIR and AdaIR report: Gaussian denoising (sigma 15/25/50 on BSD400 + WED), deraining (Rain100L
pairs) and dehazing (RESIDE-OTS pairs, tested on SOTS-outdoor), mixed in one stream, on the same
schedule as `hair_3deg` so the comparison is equal: 128x128 patches, batch 32, AdamW 2e-4, linear
warm-up over 15 epochs then cosine over 150, L1 loss.

The paired sets and WED are downloads you provide: `data.sources.0.folder` (a folder holding BSD400 +
WED; BSD400 alone by default), `data.sources.1.folder` / `.lq_folder` (Rain100L clean / rainy),
`data.sources.2.*` (OTS clean / hazy).
Variants: `cpu` (a few hundred steps on a laptop: dualfreq-small shrunk, BSD400 with on-the-fly noise,
rain and haze — no downloads), `tiny` (a handful of steps, for CI), `ablation=no_prior|no_bands`.
"""
from __future__ import annotations

from . import hair_3deg, parse_arg

SYNTHETIC = {  # on-the-fly stand-ins for the paired sets, used by the cpu/tiny variants
    'rain': dict(kind='rain'),
    'haze': dict(kind='haze'),
    'blur': dict(kind='mixture', components=[dict(kind='gaussian_blur'), dict(kind='motion_blur')]),
    'low_light': dict(kind='low_light'),
}
ABLATIONS = {'none': {}, 'no_prior': dict(use_prior=False), 'no_bands': dict(band_attention=False)}


def model_config(preset: str, ablation: str) -> dict:
  if ablation not in ABLATIONS:
    raise ValueError(f'dualfreq: ablation must be one of {sorted(ABLATIONS)}, got {ablation!r}')
  return dict(preset=preset, hyperparameters=dict(ABLATIONS[ablation]))


def paired(name: str) -> dict:
  return dict(dataset=name, folder=None, lq_folder=None, mode='RGB', weight=1.0, degradation=None)


def noise_source() -> dict:
  return dict(dataset='bsd400', mode='RGB', weight=1.0,
              degradation=dict(kind='mixture', components=[dict(kind='gaussian', sigma=s) for s in (15, 25, 50)]))


def get_config(arg=None, tasks=('rain100l', 'ots')):
  a = parse_arg(arg, cpu=False, tiny=False, steps=0, ablation='none')
  c = hair_3deg.get_config()  # the same patches, batch, optimizer, schedule, loss and evaluation
  c.model = model_config('dualfreq-base', a.ablation)
  c.data.sources = [noise_source()] + [paired(t) for t in tasks]
  c.sharding = 'fsdp_tp'
  if a.cpu or a.tiny:
    synthetic = ['rain', 'haze'] if len(tasks) == 2 else ['rain', 'haze', 'blur', 'low_light']
    c.model = model_config('dualfreq-small', a.ablation)
    c.data.sources = [noise_source()] + [dict(dataset='bsd400', mode='RGB', weight=1.0, degradation=SYNTHETIC[s])
                                         for s in synthetic]
    c.data.patch_size = 64
    c.data.batch_size = 8
    c.total_steps = a.steps or 600
    c.schedule.update(warmup_steps=50, warmup_init=0.01)
    c.optimizer.update(lr=5e-4, clip_norm=1.0)
    c.checkpoint = dict(every=200, keep=2, async_save=True)
    c.eval.update(every=200, max_images=2)
    c.log_every = 20
  if a.tiny:
    c.model.hyperparameters.update(dim=8, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1, heads=[1, 1, 2, 2],
                                   prior_dim=16, dformer_depth=1, dformer_heads=2, dformer_grid=2, dwt_levels=2)
    c.data.patch_size = 32
    c.data.batch_size = 2
    c.data.num_threads = 1
    c.total_steps = a.steps or 3
    c.schedule = dict(kind='constant', warmup_steps=0)
    c.checkpoint = dict(every=3, keep=1, async_save=False)
    c.eval = dict(every=0, dataset=None)
    c.log_every = 1
    c.tensorboard = False
  return c
