"""Where test and training sets live: names -> folders, and the checksum list that covers them.

One root holds them all, laid out as `testsets/<Name>/...` and `trainsets/<Name>/...` (the shared
data folder's layout). It comes from an explicit argument or `$JAXRESTORE_DATA`; nothing here
guesses a default, so a number is never measured on a folder the user did not point at.

A name resolves, in this order: an existing folder (used as is); a known name (`KNOWN_FOLDERS`,
case-insensitive); `testsets/<name>` or `trainsets/<name>` under the root.

A `MANIFEST.tsv` (columns `path`, `size_bytes`, `sha256`, ... with paths relative to the manifest's
folder) in the test set's folder or one of its parents lists the expected bytes of every file.
"""
from __future__ import annotations

import csv
import os
from pathlib import Path

ENV = 'JAXRESTORE_DATA'
MANIFEST_NAME = 'MANIFEST.tsv'
IMAGE_SUFFIXES = ('.png', '.bmp', '.jpg', '.jpeg', '.tif', '.tiff', '.webp')

# Known names (lower case) -> (folder relative to the data root, the mode the set is read in).
KNOWN_FOLDERS = {
    'bsd400': ('trainsets/BSD400', 'L'),
    'bsds500_test200': ('trainsets/BSDS500_test200', 'RGB'),
    'set12': ('testsets/Set12', 'L'),
    'bsd68': ('testsets/BSD68', 'L'),
    'cbsd68': ('testsets/CBSD68', 'RGB'),
    'kodak24': ('testsets/Kodak24', 'RGB'),
    'mcmaster': ('testsets/McMaster', 'RGB'),
    'classic5': ('testsets/Classic5', 'L'),
    'live1': ('testsets/LIVE1', 'RGB'),
    'set14': ('testsets/Set14', 'RGB'),
    'set5': ('testsets/Set5/HR', 'RGB'),  # SR: LR_bicubic/X<scale> beside HR/
    'rni15': ('testsets/RNI15', 'RGB'),
    'rain100h': ('testsets/Rain100H', 'RGB'),
}


def data_root(root: str | os.PathLike | None = None, *, required: bool = True) -> Path | None:
  """The folder holding `testsets/` and `trainsets/`: `root`, else $JAXRESTORE_DATA."""
  value = root if root is not None else os.environ.get(ENV)
  if not value:
    if required:
      raise FileNotFoundError(f'no data root: set ${ENV} to the folder holding testsets/ and trainsets/ '
                              f'(or pass a folder instead of a name)')
    return None
  path = Path(value).expanduser()
  if required and not path.is_dir():
    raise FileNotFoundError(f'data root {path} (from {"the argument" if root is not None else "$" + ENV}) '
                            f'is not a folder')
  return path


def resolve(name: str | os.PathLike, root: str | os.PathLike | None = None) -> Path:
  """The folder of a data set given by folder path or by name (see the module docstring)."""
  path = Path(name).expanduser()
  if path.is_dir():
    return path
  text = str(name)
  if path.exists():
    raise NotADirectoryError(f'{text} is a file, not a folder of images')
  if os.sep in text or (os.altsep and os.altsep in text):
    raise FileNotFoundError(f'folder {text} does not exist')
  base = data_root(root, required=False)
  if base is None:
    raise FileNotFoundError(f'{text!r} is not a folder, and ${ENV} is not set to resolve it as a test-set '
                            f'name (known: {", ".join(known_names())})')
  candidates = []
  if text.lower() in KNOWN_FOLDERS:
    candidates.append(base / KNOWN_FOLDERS[text.lower()][0])
  candidates += [base / 'testsets' / text, base / 'trainsets' / text]
  for candidate in candidates:
    if candidate.is_dir():
      return candidate
  raise FileNotFoundError(f'data set {text!r} is neither a folder nor found under {base} (looked in '
                          f'{", ".join(str(c) for c in candidates)}; known names: {", ".join(known_names())})')


def known_names() -> list[str]:
  """The display names of the known sets (their folder names)."""
  return [Path(rel).parts[1] for rel, _ in KNOWN_FOLDERS.values()]


def display_name(name: str | os.PathLike) -> str:
  """'set5' -> 'Set5' (a known name's folder name), a folder -> its name, else the name as given."""
  entry = KNOWN_FOLDERS.get(str(name).lower())
  if entry and not Path(name).is_dir():
    return Path(entry[0]).parts[1]
  return Path(name).name or str(name)


def known_mode(name: str) -> str | None:
  entry = KNOWN_FOLDERS.get(str(name).lower())
  return entry[1] if entry else None


def list_images(folder: str | os.PathLike) -> list[Path]:
  """The image files directly in `folder`, sorted by name (what every protocol iterates over)."""
  folder = Path(folder)
  if not folder.is_dir():
    raise FileNotFoundError(f'image folder {folder} does not exist')
  files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.is_dir())
  if not files:
    raise FileNotFoundError(f'no images ({", ".join(IMAGE_SUFFIXES)}) in {folder}')
  return files


# ----- checksums ----------------------------------------------------------------------------------

def find_manifest(folder: str | os.PathLike, max_levels: int = 4) -> Path | None:
  """The nearest `MANIFEST.tsv` in `folder` or up to `max_levels` parents above it, or None."""
  folder = Path(folder).resolve()
  for candidate in [folder, *folder.parents][:max_levels + 1]:
    manifest = candidate / MANIFEST_NAME
    if manifest.is_file():
      return manifest
  return None


def read_manifest(path: str | os.PathLike) -> dict[str, tuple[int, str]]:
  """{relative path: (size in bytes, sha256 hex)} from a MANIFEST.tsv."""
  path = Path(path)
  with open(path, newline='') as f:
    rows = list(csv.reader(f, delimiter='\t'))
  if not rows or rows[0][:3] != ['path', 'size_bytes', 'sha256']:
    raise ValueError(f'{path}: not a checksum list (expected the header path, size_bytes, sha256)')
  entries = {}
  for i, row in enumerate(rows[1:], start=2):
    if not row:
      continue
    try:
      entries[row[0]] = (int(row[1]), row[2].lower())
    except (IndexError, ValueError):
      raise ValueError(f'{path}, line {i}: expected path, size_bytes, sha256; got {row[:3]}') from None
  return entries


def manifest_entries(folder: str | os.PathLike) -> tuple[Path | None, dict[str, tuple[int, str]]]:
  """(manifest, {file name: (size, sha256)} for the files directly in `folder`); ({}) if none covers it."""
  manifest = find_manifest(folder)
  if manifest is None:
    return None, {}
  rel = Path(folder).resolve().relative_to(manifest.parent).as_posix()
  prefix = '' if rel == '.' else rel + '/'
  entries = {}
  for path, value in read_manifest(manifest).items():
    if path.startswith(prefix) and '/' not in path[len(prefix):]:
      entries[path[len(prefix):]] = value
  return (manifest if entries else None), entries
