"""Recipes, overrides, optimizers, schedules, losses, the CLI, and a trained model used through
`jaxrestore.load` / `restore` / `eval` (in-process, tiny)."""
from __future__ import annotations

import argparse
import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxrestore
from jaxrestore.configs import train as recipes
from jaxrestore.train import losses, optim, trainer
from jaxrestore.train.cli import add_train_parser, main as train_main


@pytest.mark.parametrize('spec', ['dncnn_gray', 'dncnn_gray:task=car,quality=20,cpu', 'swinir_gray_dn:cpu',
                                  'swinir_color_dn:cpu', 'swinir_car:quality=10,cpu', 'hair_3deg:cpu'])
def test_recipes_build(spec):
  config = recipes.get_config(spec)
  assert config.recipe == spec
  setup = trainer.build(config)  # model, optimizer, abstract sharded state: no weights allocated
  params = setup.abstract_state['params']
  assert jax.tree.leaves(params) and all(x.dtype == jnp.float32 for x in jax.tree.leaves(params))
  assert ('ema' in setup.abstract_state) == bool(config.ema_decay)


@pytest.mark.parametrize('spec', ['swinir_gray_dn', 'swinir_gray_dn:sigma=25,size=m', 'swinir_color_dn:sigma=50',
                                  'swinir_car', 'hair_3deg'])
def test_full_size_recipes_resolve(spec):
  # Tracing SwinIR-M / HAIR takes tens of seconds on CPU; the model config is what can go wrong.
  config = recipes.get_config(spec)
  arch, model_config = trainer.resolve_model(config.model)
  assert arch.name == (config.model.get('architecture') or jaxrestore.get_preset(config.model.preset).architecture)
  assert trainer.optim.make_schedule(config.schedule, config.total_steps, config.optimizer.lr)(0) >= 0


def test_published_hyperparameters():
  c = recipes.get_config('swinir_gray_dn')
  assert c.optimizer.name == 'adam' and c.optimizer.lr == 2e-4 and c.data.patch_size == 128
  assert c.schedule.milestones == [250_000, 400_000, 450_000, 475_000] and c.total_steps == 500_000
  assert c.data.batch_size is None and c.data.batch_size_per_device == 8
  assert c.model.hyperparameters.embed_dim == 60  # SwinIR-S
  h = recipes.get_config('hair_3deg')
  assert h.model.architecture == 'hair' and h.optimizer.name == 'adamw' and h.loss == {'l1': 1.0}
  assert h.schedule.kind == 'cosine' and h.schedule.warmup_steps > 0
  car = recipes.get_config('swinir_car:quality=30')
  assert car.model.preset == 'swinir-gray-car30' and car.data.degradation.quality == 30


def test_unavailable_architecture_fails_clearly():
  config = recipes.apply_overrides(recipes.get_config('hair_3deg'), ['model.architecture="hair_v2"'])
  with pytest.raises(ValueError, match=r"architecture 'hair_v2' is not available.*not ported yet"):
    trainer.build(config)


def test_overrides_and_args():
  c = recipes.get_config('dncnn_gray:sigma=25,cpu')
  assert c.data.degradation.sigma == 25.0 and c.data.batch_size == 16
  c2 = recipes.apply_overrides(c, ['optimizer.lr=3e-4', 'model.hyperparameters.depth=5', 'loss.fft=0.1',
                                   'data.degradation={"kind": "jpeg", "quality": [10, 30]}', 'recipe=x'])
  assert c2.optimizer.lr == 3e-4 and c2.model.hyperparameters.depth == 5 and c2.loss == {'l1': 1.0, 'fft': 0.1}
  assert c2.data.degradation.quality == [10, 30] and c2.recipe == 'x'
  assert c.optimizer.lr == 1e-3  # the original is untouched
  with pytest.raises(ValueError, match='key=value'):
    recipes.apply_overrides(c, ['optimizer.lr'])
  with pytest.raises(ValueError, match='unknown training recipe'):
    recipes.get_config('dncnn_grey')
  assert recipes.parse_arg('a=3,flag,name=x', a=1, flag=False) == {'a': 3, 'flag': True, 'name': 'x'}


