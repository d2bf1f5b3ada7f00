"""Training recipes as code (big_vision style), installed as `jaxrestore.configs.train`.

Each recipe module has `get_config(arg: str | None) -> ConfigDict`. `arg` is big_vision's
`config.py:arg` string: comma-separated flags and `key=value` pairs, e.g. `sigma=25,cpu`. The `cpu`
flag (big_vision's `runlocal`) shrinks a recipe to something a laptop CPU runs in minutes, keeping
everything else (data pipeline, loss, schedule shape) as published.

    get_config('swinir_gray_dn')            # the published recipe
    get_config('swinir_gray_dn:sigma=25,cpu')
    get_config('path/to/my_recipe.py:cpu')   # any file with get_config()

`apply_overrides(cfg, ['optimizer.lr=1e-4', 'total_steps=100'])` is what `--set` does.
"""
from __future__ import annotations

import ast
import copy
import importlib
import importlib.util
from pathlib import Path
from typing import Any, Iterable

RECIPES = ('dncnn_gray', 'swinir_gray_dn', 'swinir_color_dn', 'swinir_car', 'hair_3deg', 'dualfreq_3task',
           'dualfreq_5task')


class ConfigDict(dict):
  """A dict with attribute access; nested dicts become ConfigDicts. Plain data, so it pickles,
  deep-copies and dumps to JSON."""

  def __init__(self, *args, **kwargs):
    super().__init__()
    for k, v in dict(*args, **kwargs).items():
      self[k] = v

  def __setitem__(self, key, value):
    super().__setitem__(key, _wrap(value))

  def __getattr__(self, name):
    try:
      return self[name]
    except KeyError:
      raise AttributeError(f'config has no field {name!r} (fields: {sorted(self)})') from None

  def __setattr__(self, name, value):
    self[name] = value

  def __delattr__(self, name):
    del self[name]

  def __deepcopy__(self, memo):
    return ConfigDict({k: copy.deepcopy(v, memo) for k, v in self.items()})

  def to_dict(self) -> dict:
    return {k: v.to_dict() if isinstance(v, ConfigDict) else
            [x.to_dict() if isinstance(x, ConfigDict) else x for x in v] if isinstance(v, list) else v
            for k, v in self.items()}


def _wrap(value):
  if isinstance(value, ConfigDict):
    return value
  if isinstance(value, dict):
    return ConfigDict(value)
  if isinstance(value, list):
    return [_wrap(v) for v in value]
  return value


def parse_arg(arg: str | None, **defaults) -> ConfigDict:
  """'sigma=25,cpu' -> {sigma: 25, cpu: True}, typed like `defaults` (big_vision's parse_arg)."""
  out = ConfigDict(defaults)
  for item in filter(None, (arg or '').split(',')):
    key, eq, value = item.partition('=')
    key = key.strip()
    if not eq:
      out[key] = True
      continue
    default = defaults.get(key)
    if isinstance(default, bool):
      out[key] = value.lower() in ('1', 'true', 'yes', 'on')
    elif default is not None and not isinstance(default, (list, tuple, dict)):
      out[key] = type(default)(value)
    else:
      out[key] = _literal(value)
  return out


