"""The training loop: sharded state, one jitted train step, checkpoints, metrics, validation, export.

The train state is a plain pytree of arrays -- {'step', 'params', 'opt_state', 'ema', 'rng'
(, 'model_state')} -- laid out on a (data, model) mesh by a sharding rule table
(`jaxrestore.train.sharding`). The step takes the global batch sharded along `data`, splits it
into `grad_accum_steps` micro-batches (a `lax.scan`, so accumulation costs no extra compilation),
optionally runs the model in bfloat16 against float32 master weights, and applies the optax
update and the parameter EMA. Everything a resumed run needs is checkpointed, so a run killed at
any point and restarted with the same command continues with identical losses.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from jaxrestore.configs.train import ConfigDict
from . import losses, optim, sharding
from .checkpointing import Checkpointer

METRICS_FILE = 'metrics.jsonl'
CONFIG_FILE = 'config.json'


# ----- set-up ----------------------------------------------------------------------------------------

def maybe_initialize_distributed(cfg) -> None:
  """`jax.distributed.initialize` for multi-host runs: with an explicit coordinator (any platform;
  CPU collectives over gloo), or auto-detected (SLURM, TPU pods, ...) when JAXRESTORE_DISTRIBUTED=1."""
  cfg = cfg or {}
  coordinator = cfg.get('coordinator') or os.environ.get('JAXRESTORE_COORDINATOR')
  if jax.distributed.is_initialized():
    return
  if coordinator:
    num = cfg.get('num_processes') or int(os.environ['JAXRESTORE_NUM_PROCESSES'])
    pid = cfg.get('process_id')
    pid = int(os.environ['JAXRESTORE_PROCESS_ID']) if pid is None else pid
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    jax.distributed.initialize(coordinator, num_processes=int(num), process_id=int(pid))
  elif os.environ.get('JAXRESTORE_DISTRIBUTED') == '1':
    jax.distributed.initialize()


def resolve_model(model_cfg):
  """(architecture, model config) from {'preset', 'architecture', 'hyperparameters'}; fails clearly
  for an architecture this jaxrestore does not have (e.g. a recipe written ahead of its model)."""
  from jaxrestore.registry import architectures, get_preset
  preset = get_preset(model_cfg['preset']) if model_cfg.get('preset') else None
  name = model_cfg.get('architecture') or (preset.architecture if preset else None)
  if name is None:
    raise ValueError('model: give a preset or an architecture')
  known = architectures()
  if name not in known:
    raise ValueError(f'architecture {name!r} is not available in this jaxrestore (known: '
                     f'{", ".join(sorted(known))}); this recipe needs the {name} model, '
                     f'which is not ported yet')
  arch = known[name]
  hp = {**(preset.hyperparameters if preset else {}), **dict(model_cfg.get('hyperparameters') or {})}
  hp = {k: tuple(v) if isinstance(v, list) else v for k, v in hp.items()}
  return arch, arch.make_config(hp)


def _float_cast(tree, dtype):
  return jax.tree.map(lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


@dataclasses.dataclass
class Setup:
  """Everything derived from the config before training starts."""
  config: ConfigDict
  arch: Any
  model_config: Any
  graphdef: Any
  mesh: jax.sharding.Mesh
  tx: Any
  schedule: Callable
  loss_fn: Callable
  global_batch: int
  abstract_state: Any
  state_shardings: Any
  batch_sharding: NamedSharding


def build(config) -> Setup:
  config = ConfigDict(config)
  arch, model_config = resolve_model(config.model)
  mesh = sharding.make_mesh(**config.mesh)
  data_ways = mesh.shape['data']
  global_batch = config.data.get('batch_size') or config.data.batch_size_per_device * data_ways
  accum = int(config.get('grad_accum_steps', 1))
  if global_batch % accum or (global_batch // accum) % data_ways:
    raise ValueError(f'global batch {global_batch} must split into {accum} micro-batches that are a '
                     f'multiple of the {data_ways}-way data axis')
  if global_batch % jax.process_count():
    raise ValueError(f'global batch {global_batch} is not divisible by {jax.process_count()} processes')
  schedule = optim.make_schedule(config.schedule, config.total_steps, float(config.optimizer.lr))
  tx = optim.make_optimizer(config.optimizer, schedule)
  seed = int(config.seed)
  abstract_model = nnx.eval_shape(lambda: arch.model_cls(model_config, rngs=nnx.Rngs(seed)))
  graphdef, _, _ = nnx.split(abstract_model, nnx.Param, ...)
  if any(isinstance(v, nnx.BatchStat) for _, v in nnx.to_flat_state(nnx.state(abstract_model))):
    warnings.warn('the model has BatchNorm layers; they are trained in inference mode (frozen running '
                  'statistics). Prefer a configuration without BatchNorm (e.g. DnCNN batch_norm=False).')
  abstract_state = jax.eval_shape(lambda: _init_state(arch, model_config, tx, config, None))
  rules = config.get('sharding', 'replicated')
  state_shardings = sharding.shardings(abstract_state, rules, mesh, arch.sharding_rules)
  if rules != 'replicated':
    whole = sharding.replicated_large(abstract_state, rules, mesh, arch.sharding_rules)
    if whole:
      warnings.warn(f'sharding {rules!r} leaves {len(whole)} large arrays whole on every device (no axis '
                    f'divides the mesh): {", ".join(whole[:5])}{" ..." if len(whole) > 5 else ""}')
  return Setup(config, arch, model_config, graphdef, mesh, tx, schedule, losses.make_loss(config.loss),
               int(global_batch), abstract_state, state_shardings, sharding.batch_sharding(mesh))


INITIALIZERS = {
    # He et al. 2015, as the DnCNN paper: keeps activations alive through deep BatchNorm-free stacks
    # (PyTorch's default conv init, which the models reproduce for checkpoint parity, shrinks them
    # by ~sqrt(6) per layer, so a 17-layer DnCNN without BatchNorm barely trains from it).
    'kaiming_normal': jax.nn.initializers.he_normal(in_axis=-2, out_axis=-1),
    'orthogonal': jax.nn.initializers.orthogonal(),
    'xavier_uniform': jax.nn.initializers.glorot_uniform(in_axis=-2, out_axis=-1),
}


def reinitialize(params, scheme: str, seed: int):
  """Every 'kernel' (rank >= 2) drawn from `scheme`, biases zeroed; other parameters kept."""
  if scheme not in INITIALIZERS:
    raise ValueError(f'unknown init scheme {scheme!r}; known: {sorted(INITIALIZERS)} (or None: the model default)')
  init, key = INITIALIZERS[scheme], jax.random.PRNGKey(seed + 1)
  leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
  out = []
  for i, (path, x) in enumerate(leaves):
    name = sharding.path_str(path).rsplit('/', 1)[-1]
    if name == 'kernel' and x.ndim >= 2:
      x = init(jax.random.fold_in(key, i), x.shape, x.dtype)
    elif name == 'bias':
      x = jnp.zeros_like(x)
    out.append(x)
  return jax.tree_util.tree_unflatten(treedef, out)


def _init_state(arch, model_config, tx, config, init_params):
  model = arch.model_cls(model_config, rngs=nnx.Rngs(int(config.seed)))
  _, params, rest = nnx.split(model, nnx.Param, ...)
  if init_params is None:
    params = nnx.to_pure_dict(params)
    if config.model.get('init'):
      params = reinitialize(params, config.model.init, int(config.seed))
  else:
    params = init_params
  state = {'step': jnp.zeros((), jnp.int32), 'params': params, 'opt_state': tx.init(params),
           'rng': jax.random.PRNGKey(int(config.seed))}
  if float(config.get('ema_decay', 0.0)):
    state['ema'] = jax.tree.map(jnp.copy, params)
  rest = nnx.to_pure_dict(rest)
  if jax.tree.leaves(rest):
    state['model_state'] = rest
  return state


def init_state(setup: Setup):
  """The initial state, created directly in its sharded layout (no host round trip)."""
  init_params = None
  weights = setup.config.model.get('init_weights')
  if weights:
    import jaxrestore
    loaded = jaxrestore.load(weights=weights, **{k: v for k, v in dataclasses.asdict(setup.model_config).items()
                                                 if k not in ('dtype', 'param_dtype')})
    init_params = nnx.to_pure_dict(nnx.state(loaded, nnx.Param))
  fn = jax.jit(lambda p: _init_state(setup.arch, setup.model_config, setup.tx, setup.config, p),
               out_shardings=setup.state_shardings)
  return fn(init_params)


# ----- the train step --------------------------------------------------------------------------------

def make_train_step(setup: Setup):
  cfg = setup.config
  accum = int(cfg.get('grad_accum_steps', 1))
  decay = float(cfg.get('ema_decay', 0.0))
  ema_warmup = bool(cfg.get('ema_warmup', True))
  compute = jnp.dtype(cfg.get('compute_dtype', 'float32'))
  graphdef, loss_fn, tx, mesh = setup.graphdef, setup.loss_fn, setup.tx, setup.mesh

  def forward_loss(params, model_state, lq, gt):
    if compute != jnp.float32:
      params = _float_cast(params, compute)
    model = nnx.merge(graphdef, params, model_state) if model_state is not None else nnx.merge(graphdef, params)
    return loss_fn(model(lq.astype(compute)), gt)

  grad_fn = jax.value_and_grad(forward_loss, has_aux=True)

  def step(state, batch):
    params, model_state = state['params'], state.get('model_state')
    lq, gt = batch['lq'], batch['gt']
    if accum == 1:
      (loss, parts), grads = grad_fn(params, model_state, lq, gt)
    else:
      def micro(x):  # rows m * accum + a -> [a][m]: each micro-batch stays sharded along data
        x = x.reshape(x.shape[0] // accum, accum, *x.shape[1:]).swapaxes(0, 1)
        return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, P(None, 'data')))

      mlq, mgt = micro(lq), micro(gt)

      def body(carry, mb):
        return jax.tree.map(jnp.add, carry, grad_fn(params, model_state, *mb)), None

      shapes = jax.eval_shape(grad_fn, params, model_state, mlq[0], mgt[0])
      zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
      ((loss, parts), grads), _ = jax.lax.scan(body, zeros, (mlq, mgt))
      loss, parts, grads = jax.tree.map(lambda x: x / accum, (loss, parts, grads))
    updates, opt_state = tx.update(grads, state['opt_state'], params)
    new_params = jax.tree.map(lambda p, u: (p + u).astype(p.dtype), params, updates)
    new = dict(state, step=state['step'] + 1, params=new_params, opt_state=opt_state,
               rng=jax.random.split(state['rng'])[0])
    if 'ema' in state:
      d = jnp.asarray(decay, jnp.float32)
      if ema_warmup:  # TF's num_updates rule: early EMA follows the weights instead of the random init
        t = state['step'].astype(jnp.float32)
        d = jnp.minimum(d, (1.0 + t) / (10.0 + t))
      new['ema'] = jax.tree.map(lambda e, p: d * e + (1.0 - d) * p, state['ema'], new_params)
    metrics = {'loss': loss, **{f'loss/{k}': v for k, v in parts.items()},
               'grad_norm': jnp.sqrt(sum(jnp.sum(jnp.square(g)) for g in jax.tree.leaves(grads))),
               'lr': jnp.asarray(setup.schedule(state['step']), jnp.float32)}
    return new, metrics

  batch_shardings = {'lq': setup.batch_sharding, 'gt': setup.batch_sharding}
  return jax.jit(step, in_shardings=(setup.state_shardings, batch_shardings),
                 out_shardings=(setup.state_shardings, sharding.replicated(mesh)), donate_argnums=(0,))


def global_batch_arrays(setup: Setup, local: dict) -> dict:
  """This process's rows -> global arrays sharded along data."""
  return {k: jax.make_array_from_process_local_data(setup.batch_sharding, np.asarray(local[k]))
          for k in ('lq', 'gt')}


