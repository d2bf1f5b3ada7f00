"""The sharded train step on 8 simulated CPU devices equals the single-device step; sharding rules."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import pytest
import numpy as np
from jax.sharding import PartitionSpec as P

from jaxrestore.train import sharding

REPO = Path(__file__).resolve().parent.parent

SCRIPT = r'''
import os
os.environ['XLA_FLAGS'] = '--xla_force_host_platform_device_count=8'
import json
import jax
import pytest
import numpy as np
from jax.sharding import PartitionSpec as P
from jaxrestore.configs.train import apply_overrides, get_config
from jaxrestore.train import trainer

assert jax.device_count() == 8
base = apply_overrides(get_config('dncnn_gray:tiny'), ['data.batch_size=16', 'ema_decay=0.9',
                                                       'optimizer.clip_norm=0.5'])
rng = np.random.default_rng(0)
batches = []
for _ in range(3):
  gt = rng.random((16, 16, 16, 1), dtype=np.float32)
  batches.append({'gt': gt, 'lq': gt + 0.1 * rng.standard_normal(gt.shape, dtype=np.float32)})

def run(*overrides):
  setup = trainer.build(apply_overrides(base, list(overrides)))
  state = trainer.init_state(setup)
  step = trainer.make_train_step(setup)
  losses = []
  for b in batches:
    state, metrics = step(state, trainer.global_batch_arrays(setup, b))
    losses.append(float(metrics['loss']))
  specs = {str(tuple(s.spec)) for s in jax.tree.leaves(jax.tree.map(lambda x: x.sharding, state['params']))}
  devices = len(state['params']['body']['layers'][0]['kernel'].sharding.device_set)
  host = jax.device_get({k: state[k] for k in ('params', 'ema', 'opt_state')})
  return losses, host, sorted(specs), devices

def diff(a, b):
  return max(float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))

ref_losses, ref, _, ref_devices = run('mesh.data=1', 'mesh.model=1')
out = {'single_devices': ref_devices}
for name, overrides in {
    'dp8': ('mesh.data=8', 'mesh.model=1'),
    'fsdp4x2': ('mesh.data=4', 'mesh.model=2', 'sharding="fsdp"'),
    'dp8_accum2': ('mesh.data=8', 'mesh.model=1', 'grad_accum_steps=2'),
}.items():
  losses, state, specs, devices = run(*overrides)
  out[name] = dict(loss=max(abs(a - b) for a, b in zip(losses, ref_losses)), params=diff(state['params'], ref['params']),
                   ema=diff(state['ema'], ref['ema']), opt_state=diff(state['opt_state'], ref['opt_state']),
                   specs=specs, devices=devices)
bf16_losses, bf16, _, _ = run('mesh.data=8', 'compute_dtype="bfloat16"')
out['bf16'] = dict(loss_rel=max(abs(a - b) / b for a, b in zip(bf16_losses, ref_losses)),
                   dtypes=sorted({str(x.dtype) for x in jax.tree.leaves(bf16['params'])}),
                   params=diff(bf16['params'], ref['params']))
print('RESULT ' + json.dumps(out))
'''


def test_sharded_step_on_8_devices_equals_single_device():
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  out = subprocess.run([sys.executable, '-c', SCRIPT], cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  result = json.loads(out.stdout.split('RESULT ', 1)[1])
  print(json.dumps(result, indent=1))
  assert result['single_devices'] == 1
  for name in ('dp8', 'fsdp4x2', 'dp8_accum2'):
    r = result[name]
    assert r['devices'] == 8, (name, r)
    # float32 tolerance: the same math, only reduction orders differ across devices.
    assert r['loss'] < 1e-6 and r['params'] < 1e-5 and r['ema'] < 1e-5 and r['opt_state'] < 1e-5, (name, r)
  assert all("'data'" not in s for s in result['dp8']['specs'])  # replicated
  assert any("'data'" in s for s in result['fsdp4x2']['specs'])  # FSDP really splits parameters
  # bf16 compute keeps float32 master weights and stays close to the float32 run.
  assert result['bf16']['dtypes'] == ['float32']
  assert result['bf16']['loss_rel'] < 2e-2 and 0 < result['bf16']['params'] < 1e-2


def _mesh(data, model):
  # A mesh over the one CPU device repeated is not allowed; use AbstractMesh for the rule tests.
  return jax.sharding.AbstractMesh((data, model), sharding.AXES)


def test_rule_table_replicated_fsdp_and_fallbacks():
  tree = {'params': {'conv': {'kernel': jax.ShapeDtypeStruct((3, 3, 64, 128), np.float32),
                              'bias': jax.ShapeDtypeStruct((128,), np.float32)},
                     'odd': {'kernel': jax.ShapeDtypeStruct((3, 3, 5, 7), np.float32)}},
          'step': jax.ShapeDtypeStruct((), np.int32)}
  mesh = _mesh(4, 2)
  rep = sharding.partition_specs(tree, 'replicated', mesh)
  assert all(s == P() for s in jax.tree.leaves(rep, is_leaf=lambda x: isinstance(x, P)))
  fsdp = sharding.partition_specs(tree, 'fsdp', mesh)
  assert fsdp['params']['conv']['kernel'] == P(None, None, None, 'data')  # the largest divisible axis
  assert fsdp['params']['conv']['bias'] == P('data')
  assert fsdp['params']['odd']['kernel'] == P()  # nothing divides by 4: replicated
  assert fsdp['step'] == P()
  custom = [(r'params/conv/kernel', P(None, None, 'model', 'data')), (r'.*', P())]
  specs = sharding.partition_specs(tree, custom, mesh)
  assert specs['params']['conv']['kernel'] == P(None, None, 'model', 'data')
  assert specs['params']['odd']['kernel'] == P()
  # A spec that does not divide falls back per axis.
  specs = sharding.partition_specs(tree, [(r'.*odd/kernel', P(None, None, 'data', 'model'))], mesh)
  assert specs['params']['odd']['kernel'] == P()
  # Paths of optax states reach the same rules (moments mirror the params tree).
  import optax
  params = {'conv': {'kernel': np.zeros((3, 3, 8, 16), np.float32)}}
  state = {'opt_state': optax.adam(1e-3).init(params)}
  paths = sharding.describe(state, 'fsdp', _mesh(8, 1))
  assert any(p.startswith('opt_state/0/mu/conv/kernel') and "'data'" in p for p in paths), paths


def test_make_mesh_names_axes_and_uses_auto_axis_types():
  mesh = sharding.make_mesh()
  assert mesh.axis_names == ('data', 'model')
  assert mesh.shape['data'] == jax.device_count() and mesh.shape['model'] == 1
  assert all(t == jax.sharding.AxisType.Auto for t in mesh.axis_types)


def _abstract_params(preset_name: str):
  import jaxrestore
  from flax import nnx
  from jaxrestore.convert.build import abstract_model
  from jaxrestore import registry
  preset = jaxrestore.get_preset(preset_name)
  arch = registry.get_architecture(preset.architecture)
  model = abstract_model(arch, arch.make_config(preset.hyperparameters))
  params = nnx.state(model, nnx.Param)
  return arch, {'params': jax.tree.map(lambda v: jax.ShapeDtypeStruct(v.shape, v.dtype), nnx.to_pure_dict(params))}


@pytest.mark.parametrize('preset', ['swinir-color-dn15', 'swinir-real-x4-l-gan', 'restormer-color-dn-blind',
                                    'promptir-3d', 'hair-3d'])
def test_fsdp_tp_splits_every_large_kernel_of_real_size_models(preset):
  """On a (data 4, model 2) mesh: the model's tensor-parallel rules put its attention and MLP
  kernels on `model`, and no array of 64k+ elements is left whole on every device."""
  arch, tree = _abstract_params(preset)
  mesh = _mesh(4, 2)
  assert arch.sharding_rules, arch.name
  assert sharding.replicated_large(tree, 'fsdp_tp', mesh, arch.sharding_rules) == []
  lines = sharding.describe(tree, 'fsdp_tp', mesh, arch.sharding_rules)
  tp = [l for l in lines if "'model'" in l]
  qkv = [l for l in lines if '/qkv/kernel' in l]
  assert qkv and all("'model'" in l and "'data'" in l for l in qkv), qkv[:3]
  big = [l for l in lines if ('fc1/kernel' in l or 'project_in/kernel' in l)]
  assert big and all("'model'" in l for l in big), big[:3]
  assert len(tp) >= 2 * len(qkv)
  # Plain FSDP leaves the `model` axis unused: only the model's table brings tensor parallelism.
  assert not [l for l in sharding.describe(tree, 'fsdp', mesh) if "'model'" in l]


def test_replicated_large_names_what_no_axis_divides():
  tree = {'params': {'w': jax.ShapeDtypeStruct((257, 509), np.float32)}}
  assert sharding.replicated_large(tree, 'fsdp', _mesh(4, 2)) == ['params/w (257, 509)']
  assert sharding.replicated_large(tree, 'fsdp', _mesh(1, 1)) == []
