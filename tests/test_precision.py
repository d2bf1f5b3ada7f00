"""Low-precision products accumulate in float32 and round once (`layers.dot_general`,
`layers.conv_general_dilated`); float32 products are untouched."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxrestore import layers

DIMS = (((2,), (0,)), ((), ()))


def _operands(dtype):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((2, 7, 45)), dtype)
  w = jnp.asarray(rng.standard_normal((45, 13)), dtype)
  return x, w


def test_float32_products_are_lax_products_bit_for_bit():
  x, w = _operands(jnp.float32)
  np.testing.assert_array_equal(layers.dot_general(x, w, DIMS), jax.lax.dot_general(x, w, DIMS))
  image = jnp.asarray(np.random.default_rng(1).standard_normal((1, 9, 11, 5)), jnp.float32)
  kernel = jnp.asarray(np.random.default_rng(2).standard_normal((3, 3, 5, 4)), jnp.float32)
  args = ((1, 1), ((1, 1), (1, 1)))
  kw = dict(dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  np.testing.assert_array_equal(layers.conv_general_dilated(image, kernel, *args, **kw),
                                jax.lax.conv_general_dilated(image, kernel, *args, **kw))


@pytest.mark.parametrize('dtype', [jnp.bfloat16, jnp.float16])
def test_low_precision_products_are_the_float32_product_rounded_once(dtype):
  x, w = _operands(dtype)
  out = layers.dot_general(x, w, DIMS)
  exact = jax.lax.dot_general(x.astype(jnp.float32), w.astype(jnp.float32), DIMS)
  assert out.dtype == dtype
  np.testing.assert_array_equal(out, exact.astype(dtype))
  hlo = jax.jit(lambda a, b: layers.dot_general(a, b, DIMS)).lower(x, w).as_text()
  assert 'preferred_element_type = f32' in hlo or '-> tensor<2x7x13xf32>' in hlo, hlo


def test_an_explicit_preferred_element_type_is_kept():
  x, w = _operands(jnp.bfloat16)
  out = layers.dot_general(x, w, DIMS, preferred_element_type=jnp.float32)
  assert out.dtype == jnp.float32


def test_library_layers_in_bfloat16_accumulate_in_float32():
  rngs = nnx.Rngs(0)
  linear = layers.linear(45, 13, rngs=rngs)
  conv = layers.conv2d(5, 4, 3, rngs=rngs)
  for module, x in ((linear, _operands(jnp.float32)[0]),
                    (conv, jnp.asarray(np.random.default_rng(3).standard_normal((1, 9, 11, 5)), jnp.float32))):
    graphdef, state = nnx.split(module)
    low = jax.tree.map(lambda a: a.astype(jnp.bfloat16), state)
    out = nnx.merge(graphdef, low)(x.astype(jnp.bfloat16))
    wide = nnx.merge(graphdef, jax.tree.map(lambda a: a.astype(jnp.float32), low))(x.astype(jnp.bfloat16).astype(jnp.float32))
    assert out.dtype == jnp.bfloat16
    # The product is rounded once to bf16 before the bias add, as nnx adds biases in the compute dtype.
    np.testing.assert_allclose(np.asarray(out, np.float32), np.asarray(wide), rtol=2 ** -7, atol=2 ** -7)


def test_depthwise_convolution_sums_low_precision_taps_in_float32():
  rng = np.random.default_rng(4)
  x = jnp.asarray(rng.standard_normal((1, 9, 11, 6)), jnp.bfloat16)
  kernel = jnp.asarray(rng.standard_normal((3, 3, 6)), jnp.bfloat16)
  out = layers.depthwise_conv2d(x, kernel)
  exact = layers.depthwise_conv2d(x.astype(jnp.float32), kernel.astype(jnp.float32))
  assert out.dtype == jnp.bfloat16
  np.testing.assert_array_equal(out, exact.astype(jnp.bfloat16))


def test_exact_gelu_evaluates_low_precision_in_float32():
  x = jnp.asarray(np.random.default_rng(5).standard_normal((4, 33)) * 3, jnp.float32)
  np.testing.assert_array_equal(layers.exact_gelu(x), jax.nn.gelu(x, approximate=False))
  low = x.astype(jnp.bfloat16)
  out = layers.exact_gelu(low)
  assert out.dtype == jnp.bfloat16
  np.testing.assert_array_equal(out, jax.nn.gelu(low.astype(jnp.float32), approximate=False).astype(jnp.bfloat16))
