r"""A constrained problem declared once: its constraints' kinds decide everything else.

.. math::
  \min_x f(x) \quad\text{s.t.}\quad g_k(x) = 0 \ (\text{equality}), \qquad
  h_k(x) \le 0 \ (\text{inequality})

A :class:`Problem` is an objective and named :class:`Constraint` s, each made by
:func:`equality` or :func:`inequality` with an optional proxy (surrogate: the model
follows its gradient while the multiplier sees the true value, :func:`rates.proxy`) and,
for equalities, eq. 3's band ``|g| <= eps`` (:func:`formulations.epsilon_insensitive`).
From it come

  * the multipliers, shaped by ``jax.eval_shape`` of the constraints: zeros, the
    inequality ones marked :class:`~lagrangian_jax.multipliers.Nonnegative` so that every
    solver keeps them ``>= 0`` with no flag; per-example (``indexed=True``) ones are
    tables with one row per training example, read and written by :meth:`Problem.gather`
    / :meth:`Problem.scatter` (``rows.gather`` / ``rows.scatter``);
  * the Lagrangian, the augmented Lagrangian and the quadratic penalty of
    :mod:`~lagrangian_jax.formulations`, as functions of ``params = {'primal': x,
    'dual': multipliers}`` (the solvers' layout), checked against the problem: a
    missing multiplier, one of the wrong kind, or a constraint whose shape changed since
    the multipliers were made is a one-line error naming the constraint.

Every function of the problem takes ``(x, *args)`` (``args``: a batch, a key...).

Example (an inactive inequality: the answer is the unconstrained minimum, ``mu = 0``):
  >>> import jax, jax.numpy as jnp
  >>> import lagrangian_jax as lj
  >>> problem = lj.Problem(
  ...   objective=lambda x: jnp.sum((x - jnp.array([2.0, 1.0])) ** 2),
  ...   constraints={'norm': lj.inequality(lambda x: jnp.sum(x**2) - 10.0)})
  >>> params = problem.init(jnp.zeros(2))
  >>> tx = lj.extra_adagrad(0.5)          # no nonnegative= flag: the kind decides
  >>> step = jax.jit(lambda p, s: lj.solver_step(tx, jax.grad(problem.lagrangian), p, s))
  >>> state = tx.init(params)
  >>> for _ in range(500):
  ...   params, state = step(params, state)
  >>> [round(float(v), 3) for v in params['primal']], float(params['dual']['norm'].value)
  ([2.0, 1.0], 0.0)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from lagrangian_jax import formulations
from lagrangian_jax import multipliers as _multipliers
from lagrangian_jax import rates
from lagrangian_jax import rows

PyTree = Any

__all__ = ["KINDS", "Constraint", "Problem", "equality", "inequality"]

KINDS = ("equality", "inequality")


class Constraint(NamedTuple):
  """One constraint of a :class:`Problem` (make it with :func:`equality` / :func:`inequality`).

  Attributes:
    fn: ``fn(x, *args)``, the true constraint value (a pytree of arrays).
    kind: ``"equality"`` (``fn = 0``, free multiplier) or ``"inequality"`` (``fn <= 0``,
      multiplier ``>= 0``).
    proxy: ``None`` or ``proxy(x, *args)``, a surrogate like ``fn`` whose gradient drives
      ``x`` while the multiplier sees ``fn``'s value (:func:`rates.proxy`).
    band: eq. 3's ``epsilon`` (equalities): ``|fn| <= band`` is feasible.
    indexed: one multiplier row per training example: ``fn`` returns the batch's rows
      ``(B, ...)`` and the multipliers are a table ``(num_examples, ...)``.
  """

  fn: Callable[..., PyTree]
  kind: str = "equality"
  proxy: Callable[..., PyTree] | None = None
  band: float = 0.0
  indexed: bool = False


def equality(
  fn: Callable[..., PyTree],
  *,
  proxy: Callable[..., PyTree] | None = None,
  band: float = 0.0,
  indexed: bool = False,
) -> Constraint:
  """The equality constraint ``fn(x, *args) = 0`` (``|fn| <= band`` with a band)."""
  if not band >= 0:
    raise ValueError(f"equality: band (eq. 3's epsilon) must be >= 0, got {band}")
  return Constraint(fn, "equality", proxy, band, indexed)


def inequality(
  fn: Callable[..., PyTree],
  *,
  proxy: Callable[..., PyTree] | None = None,
  indexed: bool = False,
) -> Constraint:
  """The inequality constraint ``fn(x, *args) <= 0`` (for ``h <= c`` write ``h - c``)."""
  return Constraint(fn, "inequality", proxy, 0.0, indexed)


def _shape_text(tree: PyTree) -> str:
  shapes = jax.tree.map(lambda a: tuple(jnp.shape(a)), tree)
  return str(shapes[0] if isinstance(shapes, list) and len(shapes) == 1 else shapes)


class Problem(NamedTuple):
  """``min objective(x, *args)`` subject to named constraints.

  Attributes:
    objective: ``objective(x, *args)``, a scalar.
    constraints: a mapping from names to :class:`Constraint`.
    reduction: ``"sum"`` or ``"batch_mean"``, for every inner product and square
      (:mod:`~lagrangian_jax.formulations`).
  """

  objective: Callable[..., jax.Array]
  constraints: Mapping[str, Constraint]
  reduction: str = "sum"

  def _checked(self) -> Mapping[str, Constraint]:
    if not isinstance(self.constraints, Mapping):
      raise TypeError(
        "Problem: constraints must be a mapping from names to lj.equality(...) / "
        f"lj.inequality(...), got {type(self.constraints).__name__}"
      )
    for name, c in self.constraints.items():
      if not isinstance(c, Constraint):
        raise TypeError(
          f"Problem: constraint {name!r} must be lj.equality(...) or lj.inequality(...), "
          f"got {type(c).__name__}"
        )
      if c.kind not in KINDS:
        raise ValueError(f"Problem: constraint {name!r}: kind must be one of {KINDS}")
      if c.kind == "inequality" and c.band:
        raise ValueError(
          f"Problem: constraint {name!r}: a band is for equalities; write h - band <= 0"
        )
    return self.constraints

  # ---------------------------------------------------------------- values

  def true_values(self, x: PyTree, *args: Any) -> dict[str, PyTree]:
    """Each constraint's true value (band applied): what the multipliers see."""
    out = {}
    for name, c in self._checked().items():
      value = c.fn(x, *args)
      out[name] = formulations.epsilon_insensitive(value, c.band) if c.band else value
    return out

  def values(self, x: PyTree, *args: Any) -> dict[str, PyTree]:
    """Each constraint's value as it enters the Lagrangian: the true value, with the
    proxy's gradient where there is a proxy (band applied to both)."""
    out = {}
    for name, c in self._checked().items():
      value = c.fn(x, *args)
      if c.proxy is not None:
        value = rates.proxy(value, c.proxy(x, *args))
      out[name] = formulations.epsilon_insensitive(value, c.band) if c.band else value
    return out

  # ----------------------------------------------------------- multipliers

  def multipliers(self, x: PyTree, *args: Any, num_examples: int | None = None) -> dict:
    """Zero multipliers, one per constraint, shaped by ``jax.eval_shape`` (no FLOPs).

    Inequality ones are ``lj.nonnegative(...)``; ``indexed`` ones are tables of
    ``num_examples`` rows (the batch's rows come from :meth:`gather`).
    """
    shapes = jax.eval_shape(lambda x, *a: self.true_values(x, *a), x, *args)
    out = {}
    for name, c in self._checked().items():
      shape = shapes[name]
      if c.indexed:
        if num_examples is None:
          raise ValueError(
            f"Problem.multipliers: constraint {name!r} is indexed (one multiplier row per "
            "example): pass num_examples="
          )
        shape = jax.tree.map(
          lambda s: jax.ShapeDtypeStruct((num_examples,) + s.shape[1:], s.dtype), shape
        )
      zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shape)
      out[name] = _multipliers.nonnegative(zeros) if c.kind == "inequality" else zeros
    return out

  def init(self, x: PyTree, *args: Any, num_examples: int | None = None) -> dict:
    """``{'primal': x, 'dual': self.multipliers(x, *args)}``: the solvers' params."""
    return {"primal": x, "dual": self.multipliers(x, *args, num_examples=num_examples)}

  def indexed_flags(self, multipliers: dict) -> tuple[bool, ...]:
    """One bool per leaf of ``multipliers``: is it a per-example table?"""
    constraints = self._checked()
    flags = {
      name: jax.tree.map(lambda _, f=constraints[name].indexed: f, m)
      for name, m in multipliers.items()
    }
    return tuple(jax.tree.leaves(flags))

  def gather(self, multipliers: dict, idx: jax.Array) -> dict:
    """The rows ``idx`` (the batch's examples) of the indexed multipliers; others as is.

    Example:
      >>> import jax.numpy as jnp, lagrangian_jax as lj
      >>> p = lj.Problem(lambda x, b: 0.0, {'fit': lj.equality(lambda x, b: x * b,
      ...                                                       indexed=True)})
      >>> table = p.multipliers(1.0, jnp.ones(2), num_examples=5)
      >>> table = p.scatter(table, {'fit': jnp.array([7.0, 8.0])}, jnp.array([1, 3]))
      >>> table['fit'].tolist(), p.gather(table, jnp.array([3]))['fit'].tolist()
      ([0.0, 7.0, 0.0, 8.0, 0.0], [8.0])
    """
    return rows.gather(multipliers, self.indexed_flags(multipliers), idx)

  def scatter(self, full: dict, part: dict, idx: jax.Array) -> dict:
    """``full`` with the rows ``idx`` of its indexed multipliers set from ``part``."""
    return rows.scatter(full, part, self.indexed_flags(full), idx)

  # ------------------------------------------------------------ objectives

  def _split(self, params: dict, x_args: tuple, who: str):
    """``(f, g, lam, h, mu)`` of ``params``, each multiplier checked against its constraint."""
    if not isinstance(params, Mapping) or set(params) != {"primal", "dual"}:
      raise ValueError(f"Problem.{who}: params must be {{'primal': x, 'dual': multipliers}}")
    x, dual = params["primal"], params["dual"]
    values = self.values(x, *x_args)
    _check_multipliers(values, dual, self._checked(), who)
    eq = {n: v for n, v in values.items() if self.constraints[n].kind == "equality"}
    ineq = {n: v for n, v in values.items() if self.constraints[n].kind == "inequality"}
    lam = {n: dual[n] for n in eq}
    mu = _multipliers.nonnegative({n: dual[n].value for n in ineq})
    f = self.objective(x, *x_args)
    return f, eq or None, lam or None, ineq or None, mu if ineq else None

  def lagrangian(self, params: dict, *args: Any) -> jax.Array:
    r"""``f + <lam, g> + <mu, h>`` (:func:`formulations.lagrangian`) at ``params``."""
    return formulations.lagrangian(
      *self._split(params, args, "lagrangian"), reduction=self.reduction
    )

  def augmented_lagrangian(
    self, params: dict, *args: Any, penalty: float | jax.Array = 1.0
  ) -> jax.Array:
    r"""The augmented Lagrangian (:func:`formulations.augmented_lagrangian`) at ``params``."""
    return formulations.augmented_lagrangian(
      *self._split(params, args, "augmented_lagrangian"),
      penalty=penalty,
      reduction=self.reduction,
    )

  def penalty(self, x: PyTree, *args: Any, penalty: float | jax.Array = 1.0) -> jax.Array:
    r"""``f + (c/2)|g|^2 + (c/2)|max(0, h)|^2`` (:func:`formulations.quadratic_penalty`)."""
    values = self.values(x, *args)
    kinds = {n: c.kind for n, c in self._checked().items()}
    eq = {n: v for n, v in values.items() if kinds[n] == "equality"}
    ineq = {n: v for n, v in values.items() if kinds[n] == "inequality"}
    return formulations.quadratic_penalty(
      self.objective(x, *args),
      eq or None,
      ineq or None,
      penalty=penalty,
      reduction=self.reduction,
    )


