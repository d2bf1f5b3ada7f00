"""The hand-written backward passes of `jaxrestore.layers` against autodiff of independent forms
(lax grouped convolution, einsum), in float64."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrestore import layers


@pytest.fixture(autouse=True)
def float64():
  with jax.enable_x64(True):
    yield


def grouped_conv(x, kernel):
  """Depth-wise 'same' convolution by lax (PyTorch's padding: k // 2 before, the rest after)."""
  kh, kw = kernel.shape[-3:-1]
  pad = ((kh // 2, kh - 1 - kh // 2), (kw // 2, kw - 1 - kw // 2))

  def one(xi, ki):
    return jax.lax.conv_general_dilated(xi, ki[:, :, None, :], (1, 1), pad, dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
                                        feature_group_count=xi.shape[-1])

  if kernel.ndim == 4:
    return jax.vmap(lambda xi, ki: one(xi[None], ki)[0])(x, kernel)
  return one(x, kernel)


@pytest.mark.parametrize('shape,kernel_size,per_sample', [
    ((2, 9, 11, 5), 3, False), ((3, 7, 6, 4), 3, True), ((1, 8, 8, 3), 4, False), ((2, 10, 13, 6), 5, True),
    ((2, 67, 33, 40), 3, False)])
def test_depthwise_conv2d_value_and_gradients(shape, kernel_size, per_sample):
  rng = np.random.default_rng(sum(shape) + kernel_size)
  x = jnp.asarray(rng.standard_normal(shape))
  kernel = jnp.asarray(rng.standard_normal(((shape[0],) if per_sample else ()) + (kernel_size, kernel_size, shape[-1])))
  cotangent = jnp.asarray(rng.standard_normal(shape))
  y, vjp = jax.vjp(layers.depthwise_conv2d, x, kernel)
  y_ref, vjp_ref = jax.vjp(grouped_conv, x, kernel)
  np.testing.assert_allclose(y, y_ref, rtol=0, atol=1e-12)
  for got, want in zip(vjp(cotangent), vjp_ref(cotangent)):
    assert got.shape == want.shape and got.dtype == want.dtype
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-11)


@pytest.mark.parametrize('in_features,out_features', [(7, 19), (19, 7)])  # both transposition branches
def test_channel_matmul_value_and_gradients(in_features, out_features):
  rng = np.random.default_rng(in_features)
  x = jnp.asarray(rng.standard_normal((2, 5, 3, in_features)))
  kernel = jnp.asarray(rng.standard_normal((in_features, out_features)))
  cotangent = jnp.asarray(rng.standard_normal((2, 5, 3, out_features)))
  y, vjp = jax.vjp(layers.channel_matmul, x, kernel)
  y_ref, vjp_ref = jax.vjp(lambda a, b: jnp.einsum('bhwi,io->bhwo', a, b), x, kernel)
  np.testing.assert_allclose(y, y_ref, rtol=1e-13, atol=1e-13)
  for got, want in zip(vjp(cotangent), vjp_ref(cotangent)):
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_depthwise_gradient_float32_and_jit():
  """float32 under jit (the training path) agrees with the float64 reference to float32 rounding."""
  rng = np.random.default_rng(1)
  x = rng.standard_normal((2, 16, 12, 8))
  kernel = rng.standard_normal((3, 3, 8))
  loss = lambda f: (lambda a, b: jnp.sum(jnp.sin(f(a, b))))
  got = jax.jit(jax.grad(loss(layers.depthwise_conv2d), (0, 1)))(jnp.float32(x), jnp.float32(kernel))
  want = jax.grad(loss(grouped_conv), (0, 1))(jnp.asarray(x), jnp.asarray(kernel))
  for g, w in zip(got, want):
    assert g.dtype == jnp.float32
    np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)
