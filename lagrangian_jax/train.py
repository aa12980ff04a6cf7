"""``train_and_evaluate(config, workdir)``: the loop around one jitted, sharded step.

Data flows one way: config -> data + network + method -> optimizer -> one jitted,
sharded step -> metrics (JSON lines, PNG plots) and orbax checkpoints. This module
knows neither a method's maths nor a solver's: each iteration is one
``solvers.solver_step`` on ``method.objective``, and evaluation reads the iterate that
``solvers.current_iterate`` names. Sparse per-example rows live in ``rows.py``.

Seeds in one program: ``config.num_seeds = N`` trains seeds ``config.seed .. +N-1`` in
one jitted step, ``jax.vmap`` over a leading seed axis of the whole train state (its own
initialisation, noise and batch order per seed; the data split is shared). Every leaf of
the state has that axis, also for ``N = 1``; seed ``k`` of a run equals a run of
``config.seed + k`` alone. Metrics and the summary give the mean over seeds and, under
``"seeds"``, each seed's figure.

Averaged iterates: with ``config.average_decay = d > 0`` evaluation uses an exponential
moving average of the iterate's network weights, ``a <- d a + (1 - d) x_t``, kept in the
train state (the iterate itself still drives training).

Resuming: batches are a pure function of ``(seed, step)`` and DistProp's noise of
``(seed, step)`` or fixed at initialisation, so a run restored from its last checkpoint
continues exactly as if it had never stopped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
import functools
import json
import os
import sys
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp

from lagrangian_jax import data as data_lib
from lagrangian_jax import errors
from lagrangian_jax import methods as methods_lib
from lagrangian_jax import networks
from lagrangian_jax import optimizers
from lagrangian_jax import rows as rows_lib
from lagrangian_jax import solvers
from lagrangian_jax.methods import base

PyTree = Any


class TrainState(NamedTuple):
  """The whole state of a run; every leaf has a leading seed axis."""

  step: jax.Array
  params: PyTree
  opt_state: PyTree
  constants: PyTree
  average: PyTree  # EMA of the iterate's weights ({} when config.average_decay == 0)


def check_loop_config(config) -> None:
  """Checks the keys the loop itself reads; every component checks its own."""
  need = errors.require
  need(config.batch_size > 0, "batch_size", f"must be positive, got {config.batch_size}")
  need(config.num_steps >= 0, "num_steps", f"must be >= 0, got {config.num_steps}")
  for key in (
    "log_every",
    "eval_every",
    "checkpoint_every",
    "eval_batch_size",
    "keep_checkpoints",
    "num_seeds",
  ):
    need(config[key] > 0, key, f"must be positive, got {config[key]}")
  need(
    0 <= config.average_decay < 1,
    "average_decay",
    f"must be in [0, 1), got {config.average_decay}",
  )


# ----------------------------------------------------------------------------------
# The step
# ----------------------------------------------------------------------------------


def make_train_step(method: base.Method, tx, tables: rows_lib.RowTables, average_decay: float):
  """One solver iteration on the batch's rows, for one seed: ``(state, batch) -> ...``."""

  def train_step(state: TrainState, batch: base.Batch):
    params = rows_lib.gather(state.params, tables.params, batch.indices)
    opt_state = rows_lib.gather(state.opt_state, tables.opt_state, batch.indices)

    def grad_fn(p):
      (value, metrics), grads = jax.value_and_grad(method.objective, has_aux=True)(
        p, state.constants, batch
      )
      return grads, {"objective": value, **metrics}

    # metrics are taken at the iterate x_t (the first gradient evaluation)
    params, opt_state, metrics = solvers.solver_step(tx, grad_fn, params, opt_state, has_aux=True)
    average = state.average
    if average_decay > 0:
      weights = solvers.current_iterate(params, opt_state)["primal"]["weights"]
      average = jax.tree.map(
        lambda a, w: average_decay * a + (1 - average_decay) * w, average, weights
      )
    new_state = TrainState(
      step=state.step + 1,
      params=rows_lib.scatter(state.params, params, tables.params, batch.indices),
      opt_state=rows_lib.scatter(state.opt_state, opt_state, tables.opt_state, batch.indices),
      constants=state.constants,
      average=average,
    )
    return new_state, metrics

  return train_step


# ----------------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------------


def batches_of(
  split: data_lib.Split, batch_size: int, limit: int | None = None
) -> Iterator[tuple[np.ndarray, ...]]:
  """``(images, labels, indices)`` of consecutive batches of the first ``limit`` examples.

  The one loop over a split: evaluation, training-set defects and ``map_train`` use it.
  """
  n = len(split.labels) if limit is None else min(limit, len(split.labels))
  for start in range(0, n, batch_size):
    idx = np.arange(start, min(start + batch_size, n))
    yield (*data_lib.get_batch(split, idx), idx)