def _literal(text: str):
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def get_config(spec: str) -> ConfigDict:
  """A recipe by name (`swinir_gray_dn`) or file (`my.py`), with an optional `:arg` suffix."""
  name, _, arg = spec.partition(':')
  if name.endswith('.py') or '/' in name:
    path = Path(name)
    if not path.is_file():
      raise FileNotFoundError(f'training config file {path} does not exist')
    module_spec = importlib.util.spec_from_file_location(f'_jaxrestore_recipe_{path.stem}', path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
  else:
    if name not in RECIPES:
      import difflib
      close = difflib.get_close_matches(name, RECIPES, n=3)
      hint = f'; did you mean {", ".join(close)}?' if close else ''
      raise ValueError(f'unknown training recipe {name!r}{hint} (known: {", ".join(RECIPES)}, or a .py path)')
    module = importlib.import_module(f'{__name__}.{name}')
  config = module.get_config(arg or None)
  config.setdefault('recipe', spec)
  return ConfigDict(config)


def apply_overrides(config: ConfigDict, assignments: Iterable[str]) -> ConfigDict:
  """`a.b.c=value` assignments (values parsed as Python literals, else kept as strings). A key must
  already exist unless its parent is a dict meant to be open (e.g. `loss.fft=0.05`)."""
  config = copy.deepcopy(config)
  for text in assignments:
    if '=' not in text:
      raise ValueError(f'--set expects key=value, got {text!r}')
    dotted, value = text.split('=', 1)
    *parents, leaf = dotted.strip().split('.')
    node: Any = config
    for i, part in enumerate(parents):
      if isinstance(node, list):
        node = node[int(part)]
        continue
      if part not in node or not isinstance(node[part], dict):
        if part in node and node[part] is not None:
          raise ValueError(f'--set {dotted}: {".".join(parents[:i + 1])} is not a group of settings')
        node[part] = ConfigDict()
      node = node[part]
    if isinstance(node, list):
      node[int(leaf)] = _wrap(_literal(value))
    else:
      node[leaf] = _literal(value)
  return config


def base_config() -> ConfigDict:
  """Defaults every recipe starts from; the trainer reads exactly these fields."""
  return ConfigDict(
      seed=0,
      total_steps=1000,
      # model: a preset name and/or an architecture with hyperparameters (hyperparameters win).
      # init: None (the model's PyTorch-default init) or 'kaiming_normal' / 'orthogonal' / ...
      model=dict(preset=None, architecture=None, hyperparameters={}, init=None, init_weights=None),
      data=dict(
          train=dict(dataset=None, folder=None, mode='L', lq_folder=None),
          sources=None,          # several sources mixed: [dict(train..., weight=w, degradation=...)]
          patch_size=64,
          augment=True,          # the 8 flips/rotations (KAIR's augment_img modes 0-7)
          degradation=dict(kind='gaussian', sigma=15),
          batch_size=None,       # global batch; None: batch_size_per_device x data-parallel devices
          batch_size_per_device=8,
          cache_in_memory=True,  # decode every training image once (BSD400: 13 MB)
          num_threads=2,         # grain read threads per process
          num_workers=0,         # grain worker processes (0: in-process)
          tfds_dir=None,         # where the tfds builders write (default ~/.cache/jaxrestore/tfds)
      ),
      loss=dict(l1=1.0),
      optimizer=dict(name='adam', lr=2e-4, b1=0.9, b2=0.99, eps=1e-8, weight_decay=0.0, clip_norm=None),
      schedule=dict(kind='multistep', milestones=[], gamma=0.5, warmup_steps=0, warmup_init=0.0,
                    end_value=0.0),
      ema_decay=0.999,           # 0 disables the parameter EMA
      ema_warmup=True,           # decay min(ema_decay, (1+t)/(10+t)): short runs get a usable EMA
      grad_accum_steps=1,
      compute_dtype='float32',   # 'bfloat16': bf16 activations and weights, float32 master weights
      mesh=dict(data=-1, model=1),
      sharding='replicated',     # a rule table of jaxrestore.train.sharding.RULES, or a list of pairs
      checkpoint=dict(every=1000, keep=3, async_save=True),
      log_every=50,
      eval=dict(every=0, dataset=None, task=None, noise_level=None, jpeg_quality=None, max_images=None,
                use_ema=True),
      export=dict(which='ema', dir=None),   # converted dir for jaxrestore.load; None: workdir/export
      tensorboard=True,          # if tensorboardX is importable
      distributed=dict(coordinator=None, num_processes=None, process_id=None),
  )


def swinir_recipe(c: ConfigDict, patch_size: int = 128) -> ConfigDict:
  """SwinIR's published training recipe (its KAIR options files): Adam 2e-4 (betas 0.9/0.99), lr
  halved at 250k/400k/450k/475k of 500k steps, batch 8 per GPU, Charbonnier loss, EMA 0.999."""
  c.data.patch_size = patch_size
  c.data.batch_size = None
  c.data.batch_size_per_device = 8
  c.loss = dict(charbonnier=dict(weight=1.0, eps=1e-9))
  c.optimizer = dict(name='adam', lr=2e-4, b1=0.9, b2=0.99, eps=1e-8, weight_decay=0.0, clip_norm=None)
  c.total_steps = 500_000
  c.schedule = dict(kind='multistep', milestones=[250_000, 400_000, 450_000, 475_000], gamma=0.5, warmup_steps=0)
  c.ema_decay = 0.999
  c.checkpoint = dict(every=5_000, keep=3, async_save=True)
  c.log_every = 100
  return c
