"""The `Preset` record: an architecture, its hyperparameters, and the task metadata the
evaluator needs, keyed by a short name that maps one-to-one to an official checkpoint file."""
from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True)
class Preset:
  name: str
  architecture: str                  # key into jaxrestore.registry.ARCHITECTURES
  hyperparameters: dict[str, Any]    # constructor arguments of the architecture's config
  task: str                          # official task name, e.g. 'color_dn', 'classical_sr'
  channels: int                      # 1 = gray, 3 = RGB
  scale: int = 1
  noise_level: int | None = None     # sigma on the 0..255 scale (denoising)
  jpeg_quality: int | None = None    # JPEG quality factor (artifact removal)
  border: int = 0                    # pixels cropped before PSNR/SSIM (official protocol)
  checkpoint_file: str | None = None  # official file name
  checkpoint_key: str | None = None   # 'params' / 'params_ema' / None for a bare state dict
  weights_url: str | None = None      # where the official weights are published
  weights_license: str | None = None
  bundled_weights: str | None = None  # file inside jaxrestore/assets shipped with the package
  notes: str = ''

  def as_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)
