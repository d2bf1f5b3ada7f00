"""Training data: tfds builders for image folders (array_record, no TensorFlow) and grain pipelines
with on-the-fly degradations."""
from __future__ import annotations

from .degradations import (JPEG, ColoredNoise, GaussianNoise, Identity, Mixture, make_degradation,
                           radial_power_slope)
from .pipeline import Source, augment, global_examples, load_sources, make_iterator, make_train_iterator
from .tfds_builders import KNOWN_FOLDERS, prepare, prepare_known, resolve_folder

__all__ = ['JPEG', 'ColoredNoise', 'GaussianNoise', 'Identity', 'Mixture', 'make_degradation',
           'radial_power_slope', 'Source', 'augment', 'global_examples', 'load_sources', 'make_iterator',
           'make_train_iterator', 'KNOWN_FOLDERS', 'prepare', 'prepare_known', 'resolve_folder']