@jax.jit
def iterate(state: TrainState) -> PyTree:
  """The parameters to evaluate and export (per seed): the solver's iterate ``x_t``."""
  return jax.vmap(solvers.current_iterate)(state.params, state.opt_state)


def eval_weights(state: TrainState) -> PyTree:
  """The network weights evaluation uses: the averaged iterate if kept, else ``x_t``."""
  return state.average if state.average else iterate(state)["primal"]["weights"]


def make_eval_fns(net: networks.SplitNetwork, method: base.Method, tables: rows_lib.RowTables):
  """Per-batch totals for :func:`sum_over`: ``(accuracy_fn, defect_fn, top_k)``.

  ``accuracy_fn(weights, images, labels, indices)`` sums ``[top-1 correct, top-k
  correct, loss, count]`` of the real forward pass ``f_L(...f_0(x))``;
  ``defect_fn(params, constants, images, labels, indices)`` sums ``[count, defect_0 *
  count, ...]``, each split's mean absolute defect on training examples (tables gathered).
  Both map over the leading seed axis of the weights / params: one row per seed.
  """
  top_k = 5 if net.num_classes > 10 else 1

  @jax.jit
  @functools.partial(jax.vmap, in_axes=(0, None, None, None))  # over seeds
  def accuracy_fn(weights, images, labels, indices):
    del indices
    logits = networks.forward(net, weights, images).astype(jnp.float32)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    rank = jnp.sum(logits > jnp.take_along_axis(logits, labels[:, None], -1), -1)
    return jnp.stack(
      [
        jnp.sum(jnp.argmax(logits, -1) == labels),
        jnp.sum(rank < top_k),
        jnp.sum(loss),
        labels.shape[0],
      ]
    ).astype(jnp.float32)

  @jax.jit
  @functools.partial(jax.vmap, in_axes=(0, 0, None, None, None))  # over seeds
  def defect_fn(params, constants, images, labels, indices):
    batch = base.Batch(images, labels, indices)
    defects = method.defects(rows_lib.gather(params, tables.params, indices), constants, batch)
    count = labels.shape[0]
    return jnp.concatenate(
      [jnp.full((1,), count, jnp.float32), defects.astype(jnp.float32) * count]
    )

  return accuracy_fn, defect_fn, top_k


def sum_over(split: data_lib.Split, fn, batch_size: int, limit: int | None = None):
  """The sum of ``fn(images, labels, indices)`` over :func:`batches_of` the split (float64)."""
  return sum(np.asarray(fn(*batch), np.float64) for batch in batches_of(split, batch_size, limit))


def evaluate(split: data_lib.Split, weights: PyTree, accuracy_fn, batch_size: int) -> dict:
  """Accuracy, top-k accuracy and loss of the real forward pass on a split, per seed."""
  totals = sum_over(split, functools.partial(accuracy_fn, weights), batch_size)  # (S, 4)
  n = np.maximum(totals[:, 3], 1.0)
  return {
    "accuracy": totals[:, 0] / n,
    "top_k_accuracy": totals[:, 1] / n,
    "loss": totals[:, 2] / n,
  }


def train_defects(
  config, dataset: data_lib.Dataset, params: PyTree, constants: PyTree, defect_fn
) -> np.ndarray:
  """Each split's mean absolute defect on (a prefix of) the training set: (seeds, splits)."""
  totals = sum_over(
    dataset.train,
    functools.partial(defect_fn, params, constants),
    config.eval_batch_size,
    config.eval_train_examples or None,
  )
  return totals[:, 1:] / np.maximum(totals[:, :1], 1.0)


# ----------------------------------------------------------------------------------
# Sharding
# ----------------------------------------------------------------------------------


def make_mesh(config) -> jax.sharding.Mesh:
  """A 1-D ``data`` mesh over ``config.mesh.num_devices`` local devices (-1: all)."""
  devices = jax.local_devices()
  n = config.mesh.num_devices
  if n == -1:
    n = len(devices)
  errors.require(
    1 <= n <= len(devices), "mesh.num_devices", f"{n} requested, {len(devices)} available"
  )
  return jax.make_mesh(
    (n,), ("data",), devices=devices[:n], axis_types=(jax.sharding.AxisType.Auto,)
  )


