"""jaxrestore: image-restoration networks in JAX/Flax NNX, faithful to the PyTorch originals."""
from __future__ import annotations

__version__ = '0.1.0'

from jaxrestore.api import get_preset, load, presets
from jaxrestore.inference import restore
from jaxrestore import convert, kernels

__all__ = ['load', 'presets', 'get_preset', 'restore', 'convert', 'kernels', '__version__']