def _check_multipliers(
  values: dict, dual: PyTree, constraints: Mapping[str, Constraint], who: str
) -> None:
  """One readable error for a missing, unexpected, wrong-kind or wrong-shape multiplier."""
  if not isinstance(dual, Mapping):
    raise ValueError(
      f"Problem.{who}: params['dual'] must map constraint names {sorted(constraints)} "
      f"to multipliers (problem.multipliers(x)), got {type(dual).__name__}"
    )
  missing, extra = sorted(set(constraints) - set(dual)), sorted(set(dual) - set(constraints))
  if missing:
    raise ValueError(
      f"Problem.{who}: no multiplier for constraint(s) {missing}; make them with "
      "problem.multipliers(x, ...)"
    )
  if extra:
    raise ValueError(f"Problem.{who}: multiplier(s) {extra} belong to no constraint")
  for name, c in constraints.items():
    marked = isinstance(dual[name], _multipliers.Nonnegative)
    if marked != (c.kind == "inequality"):
      want = "lj.nonnegative(...)" if c.kind == "inequality" else "free (not lj.nonnegative)"
      raise TypeError(
        f"Problem.{who}: constraint {name!r} is an {c.kind}, so its multiplier must be "
        f"{want}; make the multipliers with problem.multipliers(x, ...)"
      )
    m, v = _multipliers.values(dual[name]), values[name]
    same = jax.tree.structure(m) == jax.tree.structure(v) and all(
      jnp.shape(a) == jnp.shape(b) for a, b in zip(jax.tree.leaves(m), jax.tree.leaves(v))
    )
    if not same:
      hint = " (indexed: gather the batch's rows with problem.gather)" if c.indexed else ""
      raise ValueError(
        f"Problem.{who}: constraint {name!r} has shape {_shape_text(v)} but its multiplier "
        f"has {_shape_text(m)}: the constraint changed since the multipliers were made; "
        f"remake them with problem.multipliers(x, ...){hint}"
      )
