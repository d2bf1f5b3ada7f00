"""One evaluator for `jaxrestore eval`, trainer validation and the benchmarks.

It runs a model through the inference engine (`jaxrestore.inference`: weights placed once, one
compilation per input shape, a data mesh, optional bfloat16) under the official protocol of a task
(`jaxrestore.eval.protocol`):

    evaluator = Evaluator(model)                        # or Evaluator(model, dtype=jnp.bfloat16)
    protocol = protocol_for(preset, model.config)       # or Protocol(task=..., window=config.eval_pad_multiple)
    test_set = evaluator.prepare(protocol, dataset=folder)   # checked: decodes, checksums, fingerprint
    result = evaluator.evaluate(test_set, protocol)     # EvalResult: names, per-image scores, mean()

Whole images are restored by default, as the official scripts do; `tile` restores overlapping
tiles instead (for images too large for memory; numbers then differ slightly from the official ones).
"""
from __future__ import annotations

import csv
import dataclasses
import json
import os
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from jaxrestore import imageio, inference
from . import protocol as proto
from .testset import TestSet, prepare


class Evaluator:
  """A model prepared for scoring: `restore(x)` maps one HWC float32 image in [0, 1] to its output."""

  def __init__(self, model, *, dtype=None, mesh=None, tile: int | None = None,
               overlap: int = inference.DEFAULT_OVERLAP, batch_size: int | None = None):
    self.model = model
    self.dtype = dtype
    self.mesh = mesh
    self.tile = tile or None
    self.overlap = overlap
    self.batch_size = batch_size

  @property
  def config(self):
    return self.model.config

  def restore(self, x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    if self.tile is not None:
      with warnings.catch_warnings():  # protocol inputs (unclipped noise) may exceed 1 by design
        warnings.filterwarnings('ignore', message='restore: float image')
        return inference.restore(self.model, x, tile=self.tile, overlap=self.overlap, batch_size=self.batch_size,
                                 dtype=self.dtype, mesh=self.mesh)
    # The whole image in one call (any channel count, e.g. 6 for dual-pixel input), padded to the
    # device count along the batch: the restorer compiles once per shape and reuses it.
    restorer = inference.get_restorer(self.model, dtype=self.dtype, mesh=self.mesh)
    batch = np.zeros((restorer.num_devices, *x.shape), np.float32)
    batch[0] = x
    return restorer(batch)[0]

  def prepare(self, protocol: proto.Protocol, *, dataset: Path | None = None, lq: Path | None = None,
              gt: Path | None = None, lq_right: Path | None = None, name: str | None = None,
              limit: int | None = None, skip_unreadable: bool = False,
              max_pixels: int | None = imageio.DEFAULT_MAX_PIXELS, on_file=None) -> TestSet:
    return prepare_test_set(protocol, dataset=dataset, lq=lq, gt=gt, lq_right=lq_right, name=name, limit=limit,
                            skip_unreadable=skip_unreadable, max_pixels=max_pixels, on_file=on_file)

  def evaluate(self, samples: TestSet | Sequence, protocol: proto.Protocol, *,
               on_image: Callable[[str, dict], None] | None = None) -> proto.EvalResult:
    items = samples.samples if isinstance(samples, TestSet) else list(samples)
    return proto.evaluate(self.restore, items, protocol, on_image=on_image)


def prepare_test_set(protocol: proto.Protocol, *, dataset: Path | None = None, lq: Path | None = None,
                     gt: Path | None = None, lq_right: Path | None = None, name: str | None = None,
                     limit: int | None = None, skip_unreadable: bool = False,
                     max_pixels: int | None = imageio.DEFAULT_MAX_PIXELS, on_file=None) -> TestSet:
  """The checked samples of a test set (see `jaxrestore.eval.testset.prepare`)."""
  samples = proto.build_samples(protocol, dataset=dataset, lq=lq, gt=gt, lq_right=lq_right)
  if limit:
    samples = samples[:limit]
  label = name or (dataset.name if dataset is not None else (lq.parent.name if lq is not None else '?'))
  return prepare(samples, protocol, name=label, skip_unreadable=skip_unreadable, max_pixels=max_pixels,
                 on_file=on_file)


# ----- reports ---------------------------------------------------------------------------------------

def report(result: proto.EvalResult, test_set: TestSet | None, **context: Any) -> dict[str, Any]:
  """Everything a number depends on, as one JSON-able dict."""
  from jaxrestore import __version__
  out = dict(context)
  out.update(jaxrestore_version=__version__, protocol=dataclasses.asdict(result.protocol),
             official=result.protocol.spec.official, images=result.names, scores=result.scores,
             mean=result.mean())
  if test_set is not None:
    out['test_set'] = test_set.as_dict()
    out['image_list_sha256'] = test_set.list_sha256
  return out


def write_json(path: str | Path, data: dict) -> None:
  """A new file (never overwrites), written whole or not at all."""
  _write_new(Path(path), json.dumps(data, indent=2) + '\n')


def write_csv(path: str | Path, result: proto.EvalResult, test_set: TestSet | None) -> None:
  """One row per image, then `mean`, then `image_list_sha256` (in the second column)."""
  import io
  buffer = io.StringIO()
  writer = csv.writer(buffer)
  keys = list(result.scores)
  writer.writerow(['image', *keys])
  for i, name in enumerate(result.names):
    writer.writerow([name, *(f'{result.scores[k][i]:.6f}' for k in keys)])
  mean = result.mean()
  writer.writerow(['mean', *(f'{mean[k]:.6f}' for k in keys)])
  if test_set is not None:
    writer.writerow(['image_list_sha256', test_set.list_sha256, *([''] * (len(keys) - 1))])
  _write_new(Path(path), buffer.getvalue())


def _write_new(path: Path, text: str) -> None:
  tmp = path.with_name(f'.{path.name}.partial')
  try:
    tmp.write_text(text)
    try:
      os.link(tmp, path)  # atomic, and refuses an existing file
    except FileExistsError:
      raise FileExistsError(f'{path} exists; reports never overwrite a file') from None
    except OSError:  # a filesystem without hard links
      with open(path, 'x') as f:
        f.write(text)
  finally:
    tmp.unlink(missing_ok=True)


def format_row(name: str, row: dict, width: int = 24) -> str:
  return f'{name:{width}s} ' + '  '.join(f'{v:8.4f}' for v in row.values())


def format_header(keys, width: int = 24) -> str:
  return f'{"image":{width}s} ' + '  '.join(f'{k:>8s}' for k in keys)


__all__ = ['Evaluator', 'prepare_test_set', 'report', 'write_json', 'write_csv', 'format_row', 'format_header']