# ----- metrics ---------------------------------------------------------------------------------------

class MetricWriter:
  """JSONL rows (one per log step and per validation) on process 0, TensorBoard if available.
  On resume, rows after the restored step are dropped: they are recomputed, identically."""

  def __init__(self, workdir: Path, start_step: int, *, enabled: bool, tensorboard: bool):
    self.enabled = enabled
    self.path = workdir / METRICS_FILE
    self.tb = None
    if not enabled:
      return
    if self.path.exists():
      keep = []
      for line in self.path.read_text().splitlines():
        try:
          row = json.loads(line)
        except json.JSONDecodeError:
          continue  # a line cut by a kill
        if row.get('step', 0) <= start_step:
          keep.append(json.dumps(row))
      tmp = self.path.with_suffix('.jsonl.tmp')
      tmp.write_text(''.join(k + '\n' for k in keep))
      os.replace(tmp, self.path)
    self.file = open(self.path, 'a')
    if tensorboard:
      try:
        from tensorboardX import SummaryWriter
        self.tb = SummaryWriter(str(workdir / 'tensorboard'))
      except ImportError:
        pass

  def write(self, step: int, metrics: dict) -> None:
    if not self.enabled:
      return
    row = {'step': int(step), **{k: (float(v) if not isinstance(v, str) else v) for k, v in metrics.items()}}
    self.file.write(json.dumps(row) + '\n')
    self.file.flush()
    if self.tb is not None:
      for k, v in row.items():
        if k != 'step' and not isinstance(v, str):
          self.tb.add_scalar(k, v, step)

  def close(self) -> None:
    if self.enabled:
      self.file.close()
      if self.tb is not None:
        self.tb.close()


