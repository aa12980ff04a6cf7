"""``train_and_evaluate(config, workdir)``: one jitted step, evaluation, metrics, checkpoints.

Data flows one way: config -> data + network + method -> optimizer -> one jitted,
sharded step -> metrics (JSON lines, PNG plots) and orbax checkpoints. This module
knows nothing of any method's maths: it differentiates ``method.objective`` and hands
the gradient to the solver chosen by ``config.solver``.

Per-example tables (ExtraProp's states and multipliers, DistProp's optional
per-example multipliers) are updated sparsely: the step gathers the batch's rows of the
tables *and of the optimizer state that mirrors them*, runs the whole solver iteration
(extrapolation and update) on that small pytree, and scatters the rows back.

Resuming: batches are a pure function of ``(seed, step)`` and DistProp's noise is
fixed at initialisation, so a run restored from its last checkpoint continues exactly
as if it had never stopped.
"""

from __future__ import annotations

import json
import math
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
from lagrangian_jax import methods as methods_lib
from lagrangian_jax import networks
from lagrangian_jax import solvers
from lagrangian_jax.methods import base

PyTree = Any

SOLVERS = ("extragradient", "past_extragradient", "gda", "descent")
STEP_RULES = ("adagrad", "sgd", "adam")


ConfigError = base.ConfigError

class TrainingError(RuntimeError):
  """Training failed (e.g. diverged); the last good checkpoint is kept."""


class TrainState(NamedTuple):
  step: jax.Array
  params: PyTree
  opt_state: PyTree
  constants: PyTree


# ----------------------------------------------------------------------------------
# Configuration checks
# ----------------------------------------------------------------------------------


def validate_config(config) -> None:
  """Raises ``ConfigError`` naming the offending key for values that cannot work."""
  def need(cond, key, msg):
    if not cond:
      raise ConfigError(f"config.{key}: {msg}")

  need(config.method in methods_lib.METHODS, "method",
       f"unknown method {config.method!r}; choose one of {list(methods_lib.METHODS)}")
  need(config.solver in ("",) + SOLVERS, "solver",
       f"unknown solver {config.solver!r}; choose one of {list(SOLVERS)} or '' (method default)")
  need(config.optimizer in STEP_RULES, "optimizer",
       f"unknown step rule {config.optimizer!r}; choose one of {list(STEP_RULES)}")
  for key in ("weights", "aux", "dual"):
    value = config.learning_rates[key]
    need(isinstance(value, (int, float)) and value >= 0 and math.isfinite(value),
         f"learning_rates.{key}", f"must be a non-negative number, got {value!r}")
  need(config.batch_size > 0, "batch_size", f"must be positive, got {config.batch_size}")
  need(config.num_steps >= 0, "num_steps", f"must be >= 0, got {config.num_steps}")
  for key in ("log_every", "eval_every", "checkpoint_every", "eval_batch_size"):
    need(config[key] > 0, key, f"must be positive, got {config[key]}")
  need(config.penalty >= 0, "penalty", f"must be >= 0, got {config.penalty}")
  d = config.distprop
  need(d.margin >= 0, "distprop.margin", f"must be >= 0, got {d.margin}")
  need(d.sigma_floor > 0, "distprop.sigma_floor", f"must be > 0, got {d.sigma_floor}")
  need(d.samples_per_class >= 1, "distprop.samples_per_class",
       f"must be >= 1, got {d.samples_per_class}")
  need(d.augmentation >= 0, "distprop.augmentation", f"must be >= 0, got {d.augmentation}")
  need(d.sigma_learning_rate_scale >= 0, "distprop.sigma_learning_rate_scale",
       f"must be >= 0, got {d.sigma_learning_rate_scale}")
  need(d.shrinkage in ("soft", "hard"), "distprop.shrinkage",
       f"must be 'soft' or 'hard', got {d.shrinkage!r}")
  need(config.accumulate in ("both", "update"), "accumulate",
       f"must be 'both' or 'update', got {config.accumulate!r}")
  need(config.network.split_activation in ("identity", "relu"), "network.split_activation",
       f"must be 'identity' or 'relu', got {config.network.split_activation!r}")