def test_schedules_and_optimizers():
  multistep = optim.make_schedule(dict(kind='multistep', milestones=[10, 20], gamma=0.5), 30, 2e-4)
  assert [float(multistep(s)) for s in (0, 9, 10, 19, 20, 29)] == pytest.approx([2e-4, 2e-4, 1e-4, 1e-4, 5e-5, 5e-5])
  cosine = optim.make_schedule(dict(kind='cosine', warmup_steps=10, warmup_init=0.0, end_value=1e-6), 110, 1e-3)
  assert float(cosine(0)) == 0.0 and float(cosine(5)) == pytest.approx(5e-4)
  assert float(cosine(10)) == pytest.approx(1e-3) and float(cosine(110)) == pytest.approx(1e-6)
  assert float(cosine(60)) == pytest.approx((1e-3 + 1e-6) / 2, rel=1e-3)
  params = {'w': jnp.ones(3)}
  grads = {'w': jnp.array([30.0, 40.0, 0.0])}
  clipped = optim.make_optimizer(dict(name='adam', clip_norm=1.0), optax.constant_schedule(1.0))
  # Clipping scales the gradient to norm 1 before Adam: direction kept, first update = -sign.
  update, _ = clipped.update(grads, clipped.init(params), params)
  np.testing.assert_allclose(update['w'], [-1, -1, 0], atol=1e-4)
  adamw = optim.make_optimizer(dict(name='adamw', weight_decay=0.1), optax.constant_schedule(0.1))
  update, _ = adamw.update({'w': jnp.zeros(3)}, adamw.init(params), params)
  np.testing.assert_allclose(update['w'], -0.1 * 0.1 * np.ones(3), rtol=1e-6)  # decoupled decay only
  with pytest.raises(ValueError, match='unknown optimizer'):
    optim.make_optimizer(dict(name='sgd'), optax.constant_schedule(1.0))


def test_losses():
  x = jnp.zeros((2, 8, 8, 1))
  y = jnp.full((2, 8, 8, 1), 0.5)
  assert float(losses.l1(x, y)) == pytest.approx(0.5)
  assert float(losses.charbonnier(x, y, eps=1e-3)) == pytest.approx(np.sqrt(0.25 + 1e-6))
  assert float(losses.fft(y, y)) == 0.0
  # The FFT term sees what L1 cannot: same L1, different spectra.
  rng = np.random.default_rng(0)
  a = rng.random((1, 16, 16, 1)).astype(np.float32)
  smooth = np.full_like(a, a.mean())
  assert float(losses.fft(a, smooth)) > 0.05
  total, parts = losses.make_loss({'l1': 1.0, 'fft': {'weight': 0.5}})(jnp.asarray(a), jnp.asarray(smooth))
  assert float(total) == pytest.approx(float(parts['l1'] + 0.5 * parts['fft']))
  with pytest.raises(ValueError, match='unknown loss'):
    losses.make_loss({'ssim': 1.0})


def test_cli_registration_and_print_config(capsys):
  parser = argparse.ArgumentParser(prog='jaxrestore')
  sub = parser.add_subparsers(dest='command')
  add_train_parser(sub)
  args = parser.parse_args(['train', 'dncnn_gray:cpu', '--set', 'total_steps=5', '--set', 'seed=1',
                            '--workdir', 'w', '--no-resume'])
  assert args.command == 'train' and args.overrides == ['total_steps=5', 'seed=1'] and args.resume is False
  assert callable(args.func)
  assert train_main(['dncnn_gray:cpu', '--set', 'total_steps=5', '--print-config']) == 0
  printed = json.loads(capsys.readouterr().out)
  assert printed['total_steps'] == 5 and printed['data']['batch_size'] == 16
  assert train_main(['no_such_recipe', '--print-config']) == 2


