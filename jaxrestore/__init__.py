"""jaxrestore: image-restoration networks in JAX/Flax NNX, faithful to the PyTorch originals.

The top-level names are imported on first use, so `import jaxrestore.kernels` (or any other
subpackage) loads only that layer and the ones below it.
"""
from __future__ import annotations

import importlib

__version__ = '0.1.0'

_LAZY = {
    'load': ('jaxrestore.api', 'load'),
    'presets': ('jaxrestore.api', 'presets'),
    'get_preset': ('jaxrestore.api', 'get_preset'),
    'restore': ('jaxrestore.inference', 'restore'),
    'convert': ('jaxrestore.convert', None),
    'kernels': ('jaxrestore.kernels', None),
    'registry': ('jaxrestore.registry', None),
}

__all__ = ['load', 'presets', 'get_preset', 'restore', 'convert', 'kernels', 'registry', '__version__']


def __getattr__(name: str):
  if name not in _LAZY:
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
  module_name, attr = _LAZY[name]
  module = importlib.import_module(module_name)
  value = module if attr is None else getattr(module, attr)
  globals()[name] = value
  return value


def __dir__():
  return sorted(set(globals()) | set(_LAZY))
