"""Lagrangian formulations as pure functions over pytrees.

A constrained program

    minimise f(x)  subject to  g(x) = 0  (equality),  h(x) <= 0  (inequality)

is turned into a scalar function of the primal variables and the multipliers. All
functions here take *values*: the objective value ``f``, pytrees of constraint values
``g`` / ``h`` and matching pytrees of multipliers, so they compose with any model code
and with ``jax.grad``. Nothing here imports training code.

This module is the one home of the paper's eq. 1 Lagrangian ``f + <lambda, g>`` (its
Section 2.1 forms: augmented Lagrangian, quadratic penalty) and of eq. 3 (the
epsilon-insensitive constraint); the training methods build their objectives from it.

Reductions. ``reduction="sum"`` (default) is the textbook ``<lambda, g> = sum lambda*g``.
``reduction="batch_mean"`` divides each leaf's sum by its leading dimension, the batch:
for constraints ``g`` of shape ``(B, ...)``, one row per example of a mini-batch,
``<lambda, g>`` becomes ``(1/B) sum_i <lambda_i, g_i>`` and ``|g|^2`` becomes
``(1/B) sum_i |g_i|^2``, the same mean over examples as the loss ``(1/B) sum_i l_i``.
The objective's scale, and with it every shared learning rate, then does not depend on
the batch size. A per-example variable that appears in one row only (a state or
multiplier table row) would get ``1/B`` of its own term's gradient, so its step would
shrink as the batch grows; :func:`per_example_rows` marks such variables so that their
gradient is their own example's term's, at its natural scale, whatever the batch size.

Sign conventions (used throughout the library):
  * equality multipliers ``lam`` are free; inequality multipliers ``mu`` are >= 0;
  * the Lagrangian is ``L = f + <lam, g> + <mu, h>``, minimised over ``x`` and
    maximised over ``(lam, mu)``.

Example:
  >>> import jax.numpy as jnp
  >>> import lagrangian_jax as lj
  >>> def L(params):  # min x^2 + y^2  s.t.  x + y = 1
  ...   x = params['primal']
  ...   return lj.lagrangian(jnp.sum(x**2), x[0] + x[1] - 1.0, params['dual'])
  >>> float(L({'primal': jnp.array([0.5, 0.5]), 'dual': jnp.array(-1.0)}))
  0.5
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from lagrangian_jax import _trees
from lagrangian_jax import multipliers as _multipliers

PyTree = Any

__all__ = [
  "REDUCTIONS",
  "tree_inner",
  "lagrangian",
  "augmented_lagrangian",
  "quadratic_penalty",
  "method_of_multipliers_update",
  "epsilon_insensitive",
  "soft_shrink",
  "hard_shrink",
  "mean_abs_defect",
]


def _check_same_structure(a: PyTree, b: PyTree, what_a: str, what_b: str) -> None:
  _trees.check_like(a, b, f"{what_a} and {what_b} must be pytrees of the same structure")


REDUCTIONS = ("sum", "batch_mean")


def _reduce(total: jax.Array, leaf: jax.Array, reduction: str) -> jax.Array:
  """``total`` (a leaf's sum) divided by the leaf's batch size if ``batch_mean``."""
  if reduction == "sum":
    return total
  if reduction == "batch_mean":
    return total / jnp.shape(leaf)[0] if jnp.ndim(leaf) else total
  raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


def tree_inner(multipliers: PyTree, constraints: PyTree, *, reduction: str = "sum") -> jax.Array:
  """``<multipliers, constraints> = sum_leaves sum(lam * g)``, in float32 or wider.

  With ``reduction="batch_mean"`` each leaf's sum is divided by its leading dimension
  (see the module docstring).

  Example:
    >>> import jax.numpy as jnp
    >>> lam, g = jnp.ones((4, 2)), jnp.full((4, 2), 3.0)      # a batch of 4 examples
    >>> float(tree_inner(lam, g)), float(tree_inner(lam, g, reduction="batch_mean"))
    (24.0, 6.0)
  """
  multipliers = _multipliers.values(multipliers)
  _check_same_structure(multipliers, constraints, "multipliers", "constraints")
  terms = [
    _reduce(
      jnp.sum(jnp.asarray(m) * jnp.asarray(c), dtype=_wide(jnp.result_type(m, c))), c, reduction
    )
    for m, c in zip(jax.tree.leaves(multipliers), jax.tree.leaves(constraints))
  ]
  return sum(terms, jnp.zeros((), jnp.float32))


def _wide(x) -> jnp.dtype:
  """The accumulation dtype: at least float32, float64 under x64."""
  return jnp.promote_types(jnp.result_type(x), jnp.float32)


def per_example_rows(rows: PyTree) -> PyTree:
  r"""Per-example variables (one row per example of the batch) at their natural scale.

  The identity on values; on gradients, each leaf's gradient is multiplied by its
  leading dimension ``B``. Under ``reduction="batch_mean"`` the objective is
  ``(1/B) sum_i L_i`` and row ``i`` of such a variable appears in ``L_i`` only, so its
  gradient becomes :math:`\nabla_{v_i} L_i`: the same for a fixed example whatever the
  batch size (a batch of one gives the same row gradient as a batch of a thousand).
  Weights shared by all examples keep the mean gradient.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> rows = jnp.ones((4, 2))
    >>> L = lambda v: jnp.sum(per_example_rows(v) * 3.0) / v.shape[0]   # a batch mean
    >>> jax.grad(L)(rows)[0].tolist()                                    # 3, not 3 / 4
    [3.0, 3.0]
  """
  return jax.tree.map(_scale_gradient_by_rows, rows)


@jax.custom_jvp
def _scale_gradient_by_rows(x: jax.Array) -> jax.Array:
  return x


@_scale_gradient_by_rows.defjvp
def _scale_gradient_by_rows_jvp(primals, tangents):
  (x,), (dx,) = primals, tangents
  # Linear in dx, so its transpose (the gradient) is the same scaling.
  return x, dx * jnp.asarray(x.shape[0] if x.ndim else 1, dx.dtype)


def _sum_squares(tree: PyTree, reduction: str = "sum") -> jax.Array:
  return sum(
    (_reduce(jnp.sum(jnp.square(x), dtype=_wide(x)), x, reduction) for x in jax.tree.leaves(tree)),
    jnp.zeros((), jnp.float32),
  )


def _require_multipliers(who: str, constraint: PyTree, multipliers: PyTree, name: str) -> None:
  """A readable error for a constraint given without its multipliers."""
  if constraint is not None and multipliers is None:
    like = f"lj.nonnegative(zeros like {name})" if name == "inequality" else f"zeros like {name}"
    raise ValueError(
      f"{who}: {name} is given but {name}_multipliers is None; pass one multiplier per "
      f"{name} constraint, kept in params ({like}; lj.Problem makes them)"
    )


def _check_kinds(who: str, equality_multipliers: PyTree, inequality_multipliers: PyTree) -> None:
  """Equality multipliers are free, inequality ones marked ``lj.nonnegative``."""
  if equality_multipliers is not None and any(_multipliers.nonnegative_mask(equality_multipliers)):
    raise TypeError(
      f"{who}: equality_multipliers contain lj.nonnegative(...) multipliers, which the "
      "solvers keep >= 0; an equality's multiplier is free: pass them as "
      "inequality_multipliers (for h(x) <= 0) or without the marker"
    )
  if inequality_multipliers is not None and not _multipliers.is_marked(inequality_multipliers):
    raise TypeError(
      f"{who}: inequality_multipliers are not marked lj.nonnegative(...), so no solver "
      "would keep them >= 0 and h(x) <= 0 would be solved as h(x) = 0; keep them in "
      "params as lj.nonnegative(zeros) (the solvers then project them), or build the "
      "problem with lj.Problem"
    )


def lagrangian(
  objective: jax.Array,
  equality: PyTree = None,
  equality_multipliers: PyTree = None,
  inequality: PyTree = None,
  inequality_multipliers: PyTree = None,
  *,
  reduction: str = "sum",
) -> jax.Array:
  r"""The Lagrangian :math:`f + \langle\lambda, g\rangle + \langle\mu, h\rangle` (eq. 1).

  Args:
    objective: scalar objective value ``f(x)``.
    equality: pytree of equality constraint values ``g(x)`` (``g = 0`` is feasible).
    equality_multipliers: pytree like ``equality``.
    inequality: pytree of inequality constraint values ``h(x)`` (``h <= 0``).
    inequality_multipliers: ``lj.nonnegative(mu)`` with ``mu`` a pytree like
      ``inequality``, stored so in ``params``: the marker makes every solver keep them
      >= 0. Unmarked ones raise ``TypeError`` (they would be solved as an equality's).
    reduction: ``"sum"`` or ``"batch_mean"`` (module docstring).

  Returns:
    The scalar Lagrangian.

  Example:
    >>> import jax.numpy as jnp
    >>> import lagrangian_jax as lj
    >>> mu = lj.nonnegative(jnp.asarray(0.5))             # an inequality multiplier
    >>> float(lj.lagrangian(1.0, inequality=jnp.asarray(-2.0), inequality_multipliers=mu))
    0.0
    >>> lj.lagrangian(1.0, inequality=jnp.asarray(-2.0), inequality_multipliers=0.5)
    Traceback (most recent call last):
    ...
    TypeError: lagrangian: inequality_multipliers are not marked lj.nonnegative(...), so no solver would keep them >= 0 and h(x) <= 0 would be solved as h(x) = 0; keep them in params as lj.nonnegative(zeros) (the solvers then project them), or build the problem with lj.Problem
  """
  _require_multipliers("lagrangian", equality, equality_multipliers, "equality")
  _require_multipliers("lagrangian", inequality, inequality_multipliers, "inequality")
  _check_kinds("lagrangian", equality_multipliers, inequality_multipliers)
  value = jnp.asarray(objective)
  if equality is not None:
    value = value + tree_inner(equality_multipliers, equality, reduction=reduction)
  if inequality is not None:
    value = value + tree_inner(inequality_multipliers, inequality, reduction=reduction)
  return value


def augmented_lagrangian(
  objective: jax.Array,
  equality: PyTree = None,
  equality_multipliers: PyTree = None,
  inequality: PyTree = None,
  inequality_multipliers: PyTree = None,
  *,
  penalty: float | jax.Array = 1.0,
  reduction: str = "sum",
) -> jax.Array:
  r"""The augmented Lagrangian (Hestenes-Powell-Rockafellar).

  .. math::
    L_c = f + \langle\lambda, g\rangle + \tfrac{c}{2}\|g\|^2
          + \tfrac{1}{2c}\sum\left(\max(0, \mu + c h)^2 - \mu^2\right)

  The inequality part is Rockafellar's form: it is differentiable, equals the plain
  Lagrangian term when ``mu + c h > 0`` and is the exact minimum over a slack otherwise.
  Use it either as a saddle objective (descent on ``x``, ascent on the multipliers) or
  in the method of multipliers: minimise over ``x`` for fixed multipliers, then call
  :func:`method_of_multipliers_update`.

  Args:
    objective, equality, equality_multipliers, inequality, inequality_multipliers: as
      in :func:`lagrangian`, except that unmarked inequality multipliers are accepted:
      the inequality term's ascent direction ``(max(0, mu + c h) - mu) / c`` is positive
      at any ``mu < 0``, so it keeps them >= 0 by itself.
    penalty: ``c > 0``.
    reduction: ``"sum"`` or ``"batch_mean"`` (module docstring).
  """
  if isinstance(penalty, (int, float)) and penalty <= 0:
    raise ValueError(f"augmented_lagrangian: penalty must be > 0, got {penalty}")
  _require_multipliers("augmented_lagrangian", equality, equality_multipliers, "equality")
  _require_multipliers("augmented_lagrangian", inequality, inequality_multipliers, "inequality")
  inequality_multipliers = _multipliers.values(inequality_multipliers)
  value = jnp.asarray(objective)
  if equality is not None:
    value = value + tree_inner(equality_multipliers, equality, reduction=reduction)
    value = value + 0.5 * penalty * _sum_squares(equality, reduction)
  if inequality is not None:
    _check_same_structure(
      inequality_multipliers, inequality, "inequality_multipliers", "inequality"
    )
    terms = jax.tree.map(
      lambda m, h: _reduce(
        jnp.sum(jnp.square(jnp.maximum(0.0, m + penalty * h)) - jnp.square(m)), h, reduction
      ),
      inequality_multipliers,
      inequality,
    )
    value = value + sum(jax.tree.leaves(terms)) / (2.0 * penalty)
  return value


def method_of_multipliers_update(
  equality_multipliers: PyTree = None,
  equality: PyTree = None,
  inequality_multipliers: PyTree = None,
  inequality: PyTree = None,
  *,
  penalty: float | jax.Array = 1.0,
):
  r"""First-order multiplier update of the method of multipliers.

  :math:`\lambda \leftarrow \lambda + c\,g(x)` and
  :math:`\mu \leftarrow \max(0, \mu + c\,h(x))`, evaluated at the (approximate)
  minimiser ``x`` of :func:`augmented_lagrangian` for the current multipliers.

  Returns:
    ``(new_equality_multipliers, new_inequality_multipliers)`` (``None`` where absent;
    marked ``lj.nonnegative`` if the given inequality multipliers were).
  """
  _check_kinds("method_of_multipliers_update", equality_multipliers, None)
  marked = isinstance(inequality_multipliers, _multipliers.Nonnegative)
  inequality_multipliers = _multipliers.values(inequality_multipliers)
  new_eq = new_ineq = None
  if equality is not None:
    _check_same_structure(equality_multipliers, equality, "equality_multipliers", "equality")
    new_eq = jax.tree.map(lambda m, g: m + penalty * g, equality_multipliers, equality)
  if inequality is not None:
    _check_same_structure(
      inequality_multipliers, inequality, "inequality_multipliers", "inequality"
    )
    new_ineq = jax.tree.map(
      lambda m, h: jnp.maximum(0.0, m + penalty * h), inequality_multipliers, inequality
    )
    new_ineq = _multipliers.nonnegative(new_ineq) if marked else new_ineq
  return new_eq, new_ineq


def quadratic_penalty(
  objective: jax.Array,
  equality: PyTree = None,
  inequality: PyTree = None,
  *,
  penalty: float | jax.Array = 1.0,
  reduction: str = "sum",
) -> jax.Array:
  r"""Quadratic penalty :math:`f + \tfrac{c}{2}\|g\|^2 + \tfrac{c}{2}\|\max(0,h)\|^2`.

  No multipliers: the "Regularized" baseline of the paper. Its minimisers approach the
  constrained solution only as ``c -> infinity``. ``reduction`` as in :func:`lagrangian`.
  """
  if isinstance(penalty, (int, float)) and penalty < 0:
    raise ValueError(f"quadratic_penalty: penalty must be >= 0, got {penalty}")
  value = jnp.asarray(objective)
  if equality is not None:
    value = value + 0.5 * penalty * _sum_squares(equality, reduction)
  if inequality is not None:
    value = value + 0.5 * penalty * _sum_squares(
      jax.tree.map(lambda h: jnp.maximum(0.0, h), inequality), reduction
    )
  return value


def soft_shrink(g: jax.Array, epsilon: float | jax.Array) -> jax.Array:
  r"""Soft shrinkage: ``g - eps`` above ``eps``, ``g + eps`` below ``-eps``, else 0.

  This is exactly the paper's eq. 3 (continuous in ``g``; derivative 1 outside the band).
  """
  return jnp.sign(g) * jnp.maximum(jnp.abs(g) - epsilon, 0.0).astype(jnp.result_type(g))


def hard_shrink(g: jax.Array, epsilon: float | jax.Array) -> jax.Array:
  r"""Hard shrinkage (``torch.nn.functional.hardshrink``): ``g`` where ``|g| > eps``, else 0."""
  return jnp.where(jnp.abs(g) > epsilon, g, jnp.zeros_like(g))


def epsilon_insensitive(g: PyTree, epsilon: float | jax.Array, shrinkage: str = "soft") -> PyTree:
  r"""The epsilon-insensitive constraint of the paper's eq. 3, applied leaf-wise.

  .. math::
    g_\epsilon = \begin{cases} g - \epsilon & g > \epsilon \\
                               g + \epsilon & g < -\epsilon \\
                               0 & \text{otherwise} \end{cases}

  The set ``{g_eps = 0}`` is the band ``|g| <= eps``. The paper's text calls this
  "hard shrinkage" while its formula is soft shrinkage; the authors' later code used
  hard shrinkage (``g`` itself outside the band). ``shrinkage="soft"`` (default) is the
  formula, ``"hard"`` the later code. Both have the same feasible set.

  Example:
    >>> import jax.numpy as jnp
    >>> epsilon_insensitive(jnp.array([-2., -0.5, 0.5, 2.]), 1.0).tolist()
    [-1.0, -0.0, 0.0, 1.0]
    >>> epsilon_insensitive(jnp.array([-2., -0.5, 0.5, 2.]), 1.0, "hard").tolist()
    [-2.0, 0.0, 0.0, 2.0]
  """
  if isinstance(epsilon, (int, float)) and epsilon < 0:
    raise ValueError(f"epsilon_insensitive: epsilon (the margin) must be >= 0, got {epsilon}")
  if shrinkage == "soft":
    fn = soft_shrink
  elif shrinkage == "hard":
    fn = hard_shrink
  else:
    raise ValueError(f"epsilon_insensitive: shrinkage must be 'soft' or 'hard', got {shrinkage!r}")
  return jax.tree.map(lambda x: fn(x, epsilon), g)


def mean_abs_defect(constraints: PyTree) -> jax.Array:
  """Mean absolute constraint value over all entries of all leaves (the paper's defect)."""
  leaves = jax.tree.leaves(constraints)
  total = sum((jnp.sum(jnp.abs(x), dtype=_wide(x)) for x in leaves), jnp.zeros((), jnp.float32))
  count = sum(jnp.size(x) for x in leaves)
  return total / max(count, 1)
