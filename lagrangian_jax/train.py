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
continues exactly as if it had never stopped. With the grain pipeline
(``config.data.pipeline="grain"``, :class:`InputFeed`) the checkpoint also holds each
process's iterator state.

Stage-parallel DistProp: with ``config.mesh.stage > 1`` the mesh is ``data`` x ``stage``
and DistProp's blocks live on their stages (``methods/stage_parallel.py``): the method
marks its stage-laid-out leaves (``Method.stage_params`` / ``stage_constants``), which
:func:`state_shardings` places ``P(None, "stage")`` along with the optimizer leaves that
mirror them; nothing else in the loop changes.

Several processes (hosts): the ``data`` mesh spans ``jax.devices()`` of all of them
(:func:`make_mesh`). Every array the loop builds is global: each process reads only the
rows of its own devices, for training batches (:func:`make_batch`), evaluation batches
(:func:`eval_batches`) and the initial rows of per-example tables (:func:`init_params`),
so no process ever holds a whole table; evaluation totals come back replicated. Process
0 alone writes files other than checkpoints, which every process writes and reads.
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
from lagrangian_jax.data import pipeline as pipeline_lib
from lagrangian_jax.data import tfds_source
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
  data = config.data
  need(
    data.pipeline in pipeline_lib.PIPELINES,
    "data.pipeline",
    f"must be one of {list(pipeline_lib.PIPELINES)}, got {data.pipeline!r}",
  )
  need(
    data.pipeline == "memory" or str(data.name).startswith("tfds:"),
    "data.pipeline",
    f"'grain' reads tfds data sets (tfds:<name>) from disk, not {data.name!r}; use 'memory'",
  )
  need(data.workers >= 0, "data.workers", f"must be >= 0, got {data.workers}")
  need(data.prefetch >= 1, "data.prefetch", f"must be >= 1, got {data.prefetch}")
  need(
    data.augment in tfds_source.AUGMENTATIONS,
    "data.augment",
    f"must be one of {list(tfds_source.AUGMENTATIONS)}, got {data.augment!r}",
  )
  need(
    data.augment == "none" or data.pipeline == "grain",
    "data.augment",
    f"{data.augment!r} runs in the grain pipeline's workers: set data.pipeline='grain'",
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

  Host arrays, read whole by the calling process: ``map_train`` uses it (a method's
  initialisation pass, which every process computes alike); evaluation uses
  :func:`eval_batches`.
  """
  n = len(split.labels) if limit is None else min(limit, len(split.labels))
  for start in range(0, n, batch_size):
    idx = np.arange(start, min(start + batch_size, n))
    yield (*data_lib.get_batch(split, idx), idx)


def eval_batch_size(batch_size: int, mesh) -> int:
  """``batch_size`` rounded up to a multiple of the mesh's devices.

  >>> eval_batch_size(250, jax.make_mesh((1,), ("data",)))
  250
  """
  n_dev = mesh.shape["data"]
  return -(-batch_size // n_dev) * n_dev


def eval_batches(
  split: data_lib.Split, batch_size: int, mesh, limit: int | None = None
) -> Iterator[tuple[jax.Array, ...]]:
  """``(images, labels, indices)`` of the first ``limit`` examples, as global arrays.

  Full batches of :func:`eval_batch_size` rows are sharded over ``data``: every process
  reads only its devices' rows. The ``r < batch`` rows left over form one last batch
  that every device holds whole (replicated) rather than a zero-padded, masked one: a
  method's ``defects`` are means over the batch it is given, so padding rows would bias
  them, while the count-weighted sum of batch means does not depend on how the rows are
  batched. With one device the batches are exactly those of :func:`batches_of`.
  """
  n = len(split.labels) if limit is None else min(limit, len(split.labels))
  size = eval_batch_size(batch_size, mesh)
  by_rows = jax.NamedSharding(mesh, jax.P("data"))
  rep = jax.NamedSharding(mesh, jax.P())
  for start in range(0, n, size):
    stop = min(start + size, n)
    reader = _RowReader(split, np.arange(start, stop))
    sharding = by_rows if stop - start == size else rep
    yield reader.arrays(sharding, batch_axis=0)


class _RowReader:
  """Global ``(images, labels, indices)`` arrays of the examples ``idx`` of a split.

  ``idx`` has the batch axis at ``batch_axis``; each device's callback reads only the
  columns of that axis it holds (once per column range, shared by images and labels),
  so a process never reads another process's rows.
  """

  def __init__(self, split: data_lib.Split, idx: np.ndarray, image_shape=None):
    self.split, self.idx = split, np.asarray(idx)
    self.image_shape = tuple(image_shape or np.shape(split.images)[1:])
    self._read = {}

  def _rows(self, index, batch_axis):
    key = index[batch_axis].indices(self.idx.shape[batch_axis])
    if key not in self._read:
      part = self.idx[(slice(None),) * batch_axis + (slice(*key),)]
      images, labels = data_lib.get_batch(self.split, part.reshape(-1))
      self._read[key] = (
        images.reshape(part.shape + images.shape[1:]),
        labels.reshape(part.shape),
      )
    return self._read[key]

  def arrays(self, sharding, batch_axis: int) -> tuple[jax.Array, ...]:
    shape = self.idx.shape
    # index[:batch_axis] selects along the axes before the rows (the seed axis: whole)
    images = jax.make_array_from_callback(
      shape + self.image_shape,
      sharding,
      lambda index: self._rows(index, batch_axis)[0][index[:batch_axis]],
    )
    labels = jax.make_array_from_callback(
      shape, sharding, lambda index: self._rows(index, batch_axis)[1][index[:batch_axis]]
    )
    indices = jax.make_array_from_callback(
      shape, sharding, lambda index: self.idx.astype(np.int32)[index]
    )
    return images, labels, indices


@jax.jit
def iterate(state: TrainState) -> PyTree:
  """The parameters to evaluate and export (per seed): the solver's iterate ``x_t``."""
  return jax.vmap(solvers.current_iterate)(state.params, state.opt_state)


def eval_weights(state: TrainState) -> PyTree:
  """The network weights evaluation uses: the averaged iterate if kept, else ``x_t``."""
  return state.average if state.average else iterate(state)["primal"]["weights"]


def make_eval_fns(
  net: networks.SplitNetwork, method: base.Method, tables: rows_lib.RowTables, mesh=None
):
  """Per-batch totals for :func:`sum_over`: ``(accuracy_fn, defect_fn, top_k)``.

  ``accuracy_fn(weights, images, labels, indices)`` sums ``[top-1 correct, top-k
  correct, loss, count]`` of the real forward pass ``f_L(...f_0(x))``;
  ``defect_fn(params, constants, images, labels, indices)`` sums ``[count, defect_0 *
  count, ...]``, each split's mean absolute defect on training examples (tables gathered).
  Both map over the leading seed axis of the weights / params: one row per seed. With a
  ``mesh`` the totals come back replicated on it, so every process reads the same sums
  of a batch whose rows are spread over all processes.
  """
  top_k = 5 if net.num_classes > 10 else 1
  to_segments = method.network_weights or (lambda w: w)
  jit = functools.partial(
    jax.jit, out_shardings=None if mesh is None else jax.NamedSharding(mesh, jax.P())
  )

  @jit
  @functools.partial(jax.vmap, in_axes=(0, None, None, None))  # over seeds
  def accuracy_fn(weights, images, labels, indices):
    del indices
    logits = networks.forward(net, to_segments(weights), images).astype(jnp.float32)
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

  @jit
  @functools.partial(jax.vmap, in_axes=(0, 0, None, None, None))  # over seeds
  def defect_fn(params, constants, images, labels, indices):
    batch = base.Batch(images, labels, indices)
    defects = method.defects(rows_lib.gather(params, tables.params, indices), constants, batch)
    count = labels.shape[0]
    return jnp.concatenate(
      [jnp.full((1,), count, jnp.float32), defects.astype(jnp.float32) * count]
    )

  return accuracy_fn, defect_fn, top_k


def _mesh_of(tree: PyTree):
  """The mesh the arrays of ``tree`` live on (a 1-D ``data`` mesh over their devices)."""
  sharding = jax.tree.leaves(tree)[0].sharding
  if isinstance(sharding, jax.NamedSharding):
    return sharding.mesh
  devices = sorted(sharding.device_set, key=lambda d: (d.process_index, d.id))
  return jax.make_mesh(
    (len(devices),), ("data",), devices=devices, axis_types=(jax.sharding.AxisType.Auto,)
  )


def sum_over(split: data_lib.Split, fn, batch_size: int, limit: int | None = None, *, mesh):
  """The sum of ``fn(images, labels, indices)`` over :func:`eval_batches` (float64).

  ``fn``'s totals must be replicated (``make_eval_fns(..., mesh)``) or on one process.
  """
  return sum(
    np.asarray(fn(*batch), np.float64) for batch in eval_batches(split, batch_size, mesh, limit)
  )


def evaluate(
  split: data_lib.Split, weights: PyTree, accuracy_fn, batch_size: int, mesh=None
) -> dict:
  """Accuracy, top-k accuracy and loss of the real forward pass on a split, per seed.

  The batches are spread over ``mesh`` (default: the one ``weights`` live on).
  """
  mesh = _mesh_of(weights) if mesh is None else mesh
  totals = sum_over(split, functools.partial(accuracy_fn, weights), batch_size, mesh=mesh)
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
    mesh=_mesh_of(params) if mesh is None else mesh,
  )
  return totals[:, 1:] / np.maximum(totals[:, :1], 1.0)


