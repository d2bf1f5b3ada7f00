"""Configs as code (installed as `jaxrestore.configs`): named model presets and training recipes."""
from __future__ import annotations

from .presets import Preset
from .dncnn import dncnn_presets
from .swinir import swinir_presets

PRESETS: dict[str, Preset] = {p.name: p for p in swinir_presets() + dncnn_presets()}

__all__ = ['Preset', 'PRESETS']