def read_metrics(workdir) -> list[dict]:
  rows = []
  for line in (Path(workdir) / METRICS_FILE).read_text().splitlines():
    try:
      rows.append(json.loads(line))
    except json.JSONDecodeError:
      pass
  return rows


# ----- validation and export -------------------------------------------------------------------------

def resolve_eval_folder(name: str, root: str | None = None) -> Path:
  """A validation set by folder or name ($JAXRESTORE_DATA or `root`; see jaxrestore.datasets)."""
  from jaxrestore import datasets
  return datasets.resolve(name, root)


def make_validator(setup: Setup) -> Callable | None:
  """host params -> {'val/psnr': ..., ...}: the official protocol of the task (jaxrestore.eval), run by
  the one evaluator on the inference engine. One model object is updated in place, so the test set is
  read and checked once."""
  ecfg = setup.config.get('eval') or {}
  if not ecfg.get('every') or not ecfg.get('dataset'):
    return None
  from jaxrestore.eval.evaluator import Evaluator, prepare_test_set
  from jaxrestore.eval.protocol import Protocol
  protocol = Protocol(task=ecfg['task'], noise_level=ecfg.get('noise_level'), jpeg_quality=ecfg.get('jpeg_quality'),
                      scale=setup.model_config.scale, border=int(ecfg.get('border', 0) or 0),
                      window=setup.model_config.eval_pad_multiple)
  folder = resolve_eval_folder(ecfg['dataset'], ecfg.get('data_root'))
  test_set = prepare_test_set(protocol, dataset=folder, lq=ecfg.get('lq') and Path(ecfg['lq']),
                              gt=ecfg.get('gt') and Path(ecfg['gt']), limit=ecfg.get('max_images'))
  graphdef, state = setup.graphdef, {}

  def validate(params, model_state) -> dict:
    parts = (params,) if model_state is None else (params, model_state)
    if 'model' not in state:
      state['model'] = nnx.merge(graphdef, *parts)
      state['evaluator'] = Evaluator(state['model'])
    else:
      nnx.update(state['model'], *parts)
    result = state['evaluator'].evaluate(test_set, protocol)
    return {f'val/{k}': v for k, v in result.mean().items()}

  return validate