# ----------------------------------------------------------------------------------
# Sharding
# ----------------------------------------------------------------------------------


def mesh_shape(config, n_all: int) -> tuple[int, int]:
  """``(data, stage)`` from ``config.mesh``: ``num_devices`` devices in all (-1: all
  ``n_all``), ``stage`` of them per data replica, ``data * stage = num_devices``; one of
  ``data`` / ``stage`` may be -1 (the devices that remain).

  >>> import ml_collections
  >>> mesh_shape(ml_collections.ConfigDict({"mesh": {"num_devices": -1, "data": -1, "stage": 4}}), 8)
  (2, 4)
  """
  m = config.mesh
  n = n_all if m.num_devices == -1 else m.num_devices
  data, stage = m.get("data", -1), m.get("stage", 1)
  errors.require(1 <= n <= n_all, "mesh.num_devices", f"{n} requested, {n_all} available")
  errors.require(
    not (data == -1 and stage == -1), "mesh.stage", "only one of mesh.data, mesh.stage may be -1"
  )
  for key, value in (("data", data), ("stage", stage)):
    errors.require(
      value == -1 or (value >= 1 and n % value == 0),
      f"mesh.{key}",
      f"{value} does not divide the {n} devices of the mesh (or use -1: the rest)",
    )
  data = n // stage if data == -1 else data
  stage = n // data if stage == -1 else stage
  errors.require(
    data * stage == n,
    "mesh.data",
    f"mesh.data={data} x mesh.stage={stage} is not the {n} devices (mesh.num_devices)",
  )
  return data, stage


