"""What every training method provides to the training loop.

A method is a pure objective (a Lagrangian, or a plain loss) over a pytree

    params = {'primal': {'weights': ..., 'aux': ...}, 'dual': {'multipliers': ...}}

plus its initialisation. ``weights`` are the network segments' parameters, ``aux`` the
auxiliary primal variables (ExtraProp's state tables, DistProp's prototypes), and
``multipliers`` the Lagrange multipliers. The training loop (``train.py``, ``step.py``) knows
nothing of the maths: it differentiates ``objective``, hands the gradient to the solver,
and gathers/scatters the rows of the leaves its ``placement`` labels per-example tables.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from lagrangian_jax import formulations
from lagrangian_jax import networks

PyTree = Any


class Batch(NamedTuple):
  """One training batch: ``indices`` are the examples' rows in per-example tables,
  ``step`` the iteration it is drawn for (randomness that is a function of the step)."""

  images: jax.Array
  labels: jax.Array
  indices: jax.Array
  step: jax.Array | int = 0


# Where a leaf lives on the (data, stage) mesh (after the seed axis of the train state).
REPLICATED = "replicated"  # every device holds the whole leaf
ROWS = "rows"  # a per-example table: leading axis = training example, sharded over data
STAGES = "stages"  # leading axis laid out over the stage axis (stage-parallel DistProp)


class Placement(NamedTuple):
  """One label per leaf (:data:`REPLICATED`, :data:`ROWS` or :data:`STAGES`) of a method's
  ``params`` and ``constants``. Optimizer-state leaves that mirror a parameter leaf follow
  it (``rows.find``); ``lagrangian_jax.sharding`` turns the labels into shardings.

  >>> import jax.numpy as jnp
  >>> replicated({"w": jnp.ones(2)}, {}).params
  {'w': 'replicated'}
  """

  params: PyTree
  constants: PyTree


def replicated(params: PyTree, constants: PyTree) -> Placement:
  """Every leaf replicated: the placement of a method without tables or stages."""
  return Placement(
    jax.tree.map(lambda _: REPLICATED, params), jax.tree.map(lambda _: REPLICATED, constants)
  )


def placement_flags(labels: PyTree, label: str) -> tuple[bool, ...]:
  """One bool per flattened leaf of a :class:`Placement` tree: is it ``label``?"""
  return tuple(x == label for x in jax.tree.leaves(labels))


class Method(NamedTuple):
  """The interface between a training method and ``train.py``.

  Attributes:
    name: the config name of the method.
    default_solver: the solver used when ``config.solver`` is empty
      (``optimizers.SOLVERS``).
    init: ``init(rng, map_train) -> (params, constants)``; ``map_train(fn, limit=None)``
      applies ``fn(images, labels)`` to the training set in batches and concatenates
      the results (used to initialise states to a valid forward pass).
    objective: ``objective(params, constants, batch) -> (scalar, metrics)``, where
      per-example tables in ``params`` have already been gathered to the batch's rows.
    defects: ``defects(params, constants, batch) -> (num_splits,)`` the mean absolute
      defect of each split's constraint on this batch (tables gathered).
    primal_labels: ``primal_labels(primal) -> pytree (prefix) of str`` naming the
      learning-rate group of each primal leaf; default: its top-level key
      (``weights`` or ``aux``).
    group_rates: learning rates of groups other than ``weights`` / ``aux``.
    init_rows: optional ``init_rows(params, constants, images, labels) -> pytree`` like
      ``params`` whose table leaves are the initial rows of the examples ``(images,
      labels)`` (its other leaves are ignored; the table leaves of the ``params`` it is
      given have 0 rows). A method with ``init_rows`` is initialised with
      ``init(rng, None)``, which returns its tables as ``jax.ShapeDtypeStruct``
      placeholders; ``state.build_experiment`` then builds each table shard by shard, so
      no process ever holds a whole table (ExtraProp's states are a forward pass of the
      whole training set). Without it the tables are whatever ``init`` returns.
    network_weights: optional ``fn(weights) -> tuple`` of per-segment weights for
      ``networks.forward``, when ``params["primal"]["weights"]`` has another layout.
    norm_weights: optional ``fn(params) -> pytree like params`` of how many times each
      entry counts in a global gradient norm (scalars or arrays broadcastable to the
      leaf); stage-parallel DistProp gives its boundary copies 0, so ``grad_clip``
      clips by the sequential run's norm. Default: every entry once.
    placement: ``placement(params, constants) -> Placement``: where each leaf lives on
      the ``(data, stage)`` mesh, said once for the whole method (the sharding module and
      the sparse row updates read it). Default: every leaf replicated.
    applies_dropout: whether the objective applies the network's dropout layers (a
      network with dropout is refused for a method that would ignore them).
    value_and_grad: optional ``value_and_grad(params, constants, batch) -> ((value,
      metrics), grads)``, the same as ``jax.value_and_grad(objective, has_aux=True)``
      computed another way (DistProp's block by block); the step uses it when given.
  """

  name: str
  default_solver: str
  init: Callable[..., tuple[PyTree, PyTree]]
  objective: Callable[..., tuple[jax.Array, dict]]
  defects: Callable[..., jax.Array]
  primal_labels: Callable[[PyTree], PyTree] = lambda primal: {k: k for k in primal}
  group_rates: Any = None
  init_rows: Callable[..., PyTree] | None = None
  network_weights: Callable[[PyTree], tuple] | None = None
  norm_weights: Callable[[PyTree], PyTree] | None = None
  placement: Callable[[PyTree, PyTree], Placement] = lambda params, constants: replicated(
    params, constants
  )
  applies_dropout: bool = False
  value_and_grad: Callable[..., Any] | None = None


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Mean softmax cross-entropy over the class axis (the last one) of ``logits``."""
  return jnp.mean(
    optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)
  )


DROPOUT_SALT = 0x64726F70  # folds the dropout key out of a seed's key


def dropout_constants(net, rng: jax.Array) -> dict:
  """``{"dropout_key": ...}`` (raw key data) for a network with dropout, else ``{}``."""
  if not networks.has_dropout(net):
    return {}
  return {"dropout_key": jax.random.key_data(jax.random.fold_in(rng, DROPOUT_SALT))}


def dropout_rng(constants, step) -> jax.Array | None:
  """The dropout key of iteration ``step`` (a pure function of the seed and the step, so
  the same at both extragradient half-steps and on resume); None without dropout."""
  if "dropout_key" not in constants:
    return None
  return jax.random.fold_in(jax.random.wrap_key_data(constants["dropout_key"]), step)


def split_defects(constraints) -> jax.Array:
  """``(num_splits,)``: the mean absolute value of each split's constraint."""
  return jnp.stack([formulations.mean_abs_defect(g) for g in constraints])


def detached_forward(net, weights: PyTree, images: jax.Array):
  """``(split outputs, logits)``, each segment applied to its *stopped* input.

  Every segment's gradient is then local: no gradient flows from one block into the
  one before it (the layer-local methods DFA and DTP build their updates on this).
  """
  outs, h = [], images
  for l in range(len(net.segments)):
    h = networks.apply_segment(net, weights, l, jax.lax.stop_gradient(h))
    outs.append(h)
  return outs[:-1], outs[-1]
