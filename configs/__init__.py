"""Configs as code (installed as `jaxrestore.configs`): named model presets and training recipes."""
from __future__ import annotations

from .presets import Preset
from .dncnn import dncnn_presets
from .hair import hair_presets
from .promptir import promptir_presets
from .restormer import restormer_presets
from .swinir import swinir_presets
from .trained import trained_presets

PRESETS: dict[str, Preset] = {p.name: p for p in swinir_presets() + dncnn_presets() + restormer_presets()
                              + promptir_presets() + hair_presets() + trained_presets()}

__all__ = ['Preset', 'PRESETS']