# ----------------------------------------------------------------------------------
# Optimizer
# ----------------------------------------------------------------------------------


def _step_rule(config, learning_rate):
  if config.optimizer == "adagrad":
    return optax.adagrad(learning_rate, initial_accumulator_value=config.adagrad_init,
                         eps=1e-7)
  if config.optimizer == "adam":
    return optax.adam(learning_rate)
  return optax.sgd(learning_rate, momentum=config.momentum or None)


def make_optimizer(config, method: base.Method, params: PyTree):
  """The solver for ``params = {'primal': {'weights', 'aux'}, 'dual': ...}``.

  Returns ``(tx, calls_per_iteration)``. Separate learning rates for the network
  weights, the auxiliary primal variables (states / prototypes) and the multipliers.
  """
  lr = config.learning_rates  # checked non-negative by validate_config
  rates = {"weights": lr.weights, "aux": lr.aux, **(method.extra_rates or {})}
  labels = method.primal_labels(params["primal"])
  primal = optax.multi_transform(
      {k: _step_rule(config, rates[k]) for k in set(jax.tree.leaves(labels))}, labels)
  solver = config.solver or method.default_solver
  dual = optax.set_to_zero() if solver == "descent" else _step_rule(config, lr.dual)
  inner = solvers.descent_ascent(primal, dual, nonnegative=method.nonnegative)
  if config.grad_clip > 0:
    inner = optax.chain(optax.clip_by_global_norm(config.grad_clip), inner)
  if solver == "extragradient":
    return solvers.extragradient(inner, accumulate=config.accumulate), 2
  if solver == "past_extragradient":
    return solvers.past_extragradient(inner, accumulate=config.accumulate), 1
  return inner, 1


# ----------------------------------------------------------------------------------
# Sparse rows of per-example tables
# ----------------------------------------------------------------------------------


class RowTables(NamedTuple):
  """Which flattened leaves of params / optimizer state are per-example tables."""
  params: tuple[bool, ...]
  opt_state: tuple[bool, ...]


def find_row_tables(method: base.Method, tx, params: PyTree) -> RowTables:
  """Flags table leaves; an optimizer-state leaf is a table if it follows the rows.

  The state leaves that mirror a table are found by initialising the optimizer (in
  shape only) on tables with one extra row and seeing which leaves grow.
  """
  flags = tuple(jax.tree.leaves(method.tables(params)))
  shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x)),
                        params)
  grown = jax.tree.unflatten(jax.tree.structure(shapes), [
      jax.ShapeDtypeStruct((s.shape[0] + 1,) + s.shape[1:], s.dtype) if f else s
      for s, f in zip(jax.tree.leaves(shapes), flags)])
  a = jax.tree.leaves(jax.eval_shape(tx.init, shapes))
  b = jax.tree.leaves(jax.eval_shape(tx.init, grown))
  return RowTables(flags, tuple(x.shape != y.shape for x, y in zip(a, b)))


def _gather(tree, flags, idx):
  leaves, treedef = jax.tree.flatten(tree)
  return jax.tree.unflatten(treedef, [x[idx] if f else x for x, f in zip(leaves, flags)])


def _scatter(full, part, flags, idx):
  leaves, treedef = jax.tree.flatten(full)
  parts = jax.tree.leaves(part)
  return jax.tree.unflatten(treedef, [x.at[idx].set(p.astype(x.dtype)) if f else p
                                      for x, p, f in zip(leaves, parts, flags)])


# ----------------------------------------------------------------------------------
# The step
# ----------------------------------------------------------------------------------


