"""The contract every model file fulfils: a config protocol, presets, and one `ARCHITECTURE`.

A model joins jaxrestore by defining, in `jaxrestore/models/<arch>.py`,

    ARCHITECTURE = Architecture(name=..., config_cls=..., model_cls=..., torch_params=...,
                                signature=(...), hyperparameters_from_state_dict=..., presets=...)

`jaxrestore.registry` finds it there (every module of this package that has an `ARCHITECTURE`);
presets, checkpoint detection, loading, conversion, restoring, evaluation and training then work
without any other file naming the architecture.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping, Sequence

import jax

from jaxrestore import layers
from jaxrestore.mapping import ParamMap

PADDING_MODES = ('reflect', 'strict')
ASSETS = Path(__file__).resolve().parents[1] / 'assets'  # weights shipped with the package


def runtime_field(default: Any = None, **kwargs) -> Any:
  """A config field that is a runtime choice (kernel, dtype, padding), not a hyperparameter: it is
  never written into a converted checkpoint and never read from one."""
  return dataclasses.field(default=default, metadata={'runtime': True}, **kwargs)


class ModelConfig:
  """Mixin for a model's frozen-dataclass config: the names every part of jaxrestore relies on.

  Subclasses are `@dataclasses.dataclass(frozen=True)` with the original constructor's keywords,
  declare runtime fields with `runtime_field`, and override the properties below where they differ.
  Every config has a runtime field `padding` ('reflect': pad H and W inside the model up to
  `size_multiple` and crop the output back; 'strict': refuse other sizes, as some originals do).
  """

  @property
  def in_chans(self) -> int:
    raise NotImplementedError

  @property
  def out_chans(self) -> int:
    raise NotImplementedError

  @property
  def scale(self) -> int:
    """Output size / input size."""
    return 1

  @property
  def size_multiple(self) -> int:
    """Input sides the network itself takes (the window, the U-Net's 8); others are padded."""
    return 1

  @property
  def min_size(self) -> int:
    """Smallest input side (before padding) the model restores meaningfully."""
    return 1

  @property
  def eval_pad_multiple(self) -> int | None:
    """The official test script's own input padding (flip-concatenation to (h // m + 1) * m), or
    None where the official evaluation feeds images unpadded."""
    return None

  def replace(self, **changes):
    return dataclasses.replace(self, **changes)

  @classmethod
  def runtime_fields(cls) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls) if f.metadata.get('runtime'))

  @classmethod
  def hyperparameter_fields(cls) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls) if not f.metadata.get('runtime'))

  def hyperparameters(self) -> dict[str, Any]:
    """The checkpoint-defining fields (runtime choices left out)."""
    return {name: getattr(self, name) for name in self.hyperparameter_fields()}

  def check_padding(self) -> None:
    if getattr(self, 'padding', 'reflect') not in PADDING_MODES:
      raise ValueError(f'{type(self).__name__}: padding must be one of {PADDING_MODES}, got {self.padding!r}')

  def pad_input(self, x: jax.Array, name: str | None = None) -> jax.Array:
    """Checks an NHWC batch and pads it to `size_multiple` (reflect), per the `padding` rule."""
    name = name or type(self).__name__.removesuffix('Config')
    if x.ndim != 4 or x.shape[-1] != self.in_chans:
      raise ValueError(f'{name} expects NHWC input with {self.in_chans} channels, got shape {tuple(x.shape)}')
    h, w = x.shape[1:3]
    m = self.size_multiple
    if min(h, w) < self.min_size:
      raise ValueError(f'{name} needs H and W of at least {self.min_size} pixels, got {h}x{w}')
    if h % m or w % m:
      if getattr(self, 'padding', 'reflect') == 'strict':
        raise ValueError(f'{name} with padding="strict" needs H and W to be multiples of {m}, got {h}x{w}; '
                         f"use padding='reflect' to pad inside the model and crop back")
      x = layers.pad_to_multiple(x, m, 'reflect')
    return x

  def crop_output(self, y: jax.Array, height: int, width: int) -> jax.Array:
    return y[:, :height * self.scale, :width * self.scale, :]


@dataclasses.dataclass(frozen=True)
class Preset:
  """A named, ready-to-use model: an architecture, its hyperparameters, and what the evaluator needs
  to score it with the official protocol of its task."""
  name: str
  architecture: str                  # an Architecture.name
  hyperparameters: dict[str, Any]    # constructor arguments of the architecture's config
  task: str                          # protocol key, e.g. 'color_dn', 'classical_sr', 'derain'
  channels: int                      # 1 = gray, 3 = RGB (6 = dual-pixel pairs)
  scale: int = 1
  noise_level: int | None = None     # sigma on the 0..255 scale (denoising)
  jpeg_quality: int | None = None    # JPEG quality factor (artifact removal)
  border: int = 0                    # pixels cropped before PSNR/SSIM (official protocol)
  checkpoint_file: str | None = None  # official file name
  checkpoint_key: str | None = None   # 'params' / 'params_ema' / None for a bare state dict
  weights_url: str | None = None      # where the official weights are published
  weights_license: str | None = None
  bundled_weights: str | None = None  # folder inside jaxrestore/assets shipped with the package
  notes: str = ''
  # Published or measured scores: {'<dataset>': {'psnr': ..., ...}} with the protocol's keys.
  results: Mapping[str, Mapping[str, float]] = dataclasses.field(default_factory=dict)

  def as_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