def state_shardings(mesh, state: TrainState, tables: rows_lib.RowTables) -> TrainState:
  """Tables sharded by rows (their axis after the seed axis) over ``data``; the rest
  replicated."""
  rep = jax.NamedSharding(mesh, jax.P())
  by_rows = jax.NamedSharding(mesh, jax.P(None, "data"))
  return TrainState(
    step=rep,
    params=rows_lib.shardings(state.params, tables.params, by_rows, rep),
    opt_state=rows_lib.shardings(state.opt_state, tables.opt_state, by_rows, rep),
    constants=jax.tree.map(lambda _: rep, state.constants),
    average=jax.tree.map(lambda _: rep, state.average),
  )


# ----------------------------------------------------------------------------------
# Setup shared by training, benchmarks and tests
# ----------------------------------------------------------------------------------


class Experiment(NamedTuple):
  config: Any
  dataset: data_lib.Dataset
  net: networks.SplitNetwork
  method: base.Method
  tx: Any
  solver: str  # the solver the optimizer runs (config.solver or the method's)
  tables: rows_lib.RowTables
  seeds: tuple[int, ...]  # the seeds of the leading state axis
  mesh: Any
  shardings: TrainState
  batch_shardings: base.Batch
  initial_state: TrainState  # freshly initialised, created sharded on the mesh
  train_step: Callable  # jitted (state, batch) -> (state, metrics), all seeds at once


def build_experiment(config, dataset: data_lib.Dataset | None = None) -> Experiment:
  """Everything but the loop: data, network, method, optimizer, mesh, jitted step."""
  check_loop_config(config)
  if dataset is None:
    dataset = data_lib.load_dataset(
      config.data.name,
      data_dir=os.path.expanduser(config.data.data_dir) or None,
      validation_fraction=config.data.validation_fraction,
      seed=config.data.seed,
      image_size=config.data.image_size or None,
      max_train_examples=config.data.max_train_examples or None,
    )
  net = networks.from_config(
    config.network, num_classes=dataset.num_classes, input_shape=tuple(dataset.image_shape)
  )
  method = methods_lib.make_method(config, net, len(dataset.train.labels))
  mesh = make_mesh(config)
  n_dev = mesh.devices.size
  errors.require(
    config.batch_size % n_dev == 0,
    "batch_size",
    f"{config.batch_size} is not divisible by the {n_dev} devices of the data mesh",
  )

  def map_train(fn, limit=None):
    jfn = jax.jit(fn)
    outs = [
      jfn(images, labels)
      for images, labels, _ in batches_of(dataset.train, config.eval_batch_size, limit)
    ]
    return jax.tree.map(lambda *xs: jnp.concatenate(xs), *outs)

  seeds = tuple(range(config.seed, config.seed + config.num_seeds))
  inits = [method.init(jax.random.key(seed), map_train) for seed in seeds]
  params, constants = jax.tree.map(lambda *xs: jnp.stack(xs), *inits)
  tx, solver = optimizers.from_config(
    config,
    default_solver=method.default_solver,
    primal_labels=method.primal_labels(inits[0][0]["primal"]),
    group_rates=method.group_rates,
  )
  tables = rows_lib.find(method.tables(inits[0][0]), tx, inits[0][0])
  del inits

  @jax.vmap
  def init_state(params, constants):
    params = rows_lib.pad(params, tables.params, n_dev)
    average = params["primal"]["weights"] if config.average_decay > 0 else {}
    return TrainState(jnp.zeros([], jnp.int32), params, tx.init(params), constants, average)

  shardings = state_shardings(mesh, jax.eval_shape(init_state, params, constants), tables)
  state = jax.jit(init_state, out_shardings=shardings)(params, constants)
  rows_sharding = jax.NamedSharding(mesh, jax.P(None, "data"))
  batch_shardings = base.Batch(
    rows_sharding, rows_sharding, rows_sharding, jax.NamedSharding(mesh, jax.P())
  )
  train_step = jax.jit(
    jax.vmap(make_train_step(method, tx, tables, config.average_decay)),
    in_shardings=(shardings, batch_shardings),
    out_shardings=(shardings, None),
    donate_argnums=0,
  )
  return Experiment(
    config,
    dataset,
    net,
    method,
    tx,
    solver,
    tables,
    seeds,
    mesh,
    shardings,
    batch_shardings,
    state,
    train_step,
  )


