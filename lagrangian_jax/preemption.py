"""Preemption: SIGTERM makes the loop save the current step and end the run cleanly.

A scheduler (a TPU pod's maintenance, Kubernetes, SLURM's ``--signal``) sends SIGTERM some
time before it kills a job. :class:`Watch` tells the loop, at each step, whether to stop:

* one process: a Python handler for SIGTERM sets a flag, read at the next step;
* several processes: JAX's preemption notifier (started by ``jax.distributed.initialize``)
  takes SIGTERM on whichever process receives it and spreads the notice; its sync
  protocol picks the step after the furthest one any process reached, and orbax's
  ``CheckpointManager.reached_preemption(step)`` (``multihost_utils.
  reached_preemption_sync_point``) is True at that same step on every process. Every
  process must ask at every step, from the same first step (the loop does).

The loop then saves that step, waits for the save and raises :class:`Preempted`; the
launcher prints one line and exits with :data:`EXIT_STATUS`, which a job script tells
from success (0) and failure (1): rerunning the same command resumes.

>>> with Watch() as watch:
...   watch.reached(1, ckpt=None)
False
"""

from __future__ import annotations

import signal
import threading

import jax

EXIT_STATUS = 75  # EX_TEMPFAIL (sysexits.h): a temporary failure, rerun to continue


class Preempted(Exception):  # noqa: N818 (not an error: the run stopped on request)
  """The run saved ``step`` in ``directory`` on a preemption notice and stopped."""

  def __init__(self, step: int, directory: str):
    self.step, self.directory = step, directory
    super().__init__(
      f"preempted at step {step}: checkpoint saved in {directory}; rerun the same command to resume"
    )


class Watch:
  """A context that watches for a preemption notice; :meth:`reached` asks at each step.

  One process in the main thread: SIGTERM's handler is replaced while the context is
  open (the previous one comes back on exit). Several processes: JAX's notifier owns
  SIGTERM, so no handler is installed.
  """

  def __init__(self):
    self._flag = threading.Event()
    self._previous = None

  def __enter__(self) -> Watch:
    if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._on_signal)
    return self

  def __exit__(self, *exc) -> None:
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
      self._previous = None

  def _on_signal(self, signum, frame) -> None:
    del signum, frame
    self._flag.set()

  def reached(self, step: int, ckpt) -> bool:
    """Whether to save ``step`` and stop: the same answer on every process."""
    if jax.process_count() == 1:
      return self._flag.is_set()
    return bool(ckpt.reached_preemption(step))
