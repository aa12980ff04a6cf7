"""The ``(data, stage)`` mesh and where every leaf of the train state lives on it.

A method says once where its leaves live (``Method.placement``: :data:`~lagrangian_jax.
methods.base.ROWS`, :data:`~lagrangian_jax.methods.base.STAGES` or
:data:`~lagrangian_jax.methods.base.REPLICATED` per leaf of ``params`` / ``constants``).
:func:`state_placement` is the one reader of it: it labels every flattened leaf of one
seed's train state, the optimizer leaves that mirror a parameter leaf (``rows.find``)
included, once per run. The shardings (:func:`state_shardings`), the step's sparse row
updates (:attr:`StatePlacement.tables`) and the evaluators all read that one
:class:`StatePlacement`. On the mesh (after the seed axis of every leaf):

* ``ROWS``: a per-example table, rows over ``data``: ``P(None, "data")``;
* ``STAGES``: leading axis over ``stage`` (stage-parallel DistProp): ``P(None, "stage")``;
* ``REPLICATED``: every device holds the whole leaf: ``P()``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import numpy as np

from lagrangian_jax import errors
from lagrangian_jax import rows as rows_lib
from lagrangian_jax.methods import base

PyTree = Any

_SPECS = {
  base.ROWS: jax.P(None, "data"),
  base.STAGES: jax.P(None, "stage"),
  base.REPLICATED: jax.P(),
}


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


def check_batch_keys(config) -> None:
  """Exactly one of ``config.batch_size`` (the global batch) and
  ``config.per_device_batch_size`` is set (0 unsets one); else one ``ConfigError``.

  >>> import ml_collections
  >>> check_batch_keys(ml_collections.ConfigDict({"batch_size": 0, "per_device_batch_size": 0}))
  Traceback (most recent call last):
  ...
  lagrangian_jax.errors.ConfigError: config.batch_size: must be a positive int, got 0, or set config.per_device_batch_size (the global batch is then it x the mesh's data axis)
  """
  both = config.batch_size and config.get("per_device_batch_size", 0)
  errors.require(
    not both,
    "per_device_batch_size",
    f"set it or config.batch_size, not both ({config.per_device_batch_size} and "
    f"{config.batch_size}; 0 unsets one)",
  )
  errors.require(
    config.batch_size or config.get("per_device_batch_size", 0),
    "batch_size",
    f"must be a positive int, got {config.batch_size}, or set config.per_device_batch_size "
    "(the global batch is then it x the mesh's data axis)",
  )


def with_global_batch(config, mesh: jax.sharding.Mesh | None = None):
  """``config`` with ``batch_size`` the global batch: as it is when set, else
  ``per_device_batch_size x data`` (a copy, ``per_device_batch_size`` then 0).

  ``data`` is the size of the mesh's ``data`` axis, which spans every process's devices:
  the global batch is ``per_device_batch_size x`` the data replicas of all hosts (a stage
  group of ``mesh.stage`` devices holds one replica's rows). Without ``mesh``, the
  ``data`` size ``config.mesh`` gives over all devices (:func:`mesh_shape`).

  >>> from configs import base
  >>> config = base.get_config()
  >>> config.batch_size, config.per_device_batch_size = 0, 32
  >>> with_global_batch(config, jax.make_mesh((1, 1), ("data", "stage"))).batch_size
  32
  """
  check_batch_keys(config)
  if config.batch_size:
    return config
  data = mesh.shape["data"] if mesh is not None else mesh_shape(config, jax.device_count())[0]
  resolved = config.copy_and_resolve_references()
  resolved.batch_size = config.per_device_batch_size * data
  resolved.per_device_batch_size = 0
  return resolved


def make_mesh(config) -> jax.sharding.Mesh:
  """A ``(data, stage)`` mesh over ``config.mesh.num_devices`` devices of all processes.

  ``data`` splits batches and per-example tables; ``stage`` holds the blocks of
  stage-parallel DistProp (1 by default: a data-only mesh). Every process gives the same
  number of devices, ``num_devices / jax.process_count()``, so on several hosts the
  ``data`` axis crosses hosts and each process holds (and reads) its own rows of every
  batch and table; ``stage`` is the inner axis, so a stage group stays within a host when
  ``stage`` divides its devices. All devices of several processes are ordered by
  ``jax.make_mesh`` (by the physical topology: rings of TPU chips); a subset, or one
  process, keeps ``jax.devices()`` order, process by process.
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


def mesh_of(tree: PyTree) -> jax.sharding.Mesh:
  """The mesh the arrays of ``tree`` live on (a 1-D ``data`` mesh over their devices)."""
  sharding = jax.tree.leaves(tree)[0].sharding
  if isinstance(sharding, jax.NamedSharding):
    return sharding.mesh
  devices = sorted(sharding.device_set, key=lambda d: (d.process_index, d.id))
  return jax.make_mesh(
    (len(devices),), ("data",), devices=devices, axis_types=(jax.sharding.AxisType.Auto,)
  )


def is_label(labels: tuple[str, ...], label: str) -> tuple[bool, ...]:
  """One bool per leaf: is it ``label``?"""
  return tuple(x == label for x in labels)


class StatePlacement(NamedTuple):
  """One label per flattened leaf of one seed's train state parts (``base.ROWS``,
  ``base.STAGES`` or ``base.REPLICATED``); ``average`` mirrors the network weights
  (empty when no average is kept)."""

  params: tuple[str, ...]
  opt_state: tuple[str, ...]
  constants: tuple[str, ...]
  average: tuple[str, ...]

  @property
  def tables(self) -> rows_lib.RowTables:
    """The per-example tables among the parameters and the optimizer state."""
    return rows_lib.RowTables(is_label(self.params, base.ROWS), is_label(self.opt_state, base.ROWS))


def state_placement(
  method: base.Method, tx, params: PyTree, constants: PyTree, keep_average: bool
) -> StatePlacement:
  """Labels every leaf of one seed's state from ``method.placement`` (shapes suffice).

  An optimizer leaf takes the label of the parameter leaf it mirrors (``rows.find``: it
  grows with that leaf), else ``REPLICATED``.
  """
  where = method.placement(params, constants)
  labels = tuple(jax.tree.leaves(where.params))

  def mirrored(label):
    return rows_lib.find(is_label(labels, label), tx, params).opt_state

  rows, stages = mirrored(base.ROWS), mirrored(base.STAGES)
  opt_labels = tuple(
    base.ROWS if r else base.STAGES if s else base.REPLICATED for r, s in zip(rows, stages)
  )
  average = tuple(jax.tree.leaves(where.params["primal"]["weights"])) if keep_average else ()
  return StatePlacement(labels, opt_labels, tuple(jax.tree.leaves(where.constants)), average)


def shardings(mesh, tree: PyTree, labels: tuple[str, ...]) -> PyTree:
  """The ``NamedSharding`` of each leaf of ``tree`` (seed axis first) from its label."""
  leaves, treedef = jax.tree.flatten(tree)
  return jax.tree.unflatten(
    treedef,
    [jax.NamedSharding(mesh, _SPECS[label]) for _, label in zip(leaves, labels, strict=True)],
  )


def state_shardings(mesh, state, placement: StatePlacement):
  """The shardings of a stacked train state (a ``state.TrainState`` of shapes)."""
  return type(state)(
    step=jax.NamedSharding(mesh, jax.P()),
    params=shardings(mesh, state.params, placement.params),
    opt_state=shardings(mesh, state.opt_state, placement.opt_state),
    constants=shardings(mesh, state.constants, placement.constants),
    average=shardings(mesh, state.average, placement.average),
  )


def batch_shardings(mesh) -> base.Batch:
  """A stacked batch's: ``(seeds, batch, ...)`` rows over ``data``; the steps replicated."""
  rows = jax.NamedSharding(mesh, jax.P(None, "data"))
  return base.Batch(rows, rows, rows, jax.NamedSharding(mesh, jax.P()))


def global_from_host(tree: PyTree, shardings: PyTree) -> PyTree:
  """Host arrays (the same on every process) as global arrays; each device copies its
  slice.

  >>> mesh = jax.make_mesh((1,), ("data",))
  >>> global_from_host(np.arange(3), jax.NamedSharding(mesh, jax.P())).shape
  (3,)
  """
  return jax.tree.map(
    lambda x, s: jax.make_array_from_callback(np.shape(x), s, lambda index: np.asarray(x)[index]),
    tree,
    shardings,
  )
