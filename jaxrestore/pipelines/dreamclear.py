"""DreamClear end to end: a photo in, a restored photo out, following the official `test.py`.

    pipe = DreamClear.load('weights/')                       # bfloat16 DiT and T5, float32 VAE/SwinIR
    result = pipe(image_uint8_hw3, prompt='a cat on a sofa', key=0)
    result.image                                             # uint8 (H * upscale, W * upscale, 3)

The weights folder holds the files a DreamClear user already has (`WEIGHTS_LAYOUT`):

    DIR/DreamClear-1024.pth      the denoiser (or DIR/DreamClear-1024/, converted by `jaxrestore convert`)
    DIR/sd-vae-ft-ema/           diffusers AutoencoderKL: config.json + diffusion_pytorch_model.safetensors|.bin
    DIR/t5-v1_1-xxl/             Hugging Face T5: config.json, weights (sharded or not), spiece.model or tokenizer.json
    DIR/general_swinir_v1.ckpt   DiffBIR's SwinIR cleaner (or DIR/general_swinir_v1/, converted)

The steps, each as test.py (`log_validation`) does it:
 1. `PIL2Tensor`: scale by `upscale` (the output size is the input times `upscale`, rounded), enlarge so
    the short side is at least `min_size` (1024), round each side to a multiple of 64 (numpy's
    half-to-even), PIL bicubic resize of the 8-bit image, /255.
 2. SwinIR (DiffBIR's general cleaner), clamped to [0, 1].
 3. VAE encode of the LQ and the cleaned image: `2x - 1`, the posterior mean, times 0.18215
    (DreamClear's `scale_factor`).
 4. Caption: cleaned by T5Embedder's rules (`captions.preprocess_caption`), 120 tokens with the
    official padding / mask, T5 v1.1 XXL features. The official script captions the cleaned image
    with LLaVA-v1.6 (13 B; "Describe this image and its style."). That model stays outside the
    library: pass its caption as `prompt`; without one the empty caption is used and a note says so.
 5. LRE start: q_sample(cleaned latent, t=999) on the 1000-step schedule, the same latent twice
    (the conditional / unconditional pair).
 6. 50 respaced IDDPM steps (learned-range variance) with classifier-free guidance 4.5 against the
    learned null caption (`forward_with_cfg`); latents larger than 128 x 128 go through
    `forward_with_cfg_tile` (tiles of 128, overlap 32). test.py passes img_hw = 1024 x 1024 and
    aspect ratio 1 for every image, and the caption's mask for the null caption too: kept.
 7. VAE decode of the conditional sample / 0.18215, then (x + 1) / 2.
 8. Colour fix against the SwinIR output: wavelet (default) or AdaIN, then clamp to [0, 1].
 9. `Tensor2PIL`: torch's bicubic interpolation (A = -0.75, no antialiasing) to the output size,
    x 255, clip, truncation to uint8.

Randomness comes from one PRNG key per image: `split(key)` gives the LRE noise key and the loop key,
step k draws its noise from `fold_in(loop_key, k)` (what `GaussianDiffusion.sample` does), so a
result depends on its own key only, also in a batch. Batches (`restore_batch`) keep the images
apart: the denoiser is vmapped over images, since its `cross_de` attention would otherwise mix the
images of a batch (it flattens the batch into one sequence, a quirk kept for the CFG pair).

Precision: the DiT and T5 weights are bfloat16 by default (`dtype`), with float32 norms, softmaxes,
timestep sinusoids and sampler arithmetic; the VAE and SwinIR run in float32 as in test.py.

Memory: T5-XXL (4.76 B parameters, 9.5 GB in bfloat16) is loaded when a caption is first embedded
and, with `release_t5=True`, dropped before sampling; captions are cached by text. With a `mesh`
(`jaxrestore.train.sharding.make_mesh`), the DiT and T5 are laid out by their rule tables (FSDP along
`data`, heads / MLP width along `model`), VAE and SwinIR are replicated, and batches of images are
split along `data`. `jaxrestore.pipelines.memory` computes the per-stage peak memory.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import logging
import threading
import time
from pathlib import Path
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P
from PIL import Image

from jaxrestore.convert import build
from jaxrestore.convert import checkpoint as converted
from jaxrestore.convert import components
from jaxrestore.diffusion import IDDPM, adaptive_instance_normalization, lre_start, wavelet_reconstruction
from jaxrestore.mapping import CheckpointMismatchError
from jaxrestore.models import autoencoder_kl, t5 as t5_model
from jaxrestore.models import dreamclear as dc
from jaxrestore.models.t5_tokenizer import T5Tokenizer
from jaxrestore.pipelines import captions as caption_rules
from jaxrestore.train import sharding

log = logging.getLogger(__name__)

LATENT_SCALE = 0.18215        # DreamClear's config.scale_factor (SD's VAE scaling)
MIN_SIZE = 1024               # test.py: PIL2Tensor(min_size=1024)
SIZE_MULTIPLE = 64            # PIL2Tensor rounds both sides to multiples of 64
UPSCALE = 4                   # test.py --upscale default
STEPS = 50
CFG_SCALE = 4.5
LRE_T = 999                   # test.py --start_point
LATENT_TILE = 128             # test.py --latent_tiled_size: untiled only up to 128 x 128 latents
LATENT_OVERLAP = 32
MIN_INPUT_SIDE = 8            # smaller inputs carry too little to restore (and PIL2Tensor's scale explodes)
COLOR_ALIGN = ('wavelet', 'adain', None)

EMPTY_CAPTION_NOTE = ('no caption given: the empty caption is used. The official pipeline captions the '
                      'SwinIR output with LLaVA-v1.6 ("Describe this image and its style."); pass such a '
                      'caption as prompt (CLI: --prompt or --captions) for results like the paper\'s')


# ----- the weights folder ---------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Component:
  name: str
  candidates: tuple[str, ...]   # names tried in the weights folder, in order
  what: str


WEIGHTS_LAYOUT = (
    Component('denoiser', ('DreamClear-1024.pth', 'DreamClear-1024'),
              'the DreamClear denoiser: the official DreamClear-1024.pth, or its folder converted by '
              '`jaxrestore convert DreamClear-1024.pth DIR/DreamClear-1024`'),
    Component('vae', ('sd-vae-ft-ema',),
              'the Stable Diffusion VAE: a diffusers AutoencoderKL folder (config.json + '
              'diffusion_pytorch_model.safetensors or .bin), stabilityai/sd-vae-ft-ema'),
    Component('t5', ('t5-v1_1-xxl',),
              'the T5 v1.1 XXL text encoder: a Hugging Face folder (config.json, model*.safetensors or '
              'pytorch_model*.bin with its index, spiece.model or tokenizer.json), DeepFloyd/t5-v1_1-xxl'),
    Component('swinir', ('general_swinir_v1.ckpt', 'general_swinir_v1'),
              "DiffBIR's SwinIR cleaner: general_swinir_v1.ckpt, or its folder converted by `jaxrestore convert`"),
)


class MissingComponentError(FileNotFoundError):
  """A DreamClear component file or folder is absent; the message names each one and what it is."""


def _usable(component: str, path: Path) -> bool:
  if component in ('vae', 't5'):
    return path.is_dir()
  return path.is_file() or converted.is_converted_checkpoint(path)


def locate_components(weights_dir=None, **paths) -> dict[str, Path]:
  """{component: path} from the weights folder (`WEIGHTS_LAYOUT`) and explicit `denoiser=`, `vae=`,
  `t5=`, `swinir=` paths (which win). Raises MissingComponentError naming every missing one."""
  unknown = set(paths) - {c.name for c in WEIGHTS_LAYOUT}
  if unknown:
    raise TypeError(f'unknown DreamClear component(s) {sorted(unknown)}; expected {[c.name for c in WEIGHTS_LAYOUT]}')
  root = None if weights_dir is None else Path(weights_dir).expanduser()
  if root is not None and not root.is_dir():
    raise MissingComponentError(f'DreamClear weights folder {root} does not exist (or is not a folder)')
  found, missing = {}, []
  for comp in WEIGHTS_LAYOUT:
    given = paths.get(comp.name)
    if given is not None:
      p = Path(given).expanduser()
      if not _usable(comp.name, p):
        missing.append(f'{comp.name}: {p} does not exist or is not usable ({comp.what})')
        continue
      found[comp.name] = p
      continue
    if root is None:
      missing.append(f'{comp.name}: no weights folder and no path given ({comp.what})')
      continue
    hit = next((root / n for n in comp.candidates if _usable(comp.name, root / n)), None)
    if hit is None:
      names = ' or '.join(f'{n}/' if comp.name in ('vae', 't5') or '.' not in n else n for n in comp.candidates)
      missing.append(f'{comp.name}: {root}/{names} not found ({comp.what})')
    else:
      found[comp.name] = hit
  if missing:
    raise MissingComponentError(f'DreamClear is missing {len(missing)} component(s): ' + '; '.join(missing))
  return found


def _model_source(path: Path, architecture: str, what: str, **hyperparameters):
  """(config, loader) of a component checkpoint (converted folder or PyTorch file), read lazily
  (nothing materialised yet); refuses a checkpoint of another architecture."""
  if converted.is_converted_checkpoint(path):
    arch, config = build.converted_config(path, None, **hyperparameters)
    load = lambda: build.model_from_converted(path, None, **hyperparameters)
  else:
    arch, config, state_dict = build.torch_checkpoint_config(path, None, **hyperparameters)
    load = lambda: build.model_from_state_dict(arch, config, state_dict, source=str(path))
  if arch.name != architecture:
    raise CheckpointMismatchError(f'{path} is not {what}: it holds a {arch.name} model')
  return config, load


def _read_json(path: Path, what: str) -> dict:
  try:
    return json.loads(path.read_text())
  except FileNotFoundError:
    raise MissingComponentError(f'{path.parent}: no config.json ({what})') from None
  except (OSError, ValueError) as e:
    raise CheckpointMismatchError(f'{path}: unreadable config ({e})') from None


# ----- images: test.py's PIL2Tensor / Tensor2PIL ------------------------------------------------------

def processing_size(height: int, width: int, upscale: float = UPSCALE, min_size: int = MIN_SIZE,
                    multiple: int = SIZE_MULTIPLE) -> tuple[tuple[int, int], tuple[int, int]]:
  """((H, W) the networks run at, (h0, w0) of the output), as PIL2Tensor computes them."""
  if min(height, width) < MIN_INPUT_SIDE:
    raise ValueError(f'image of {width}x{height} pixels is too small: DreamClear needs at least '
                     f'{MIN_INPUT_SIDE} pixels per side')
  if not upscale > 0:
    raise ValueError(f'upscale must be positive, got {upscale}')
  w, h = width * upscale, height * upscale
  w0, h0 = round(w), round(h)
  if min(w, h) < min_size:
    grow = min_size / min(w, h)
    w, h = w * grow, h * grow
  size = (int(np.round(h / multiple)) * multiple, int(np.round(w / multiple)) * multiple)
  if min(size) < multiple or min(h0, w0) < 1:
    raise ValueError(f'image of {width}x{height} pixels is too small: with upscale {upscale} and min size {min_size} '
                     f'it rounds to {size[1]}x{size[0]} (sides must reach {multiple}); raise min_size or upscale')
  return size, (h0, w0)


def as_rgb_uint8(image) -> np.ndarray:
  """A PIL image or an array (H, W[, C]) as uint8 RGB, like PIL's `.convert('RGB')`: gray is
  repeated, alpha dropped; float arrays are read as [0, 1], uint16 as 16-bit."""
  if isinstance(image, Image.Image):
    return np.asarray(image.convert('RGB'))
  arr = np.asarray(image)
  if arr.ndim == 2:
    arr = arr[:, :, None]
  if arr.ndim != 3 or arr.shape[2] not in (1, 2, 3, 4):
    raise ValueError(f'expected an image (H, W), (H, W, 1..4) or a PIL image, got an array of shape {arr.shape}')
  if arr.shape[2] in (2, 4):
    arr = arr[:, :, :-1]
  if arr.shape[2] == 1:
    arr = np.repeat(arr, 3, axis=2)
  if arr.dtype == np.uint8:
    return np.ascontiguousarray(arr)
  if arr.dtype == np.uint16:
    return (arr >> 8).astype(np.uint8)
  if np.issubdtype(arr.dtype, np.floating):
    return np.round(np.clip(arr, 0.0, 1.0) * 255.0).astype(np.uint8)
  raise ValueError(f'unsupported image dtype {arr.dtype}')


def pil_bicubic(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
  """uint8 (h, w, 3) -> float32 (H, W, 3) in [0, 1]: PIL's bicubic resize, then /255 (in float64,
  rounded to float32, as `torch.tensor(x / 255, dtype=float32)`)."""
  h, w = size
  resized = np.asarray(Image.fromarray(image).resize((w, h), Image.BICUBIC))
  return (resized.astype(np.float64) / 255.0).astype(np.float32)


def _torch_cubic_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
  """(indices (out, 4), weights (out, 4) float32) of torch's bicubic upsampling along one axis:
  align_corners=False, source = scale * (i + 0.5) - 0.5 with scale = in / out, Keys A = -0.75,
  taps clamped at the border; all in float32 as torch's CPU kernel."""
  a = np.float32(-0.75)
  scale = np.float32(in_size) / np.float32(out_size)
  real = scale * (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) - np.float32(0.5)
  base = np.floor(real)
  t = (real - base).astype(np.float32)

  def near(x):   # |x| <= 1
    return ((a + 2) * x - (a + 3)) * x * x + 1

  def far(x):    # 1 < |x| < 2
    return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

  one = np.float32(1)
  weights = np.stack([far(t + one), near(t), near(one - t), far(np.float32(2) - t)], axis=1).astype(np.float32)
  idx = np.clip(base.astype(np.int64)[:, None] + np.arange(-1, 3)[None], 0, in_size - 1)
  return idx, weights


