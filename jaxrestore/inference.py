"""Restore images of any size: fixed-shape overlapping tiles, smooth blending, batching across
all local devices, and one compilation per tile shape.

`restore(model, image)` takes an H×W or H×W×C numpy image (float in [0, 1], uint8 or uint16) and
returns a float32 H'×W'×C image in [0, 1] (H', W' scaled for SR). Tiles overlap by `overlap`
pixels; each tile's weight is zero within `overlap // 4` of an edge it shares with a neighbour
and rises smoothly (raised cosine) over the next `overlap // 2`, so for a model whose receptive
field radius is at most `overlap // 4` tiled output equals untiled output to float32 rounding.
Image borders are never tapered.
"""
from __future__ import annotations

import dataclasses
import weakref
from typing import Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxrestore.convert import checkpoint as converted

DEFAULT_OVERLAP = 32


def default_batch_size(num_devices: int) -> int:
  """Tiles per step: one per CPU device (activations dominate memory; CPUs gain nothing from
  batching), eight per accelerator."""
  return num_devices * (1 if jax.default_backend() == 'cpu' else 8)


def default_micro_batch() -> int:
  """Images per device in one compiled step when a batch is larger: one on CPU, where XLA:CPU runs a
  batch slower per pixel than single images and holds every image's activations at once (SwinIR-M
  128², batch 4 in one step: 0.0035 against 0.0043 MP/s at batch 1, peak RSS 1309 against 740 MiB);
  0 (the whole batch in one step) on accelerators, which need the batch to fill the chip."""
  return 1 if jax.default_backend() == 'cpu' else 0


def data_mesh(devices=None) -> jax.sharding.Mesh:
  """A 1-d mesh over all local devices, axis 'data' (automatic sharding)."""
  devices = list(devices if devices is not None else jax.local_devices())
  return jax.sharding.Mesh(np.array(devices), ('data',),
                           axis_types=(jax.sharding.AxisType.Auto,))


