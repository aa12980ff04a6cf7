"""Orbax checkpoints of a run: ``<workdir>/checkpoints/<step>``, written by every process.

A checkpoint holds the train state; with the grain pipeline (an ``InputFeed`` whose
``grain`` is set) it is a composite of the train state (item ``state``) and every
process's grain iterator state (item ``input``), saved and restored together.
:func:`restore_newest` falls back to older checkpoints when the newest does not restore.
"""

from __future__ import annotations

import os

import orbax.checkpoint as ocp

from lagrangian_jax import errors
from lagrangian_jax import reporting


def manager(workdir: str, config) -> ocp.CheckpointManager:
  """The run's checkpoint manager: ``config.keep_checkpoints`` kept, saved synchronously."""
  options = ocp.CheckpointManagerOptions(
    max_to_keep=config.keep_checkpoints, enable_async_checkpointing=False
  )
  return ocp.CheckpointManager(
    os.path.join(os.path.abspath(workdir), "checkpoints"), options=options
  )


def _grain_iterator(feed):
  """The grain iterator whose state a checkpoint holds beside the train state, or None."""
  if feed is None or feed.grain is None:
    return None
  return feed.grain.iterator


def save(ckpt: ocp.CheckpointManager, step: int, state, feed=None) -> None:
  """Saves ``state`` (and the ``feed``'s grain iterator state, if any) as ``step``."""
  iterator = _grain_iterator(feed)
  if iterator is None:
    ckpt.save(step, args=ocp.args.StandardSave(state))
    return
  import grain.python as grain

  ckpt.save(
    step,
    args=ocp.args.Composite(
      state=ocp.args.StandardSave(state), input=grain.PyGrainCheckpointSave(iterator)
    ),
  )


def _restore(ckpt: ocp.CheckpointManager, step: int, target, feed=None):
  iterator = _grain_iterator(feed)
  if iterator is None:
    return ckpt.restore(step, args=ocp.args.StandardRestore(target))
  import grain.python as grain

  restored = ckpt.restore(
    step,
    args=ocp.args.Composite(
      state=ocp.args.StandardRestore(target), input=grain.PyGrainCheckpointRestore(iterator)
    ),
  )
  return restored.state


def restore_newest(ckpt: ocp.CheckpointManager, state, workdir: str, feed=None):
  """``(state, step)`` from the newest checkpoint that restores, or ``(state, None)``.

  A newest checkpoint that is corrupt or half-written (a run killed while saving) is
  reported in one line naming its step, and the next older one is tried: a failed run
  never loses its last good checkpoint. If none restores, the checkpoints were written
  by another config: a ``TrainingError`` says so. With a ``feed`` its part of the
  checkpoint (the grain iterator's state) is restored too.
  """
  where = os.path.join(workdir, "checkpoints")
  steps = sorted(ckpt.all_steps(), reverse=True)
  first_error = None
  for step in steps:
    try:
      return _restore(ckpt, step, state, feed), step
    except Exception as e:  # noqa: BLE001 (orbax raises many types for unreadable data)
      reason = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
      first_error = first_error or reason
      reporting.say(
        f"warning: the checkpoint at step {step} in {where} does not restore "
        f"({reason}); trying an older one"
      )
  if steps:
    raise errors.TrainingError(
      f"no checkpoint in {where} restores: the newest (step {steps[0]}) does not match this "
      f"config ({first_error}); resume with the config that wrote it, or use a new --workdir"
    )
  return state, None