def make_train_step(method: base.Method, tx, calls: int, rows: RowTables):
  """One solver iteration (``calls`` gradient evaluations) as a pure function."""

  def train_step(state: TrainState, batch: base.Batch):
    idx = batch.indices
    params = _gather(state.params, rows.params, idx)
    opt_state = _gather(state.opt_state, rows.opt_state, idx)
    grad_fn = jax.value_and_grad(method.objective, has_aux=True)
    metrics = None
    for call in range(calls):
      (value, aux), grads = grad_fn(params, state.constants, batch)
      if call == 0:  # report at the iterate x_t, not at the extrapolated point
        metrics = {"objective": value, **aux}
      updates, opt_state = tx.update(grads, opt_state, params)
      params = optax.apply_updates(params, updates)
    new_state = TrainState(
        step=state.step + 1,
        params=_scatter(state.params, params, rows.params, idx),
        opt_state=_scatter(state.opt_state, opt_state, rows.opt_state, idx),
        constants=state.constants)
    return new_state, metrics

  return train_step


def eval_weights(config, state: TrainState):
  """Network weights at the current iterate (past extragradient keeps params at the
  extrapolated point; its iterate is ``params - last extrapolation``)."""
  params = state.params
  if (config.solver or "") == "past_extragradient":
    params = solvers.past_extragradient_iterate(params, state.opt_state)
  return params["primal"]["weights"]


def make_eval_fns(net: networks.SplitNetwork, method: base.Method, rows: RowTables):
  top_k = 5 if net.num_classes > 10 else 1

  @jax.jit
  def eval_batch(weights, images, labels, mask):
    logits = networks.forward(net, weights, images).astype(jnp.float32)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    top1 = jnp.argmax(logits, -1) == labels
    rank = jnp.sum(logits > jnp.take_along_axis(logits, labels[:, None], -1), -1)
    topk = rank < top_k
    m = mask.astype(jnp.float32)
    return jnp.stack([jnp.sum(top1 * m), jnp.sum(topk * m), jnp.sum(loss * m), jnp.sum(m)])

  @jax.jit
  def defect_batch(params, constants, images, labels, indices):
    params = _gather(params, rows.params, indices)
    return method.defects(params, constants, base.Batch(images, labels, indices))

  return eval_batch, defect_batch, top_k


def evaluate(split: data_lib.Split, weights, eval_batch, batch_size: int) -> dict:
  totals = np.zeros(4)
  for images, labels, mask in data_lib.iterate_eval(split, batch_size):
    totals += np.asarray(eval_batch(weights, images, labels, mask))
  n = max(totals[3], 1.0)
  return {"accuracy": totals[0] / n, "top_k_accuracy": totals[1] / n, "loss": totals[2] / n}


def train_defects(config, dataset, state: TrainState, defect_batch) -> np.ndarray:
  """Mean absolute defect of every split's constraint on (a prefix of) the training set."""
  n = min(len(dataset.train.labels), config.eval_train_examples or 10**12)
  bs = config.eval_batch_size
  totals, count = None, 0
  for start in range(0, n - bs + 1, bs) if n >= bs else [0]:
    idx = np.arange(start, min(start + bs, n))
    images, labels = data_lib.get_batch(dataset.train, idx)
    d = np.asarray(defect_batch(state.params, state.constants, images, labels, idx))
    totals = d * len(idx) if totals is None else totals + d * len(idx)
    count += len(idx)
  return totals / max(count, 1)


# ----------------------------------------------------------------------------------
# Sharding
# ----------------------------------------------------------------------------------


def make_mesh(config) -> jax.sharding.Mesh:
  """A 1-D ``data`` mesh over ``config.mesh.num_devices`` local devices (-1: all)."""
  devices = jax.local_devices()
  n = config.mesh.num_devices
  if n == -1:
    n = len(devices)
  if not 1 <= n <= len(devices):
    raise ConfigError(f"config.mesh.num_devices: {n} requested, {len(devices)} available")
  return jax.make_mesh((n,), ("data",), devices=devices[:n],
                       axis_types=(jax.sharding.AxisType.Auto,))