def make_batch(exp: Experiment, step: int) -> base.Batch:
  """Step ``step``'s batch of every seed, stacked: a pure function of (seed, step)."""
  n = len(exp.dataset.train.labels)
  idx = np.stack([data_lib.batch_indices(n, exp.config.batch_size, step, s) for s in exp.seeds])
  images, labels = data_lib.get_batch(exp.dataset.train, idx.reshape(-1))
  batch = base.Batch(
    images.reshape(idx.shape + images.shape[1:]),
    labels.reshape(idx.shape),
    idx.astype(np.int32),
    np.full((len(exp.seeds),), step, np.int32),
  )
  return jax.device_put(batch, exp.batch_shardings)


def unstack(tree: PyTree, seed_index: int = 0) -> PyTree:
  """One seed's slice of a stacked pytree (a state, metrics)."""
  return jax.tree.map(lambda x: x[seed_index], tree)


# ----------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------


def _checkpoint_manager(workdir: str, config) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(
    max_to_keep=config.keep_checkpoints, enable_async_checkpointing=False
  )
  return ocp.CheckpointManager(
    os.path.join(os.path.abspath(workdir), "checkpoints"), options=options
  )


def restore_newest(ckpt: ocp.CheckpointManager, state: TrainState, workdir: str):
  """``(state, step)`` from the newest checkpoint that restores, or ``(state, None)``.

  A newest checkpoint that is corrupt or half-written (a run killed while saving) is
  reported in one line naming its step, and the next older one is tried: a failed run
  never loses its last good checkpoint. If none restores, the checkpoints were written
  by another config: a ``TrainingError`` says so.
  """
  where = os.path.join(workdir, "checkpoints")
  steps = sorted(ckpt.all_steps(), reverse=True)
  first_error = None
  for step in steps:
    try:
      return ckpt.restore(step, args=ocp.args.StandardRestore(state)), step
    except Exception as e:  # noqa: BLE001 (orbax raises many types for unreadable data)
      reason = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
      first_error = first_error or reason
      print(
        f"warning: the checkpoint at step {step} in {where} does not restore "
        f"({reason}); trying an older one",
        file=sys.stderr,
      )
  if steps:
    raise errors.TrainingError(
      f"no checkpoint in {where} restores: the newest (step {steps[0]}) does not match this "
      f"config ({first_error}); resume with the config that wrote it, or use a new --workdir"
    )
  return state, None


@jax.jit
def _all_finite(tree) -> jax.Array:
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def _finite(metrics: dict) -> bool:
  return all(np.all(np.isfinite(np.asarray(v))) for v in metrics.values())


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


def evaluation_record(exp: Experiment, state: TrainState, step: int, fns) -> dict:
  """Test / validation accuracy and training-set defects: means, and per seed."""
  accuracy_fn, defect_fn, top_k = fns
  config, dataset = exp.config, exp.dataset
  weights = eval_weights(state)
  test = evaluate(dataset.test, weights, accuracy_fn, config.eval_batch_size)
  val = evaluate(dataset.validation, weights, accuracy_fn, config.eval_batch_size)
  defects = train_defects(config, dataset, iterate(state), state.constants, defect_fn)
  per_seed = {
    "test_accuracy": test["accuracy"],
    "test_loss": test["loss"],
    "validation_accuracy": val["accuracy"],
    "mean_defect": defects.mean(axis=1) if defects.shape[1] else np.zeros(len(exp.seeds)),
    **{f"defect_{i}": defects[:, i] for i in range(defects.shape[1])},
  }
  if top_k > 1:
    per_seed["test_top5_accuracy"] = test["top_k_accuracy"]
    per_seed["validation_top5_accuracy"] = val["top_k_accuracy"]
  record = {"step": step, "kind": "eval"}
  record.update({k: float(np.mean(v)) for k, v in per_seed.items()})
  record["seeds"] = {k: [float(x) for x in v] for k, v in per_seed.items()}
  return record