def all_in_one_comparison_preset(name: str, architecture: str, hyperparameters: Mapping[str, Any]) -> Preset:
  """A model trained by `benchmarks/allinone_compare.py` (the DualFreq comparison on equal terms),
  shipped in jaxrestore/assets/<name>/. Its `results` are the scores stored with those weights (one
  source, so the preset and its assets cannot disagree)."""
  meta = ASSETS / name / 'jaxrestore.json'
  shipped = meta.is_file()
  results = json.loads(meta.read_text()).get('results', {}) if shipped else {}
  if not shipped:
    status = 'weights not shipped yet (train them: benchmarks/allinone_compare.py); '
  elif not results:
    status = 'weights shipped, scores pending (benchmarks/allinone_compare.py evaluate, then ship); '
  else:
    status = ''
  return Preset(
      name=name, architecture=architecture, hyperparameters=dict(hyperparameters), task='all_in_one',
      channels=3, bundled_weights=name if shipped else None, results=results,
      weights_license='Apache-2.0 (trained by jaxrestore on trainsets/BSDS500_test200)',
      notes=status +
            'all-in-one, trained 300 steps x 8 patches of 64x64 with 9 degradations generated on the fly '
            '(noise sigma 15/25/50, rain, haze, blur, low light, JPEG, coloured noise), AdamW 5e-4, cosine, L1, '
            'by benchmarks/allinone_compare.py; the same data, steps and recipe as the other *-aio-small '
            'presets at ~16.5 M parameters each (README: all-in-one comparison)')


@dataclasses.dataclass(frozen=True)
class TorchReference:
  """A PyTorch implementation of the same network: `module.cls(**kwargs(config))`, from a pip package
  or, for official code that has none, from a checkout of its repository the user passes
  (`jaxrestore bench --official NAME=DIR`; never vendored)."""
  module: str                               # e.g. 'spandrel.architectures.SwinIR'
  cls: str                                  # e.g. 'SwinIR'
  kwargs: Callable[[Any], dict]             # config -> constructor keywords
  package: str | None = None                # pip requirement that provides `module`
  checkout: str | None = None               # else: the official repository `module` is imported from

  def __post_init__(self):
    if (self.package is None) == (self.checkout is None):
      raise TypeError(f'TorchReference {self.module}.{self.cls}: give exactly one of package= and checkout=')


@dataclasses.dataclass(frozen=True)
class Architecture:
  """Everything jaxrestore needs to know about one network family."""
  name: str
  config_cls: type
  model_cls: type
  torch_params: ParamMap                              # PyTorch state dict -> NNX parameters
  # Keys every checkpoint of this family has; or a tuple of such tuples, one per checkpoint layout.
  signature: tuple[str, ...] | tuple[tuple[str, ...], ...]
  hyperparameters_from_state_dict: Callable[[Mapping[str, Any]], dict]
  presets: Callable[[], Sequence[Preset]] = tuple
  # (regex over 'a/b/kernel' parameter paths, PartitionSpec or tuple of axis names) for tensor
  # parallelism along the mesh's `model` axis; parameters matched by none follow the global rules.
  sharding_rules: tuple[tuple[str, Any], ...] = ()
  # The PyTorch network `jaxrestore bench` compares against; None if none is pip-installable.
  torch_reference: TorchReference | None = None
  # state dict -> reasons it is not this architecture although the signature is present.
  rejects: Callable[[Mapping[str, Any]], list[str]] | None = None
  # For a component that is not image-to-image by itself (a latent denoiser): the name of the
  # `jaxrestore.pipelines` pipeline that restores images with it; `restore`/`eval` point users there.
  pipeline: str | None = None
  description: str = ''

  REQUIRED_CONFIG: ClassVar[tuple[str, ...]] = ('in_chans', 'out_chans', 'scale', 'size_multiple', 'min_size',
                                                'eval_pad_multiple', 'padding')

  def __post_init__(self):
    if not (dataclasses.is_dataclass(self.config_cls) and issubclass(self.config_cls, ModelConfig)):
      raise TypeError(f'architecture {self.name!r}: config_cls must be a dataclass deriving from ModelConfig')
    if 'padding' not in {f.name for f in dataclasses.fields(self.config_cls)}:
      raise TypeError(f"architecture {self.name!r}: {self.config_cls.__name__} needs a runtime field 'padding'")
    if not self.signature:
      raise TypeError(f'architecture {self.name!r}: an empty signature would match every checkpoint')

  @property
  def signatures(self) -> tuple[tuple[str, ...], ...]:
    return (self.signature,) if isinstance(self.signature[0], str) else self.signature

  def signature_score(self, state_dict: Mapping[str, Any]) -> int | None:
    """How specific the match is (signature keys present), or None if this is not the architecture."""
    scores = [len(sig) for sig in self.signatures if all(k in state_dict for k in sig)]
    if not scores or (self.rejects is not None and self.rejects(state_dict)):
      return None
    return max(scores)

  def missing_signature(self, state_dict: Mapping[str, Any]) -> list[str]:
    """Why a state dict is not this architecture (missing keys of the closest layout, rejections)."""
    missing = min(([k for k in sig if k not in state_dict] for sig in self.signatures), key=len)
    if missing:
      return [f'missing key {k}' for k in missing]
    return list(self.rejects(state_dict)) if self.rejects is not None else []

  def make_config(self, hyperparameters: Mapping[str, Any]):
    fields = {f.name for f in dataclasses.fields(self.config_cls)}
    unknown = sorted(set(hyperparameters) - fields)
    if unknown:
      raise TypeError(f'unknown {self.name} hyperparameter(s) {unknown}; known: {sorted(fields)}')
    hp = {k: tuple(v) if isinstance(v, list) else v for k, v in hyperparameters.items()}
    return self.config_cls(**hp)
