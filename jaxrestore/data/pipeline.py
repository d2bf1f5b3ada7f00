"""grain training pipelines: records -> random patch -> flips/rotations -> degradation -> batches.

Determinism is by construction, not by iteration history: the example at global position g (step
s, row j of the global batch: g = s * global_batch + j) is a pure function of (seed, g). The record
order comes from grain's index shuffle (reshuffled every epoch) and mixture, and the crop,
augmentation and degradation from a Generator grain seeds with (seed, g). Each process then reads
only rows [p * local_batch, (p + 1) * local_batch) of every global batch, so any number of hosts
together produce the same global batches as one host, and a run resumed at step s (the grain
iterator state is checkpointed) sees exactly the batches it would have seen.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import grain
import numpy as np

from . import degradations as degradations_lib
from . import tfds_builders


@dataclasses.dataclass
class Source:
  """One training source: random-access records, a degradation and a mixing weight."""
  records: Any                   # len() and [i] -> {'image'} (clean) or {'lq', 'gt'} (paired)
  degradation: Callable = degradations_lib.Identity()
  weight: float = 1.0
  name: str = ''

  @property
  def paired(self) -> bool:
    return 'lq' in self.records[0]


class InMemory:
  """All records decoded once (a small training set is decoded thousands of times otherwise)."""

  def __init__(self, records):
    self.items = [records[i] for i in range(len(records))]

  def __len__(self):
    return len(self.items)

  def __getitem__(self, index):
    return self.items[index]


def load_sources(data_cfg) -> list[Source]:
  """`Source`s from the `data` config: `train` (one source, with `degradation`) or `sources`
  (a list of the same fields plus `weight`)."""
  specs = data_cfg.get('sources') or [dict(data_cfg['train'], degradation=data_cfg.get('degradation'))]
  sources = []
  for spec in specs:
    folder, mode, name = tfds_builders.resolve_folder(spec.get('dataset'), spec.get('folder'), spec.get('mode'))
    lq_folder = spec.get('lq_folder')
    records = tfds_builders.prepare(folder, mode=mode, lq_folder=lq_folder, name=name,
                                    data_dir=data_cfg.get('tfds_dir'))
    if data_cfg.get('cache_in_memory', True):
      records = InMemory(records)
    degradation = degradations_lib.make_degradation(spec.get('degradation'))
    sources.append(Source(records, degradation, float(spec.get('weight', 1.0)), name))
  return sources


def _as_image(x) -> np.ndarray:
  x = np.asarray(x)
  return x[..., None] if x.ndim == 2 else x


def augment(img: np.ndarray, mode: int) -> np.ndarray:
  """KAIR's `augment_img` modes 0-7: the 8 symmetries of the square (flips and 90° rotations)."""
  if mode & 4:
    img = np.swapaxes(img, 0, 1)
  if mode & 2:
    img = img[::-1]
  if mode & 1:
    img = img[:, ::-1]
  return img


@dataclasses.dataclass
class MakeExample(grain.transforms.RandomMap):
  """Record -> {'lq', 'gt'} float32 HWC patches in [0, 1] (lq unclipped for noise)."""
  degradations: Sequence[Callable]
  patch_size: int
  augment: bool = True

  def random_map(self, record, rng: np.random.Generator):
    p = self.patch_size
    if 'image' in record:
      images = [_as_image(record['image'])]
    else:
      images = [_as_image(record['lq']), _as_image(record['gt'])]
    h, w = images[-1].shape[:2]
    if h < p or w < p:
      raise ValueError(f'training image {record.get("name")!r} is {h}x{w}, smaller than patch {p}')
    if any(im.shape[:2] != (h, w) for im in images):
      raise ValueError(f'paired images of {record.get("name")!r} differ in size')
    top, left = int(rng.integers(0, h - p + 1)), int(rng.integers(0, w - p + 1))
    mode = int(rng.integers(0, 8)) if self.augment else 0
    patches = [np.ascontiguousarray(augment(im[top:top + p, left:left + p], mode)).astype(np.float32) / 255.0
               for im in images]
    if len(patches) == 1:
      gt = patches[0]
      lq = self.degradations[record['source']](gt, rng)
    else:
      lq, gt = patches
      lq = self.degradations[record['source']](lq, rng)
    return {'lq': np.asarray(lq, np.float32), 'gt': gt}


class HostRows(grain.MapDataset):
  """Index i of process p -> global position (i // local) * global + p * local + i % local."""

  def __init__(self, parent, *, global_batch: int, local_batch: int, process_index: int, num_steps: int):
    super().__init__(parent)
    self.global_batch, self.local_batch, self.process_index = global_batch, local_batch, process_index
    self.length = num_steps * local_batch

  def __len__(self):
    return self.length

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.slice(index)
    step, row = divmod(index, self.local_batch)
    return self._parent[step * self.global_batch + self.process_index * self.local_batch + row]

  def __str__(self):
    return f'HostRows(process {self.process_index}, {self.local_batch} of {self.global_batch})'


def global_examples(sources: Sequence[Source], *, patch_size: int, seed: int, augment: bool = True):
  """The global example stream: MapDataset whose element g is a pure function of (seed, g)."""
  streams = []
  for i, src in enumerate(sources):
    ds = grain.MapDataset.source(src.records).map(lambda r, i=i: {**r, 'source': i})
    streams.append(ds.shuffle(seed=(seed * 1009 + i) % 2**32).repeat())
  records = streams[0] if len(streams) == 1 else grain.MapDataset.mix(streams, [s.weight for s in sources])
  make = MakeExample([s.degradation for s in sources], patch_size, augment)
  return records.random_map(make, seed=seed % 2**32)


def make_iterator(sources: Sequence[Source], *, patch_size: int, global_batch: int, num_steps: int,
                  seed: int, augment: bool = True, process_index: int = 0, process_count: int = 1,
                  num_threads: int = 2, num_workers: int = 0, prefetch: int = 2):
  """A checkpointable grain iterator of this process's rows of each global batch:
  {'lq', 'gt'}: float32 (global_batch // process_count, P, P, C)."""
  if global_batch % process_count:
    raise ValueError(f'global batch {global_batch} is not divisible by {process_count} processes')
  local = global_batch // process_count
  examples = global_examples(sources, patch_size=patch_size, seed=seed, augment=augment)
  rows = HostRows(examples, global_batch=global_batch, local_batch=local, process_index=process_index,
                  num_steps=num_steps)
  batches = rows.batch(local, drop_remainder=True)
  ds = batches.to_iter_dataset(grain.ReadOptions(num_threads=max(num_threads, 1), prefetch_buffer_size=prefetch))
  if num_workers > 0:
    from absl import flags
    if not flags.FLAGS.is_parsed():  # grain's workers read absl flags; we are not an absl app
      flags.FLAGS.mark_as_parsed()
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
  return iter(ds)


def make_train_iterator(data_cfg, *, global_batch: int, num_steps: int, seed: int,
                        process_index: int = 0, process_count: int = 1):
  """`make_iterator` from the `data` config section."""
  return make_iterator(load_sources(data_cfg), patch_size=int(data_cfg['patch_size']),
                       global_batch=global_batch, num_steps=num_steps, seed=seed,
                       augment=bool(data_cfg.get('augment', True)), process_index=process_index,
                       process_count=process_count, num_threads=int(data_cfg.get('num_threads', 2)),
                       num_workers=int(data_cfg.get('num_workers', 0)))