def _pad_rows(tree, flags, multiple):
  leaves, treedef = jax.tree.flatten(tree)
  out = []
  for x, f in zip(leaves, flags):
    if f and x.shape[0] % multiple:
      pad = multiple - x.shape[0] % multiple
      x = jnp.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1))
    out.append(x)
  return jax.tree.unflatten(treedef, out)


def state_shardings(mesh, state: TrainState, rows: RowTables) -> TrainState:
  """Tables sharded by rows over ``data``; everything else replicated."""
  rep = jax.NamedSharding(mesh, jax.P())
  by_rows = jax.NamedSharding(mesh, jax.P("data"))

  def spec(tree, flags):
    leaves, treedef = jax.tree.flatten(tree)
    return jax.tree.unflatten(treedef, [by_rows if f else rep for f in flags])

  return TrainState(step=rep, params=spec(state.params, rows.params),
                    opt_state=spec(state.opt_state, rows.opt_state),
                    constants=jax.tree.map(lambda _: rep, state.constants))


# ----------------------------------------------------------------------------------
# Setup shared by training, benchmarks and tests
# ----------------------------------------------------------------------------------


class Experiment(NamedTuple):
  config: Any
  dataset: data_lib.Dataset
  net: networks.SplitNetwork
  method: base.Method
  tx: Any
  calls: int
  rows: RowTables
  mesh: Any
  shardings: TrainState
  batch_sharding: Any
  initial_state: TrainState  # freshly initialised, placed on the mesh
  train_step: Any        # jitted (state, batch) -> (state, metrics)


def build_experiment(config, dataset: data_lib.Dataset | None = None) -> Experiment:
  """Everything but the loop: data, network, method, optimizer, mesh, jitted step."""
  validate_config(config)
  if dataset is None:
    dataset = data_lib.load_dataset(
        config.data.name, data_dir=os.path.expanduser(config.data.data_dir) or None,
        validation_fraction=config.data.validation_fraction, seed=config.data.seed,
        image_size=config.data.image_size or None,
        max_train_examples=config.data.max_train_examples or None)
  try:
    net = networks.build_network(
        config.network.name, num_classes=dataset.num_classes,
        input_shape=tuple(dataset.image_shape), split=_split_value(config.network.split),
        split_activation=config.network.split_activation,
        conv_impl=config.network.conv_impl, **_network_extras(config))
  except networks.NetworkError as e:
    raise ConfigError(f"config.network: {e}") from None
  num_train = len(dataset.train.labels)
  method = methods_lib.make_method(config, net, num_train)
  mesh = make_mesh(config)
  n_dev = mesh.devices.size
  if config.batch_size % n_dev:
    raise ConfigError(f"config.batch_size: {config.batch_size} is not divisible by the "
                      f"{n_dev} devices of the data mesh")

  def map_train(fn, limit=None):
    n = num_train if limit is None else min(limit, num_train)
    jfn = jax.jit(fn)
    outs = []
    for start in range(0, n, config.eval_batch_size):
      idx = np.arange(start, min(start + config.eval_batch_size, n))
      outs.append(jax.device_get(jfn(*data_lib.get_batch(dataset.train, idx))))
    return jax.tree.map(lambda *xs: np.concatenate(xs), *outs)

  params, constants = method.init(jax.random.key(config.seed), map_train)
  tx, calls = make_optimizer(config, method, params)
  rows = find_row_tables(method, tx, params)
  params = _pad_rows(params, rows.params, n_dev)
  state = TrainState(jnp.zeros([], jnp.int32), params, tx.init(params), constants)
  shardings = state_shardings(mesh, state, rows)
  state = jax.device_put(state, shardings)
  batch_sharding = jax.NamedSharding(mesh, jax.P("data"))
  batch_shardings = base.Batch(batch_sharding, batch_sharding, batch_sharding)
  train_step = jax.jit(make_train_step(method, tx, calls, rows),
                       in_shardings=(shardings, batch_shardings),
                       out_shardings=(shardings, None), donate_argnums=0)
  return Experiment(config, dataset, net, method, tx, calls, rows, mesh, shardings,
                    batch_sharding, state, train_step)


