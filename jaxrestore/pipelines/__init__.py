"""Multi-model restorers built from the library's models: `DreamClear` (SwinIR cleaner, SD VAE,
T5-XXL captions and the DreamClear DiT, as the official test.py).

`PIPELINES` maps a `jaxrestore restore --model NAME` to the pipeline's CLI glue (`add_arguments`,
`run`); importing this package stays light, the pipelines themselves load on first use.
"""
from __future__ import annotations

import dataclasses
import importlib
from typing import Callable

from jaxrestore.pipelines import cli as _cli


@dataclasses.dataclass(frozen=True)
class Pipeline:
  name: str
  description: str
  add_arguments: Callable        # add_arguments(argparse parser)
  run: Callable                  # run(args, inputs: list[Path], out_dir: Path) -> exit code


PIPELINES = {
    'dreamclear': Pipeline(
        'dreamclear', 'DreamClear (NeurIPS 2024): SwinIR cleaner + SD VAE + T5-XXL + DiT, 50 IDDPM steps',
        _cli.add_arguments, _cli.run),
}

_LAZY = {'DreamClear': ('jaxrestore.pipelines.dreamclear', 'DreamClear'),
         'DreamClearResult': ('jaxrestore.pipelines.dreamclear', 'DreamClearResult')}

__all__ = ['PIPELINES', 'Pipeline', 'DreamClear', 'DreamClearResult']


def __getattr__(name: str):
  if name not in _LAZY:
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
  module, attr = _LAZY[name]
  value = getattr(importlib.import_module(module), attr)
  globals()[name] = value
  return value
