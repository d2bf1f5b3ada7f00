"""Per-stage peak device memory of the DreamClear pipeline, computed from abstract shapes only.

Nothing is allocated or run: every model is built with `nnx.eval_shape`, laid out on an
`AbstractMesh` by the pipeline's rule tables (the DiT's `dreamclear.ARCHITECTURE.sharding_rules`, T5's
`SHARDING_RULES`, VAE and SwinIR replicated), and each stage's computation is traced to a jaxpr
(`jax.make_jaxpr` on `ShapeDtypeStruct`s). For a stage on one device:

  peak = resident parameter bytes per device (every component loaded at that point)
       + the largest gathered FSDP weight (all-gathered where it is used)
       + the stage's inputs + the peak of live intermediates, walking the jaxpr in program order
         (a buffer lives from the equation that makes it to its last use; nested jaxprs add their
         own peak while they run).

The intermediates bound is what an unfused, unrematerialised execution holds: XLA fuses
elementwise chains (less) and may keep buffers for reuse or overlap (more), so it is an estimate,
not a measurement. Under tensor parallelism (`model` > 1) intermediates carrying a split axis (the
heads, the MLP / qkv / kv widths) count 1/model per device; the residual stream is replicated, as
Megatron-style layouts keep it. Under `data` > 1 each device holds images / data images.

Residency follows the CLI's order (`jaxrestore.pipelines.cli.run`): T5 runs first for every
caption and is dropped; SwinIR, the VAE and the DiT then load on first use and stay.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.extend import core as jcore

from jaxrestore.diffusion import wavelet_reconstruction
from jaxrestore.models import autoencoder_kl, dreamclear as dc, t5 as t5_model
from jaxrestore.models.swinir import SwinIR, SwinIRConfig
from jaxrestore.registry import get_preset
from jaxrestore.train import sharding

GB = 1e9
# stabilityai/sd-vae-ft-ema's config.json (the architecture part).
SD_VAE = dict(in_channels=3, out_channels=3, down_block_types=('DownEncoderBlock2D',) * 4,
              up_block_types=('UpDecoderBlock2D',) * 4, block_out_channels=(128, 256, 512, 512), layers_per_block=2,
              latent_channels=4, norm_num_groups=32, sample_size=256)


@dataclasses.dataclass(frozen=True)
class StageMemory:
  stage: str
  params: float          # resident parameter bytes per device
  gathered: float        # largest all-gathered weight (FSDP) while the stage runs
  activations: float     # inputs + peak live intermediates per device
  resident: str          # which components are loaded

  @property
  def peak(self) -> float:
    return self.params + self.gathered + self.activations


# ----- parameters ----------------------------------------------------------------------------------------

def _nbytes(shape, dtype) -> int:
  try:
    item = np.dtype(dtype).itemsize
  except TypeError:    # PRNG key types and the like
    item = 8
  return int(math.prod(shape)) * item


def param_bytes(abstract: nnx.Module, rules, mesh_shape: tuple[int, int]) -> tuple[float, float]:
  """(bytes per device, largest weight all-gathered over `data`) of a module under a rule table."""
  tree = nnx.to_pure_dict(nnx.state(abstract))
  mesh = jax.sharding.AbstractMesh(tuple(mesh_shape), sharding.AXES)
  specs = sharding.partition_specs(tree, rules, mesh)
  sizes = dict(zip(sharding.AXES, mesh_shape))
  leaves = jax.tree.leaves(tree)
  spec_leaves = jax.tree.leaves(specs, is_leaf=lambda s: isinstance(s, jax.sharding.PartitionSpec))
  per_device = gathered = 0.0
  for leaf, spec in zip(leaves, spec_leaves):
    n = _nbytes(leaf.shape, leaf.dtype)
    axes = [a for dim in spec if dim for a in ((dim,) if isinstance(dim, str) else dim)]
    per_device += n / math.prod(sizes[a] for a in axes)
    if 'data' in axes and sizes['data'] > 1:
      gathered = max(gathered, n / math.prod(sizes[a] for a in axes if a != 'data'))
  return per_device, gathered


# ----- activations ---------------------------------------------------------------------------------------

def _is_var(v) -> bool:
  return isinstance(v, jcore.Var) and not isinstance(v, jcore.DropVar)


def _jaxpr_peak(jaxpr, size_of: Callable) -> float:
  """Peak bytes of the values a jaxpr creates, in program order (its inputs are the caller's)."""
  end = len(jaxpr.eqns)
  last: dict[Any, int] = {}
  for i, eqn in enumerate(jaxpr.eqns):
    for v in eqn.invars:
      if _is_var(v):
        last[v] = i
  for v in jaxpr.outvars:
    if _is_var(v):
      last[v] = end
  live = peak = 0.0
  owned: dict[Any, float] = {}
  for i, eqn in enumerate(jaxpr.eqns):
    inner = max((_jaxpr_peak(getattr(j, 'jaxpr', j), size_of) for j in jcore.jaxprs_in_params(eqn.params)),
                default=0.0)
    outs = [v for v in eqn.outvars if _is_var(v)]
    made = sum(size_of(v) for v in outs)
    peak = max(peak, live + max(inner, made))
    for v in outs:
      if v in last:
        owned[v] = size_of(v)
        live += owned[v]
    for v in set(v for v in eqn.invars if _is_var(v)):
      if last.get(v) == i and v in owned:
        live -= owned.pop(v)
  return peak


def activation_bytes(fn: Callable, *args, split_sizes=(), ways: int = 1) -> float:
  """Inputs (non-parameter args after the first) + peak intermediates of `fn(*args)` traced
  abstractly; values with an axis whose size is in `split_sizes` count 1/ways."""
  split = set(split_sizes)

  def size_of(v) -> float:
    aval = v.aval
    shape = tuple(getattr(aval, 'shape', ()))
    n = _nbytes(shape, getattr(aval, 'dtype', jnp.float32))
    return n / ways if ways > 1 and split and any(s in split for s in shape) else n

  closed = jax.make_jaxpr(fn)(*args)
  inputs = sum(_nbytes(a.shape, a.dtype) for a in jax.tree.leaves(args[1:]))
  return inputs + _jaxpr_peak(closed.jaxpr, size_of)


def _abstract(factory):
  model = nnx.eval_shape(factory)
  graphdef, state = nnx.split(model)
  return model, graphdef, state


def _sds(shape, dtype=jnp.float32):
  return jax.ShapeDtypeStruct(tuple(shape), dtype)


# ----- the stages ----------------------------------------------------------------------------------------

def dreamclear_stage_memory(mesh_shape: tuple[int, int] = (1, 1), *, images: int = 1, image_size: int = 1024,
                            dtype=jnp.bfloat16, dit: dict | None = None, t5: dict | None = None,
                            vae: dict | None = None, swinir: dict | None = None,
                            latent_tile: int = 128) -> list[StageMemory]:
  """Per-stage peak bytes per device for `images` images of image_size^2 on a (data, model) mesh.

  Defaults are the official sizes (DreamClear-1024, t5-v1_1-xxl, sd-vae-ft-ema, DiffBIR's SwinIR);
  `dtype` is the DiT's and T5's (VAE and SwinIR float32, as the pipeline). The dicts override
  configs (e.g. tiny ones in tests).
  """
  data, model_ways = mesh_shape
  per_device_images = max(1, math.ceil(images / data))
  dcfg = dc.DreamClearConfig(**{**dc.OFFICIAL, **(dit or {})}, dtype=dtype, param_dtype=dtype or jnp.float32)
  tcfg = t5_model.T5Config(**(t5 or {}), dtype=dtype, param_dtype=dtype or jnp.float32)
  vcfg = autoencoder_kl.AutoencoderKLConfig(**(vae or SD_VAE))
  scfg = SwinIRConfig(**(swinir or get_preset('swinir-diffbir-general').hyperparameters))
  replicated = sharding.RULES['replicated']

  dit_model, dit_def, dit_state = _abstract(lambda: dc.DreamClear(dcfg, rngs=nnx.Rngs(0)))
  t5m, t5_def, t5_state = _abstract(lambda: t5_model.T5Encoder(tcfg, rngs=nnx.Rngs(0)))
  vm, vae_def, vae_state = _abstract(lambda: autoencoder_kl.AutoencoderKL(vcfg, rngs=nnx.Rngs(0)))
  sm, sw_def, sw_state = _abstract(lambda: SwinIR(scfg, rngs=nnx.Rngs(0)))
  p_dit = param_bytes(dit_model, dc.ARCHITECTURE.sharding_rules, mesh_shape)
  p_t5 = param_bytes(t5m, t5_model.SHARDING_RULES, mesh_shape)
  p_vae = param_bytes(vm, replicated, mesh_shape)
  p_sw = param_bytes(sm, replicated, mesh_shape)

  b, s = per_device_images, image_size
  lat = s // vcfg.downscale
  L, C = dcfg.model_max_length, dcfg.caption_channels
  dit_split = (dcfg.num_heads, 3 * dcfg.hidden_size, 2 * dcfg.hidden_size, int(dcfg.hidden_size * dcfg.mlp_ratio),
               dcfg.hidden_size // 2, 6 * dcfg.hidden_size)
  t5_split = (tcfg.num_heads, tcfg.d_ff)

  def t5_fn(state, ids, mask):
    return nnx.merge(t5_def, state)(ids, mask)

  def swinir_fn(state, x):
    return jnp.clip(nnx.merge(sw_def, state)(x), 0, 1)

  def encode_fn(state, x):
    return nnx.merge(vae_def, state).encode_mean(2 * x - 1) * 0.18215

  def decode_fn(state, z):
    return nnx.merge(vae_def, state).decode_full(z / 0.18215)

  def step_fn(state, x, t, caption, mask, c_lq, c_pre):
    # One guided step for one image (the pipeline vmaps this over the images of a device).
    m = nnx.merge(dit_def, state)
    if lat > latent_tile:
      return m.forward_with_cfg_tile(x, t, caption, 4.5, latent_tile, 32, caption_mask=mask, c_lq=c_lq, c_pre=c_pre)
    return m.forward_with_cfg(x, t, caption, 4.5, caption_mask=mask, c_lq=c_lq, c_pre=c_pre)

  f32 = jnp.float32
  t5_act = activation_bytes(t5_fn, t5_state, _sds((b, L), jnp.int32), _sds((b, L), jnp.int32),
                            split_sizes=t5_split, ways=model_ways)
  sw_act = activation_bytes(swinir_fn, sw_state, _sds((b, s, s, 3)))
  enc_act = activation_bytes(encode_fn, vae_state, _sds((b, s, s, 3)))
  step_act = b * activation_bytes(step_fn, dit_state, _sds((2, lat, lat, 4)), _sds((2,), jnp.int32),
                                  _sds((2, L, C), dtype or f32), _sds((1, L), jnp.int32), _sds((1, lat, lat, 4)),
                                  _sds((1, lat, lat, 4)), split_sizes=dit_split, ways=model_ways)
  dec_act = activation_bytes(decode_fn, vae_state, _sds((b, lat, lat, 4)))
  fix_act = activation_bytes(lambda _, a, r: wavelet_reconstruction(a, r), None, _sds((b, s, s, 3)), _sds((b, s, s, 3)))
  # What the pipeline keeps between stages: the LQ and cleaned images, both latents, captions.
  kept = b * (2 * s * s * 3 * 4 + 2 * lat * lat * 4 * 4 + L * C * 2)
  rows = [
      StageMemory('t5 (captions)', p_t5[0], p_t5[1], t5_act, 'T5'),
      StageMemory('swinir', p_sw[0], 0.0, sw_act, 'SwinIR'),
      StageMemory('vae encode (x2)', p_sw[0] + p_vae[0], 0.0, enc_act + b * s * s * 3 * 4, 'SwinIR, VAE'),
      StageMemory('sampling (per step)', p_sw[0] + p_vae[0] + p_dit[0], p_dit[1], step_act + kept,
                  'SwinIR, VAE, DiT'),
      StageMemory('vae decode', p_sw[0] + p_vae[0] + p_dit[0], 0.0, dec_act + kept, 'SwinIR, VAE, DiT'),
      StageMemory('colour fix', p_sw[0] + p_vae[0] + p_dit[0], 0.0, fix_act + kept, 'SwinIR, VAE, DiT'),
  ]
  return rows


def memory_table(settings: dict[str, list[StageMemory]], measured: dict[str, dict[str, float]] | None = None) -> str:
  """A markdown table: one column per setting (computed GB per device), and optional measured
  columns ({column: {stage: GB}})."""
  names = list(settings)
  measured = measured or {}
  head = '| stage | resident | ' + ' | '.join(f'{n} (computed)' for n in names) + ''.join(
      f' | {m} (measured)' for m in measured) + ' |'
  sep = '|' + '---|' * (2 + len(names) + len(measured))
  lines = [head, sep]
  stages = [r.stage for r in settings[names[0]]]
  for i, stage in enumerate(stages):
    row = settings[names[0]][i]
    cells = [f'{settings[n][i].peak / GB:.2f}' for n in names]
    cells += [f'{measured[m][stage]:.2f}' if stage in measured[m] else '—' for m in measured]
    lines.append(f'| {stage} | {row.resident} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def main() -> None:
  """Prints the README table: 1 device, 8 devices tensor-parallel (one image), 8 devices data-parallel
  (eight images, one per device), at 1024^2 in bfloat16."""
  import time
  start = time.perf_counter()
  settings = {
      '1 device': dreamclear_stage_memory((1, 1)),
      '8 devices, model=8, 1 image': dreamclear_stage_memory((1, 8)),
      '8 devices, data=8, 8 images': dreamclear_stage_memory((8, 1), images=8),
  }
  print(memory_table(settings))
  for name, rows in settings.items():
    print(name, {r.stage: (round(r.params / GB, 3), round(r.gathered / GB, 3), round(r.activations / GB, 3))
                 for r in rows})
  print(f'computed in {time.perf_counter() - start:.0f} s')


if __name__ == '__main__':
  main()