def _split_value(split):
  if isinstance(split, str) and split not in ("default", "every"):
    try:
      return [int(s) for s in split.split(",") if s.strip()]
    except ValueError:
      raise ConfigError(f"config.network.split: expected 'default', 'every' or a comma "
                        f"separated list of block indices, got {split!r}") from None
  return split


def _network_extras(config):
  extras = {}
  if config.network.get("depth"):
    extras["depth"] = config.network.depth
  if config.network.get("width"):
    extras["width"] = config.network.width
  return extras


def make_batch(exp: Experiment, step: int) -> base.Batch:
  idx = data_lib.batch_indices(len(exp.dataset.train.labels), exp.config.batch_size, step,
                               exp.config.seed)
  images, labels = data_lib.get_batch(exp.dataset.train, idx)
  batch = base.Batch(images, labels, idx.astype(np.int32))
  return jax.device_put(batch, base.Batch(*([exp.batch_sharding] * 3)))


# ----------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------


def _checkpoint_manager(workdir: str, config) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(max_to_keep=config.keep_checkpoints,
                                         enable_async_checkpointing=False)
  return ocp.CheckpointManager(os.path.join(os.path.abspath(workdir), "checkpoints"),
                               options=options)


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
      raise TrainingError(
          f"the checkpoint at step {start} in {os.path.join(workdir, 'checkpoints')} does "
          f"not match this config ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
          "resume with the config that wrote it, or use a new --workdir") from None
    print(f"resuming from the checkpoint at step {start} in {workdir}", file=sys.stderr)
    reporting.truncate_metrics(metrics_path, start)
  else:
    start = 0
    if os.path.exists(metrics_path):
      os.remove(metrics_path)
  with open(os.path.join(workdir, "config.json"), "w") as f:
    f.write(config.to_json_best_effort(indent=2))

  eval_batch, defect_batch, top_k = make_eval_fns(exp.net, exp.method, exp.rows)
  writer = reporting.MetricsWriter(metrics_path, enabled=jax.process_index() == 0)

  def run_eval(step):
    weights = eval_weights(config, state)
    test = evaluate(exp.dataset.test, weights, eval_batch, config.eval_batch_size)
    val = evaluate(exp.dataset.validation, weights, eval_batch, config.eval_batch_size)
    defects = train_defects(config, exp.dataset, state, defect_batch)
    record = {"step": step, "kind": "eval", "test_accuracy": test["accuracy"],
              "test_loss": test["loss"], "validation_accuracy": val["accuracy"],
              "mean_defect": float(np.mean(defects)) if len(defects) else 0.0}
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
          raise TrainingError(
              f"training diverged at step {done}: non-finite {', '.join(bad)}; the last "
              f"good checkpoint (step {last_good}) is kept in "
              f"{os.path.join(workdir, 'checkpoints')}")
        record = {"step": done, "kind": "train", **_scalars(host),
                  "seconds": time.time() - t_train}
        writer.write(record)
        bar.set_postfix(reporting.postfix(record, last_eval))
      if done % config.eval_every == 0 or done == config.num_steps:
        last_eval = run_eval(done)
        bar.set_postfix(reporting.postfix(record, last_eval))
      if save_now:
        if not bool(_all_finite(state.params)):  # the metrics were taken before the update
          raise TrainingError(
              f"training diverged at step {done}: non-finite parameters; the last good "
              f"checkpoint (step {last_good}) is kept in {os.path.join(workdir, 'checkpoints')}")
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
      "solver": config.solver or exp.method.default_solver,
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
  return ("SUMMARY method={method} solver={solver} dataset={dataset} steps={steps} "
          "test_accuracy={test_accuracy:.4f} final_defect={final_defect:.6g} "
          "seconds={seconds:.1f}").format(**summary)
