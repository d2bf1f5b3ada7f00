"""`layers.uniform` and the PyTorch-default initialisers: the same values as `jax.random` bit for bit,
from a handful of compiled programs."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxrestore import layers

SHAPES = [(), (1,), (7,), (3, 5), (4097,), (65, 33), (3, 3, 17, 19), (0, 4)]


def bits(x) -> np.ndarray:
  x = np.asarray(x)
  return x.view(np.uint16 if x.dtype.itemsize == 2 else np.uint32)


@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize('shape', SHAPES)
def test_uniform_matches_jax_random_bit_for_bit(shape, dtype):
  key = jax.random.key(11)
  for minval, maxval in [(0.0, 1.0), (-0.3, 0.3), (-1.0, 2.5)]:
    got = layers.uniform(key, shape, dtype, minval, maxval)
    want = jax.random.uniform(key, shape, dtype, minval, maxval)
    assert got.shape == want.shape and got.dtype == want.dtype
    np.testing.assert_array_equal(bits(got), bits(want))
  scale = np.asarray(0.37, dtype)
  np.testing.assert_array_equal(bits(layers.uniform(key, shape, dtype, -1.0, 1.0, scale=scale)),
                                bits(jax.random.uniform(key, shape, dtype, -1.0, 1.0) * scale))


@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize('shape', [(3, 3, 3, 180), (3, 3, 60, 60), (180, 540), (1, 1, 48, 96), (7, 5)])
def test_torch_kernel_init_matches_flax_variance_scaling(shape, dtype):
  key = jax.random.key(5)
  want = nnx.initializers.variance_scaling(1.0 / 3.0, 'fan_in', 'uniform')(key, shape, dtype)
  got = layers.torch_kernel_init(key, shape, dtype)
  np.testing.assert_array_equal(bits(got), bits(want))
  bound = 1 / np.sqrt(np.prod(shape[:-1]))
  assert float(jnp.max(jnp.abs(got.astype(jnp.float32)))) <= bound * 1.01


def test_torch_kernel_init_rejects_a_shape_without_input_axis():
  with pytest.raises(ValueError, match=r'kernel shape \(5,\)'):
    layers.torch_kernel_init(jax.random.key(0), (5,))


def test_traced_draws_equal_eager_draws():
  """Under jit / eval_shape (the trainer's sharded init) the direct jax.random path runs."""
  key = jax.random.key(2)
  eager = layers.torch_kernel_init(key, (3, 3, 8, 16))
  traced = jax.jit(lambda k: layers.torch_kernel_init(k, (3, 3, 8, 16)))(key)
  np.testing.assert_array_equal(bits(traced), bits(eager))
  abstract = nnx.eval_shape(lambda: layers.conv2d(8, 16, 3, rngs=nnx.Rngs(0)))
  assert abstract.kernel.shape == (3, 3, 8, 16)


def test_draws_of_many_shapes_share_a_few_programs():
  """One program per power-of-two size (and dtype), not one per parameter shape."""
  key = jax.random.key(0)
  layers.uniform(key, (1,))                      # the smallest draw size is compiled
  before = layers._scaled_uniform_draw._cache_size()
  for shape in [(3,), (5, 7), (9, 9, 2), (60,), (4096,), (2, 3, 4, 5)]:   # all ≤ 4096 elements
    layers.uniform(key, shape, jnp.float32, -0.5, 0.5)
  assert layers._scaled_uniform_draw._cache_size() == before
