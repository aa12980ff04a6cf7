"""Orbax checkpoints of a run: ``<workdir>/checkpoints/<step>``, written by every process.

A checkpoint holds the train state; with the grain pipeline (an ``InputFeed`` whose
``grain`` is set) it is a composite of the train state (item ``state``) and every
process's grain iterator state (item ``input``), saved and restored together.
:func:`restore_newest` falls back to older checkpoints when the newest does not restore;
with several processes they agree on the step (the newest that restores on every one).

Saving is asynchronous: :func:`save` returns once the arrays are copied to host memory,
and orbax writes them in a background thread while training goes on. Whatever needs the
save done (a restore, a delete, the end of a run, a divergence or preemption exit)
calls ``ckpt.wait_until_finished()``, which also raises a failed save's error. A save
is written to a temporary folder and renamed when complete, and the checkpoints past
``keep_checkpoints`` are deleted only after that: a failed save never costs the last
good checkpoint.
"""

from __future__ import annotations

import os
import sys
import time

import jax
from jax.experimental import multihost_utils
import numpy as np
import orbax.checkpoint as ocp

from lagrangian_jax import errors
from lagrangian_jax import paths
from lagrangian_jax import reporting


def manager(workdir: str, config) -> ocp.CheckpointManager:
  """The run's checkpoint manager: ``config.keep_checkpoints`` kept, saved asynchronously."""
  options = ocp.CheckpointManagerOptions(
    max_to_keep=config.keep_checkpoints, enable_async_checkpointing=True
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


READ_TRIES = 3  # a read failing with an OSError (a store's transient error) is tried again
READ_BACKOFF_S = 0.5  # seconds before the second try, doubled before each later one


# Test-only hook: "P:S" makes process P's reads of step S fail with an OSError (a checkpoint
# unreadable on one process only, tests/test_preemption.py); unset in every real run.
UNREADABLE_ENV = "LAGRANGIAN_JAX_TEST_UNREADABLE"


def _restore(ckpt: ocp.CheckpointManager, step: int, target, feed=None):
  if os.environ.get(UNREADABLE_ENV) == f"{jax.process_index()}:{step}":
    raise OSError(f"{UNREADABLE_ENV} makes step {step} unreadable here")
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


def _read(ckpt: ocp.CheckpointManager, step: int, target, feed=None):
  """:func:`_restore`, a read that fails with an ``OSError`` tried up to :data:`READ_TRIES`
  times (waiting :data:`READ_BACKOFF_S`, then twice that, ...) before it counts."""
  for attempt in range(READ_TRIES - 1):
    try:
      return _restore(ckpt, step, target, feed)
    except OSError:
      time.sleep(READ_BACKOFF_S * 2**attempt)
  return _restore(ckpt, step, target, feed)


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


def _reader(ckpt: ocp.CheckpointManager) -> ocp.CheckpointManager:
  """The manager to read with: ``ckpt`` in one process; with several, one over this
  process alone. Orbax's restore ends in a barrier over every process, which a process
  whose read failed never reaches (a hang): each process reads alone, then they agree."""
  if jax.process_count() == 1:
    return ckpt
  me = jax.process_index()
  alone = ocp.options.MultiprocessingOptions(
    primary_host=me, active_processes={me}, barrier_sync_key_prefix=f"read{me}"
  )
  # create=False rather than read_only=True: the same, without orbax's warning lines
  options = ocp.CheckpointManagerOptions(create=False, multiprocessing_options=alone)
  return ocp.CheckpointManager(ckpt.directory, options=options)


def _gather(values) -> np.ndarray:
  """Every process's ``values`` (int32), one row per process."""
  row = np.asarray(values, np.int32).reshape(1, -1)
  if jax.process_count() == 1:
    return row
  return np.asarray(multihost_utils.process_allgather(row, tiled=True))


INCOMPLETE, UNREADABLE = 1, 2  # a process's verdict on a step; 0: it restored


def _try(ckpt, reader, step: int, target, feed) -> tuple:
  """``(restored or None, verdict, why)`` of ``step`` on this process."""
  why = _incomplete(ckpt, step, feed)
  if why:
    return None, INCOMPLETE, why
  try:
    return _read(reader, step, target, feed), 0, ""
  except Exception as e:  # noqa: BLE001 (orbax raises many types for unreadable data)
    return None, UNREADABLE, f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"


def _warn(step: int, where: str, verdicts: np.ndarray, why: str) -> None:
  """One warning line for a step some process cannot use: from that process (naming its
  reason) and from process 0; one process: the line names only the step."""
  me = jax.process_index()
  verdict = verdicts[me]
  own = "is incomplete" if verdict == INCOMPLETE else "does not restore"
  if len(verdicts) == 1:
    line = f"the checkpoint at step {step} in {where} {own} ({why})"
  elif verdict:
    line = f"the checkpoint at step {step} in {where} {own} on process {me} ({why})"
  elif me == 0:
    bad = ", ".join(map(str, np.flatnonzero(verdicts)))
    line = f"the checkpoint at step {step} in {where} does not restore on process(es) {bad}"
  else:
    return
  print(f"warning: {line}; trying an older one", file=sys.stderr, flush=True)


def restore_newest(ckpt: ocp.CheckpointManager, state, workdir: str, feed=None):
  """``(state, step)`` from the newest checkpoint that restores, or ``(state, None)``.

  A newest checkpoint that is incomplete (an item folder missing or empty), corrupt or
  half-written (a run killed while saving) is reported in one line naming its step, and
  the next older one is tried: a failed run never loses its last good checkpoint. An
  incomplete one is skipped without asking orbax to read it (a step folder without its
  item makes orbax's manager misread every older step). A read failing with an
  ``OSError`` is tried :data:`READ_TRIES` times before the step counts as unreadable.
  Once an older one restores, the unusable newer ones are deleted (:func:`_remove_newer`).
  If none restores, the checkpoints were written by another config: a ``TrainingError``
  says so. With a ``feed`` its part of the checkpoint (the grain iterator's state) is
  restored too.

  Several processes: each tries the step on its own, then they compare verdicts
  (``process_allgather``) and all take it only if it restored on every one, or all move
  to the next older step together: every process resumes from the same step.
  """
  where = os.path.join(workdir, "checkpoints")
  ckpt.wait_until_finished()  # a save of this process still being written
  steps = sorted(ckpt.all_steps(), reverse=True)
  seen = _gather([len(steps), steps[0] if steps else -1])
  if (seen != seen[0]).any():
    raise errors.TrainingError(
      f"the processes see different checkpoints in {where} (count, newest step by "
      f"process: {seen.tolist()}); every process needs the same (shared) workdir"
    )
  reader = _reader(ckpt) if steps else ckpt
  tried, first_error = [], None
  try:
    for step in steps:
      restored, verdict, why = _try(ckpt, reader, step, state, feed)
      verdicts = _gather([verdict])[:, 0]
      if not verdicts.any():
        _remove_newer(ckpt, step, where)
        return restored, step
      _warn(step, where, verdicts, why)
      if not (verdicts == INCOMPLETE).any():
        tried.append(step)
        first_error = (
          first_error or why or f"unreadable on process(es) {np.flatnonzero(verdicts).tolist()}"
        )
  finally:
    if reader is not ckpt:
      reader.close()
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
