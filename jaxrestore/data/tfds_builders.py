"""tensorflow-datasets builders for image folders, written as array_record and read back with
`as_data_source` -- no TensorFlow needed at any point.

* `CleanImages`: one clean image per example (`image`, `name`), e.g. BSD400 for synthetic
  degradations, or a test set.
* `PairedImages`: `lq` and `gt` images matched by file stem (paired LQ/GT folders, e.g. a deraining
  set), given as two manual folders.

The folder is the builder's manual dir. Each folder becomes its own builder config whose name
carries a fingerprint of the file names and sizes, so a changed folder is prepared anew instead of
silently reusing stale records. Images are stored as lossless PNG bytes encoded with Pillow (TFDS
would need TensorFlow to encode numpy arrays itself) in the requested mode ('L' gray or 'RGB').
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import re
from pathlib import Path

import numpy as np

from jaxrestore.datasets import KNOWN_FOLDERS, data_root, list_images  # noqa: F401  (re-exported)


def default_tfds_dir() -> Path:
  return Path(os.environ.get('JAXRESTORE_TFDS_DIR', '~/.cache/jaxrestore/tfds')).expanduser()


def resolve_folder(dataset: str | None, folder: str | None, mode: str | None) -> tuple[Path, str, str]:
  """(folder, mode, short name) from a known dataset name and/or an explicit folder."""
  if folder is None:
    if dataset is None:
      raise ValueError('data: give a dataset name (one of %s) or a folder' % ', '.join(KNOWN_FOLDERS))
    key = dataset.lower()
    if key not in KNOWN_FOLDERS:
      raise ValueError(f'unknown dataset {dataset!r}; known: {", ".join(KNOWN_FOLDERS)} (or pass a folder)')
    rel, known_mode = KNOWN_FOLDERS[key]
    return data_root() / rel, mode or known_mode, key
  path = Path(folder).expanduser()
  return path, mode or 'RGB', (dataset or path.name).lower()


def _fingerprint(*folders: Path) -> str:
  h = hashlib.sha1()
  for folder in folders:
    for p in list_images(folder):
      h.update(f'{p.name}\0{p.stat().st_size}\0'.encode())
  return h.hexdigest()[:10]


def _slug(text: str) -> str:
  return re.sub(r'[^a-z0-9]+', '_', text.lower()).strip('_') or 'images'


def png_bytes(path: Path, mode: str) -> bytes:
  from PIL import Image
  with Image.open(path) as im:
    arr = np.asarray(im.convert(mode))
  buf = io.BytesIO()
  Image.fromarray(arr).save(buf, format='PNG', compress_level=1)
  return buf.getvalue()


def _builders():
  """Builder classes, defined on first use so that importing jaxrestore.data stays light."""
  global _BUILDERS
  if _BUILDERS is not None:
    return _BUILDERS
  import tensorflow_datasets as tfds

  @dataclasses.dataclass
  class FolderConfig(tfds.core.BuilderConfig):
    mode: str = 'L'
    lq_folder: str | None = None

  class CleanImages(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Clean images of one folder (the manual dir)."""
    VERSION = tfds.core.Version('1.0.0')
    MANUAL_DOWNLOAD_INSTRUCTIONS = 'Pass the image folder as manual_dir.'
    BUILDER_CONFIGS = []
    code_path = None  # no checksums file to look up (and no importlib_resources needed to look)

    def _info(self):
      channels = 1 if self.builder_config.mode == 'L' else 3
      return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
          'image': tfds.features.Image(shape=(None, None, channels)), 'name': tfds.features.Text()}))

    def _split_generators(self, dl_manager):
      return {'train': self._generate_examples(Path(dl_manager.manual_dir))}

    def _generate_examples(self, folder):
      for p in list_images(folder):
        yield p.name, {'image': png_bytes(p, self.builder_config.mode), 'name': p.name}

  class PairedImages(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """(lq, gt) pairs: gt from the manual dir, lq from `lq_folder`, matched by file stem."""
    VERSION = tfds.core.Version('1.0.0')
    MANUAL_DOWNLOAD_INSTRUCTIONS = 'Pass the ground-truth folder as manual_dir and lq_folder in the config.'
    BUILDER_CONFIGS = []
    code_path = None

    def _info(self):
      channels = 1 if self.builder_config.mode == 'L' else 3
      image = tfds.features.Image(shape=(None, None, channels))
      return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
          'lq': image, 'gt': image, 'name': tfds.features.Text()}))

    def _split_generators(self, dl_manager):
      return {'train': self._generate_examples(Path(dl_manager.manual_dir))}

    def _generate_examples(self, gt_folder):
      lq = {p.stem: p for p in list_images(Path(self.builder_config.lq_folder))}
      mode = self.builder_config.mode
      for p in list_images(gt_folder):
        if p.stem not in lq:
          raise FileNotFoundError(f'no low-quality image for {p.name} in {self.builder_config.lq_folder}')
        yield p.name, {'lq': png_bytes(lq[p.stem], mode), 'gt': png_bytes(p, mode), 'name': p.name}

  _BUILDERS = (FolderConfig, CleanImages, PairedImages)
  return _BUILDERS


_BUILDERS = None


def prepare(folder, *, mode: str = 'L', lq_folder=None, name: str | None = None, data_dir=None):
  """Builds (once) and returns the tfds random-access data source of a folder, or of an
  LQ/GT folder pair. Records: {'image', 'name'} or {'lq', 'gt', 'name'}; images uint8 HWC."""
  import tensorflow_datasets as tfds
  if mode not in ('L', 'RGB'):
    raise ValueError(f"image mode must be 'L' or 'RGB', got {mode!r}")
  config_cls, clean_cls, paired_cls = _builders()
  folder = Path(folder).expanduser().absolute()
  folders = (folder,) if lq_folder is None else (folder, Path(lq_folder).expanduser().absolute())
  config_name = f'{_slug(name or folder.name)}_{mode.lower()}_{_fingerprint(*folders)}'
  config = config_cls(name=config_name, mode=mode, lq_folder=None if lq_folder is None else str(folders[1]),
                      description=f'{" <- ".join(map(str, folders))} ({mode})')
  cls = clean_cls if lq_folder is None else paired_cls
  data_dir = Path(data_dir).expanduser() if data_dir else default_tfds_dir()
  _quiet_tfds()
  builder = cls(config=config, data_dir=str(data_dir), file_format='array_record')
  if not builder.is_prepared():
    try:
      builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(folder)))
    except Exception:
      # Another process (a second host, a parallel run) may have finished the same folder first.
      builder = cls(config=config, data_dir=str(data_dir), file_format='array_record')
      if not builder.is_prepared():
        raise
  return builder.as_data_source(split='train')


def prepare_known(dataset: str, *, data_dir=None, mode: str | None = None):
  """`prepare` for a shared-data folder by name (`bsd400`, `set12`, `classic5`, ...)."""
  folder, mode, key = resolve_folder(dataset, None, mode)
  return prepare(folder, mode=mode, name=key, data_dir=data_dir)


def _quiet_tfds():
  import logging
  import tensorflow_datasets as tfds
  tfds.disable_progress_bar()
  logging.getLogger('absl').setLevel(logging.ERROR)  # 'custom data configuration' is the point here
