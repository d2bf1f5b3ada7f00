"""Shared test setup: where the shared data lives, and the torchvision shim for spandrel."""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# spandrel imports torchvision at import time, but only for two architectures we never use
# (LaMa, RestoreFormer). PyPI's torchvision does not import beside the CPU torch build we pin, so
# when no torchvision is installed the tests put a tiny stand-in on the path (tests/shims/).
if importlib.util.find_spec('torchvision') is None:
  sys.path.insert(0, str(REPO / 'tests' / 'shims'))


def data_root() -> Path:
  """The shared data folder: $JAXRESTORE_DATA, default ../shared/data beside the checkout."""
  return Path(os.environ.get('JAXRESTORE_DATA', REPO.parent / 'shared' / 'data')).resolve()


# The library itself never guesses where data lives; the test session tells it (and its subprocesses).
os.environ['JAXRESTORE_DATA'] = str(data_root())


@pytest.fixture(scope='session')
def data_dir() -> Path:
  root = data_root()
  if not (root / 'testsets').is_dir():
    raise FileNotFoundError(f'shared test data not found at {root}; set JAXRESTORE_DATA')
  return root


@pytest.fixture(scope='session')
def golden(data_dir) -> Path:
  """Inputs, weights and outputs of the official implementations (see its README)."""
  return data_dir / 'golden'