def torch_bicubic(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
  """float32 (H, W, C) -> (h, w, C): `F.interpolate(mode='bicubic')` (no antialiasing), separable,
  rows then columns of taps summed left to right in float32."""
  x = np.asarray(x, np.float32)
  h, w = size
  if (h, w) == x.shape[:2]:
    return x.copy()
  ix, wx = _torch_cubic_taps(x.shape[1], w)
  iy, wy = _torch_cubic_taps(x.shape[0], h)
  cols = sum(x[:, ix[:, k]] * wx[None, :, k, None] for k in range(4))
  return sum(cols[iy[:, k]] * wy[:, k, None, None] for k in range(4)).astype(np.float32)


def to_uint8_truncated(x: np.ndarray) -> np.ndarray:
  """Tensor2PIL's `(x * 255).numpy().clip(0, 255).astype(uint8)`: truncation, not rounding."""
  return np.clip(np.asarray(x, np.float32) * np.float32(255.0), 0, 255).astype(np.uint8)


# ----- the progress channel -------------------------------------------------------------------------
# The sampling loop is one jitted lax.scan; each step reports (token, step, timestep) to the host.
# The token picks the listener of the call that is running, so the compiled loop is reused.

_LISTENERS: dict[int, Callable[[int, int], None]] = {}
_LISTENER_LOCK = threading.Lock()
_NEXT_TOKEN = [0]


def _on_step(token, step, timestep) -> None:
  listener = _LISTENERS.get(int(token))
  if listener is not None:
    listener(int(step), int(timestep))


def _register(listener) -> int:
  with _LISTENER_LOCK:
    _NEXT_TOKEN[0] += 1
    _LISTENERS[_NEXT_TOKEN[0]] = listener
    return _NEXT_TOKEN[0]


# ----- the sampler --------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=16)
def _build_sampler(graphdef, steps: int):
  """A jitted function running LRE + the respaced IDDPM loop for a batch of images (vmapped); one
  per (model structure, step count), so pipelines of the same structure share compilations."""
  diffusion = IDDPM(str(steps))
  lre = IDDPM('1000')
  # GaussianDiffusion caches its tables on first use: build them here, outside the trace (a table
  # first built inside a jit trace would be cached as a tracer and leak into the next trace).
  diffusion.tables()
  lre.tables()
  n_steps = diffusion.num_timesteps
  timestep_map = np.asarray(diffusion.timestep_map, np.int32)

  def sample(state, keys, lat_lq, lat_pre, caption, null, mask, cfg_scale, token, *, tiled, tile, overlap):
    n, h, w, c = lat_pre.shape
    pairs = jax.vmap(jax.random.split)(keys)
    init_keys, loop_keys = pairs[:, 0], pairs[:, 1]
    noise0 = jax.vmap(lambda k: jax.random.normal(k, (1, h, w, c), jnp.float32))(init_keys)[:, 0]
    z = lre_start(lat_pre, noise=noise0, t=LRE_T, diffusion=lre)
    x = jnp.stack([z, z], axis=1)                       # (N, 2, h, w, c): the CFG pair per image
    model = nnx.merge(graphdef, state)

    def one(x2, t_orig, cap, m, lq, pre):
      caption2 = jnp.stack([cap, null.astype(cap.dtype)])
      t2 = jnp.full((2,), t_orig, jnp.int32)
      kw = dict(caption_mask=m, c_lq=lq[None], c_pre=pre[None])
      if tiled:
        return model.forward_with_cfg_tile(x2, t2, caption2, cfg_scale, tile, overlap, **kw)
      return model.forward_with_cfg(x2, t2, caption2, cfg_scale, **kw)

    def body(x, k):
      t = n_steps - 1 - k
      t_orig = jnp.asarray(timestep_map)[t]
      out = jax.vmap(one, in_axes=(0, None, 0, 0, 0, 0))(x, t_orig, caption, mask, lat_lq, lat_pre)
      noise = jax.vmap(lambda kk: jax.random.normal(jax.random.fold_in(kk, k), (2, h, w, c), jnp.float32))(loop_keys)
      x = diffusion.p_sample(out, x, jnp.full((n,), t, jnp.int32), noise)['sample']
      jax.debug.callback(_on_step, token, k, t_orig)
      return x, None

    x, _ = jax.lax.scan(body, x, jnp.arange(n_steps))
    return x[:, 0]                                      # the conditional half (samples.chunk(2)[0])

  return jax.jit(sample, static_argnames=('tiled', 'tile', 'overlap'))


def module_jit(fn):
  """`fn(module, *args)` jitted over the module's split state, returning only fn's outputs.

  nnx.jit also returns the state of a module argument (to carry mutations back), so XLA writes a
  fresh copy of every weight it is given: for T5-XXL that is another 9.5 GB per call. Here the
  weights only go in."""
  @functools.partial(jax.jit, static_argnums=0)
  def run(graphdef, state, *args):
    return fn(nnx.merge(graphdef, state), *args)

  def call(module, *args):
    graphdef, state = nnx.split(module)
    return run(graphdef, state, *args)

  return call


# T5 runs block by block: one compiled block reused 24 times. A single jit of the whole encoder lets
# XLA:CPU, which upcasts bfloat16 matmul operands to float32, schedule the float32 copies of many
# layers' weights at once; per block, at most one layer's copy exists. (On accelerators with bfloat16
# matmuls nothing is copied either way; 24 dispatches for 120 tokens cost nothing.)

def _t5_inputs(model: t5_model.T5Encoder, ids, mask):
  """Token embeddings (float32 stream) and position bias plus padding mask, as `T5Encoder.__call__`."""
  bias = model.position_bias(ids.shape[1])
  bias = bias + jnp.where(mask[:, None, None, :] == 0, jnp.finfo(jnp.float32).min, 0.0).astype(jnp.float32)
  return model.shared.embedding[...][ids].astype(jnp.float32), bias


_t5_embed = module_jit(_t5_inputs)
_t5_block = module_jit(lambda block, x, bias: block(x, bias))
_t5_final = module_jit(lambda norm, x: norm(x))


def t5_encode_blockwise(model: t5_model.T5Encoder, ids, mask) -> jax.Array:
  """`T5Encoder(ids, mask)` run one block at a time (the same operations)."""
  x, bias = _t5_embed(model, ids, mask)
  for block in model.blocks:
    x = _t5_block(block, x, bias)
  return _t5_final(model.final_norm, x)


_clean = module_jit(lambda model, x: jnp.clip(model(x), 0.0, 1.0))
_vae_encode = module_jit(lambda vae, x: vae.encode_mean(2.0 * x - 1.0) * LATENT_SCALE)
_vae_decode = module_jit(lambda vae, z: (vae.decode_full(z / LATENT_SCALE) + 1.0) / 2.0)


@jax.jit
def _colour_fix_wavelet(hq, ref):
  return jnp.clip(wavelet_reconstruction(hq, ref), 0.0, 1.0)


@jax.jit
def _colour_fix_adain(hq, ref):
  return jnp.clip(adaptive_instance_normalization(hq, ref), 0.0, 1.0)


@jax.jit
def _no_colour_fix(hq, ref):
  del ref
  return jnp.clip(hq, 0.0, 1.0)


_COLOUR_FIX = {'wavelet': _colour_fix_wavelet, 'adain': _colour_fix_adain, None: _no_colour_fix,
               'none': _no_colour_fix}


def shard_module(model: nnx.Module, rules, mesh) -> nnx.Module:
  """The module with its arrays laid out on `mesh` by a rule table (jaxrestore.train.sharding)."""
  graphdef, state = nnx.split(model)
  pure = nnx.to_pure_dict(state)
  pure = jax.device_put(pure, sharding.shardings(pure, rules, mesh))
  nnx.replace_by_pure_dict(state, pure)
  return nnx.merge(graphdef, state)


def _as_key(key) -> jax.Array:
  if isinstance(key, (int, np.integer)):
    return jax.random.key(int(key))
  key = jnp.asarray(key)
  if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
    return key
  if key.dtype == jnp.uint32 and key.shape == (2,):
    return jax.random.wrap_key_data(key)
  raise TypeError(f'key must be an int seed or a PRNG key, got {key.dtype} {key.shape}')


# ----- results ------------------------------------------------------------------------------------

@dataclasses.dataclass
class DreamClearResult:
  """One restored image and what happened on the way."""
  image: np.ndarray                   # uint8 (h0, w0, 3)
  caption: str                        # as given ('' when none)
  cleaned_caption: str                # what the tokenizer saw
  notes: list[str]
  trace: list[tuple[int, int]]        # (step, original timestep) reported by every sampling step
  processing_size: tuple[int, int]    # (H, W) the networks ran at
  latent_size: tuple[int, int]
  tiled: bool                         # forward_with_cfg_tile was used
  timings: dict[str, float]           # seconds per stage (shared by the images of one batch)
  latent: np.ndarray | None = None    # the final (conditional) latent, (h, w, 4) float32
  cleaned: np.ndarray | None = None   # the SwinIR output (H, W, 3) float32, with keep_intermediates

  @property
  def steps(self) -> int:
    return len(self.trace)


# ----- the pipeline -----------------------------------------------------------------------------------

class DreamClear:
  """The end-to-end restorer. Build it with `DreamClear.load(weights_dir)` (or `from_models` for models
  already in memory). Components load on first use: all but T5 right away unless `eager=False`."""

  def __init__(self, *, denoiser_config, swinir_config, vae_config, t5_config, tokenizer: T5Tokenizer,
               loaders: dict[str, Callable[[], nnx.Module]], names: dict[str, str] | None = None, mesh=None,
               min_size: int = MIN_SIZE, release_t5: bool = False):
    """Low level: configs, the tokenizer and a zero-argument loader per component ('denoiser', 'vae',
    'swinir', 't5'). Checks that the components fit together; `names` label them in errors."""
    names = {k: k for k in ('denoiser', 'vae', 'swinir', 't5')} | dict(names or {})
    self.denoiser_config, self.swinir_config, self.vae_config, self.t5_config = (
        denoiser_config, swinir_config, vae_config, t5_config)
    self.tokenizer = tokenizer
    self.mesh = mesh
    self.min_size = int(min_size)
    self.release_t5_after_use = bool(release_t5)
    self._loaders = dict(loaders)
    dcfg = denoiser_config
    if vae_config.latent_channels != dcfg.in_channels:
      raise CheckpointMismatchError(
          f'{names["vae"]}: the VAE has {vae_config.latent_channels} latent channels, the denoiser '
          f'{names["denoiser"]} expects {dcfg.in_channels}')
    if SIZE_MULTIPLE % (vae_config.downscale * dcfg.patch_size):
      raise CheckpointMismatchError(f'{names["vae"]}: a VAE downscaling by {vae_config.downscale} does not fit '
                                    f'images of multiples of {SIZE_MULTIPLE}')
    if t5_config.d_model != dcfg.caption_channels:
      raise CheckpointMismatchError(
          f'{names["t5"]}: this T5 encoder produces {t5_config.d_model}-wide features (d_model), but the '
          f'denoiser {names["denoiser"]} expects {dcfg.caption_channels} caption channels; DreamClear '
          f'needs t5-v1_1-xxl (4096)')
    if not swinir_config.unshuffle or swinir_config.scale != 1 or swinir_config.in_chans != 3:
      raise CheckpointMismatchError(f"{names['swinir']} is not DiffBIR's SwinIR cleaner (an RGB SwinIR with "
                                    f'PixelUnshuffle restoring at the input size)')
    self.max_tokens = dcfg.model_max_length
    self._denoiser = self._vae = self._swinir = self._t5 = None
    self._captions: dict[str, tuple[jax.Array, np.ndarray]] = {}
    self.on_stage: Callable[[str, str], None] | None = None   # on_stage(stage, 'start' | 'end'), for profiling

  @classmethod
  def load(cls, weights_dir=None, dtype=jnp.bfloat16, mesh=None, *, denoiser=None, vae=None, t5=None, swinir=None,
           eager: bool = True, vae_dtype=jnp.float32, swinir_dtype=jnp.float32, t5_dtype=None,
           num_heads: int | None = None, **options) -> 'DreamClear':
    """Reads the weights folder (`WEIGHTS_LAYOUT`; `denoiser=`, `vae=`, `t5=`, `swinir=` override single
    paths). Every component is checked before anything large is read: missing files (named), a T5
    whose width is not the denoiser's caption width, a VAE of other latent channels, a checkpoint of
    another architecture. `dtype`: the DiT's and T5's weights and compute (None = float32);
    vae_dtype / swinir_dtype float32 as test.py; t5_dtype defaults to `dtype`; num_heads: the
    denoiser's (not stored in .pth files; default hidden / 72). Options: min_size (1024),
    release_t5 (drop T5 after each caption batch). `eager=False` defers loading until first use
    (the CLI embeds every caption first, so T5 and the DiT are never resident together)."""
    given = {k: v for k, v in dict(denoiser=denoiser, vae=vae, t5=t5, swinir=swinir).items() if v is not None}
    paths = locate_components(weights_dir, **given)
    hp = dict(dtype=dtype, param_dtype=jnp.float32 if dtype is None else dtype)
    if num_heads is not None:
      hp['num_heads'] = int(num_heads)
    denoiser_config, load_denoiser = _model_source(paths['denoiser'], 'dreamclear', 'the DreamClear denoiser', **hp)
    swinir_config, load_swinir = _model_source(paths['swinir'], 'swinir', "DiffBIR's SwinIR cleaner",
                                               dtype=swinir_dtype, param_dtype=jnp.float32)
    vae_json = _read_json(paths['vae'] / 'config.json', 'expected a diffusers AutoencoderKL folder')
    vae_config = autoencoder_kl.AutoencoderKLConfig.from_diffusers(vae_json, param_dtype=vae_dtype, dtype=vae_dtype)
    t5_json = _read_json(paths['t5'] / 'config.json', 'expected a Hugging Face T5 folder')
    t5_dtype = dtype if t5_dtype is None else t5_dtype
    t5_config = t5_model.T5Config.from_hf(t5_json, param_dtype=t5_dtype or jnp.float32, dtype=t5_dtype)
    if t5_config.d_model != denoiser_config.caption_channels:   # before reading the tokenizer
      names = {'t5': str(paths['t5']), 'denoiser': paths['denoiser'].name}
      raise CheckpointMismatchError(
          f'{names["t5"]}: this T5 encoder produces {t5_config.d_model}-wide features (d_model), but the '
          f'denoiser {names["denoiser"]} expects {denoiser_config.caption_channels} caption channels; DreamClear '
          f'needs t5-v1_1-xxl (4096)')
    tokenizer = T5Tokenizer.from_folder(paths['t5'], preprocess=caption_rules.preprocess_caption)
    loaders = dict(
        denoiser=load_denoiser, swinir=load_swinir,
        vae=lambda: components.load_diffusers_vae(paths['vae'], dtype=vae_dtype),
        t5=lambda: components.load_t5_encoder(paths['t5'], dtype=t5_dtype or jnp.float32, compute_dtype=t5_dtype,
                                              expected_width=denoiser_config.caption_channels))
    pipe = cls(denoiser_config=denoiser_config, swinir_config=swinir_config, vae_config=vae_config,
               t5_config=t5_config, tokenizer=tokenizer, loaders=loaders, mesh=mesh,
               names={k: str(v) for k, v in paths.items()}, **options)
    pipe.paths = paths
    if eager:
      pipe.denoiser, pipe.vae, pipe.swinir   # noqa: B018 -- load now
    return pipe

  @classmethod
  def from_models(cls, denoiser, vae, swinir, t5, tokenizer: T5Tokenizer, *, mesh=None, **options) -> 'DreamClear':
    """From models in memory. Each model may instead be a zero-argument function building it, called
    on first use (so T5 can be dropped and rebuilt, and nothing is resident before it is needed); its
    config is the function's `config` attribute when it has one, else read from `nnx.eval_shape(fn)`.
    `tokenizer` is a `T5Tokenizer` (its `preprocess` is the caller's)."""
    def split(m):
      if isinstance(m, nnx.Module):
        return m.config, (lambda: m)
      config = getattr(m, 'config', None)
      return (nnx.eval_shape(m).config if config is None else config), m

    (dcfg, dl), (vcfg, vl), (scfg, sl), (tcfg, tl) = map(split, (denoiser, vae, swinir, t5))
    pipe = cls(denoiser_config=dcfg, swinir_config=scfg, vae_config=vcfg, t5_config=tcfg, tokenizer=tokenizer,
               mesh=mesh, loaders=dict(denoiser=dl, vae=vl, swinir=sl, t5=tl), **options)
    pipe.paths = {}
    return pipe

  # -- components, loaded on first use --

  def _place(self, model, rules):
    return model if self.mesh is None else shard_module(model, rules, self.mesh)

  @property
  def denoiser(self) -> dc.DreamClear:
    if self._denoiser is None:
      self._denoiser = self._place(self._loaders['denoiser'](), dc.ARCHITECTURE.sharding_rules)
    return self._denoiser

  @property
  def vae(self) -> autoencoder_kl.AutoencoderKL:
    if self._vae is None:
      self._vae = self._place(self._loaders['vae'](), sharding.RULES['replicated'])
    return self._vae

  @property
  def swinir(self):
    if self._swinir is None:
      self._swinir = self._place(self._loaders['swinir'](), sharding.RULES['replicated'])
    return self._swinir

  @property
  def t5(self) -> t5_model.T5Encoder:
    if self._t5 is None:
      self._t5 = self._place(self._loaders['t5'](), t5_model.SHARDING_RULES)
    return self._t5

  @property
  def t5_loaded(self) -> bool:
    return self._t5 is not None

  def release_t5(self) -> None:
    """Drops the T5 weights (9.5 GB in bfloat16); cached caption embeddings stay usable."""
    self._t5 = None
    converted.release_freed_memory()

  def release(self, *names: str) -> None:
    """Drops loaded components ('denoiser', 'vae', 'swinir', 't5'); they reload on next use."""
    for name in names or ('denoiser', 'vae', 'swinir', 't5'):
      setattr(self, f'_{name}', None)
    converted.release_freed_memory()

  # -- captions --

  def embed_captions(self, texts: Sequence[str | None]) -> tuple[jax.Array, np.ndarray]:
    """(features (B, L, C), mask (B, L) int32) of T5Embedder for each text (None = ''). New texts are
    encoded in one T5 call; results are cached by text."""
    texts = ['' if t is None else str(t) for t in texts]
    new = [t for t in dict.fromkeys(texts) if t not in self._captions]
    if new:
      ids, mask = self.tokenizer(new, max_length=self.max_tokens)
      feats = t5_encode_blockwise(self.t5, jnp.asarray(ids), jnp.asarray(mask))
      for i, text in enumerate(new):
        self._captions[text] = (feats[i], mask[i])
      if self.release_t5_after_use:
        self.release_t5()
    return (jnp.stack([self._captions[t][0] for t in texts]), np.stack([self._captions[t][1] for t in texts]))

  def clear_caption_cache(self) -> None:
    self._captions.clear()

  # -- restoring --

  def __call__(self, image, prompt: str | None = None, *, key=0, steps: int = STEPS, cfg: float = CFG_SCALE,
               upscale: float = UPSCALE, color_align: str | None = 'wavelet', progress=None, **options
               ) -> DreamClearResult:
    """Restores one image (uint8 / float [0, 1] array (H, W[, C]) or a PIL image); see
    `restore_batch` for the options."""
    return self.restore_batch([image], [prompt], keys=[key], steps=steps, cfg=cfg, upscale=upscale,
                              color_align=color_align, progress=progress, **options)[0]

  def restore_batch(self, images: Sequence, prompts: Sequence[str | None] | None = None, *, keys=None,
                    steps: int = STEPS, cfg: float = CFG_SCALE, upscale: float = UPSCALE,
                    color_align: str | None = 'wavelet', progress: Callable[[int, int], None] | None = None,
                    min_size: int | None = None, latent_tile: int | None = LATENT_TILE,
                    latent_overlap: int = LATENT_OVERLAP, vae_tile: int | None = None,
                    keep_intermediates: bool = False) -> list[DreamClearResult]:
    """Restores images that share a processing size in one batch (split along `data` on a mesh).

    keys: one int seed or PRNG key per image (default: seed 0 for each). progress(done, total) is
    called after every sampling step. min_size: short side the image is enlarged to (default the
    pipeline's, 1024). latent_tile / latent_overlap: latents with a side beyond latent_tile go
    through forward_with_cfg_tile (None: never tile). vae_tile: tiled VAE encode/decode in image
    pixels (equal to untiled up to float rounding; None: whole images).
    """
    if color_align not in _COLOUR_FIX:
      raise ValueError(f"color_align must be 'wavelet', 'adain' or None, got {color_align!r}")
    if int(steps) < 1:
      raise ValueError(f'steps must be at least 1, got {steps}')
    n = len(images)
    if n == 0:
      return []
    prompts = [None] * n if prompts is None else list(prompts)
    keys = [0] * n if keys is None else list(keys)
    if len(prompts) != n or len(keys) != n:
      raise ValueError(f'{n} images need {n} prompts and keys, got {len(prompts)} and {len(keys)}')
    min_size = self.min_size if min_size is None else int(min_size)
    timings: dict[str, float] = {}

    def timed(stage, fn, *args):
      if self.on_stage is not None:
        self.on_stage(stage, 'start')
      start = time.perf_counter()
      out = jax.block_until_ready(fn(*args))
      timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - start
      if self.on_stage is not None:
        self.on_stage(stage, 'end')
      return out

    # 1. sizes and the bicubic enlargement
    rgb = [as_rgb_uint8(im) for im in images]
    plans = [processing_size(im.shape[0], im.shape[1], upscale, min_size) for im in rgb]
    if len({p[0] for p in plans}) > 1:
      raise ValueError(f'restore_batch: the images must share one processing size, got {sorted({p[0] for p in plans})}')
    size = plans[0][0]
    lq = timed('resize', lambda: self._batch(np.stack([pil_bicubic(im, size) for im in rgb])))

    # 2. SwinIR cleaning, clamped
    pre = timed('swinir', _clean, self.swinir, lq)

    # 3. VAE encode of both (posterior mean, scaled)
    def encode(x):
      if vae_tile is None or vae_tile >= max(x.shape[1:3]):
        return _vae_encode(self.vae, x)
      return self.vae.encode(2.0 * x - 1.0, tile=vae_tile) * LATENT_SCALE
    lat_lq = timed('vae_encode', encode, lq)
    lat_pre = timed('vae_encode', encode, pre)

    # 4. captions (T5 runs only for texts not seen before)
    notes: list[list[str]] = [[] for _ in range(n)]
    for i, p in enumerate(prompts):
      if p is None or not str(p).strip():
        notes[i].append(EMPTY_CAPTION_NOTE)
        log.warning(EMPTY_CAPTION_NOTE)
      elif not caption_rules.EXACT:
        notes[i].append('caption cleaned with standard-library stand-ins for ftfy / BeautifulSoup (install them '
                        'for the original cleaning)')
    caption, mask = timed('t5', self.embed_captions, prompts)

    # 5-6. LRE start and the guided IDDPM loop
    h, w = lat_pre.shape[1:3]
    tiled = latent_tile is not None and (h > latent_tile or w > latent_tile)
    if tiled and not 0 <= latent_overlap < latent_tile:
      raise ValueError(f'latent_overlap {latent_overlap} must lie in [0, latent_tile={latent_tile}) for a '
                       f'{h}x{w} latent')
    trace: list[tuple[int, int]] = []
    total = int(steps)

    def listener(step, timestep):
      trace.append((step, timestep))
      if progress is not None:
        progress(len(trace), total)

    token = _register(listener)
    try:
      model = self.denoiser
      sampler = _build_sampler(nnx.graphdef(model), total)
      key_batch = jnp.stack([_as_key(k) for k in keys])
      samples = timed('sampling', lambda: sampler(
          nnx.state(model), key_batch, lat_lq, lat_pre, self._batch(caption), jnp.asarray(model.y_embedding),
          self._batch(jnp.asarray(mask)[:, None, :]), jnp.float32(cfg), jnp.int32(token),
          tiled=tiled, tile=int(latent_tile or 0), overlap=int(latent_overlap)))
      jax.effects_barrier()
    finally:
      _LISTENERS.pop(token, None)
    trace.sort()

    # 7. decode the conditional sample
    def decode(z):
      if vae_tile is None or vae_tile >= max(z.shape[1:3]) * self.vae_config.downscale:
        return _vae_decode(self.vae, z)
      return (self.vae.decode(z / LATENT_SCALE, tile=vae_tile) + 1.0) / 2.0
    hq = timed('vae_decode', decode, samples)
    # 8. colour fix against the SwinIR output
    hq = timed('color_fix', _COLOUR_FIX[color_align], hq, pre)
    # 9. back to the output size
    hq = np.asarray(hq)
    outputs = timed('resize_back', lambda: [to_uint8_truncated(torch_bicubic(hq[i], plans[i][1])) for i in range(n)])

    latents = np.asarray(samples, np.float32)
    cleaned = np.asarray(pre) if keep_intermediates else None
    return [DreamClearResult(
        image=outputs[i], caption='' if prompts[i] is None else str(prompts[i]),
        cleaned_caption=(self.tokenizer.preprocess or str)('' if prompts[i] is None else str(prompts[i])),
        notes=notes[i], trace=list(trace), processing_size=size, latent_size=(int(h), int(w)), tiled=tiled,
        timings=dict(timings), latent=latents[i], cleaned=None if cleaned is None else cleaned[i])
        for i in range(n)]

  def _batch(self, x):
    """Splits a batch along `data` on a mesh (replicated when the batch does not divide)."""
    x = jnp.asarray(x)
    if self.mesh is None:
      return x
    ways = dict(self.mesh.shape)['data']
    spec = P('data') if x.shape[0] % ways == 0 else P()
    return jax.device_put(x, NamedSharding(self.mesh, spec))