def train_and_evaluate(config, workdir: str) -> dict:
  """Trains ``config.method``, evaluates, checkpoints; returns the summary dict.

  Running the same command again resumes from the last checkpoint in ``workdir``.
  """
  from lagrangian_jax import reporting  # matplotlib only when a run reports

  t_start = time.time()
  os.makedirs(workdir, exist_ok=True)
  exp = build_experiment(config)
  ckpt = _checkpoint_manager(workdir, config)
  metrics_path = os.path.join(workdir, "metrics.jsonl")

  state, start = restore_newest(ckpt, exp.initial_state, workdir)
  if start is not None and start > config.num_steps:
    raise errors.TrainingError(
      f"{workdir} holds a checkpoint at step {start}, past config.num_steps="
      f"{config.num_steps}; use a new --workdir or more steps"
    )
  if start is not None:
    print(f"resuming from the checkpoint at step {start} in {workdir}", file=sys.stderr)
    reporting.truncate_metrics(metrics_path, start)
  else:
    start = 0
    if os.path.exists(metrics_path):
      os.remove(metrics_path)
  with open(os.path.join(workdir, "config.json"), "w") as f:
    f.write(config.to_json_best_effort(indent=2))

  fns = make_eval_fns(exp.net, exp.method, exp.tables)
  writer = reporting.MetricsWriter(metrics_path, enabled=jax.process_index() == 0)

  def run_eval(step):
    record = evaluation_record(exp, state, step, fns)
    writer.write(record)
    return record

  bar = reporting.progress(config.num_steps, start, enabled=config.progress_bar)
  last_eval, record = None, {}
  train_seconds, first_seconds, last_good = 0.0, 0.0, start
  try:
    for step in range(start, config.num_steps):
      t0 = time.time()
      state, metrics = exp.train_step(state, make_batch(exp, step))
      done = step + 1
      if step == start:  # the first step compiles: keep it out of the per-step figure
        jax.block_until_ready(state)
        first_seconds = time.time() - t0
      log_now = done % config.log_every == 0 or done == config.num_steps
      save_now = done % config.checkpoint_every == 0 or done == config.num_steps
      if log_now or save_now:
        host = jax.device_get(metrics)
        train_seconds += time.time() - t0
        if not _finite(host):
          bad = [k for k, v in host.items() if not np.all(np.isfinite(v))]
          raise errors.TrainingError(
            f"training diverged at step {done}: non-finite {', '.join(bad)}; the last "
            f"good checkpoint (step {last_good}) is kept in "
            f"{os.path.join(workdir, 'checkpoints')}"
          )
        record = {"step": done, "kind": "train", **_seed_means(host), "seconds": train_seconds}
        writer.write(record)
        bar.set_postfix(reporting.postfix(record, last_eval))
      else:
        train_seconds += time.time() - t0  # dispatch only; the next sync pays the rest
      if done % config.eval_every == 0 or done == config.num_steps:
        last_eval = run_eval(done)
        bar.set_postfix(reporting.postfix(record, last_eval))
      if save_now:
        if not bool(_all_finite(state.params)):  # the metrics were taken before the update
          raise errors.TrainingError(
            f"training diverged at step {done}: non-finite parameters; the last good "
            f"checkpoint (step {last_good}) is kept in {os.path.join(workdir, 'checkpoints')}"
          )
        ckpt.save(done, args=ocp.args.StandardSave(state))
        last_good = done
      bar.update(1)
  finally:
    bar.close()
    ckpt.wait_until_finished()
    writer.close()

  if last_eval is None or last_eval["step"] != config.num_steps:
    last_eval = run_eval(config.num_steps)
  per_seed = last_eval["seeds"]
  steps_run = config.num_steps - start
  summary = {
    "method": config.method,
    "solver": exp.solver,
    "dataset": exp.dataset.name,
    "steps": int(config.num_steps),
    "num_seeds": len(exp.seeds),
    "test_accuracy": last_eval["test_accuracy"],
    "test_accuracy_std": float(np.std(per_seed["test_accuracy"])),
    "validation_accuracy": last_eval["validation_accuracy"],
    "validation_accuracy_std": float(np.std(per_seed["validation_accuracy"])),
    "test_loss": last_eval["test_loss"],
    "final_defect": last_eval["mean_defect"],
    "defects": [last_eval[k] for k in sorted(last_eval) if k.startswith("defect_")],
    # all seeds at once, compilation excluded (None when nothing was left to train)
    "ms_per_iteration": (
      1e3 * (train_seconds - first_seconds) / (steps_run - 1) if steps_run > 1 else None
    ),
    "seconds": time.time() - t_start,
    "resumed_from": int(start),
    "seeds": {"seed": list(exp.seeds), **per_seed},
  }
  if "test_top5_accuracy" in last_eval:
    summary["test_top5_accuracy"] = last_eval["test_top5_accuracy"]
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "summary.json"), "w") as f:
      json.dump(summary, f, indent=2)
    reporting.plot_metrics(metrics_path, workdir)
  return summary


def summary_line(summary: dict) -> str:
  """One line a script can parse: ``SUMMARY key=value ...``."""
  return (
    "SUMMARY method={method} solver={solver} dataset={dataset} steps={steps} "
    "seeds={num_seeds} test_accuracy={test_accuracy:.4f} "
    "test_accuracy_std={test_accuracy_std:.4f} final_defect={final_defect:.6g} "
    "seconds={seconds:.1f}"
  ).format(**summary)
