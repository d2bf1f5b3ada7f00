"""IDDPM sampler and colour correction against DreamClear's official code (golden/dreamclear)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrestore.diffusion import IDDPM, GaussianDiffusion, colorfix, iddpm, lre_start, space_timesteps


@pytest.fixture(scope='module')
def ref(golden):
  return dict(np.load(golden / 'dreamclear' / 'dc_iddpm.npz'))


@pytest.fixture(scope='module')
def colour(golden):
  return dict(np.load(golden / 'dreamclear' / 'dc_colorfix.npz'))


def nhwc(a):
  return np.moveaxis(a, -3, -1)


def _maxabs(a, b) -> float:
  return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def test_schedules_and_timestep_map_are_exact(ref):
  base = GaussianDiffusion(iddpm.get_named_beta_schedule('linear', 1000))
  np.testing.assert_array_equal(base.betas, ref['base1000_betas'])
  np.testing.assert_array_equal(base.alphas_cumprod, ref['base1000_alphas_cumprod'])
  d50 = IDDPM('50')
  np.testing.assert_array_equal(d50.timestep_map, ref['timestep_map'])
  assert d50.timestep_map[[0, 1, 2, -2, -1]].tolist() == [0, 20, 41, 979, 999]
  for key in ref:
    if key.startswith('resp50_'):
      np.testing.assert_array_equal(getattr(d50, key[len('resp50_'):]), ref[key], err_msg=key)
  d1000 = IDDPM('1000')
  for key in ref:
    if key.startswith('resp1000_'):
      np.testing.assert_array_equal(getattr(d1000, key[len('resp1000_'):]), ref[key], err_msg=key)
  assert d1000.timestep_map.tolist() == list(range(1000))


def test_space_timesteps_variants():
  assert space_timesteps(1000, 'ddim50') == set(range(0, 1000, 20))
  # Python's round of the accumulated stride (24.5 -> 24: half to even).
  assert sorted(space_timesteps(100, '10,5')) == [0, 5, 11, 16, 22, 27, 33, 38, 44, 49, 50, 62, 74, 87, 99]
  assert sorted(space_timesteps(1000, [50])) == IDDPM(50).timestep_map.tolist()
  with pytest.raises(ValueError):
    space_timesteps(10, '20')


def test_single_p_sample_steps(ref):
  d50 = IDDPM('50')
  for i, t in enumerate(ref['step_t']):
    out = d50.p_sample(nhwc(ref['step_model_out'][i]), nhwc(ref['step_x_t'][i]), jnp.asarray([t]),
                       nhwc(ref['step_noise'][i]))
    for name in ('sample', 'mean', 'log_variance', 'variance', 'pred_xstart'):
      err = _maxabs(out[name], nhwc(ref[f'step_{name}'][i]))
      assert err <= 1e-5, (int(t), name, err)
  np.testing.assert_array_equal(d50.timestep_map[ref['step_t']], ref['step_model_timestep'])


def test_lre_start(ref):
  z = lre_start(nhwc(ref['lre_x_start']), noise=nhwc(ref['lre_noise']), t=int(ref['lre_t'][0]))
  assert _maxabs(jnp.tile(z, (2, 1, 1, 1)), nhwc(ref['lre_z'])) <= 1e-6


def _toy(ref):
  """The README's toy eps / variance model, called with the ORIGINAL timestep."""
  s = jnp.asarray(np.sqrt(1 - ref['base1000_alphas_cumprod']).astype(np.float32))

  def model(x, ts):
    return jnp.concatenate([s[ts][:, None, None, None] * x + 0.05 * jnp.tanh(x), jnp.tanh(0.5 * x)], axis=-1)
  return model


def test_full_50_step_loop(ref):
  d50 = IDDPM('50')
  np.testing.assert_array_equal(d50.timestep_map[::-1], ref['loop_model_timesteps'])
  final, trajectory = d50.p_sample_loop(_toy(ref), nhwc(ref['loop_z_init']), noise=nhwc(ref['loop_noise']),
                                        trajectory=True)
  assert trajectory.shape == (50, 1, 8, 8, 4)
  assert _maxabs(trajectory, nhwc(ref['loop_trajectory'])) <= 1e-5
  assert _maxabs(final, nhwc(ref['loop_final'])) <= 1e-5


def test_keyed_sampling_with_lre_start_is_one_deterministic_loop(ref):
  d50 = IDDPM('50')
  model = _toy(ref)
  latent = nhwc(ref['lre_x_start'])[:, :8, :8]
  key = jax.random.key(0)
  a = d50.sample(model, key, lre_latent=latent, repeat=2)
  b = d50.sample(model, key, lre_latent=latent, repeat=2)
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert a.shape == (2, 8, 8, 4) and np.isfinite(np.asarray(a)).all()
  init_key, loop_key = jax.random.split(key)
  start = jnp.tile(lre_start(latent, key=init_key), (2, 1, 1, 1))
  np.testing.assert_array_equal(np.asarray(d50.p_sample_loop(model, start, key=loop_key)), np.asarray(a))
  # The loop draws fresh noise per step from the key: equal to feeding those draws explicitly.
  noise = jnp.stack([jax.random.normal(jax.random.fold_in(loop_key, k), start.shape) for k in range(50)])
  np.testing.assert_allclose(np.asarray(d50.p_sample_loop(model, start, noise=noise)), np.asarray(a), atol=1e-6)
  pure = d50.sample(model, jax.random.key(1), shape=(2, 8, 8, 4))
  assert pure.shape == (2, 8, 8, 4) and not np.allclose(np.asarray(pure), np.asarray(a))


@pytest.mark.parametrize('tag', ['sq', 'rect'])
def test_colour_fix_every_stage(colour, tag):
  content, style = (jnp.asarray(nhwc(colour[f'{tag}_{k}'])) for k in ('content', 'style'))
  high, low = colorfix.wavelet_decomposition(content)
  _, style_low = colorfix.wavelet_decomposition(style)
  out = colorfix.wavelet_reconstruction(content, style)
  stages = dict(out=out, out_clamped=jnp.clip(out, 0, 1), content_high=high, content_low=low, style_low=style_low,
                blur_r1=colorfix.wavelet_blur(content, 1), blur_r16=colorfix.wavelet_blur(content, 16),
                adain=colorfix.adaptive_instance_normalization(content, style))
  for name, value in stages.items():
    assert _maxabs(value, nhwc(colour[f'{tag}_{name}'])) <= 1e-6, name


def test_tables_first_built_under_jit_stay_concrete():
  """The coefficient tables are cached on first use; built inside a trace they must not be tracers
  (a later call outside that trace would otherwise fail with a leaked tracer)."""
  import jax
  import numpy as np
  from jaxrestore.diffusion.iddpm import GaussianDiffusion
  diffusion = GaussianDiffusion(np.linspace(1e-4, 2e-2, 10))
  x, noise = np.ones((1, 2, 2, 1), np.float32), np.full((1, 2, 2, 1), 0.5, np.float32)
  inside = jax.jit(lambda t: diffusion.q_sample(x, t, noise))(np.int32(3))
  outside = diffusion.q_sample(x, np.int32(3), noise)
  assert all(isinstance(v, jax.Array) and not isinstance(v, jax.core.Tracer) for v in diffusion.tables().values())
  np.testing.assert_allclose(inside, outside, rtol=1e-6)
