"""Training: configs as code (`jaxrestore.configs.train`), a sharded jitted train step, orbax
checkpoints with exact resume, grain data pipelines (`jaxrestore.data`), and export to a
directory `jaxrestore.load(weights=...)` reads. `jaxrestore train CONFIG` is the command line."""
from __future__ import annotations

from .trainer import (build, export, export_checkpoint, init_state, make_train_step, read_metrics,
                      resolve_model, train)

__all__ = ['train', 'build', 'init_state', 'make_train_step', 'export', 'export_checkpoint', 'read_metrics',
           'resolve_model']
