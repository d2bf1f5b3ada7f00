"""optax optimizers and learning-rate schedules from the `optimizer` / `schedule` config.

Schedules (all with an optional linear warm-up from `warmup_init` * lr over `warmup_steps`):
  * 'constant'
  * 'multistep': lr * gamma^(number of milestones passed) -- SwinIR/KAIR's MultiStepLR
    (milestones [250k, 400k, 450k, 475k], gamma 0.5 over 500k steps).
  * 'cosine': cosine decay from lr to `end_value` over the steps after warm-up (HAIR/PromptIR).
"""
from __future__ import annotations

import optax


def make_schedule(cfg, total_steps: int, lr: float) -> optax.Schedule:
  kind = cfg.get('kind', 'constant')
  warmup = int(cfg.get('warmup_steps', 0) or 0)
  if kind == 'constant':
    main = optax.constant_schedule(lr)
  elif kind == 'multistep':
    milestones = [int(m) for m in cfg.get('milestones', [])]
    gamma = float(cfg.get('gamma', 0.5))
    # Milestones count from the start of training (as torch's MultiStepLR), not from warm-up's end.
    main = optax.piecewise_constant_schedule(lr, {max(m - warmup, 0): gamma for m in milestones})
  elif kind == 'cosine':
    main = optax.cosine_decay_schedule(lr, max(total_steps - warmup, 1),
                                       alpha=float(cfg.get('end_value', 0.0)) / lr if lr else 0.0)
  else:
    raise ValueError(f"unknown schedule kind {kind!r}; known: 'constant', 'multistep', 'cosine'")
  if not warmup:
    return main
  ramp = optax.linear_schedule(float(cfg.get('warmup_init', 0.0)) * lr, lr, warmup)
  return optax.join_schedules([ramp, main], [warmup])


def make_optimizer(cfg, schedule: optax.Schedule) -> optax.GradientTransformation:
  name = cfg.get('name', 'adam').lower()
  b1, b2, eps = float(cfg.get('b1', 0.9)), float(cfg.get('b2', 0.999)), float(cfg.get('eps', 1e-8))
  wd = float(cfg.get('weight_decay', 0.0) or 0.0)
  if name == 'adam':
    # torch.optim.Adam's weight_decay is an L2 term added to the gradient before the moments.
    tx = optax.adam(schedule, b1=b1, b2=b2, eps=eps)
    if wd:
      tx = optax.chain(optax.add_decayed_weights(wd), tx)
  elif name == 'adamw':
    tx = optax.adamw(schedule, b1=b1, b2=b2, eps=eps, weight_decay=wd)
  else:
    raise ValueError(f"unknown optimizer {name!r}; known: 'adam', 'adamw'")
  clip = cfg.get('clip_norm')
  if clip:
    tx = optax.chain(optax.clip_by_global_norm(float(clip)), tx)
  return tx
