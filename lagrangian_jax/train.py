"""``train_and_evaluate(config, workdir)``: the training loop.

``state.build_experiment`` assembles the run (data, network, method, optimizer, the
state sharded on the mesh, one jitted step); the loop feeds the step batches
(``data/feed.py``) and, each when :func:`is_time`, logs the training metrics, runs the
evaluators (``evaluators.py``) and saves a checkpoint (``checkpoints.py``). It writes
``metrics.jsonl``, ``summary.json`` and PNG plots to ``workdir``; it knows neither a
method's maths nor a solver's.

Resuming: running the same command again restores the newest checkpoint in ``workdir``.
Batches are a pure function of ``(seed, step)`` and DistProp's noise of ``(seed, step)``
or fixed at initialisation, so the run continues exactly as if it had never stopped
(with the grain pipeline the checkpoint also holds each process's iterator state).

Rerunning a finished run (its checkpoint at ``num_steps`` and its ``summary.json``)
prints that it is finished with its summary line and returns that summary, training and
writing nothing; a run whose training finished but whose summary was not written
evaluates its last checkpoint and writes the summary. A run stops as diverged (the last
good checkpoint kept) at a non-finite metric or a ``|loss|`` / ``|objective|`` above
``config.divergence_threshold``, checked when the training metrics are logged.

Preemption (``preemption.py``): at SIGTERM (on any process of a multi-process run) the
loop saves the step it reached (the same step on every process), waits for the save and
raises ``preemption.Preempted``; the launcher prints ``preempted at step N: checkpoint
saved in DIR; rerun the same command to resume`` and exits with status 75
(``preemption.EXIT_STATUS``, EX_TEMPFAIL): 0 is a finished run, 1 a failure. Checkpoints
are saved asynchronously (``checkpoints.py``); every exit waits for the last save.

Several processes (hosts): every array is global and each process reads only its own
devices' rows; every process writes and reads the checkpoints, process 0 alone the other
files. Metrics and the summary give the mean over seeds and, under ``"seeds"``, each
seed's figure.
"""

from __future__ import annotations

import os
import time

import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import numpy as np

from lagrangian_jax import checkpoints
from lagrangian_jax import errors
from lagrangian_jax import evaluators
from lagrangian_jax import identity
from lagrangian_jax import paths
from lagrangian_jax import preemption
from lagrangian_jax import reporting
from lagrangian_jax import state as state_lib
from lagrangian_jax import throughput
from lagrangian_jax.data import feed as feed_lib


def is_time(done: int, every: int, total: int) -> bool:
  """Whether, ``done`` steps into a run of ``total``, it is time for a thing done every
  ``every`` steps: at each multiple of ``every``, and at the end.

  >>> [d for d in range(1, 8) if is_time(d, 3, 7)]
  [3, 6, 7]
  """
  return done % every == 0 or done == total


@jax.jit
def _all_finite(tree) -> jax.Array:
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def _seed_means(metrics: dict) -> dict:
  """Means over the seed axis as plain floats; vector metrics become ``key_i``."""
  out = {}
  for k, v in metrics.items():
    v = np.mean(np.asarray(v, np.float64), axis=0)
    if v.ndim == 0:
      out[k] = float(v)
    else:
      out.update({f"{k}_{i}": float(x) for i, x in enumerate(v.reshape(-1))})
  return out


def _diverged(done: int, what: str, last_good: int, workdir: str) -> errors.TrainingError:
  """``last_good``: the step of the newest checkpoint saved or restored, 0 for none."""
  kept = (
    f"the last good checkpoint (step {last_good}) is kept in {os.path.join(workdir, 'checkpoints')}"
    if last_good
    else "no checkpoint was saved before it"
  )
  return errors.TrainingError(f"training diverged at step {done}: {what}; {kept}")


def divergence(metrics: dict, threshold: float) -> str:
  """What makes a step's host ``metrics`` (one value per seed) a divergence, or ``""``:
  a non-finite metric, or ``|loss|`` or ``|objective|`` of a seed above ``threshold``
  (``config.divergence_threshold``; 0 turns that check off).

  >>> divergence({"loss": [0.3, 2.0]}, 1e10)
  ''
  >>> divergence({"loss": [0.3, 1e29], "objective": [float("nan")] * 2}, 1e10)
  'non-finite objective'
  >>> divergence({"loss": [0.3, 1e29]}, 1e10)
  '|loss| = 1e+29 > config.divergence_threshold=1e+10'
  """
  bad = [k for k, v in metrics.items() if not np.all(np.isfinite(np.asarray(v)))]
  if bad:
    return f"non-finite {', '.join(bad)}"
  if threshold > 0:
    peaks = {
      k: np.max(np.abs(np.asarray(metrics[k]))) for k in ("loss", "objective") if k in metrics
    }
    over = [f"|{k}| = {v:.3g}" for k, v in peaks.items() if v > threshold]
    if over:
      return f"{', '.join(over)} > config.divergence_threshold={threshold:g}"
  return ""