def host_params(setup: Setup, state, which: str = 'ema'):
  """(params, model_state) as numpy on every process (an all-gather when sharded)."""
  key = 'ema' if which == 'ema' and 'ema' in state else 'params'
  tree = (state[key], state.get('model_state'))
  gather = jax.jit(lambda t: t, out_shardings=sharding.replicated(setup.mesh))
  return jax.device_get(gather(tree))


def export(setup: Setup, params, model_state, dst, *, step: int, which: str, **provenance) -> Path:
  """A converted checkpoint directory that `jaxrestore.load(weights=dst)` reads."""
  from jaxrestore.convert.checkpoint import save_converted
  flat = {}
  for tree in (params, model_state):
    if tree is None:
      continue
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
      flat[tuple(k.key for k in path)] = np.asarray(leaf)
  return save_converted(dst, flat, architecture=setup.arch.name,
                        hyperparameters=setup.model_config.hyperparameters(), overwrite=True,
                        source='jaxrestore train', recipe=str(setup.config.get('recipe')), step=int(step),
                        weights=which, **provenance)


# ----- the loop --------------------------------------------------------------------------------------

def _config_json(config) -> str:
  return json.dumps(ConfigDict(config).to_dict(), indent=2, sort_keys=True, default=str)


def train(config, workdir, *, resume: bool = True, progress: bool = True) -> dict:
  """Trains (or resumes) the run in `workdir`; returns the last logged metrics and the export path."""
  config = ConfigDict(config)
  maybe_initialize_distributed(config.get('distributed'))
  workdir = Path(workdir).absolute()
  primary = jax.process_index() == 0
  if primary:
    workdir.mkdir(parents=True, exist_ok=True)
    _check_config(workdir, config)
  setup = build(config)
  total = int(config.total_steps)
  from jaxrestore.data.pipeline import make_train_iterator
  iterator = make_train_iterator(config.data, global_batch=setup.global_batch, num_steps=total,
                                 seed=int(config.seed), process_index=jax.process_index(),
                                 process_count=jax.process_count())
  ckpt_cfg = config.checkpoint
  checkpointer = Checkpointer(workdir / 'checkpoints', keep=int(ckpt_cfg.get('keep', 3)),
                              async_save=bool(ckpt_cfg.get('async_save', True)))
  if checkpointer.all_steps() and not resume:
    raise FileExistsError(f'{workdir} already holds checkpoints {checkpointer.all_steps()}; resume '
                          f'(the default) or use a new workdir')
  abstract = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                          setup.abstract_state, setup.state_shardings)
  restored = checkpointer.restore(abstract, iterator) if resume else None
  if restored is not None:
    state, meta = restored
    start, elapsed = int(meta['step']), float(meta.get('train_seconds', 0.0))
    _log(primary, f'resumed from {checkpointer.directory / str(start)}')
  else:
    state, start, elapsed = init_state(setup), 0, 0.0
  step_fn = make_train_step(setup)
  validate = make_validator(setup)
  writer = MetricWriter(workdir, start, enabled=primary, tensorboard=bool(config.get('tensorboard', True)))
  log_every = max(int(config.get('log_every', 50)), 1)
  ckpt_every = int(ckpt_cfg.get('every', 0) or 0)
  eval_every = int((config.get('eval') or {}).get('every', 0) or 0)
  bar = _progress_bar(total, start, enabled=primary and progress)
  pending, last, t_last = [], {}, time.perf_counter()
  meta = lambda step: dict(config=json.loads(_config_json(config)), train_seconds=elapsed,
                           global_batch=setup.global_batch, process_count=jax.process_count())
  step = start
  try:
    for step in range(start + 1, total + 1):
      batch = global_batch_arrays(setup, next(iterator))
      state, metrics = step_fn(state, batch)
      pending.append(metrics)
      if step % log_every == 0 or step == total:
        rows = jax.device_get(pending)
        now = time.perf_counter()
        elapsed += now - t_last
        last = {k: float(v) for k, v in rows[-1].items()}
        last['loss_mean'] = float(np.mean([r['loss'] for r in rows]))
        last['images_per_s'] = setup.global_batch * len(rows) / max(now - t_last, 1e-9)
        last['train_seconds'] = elapsed
        writer.write(step, last)
        bar.set_postfix(loss=f'{last["loss"]:.4g}', lr=f'{last["lr"]:.3g}', img_s=f'{last["images_per_s"]:.1f}',
                        refresh=False)
        pending, t_last = [], now
      bar.update(1)
      if validate is not None and (step % eval_every == 0 or step == total):
        params, model_state = host_params(setup, state, 'ema' if config.eval.get('use_ema', True) else 'params')
        if primary:
          row = validate(params, model_state)
          writer.write(step, row)
          bar.write(f'step {step}: ' + '  '.join(f'{k} {v:.3f}' for k, v in row.items()))
        t_last = time.perf_counter()
      if (ckpt_every and step % ckpt_every == 0) or step == total:
        checkpointer.save(step, state, iterator, meta(step))
    checkpointer.wait()
  finally:
    bar.close()
    writer.close()
    checkpointer.close()
    if hasattr(iterator, 'close'):
      iterator.close()
  result = {'step': step, 'metrics': last, 'train_seconds': elapsed, 'export': None}
  which = (config.get('export') or {}).get('which', 'ema')
  if which and jax.process_count() == 1:
    dst = (config.get('export') or {}).get('dir') or workdir / 'export'
    params, model_state = host_params(setup, state, which)
    result['export'] = str(export(setup, params, model_state, dst, step=step, which=which,
                                  train_seconds=round(elapsed, 1)))
  elif which and primary:
    _log(primary, f'multi-process run: export with `jaxrestore train CONFIG --workdir {workdir} --export-only`')
  return result


