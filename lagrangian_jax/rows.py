"""Sparse rows of per-example tables: find, gather, scatter, pad.

ExtraProp's states and multipliers (and DistProp's optional per-example multipliers) are
tables with one row per training example. A step touches only the batch's rows: it
gathers them, *and the rows of every optimizer-state leaf that mirrors a table* (Adagrad
accumulators, Adam moments, the extragradient anchor), runs the whole solver iteration
on that small pytree, and scatters the rows back. Tables are sharded by rows over the
``data`` mesh axis.

The invariant :func:`find` relies on: an optimizer-state leaf mirrors a table if and
only if its shape changes when that table gains a row, and then its leading axis is the
table's row axis. Elementwise optax states (``adagrad``, ``adam``, ``sgd`` momentum,
``multi_transform``, the solvers of this library) satisfy it; a transformation whose
state mixes rows (a full-matrix preconditioner, a global norm kept per leaf) would not,
and must not be used on tables.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

PyTree = Any


class RowTables(NamedTuple):
  """Which flattened leaves of params / optimizer state are per-example tables."""

  params: tuple[bool, ...]
  opt_state: tuple[bool, ...]


def map_flagged(fn: Callable[..., Any], tree: PyTree, flags, *others: PyTree) -> PyTree:
  """``fn(leaf, is_table, *other_leaves)`` for every leaf of ``tree``, same structure.

  ``flags`` is one bool per flattened leaf; ``others`` are pytrees whose flattened
  leaves line up with ``tree``'s (they may be of another pytree type, e.g. specs).

  Example:
    >>> import jax.numpy as jnp
    >>> map_flagged(lambda x, f: x[:1] if f else x, (jnp.ones(3), jnp.ones(2)), (True, False))
    (Array([1.], dtype=float32), Array([1., 1.], dtype=float32))
  """
  leaves, treedef = jax.tree.flatten(tree)
  other_leaves = [jax.tree.leaves(o) for o in others]
  return jax.tree.unflatten(
    treedef, [fn(x, f, *rest) for x, f, *rest in zip(leaves, flags, *other_leaves, strict=True)]
  )


def find(table_flags: PyTree, tx, params: PyTree) -> RowTables:
  """Flags the table leaves of ``params`` and of ``tx``'s state (see the invariant).

  The state leaves that mirror a table are found by initialising the optimizer (in
  shape only) on tables with one extra row and seeing which leaves grow.
  """
  flags = tuple(jax.tree.leaves(table_flags))
  shapes = jax.eval_shape(lambda p: p, params)
  grown = map_flagged(
    lambda s, f: jax.ShapeDtypeStruct((s.shape[0] + 1,) + s.shape[1:], s.dtype) if f else s,
    shapes,
    flags,
  )
  a = jax.tree.leaves(jax.eval_shape(tx.init, shapes))
  b = jax.tree.leaves(jax.eval_shape(tx.init, grown))
  return RowTables(flags, tuple(x.shape != y.shape for x, y in zip(a, b)))


def gather(tree: PyTree, flags, idx: jax.Array) -> PyTree:
  """The rows ``idx`` of every table leaf; other leaves unchanged."""
  return map_flagged(lambda x, f: x[idx] if f else x, tree, flags)


def scatter(full: PyTree, part: PyTree, flags, idx: jax.Array) -> PyTree:
  """``full`` with the rows ``idx`` of its tables set from ``part``; other leaves: ``part``'s."""
  return map_flagged(
    lambda x, f, p: x.at[idx].set(p.astype(x.dtype)) if f else p, full, flags, part
  )


def pad(tree: PyTree, flags, multiple: int) -> PyTree:
  """Tables padded with zero rows to a multiple of ``multiple`` (the mesh's devices)."""

  def pad_leaf(x, f):
    if not f or x.shape[0] % multiple == 0:
      return x
    return jnp.pad(x, [(0, multiple - x.shape[0] % multiple)] + [(0, 0)] * (x.ndim - 1))

  return map_flagged(pad_leaf, tree, flags)
