"""The kind of a multiplier, carried by the pytree itself: :class:`Nonnegative`.

An inequality constraint ``h(x) <= 0`` needs a multiplier ``mu >= 0``; an equality's is
free. The solvers are optax transformations and the Lagrangian a pure function of
values, so the one thing both see is the params pytree. The kind therefore lives in its
*structure*: inequality multipliers are wrapped in :class:`Nonnegative`, a registered
pytree node. The marker survives ``jax.grad`` (the gradient has the params' structure),
``jax.jit``, ``optax`` states and checkpoints, and it is known at trace time, so

  * :func:`~lagrangian_jax.descent_ascent` (and every alias built on it) projects every
    leaf inside a ``Nonnegative`` onto ``mu >= 0`` by default: no flag to forget;
  * :func:`~lagrangian_jax.lagrangian` refuses inequality multipliers that are not
    marked (they would be solved as an equality's) with an error that says so, before
    anything runs.

Example:
  >>> import jax, jax.numpy as jnp
  >>> dual = {'eq': jnp.zeros(2), 'ineq': nonnegative(jnp.zeros(3))}
  >>> nonnegative_mask(dual), nonnegative_mask(jax.grad(lambda d: 0.0)(dual))
  ([False, True], [False, True])
  >>> values(dual)['ineq'].shape
  (3,)
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax

PyTree = Any

__all__ = ["Nonnegative", "is_marked", "nonnegative", "nonnegative_mask", "values"]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Nonnegative:
  """Inequality multipliers (any pytree ``value``): the solvers keep them ``>= 0``."""

  value: PyTree


def nonnegative(tree: PyTree) -> Nonnegative:
  """Marks ``tree`` as inequality multipliers (idempotent).

  Mark them where they are stored, in ``params``: the solver sees ``params`` (and
  their gradient), not the Lagrangian's arguments.

  Example:
    >>> import jax.numpy as jnp
    >>> params = {'primal': jnp.zeros(2), 'dual': nonnegative(jnp.zeros(()))}
    >>> nonnegative(params['dual']) is params['dual']
    True
  """
  return tree if isinstance(tree, Nonnegative) else Nonnegative(tree)


def _is_node(node: Any) -> bool:
  return isinstance(node, Nonnegative)


def nonnegative_mask(tree: PyTree) -> list[bool]:
  """One Python bool per leaf of ``tree``: does it lie inside a :class:`Nonnegative`?"""
  flags = jax.tree.map(
    lambda n: jax.tree.map(lambda _: True, n.value) if _is_node(n) else False,
    tree,
    is_leaf=_is_node,
  )
  return [bool(f) for f in jax.tree.leaves(flags)]


def is_marked(tree: PyTree) -> bool:
  """Whether every leaf of ``tree`` (at least one) is inside a :class:`Nonnegative`."""
  mask = nonnegative_mask(tree)
  return bool(mask) and all(mask)


def values(tree: PyTree) -> PyTree:
  """``tree`` with every :class:`Nonnegative` replaced by its value (the plain arrays)."""
  return jax.tree.map(lambda n: values(n.value) if _is_node(n) else n, tree, is_leaf=_is_node)
