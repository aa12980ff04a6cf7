"""What a pod user watches: images/s, step time, achieved FLOP/s, a profiler trace.

The train records of ``metrics.jsonl`` carry, over the steps since the previous record
(the first step, which compiles, left out unless it is the only one):

* ``images_per_second``: examples of every seed per second, ``num_seeds x batch_size x
  steps / seconds`` (the global batch: all hosts);
* ``step_ms``: milliseconds per step, all seeds at once;
* ``flops_per_second``: XLA's cost analysis of the compiled step (FLOPs of the per-device
  program, as XLA counts them, times the mesh's devices) over the step time; absent where
  the backend gives no figure.

``config.profile_steps = "start,stop"`` writes a ``jax.profiler`` trace of steps
``start .. stop`` (1-based, both included) to ``<workdir>/profile`` (TensorBoard's
profile plugin, or Perfetto, opens it).

Example:
  >>> meter = Meter(examples_per_step=256, flops_per_step=None)
  >>> meter.add(seconds=0.5, steps=2)
  >>> meter.record()
  {'images_per_second': 1024.0, 'step_ms': 250.0}
  >>> meter.record()  # nothing since: no figures
  {}
"""

from __future__ import annotations

import os

import jax


def step_flops(train_step, state, batch, num_devices: int) -> float | None:
  """FLOPs of one call of the jitted ``train_step`` on ``(state, batch)`` (shapes are
  read; nothing runs) from XLA's cost analysis of its compiled program: the per-device
  figure times ``num_devices``. None where the backend gives none (never an error: the
  figure is for watching, not for training). After the step ran once, the compiled
  program comes from JAX's cache."""
  try:
    cost = train_step.lower(state, batch).compile().cost_analysis()
    if isinstance(cost, (list, tuple)):  # older JAX: one dict per program
      cost = cost[0] if cost else None
    flops = float(cost["flops"])
  except Exception:  # any failure leaves the key out, nothing more
    return None
  return flops * num_devices if flops > 0 else None


class Meter:
  """Seconds and steps since the last :meth:`record`; the figures over them.

  A step that compiled (``add(..., compiling=True)``) counts only when it is the only
  one of its window: then the record says what that step took, compilation included.

  >>> meter = Meter(examples_per_step=100, flops_per_step=2e9)
  >>> meter.add(3.0, compiling=True); meter.add(0.5); meter.add(0.5)
  >>> meter.record()
  {'images_per_second': 200.0, 'step_ms': 500.0, 'flops_per_second': 4000000000.0}
  """

  def __init__(self, examples_per_step: int, flops_per_step: float | None):
    self.examples_per_step, self.flops_per_step = examples_per_step, flops_per_step
    self.seconds, self.steps, self.compiling = 0.0, 0, 0.0

  def add(self, seconds: float, steps: int = 1, compiling: bool = False) -> None:
    if compiling:
      self.compiling = seconds
    else:
      self.seconds += seconds
      self.steps += steps

  def record(self) -> dict:
    """The figures since the last record (``{}`` when nothing ran), and a new window."""
    seconds, steps = (self.seconds, self.steps) if self.steps else (self.compiling, 1)
    self.seconds, self.steps, self.compiling = 0.0, 0, 0.0
    if seconds <= 0:
      return {}
    per_step = seconds / steps
    out = {
      "images_per_second": self.examples_per_step / per_step,
      "step_ms": 1e3 * per_step,
    }
    if self.flops_per_step:
      out["flops_per_second"] = self.flops_per_step / per_step
    return out


def profile_window(value: str) -> tuple[int, int] | None:
  """``config.profile_steps`` (checked by ``config_rules``) as ``(start, stop)``, or None.

  >>> profile_window("2, 5"), profile_window("")
  ((2, 5), None)
  """
  if not value.strip():
    return None
  start, stop = (int(x) for x in value.split(","))
  return start, stop


class Profiler:
  """A ``jax.profiler`` trace of steps ``start .. stop`` (``config.profile_steps``) to
  ``<workdir>/profile``: :meth:`before` each step starts it, :meth:`after` stops it once
  the device finished step ``stop``; :meth:`close` stops one still running (a run that
  ended or failed inside the window). A resumed run traces what is left of the window."""

  def __init__(self, profile_steps: str, workdir: str):
    self.window = profile_window(profile_steps)
    self.folder = os.path.join(workdir, "profile")
    self.active = False

  def before(self, done: int) -> None:
    """Before the step that makes ``done`` steps."""
    if self.window and not self.active and self.window[0] <= done <= self.window[1]:
      jax.profiler.start_trace(self.folder)
      self.active = True

  def after(self, done: int, state) -> None:
    if self.active and done >= self.window[1]:
      self.close(state)

  def close(self, state=None) -> None:
    if self.active:
      if state is not None:
        jax.block_until_ready(state)
      jax.profiler.stop_trace()
      self.active = False
