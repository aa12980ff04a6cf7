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
from lagrangian_jax import paths
from lagrangian_jax import reporting


def manager(workdir: str, config) -> ocp.CheckpointManager:
  """The run's checkpoint manager: ``config.keep_checkpoints`` kept, saved synchronously."""
  options = ocp.CheckpointManagerOptions(
    max_to_keep=config.keep_checkpoints, enable_async_checkpointing=False
  )
  return ocp.CheckpointManager(paths.resolve(workdir) / "checkpoints", options=options)


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
  import grain

  ckpt.save(
    step,
    args=ocp.args.Composite(
      state=ocp.args.StandardSave(state), input=grain.checkpoint.CheckpointSave(iterator)
    ),
  )


def _restore(ckpt: ocp.CheckpointManager, step: int, target, feed=None):
  iterator = _grain_iterator(feed)
  if iterator is None:
    return ckpt.restore(step, args=ocp.args.StandardRestore(target))
  import grain

  restored = ckpt.restore(
    step,
    args=ocp.args.Composite(
      state=ocp.args.StandardRestore(target), input=grain.checkpoint.CheckpointRestore(iterator)
    ),
  )
  return restored.state


def _incomplete(ckpt: ocp.CheckpointManager, step: int, feed=None) -> str:
  """Why the folder of ``step`` cannot hold a checkpoint (an item folder missing or empty:
  a kill mid-save, a hand's ``rm``), or ``""``."""
  items = ("default",) if _grain_iterator(feed) is None else ("state", "input")
  for item in items:
    path = ckpt.directory / str(step) / item
    if not path.is_dir():
      return f"its {item}/ is missing"
    if not any(path.iterdir()):
      return f"its {item}/ is empty"
  return ""


def _remove_newer(ckpt: ocp.CheckpointManager, step: int, where: str) -> None:
  """Deletes the unusable checkpoints past ``step``, the one restored: orbax silently
  skips saving a step at or below its newest, so they would never be written again."""
  newer = [s for s in ckpt.all_steps() if s > step]
  for s in newer:
    ckpt.delete(s)
  if newer:
    reporting.say(
      f"removed the unusable checkpoint(s) at step {', '.join(map(str, sorted(newer)))} in "
      f"{where}, to be saved again as the run passes them"
    )


def restore_newest(ckpt: ocp.CheckpointManager, state, workdir: str, feed=None):
  """``(state, step)`` from the newest checkpoint that restores, or ``(state, None)``.

  A newest checkpoint that is incomplete (an item folder missing or empty), corrupt or
  half-written (a run killed while saving) is reported in one line naming its step, and
  the next older one is tried: a failed run never loses its last good checkpoint. An
  incomplete one is skipped without asking orbax to read it (a step folder without its
  item makes orbax's manager misread every older step). Once an older one restores, the
  unusable newer ones are deleted (:func:`_remove_newer`). If none restores, the checkpoints
  were written by another config: a ``TrainingError`` says so. With a ``feed`` its part
  of the checkpoint (the grain iterator's state) is restored too.
  """
  where = os.path.join(workdir, "checkpoints")
  steps = sorted(ckpt.all_steps(), reverse=True)
  tried, first_error = [], None
  for step in steps:
    why = _incomplete(ckpt, step, feed)
    if why:
      reporting.say(
        f"warning: the checkpoint at step {step} in {where} is incomplete ({why}); "
        "trying an older one"
      )
      continue
    tried.append(step)
    try:
      restored = _restore(ckpt, step, state, feed)
    except Exception as e:  # noqa: BLE001 (orbax raises many types for unreadable data)
      reason = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
      first_error = first_error or reason
      reporting.say(
        f"warning: the checkpoint at step {step} in {where} does not restore "
        f"({reason}); trying an older one"
      )
      continue
    _remove_newer(ckpt, step, where)
    return restored, step
  if tried:
    raise errors.TrainingError(
      f"no checkpoint in {where} restores: the newest complete one (step {tried[0]}) does "
      f"not match this config ({first_error}); resume with the config that wrote it, or "
      "use a new --workdir"
    )
  if steps:
    raise errors.TrainingError(
      f"every checkpoint in {where} is incomplete (steps "
      f"{', '.join(map(str, steps))}); nothing to resume from: move that folder aside to "
      "train from the start"
    )
  return state, None
