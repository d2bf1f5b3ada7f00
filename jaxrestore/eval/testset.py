"""Checking a test set before anything is scored: every file decodes, matches its checksum when a
`MANIFEST.tsv` covers it, and the whole list gets one fingerprint.

A test set with a broken or altered file is not the test set its name promises, so by default any
problem stops the evaluation before the first image is scored. `skip_unreadable=True` drops samples
whose files cannot be decoded (never those whose checksum is wrong) and records which.

The fingerprint (`TestSet.list_sha256`) is the sha256 of the sorted lines `<role>/<file name>\t<sha256
of the file's bytes>\n` over every file the scored samples read (roles: gt, lq, lq_right), so a
number names exactly the bytes it was measured on.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
from pathlib import Path
from typing import Callable, Sequence

from jaxrestore import datasets, imageio
from .protocol import Protocol, Sample


class TestSetError(ValueError):
  """The test set cannot be scored as given (unreadable files, checksum mismatches)."""
  __test__ = False  # not a pytest class


@dataclasses.dataclass
class TestSet:
  __test__ = False  # not a pytest class
  name: str
  samples: list[Sample]
  files: list[tuple[str, str, str]]                 # (role, file name, sha256) read by the samples
  skipped: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (sample, why)
  manifests: list[str] = dataclasses.field(default_factory=list)
  verified: int = 0                                 # files checked against a manifest

  @property
  def list_sha256(self) -> str:
    return list_sha256(self.files)

  def describe(self) -> str:
    checked = (f'{self.verified} file(s) verified against {", ".join(self.manifests)}' if self.verified
               else 'no checksum list covers it')
    return f'{len(self.samples)} image(s), list sha256 {self.list_sha256}; {checked}'

  def as_dict(self) -> dict:
    return dict(name=self.name, images=[s.name for s in self.samples], list_sha256=self.list_sha256,
                files=[dict(role=r, name=n, sha256=h) for r, n, h in self.files],
                skipped=[dict(image=n, error=e) for n, e in self.skipped], manifests=self.manifests,
                verified=self.verified)


def list_sha256(files: Sequence[tuple[str, str, str]]) -> str:
  text = ''.join(sorted(f'{role}/{name}\t{sha}\n' for role, name, sha in files))
  return hashlib.sha256(text.encode()).hexdigest()


class _Manifests:
  """Manifest entries per folder, looked up once."""

  def __init__(self):
    self.by_folder: dict[Path, tuple[Path | None, dict]] = {}

  def entries(self, folder: Path) -> tuple[Path | None, dict]:
    folder = folder.resolve()
    if folder not in self.by_folder:
      self.by_folder[folder] = datasets.manifest_entries(folder)
    return self.by_folder[folder]


def prepare(samples: Sequence[Sample], protocol: Protocol | None = None, *, name: str = '',
            skip_unreadable: bool = False, max_pixels: int | None = imageio.DEFAULT_MAX_PIXELS,
            verify: bool = True, on_file: Callable[[], None] | None = None) -> TestSet:
  """Reads every file of `samples` once: checksum (against a covering MANIFEST.tsv), full decode,
  size agreement of the files of a sample. Raises TestSetError naming every bad file, unless the
  only problems are unreadable files and `skip_unreadable` is set."""
  manifests = _Manifests()
  fatal, unreadable = [], []
  kept, files, verified, used_manifests = [], [], 0, []
  for sample in samples:
    sample_files, sizes, problems = [], {}, []
    for role, path in sample.files():
      try:
        data = path.read_bytes()
      except FileNotFoundError:
        problems.append((False, f'{path}: no such file'))
        continue
      except IsADirectoryError:
        problems.append((False, f'{path}: is a folder, not an image file'))
        continue
      except OSError as e:
        problems.append((False, f'{path}: cannot be read ({e.strerror or e})'))
        continue
      sha = hashlib.sha256(data).hexdigest()
      if verify:
        manifest, entries = manifests.entries(path.parent)
        if manifest is not None:
          expected = entries.get(path.name)
          if expected is None:
            fatal.append(f'{path}: not listed in {manifest}, which covers its folder')
          elif expected != (len(data), sha):
            fatal.append(f'{path}: checksum mismatch against {manifest} (sha256 {sha}, {len(data)} bytes; '
                         f'expected {expected[1]}, {expected[0]} bytes)')
          else:
            verified += 1
            if str(manifest) not in used_manifests:
              used_manifests.append(str(manifest))
      try:
        with imageio.open_image(io.BytesIO(data), path, max_pixels=max_pixels) as im:
          sizes[role] = im.size
      except imageio.ImageReadError as e:
        problems.append((True, str(e)))
      sample_files.append((role, path.name, sha))
      if on_file:
        on_file()
    if not problems and protocol is not None:
      mismatch = _size_problem(sample, sizes, protocol)
      if mismatch:
        problems.append((False, mismatch))
    if problems:
      for skippable, message in problems:
        if skippable:
          unreadable.append((sample.name, message))
        else:
          fatal.append(message)
      continue
    kept.append(sample)
    files += sample_files
  if verify:
    fatal += _missing_listed_files(samples, manifests)
  if fatal or (unreadable and not skip_unreadable):
    messages = fatal + [m for _, m in unreadable]
    hint = '' if fatal or not unreadable else '; pass --skip-unreadable to score the other images'
    raise TestSetError(f'test set {name or "?"}: {len(messages)} problem(s), nothing scored{hint}\n  ' +
                       '\n  '.join(messages))
  if not kept:
    raise TestSetError(f'test set {name or "?"}: no readable image left to score')
  return TestSet(name, kept, files, skipped=unreadable, manifests=used_manifests, verified=verified)


def _size_problem(sample: Sample, sizes: dict, protocol: Protocol) -> str | None:
  """Files of one sample that cannot go together (checked on the headers, before any scoring)."""
  kind, s = protocol.spec.kind, protocol.scale
  if kind in ('synthetic', 'all_in_one') or 'gt' not in sizes or 'lq' not in sizes:
    return None
  (gw, gh), (lw, lh) = sizes['gt'], sizes['lq']
  if 'lq_right' in sizes and sizes['lq_right'] != sizes['lq']:
    rw, rh = sizes['lq_right']
    return f'{sample.lq_right}: right view of {rw}x{rh} pixels, left view {sample.lq} has {lw}x{lh}'
  if s > 1:  # SR: the ground truth may be a few pixels larger (cropped to the output, as SwinIR does)
    ok = gw >= lw * s and gh >= lh * s
  else:
    ok = (gw, gh) == (lw, lh)
  if not ok:
    return (f'{sample.gt}: ground truth of {gw}x{gh} pixels does not fit the input {sample.lq} of {lw}x{lh} '
            f'pixels at scale {s}')
  return None


def _missing_listed_files(samples: Sequence[Sample], manifests: _Manifests) -> list[str]:
  """Images a manifest lists in a folder the samples come from, but which are not there."""
  problems = []
  for folder, (manifest, entries) in manifests.by_folder.items():
    if manifest is None:
      continue
    for name in sorted(entries):
      if Path(name).suffix.lower() in datasets.IMAGE_SUFFIXES and not (folder / name).is_file():
        problems.append(f'{folder / name}: listed in {manifest} but missing')
  return problems