def _prepare_workdir(workdir: str) -> None:
  """Creates ``workdir`` and checks that this process can write there, before any work:
  a one-line ``ConfigError`` instead of a traceback at the first save."""
  if paths.exists(workdir) and not paths.isdir(workdir):
    raise errors.ConfigError(f"--workdir={workdir}: is a file, not a directory")
  try:
    paths.makedirs(workdir)
    paths.probe_write(workdir)
  except Exception as e:
    # a store's client raises its own types (gcsfs, s3fs): any of them is "cannot write"
    if not (isinstance(e, OSError) or paths.is_remote(workdir)):
      raise
    why = getattr(e, "strerror", None) or (str(e).splitlines() or [type(e).__name__])[0]
    raise errors.ConfigError(f"--workdir={workdir}: cannot write there ({why})") from None


def _restore_or_start(config, workdir: str, ckpt, exp, feed) -> tuple:
  """``(state, first step)``: the newest checkpoint's, or the fresh state's at 0. The
  metrics past a restored checkpoint (or all of an old run's) are dropped; a resume under
  another identity (``identity.py``) is refused; the start is recorded in ``run.json``
  (and a fresh start's config in ``config.json``)."""
  identity.claim(workdir, "run", write=False)  # never into a report's folder
  if ckpt.all_steps():
    identity.check_same_run(workdir, config)
  state, start = checkpoints.restore_newest(ckpt, exp.initial_state, workdir, feed)
  if start is not None and start > config.num_steps:
    raise errors.TrainingError(
      f"{workdir} holds a checkpoint at step {start}, past config.num_steps="
      f"{config.num_steps}; use a new --workdir or more steps"
    )
  metrics_path = os.path.join(workdir, "metrics.jsonl")
  chief = jax.process_index() == 0  # the one process that writes files
  if start is not None:
    reporting.say(f"resuming from the checkpoint at step {start} in {workdir}")
    if chief:
      reporting.truncate_metrics(metrics_path, start)
  else:
    start = 0
    if chief:
      paths.remove(metrics_path)
  if chief:
    identity.write_start(workdir, config, start)
  return state, start


def _record_eval(evals: list, writer, state, step: int) -> dict:
  record = evaluators.evaluation_record(evals, state, step)
  writer.write(record)
  return record


def _train(exp, state, start: int, feed, ckpt, evals: list, writer, workdir: str, watch):
  """Steps ``start .. num_steps``: ``(state, last eval record or None, seconds training,
  seconds of the first step)``. Train records carry ``throughput.Meter``'s figures. At a
  preemption notice (``watch``, a ``preemption.Watch``) the step reached is saved, the
  save waited for, and ``preemption.Preempted`` raised."""
  config, total = exp.config, exp.config.num_steps
  bar = reporting.progress(total, start, enabled=config.progress_bar and jax.process_index() == 0)
  last_eval, record = None, {}
  train_seconds, first_seconds, last_good = 0.0, 0.0, start
  meter = throughput.Meter(config.batch_size * len(exp.seeds), None)  # FLOPs: once compiled
  profiler = throughput.Profiler(config.profile_steps, workdir)
  try:
    for step in range(start, total):
      done = step + 1
      profiler.before(done)
      t0 = time.time()
      batch = feed.batch(step)
      state, metrics = exp.train_step(state, batch)
      if step == start:  # the first step compiles: keep it out of the per-step figure
        jax.block_until_ready(state)
        first_seconds = time.time() - t0
      save_now = is_time(done, config.checkpoint_every, total)
      logged = save_now or is_time(done, config.log_every, total)
      # without a sync (not logged), dispatch only: the next sync pays the rest
      host = jax.device_get(metrics) if logged else None
      elapsed = time.time() - t0
      train_seconds += elapsed
      meter.add(elapsed, compiling=step == start)
      if step == start:
        meter.flops_per_step = throughput.step_flops(exp.train_step, state, batch, exp.mesh.size)
      profiler.after(done, state)
      if logged:
        why = divergence(host, config.divergence_threshold)
        if why:
          raise _diverged(done, why, last_good, workdir)
        record = {"step": done, "kind": "train", **_seed_means(host), "seconds": train_seconds}
        writer.write({**record, **meter.record()})
        bar.set_postfix(reporting.postfix(record, last_eval))
      if is_time(done, config.eval_every, total):
        last_eval = _record_eval(evals, writer, state, done)
        bar.set_postfix(reporting.postfix(record, last_eval))
      preempted = watch.reached(done, ckpt)  # every process, every step: the same answer
      if save_now or preempted:
        if not bool(_all_finite(state.params)):  # the metrics were taken before the update
          raise _diverged(done, "non-finite parameters", last_good, workdir)
        checkpoints.save(ckpt, done, state, feed)
        last_good = done
      if preempted:
        ckpt.wait_until_finished()
        raise preemption.Preempted(done, os.path.join(workdir, "checkpoints"))
      bar.update(1)
  finally:
    profiler.close()
    bar.close()
  return state, last_eval, train_seconds, first_seconds