def make_mesh(config) -> jax.sharding.Mesh:
  """A ``(data, stage)`` mesh over ``config.mesh.num_devices`` devices of all processes.

  ``data`` splits batches and per-example tables; ``stage`` holds the blocks of
  stage-parallel DistProp (``methods.stage_parallel``; 1 by default: today's data-only
  mesh). Every process gives the same number of devices, ``num_devices /
  jax.process_count()``, so on several hosts the ``data`` axis crosses hosts and each
  process holds (and reads) its own rows of every batch and table; ``stage`` is the
  inner axis, so a stage group stays within a host when ``stage`` divides its devices.
  All devices of several processes are ordered by ``jax.make_mesh`` (by the physical
  topology: rings of TPU chips); a subset, or one process, keeps ``jax.devices()``
  order, process by process.
  """
  n_all, n_proc = jax.device_count(), jax.process_count()
  data, stage = mesh_shape(config, n_all)
  n = data * stage
  errors.require(
    n % n_proc == 0,
    "mesh.num_devices",
    f"{n} devices do not split evenly over {n_proc} processes",
  )
  shape, names = (data, stage), ("data", "stage")
  axis_types = (jax.sharding.AxisType.Auto,) * 2
  if n_proc > 1 and n == n_all:
    return jax.make_mesh(shape, names, axis_types=axis_types)
  per_process = n // n_proc
  devices = [
    d
    for p in range(n_proc)
    for d in [d for d in jax.devices() if d.process_index == p][:per_process]
  ]
  return jax.make_mesh(shape, names, devices=devices, axis_types=axis_types)


class Staged(NamedTuple):
  """Which flattened leaves are laid out over the ``stage`` axis (stage-parallel)."""

  params: tuple[bool, ...]
  opt_state: tuple[bool, ...]
  constants: tuple[bool, ...]
  average: tuple[bool, ...]


