"""IDDPM sampling (Nichol & Dhariwal 2021) as DreamClear's `diffusion/` builds it, for any model that
predicts eps and learned-range variance values.

Schedules and respacing follow `gaussian_diffusion.py` / `respace.py` exactly: float64 numpy tables,
`space_timesteps` with Python's `round` of an accumulated float stride, respaced betas
1 - abar[map_k] / abar[map_{k-1}] with every table re-derived from them, and the model called with
the ORIGINAL timestep `timestep_map[t]`. Each table entry is rounded to float32 before it multiplies
float32 arrays (the original's `_extract_into_tensor(...).float()`), so the step math is float32 as
there. `clip_denoised` is off (DreamClear's test.py).

Arrays are channels-last: a model output (B, ..., 2C) splits into eps (..., :C) and the variance
values (..., C:) along `axis` (-1 by default).
"""
from __future__ import annotations

import functools
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

ModelFn = Callable[..., jax.Array]   # model_fn(x, original_timesteps (B,) int32, *model_args) -> (..., 2C)


def get_named_beta_schedule(name: str, num_diffusion_timesteps: int) -> np.ndarray:
  """'linear' (Ho et al., scaled to the step count) or 'squaredcos_cap_v2' (Nichol & Dhariwal)."""
  if name == 'linear':
    scale = 1000 / num_diffusion_timesteps
    return np.linspace(scale * 0.0001, scale * 0.02, num_diffusion_timesteps, dtype=np.float64)
  if name == 'squaredcos_cap_v2':
    alpha_bar = lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
    return np.array([min(1 - alpha_bar((i + 1) / num_diffusion_timesteps) / alpha_bar(i / num_diffusion_timesteps),
                         0.999) for i in range(num_diffusion_timesteps)], dtype=np.float64)
  raise ValueError(f'unknown beta schedule {name!r}')


def space_timesteps(num_timesteps: int, section_counts) -> set[int]:
  """The original timesteps kept when respacing, e.g. (1000, '50') or (1000, 'ddim25')."""
  if isinstance(section_counts, str):
    if section_counts.startswith('ddim'):
      desired = int(section_counts[len('ddim'):])
      for stride in range(1, num_timesteps):
        if len(range(0, num_timesteps, stride)) == desired:
          return set(range(0, num_timesteps, stride))
      raise ValueError(f'cannot create exactly {desired} steps with an integer stride')
    section_counts = [int(x) for x in section_counts.split(',')]
  size_per, extra = divmod(num_timesteps, len(section_counts))
  start, steps = 0, []
  for i, count in enumerate(section_counts):
    size = size_per + (1 if i < extra else 0)
    if size < count:
      raise ValueError(f'cannot divide section of {size} steps into {count}')
    stride = 1 if count <= 1 else (size - 1) / (count - 1)
    cur = 0.0
    for _ in range(count):
      steps.append(start + round(cur))
      cur += stride
    start += size
  return set(steps)


