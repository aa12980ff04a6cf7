"""``train_and_evaluate(config, workdir)``: the loop around one jitted, sharded step.

Data flows one way: config -> data + network + method -> optimizer -> one jitted,
sharded step -> metrics (JSON lines, PNG plots) and orbax checkpoints. This module
knows neither a method's maths nor a solver's: each iteration is one
``solvers.solver_step`` on ``method.objective``, and evaluation reads the iterate that
``solvers.current_iterate`` names. Sparse per-example rows live in ``rows.py``.

Resuming: batches are a pure function of ``(seed, step)`` and DistProp's noise is
fixed at initialisation, so a run restored from its last checkpoint continues exactly
as if it had never stopped.
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
  step: jax.Array
  params: PyTree
  opt_state: PyTree
  constants: PyTree


def check_loop_config(config) -> None:
  """Checks the keys the loop itself reads; every component checks its own."""
  need = errors.require
  need(config.batch_size > 0, "batch_size", f"must be positive, got {config.batch_size}")
  need(config.num_steps >= 0, "num_steps", f"must be >= 0, got {config.num_steps}")
  for key in ("log_every", "eval_every", "checkpoint_every", "eval_batch_size", "keep_checkpoints"):
    need(config[key] > 0, key, f"must be positive, got {config[key]}")


# ----------------------------------------------------------------------------------
# The step
# ----------------------------------------------------------------------------------


def make_train_step(method: base.Method, tx, tables: rows_lib.RowTables):
  """One solver iteration on the batch's rows, as a pure function of (state, batch)."""

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
    new_state = TrainState(
      step=state.step + 1,
      params=rows_lib.scatter(state.params, params, tables.params, batch.indices),
      opt_state=rows_lib.scatter(state.opt_state, opt_state, tables.opt_state, batch.indices),
      constants=state.constants,
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


def iterate(state: TrainState) -> PyTree:
  """The parameters to evaluate and export: the solver's iterate ``x_t``."""
  return _current_iterate(state.params, state.opt_state)


_current_iterate = jax.jit(solvers.current_iterate)


def make_eval_fns(net: networks.SplitNetwork, method: base.Method, tables: rows_lib.RowTables):
  """Per-batch totals for :func:`sum_over`: ``(accuracy_fn, defect_fn, top_k)``.

  ``accuracy_fn(weights, images, labels, indices)`` sums ``[top-1 correct, top-k
  correct, loss, count]`` of the real forward pass ``f_L(...f_0(x))``;
  ``defect_fn(params, constants, images, labels, indices)`` sums ``[count, defect_0 *
  count, ...]``, each split's mean absolute defect on training examples (tables gathered).
  """
  top_k = 5 if net.num_classes > 10 else 1

  @jax.jit
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
  def defect_fn(params, constants, images, labels, indices):
    batch = base.Batch(images, labels, indices)
    defects = method.defects(rows_lib.gather(params, tables.params, indices), constants, batch)
    count = labels.shape[0]
    return jnp.concatenate(
      [jnp.full((1,), count, jnp.float32), defects.astype(jnp.float32) * count]
    )

  return accuracy_fn, defect_fn, top_k


def sum_over(split: data_lib.Split, fn, batch_size: int, limit: int | None = None):
  """The sum of ``fn(images, labels, indices)`` over :func:`batches_of` the split."""
  return sum(np.asarray(fn(*batch), np.float64) for batch in batches_of(split, batch_size, limit))


def evaluate(split: data_lib.Split, weights: PyTree, accuracy_fn, batch_size: int) -> dict:
  """Accuracy, top-k accuracy and loss of the real forward pass on a split."""
  totals = sum_over(split, functools.partial(accuracy_fn, weights), batch_size)
  n = max(totals[3], 1.0)
  return {
    "accuracy": float(totals[0] / n),
    "top_k_accuracy": float(totals[1] / n),
    "loss": float(totals[2] / n),
  }


def train_defects(
  config, dataset: data_lib.Dataset, params: PyTree, constants: PyTree, defect_fn
) -> np.ndarray:
  """Each split's mean absolute defect on (a prefix of) the training set."""
  totals = sum_over(
    dataset.train,
    functools.partial(defect_fn, params, constants),
    config.eval_batch_size,
    config.eval_train_examples or None,
  )
  return totals[1:] / max(totals[0], 1.0)


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
  """Tables sharded by rows over ``data``; everything else replicated."""
  rep = jax.NamedSharding(mesh, jax.P())
  by_rows = jax.NamedSharding(mesh, jax.P("data"))
  return TrainState(
    step=rep,
    params=rows_lib.shardings(state.params, tables.params, by_rows, rep),
    opt_state=rows_lib.shardings(state.opt_state, tables.opt_state, by_rows, rep),
    constants=jax.tree.map(lambda _: rep, state.constants),
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
  mesh: Any
  shardings: TrainState
  batch_sharding: Any
  initial_state: TrainState  # freshly initialised, created sharded on the mesh
  train_step: Callable  # jitted (state, batch) -> (state, metrics)


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

  params, constants = method.init(jax.random.key(config.seed), map_train)
  tx, solver = optimizers.from_config(
    config,
    default_solver=method.default_solver,
    primal_labels=method.primal_labels(params["primal"]),
    group_rates=method.group_rates,
  )
  tables = rows_lib.find(method.tables(params), tx, params)

  def init_state(params, constants):
    params = rows_lib.pad(params, tables.params, n_dev)
    return TrainState(jnp.zeros([], jnp.int32), params, tx.init(params), constants)

  shardings = state_shardings(mesh, jax.eval_shape(init_state, params, constants), tables)
  state = jax.jit(init_state, out_shardings=shardings)(params, constants)
  batch_sharding = jax.NamedSharding(mesh, jax.P("data"))
  batch_shardings = base.Batch(batch_sharding, batch_sharding, batch_sharding)
  train_step = jax.jit(
    make_train_step(method, tx, tables),
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
    mesh,
    shardings,
    batch_sharding,
    state,
    train_step,
  )


def make_batch(exp: Experiment, step: int) -> base.Batch:
  idx = data_lib.batch_indices(
    len(exp.dataset.train.labels), exp.config.batch_size, step, exp.config.seed
  )
  images, labels = data_lib.get_batch(exp.dataset.train, idx)
  batch = base.Batch(images, labels, idx.astype(np.int32))
  return jax.device_put(batch, base.Batch(*([exp.batch_sharding] * 3)))


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


@jax.jit
def _all_finite(tree) -> jax.Array:
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def _finite(metrics: dict) -> bool:
  return all(np.all(np.isfinite(np.asarray(v))) for v in metrics.values())


def _scalars(metrics: dict, prefix: str = "") -> dict:
  out = {}
  for k, v in metrics.items():
    v = np.asarray(v)
    if v.ndim == 0:
      out[prefix + k] = float(v)
    else:
      for i, x in enumerate(v.reshape(-1)):
        out[f"{prefix}{k}_{i}"] = float(x)
  return out


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

  state = exp.initial_state
  start = ckpt.latest_step()
  if start is not None:
    try:
      state = ckpt.restore(start, args=ocp.args.StandardRestore(state))
    except (ValueError, TypeError, KeyError) as e:
      raise errors.TrainingError(
        f"the checkpoint at step {start} in {os.path.join(workdir, 'checkpoints')} does "
        f"not match this config ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
        "resume with the config that wrote it, or use a new --workdir"
      ) from None
    print(f"resuming from the checkpoint at step {start} in {workdir}", file=sys.stderr)
    reporting.truncate_metrics(metrics_path, start)
  else:
    start = 0
    if os.path.exists(metrics_path):
      os.remove(metrics_path)
  with open(os.path.join(workdir, "config.json"), "w") as f:
    f.write(config.to_json_best_effort(indent=2))

  accuracy_fn, defect_fn, top_k = make_eval_fns(exp.net, exp.method, exp.tables)
  writer = reporting.MetricsWriter(metrics_path, enabled=jax.process_index() == 0)

  def run_eval(step):
    params = iterate(state)
    weights = params["primal"]["weights"]
    test = evaluate(exp.dataset.test, weights, accuracy_fn, config.eval_batch_size)
    val = evaluate(exp.dataset.validation, weights, accuracy_fn, config.eval_batch_size)
    defects = train_defects(config, exp.dataset, params, state.constants, defect_fn)
    record = {
      "step": step,
      "kind": "eval",
      "test_accuracy": test["accuracy"],
      "test_loss": test["loss"],
      "validation_accuracy": val["accuracy"],
      "mean_defect": float(np.mean(defects)) if len(defects) else 0.0,
    }
    if top_k > 1:
      record["test_top5_accuracy"] = test["top_k_accuracy"]
      record["validation_top5_accuracy"] = val["top_k_accuracy"]
    record.update({f"defect_{i}": float(d) for i, d in enumerate(defects)})
    writer.write(record)
    return record

  bar = reporting.progress(config.num_steps, start, enabled=config.progress_bar)
  last_eval, record = None, {}
  t_train = time.time()
  last_good = start
  try:
    for step in range(start, config.num_steps):
      batch = make_batch(exp, step)
      state, metrics = exp.train_step(state, batch)
      done = step + 1
      log_now = done % config.log_every == 0 or done == config.num_steps
      save_now = done % config.checkpoint_every == 0 or done == config.num_steps
      if log_now or save_now:
        host = jax.device_get(metrics)
        if not _finite(host):
          bad = [k for k, v in host.items() if not np.all(np.isfinite(v))]
          raise errors.TrainingError(
            f"training diverged at step {done}: non-finite {', '.join(bad)}; the last "
            f"good checkpoint (step {last_good}) is kept in "
            f"{os.path.join(workdir, 'checkpoints')}"
          )
        record = {"step": done, "kind": "train", **_scalars(host), "seconds": time.time() - t_train}
        writer.write(record)
        bar.set_postfix(reporting.postfix(record, last_eval))
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
  seconds = time.time() - t_start
  summary = {
    "method": config.method,
    "solver": exp.solver,
    "dataset": exp.dataset.name,
    "steps": int(config.num_steps),
    "test_accuracy": float(last_eval["test_accuracy"]),
    "validation_accuracy": float(last_eval["validation_accuracy"]),
    "test_loss": float(last_eval["test_loss"]),
    "final_defect": float(last_eval["mean_defect"]),
    "defects": [last_eval[k] for k in sorted(last_eval) if k.startswith("defect_")],
    "seconds": seconds,
    "resumed_from": int(start),
  }
  if "test_top5_accuracy" in last_eval:
    summary["test_top5_accuracy"] = float(last_eval["test_top5_accuracy"])
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "summary.json"), "w") as f:
      json.dump(summary, f, indent=2)
    reporting.plot_metrics(metrics_path, workdir)
  return summary


def summary_line(summary: dict) -> str:
  """One line a script can parse: ``SUMMARY key=value ...``."""
  return (
    "SUMMARY method={method} solver={solver} dataset={dataset} steps={steps} "
    "test_accuracy={test_accuracy:.4f} final_defect={final_defect:.6g} "
    "seconds={seconds:.1f}"
  ).format(**summary)
