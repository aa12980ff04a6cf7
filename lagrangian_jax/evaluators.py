"""Evaluators: what the loop measures at each evaluation, chosen by ``config.evaluators``.

Each evaluator is built once from the experiment, ``Evaluator(exp)``, and ``run(state,
step)`` yields ``(name, value)`` pairs (big_vision's ``evaluators``): a value is either
an array with one figure per seed (the record keeps their mean under ``name`` and each
seed's figure under ``"seeds"``) or a dict kept whole. ``config.evaluators`` is a
comma-separated list of :data:`EVALUATORS` (default ``"accuracy,defects"``, which the
summary and the plots read):

* ``accuracy``: test / validation top-1 accuracy (and top-5 where there are more than 10
  classes) and test loss of the real forward pass ``f_L(...f_0(x))``, at the averaged
  iterate if one is kept, else at ``x_t``;
* ``defects``: each split's mean absolute defect on (a prefix of) the training set;
* ``split_diagnostics``: DistProp's per-split diagnostics
  (``distprop.make_split_diagnostics``) on the whole validation split, per seed.

Totals are summed over the batches of ``feed.eval_batches`` (each process reads its own
rows) and come back replicated, so every process reads the same figures.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lagrangian_jax import data as data_lib
from lagrangian_jax import errors
from lagrangian_jax import networks
from lagrangian_jax import rows as rows_lib
from lagrangian_jax import sharding
from lagrangian_jax.data import feed as feed_lib
from lagrangian_jax.methods import base
from lagrangian_jax.methods import distprop
from lagrangian_jax.state import current_params
from lagrangian_jax.state import unstack

PyTree = Any

DEFAULT = "accuracy,defects"


def eval_weights(state) -> PyTree:
  """The network weights evaluation uses: the averaged iterate if kept, else ``x_t``."""
  return state.average if state.average else current_params(state)["primal"]["weights"]


def top_k(net: networks.SplitNetwork) -> int:
  """The ``k`` of the top-k accuracy: 5 where there are more than 10 classes, else 1."""
  return 5 if net.num_classes > 10 else 1


def _jit(mesh):
  """``jax.jit`` whose outputs are replicated on ``mesh`` (every process reads them)."""
  return functools.partial(
    jax.jit, out_shardings=None if mesh is None else jax.NamedSharding(mesh, jax.P())
  )


def accuracy_totals(net: networks.SplitNetwork, method: base.Method, mesh=None, stats=None):
  """``fn(weights, images, labels, indices) -> (seeds, 4)``: per seed, the sums of ``[top-1
  correct, top-k correct, loss, count]`` of the real forward pass over the batch (uint8
  images normalised on the device with ``stats``, as in the train step)."""
  k = top_k(net)
  to_segments = method.network_weights or (lambda w: w)

  @_jit(mesh)
  @functools.partial(jax.vmap, in_axes=(0, None, None, None))  # over seeds
  def accuracy_fn(weights, images, labels, indices):
    del indices
    images = data_lib.normalise_on_device(images, stats)
    logits = networks.forward(net, to_segments(weights), images).astype(jnp.float32)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    rank = jnp.sum(logits > jnp.take_along_axis(logits, labels[:, None], -1), -1)
    return jnp.stack(
      [
        jnp.sum(jnp.argmax(logits, -1) == labels),
        jnp.sum(rank < k),
        jnp.sum(loss),
        labels.shape[0],
      ]
    ).astype(jnp.float32)

  return accuracy_fn


def defect_totals(method: base.Method, tables: rows_lib.RowTables, mesh=None, stats=None):
  """``fn(params, constants, images, labels, indices) -> (seeds, 1 + splits)``: per seed,
  ``[count, defect_0 * count, ...]``, each split's mean absolute defect on the batch of
  training examples (tables gathered to its rows)."""

  @_jit(mesh)
  @functools.partial(jax.vmap, in_axes=(0, 0, None, None, None))  # over seeds
  def defect_fn(params, constants, images, labels, indices):
    batch = base.Batch(data_lib.normalise_on_device(images, stats), labels, indices)
    defects = method.defects(rows_lib.gather(params, tables.params, indices), constants, batch)
    count = labels.shape[0]
    return jnp.concatenate(
      [jnp.full((1,), count, jnp.float32), defects.astype(jnp.float32) * count]
    )

  return defect_fn


def sum_over(
  split: data_lib.Split, fn, batch_size: int, limit: int | None = None, *, mesh, options=None
):
  """The sum of ``fn(images, labels, indices)`` over ``feed.eval_batches`` (float64).

  ``fn``'s totals must be replicated (``accuracy_totals(..., mesh)``) or on one process;
  ``options``: the grain workers and prefetch of a lazy split (``feed.EvalOptions``).
  """
  return sum(
    np.asarray(fn(*batch), np.float64)
    for batch in feed_lib.eval_batches(split, batch_size, mesh, limit, options=options)
  )


def evaluate(
  split: data_lib.Split, weights: PyTree, accuracy_fn, batch_size: int, mesh=None, options=None
) -> dict:
  """Accuracy, top-k accuracy and loss of the real forward pass on a split, per seed.

  The batches are spread over ``mesh`` (default: the one ``weights`` live on).
  """
  mesh = sharding.mesh_of(weights) if mesh is None else mesh
  fn = functools.partial(accuracy_fn, weights)
  totals = sum_over(split, fn, batch_size, mesh=mesh, options=options)
  n = np.maximum(totals[:, 3], 1.0)  # (seeds, 4)
  return {
    "accuracy": totals[:, 0] / n,
    "top_k_accuracy": totals[:, 1] / n,
    "loss": totals[:, 2] / n,
  }


def train_defects(
  config, dataset: data_lib.Dataset, params: PyTree, constants: PyTree, defect_fn, mesh=None
) -> np.ndarray:
  """Each split's mean absolute defect on (a prefix of) the training set: (seeds, splits)."""
  totals = sum_over(
    dataset.train,
    functools.partial(defect_fn, params, constants),
    config.eval_batch_size,
    config.eval_train_examples or None,
    mesh=sharding.mesh_of(params) if mesh is None else mesh,
    options=feed_lib.EvalOptions.from_config(config),
  )
  return totals[:, 1:] / np.maximum(totals[:, :1], 1.0)