def train_and_evaluate(config, workdir: str) -> dict:
  """Trains ``config.method``, evaluates, checkpoints; returns the summary dict.

  Running the same command again resumes from the last checkpoint in ``workdir``.
  """
  t_start = time.time()
  state_lib.check_loop_config(config)  # a refused config leaves no workdir behind
  _prepare_workdir(workdir)
  exp = state_lib.build_experiment(config)
  config = exp.config  # batch_size: the global batch (sharding.with_global_batch)
  evals = evaluators.from_config(exp)
  ckpt = checkpoints.manager(workdir, config)
  feed = feed_lib.InputFeed(exp)
  state, start = _restore_or_start(config, workdir, ckpt, exp, feed)
  chief, total = jax.process_index() == 0, config.num_steps
  finished = _finished_summary(workdir, total) if start == total > 0 else None
  if finished is not None:
    feed.close()
    reporting.say(
      f"the run in {workdir} is finished (step {total}); nothing trained or written: "
      f"{summary_line(finished)}"
    )
    return finished
  metrics_path = os.path.join(workdir, "metrics.jsonl")
  writer = reporting.MetricsWriter(metrics_path, enabled=chief)
  try:
    with preemption.Watch() as watch:
      state, last_eval, train_seconds, first_seconds = _train(
        exp, state, start, feed, ckpt, evals, writer, workdir, watch
      )
    if last_eval is None or last_eval["step"] != total:  # nothing was left to train
      last_eval = evaluators.evaluation_record(evals, state, total)
      if not _has_eval(metrics_path, total):  # a rerun after the summary was lost has it
        writer.write(last_eval)
  finally:
    feed.close()
    ckpt.wait_until_finished()  # the last save (asynchronous) is done before any exit
    writer.close()
  steps_run = total - start
  timing = {
    # all seeds at once, compilation excluded (None when nothing was left to train)
    "ms_per_iteration": (
      1e3 * (train_seconds - first_seconds) / (steps_run - 1) if steps_run > 1 else None
    ),
    "seconds": time.time() - t_start,
    "resumed_from": int(start),
  }
  summary = _summary(exp, last_eval, timing)
  if chief:
    paths.write_json(os.path.join(workdir, "summary.json"), summary)
    reporting.plot_metrics(os.path.join(workdir, "metrics.jsonl"), workdir)
  return summary


def _has_eval(metrics_path: str, step: int) -> bool:
  return any(
    r.get("kind") == "eval" and r["step"] == step for r in reporting.read_metrics(metrics_path)
  )


def _finished_summary(workdir: str, total: int) -> dict | None:
  """The ``summary.json`` of a run whose checkpoint is at its last step ``total``, or None
  when it is missing or not that run's (a summary never written: the rerun evaluates and
  writes it). Every process takes process 0's answer, so all of them evaluate or none."""
  path = os.path.join(workdir, "summary.json")
  summary = None
  try:
    summary = paths.read_json(path)
  except (OSError, ValueError):
    pass
  ok = isinstance(summary, dict) and summary.get("steps") == total
  if jax.process_count() > 1:
    ok = bool(multihost_utils.broadcast_one_to_all(np.int32(ok)))
    if ok and summary is None:
      raise errors.TrainingError(f"process {jax.process_index()} cannot read {path}")
  return summary if ok else None


def _summary(exp: state_lib.Experiment, last_eval: dict, timing: dict) -> dict:
  """``summary.json``: the run's last evaluation (means, per-seed spread) and timing."""
  per_seed = last_eval["seeds"]
  summary = {
    "method": exp.config.method,
    "solver": exp.solver,
    "dataset": exp.dataset.name,
    "steps": int(exp.config.num_steps),
    "num_seeds": len(exp.seeds),
    "test_accuracy": last_eval["test_accuracy"],
    "test_accuracy_std": float(np.std(per_seed["test_accuracy"])),
    "validation_accuracy": last_eval["validation_accuracy"],
    "validation_accuracy_std": float(np.std(per_seed["validation_accuracy"])),
    "test_loss": last_eval["test_loss"],
    "final_defect": last_eval["mean_defect"],
    "defects": [last_eval[k] for k in sorted(last_eval) if k.startswith("defect_")],
    **timing,
    "seeds": {"seed": list(exp.seeds), **per_seed},
  }
  for key in ("test_top5_accuracy", "split_diagnostics"):
    if key in last_eval:
      summary[key] = last_eval[key]
  return summary


def summary_line(summary: dict) -> str:
  """One line a script can parse: ``SUMMARY key=value ...``."""
  return (
    "SUMMARY method={method} solver={solver} dataset={dataset} steps={steps} "
    "seeds={num_seeds} test_accuracy={test_accuracy:.4f} "
    "test_accuracy_std={test_accuracy_std:.4f} final_defect={final_defect:.6g} "
    "seconds={seconds:.1f}"
  ).format(**summary)