class GaussianDiffusion:
  """The float64 tables of a (respaced) diffusion, under the original's attribute names, and the
  sampling steps that use them. `timestep_map[t]` is the original timestep of respaced step t."""

  def __init__(self, betas, timestep_map=None):
    betas = np.array(betas, dtype=np.float64)
    if betas.ndim != 1 or not ((betas > 0).all() and (betas <= 1).all()):
      raise ValueError('betas must be a 1-d array in (0, 1]')
    self.betas = betas
    self.num_timesteps = int(betas.shape[0])
    self.timestep_map = np.arange(self.num_timesteps) if timestep_map is None else np.asarray(timestep_map, np.int64)
    alphas = 1.0 - betas
    self.alphas_cumprod = np.cumprod(alphas, axis=0)
    self.alphas_cumprod_prev = np.append(1.0, self.alphas_cumprod[:-1])
    self.alphas_cumprod_next = np.append(self.alphas_cumprod[1:], 0.0)
    self.sqrt_alphas_cumprod = np.sqrt(self.alphas_cumprod)
    self.sqrt_one_minus_alphas_cumprod = np.sqrt(1.0 - self.alphas_cumprod)
    self.log_one_minus_alphas_cumprod = np.log(1.0 - self.alphas_cumprod)
    self.sqrt_recip_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod)
    self.sqrt_recipm1_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod - 1)
    self.posterior_variance = betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
    # Clipped: the posterior variance is 0 at t = 0, so index 0 reuses index 1.
    self.posterior_log_variance_clipped = (
        np.log(np.append(self.posterior_variance[1], self.posterior_variance[1:]))
        if self.num_timesteps > 1 else np.array([]))
    self.posterior_mean_coef1 = betas * np.sqrt(self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
    self.posterior_mean_coef2 = (1.0 - self.alphas_cumprod_prev) * np.sqrt(alphas) / (1.0 - self.alphas_cumprod)
    self._tables = None

  def tables(self) -> dict[str, jax.Array]:
    """The per-step float32 coefficients (each float64 entry rounded once, as `.float()`)."""
    if self._tables is None:
      with jax.ensure_compile_time_eval():  # concrete arrays even when first called under a trace
        self._tables = self._make_tables()
    return self._tables

  def _make_tables(self) -> dict[str, jax.Array]:
    f32 = lambda a: jnp.asarray(np.asarray(a, np.float64).astype(np.float32))
    return dict(
        sqrt_alphas_cumprod=f32(self.sqrt_alphas_cumprod),
        sqrt_one_minus_alphas_cumprod=f32(self.sqrt_one_minus_alphas_cumprod),
        sqrt_recip_alphas_cumprod=f32(self.sqrt_recip_alphas_cumprod),
        sqrt_recipm1_alphas_cumprod=f32(self.sqrt_recipm1_alphas_cumprod),
        posterior_mean_coef1=f32(self.posterior_mean_coef1),
        posterior_mean_coef2=f32(self.posterior_mean_coef2),
        min_log=f32(self.posterior_log_variance_clipped),
        max_log=f32(np.log(self.betas)),
        timestep_map=jnp.asarray(self.timestep_map, jnp.int32))

  # ----- single steps ----------------------------------------------------------------------------------

  def q_sample(self, x_start, t, noise):
    """sqrt(abar_t) x_0 + sqrt(1 - abar_t) noise; t (B,) or a scalar."""
    return _q_sample(self.tables(), jnp.asarray(x_start, jnp.float32), jnp.asarray(t), jnp.asarray(noise, jnp.float32))

  def p_mean_variance(self, model_output, x, t, *, axis: int = -1) -> dict[str, jax.Array]:
    """mean, variance, log_variance and pred_xstart of p(x_{t-1} | x_t) from an eps / learned-range
    model output; t are respaced indices."""
    return _p_mean_variance(self.tables(), model_output, jnp.asarray(x, jnp.float32), jnp.asarray(t), axis)

  def p_sample(self, model_output, x, t, noise, *, axis: int = -1) -> dict[str, jax.Array]:
    """One ancestral step: {'sample', 'mean', 'variance', 'log_variance', 'pred_xstart'}."""
    return _p_sample(self.tables(), model_output, jnp.asarray(x, jnp.float32), jnp.asarray(t),
                     jnp.asarray(noise, jnp.float32), axis)

  # ----- whole loops -----------------------------------------------------------------------------------

  def p_sample_loop(self, model_fn: ModelFn, x, *, key: jax.Array | None = None, noise=None,
                    model_args: Any = (), axis: int = -1, trajectory: bool = False):
    """Runs t = T-1 .. 0 in one jitted `lax.scan`: x <- p_sample(model_fn(x, timestep_map[t], *model_args)).

    The noise of step k (k = 0 at t = T-1; drawn at t = 0 too, where it is multiplied by 0) is
    `jax.random.normal(fold_in(key, k), x.shape)`, or `noise[k]` when `noise` (T, *x.shape) is given.
    `model_fn` is a static argument (a new function object compiles anew); pass arrays, e.g. an NNX
    model's state, through `model_args`. Returns the final sample, and with `trajectory` the (T, ...)
    samples after every step.
    """
    if (key is None) == (noise is None):
      raise ValueError('p_sample_loop needs exactly one of key= and noise=')
    x = jnp.asarray(x, jnp.float32)
    if noise is not None:
      noise = jnp.asarray(noise, jnp.float32)
      if noise.shape != (self.num_timesteps,) + x.shape:
        raise ValueError(f'noise must be {(self.num_timesteps,) + x.shape}, got {noise.shape}')
    return _loop(model_fn, self.tables(), x, key, noise, model_args, axis, trajectory)

  def sample(self, model_fn: ModelFn, key: jax.Array, *, shape=None, lre_latent=None, lre_t: int = 999,
             lre_diffusion: 'GaussianDiffusion | None' = None, repeat: int = 1, model_args: Any = (),
             axis: int = -1, trajectory: bool = False):
    """Draws the start latent from `key` and runs `p_sample_loop`.

    The start is pure noise of `shape`, or with `lre_latent` DreamClear's LRE start:
    q_sample(lre_latent, t=lre_t, noise) on the un-respaced 1000-step schedule. It is then repeated
    `repeat` times along the batch (test.py: 2, the conditional / unconditional pair).
    """
    init_key, loop_key = jax.random.split(key)
    if lre_latent is not None:
      x = lre_start(lre_latent, key=init_key, t=lre_t, diffusion=lre_diffusion)
    elif shape is not None:
      x = jax.random.normal(init_key, tuple(shape), jnp.float32)
    else:
      raise ValueError('sample needs shape= or lre_latent=')
    if repeat > 1:
      x = jnp.tile(x, (repeat,) + (1,) * (x.ndim - 1))
    return self.p_sample_loop(model_fn, x, key=loop_key, model_args=model_args, axis=axis, trajectory=trajectory)


def IDDPM(timestep_respacing: str | int | None = '', noise_schedule: str = 'linear',  # noqa: N802
          diffusion_steps: int = 1000) -> GaussianDiffusion:
  """`diffusion.IDDPM(timestep_respacing)`: e.g. IDDPM('50') for test.py's sampler, IDDPM('1000')
  (equivalently '') for its LRE start. Learned-range variance and eps prediction."""
  if timestep_respacing is None or timestep_respacing == '':
    timestep_respacing = [diffusion_steps]
  if isinstance(timestep_respacing, int):
    timestep_respacing = str(timestep_respacing)
  base = GaussianDiffusion(get_named_beta_schedule(noise_schedule, diffusion_steps))
  use = space_timesteps(diffusion_steps, timestep_respacing)
  last, betas, timestep_map = 1.0, [], []
  for i, alpha_cumprod in enumerate(base.alphas_cumprod):
    if i in use:
      betas.append(1 - alpha_cumprod / last)
      last = alpha_cumprod
      timestep_map.append(i)
  return GaussianDiffusion(np.array(betas), timestep_map)


def lre_start(x_start, *, key: jax.Array | None = None, noise=None, t: int = 999,
              diffusion: GaussianDiffusion | None = None) -> jax.Array:
  """DreamClear's LRE start: q_sample(x_start, t) on IDDPM('1000') with noise from `key` (or given)."""
  diffusion = diffusion or _iddpm_1000()
  x_start = jnp.asarray(x_start, jnp.float32)
  if noise is None:
    if key is None:
      raise ValueError('lre_start needs key= or noise=')
    noise = jax.random.normal(key, x_start.shape, jnp.float32)
  return diffusion.q_sample(x_start, jnp.full((x_start.shape[0],), t, jnp.int32), noise)


@functools.lru_cache(maxsize=1)
def _iddpm_1000() -> GaussianDiffusion:
  return IDDPM('1000')


# ----- the math, in float32 --------------------------------------------------------------------------------

def _extract(table, t, ndim):
  """table[t] for t of shape (B,) (or a scalar) as (B, 1, ..., 1)."""
  v = table[jnp.asarray(t, jnp.int32)]
  return v.reshape(v.shape + (1,) * (ndim - v.ndim))


def _q_sample(tables, x_start, t, noise):
  t = jnp.broadcast_to(t, (x_start.shape[0],)) if jnp.ndim(t) == 0 else t
  return (_extract(tables['sqrt_alphas_cumprod'], t, x_start.ndim) * x_start
          + _extract(tables['sqrt_one_minus_alphas_cumprod'], t, x_start.ndim) * noise)


def _p_mean_variance(tables, model_output, x, t, axis):
  t = jnp.broadcast_to(t, (x.shape[0],)) if jnp.ndim(t) == 0 else t
  model_output = jnp.asarray(model_output).astype(jnp.float32)
  c = x.shape[axis]
  if model_output.shape[axis] != 2 * c:
    raise ValueError(f'model output must have 2 x {c} channels on axis {axis} (eps, variance values), '
                     f'got shape {model_output.shape}')
  eps, var_values = jnp.split(model_output, 2, axis=axis)
  ex = lambda name: _extract(tables[name], t, x.ndim)
  min_log, max_log = ex('min_log'), ex('max_log')
  frac = (var_values + 1) / 2   # [-1, 1] -> [posterior variance, beta]
  log_variance = frac * max_log + (1 - frac) * min_log
  pred_xstart = ex('sqrt_recip_alphas_cumprod') * x - ex('sqrt_recipm1_alphas_cumprod') * eps
  mean = ex('posterior_mean_coef1') * pred_xstart + ex('posterior_mean_coef2') * x
  return dict(mean=mean, variance=jnp.exp(log_variance), log_variance=log_variance, pred_xstart=pred_xstart)


def _p_sample(tables, model_output, x, t, noise, axis):
  out = _p_mean_variance(tables, model_output, x, t, axis)
  t = jnp.broadcast_to(t, (x.shape[0],)) if jnp.ndim(t) == 0 else t
  nonzero = (t != 0).astype(jnp.float32).reshape((-1,) + (1,) * (x.ndim - 1))
  out['sample'] = out['mean'] + nonzero * jnp.exp(0.5 * out['log_variance']) * noise
  return out


@functools.partial(jax.jit, static_argnames=('model_fn', 'axis', 'trajectory'))
def _loop(model_fn, tables, x, key, noise, model_args, axis, trajectory):
  steps = tables['timestep_map'].shape[0]
  batch = x.shape[0]

  def body(x, inputs):
    k, step_noise = inputs
    t = steps - 1 - k
    if step_noise is None:
      step_noise = jax.random.normal(jax.random.fold_in(key, k), x.shape, jnp.float32)
    t_batch = jnp.full((batch,), t, jnp.int32)
    model_output = model_fn(x, tables['timestep_map'][t_batch], *model_args)
    x = _p_sample(tables, model_output, x, t_batch, step_noise, axis)['sample']
    return x, (x if trajectory else None)

  final, samples = jax.lax.scan(body, x, (jnp.arange(steps), noise))
  return (final, samples) if trajectory else final