def test_trained_checkpoint_loads_restores_and_evaluates(data_dir, tmp_path):
  import jaxrestore
  from jaxrestore.eval.protocol import Protocol, evaluate, list_images
  images = tmp_path / 'images'
  images.mkdir()
  for p in sorted((data_dir / 'trainsets' / 'BSD400').glob('*.png'))[:4]:
    shutil.copy(p, images / p.name)
  config = recipes.apply_overrides(recipes.get_config('dncnn_gray:tiny'), [
      f'data.train.folder="{images}"', f'data.tfds_dir="{tmp_path / "tfds"}"', 'total_steps=4',
      'eval.every=2', 'eval.dataset="Set12"', 'eval.task="gray_dn"', 'eval.noise_level=15', 'eval.max_images=1',
      'loss.fft=0.05', 'grad_accum_steps=2'])
  result = trainer.train(config, tmp_path / 'run', progress=False)
  rows = trainer.read_metrics(tmp_path / 'run')
  val = [r for r in rows if 'val/psnr' in r]
  assert [r['step'] for r in val] == [2, 4]
  assert [r['step'] for r in rows if 'loss' in r] == [1, 2, 3, 4]
  assert all('loss/fft' in r for r in rows if 'loss' in r)
  model = jaxrestore.load(weights=result['export'])
  meta = json.loads((tmp_path / 'run' / 'export' / 'jaxrestore.json').read_text())
  assert meta['architecture'] == 'dncnn' and meta['step'] == 4 and meta['weights'] == 'ema'
  out = jaxrestore.restore(model, np.random.default_rng(0).random((30, 20)).astype(np.float32))
  assert out.shape == (30, 20, 1) and np.isfinite(out).all()
  # The exported EMA weights score exactly what the last validation measured.
  protocol = Protocol(task='gray_dn', noise_level=15)
  apply = jax.jit(lambda x: model(x))
  score = evaluate(lambda x: np.asarray(apply(jnp.asarray(x)[None]))[0],
                   list_images(data_dir / 'testsets' / 'Set12')[:1], protocol)
  assert score.mean()['psnr'] == pytest.approx(val[-1]['val/psnr'], abs=1e-9)


def test_swinir_trains(tmp_path, data_dir):
  images = tmp_path / 'images'
  images.mkdir()
  for p in sorted((data_dir / 'trainsets' / 'BSD400').glob('*.png'))[:2]:
    shutil.copy(p, images / p.name)
  config = recipes.apply_overrides(recipes.get_config('swinir_gray_dn:cpu'), [
      f'data.train.folder="{images}"', f'data.tfds_dir="{tmp_path / "tfds"}"', 'total_steps=3',
      'model.hyperparameters.depths=[1]', 'model.hyperparameters.num_heads=[2]', 'model.hyperparameters.embed_dim=8',
      'model.hyperparameters.window_size=4', 'model.hyperparameters.img_size=16', 'data.patch_size=16',
      'data.batch_size=2', 'eval.every=0', 'log_every=1', 'compute_dtype="bfloat16"', 'export.which="params"'])
  result = trainer.train(config, tmp_path / 'run', progress=False)
  rows = trainer.read_metrics(tmp_path / 'run')
  assert len(rows) == 3 and all(np.isfinite(r['loss']) for r in rows)
  import jaxrestore
  model = jaxrestore.load(weights=result['export'])
  assert type(model).__name__ == 'SwinIR' and model.config.embed_dim == 8


@pytest.mark.parametrize('spec', ['dualfreq_3task', 'dualfreq_5task', 'dualfreq_3task:ablation=no_prior',
                                  'dualfreq_5task:cpu,ablation=no_bands'])
def test_dualfreq_recipes_resolve(spec):
  config = recipes.get_config(spec)
  arch, model_config = trainer.resolve_model(config.model)
  assert arch.name == 'dualfreq' and config.sharding == 'fsdp_tp'
  assert model_config.use_prior == ('no_prior' not in spec) and model_config.band_attention == ('no_bands' not in spec)
  paired = [s for s in config.data.sources if s.get('degradation') is None]
  assert len(paired) == (0 if 'cpu' in spec else 2 if '3task' in spec else 4)
  with pytest.raises(ValueError, match='ablation must be one of'):
    recipes.get_config('dualfreq_3task:ablation=nothing')


def test_dualfreq_5task_tiny_trains_on_synthetic_degradations(data_dir, tmp_path):
  """The whole recipe on tiny data: five synthetic degradation streams, sharded step, export."""
  images = tmp_path / 'images'
  images.mkdir()
  for p in sorted((data_dir / 'trainsets' / 'BSDS500_test200').glob('*'))[:3]:
    shutil.copy(p, images / p.name)
  config = recipes.get_config('dualfreq_5task:tiny')
  config = recipes.apply_overrides(config, [f'data.tfds_dir="{tmp_path / "tfds"}"'])
  for source in config.data.sources:
    source['folder'] = str(images)
  summary = trainer.train(config, tmp_path / 'run', progress=False)
  rows = [r for r in trainer.read_metrics(tmp_path / 'run') if 'loss' in r]
  assert [r['step'] for r in rows] == [1, 2, 3] and all(np.isfinite(r['loss']) for r in rows)
  model = jaxrestore.load(weights=summary['export'])
  assert type(model).__name__ == 'DualFreq' and model.config.dim == 8