class Restorer:
  """A model prepared for tiled inference: params placed once, one jitted forward per dtype.

  `traces` counts how often the forward was traced (= compiled): once per distinct step shape;
  each compiled step is kept, and the memory the compiler freed is released before it first runs.
  `micro_batch`: images per device per compiled step; a larger batch runs as consecutive steps of
  `micro_batch × devices` images (the last one may be smaller), 0 runs it in one step; default
  `default_micro_batch()`. It changes speed and peak memory; results agree to float32 rounding.
  """

  def __init__(self, model: nnx.Module, *, dtype=None, mesh: jax.sharding.Mesh | None = None,
               micro_batch: int | None = None):
    self.model_ref = weakref.ref(model)
    self.config = model.config
    self.mesh = mesh or data_mesh()
    self.dtype = jnp.dtype(dtype) if dtype is not None else jnp.dtype(jnp.float32)
    graphdef, _ = nnx.split(model)
    self.graphdef = graphdef
    replicated = jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec())
    self._replicated = replicated
    self.batch_sharding = jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec('data'))
    self.place(model)
    self.traces = 0
    self.micro_batch = default_micro_batch() if micro_batch is None else micro_batch

    def forward(state, x):  # act_bhwc sharded along 'data'; weights replicated
      self.traces += 1
      return nnx.merge(graphdef, state)(x.astype(self.dtype)).astype(jnp.float32)

    self._forward = jax.jit(forward, in_shardings=(replicated, self.batch_sharding),
                            out_shardings=self.batch_sharding)
    self._compiled_steps: dict[tuple, Callable] = {}

  @property
  def micro_batch(self) -> int:
    return self._micro_batch

  @micro_batch.setter
  def micro_batch(self, value: int) -> None:
    if value < 0:
      raise ValueError(f'micro_batch must be >= 0 (0 = the whole batch in one step), got {value}')
    self._micro_batch = value

  def place(self, model: nnx.Module) -> None:
    """(Re)places the model's current weights; the compiled forward is kept."""
    _, state = nnx.split(model)
    # The arrays the weights were placed from (kept alive, so their ids stay unique): `is_current`
    # tells whether the model still holds exactly these, e.g. not after `nnx.update`.
    self._source_leaves = _state_leaves(model)
    if self.dtype != jnp.float32:  # low-precision weights; norms and softmax still reduce in float32
      state = jax.tree.map(lambda a: a.astype(self.dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, state)
    self.state = jax.device_put(state, self._replicated)

  def is_current(self, model: nnx.Module) -> bool:
    leaves = _state_leaves(model)
    return len(leaves) == len(self._source_leaves) and all(a is b for a, b in zip(leaves, self._source_leaves))

  @property
  def num_devices(self) -> int:
    return self.mesh.devices.size

  def __call__(self, batch: np.ndarray) -> np.ndarray:
    """Runs a (B, h, w, C) batch; B must be a multiple of the device count."""
    step = self.micro_batch * self.num_devices
    if not step or len(batch) <= step:
      return self._run_step(batch)
    return np.concatenate([self._run_step(batch[i:i + step]) for i in range(0, len(batch), step)])

  def compile(self, batch: np.ndarray) -> Callable:
    """The compiled step for `batch`'s shape and dtype: compiled (and the compiler's freed heap
    released) on first use, then kept."""
    key = (tuple(batch.shape), jnp.dtype(batch.dtype))
    compiled = self._compiled_steps.get(key)
    if compiled is None:
      x = jax.ShapeDtypeStruct(key[0], key[1], sharding=self.batch_sharding)
      compiled = self._compiled_steps[key] = self._forward.lower(self.state, x).compile()
      # XLA:CPU's compiler leaves 70-420 MiB freed but resident (SwinIR-M 256², HAIR 128²); the
      # forward's large buffers are fresh mappings that cannot reuse it, so it would add to the peak.
      converted.release_freed_memory()
    return compiled

  def _run_step(self, batch: np.ndarray) -> np.ndarray:
    return np.asarray(self.compile(batch)(self.state, jax.device_put(batch, self.batch_sharding)))


_RESTORERS: dict[tuple, Restorer] = {}


def _state_leaves(model: nnx.Module) -> list:
  return jax.tree.leaves(nnx.state(model))


def get_restorer(model: nnx.Module, *, dtype=None, mesh=None, micro_batch: int | None = None) -> Restorer:
  """Cached per (model, dtype, mesh), so repeated calls reuse placed weights and compilations; a
  model whose weights changed since (`nnx.update`, assignment) has them placed anew, keeping the
  compiled forward when its structure is unchanged. `micro_batch` (see `Restorer`), when given,
  is set on the cached restorer."""
  key = (id(model), jnp.dtype(dtype or jnp.float32).name, id(mesh))
  restorer = _RESTORERS.get(key)
  if restorer is None or restorer.model_ref() is not model:
    restorer = _RESTORERS[key] = Restorer(model, dtype=dtype, mesh=mesh)
    weakref.finalize(model, _RESTORERS.pop, key, None)
  elif not restorer.is_current(model):
    if nnx.split(model)[0] == restorer.graphdef:
      restorer.place(model)
    else:
      restorer = _RESTORERS[key] = Restorer(model, dtype=dtype, mesh=mesh)
  if micro_batch is not None:
    restorer.micro_batch = micro_batch
  return restorer


# ----- image normalisation ---------------------------------------------------------------------------

def to_float_image(image: np.ndarray) -> tuple[np.ndarray, str]:
  """(H, W, C) float32 in [0, 1] and the input's kind ('float', 'uint8' or 'uint16')."""
  image = np.asarray(image)
  if image.ndim == 2:
    image = image[:, :, None]
  if image.ndim != 3 or image.shape[2] not in (1, 2, 3, 4):
    raise ValueError(f'expected an H×W or H×W×C image with 1-4 channels, got shape {image.shape}')
  if image.shape[0] == 0 or image.shape[1] == 0:
    raise ValueError(f'empty image of shape {image.shape}')
  if image.dtype == np.uint8:
    return image.astype(np.float32) / 255.0, 'uint8'
  if image.dtype == np.uint16:
    return image.astype(np.float32) / 65535.0, 'uint16'
  if np.issubdtype(image.dtype, np.floating):
    if not np.all(np.isfinite(image)):
      raise ValueError('image contains NaN or infinite values')
    top = float(image.max())
    if top > 1.0 + 1e-6:  # e.g. 0..255 data as float: the output would be clipped to white
      import warnings
      warnings.warn(f'restore: float image with values up to {top:.4g}; floats are expected in [0, 1] (divide '
                    f'0..255 data by 255, or pass the uint8/uint16 array) and the output is clipped to [0, 1]',
                    UserWarning, stacklevel=3)
    return image.astype(np.float32), 'float'
  raise ValueError(f'unsupported image dtype {image.dtype}; use float in [0, 1], uint8 or uint16')


# ----- tiling -------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class TileGrid:
  height: int            # padded image size the grid covers
  width: int
  tile_h: int
  tile_w: int
  overlap: int
  ys: tuple[int, ...]    # tile origins
  xs: tuple[int, ...]

  @property
  def origins(self) -> list[tuple[int, int]]:
    return [(y, x) for y in self.ys for x in self.xs]


def _starts(size: int, tile: int, overlap: int) -> tuple[int, ...]:
  if size <= tile:
    return (0,)
  stride = tile - overlap
  starts = list(range(0, size - tile, stride)) + [size - tile]
  return tuple(starts)


def plan_tiles(height: int, width: int, tile: int | None, overlap: int, multiple: int = 1) -> TileGrid:
  """Tile origins covering the image; small images get one tile rounded up to `multiple`."""
  if tile is None:
    th, tw = _round_up(height, multiple), _round_up(width, multiple)
    return TileGrid(th, tw, th, tw, 0, (0,), (0,))
  tile = int(tile)
  if tile <= 0 or tile % multiple:
    raise ValueError(f'tile must be a positive multiple of {multiple}, got {tile}')
  if not 0 <= overlap < tile:
    raise ValueError(f'overlap must be in [0, tile), got overlap={overlap}, tile={tile}')
  th = tile if height > tile else _round_up(height, multiple)
  tw = tile if width > tile else _round_up(width, multiple)
  hp, wp = max(height, th), max(width, tw)
  return TileGrid(hp, wp, th, tw, overlap, _starts(hp, th, overlap), _starts(wp, tw, overlap))


def _round_up(n: int, m: int) -> int:
  return -(-n // m) * m


def _ramp(length: int, overlap: int, scale: int, taper_start: bool, taper_end: bool) -> np.ndarray:
  """1-d blending weights at output resolution: 0 in the guard band, raised cosine, then 1."""
  w = np.ones(length * scale, np.float64)
  guard, rise = (overlap // 4) * scale, max((overlap // 2) * scale, 1)
  d = np.arange(length * scale, dtype=np.float64)
  ramp = np.clip((d - guard + 0.5) / rise, 0.0, 1.0)
  ramp = 0.5 - 0.5 * np.cos(np.pi * ramp)
  if taper_start:
    w = np.minimum(w, ramp)
  if taper_end:
    w = np.minimum(w, ramp[::-1])
  return w


def _pad_to(x: np.ndarray, height: int, width: int) -> np.ndarray:
  ph, pw = height - x.shape[0], width - x.shape[1]
  if ph <= 0 and pw <= 0:
    return x
  mode = 'reflect' if ph < x.shape[0] and pw < x.shape[1] else 'symmetric'
  return np.pad(x, ((0, max(ph, 0)), (0, max(pw, 0)), (0, 0)), mode=mode)


def _batches(items: list, size: int) -> Iterator[list]:
  for i in range(0, len(items), size):
    yield items[i:i + size]


# ----- the engine ---------------------------------------------------------------------------------

def minimum_size(config) -> int:
  """Smallest image side `restore` accepts: the model's own minimum, and at least 4 pixels."""
  return max(4, int(config.min_size))


def tile_multiple(config) -> int:
  """Tile sides the model takes without padding (SwinIR's window, the U-Nets' 8)."""
  return int(config.size_multiple)


def restore(model: nnx.Module, image: np.ndarray, *, tile: int | None = None, overlap: int = DEFAULT_OVERLAP,
            batch_size: int | None = None, dtype=None, mesh: jax.sharding.Mesh | None = None,
            progress: Callable[[int, int], None] | None = None, micro_batch: int | None = None) -> np.ndarray:
  """Restores one image; returns float32 H'×W'×C in [0, 1].

  tile: tile size in input pixels (None = the whole image in one call, compiled per image size);
  overlap: pixels shared by neighbouring tiles; batch_size: tiles per call (rounded up to a multiple
  of the device count; tiles are spread over all local devices along the mesh's 'data' axis;
  default: one per CPU device, eight per accelerator);
  dtype: compute dtype, e.g. jnp.bfloat16 (softmax and normalisation statistics stay float32);
  progress: called with (tiles done, tiles total) after every batch;
  micro_batch: tiles per device per compiled step within a batch (see `Restorer`; default one on CPU,
  the whole batch on accelerators).
  """
  config = model.config
  x, _ = to_float_image(image)
  if tile == 0:
    tile = None
  in_chans, out_chans, scale = config.in_chans, config.out_chans, config.scale
  height, width, channels = x.shape
  alpha = None
  if channels in (2, 4) and channels == in_chans + 1:
    x, alpha = x[:, :, :-1], x[:, :, -1:]
  elif channels == 4 and in_chans == 1:
    x, alpha = x[:, :, :3], x[:, :, 3:]
  channels = x.shape[2]
  if channels == in_chans:
    planes = [x]
  elif in_chans == out_chans == 1:  # a gray model restores each colour channel on its own
    planes = [x[:, :, c:c + 1] for c in range(channels)]
  elif channels == 1 and in_chans == out_chans:  # a colour model on a gray image: replicate
    planes = [np.repeat(x, in_chans, axis=2)]
  else:
    raise ValueError(f'the model takes {in_chans}-channel images, this image has {channels} channels')

  # None means the platform default here, not whatever an earlier call left on the cached restorer.
  restorer = get_restorer(model, dtype=dtype, mesh=mesh,
                          micro_batch=default_micro_batch() if micro_batch is None else micro_batch)
  grid = plan_tiles(height, width, tile, overlap, tile_multiple(config))
  if batch_size is None:
    batch_size = default_batch_size(restorer.num_devices)
  step = _round_up(max(1, batch_size), restorer.num_devices)
  tiles = [(p, y, x0) for p in range(len(planes)) for y, x0 in grid.origins]
  padded = [_pad_to(plane, grid.height, grid.width) for plane in planes]
  acc = [np.zeros((grid.height * scale, grid.width * scale, out_chans), np.float32) for _ in planes]
  weight = np.zeros((grid.height * scale, grid.width * scale, 1), np.float32)
  wy = {y: _ramp(grid.tile_h, grid.overlap, scale, y > 0, y + grid.tile_h < grid.height) for y in grid.ys}
  wx = {x0: _ramp(grid.tile_w, grid.overlap, scale, x0 > 0, x0 + grid.tile_w < grid.width) for x0 in grid.xs}
  done = 0
  for chunk in _batches(tiles, step):
    batch = np.zeros((step, grid.tile_h, grid.tile_w, in_chans), np.float32)
    for i, (p, y, x0) in enumerate(chunk):
      batch[i] = padded[p][y:y + grid.tile_h, x0:x0 + grid.tile_w]
    out = restorer(batch)
    for i, (p, y, x0) in enumerate(chunk):
      w = np.outer(wy[y], wx[x0]).astype(np.float32)[:, :, None]
      ys, xs = slice(y * scale, (y + grid.tile_h) * scale), slice(x0 * scale, (x0 + grid.tile_w) * scale)
      acc[p][ys, xs] += w * out[i]
      if p == 0:
        weight[ys, xs] += w
    done += len(chunk)
    if progress:
      progress(done, len(tiles))
  results = [a / weight for a in acc]
  if len(planes) > 1:
    result = np.concatenate(results, axis=2)
  elif channels == 1 and out_chans > 1:
    result = results[0].mean(axis=2, keepdims=True)
  else:
    result = results[0]
  result = result[:height * scale, :width * scale]
  if alpha is not None:
    result = np.concatenate([result, _upscale_alpha(alpha, scale)], axis=2)
  return np.clip(result, 0.0, 1.0).astype(np.float32)


def _upscale_alpha(alpha: np.ndarray, scale: int) -> np.ndarray:
  if scale == 1:
    return alpha
  h, w = alpha.shape[:2]
  return np.asarray(jax.image.resize(alpha, (h * scale, w * scale, 1), 'linear'), np.float32)
