"""The train state and everything the loop needs before its first step.

:func:`build_experiment` assembles a run: data, network, method and optimizer
(:func:`abstract_state`, shapes only), where every leaf lives (``sharding.
state_placement``, once), the state created sharded on the mesh and the jitted step.

Seeds in one program: ``config.num_seeds = N`` trains seeds ``config.seed .. +N-1`` in
one jitted step, ``jax.vmap`` over a leading seed axis of the whole train state (its own
initialisation, noise and batch order per seed; the data split is shared). Every leaf of
the state has that axis, also for ``N = 1``.

Reproducibility, as it is: the same command (the same config, ``num_seeds`` included, on
the same devices and installation) gives the same numbers bit for bit, also when killed
and resumed. Seed ``k`` of an ``N``-seed run starts as a run of ``config.seed + k`` alone
(the same initialisation, noise and batches) and agrees with it to float32 rounding for a
few steps, but not bit for bit: the batched program rounds differently, and training
amplifies the difference (``configs/default.py``'s seed 0 at 700 steps: 0.963 alone,
0.973 beside seed 1, 0.968 among five). Compare seeds within one run, not across runs of
different ``num_seeds``.

Averaged iterates: with ``config.average_decay = d > 0`` the state keeps an exponential
moving average of the iterate's network weights, ``a <- d a + (1 - d) x_t``, which
evaluation uses (the iterate itself still drives training).

No process holds a whole per-example table: they are created sharded by rows, and a
method's initial rows (``Method.init_rows``) are computed shard by shard by the processes
that hold them (:func:`init_params`).

Example (shapes only, no data read)::

  shapes = abstract_state(config, net, num_train=3500)
  shapes.opt_state  # one seed's optimizer state as jax.ShapeDtypeStruct
"""

from __future__ import annotations

from collections.abc import Callable
import os
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from lagrangian_jax import config_rules
from lagrangian_jax import data as data_lib
from lagrangian_jax import errors
from lagrangian_jax import methods as methods_lib
from lagrangian_jax import networks
from lagrangian_jax import optimizers
from lagrangian_jax import rows as rows_lib
from lagrangian_jax import sharding
from lagrangian_jax import solvers
from lagrangian_jax import step as step_lib
from lagrangian_jax.data import feed as feed_lib
from lagrangian_jax.methods import base

PyTree = Any


class TrainState(NamedTuple):
  """The whole state of a run; every leaf has a leading seed axis."""

  step: jax.Array
  params: PyTree
  opt_state: PyTree
  constants: PyTree
  average: PyTree  # EMA of the iterate's weights ({} when config.average_decay == 0)


class Experiment(NamedTuple):
  config: Any
  dataset: data_lib.Dataset
  net: networks.SplitNetwork
  method: base.Method
  tx: Any
  solver: str  # the solver the optimizer runs (config.solver or the method's)
  placement: sharding.StatePlacement  # where each leaf lives; .tables: per-example tables
  seeds: tuple[int, ...]  # the seeds of the leading state axis
  mesh: Any
  shardings: TrainState
  batch_shardings: base.Batch
  initial_state: TrainState  # freshly initialised, created sharded on the mesh
  train_step: Callable  # jitted (state, batch) -> (state, metrics), all seeds at once


class AbstractState(NamedTuple):
  """One seed's method, optimizer and state shapes (``jax.ShapeDtypeStruct``)."""

  method: base.Method
  tx: Any
  solver: str
  params: PyTree
  constants: PyTree
  opt_state: PyTree


def check_loop_config(config) -> None:
  """The gate every run passes before anything is built: every value by its rule
  (``config_rules.validate``: a bad value or a key without a rule is refused), then the
  data keys that must agree with each other; every component checks its own cross-key
  conditions."""
  config_rules.validate(config)
  _check_data_config(config.data)
  sharding.check_batch_keys(config)


def _check_data_config(data) -> None:
  need = errors.require
  need(
    data.pipeline == "memory" or str(data.name).startswith("tfds:"),
    "data.pipeline",
    f"'grain' reads tfds data sets (tfds:<name>) from disk, not {data.name!r}; use 'memory'",
  )
  need(
    data.augment == "none" or data.pipeline == "grain",
    "data.augment",
    f"{data.augment!r} runs in the grain pipeline's workers: set data.pipeline='grain'",
  )


def load_dataset(config) -> data_lib.Dataset:
  """The data set ``config.data`` names (lazy on disk for the grain pipeline)."""
  data = config.data
  return data_lib.load_dataset(
    data.name,
    data_dir=os.path.expanduser(data.data_dir) or None,
    validation_fraction=data.validation_fraction,
    seed=data.seed,
    image_size=data.image_size or None,
    max_train_examples=data.max_train_examples or None,
    lazy=data.pipeline == "grain",
    num_classes=data.num_classes or None,
  )


def _placeholders_as_zeros(params: PyTree) -> PyTree:
  return jax.tree.map(
    lambda x: jnp.zeros(x.shape, x.dtype) if isinstance(x, jax.ShapeDtypeStruct) else x, params
  )


