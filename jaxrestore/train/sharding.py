"""Device mesh and sharding rules, kept out of model code (big_vision's `sharding.py` style).

The mesh has two named axes, `data` and `model`. How each array of the train state is laid out is
a rule table: (regex, spec) pairs matched in order against the array's path ('params/body/layers/
2/kernel', 'opt_state/0/mu/body/layers/2/kernel', 'ema/...'), so one rule covers a parameter, its
Adam moments and its EMA alike. The first match wins; nothing matched is replicated. A spec is a
`PartitionSpec` or 'fsdp' (shard the largest axis that divides evenly along `data`: ZeRO-3 /
FSDP for models too large to replicate). An axis that does not divide falls back to replication,
so a rule table works for every model and mesh size; `replicated_large` lists what that left
unsplit. Batches are sharded along `data`.

Tensor parallelism is model-specific: 'fsdp_tp' is the model's own table
(`Architecture.sharding_rules`, in its model file: which kernels split heads / MLP width along
`model`) followed by FSDP for everything else.
"""
from __future__ import annotations

import math
import re
from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

AXES = ('data', 'model')

RULES: dict[str, tuple[tuple[str, Any], ...]] = {
    # Small models (DnCNN, SwinIR-S/M): everything replicated, pure data parallelism.
    'replicated': ((r'.*', P()),),
    # Large models: params, optimizer state and EMA split along `data` (FSDP); XLA all-gathers
    # each weight where it is used and reduce-scatters its gradient.
    'fsdp': ((r'.*', 'fsdp'),),
    # The model's tensor-parallel rules (heads / MLP width along `model`), then FSDP.
    'fsdp_tp': ((r'.*', 'fsdp'),),
}


def make_mesh(data: int = -1, model: int = 1, devices: Sequence | None = None) -> jax.sharding.Mesh:
  """A (data, model) mesh over all devices of all processes; -1 = whatever is left over. Explicit
  sizes that cover fewer devices use the first data x model of them."""
  devices = list(devices if devices is not None else jax.devices())
  n = len(devices)
  if data == -1 and model == -1:
    raise ValueError('mesh: at most one of data/model may be -1')
  data = n // model if data == -1 else data
  model = n // data if model == -1 else model
  if data < 1 or model < 1 or data * model > n or (data * model < n and jax.process_count() > 1):
    raise ValueError(f'mesh data={data} x model={model} does not fit the {n} devices')
  return jax.make_mesh((data, model), AXES, axis_types=(AxisType.Auto,) * 2, devices=devices[:data * model])


def path_str(path) -> str:
  parts = []
  for k in path:
    for attr in ('key', 'name', 'idx'):
      if hasattr(k, attr):
        parts.append(str(getattr(k, attr)))
        break
    else:
      parts.append(str(k))
  return '/'.join(parts)


def _resolve(spec, shape: tuple[int, ...], mesh: jax.sharding.Mesh) -> P:
  sizes = dict(mesh.shape)
  if spec == 'fsdp':
    n = sizes['data']
    if n == 1 or not shape:
      return P()
    candidates = [i for i in np.argsort(shape)[::-1] if shape[i] % n == 0]
    if not candidates:
      return P()
    dims = [None] * len(shape)
    dims[int(candidates[0])] = 'data'
    return P(*dims)
  if not isinstance(spec, P):
    spec = P(*spec)
  if len(spec) > len(shape):
    return P()
  dims = []
  for size, axes in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
    names = (axes,) if isinstance(axes, str) else tuple(axes or ())
    ways = math.prod(sizes[a] for a in names)
    dims.append(axes if ways > 1 and size % ways == 0 else None)
  while dims and dims[-1] is None:
    dims.pop()
  return P(*dims)


def rules_for(rules, model_rules=()) -> tuple[tuple[str, Any], ...]:
  """A rule table by name ('replicated', 'fsdp', 'fsdp_tp' = `model_rules` + FSDP) or as given."""
  if isinstance(rules, str):
    if rules not in RULES:
      raise ValueError(f'unknown sharding rules {rules!r}; known: {sorted(RULES)} (or a list of (regex, spec))')
    table = (tuple(model_rules) if rules == 'fsdp_tp' else ()) + RULES[rules]
  else:
    table = tuple(rules)
  return tuple((pattern, spec if isinstance(spec, (P, str)) else P(*spec)) for pattern, spec in table)


def partition_specs(tree, rules, mesh: jax.sharding.Mesh, model_rules=()):
  """A PartitionSpec for every array leaf of `tree` (arrays or ShapeDtypeStructs)."""
  table = [(re.compile(pattern), spec) for pattern, spec in rules_for(rules, model_rules)]

  def one(path, leaf):
    name = path_str(path)
    shape = tuple(getattr(leaf, 'shape', ()))
    for pattern, spec in table:
      if pattern.fullmatch(name):
        return _resolve(spec, shape, mesh)
    return P()

  return jax.tree_util.tree_map_with_path(one, tree)


def shardings(tree, rules, mesh: jax.sharding.Mesh, model_rules=()):
  return jax.tree.map(lambda spec: NamedSharding(mesh, spec), partition_specs(tree, rules, mesh, model_rules),
                      is_leaf=lambda x: isinstance(x, P))


def replicated_large(tree, rules, mesh, model_rules=(), min_size: int = 1 << 16) -> list[str]:
  """'path shape' of every array of at least `min_size` elements the rules leave whole on every
  device (nothing in its spec) although the mesh has more than one device."""
  if math.prod(dict(mesh.shape).values()) == 1:
    return []
  specs = partition_specs(tree, rules, mesh, model_rules)
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  spec_leaves = jax.tree.leaves(specs, is_leaf=lambda x: isinstance(x, P))
  return [f'{path_str(p)} {tuple(x.shape)}' for (p, x), s in zip(leaves, spec_leaves)
          if math.prod(getattr(x, 'shape', ())) >= min_size and not any(a is not None for a in s)]


def batch_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
  return NamedSharding(mesh, P('data'))


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def describe(tree, rules, mesh, model_rules=()) -> list[str]:
  """'path shape spec' lines, for logging how the state is laid out."""
  specs = partition_specs(tree, rules, mesh, model_rules)
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  spec_leaves = jax.tree.leaves(specs, is_leaf=lambda x: isinstance(x, P))
  return [f'{path_str(p)} {tuple(getattr(x, "shape", ()))} {s}' for (p, x), s in zip(leaves, spec_leaves)]