def _shardings(mesh, tree: PyTree, tables=None, staged=None) -> PyTree:
  """Per leaf (after the seed axis): table rows over ``data``, stage-laid-out leading
  axes over ``stage``, the rest replicated."""
  leaves, treedef = jax.tree.flatten(tree)
  tables, staged = tables or (False,) * len(leaves), staged or (False,) * len(leaves)
  spec = {(True, False): jax.P(None, "data"), (False, True): jax.P(None, "stage")}
  return jax.tree.unflatten(
    treedef,
    [
      jax.NamedSharding(mesh, spec.get((t, s), jax.P()))
      for _, t, s in zip(leaves, tables, staged, strict=True)
    ],
  )


def state_shardings(
  mesh, state: TrainState, tables: rows_lib.RowTables, staged: Staged | None = None
) -> TrainState:
  """Tables sharded by rows (their axis after the seed axis) over ``data``, the leaves of
  a stage-parallel method over ``stage``; the rest replicated."""
  staged = staged or Staged(None, None, None, None)
  return TrainState(
    step=jax.NamedSharding(mesh, jax.P()),
    params=_shardings(mesh, state.params, tables.params, staged.params),
    opt_state=_shardings(mesh, state.opt_state, tables.opt_state, staged.opt_state),
    constants=_shardings(mesh, state.constants, None, staged.constants),
    average=_shardings(mesh, state.average, None, staged.average if state.average else None),
  )


def stage_flags(method: base.Method, tx, params: PyTree, constants: PyTree) -> Staged | None:
  """The :class:`Staged` leaves of one seed's ``params`` / ``constants`` (None: none)."""
  where = method.placement(params, constants)
  flags = jax.tree.map(lambda x: x == base.STAGES, where.params)
  if not any(jax.tree.leaves(flags)):
    return None
  mirrored = rows_lib.find(flags, tx, params)  # optimizer leaves that mirror them
  return Staged(
    mirrored.params,
    mirrored.opt_state,
    base.placement_flags(where.constants, base.STAGES),
    tuple(jax.tree.leaves(flags["primal"]["weights"])),
  )