def export_checkpoint(config, workdir, dst=None, *, which: str = 'ema') -> Path:
  """Exports the latest good checkpoint of a run (e.g. one trained on several hosts) in one process."""
  config = ConfigDict(config)
  setup = build(config)
  workdir = Path(workdir).absolute()
  checkpointer = Checkpointer(workdir / 'checkpoints', async_save=False)
  abstract = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                          setup.abstract_state, setup.state_shardings)
  restored = checkpointer.restore(abstract)
  checkpointer.close()
  if restored is None:
    raise FileNotFoundError(f'no usable checkpoint in {workdir / "checkpoints"}')
  state, meta = restored
  params, model_state = host_params(setup, state, which)
  return export(setup, params, model_state, dst or workdir / 'export', step=int(meta['step']), which=which,
                train_seconds=round(float(meta.get('train_seconds', 0.0)), 1))


def _check_config(workdir: Path, config) -> None:
  text = _config_json(config)
  path = workdir / CONFIG_FILE
  if path.exists() and path.read_text() != text:
    old, new = json.loads(path.read_text()), json.loads(text)
    changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    warnings.warn(f'{path}: the config differs from the one this run started with (top-level keys '
                  f'{changed}); continuing with the new one')
  path.write_text(text)


def _progress_bar(total: int, start: int, *, enabled: bool):
  from tqdm import tqdm
  return tqdm(total=total, initial=start, disable=not enabled, desc='train', unit='step', dynamic_ncols=True,
              file=sys.stderr, mininterval=1.0)


def _log(enabled: bool, message: str) -> None:
  if enabled:
    print(message, file=sys.stderr, flush=True)


__all__ = ['train', 'build', 'init_state', 'make_train_step', 'export', 'export_checkpoint', 'read_metrics',
           'resolve_model', 'maybe_initialize_distributed', 'Setup']