class Accuracy:
  """``test_accuracy``, ``test_loss``, ``validation_accuracy`` (and ``test_top5_accuracy``,
  ``validation_top5_accuracy`` where there are more than 10 classes), per seed."""

  def __init__(self, exp):
    self.exp, self.top_k = exp, top_k(exp.net)
    self.fn = accuracy_totals(exp.net, exp.method, exp.mesh, data_lib.pixel_stats(exp.dataset))

  def run(self, state, step: int):
    del step
    exp, weights = self.exp, eval_weights(state)
    size = exp.config.eval_batch_size
    options = feed_lib.EvalOptions.from_config(exp.config)
    test = evaluate(exp.dataset.test, weights, self.fn, size, exp.mesh, options)
    val = evaluate(exp.dataset.validation, weights, self.fn, size, exp.mesh, options)
    yield "test_accuracy", test["accuracy"]
    yield "test_loss", test["loss"]
    yield "validation_accuracy", val["accuracy"]
    if self.top_k > 1:
      yield "test_top5_accuracy", test["top_k_accuracy"]
      yield "validation_top5_accuracy", val["top_k_accuracy"]


class Defects:
  """``mean_defect`` and ``defect_<split>``: the training set's defects, per seed."""

  def __init__(self, exp):
    self.exp = exp
    stats = data_lib.pixel_stats(exp.dataset)
    self.fn = defect_totals(exp.method, exp.placement.tables, exp.mesh, stats)

  def run(self, state, step: int):
    del step
    exp = self.exp
    defects = train_defects(
      exp.config, exp.dataset, current_params(state), state.constants, self.fn, exp.mesh
    )
    yield "mean_defect", (defects.mean(axis=1) if defects.shape[1] else np.zeros(len(exp.seeds)))
    for i in range(defects.shape[1]):
      yield f"defect_{i}", defects[:, i]


class SplitDiagnostics:
  """``split_diagnostics``: ``{name: {"mean": [per split], "per_seed": [[per split] per
  seed]}}`` for every name of ``distprop.DIAGNOSTICS`` and ``real_accuracy`` /
  ``sample_accuracy``, plus ``"step"`` and ``"examples"``: DistProp's diagnostics of the
  iterate on the whole validation split, read whole by every process."""

  def __init__(self, exp):
    errors.require(
      exp.config.method == "distprop",
      "evaluators",
      f"split_diagnostics are DistProp's; method {exp.config.method!r} has none",
    )
    self.exp = exp
    self.fn = distprop.make_split_diagnostics(exp.config, exp.net)
    split = exp.dataset.validation
    self.images, self.labels = data_lib.get_batch(split, np.arange(len(split.labels)))

  def run(self, state, step: int):
    params, constants = current_params(state), state.constants
    per_seed = []
    for k in range(len(self.exp.seeds)):
      d = self.fn(
        unstack(params, k), unstack(constants, k), jnp.asarray(self.images), self.labels, step
      )
      per_seed.append({name: np.asarray(v, np.float64) for name, v in d.items()})
    out = {}
    for name in (*distprop.DIAGNOSTICS, "real_accuracy", "sample_accuracy"):
      rows = np.stack([d[name] for d in per_seed])
      out[name] = {"mean": rows.mean(0).tolist(), "per_seed": rows.tolist()}
    out["step"] = int(step)
    out["examples"] = int(len(self.labels))
    yield "split_diagnostics", out


EVALUATORS = {"accuracy": Accuracy, "defects": Defects, "split_diagnostics": SplitDiagnostics}


def from_config(exp) -> list:
  """The evaluators ``config.evaluators`` names, built for ``exp`` (in that order); its
  rule in ``config_rules`` asks for names of :data:`EVALUATORS`, with those of
  :data:`DEFAULT` (what the summary reports)."""
  names = [n.strip() for n in exp.config.get("evaluators", DEFAULT).split(",") if n.strip()]
  return [EVALUATORS[name](exp) for name in names]


def evaluation_record(evaluators: list, state, step: int) -> dict:
  """One eval record of ``metrics.jsonl``: every evaluator's figures, their means over
  seeds and, under ``"seeds"``, each seed's figure; dict-valued results kept whole."""
  per_seed, whole = {}, {}
  for evaluator in evaluators:
    for name, value in evaluator.run(state, step):
      (whole if isinstance(value, dict) else per_seed)[name] = value
  record = {"step": step, "kind": "eval"}
  record.update({k: float(np.mean(v)) for k, v in per_seed.items()})
  record["seeds"] = {k: [float(x) for x in v] for k, v in per_seed.items()}
  record.update(whole)
  return record