def _global_from_host(tree: PyTree, shardings: PyTree) -> PyTree:
  """Host arrays (the same on every process) as global arrays; each device copies its
  slice."""
  return jax.tree.map(
    lambda x, s: jax.make_array_from_callback(np.shape(x), s, lambda index: np.asarray(x)[index]),
    tree,
    shardings,
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


def build_experiment(
  config, dataset: data_lib.Dataset | None = None, mesh: jax.sharding.Mesh | None = None
) -> Experiment:
  """Everything but the loop: data, network, method, optimizer, mesh, jitted step.

  ``mesh``: a ``(data, stage)`` mesh to run on instead of :func:`make_mesh`'s (e.g. one
  process's own device beside a multi-process mesh, as the stage benchmark does)."""
  check_loop_config(config)
  if dataset is None:
    dataset = data_lib.load_dataset(
      config.data.name,
      data_dir=os.path.expanduser(config.data.data_dir) or None,
      validation_fraction=config.data.validation_fraction,
      seed=config.data.seed,
      image_size=config.data.image_size or None,
      max_train_examples=config.data.max_train_examples or None,
      lazy=config.data.pipeline == "grain",
    )
  net = networks.from_config(
    config.network, num_classes=dataset.num_classes, input_shape=tuple(dataset.image_shape)
  )
  mesh = make_mesh(config) if mesh is None else mesh
  method = methods_lib.make_method(config, net, len(dataset.train.labels), mesh)
  n_dev = mesh.shape["data"]
  errors.require(
    config.batch_size % n_dev == 0,
    "batch_size",
    f"{config.batch_size} is not divisible by the {n_dev} devices of the data mesh",
  )

  seeds = tuple(range(config.seed, config.seed + config.num_seeds))
  params, constants, flags = init_params(config, dataset, method, mesh, seeds)
  one_seed = jax.eval_shape(unstack, params)
  tx, solver = optimizers.from_config(
    config,
    default_solver=method.default_solver,
    primal_labels=method.primal_labels(one_seed["primal"]),
    group_rates=method.group_rates,
    steps_per_epoch=data_lib.steps_per_epoch(len(dataset.train.labels), config.batch_size),
    clip_weights=method.norm_weights(one_seed) if method.norm_weights else None,
  )
  tables = rows_lib.find(flags, tx, one_seed)
  staged = stage_flags(method, tx, one_seed, jax.eval_shape(unstack, constants))

  @jax.vmap
  def init_state(params, constants):
    average = params["primal"]["weights"] if config.average_decay > 0 else {}
    return TrainState(jnp.zeros([], jnp.int32), params, tx.init(params), constants, average)

  shardings = state_shardings(mesh, jax.eval_shape(init_state, params, constants), tables, staged)
  state = jax.jit(init_state, out_shardings=shardings)(params, constants)
  del params, constants
  rows_sharding = jax.NamedSharding(mesh, jax.P(None, "data"))
  rep = jax.NamedSharding(mesh, jax.P())
  batch_shardings = base.Batch(rows_sharding, rows_sharding, rows_sharding, rep)
  train_step = jax.jit(
    jax.vmap(make_train_step(method, tx, tables, config.average_decay)),
    in_shardings=(shardings, batch_shardings),
    out_shardings=(shardings, rep),  # metrics replicated: every process reads them
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
  """Step ``step``'s batch of every seed, stacked: a pure function of (seed, step).

  Global arrays ``(seeds, batch, ...)`` sharded ``P(None, "data")``: each process reads
  only the examples of its own devices' columns.
  """
  n = len(exp.dataset.train.labels)
  idx = np.stack([data_lib.batch_indices(n, exp.config.batch_size, step, s) for s in exp.seeds])
  images, labels, indices = _RowReader(exp.dataset.train, idx, exp.dataset.image_shape).arrays(
    exp.batch_shardings.images, batch_axis=1
  )
  steps = np.full((len(exp.seeds),), step, np.int32)
  return base.Batch(images, labels, indices, _global_from_host(steps, exp.batch_shardings.step))


class _NeedsData(Exception):
  """Raised by the ``map_train`` given to a traced ``method.init``."""


def _placeholders_as_zeros(params: PyTree) -> PyTree:
  return jax.tree.map(
    lambda x: jnp.zeros(x.shape, x.dtype) if isinstance(x, jax.ShapeDtypeStruct) else x, params
  )


def init_params(config, dataset: data_lib.Dataset, method: base.Method, mesh, seeds):
  """``(params, constants, table_flags)`` of every seed, stacked, as global arrays on
  ``mesh``: per-example tables padded to a multiple of the devices and sharded by rows
  over ``data``, everything else replicated.

  No process holds a whole table. The whole initialisation is one jitted, ``jax.vmap``ped
  program whose tables come out sharded (zeros are never materialised whole), and a
  method with ``init_rows`` (ExtraProp's forward-pass states) gets its tables built
  shard by shard with ``jax.make_array_from_callback``: each process runs ``init_rows``
  on the training examples of its own rows only, in batches of ``eval_batch_size``.

  The one exception: an ``init`` that reads data through ``map_train`` (DistProp's
  ``prototype_init="data"``, class statistics of a prefix of the training set) cannot be
  traced; it runs eagerly on every process, and its tables (DistProp's per-example
  multipliers, zeros) are created whole on each process before being sharded.
  """
  n_dev, n_train = mesh.shape["data"], len(dataset.train.labels)

  def map_train(fn, limit=None):  # eager, the calling process's own pass
    jfn = jax.jit(fn)
    outs = [
      jfn(images, labels)
      for images, labels, _ in batches_of(dataset.train, config.eval_batch_size, limit)
    ]
    return jax.tree.map(lambda *xs: jnp.concatenate(xs), *outs)

  def abstract_map_train(fn, limit=None):  # shapes only, under jax.eval_shape
    n = n_train if limit is None else min(limit, n_train)
    return fn(jnp.zeros((n, *dataset.image_shape), jnp.float32), jnp.zeros((n,), jnp.int32))

  def traced_map_train(fn, limit=None):
    raise _NeedsData

  with_rows = method.init_rows is not None

  def init_shapes():
    params, constants = method.init(jax.random.key(0), None if with_rows else abstract_map_train)
    return _placeholders_as_zeros(params), constants

  one_seed, one_constants = jax.eval_shape(init_shapes)
  where = method.placement(one_seed, one_constants)
  flags = base.placement_flags(where.params, base.ROWS)
  staged_p = base.placement_flags(where.params, base.STAGES)
  staged_c = base.placement_flags(where.constants, base.STAGES)

  def init_one(key):
    params, constants = method.init(key, None if with_rows else traced_map_train)
    return rows_lib.pad(_placeholders_as_zeros(params), flags, n_dev), constants

  def init_all():
    return jax.vmap(init_one)(jax.vmap(jax.random.key)(jnp.asarray(seeds)))

  try:
    shapes = jax.eval_shape(init_all)
  except _NeedsData:
    inits = [_init_one_eager(method, seed, map_train, flags, n_dev) for seed in seeds]
    params, constants = jax.tree.map(lambda *xs: np.stack(xs), *inits)
    params = _global_from_host(params, _shardings(mesh, params, flags, staged_p))
    constants = _global_from_host(constants, _shardings(mesh, constants, None, staged_c))
    return params, constants, flags
  out_shardings = (
    _shardings(mesh, shapes[0], flags, staged_p),
    _shardings(mesh, shapes[1], None, staged_c),
  )
  params, constants = jax.jit(init_all, out_shardings=out_shardings)()
  if with_rows:
    params = _tables_from_rows(config, dataset, method, params, constants, flags)
  return params, constants, flags


def _init_one_eager(method, seed: int, map_train, flags, n_dev: int):
  params, constants = method.init(jax.random.key(seed), map_train)
  return rows_lib.pad(params, flags, n_dev), constants


def _tables_from_rows(config, dataset: data_lib.Dataset, method, params, constants, flags):
  """``params`` with every table rebuilt from ``method.init_rows``, shard by shard."""
  n_train, batch = len(dataset.train.labels), config.eval_batch_size
  leaves, treedef = jax.tree.flatten(params)
  tables = [x for x, f in zip(leaves, flags) if f]
  num_seeds, n_pad = tables[0].shape[:2]
  # this process's copy of the replicated leaves; init_rows gets the tables empty
  small = jax.tree.unflatten(
    treedef,
    [
      np.zeros((x.shape[0], 0, *x.shape[2:]), x.dtype) if f else x.addressable_data(0)
      for x, f in zip(leaves, flags)
    ],
  )
  consts = jax.tree.map(lambda x: x.addressable_data(0), constants)
  per_seed = [jax.tree.map(lambda x, k=k: x[k], (small, consts)) for k in range(num_seeds)]

  @jax.jit
  def rows_fn(p, c, images, labels):
    out = jax.tree.leaves(method.init_rows(p, c, images, labels))
    return [x for x, f in zip(out, flags) if f]

  cache = {}

  def shard_rows(index) -> list[np.ndarray]:  # every table's rows of one shard, all seeds
    start, stop, _ = index[1].indices(n_pad)
    if (start, stop) not in cache:
      real = min(stop, n_train)  # the rows past n_train pad the table with zeros
      blocks = [np.zeros((num_seeds, stop - start, *t.shape[2:]), t.dtype) for t in tables]
      for k, (p, c) in enumerate(per_seed):
        for b in range(start, real, batch):
          idx = np.arange(b, min(b + batch, real))
          for block, x in zip(blocks, rows_fn(p, c, *data_lib.get_batch(dataset.train, idx))):
            block[k, b - start : b - start + len(idx)] = np.asarray(x)
      cache[(start, stop)] = blocks
    return cache[(start, stop)]

  built = iter(
    [
      jax.make_array_from_callback(
        t.shape, t.sharding, lambda index, i=i: shard_rows(index)[i][index[:1]]
      )
      for i, t in enumerate(tables)
    ]
  )
  return jax.tree.unflatten(treedef, [next(built) if f else x for x, f in zip(leaves, flags)])


def unstack(tree: PyTree, seed_index: int = 0) -> PyTree:
  """One seed's slice of a stacked pytree (a state, metrics)."""
  return jax.tree.map(lambda x: x[seed_index], tree)


# ----------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------


class InputFeed:
  """The loop's training batches, and what of them a checkpoint holds.

  ``config.data.pipeline = "memory"``: :func:`make_batch`, a pure function of ``(seed,
  step)``; a checkpoint holds the train state alone. ``"grain"``:
  :class:`~lagrangian_jax.data.pipeline.GrainInput` (workers, prefetch); a checkpoint
  holds the train state (item ``state``) and every process's grain iterator state (item
  ``input``), saved and restored together.
  """

  def __init__(self, exp: Experiment):
    self.exp, self.grain = exp, None
    data = exp.config.data
    if data.pipeline == "grain":
      self.grain = pipeline_lib.GrainInput(
        exp.dataset.train,
        batch_size=exp.config.batch_size,
        seeds=exp.seeds,
        sharding=exp.batch_shardings.images,
        workers=data.workers,
        prefetch=data.prefetch,
        augment=data.augment,
        num_steps=exp.config.num_steps,
      )

  def batch(self, step: int) -> base.Batch:
    if self.grain is None:
      return make_batch(self.exp, step)
    images, labels, indices = self.grain.next(step)
    steps = np.full((len(self.exp.seeds),), step, np.int32)
    return base.Batch(
      images, labels, indices, _global_from_host(steps, self.exp.batch_shardings.step)
    )

  def close(self) -> None:
    """Stops the grain workers (and frees the batches they prefetched)."""
    if self.grain is not None:
      self.grain.iterator.close()

  def save_args(self, state: TrainState):
    if self.grain is None:
      return ocp.args.StandardSave(state)
    import grain.python as grain

    return ocp.args.Composite(
      state=ocp.args.StandardSave(state), input=grain.PyGrainCheckpointSave(self.grain.iterator)
    )

  def restore(self, ckpt: ocp.CheckpointManager, step: int, target: TrainState) -> TrainState:
    if self.grain is None:
      return ckpt.restore(step, args=ocp.args.StandardRestore(target))
    import grain.python as grain

    restored = ckpt.restore(
      step,
      args=ocp.args.Composite(
        state=ocp.args.StandardRestore(target),
        input=grain.PyGrainCheckpointRestore(self.grain.iterator),
      ),
    )
    return restored.state


def _say(line: str) -> None:
  """A warning or progress line on stderr, from process 0 only (one line per run)."""
  if jax.process_index() == 0:
    print(line, file=sys.stderr, flush=True)


def _checkpoint_manager(workdir: str, config) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(
    max_to_keep=config.keep_checkpoints, enable_async_checkpointing=False
  )
  return ocp.CheckpointManager(
    os.path.join(os.path.abspath(workdir), "checkpoints"), options=options
  )


def restore_newest(
  ckpt: ocp.CheckpointManager, state: TrainState, workdir: str, feed: InputFeed | None = None
):
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
      if feed is not None:
        return feed.restore(ckpt, step, state), step
      return ckpt.restore(step, args=ocp.args.StandardRestore(state)), step
    except Exception as e:  # noqa: BLE001 (orbax raises many types for unreadable data)
      reason = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
      first_error = first_error or reason
      _say(
        f"warning: the checkpoint at step {step} in {where} does not restore "
        f"({reason}); trying an older one"
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
  test = evaluate(dataset.test, weights, accuracy_fn, config.eval_batch_size, exp.mesh)
  val = evaluate(dataset.validation, weights, accuracy_fn, config.eval_batch_size, exp.mesh)
  defects = train_defects(config, dataset, iterate(state), state.constants, defect_fn, exp.mesh)
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

  feed = InputFeed(exp)
  state, start = restore_newest(ckpt, exp.initial_state, workdir, feed)
  if start is not None and start > config.num_steps:
    raise errors.TrainingError(
      f"{workdir} holds a checkpoint at step {start}, past config.num_steps="
      f"{config.num_steps}; use a new --workdir or more steps"
    )
  chief = jax.process_index() == 0  # the one process that writes files
  if start is not None:
    _say(f"resuming from the checkpoint at step {start} in {workdir}")
    if chief:
      reporting.truncate_metrics(metrics_path, start)
  else:
    start = 0
    if chief and os.path.exists(metrics_path):
      os.remove(metrics_path)
  if chief:
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json_best_effort(indent=2))

  fns = make_eval_fns(exp.net, exp.method, exp.tables, exp.mesh)
  writer = reporting.MetricsWriter(metrics_path, enabled=chief)

  def run_eval(step):
    record = evaluation_record(exp, state, step, fns)
    writer.write(record)
    return record

  bar = reporting.progress(config.num_steps, start, enabled=config.progress_bar and chief)
  last_eval, record = None, {}
  train_seconds, first_seconds, last_good = 0.0, 0.0, start
  try:
    for step in range(start, config.num_steps):
      t0 = time.time()
      state, metrics = exp.train_step(state, feed.batch(step))
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
        ckpt.save(done, args=feed.save_args(state))
        last_good = done
      bar.update(1)
  finally:
    bar.close()
    feed.close()
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
  if chief:
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
