"""Checkpoints of a training run with orbax's CheckpointManager.

One checkpoint per saved step, three items: `state` (params, optimizer state, EMA, step, RNG; saved
asynchronously from the sharded arrays), `data` (the grain iterator state, one file per process)
and `meta` (JSON: step, config, an integrity fingerprint of `state`, elapsed training time).
Keep-N retention is orbax's `max_to_keep`.

Restoring walks back from the latest step. A checkpoint that cannot be read, or whose restored
state does not reproduce its fingerprint (a bit flip or truncated array file that happens to
decode), is renamed to `<step>.corrupt-<time>` -- kept for inspection, never deleted -- with a
warning, and the previous checkpoint is tried: never a crash, never silently wrong weights.
A save killed midway leaves only an orbax temporary folder, which is not a checkpoint and is
cleaned up on the next start.
"""
from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp


class CheckpointFallbackWarning(UserWarning):
  pass


def fingerprint_fn():
  """A jitted function: state -> per-leaf uint32 sums of the raw bits (exact, order-independent)."""

  def leaf_sum(x):
    x = jnp.asarray(x)
    if x.dtype.itemsize != 4:
      x = x.astype(jnp.float32) if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(jnp.uint32)
    bits = jax.lax.bitcast_convert_type(x, jnp.uint32)
    return jnp.sum(bits, dtype=jnp.uint32)

  return jax.jit(lambda tree: [leaf_sum(x) for x in jax.tree.leaves(tree)])


class Checkpointer:
  def __init__(self, directory, *, keep: int = 3, async_save: bool = True):
    import orbax.checkpoint as ocp
    self.ocp = ocp
    self.directory = Path(directory).absolute()
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=async_save,
                                           create=True, cleanup_tmp_directories=True)
    self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=('state', 'data', 'meta'))
    self._fingerprint = fingerprint_fn()

  def all_steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def fingerprint(self, state) -> list[int]:
    return [int(v) for v in jax.device_get(self._fingerprint(state))]

  def save(self, step: int, state, iterator, meta: dict[str, Any]) -> None:
    import grain
    meta = dict(meta, step=int(step), fingerprint=self.fingerprint(state))
    args = self.ocp.args.Composite(state=self.ocp.args.StandardSave(state),
                                   data=grain.checkpoint.CheckpointSave(iterator),
                                   meta=self.ocp.args.JsonSave(meta))
    self.manager.save(int(step), args=args, force=True)

  def restore(self, abstract_state, iterator=None) -> tuple[Any, dict] | None:
    """(state, meta) of the latest good checkpoint, or None if there is none. With `iterator`,
    its position is restored too (see `restore_iterator`)."""
    for step in sorted(self.manager.all_steps(), reverse=True):
      try:
        restored = self.manager.restore(step, args=self.ocp.args.Composite(
            state=self.ocp.args.StandardRestore(abstract_state), meta=self.ocp.args.JsonRestore()))
        state, meta = restored['state'], dict(restored['meta'])
        if int(meta.get('step', -1)) != step or int(jax.device_get(state['step'])) != step:
          raise ValueError(f'step mismatch: directory {step}, meta {meta.get("step")}, '
                           f'state {int(jax.device_get(state["step"]))}')
        if self.fingerprint(state) != list(meta.get('fingerprint', [])):
          raise ValueError('restored arrays do not match the fingerprint saved with them')
      except Exception as e:  # noqa: BLE001 -- any failure to read means: try the previous one
        self._set_aside(step, e)
        continue
      if iterator is not None:
        self.restore_iterator(step, iterator)
      return state, meta
    return None

  def restore_iterator(self, step: int, iterator) -> None:
    """The grain iterator state saved with `step`. If this process has none (the run was saved by a
    different number of processes) the iterator is repositioned to `step` instead: the pipeline's
    batches are a function of (seed, step), so that is the same position."""
    import grain
    try:
      self.manager.restore(step, args=self.ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(iterator)))
      position = iterator.get_state().get('next_index', step)
      if position == step:
        return
      reason = f'it holds position {position}'
    except Exception as e:  # noqa: BLE001
      reason = f'{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ""}'
    state = iterator.get_state()
    if 'next_index' not in state:
      raise RuntimeError(f'cannot restore the data iterator of checkpoint {step} ({reason})')
    warnings.warn(f'data iterator state of checkpoint {step} not used ({reason}); repositioned to step {step}',
                  CheckpointFallbackWarning, stacklevel=2)
    iterator.set_state(dict(state, next_index=step))

  def _set_aside(self, step: int, error: Exception) -> None:
    from jax.experimental import multihost_utils
    target = self.directory / f'{step}.corrupt-{time.strftime("%Y%m%d-%H%M%S")}'
    message = str(error).strip().splitlines()
    warnings.warn(f'checkpoint {self.directory / str(step)} is unusable ({type(error).__name__}: '
                  f'{message[0] if message else ""}); moved to {target.name} and falling back to the '
                  f'previous checkpoint', CheckpointFallbackWarning, stacklevel=3)
    if jax.process_index() == 0:
      (self.directory / str(step)).rename(target)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f'jaxrestore_set_aside_{step}')
    self.manager.reload()

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


__all__ = ['Checkpointer', 'CheckpointFallbackWarning', 'fingerprint_fn']
