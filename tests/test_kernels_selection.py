"""How 'auto' picks a kernel: XLA on CPU, Pallas on GPU/TPU only after its self-check passed there."""
import jax
import numpy as np
import pytest
from flax import nnx

from jaxrestore import kernels
from jaxrestore.kernels import channel_attention_reference, window_attention_reference
from jaxrestore.models.swinir import SwinIR, SwinIRConfig


@pytest.fixture
def fresh_checks(monkeypatch):
  monkeypatch.delenv(kernels.KERNEL_ENV, raising=False)
  kernels.kernel_self_check.cache_clear()
  yield
  kernels.kernel_self_check.cache_clear()


def test_auto_is_xla_on_cpu(fresh_checks, monkeypatch):
  monkeypatch.setattr(kernels, '_platform', lambda: 'cpu')
  assert kernels.get_window_attention('auto') is window_attention_reference
  assert kernels.get_channel_attention('auto') is channel_attention_reference
  assert kernels.kernel_self_check.cache_info().currsize == 0   # CPU never runs the check


def test_auto_is_pallas_on_accelerator_after_self_check(fresh_checks, monkeypatch):
  # Pretend to be a GPU; the kernels themselves still lower for this host (interpret mode), so the
  # self-check really runs them, forward and gradients, against the references.
  monkeypatch.setattr(kernels, '_platform', lambda: 'gpu')
  assert kernels.get_window_attention('auto') is kernels.window_attention
  assert kernels.get_channel_attention('auto') is kernels.channel_attention
  assert kernels.kernel_self_check('window-attention', 'gpu')
  assert kernels.kernel_self_check('channel-attention', 'gpu')


def test_broken_kernel_falls_back_to_xla_with_warning(fresh_checks, monkeypatch):
  monkeypatch.setattr(kernels, '_platform', lambda: 'tpu')

  def wrong(q, k, v, bias, mask=None, *, scale=None):
    return window_attention_reference(q, k, v, bias, mask, scale=scale) * 1.01

  def crashes(q, k, v, temperature):
    raise NotImplementedError('unsupported on this device')

  monkeypatch.setitem(kernels.WINDOW_ATTENTION_IMPLEMENTATIONS, 'pallas', wrong)
  monkeypatch.setitem(kernels.CHANNEL_ATTENTION_IMPLEMENTATIONS, 'pallas', crashes)
  with pytest.warns(RuntimeWarning, match=r'window-attention kernel failed its self-check on tpu.*max error'):
    assert kernels.get_window_attention('auto') is window_attention_reference
  with pytest.warns(RuntimeWarning, match=r'channel-attention.*NotImplementedError: unsupported'):
    assert kernels.get_channel_attention('auto') is channel_attention_reference
  # Explicit choices are obeyed regardless.
  assert kernels.get_window_attention('pallas') is wrong


def test_environment_overrides_auto(fresh_checks, monkeypatch):
  monkeypatch.setattr(kernels, '_platform', lambda: 'gpu')
  monkeypatch.setenv(kernels.KERNEL_ENV, 'xla')
  assert kernels.get_window_attention('auto') is window_attention_reference
  assert kernels.kernel_self_check.cache_info().currsize == 0
  monkeypatch.setenv(kernels.KERNEL_ENV, 'pallas')
  monkeypatch.setattr(kernels, '_platform', lambda: 'cpu')
  assert kernels.get_window_attention('auto') is kernels.window_attention
  monkeypatch.setenv(kernels.KERNEL_ENV, 'fast')
  with pytest.raises(ValueError, match=r"'fast'.*JAXRESTORE_KERNELS"):
    kernels.get_window_attention('auto')


def test_self_check_first_reached_inside_jit(fresh_checks, monkeypatch):
  """Models pick their kernel while being traced; the check must still run eagerly there."""
  monkeypatch.setattr(kernels, '_platform', lambda: 'gpu')
  cfg = SwinIRConfig(img_size=16, embed_dim=12, depths=(2,), num_heads=(2,), window_size=8,
                     in_chans=1, upscale=1, upsampler='')
  auto = SwinIR(cfg, rngs=nnx.Rngs(0))
  xla = SwinIR(cfg.replace(attention='xla'), rngs=nnx.Rngs(0))
  x = jax.random.uniform(jax.random.key(1), (1, 16, 16, 1))
  forward = nnx.jit(lambda model, x: model(x))
  y = forward(auto, x)
  assert kernels.kernel_self_check.cache_info().currsize == 1
  assert kernels.kernel_self_check('window-attention', 'gpu')
  np.testing.assert_allclose(y, forward(xla, x), atol=1e-5, rtol=0)
  jaxpr = str(jax.make_jaxpr(lambda x: auto(x))(x))
  assert 'pallas_call' in jaxpr