def abstract_state(config, net: networks.SplitNetwork, num_train: int, mesh=None):
  """:class:`AbstractState`: ``config``'s method and optimizer, and one seed's state in
  shapes only (tables of ``num_train`` rows, unpadded); nothing is allocated, no data read.

  ``mesh``: the ``(data, stage)`` mesh the method is made for (stage-parallel DistProp).
  An ``init`` that reads the training set (``map_train``) reads zeros of its shape.
  """
  config = sharding.with_global_batch(config, mesh)
  method = methods_lib.make_method(config, net, num_train, mesh)

  def map_train(fn, limit=None):
    n = num_train if limit is None else min(limit, num_train)
    return fn(jnp.zeros((n, *net.input_shape), jnp.float32), jnp.zeros((n,), jnp.int32))

  def init():
    with_rows = method.init_rows is not None  # then init returns its tables as shapes
    params, constants = method.init(jax.random.key(0), None if with_rows else map_train)
    return _placeholders_as_zeros(params), constants

  params, constants = jax.eval_shape(init)
  tx, solver = optimizers.from_config(
    config,
    default_solver=method.default_solver,
    primal_labels=method.primal_labels(params["primal"]),
    group_rates=method.group_rates,
    steps_per_epoch=data_lib.steps_per_epoch(num_train, config.batch_size),
    clip_weights=method.norm_weights(params) if method.norm_weights else None,
  )
  return AbstractState(method, tx, solver, params, constants, jax.eval_shape(tx.init, params))


def build_experiment(
  config, dataset: data_lib.Dataset | None = None, mesh: jax.sharding.Mesh | None = None
) -> Experiment:
  """Everything but the loop: data, network, method, optimizer, mesh, state, jitted step.

  ``mesh``: a ``(data, stage)`` mesh to run on instead of ``sharding.make_mesh``'s (e.g.
  one process's own device beside a multi-process mesh, as the stage benchmark does)."""
  check_loop_config(config)
  dataset = load_dataset(config) if dataset is None else dataset
  net = networks.from_config(
    config.network,
    num_classes=dataset.num_classes,
    input_shape=tuple(dataset.image_shape),
    dtype=config.get("dtype", "float32"),  # configs written before the key: float32
  )
  mesh = sharding.make_mesh(config) if mesh is None else mesh
  config = sharding.with_global_batch(config, mesh)  # from here on, the global batch
  shapes = abstract_state(config, net, len(dataset.train.labels), mesh)
  n_dev = mesh.shape["data"]
  errors.require(
    config.batch_size % n_dev == 0,
    "batch_size",
    f"{config.batch_size} is not divisible by the {n_dev} devices of the data mesh",
  )
  method, tx = shapes.method, shapes.tx
  placement = sharding.state_placement(
    method, tx, shapes.params, shapes.constants, keep_average=config.average_decay > 0
  )
  seeds = tuple(range(config.seed, config.seed + config.num_seeds))
  state, shardings = create_state(config, dataset, shapes, mesh, seeds, placement)
  batch_shardings = sharding.batch_shardings(mesh)
  train_step = jax.jit(
    jax.vmap(
      step_lib.make_train_step(
        method, tx, placement.tables, config.average_decay, data_lib.pixel_stats(dataset)
      )
    ),
    in_shardings=(shardings, batch_shardings),
    out_shardings=(shardings, batch_shardings.step),  # metrics replicated: all read them
    donate_argnums=0,
  )
  return Experiment(
    config,
    dataset,
    net,
    method,
    tx,
    shapes.solver,
    placement,
    seeds,
    mesh,
    shardings,
    batch_shardings,
    state,
    train_step,
  )


def create_state(config, dataset, shapes: AbstractState, mesh, seeds, placement):
  """``(state, shardings)``: every seed's fresh :class:`TrainState`, created sharded."""
  params, constants = init_params(config, dataset, shapes.method, mesh, seeds, placement)
  tx = shapes.tx

  @jax.vmap
  def init(params, constants):
    average = params["primal"]["weights"] if config.average_decay > 0 else {}
    return TrainState(jnp.zeros([], jnp.int32), params, tx.init(params), constants, average)

  shardings = sharding.state_shardings(mesh, jax.eval_shape(init, params, constants), placement)
  return jax.jit(init, out_shardings=shardings)(params, constants), shardings


class _NeedsData(Exception):
  """Raised by the ``map_train`` given to a traced ``method.init``."""


def init_params(config, dataset, method: base.Method, mesh, seeds, placement):
  """``(params, constants)`` of every seed, stacked, as global arrays on ``mesh``:
  per-example tables padded to a multiple of the devices and sharded by rows over
  ``data``, the other leaves as ``placement`` says.

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
  n_dev = mesh.shape["data"]
  flags = placement.tables.params
  with_rows = method.init_rows is not None

  def map_train(fn, limit=None):  # eager, the calling process's own pass
    jfn = jax.jit(fn)
    outs = [
      jfn(images, labels)
      for images, labels, _ in feed_lib.batches_of(dataset.train, config.eval_batch_size, limit)
    ]
    return jax.tree.map(lambda *xs: jnp.concatenate(xs), *outs)

  def traced_map_train(fn, limit=None):
    raise _NeedsData

  def init_one(key):
    params, constants = method.init(key, None if with_rows else traced_map_train)
    return rows_lib.pad(_placeholders_as_zeros(params), flags, n_dev), constants

  def init_all():
    return jax.vmap(init_one)(jax.vmap(jax.random.key)(jnp.asarray(seeds)))

  def shardings_of(params, constants):
    return (
      sharding.shardings(mesh, params, placement.params),
      sharding.shardings(mesh, constants, placement.constants),
    )

  try:
    shapes = jax.eval_shape(init_all)
  except _NeedsData:
    inits = [_init_one_eager(method, seed, map_train, flags, n_dev) for seed in seeds]
    host = jax.tree.map(lambda *xs: np.stack(xs), *inits)
    return sharding.global_from_host(host, shardings_of(*host))
  params, constants = jax.jit(init_all, out_shardings=shardings_of(*shapes))()
  if with_rows:
    params = _tables_from_rows(config, dataset, method, params, constants, flags)
  return params, constants


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


@jax.jit
def current_params(state: TrainState) -> PyTree:
  """The parameters to evaluate and export (per seed): the solver's iterate ``x_t``."""
  return jax.vmap(solvers.current_iterate)(state.params, state.opt_state)
