"""DualFreq (Dformer + Rformer): shapes at odd sizes, exact frequency decompositions, gradients to every
parameter of both transformers, the prior's effect, ablation variants, detection and conversion."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxrestore
from jaxrestore.convert.build import params_of
from jaxrestore.models import dualfreq

TINY = dict(dim=8, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1, heads=(1, 1, 2, 2), prior_dim=16,
            dformer_depth=1, dformer_heads=2, dformer_grid=2, dwt_levels=2)


def _model(seed=0, **overrides):
  return dualfreq.DualFreq(dualfreq.DualFreqConfig(**{**TINY, **overrides}), rngs=nnx.Rngs(seed))


@nnx.jit
def _apply(model, x, prior=None):
  return model(x, prior)


@pytest.fixture(scope='module')
def model():
  return _model()


def test_odd_sizes_keep_their_shape(model):
  rng = np.random.default_rng(0)
  for shape in ((1, 37, 45, 3), (2, 9, 70, 3)):
    x = rng.random(shape, dtype=np.float32)
    y = _apply(model, x)
    assert y.shape == shape and bool(jnp.all(jnp.isfinite(y)))
  strict = _model(padding='strict')
  with pytest.raises(ValueError, match='multiples of 16'):
    strict(np.zeros((1, 40, 48, 3), np.float32))


def test_haar_decompositions_are_exact():
  x = jnp.asarray(np.random.default_rng(1).standard_normal((2, 16, 24, 5)), jnp.float32)
  np.testing.assert_allclose(dualfreq._haar(dualfreq._haar(x), inverse=True), x, atol=1e-6)
  bands = dualfreq.orientation_bands(x)
  np.testing.assert_allclose(sum(bands), x, atol=1e-6)
  # The approximation band is constant on 2x2 blocks; the diagonal band is the checkerboard part.
  low = np.asarray(bands[0])
  np.testing.assert_allclose(low[:, 0::2, 0::2], low[:, 1::2, 1::2], atol=1e-6)
  subbands = dualfreq.haar_subbands(x, 2)
  assert [s.shape[1:3] for s in subbands] == [(4, 6)] * 4 + [(8, 12)] * 3
  energy = sum(float(jnp.sum(s ** 2)) for s in subbands)  # orthonormal: energy is preserved
  assert abs(energy - float(jnp.sum(x ** 2))) < 1e-3 * energy


def test_adaptive_pool_matches_torch():
  import torch
  x = np.random.default_rng(2).standard_normal((1, 13, 7, 3)).astype(np.float32)
  ours = np.asarray(dualfreq.adaptive_average_pool(jnp.asarray(x), 4))
  ref = torch.nn.functional.adaptive_avg_pool2d(torch.from_numpy(x.transpose(0, 3, 1, 2)), 4).numpy()
  np.testing.assert_allclose(ours, ref.transpose(0, 2, 3, 1), atol=1e-6)


def test_gradients_reach_every_parameter_of_both_transformers(model):
  x = jnp.asarray(np.random.default_rng(3).random((2, 32, 32, 3)), jnp.float32)
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)

  def loss(p):
    return jnp.mean(jnp.abs(nnx.merge(graphdef, p, rest)(x) - 0.5))

  grads = nnx.to_flat_state(jax.jit(jax.grad(loss))(params))
  dead = ['.'.join(map(str, path)) for path, g in grads if not float(jnp.max(jnp.abs(g[...]))) > 0]
  assert not dead, dead
  paths = {path[0] for path, _ in grads}
  assert 'dformer' in paths and 'latent' in paths


def test_the_prior_changes_the_output(model):
  x = jnp.asarray(np.random.default_rng(4).random((1, 32, 32, 3)), jnp.float32)
  p = model.prior(x)
  assert p.shape == (1, 16)
  base = _apply(model, x)
  np.testing.assert_allclose(base, _apply(model, x, p), atol=1e-6)
  assert float(jnp.max(jnp.abs(_apply(model, x, -p) - base))) > 1e-4
  # Different inputs give different priors (the Dformer looks at the input's subbands).
  noisy = x + 0.2 * jnp.asarray(np.random.default_rng(5).standard_normal(x.shape), jnp.float32)
  assert float(jnp.max(jnp.abs(model.prior(noisy) - p))) > 1e-3


def test_ablations_build_and_run():
  x = np.random.default_rng(6).random((1, 20, 28, 3), dtype=np.float32)
  no_prior = _model(use_prior=False)
  assert 'dformer' not in {p[0] for p, _ in nnx.to_flat_state(nnx.state(no_prior, nnx.Param))}
  no_bands = _model(band_attention=False)
  assert not any('gates' in p for p, _ in nnx.to_flat_state(nnx.state(no_bands, nnx.Param)))
  for m in (no_prior, no_bands):
    assert _apply(m, x).shape == x.shape
  counts = dualfreq.parameter_counts(_model())
  assert counts['dformer'] > 0 and counts['total'] == counts['dformer'] + counts['rformer']


def test_state_dict_round_trip_detection_and_conversion(model, tmp_path):
  np.savez(tmp_path / 'dualfreq.npz', **{'.'.join(map(str, k)): v for k, v in params_of(model).items()})
  loaded = jaxrestore.load(weights=tmp_path / 'dualfreq.npz')
  assert loaded.config == model.config
  x = np.random.default_rng(7).random((1, 24, 40, 3), dtype=np.float32)
  expected = np.asarray(_apply(model, x))
  np.testing.assert_array_equal(np.asarray(_apply(loaded, x)), expected)
  dst = jaxrestore.convert.from_torch(tmp_path / 'dualfreq.npz', tmp_path / 'converted')
  np.testing.assert_array_equal(np.asarray(_apply(jaxrestore.load(weights=dst), x)), expected)


def test_presets_build_and_restore(model):
  from jaxrestore.convert.build import abstract_model, expected_params
  from jaxrestore.registry import get_architecture
  arch = get_architecture('dualfreq')
  counts = {}
  for name in ('dualfreq-small', 'dualfreq-base'):
    config = arch.make_config(jaxrestore.get_preset(name).hyperparameters)
    counts[name] = sum(int(np.prod(s)) for s, _ in expected_params(abstract_model(arch, config)).values())
  # Sized against the released all-in-one models (hair-3d 28.6M, restormer 26.1M).
  assert 3.0e6 < counts['dualfreq-small'] < 3.5e6 and 26e6 < counts['dualfreq-base'] < 30e6, counts
  image = np.random.default_rng(8).random((30, 41, 3), dtype=np.float32)
  out = jaxrestore.restore(model, image)
  assert out.shape == image.shape and out.dtype == np.float32
