r"""Multiplier (dual) update rules: nuPI, bounded multipliers, growing penalties.

The multipliers ``y`` of ``min_x max_y L(x, y)`` are updated by the ``dual=`` rule of
:func:`lagrangian_jax.descent_ascent` (or :func:`lagrangian_jax.alternating`), which
feeds it the *negated* gradient ``e = -grad_y L`` so that an ordinary descent rule moves
``y`` up the gradient. For a Lagrangian ``f + <lambda, g> + <mu, h>`` that gradient is
the constraint itself: ``e = -g(x)`` for the equality multipliers, ``-h(x)`` for the
inequality ones. The rules here are optax transformations of that kind:

  * :func:`nupi` / :func:`scale_by_nupi` -- the nuPI controller of Sohrabi et al. (2024):
    a proportional-integral controller on the constraint violation, with an exponential
    moving average ``nu`` on the proportional term. ``nu = 0`` is the optimistic
    gradient method (optax's ``optimistic_gradient_descent``), step for step.
  * :func:`project` -- a projection hook applied after any dual rule (bounded
    multipliers); :func:`box` and :func:`nonnegative_l1_ball` (TFCO's
    ``maximum_multiplier_radius``) are ready-made projections.

and, for penalty formulations (``augmented_lagrangian(penalty=...)``,
``quadratic_penalty``), a penalty coefficient that grows while the constraint is violated:
:func:`penalty_init`, :func:`multiplicative_penalty_update`,
:func:`additive_penalty_update` (Cooper's ``MultiplicativePenaltyCoefficientUpdater`` /
``AdditivePenaltyCoefficientUpdater``), pure functions over :class:`PenaltyState`.

Example (nuPI on the multiplier of ``min x^2 s.t. x >= 1``, bounded by 10):
  >>> import jax, jax.numpy as jnp, optax
  >>> import lagrangian_jax as lj
  >>> L = lambda p: p['primal'] ** 2 + p['dual'] * (1.0 - p['primal'])
  >>> tx = lj.descent_ascent(
  ...   optax.sgd(0.1),
  ...   optax.chain(lj.nupi(0.1, kp=1.0, ki=1.0, ema_nu=0.5), lj.project(lj.box(0.0, 10.0))),
  ... )
  >>> params = {'primal': jnp.array(0.), 'dual': jnp.array(0.)}
  >>> state = tx.init(params)
  >>> step = jax.jit(lambda p, s: lj.solver_step(tx, jax.grad(L), p, s))
  >>> for _ in range(300):
  ...   params, state = step(params, state)
  >>> round(float(params['primal']), 3), round(float(params['dual']), 3)
  (1.0, 2.0)
"""

from __future__ import annotations

from collections.abc import Callable
import math
from typing import Any, NamedTuple

import jax
import jax.flatten_util
import jax.numpy as jnp
import optax

PyTree = Any

__all__ = [
  "NuPIState",
  "PenaltyState",
  "additive_penalty_update",
  "box",
  "multiplicative_penalty_update",
  "nonnegative_l1_ball",
  "nupi",
  "penalty_init",
  "project",
  "scale_by_nupi",
]

NUPI_INITS = ("sgd", "zeros")


# ----------------------------------------------------------------------------------
# nuPI
# ----------------------------------------------------------------------------------


class NuPIState(NamedTuple):
  """State of :func:`scale_by_nupi`.

  Attributes:
    xi: the smoothed error ``xi_{t-1}`` of the last step (zeros before the first).
    initial: bool scalar, True until the first update (the ``"sgd"`` initialisation
      replaces ``xi_{-1}`` by the first error).
  """

  xi: optax.Updates
  initial: jax.Array


def _check_nupi(kp, ki, ema_nu, init) -> None:
  if init not in NUPI_INITS:
    raise ValueError(f"nupi: init must be one of {NUPI_INITS}, got {init!r}")
  if isinstance(ema_nu, (int, float)) and not -1.0 < ema_nu < 1.0:  # arrays: inject_hyperparams
    raise ValueError(f"nupi: ema_nu must be a number in (-1, 1), got {ema_nu!r}")
  for name, value in (("kp", kp), ("ki", ki)):
    if isinstance(value, (int, float)) and not (math.isfinite(value) and value >= 0):
      raise ValueError(f"nupi: {name} must be a finite number >= 0, got {value!r}")


def scale_by_nupi(
  kp: float | jax.Array = 0.0,
  ki: float | jax.Array = 1.0,
  ema_nu: float = 0.0,
  *,
  init: str = "sgd",
) -> optax.GradientTransformation:
  r"""The nuPI controller's direction (no learning rate; :func:`nupi` adds it).

  For the error ``e_t`` (the incoming gradient; for a dual rule inside
  :func:`~lagrangian_jax.descent_ascent` that is ``-grad_y L``, minus the constraint):

  .. math::
    \xi_t = \nu\,\xi_{t-1} + (1 - \nu)\,e_t, \qquad
    d_t = K_I\,e_t + K_P\,(\xi_t - \xi_{t-1})
        = (K_I + K_P (1 - \nu))\,e_t - K_P (1 - \nu)\,\xi_{t-1}

  computed in the last form (Cooper's). ``init="sgd"`` sets ``xi_{-1} = e_0`` (first
  step ``K_I e_0``, plain gradient descent), ``init="zeros"`` sets ``xi_{-1} = 0``
  (first step ``(K_I + K_P(1-nu)) e_0``).

  With ``nu = 0`` (so ``xi_t = e_t``) this is the generalised optimistic gradient
  ``d_t = (K_I + K_P) e_t - K_P e_{t-1}``, and with the ``"sgd"`` initialisation it is
  optax's ``scale_by_optimistic_gradient(alpha=K_I, beta=K_P)`` exactly, whose first step
  also uses ``e_{-1} = e_0`` (the same floating-point operations, bitwise equal).
  ``K_P = K_I = 1`` is Popov's optimistic gradient ``2 e_t - e_{t-1}``; ``K_P = 0`` is
  gradient descent.

  Every entry is updated at every step (dense). For per-example (indexed) multipliers
  of which a mini-batch observes a few rows, an unobserved row (zero error) still moves
  by ``-K_P (1 - nu) xi_{t-1}`` and its ``xi`` decays; Cooper's sparse path instead
  leaves unobserved rows and their ``xi`` untouched. Use ``K_P = 0`` there, or update
  the gathered rows only.

  Args:
    kp: proportional gain ``K_P >= 0`` (scalar, or an array broadcasting against every
      leaf).
    ki: integral gain ``K_I >= 0``.
    ema_nu: the moving-average coefficient ``nu`` in ``(-1, 1)``.
    init: ``"sgd"`` (default, as Cooper's ``nuPIInitType.SGD``) or ``"zeros"``.

  Returns:
    A ``GradientTransformation`` with state :class:`NuPIState`.

  Reference: Sohrabi, Ramirez, Zhang, Lacoste-Julien, Gallego-Posada, "On PI controllers
  for updating Lagrange multipliers in constrained optimization", ICML 2024; Cooper's
  ``nuPI`` (``src/cooper/optim/torch_optimizers/nupi_optimizer.py``, cooper-org/cooper
  v1.0). Cooper's docstring gives ``xi_{-1} = e_0`` for its ``SGD`` initialisation,
  hence ``xi_0 = e_0``, which we follow; its code differs after the first step: the
  dense path stores ``xi_0 = 0`` (second step ``(K_I + K_P(1-nu)) e_1``), the sparse
  path ``xi_0 = (1 - nu) e_0`` (equal to ours for ``nu = 0``).

  Example:
    >>> import jax.numpy as jnp, lagrangian_jax as lj
    >>> tx = lj.scale_by_nupi(kp=1.0, ki=1.0)
    >>> s = tx.init(jnp.zeros(()))
    >>> d0, s = tx.update(jnp.array(1.), s)     # first step: K_I e_0
    >>> d1, s = tx.update(jnp.array(3.), s)     # 2 e_1 - e_0
    >>> float(d0), float(d1)
    (1.0, 5.0)
  """
  _check_nupi(kp, ki, ema_nu, init)

  def init_fn(params):
    return NuPIState(xi=optax.tree.zeros_like(params), initial=jnp.array(True))

  def update_fn(updates, state, params=None):
    del params
    # Written as Cooper's recursion so that nu = 0 gives optax's optimistic gradient's
    # operations exactly: (alpha + beta) e - beta e_prev with 1 - nu == 1.
    p_coef = kp * (1.0 - ema_nu)

    def direction(e, xi):
      if init == "sgd":
        xi = jnp.where(state.initial, e, xi)
      return ((ki + p_coef) * e - p_coef * xi).astype(e.dtype)

    def smooth(e, xi):
      if init == "sgd":
        xi = jnp.where(state.initial, e, xi)
      return (ema_nu * xi + (1.0 - ema_nu) * e).astype(xi.dtype)

    out = jax.tree.map(direction, updates, state.xi)
    xi = jax.tree.map(smooth, updates, state.xi)
    return out, NuPIState(xi=xi, initial=jnp.zeros_like(state.initial))

  return optax.GradientTransformation(init_fn, update_fn)


def nupi(
  learning_rate: optax.ScalarOrSchedule,
  kp: float | jax.Array = 0.0,
  ki: float | jax.Array = 1.0,
  ema_nu: float = 0.0,
  *,
  init: str = "sgd",
) -> optax.GradientTransformationExtraArgs:
  r"""nuPI (Sohrabi et al. 2024) as an optax optimizer: ``u_t = -eta d_t``.

  ``d_t`` is :func:`scale_by_nupi`'s direction; ``optax.chain(scale_by_nupi(...),
  optax.scale_by_learning_rate(learning_rate))``. As the ``dual=`` rule of
  :func:`~lagrangian_jax.descent_ascent` the error is ``e_t = -g(x_t)``, so

  .. math::
    \lambda_{t+1} = \lambda_t + \eta\,\big(K_I\,g_t + K_P\,(\xi^g_t - \xi^g_{t-1})\big),
    \qquad \xi^g_t = \nu \xi^g_{t-1} + (1-\nu) g_t

  the integral term accumulating the violation and the proportional term reacting to
  its (smoothed) change. ``nupi(lr, kp=0, ki=1)`` is ``optax.sgd(lr)``;
  ``nupi(lr, kp=b, ki=a, ema_nu=0)`` equals
  ``optax.optimistic_gradient_descent(lr, alpha=a, beta=b)`` step for step.

  Example:
    >>> import jax, jax.numpy as jnp, optax, lagrangian_jax as lj
    >>> L = lambda p: p['primal'] * p['dual']          # min_x max_y x*y
    >>> tx = lj.descent_ascent(optax.sgd(0.1), lj.nupi(0.1, kp=1.0, ki=1.0))
    >>> params = {'primal': jnp.array(1.), 'dual': jnp.array(1.)}
    >>> state = tx.init(params)
    >>> for _ in range(2):
    ...   params, state = lj.solver_step(tx, jax.grad(L), params, state)
    >>> [round(float(v), 4) for v in (params['primal'], params['dual'])]
    [0.79, 1.18]
  """
  return optax.chain(
    scale_by_nupi(kp, ki, ema_nu, init=init), optax.scale_by_learning_rate(learning_rate)
  )


# ----------------------------------------------------------------------------------
# Projection hook
# ----------------------------------------------------------------------------------


def project(projection: Callable[[PyTree], PyTree]) -> optax.GradientTransformation:
  r"""Projects the point a dual rule steps to: ``u <- P(y + u) - y``.

  Chain it after any rule, ``optax.chain(rule, project(P))``, as the ``dual=`` argument
  of :func:`~lagrangian_jax.descent_ascent`, to keep the multipliers in a set (bounded
  multipliers keep the dual problem compact: TFCO's ``maximum_multiplier_radius``).
  ``P`` maps the multiplier pytree to a pytree of the same structure; :func:`box` and
  :func:`nonnegative_l1_ball` are examples. ``descent_ascent``'s own ``nonnegative=``
  projection runs after this one (a no-op when ``P`` already keeps ``y >= 0``). The
  rule's state is not told about the projection (as in Cooper and TFCO).

  Needs ``params`` in ``update``.

  Example:
    >>> import jax.numpy as jnp, optax, lagrangian_jax as lj
    >>> tx = optax.chain(optax.sgd(1.0), lj.project(lj.box(0.0, 2.0)))
    >>> y = jnp.array([1.0, 1.0])
    >>> u, _ = tx.update(jnp.array([-5.0, 5.0]), tx.init(y), y)   # sgd step: y - grad
    >>> (y + u).tolist()
    [2.0, 0.0]
  """
  if not callable(projection):
    raise ValueError(f"project: projection must be a callable pytree -> pytree, got {projection!r}")

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError("project: needs params in update(updates, state, params)")
    target = projection(jax.tree.map(lambda p, u: p + u.astype(p.dtype), params, updates))
    out = jax.tree.map(lambda t, p, u: (t - p).astype(u.dtype), target, params, updates)
    return out, state

  return optax.GradientTransformation(lambda _: optax.EmptyState(), update_fn)


def box(lower: float | None = None, upper: float | None = None) -> Callable[[PyTree], PyTree]:
  """The projection onto ``lower <= y <= upper`` elementwise (``None``: unbounded).

  Example:
    >>> import jax.numpy as jnp, lagrangian_jax as lj
    >>> lj.box(0.0, 1.0)(jnp.array([-1.0, 0.5, 3.0])).tolist()
    [0.0, 0.5, 1.0]
  """
  if lower is not None and upper is not None and not lower <= upper:
    raise ValueError(f"box: lower must be <= upper, got {lower} > {upper}")
  return lambda tree: jax.tree.map(lambda y: jnp.clip(y, lower, upper), tree)


def nonnegative_l1_ball(radius: float) -> Callable[[PyTree], PyTree]:
  r"""Euclidean projection onto ``{y >= 0, sum(y) <= radius}`` over all leaves together.

  TFCO's ``maximum_multiplier_radius`` set for the Lagrangian formulation
  (``_project_multipliers_wrt_euclidean_norm`` in its ``lagrangian_optimizer.py``): the
  multipliers stay in a bounded set, so the dual player's iterates stay bounded. With
  ``y+ = max(y, 0)``: if ``sum(y+) <= radius`` the projection is ``y+``; otherwise it is
  the projection onto the simplex ``{y >= 0, sum y = radius}``, ``max(y - tau, 0)``
  with the threshold ``tau`` found by sorting (Held, Wolfe, Crowder 1974; Duchi et al.
  2008).

  Example:
    >>> import jax.numpy as jnp, lagrangian_jax as lj
    >>> P = lj.nonnegative_l1_ball(1.0)
    >>> P(jnp.array([0.2, -1.0, 0.3])).tolist()           # inside: only clipped at 0
    [0.20000000298023224, 0.0, 0.30000001192092896]
    >>> P({'a': jnp.array([2.0]), 'b': jnp.array([1.0])})  # sum 3 > 1: tau = 1
    {'a': Array([1.], dtype=float32), 'b': Array([0.], dtype=float32)}
  """
  if not (isinstance(radius, (int, float)) and radius > 0 and math.isfinite(radius)):
    raise ValueError(f"nonnegative_l1_ball: radius must be a finite number > 0, got {radius!r}")

  def projection(tree):
    flat, unravel = jax.flatten_util.ravel_pytree(tree)
    plus = jnp.maximum(flat, 0)
    s = -jnp.sort(-flat)  # descending
    cumulative = jnp.cumsum(s) - radius
    k = jnp.arange(1, flat.size + 1, dtype=flat.dtype)
    # the largest k with s_k > (sum_{i<=k} s_i - radius) / k sets the threshold
    rho = jnp.sum(s * k > cumulative)
    tau = cumulative[rho - 1] / rho.astype(flat.dtype)
    on_simplex = jnp.maximum(flat - tau, 0)
    return unravel(jnp.where(jnp.sum(plus) <= radius, plus, on_simplex))

  return projection


# ----------------------------------------------------------------------------------
# Growing penalty coefficient
# ----------------------------------------------------------------------------------


class PenaltyState(NamedTuple):
  """A penalty coefficient ``c`` and its initial value (to restart from).

  Attributes:
    value: ``c``; a scalar (one coefficient for all constraints, grown by the norm of
      the violation) or an array shaped like the one constraint leaf (one coefficient
      per constraint, grown elementwise).
    initial: ``c_0``, the value a restart returns to.
  """

  value: jax.Array
  initial: jax.Array


def penalty_init(value: float | jax.Array) -> PenaltyState:
  """A :class:`PenaltyState` starting at ``value`` (> 0), as float32 unless an array.

  Example:
    >>> import lagrangian_jax as lj
    >>> float(lj.penalty_init(2.0).value)
    2.0
  """
  value = jnp.asarray(value, jnp.result_type(float))
  if not isinstance(value, jax.core.Tracer) and not bool(jnp.all(value > 0)):
    raise ValueError(f"penalty_init: value must be > 0, got {value}")
  return PenaltyState(value=value, initial=value)


def _violation(value: jax.Array, equality: PyTree, inequality: PyTree) -> jax.Array:
  """``|g|`` and ``max(h, 0)``: their norm for a scalar ``c``, else the one leaf."""
  parts = [jnp.abs(leaf) for leaf in jax.tree.leaves(equality)]
  parts += [jnp.maximum(leaf, 0) for leaf in jax.tree.leaves(inequality)]
  if not parts:
    raise ValueError("penalty update: give equality= and/or inequality= constraint values")
  if value.ndim == 0:
    return jnp.sqrt(sum(jnp.sum(jnp.square(p.astype(value.dtype))) for p in parts))
  if len(parts) != 1 or parts[0].shape != value.shape:
    raise ValueError(
      f"penalty update: a penalty of shape {value.shape} needs exactly one constraint "
      f"leaf of that shape; got shapes {[p.shape for p in parts]}"
    )
  return parts[0].astype(value.dtype)


def _grow(state, equality, inequality, tolerance, restart, grown):
  if not tolerance >= 0:
    raise ValueError(f"penalty update: tolerance must be >= 0, got {tolerance!r}")
  measure = _violation(state.value, equality, inequality)
  value = jnp.where(measure > tolerance, grown(state.value), state.value)
  if restart and equality is None:  # an inequality constraint met: back to c_0
    value = jnp.where(measure == 0, state.initial, value)
  return state._replace(value=value.astype(state.value.dtype))


def multiplicative_penalty_update(
  state: PenaltyState,
  *,
  equality: PyTree = None,
  inequality: PyTree = None,
  factor: float = 1.01,
  tolerance: float = 1e-4,
  restart: bool = True,
) -> PenaltyState:
  r"""Grows the penalty by a factor while the violation exceeds a tolerance.

  With ``v = (|g|, max(h, 0))`` the violation at the current point and ``m = |v|_2`` (a
  scalar ``c``) or ``m = v`` elementwise (one ``c`` per constraint):

  .. math::
    c \leftarrow \begin{cases} \gamma\,c & m > \text{tolerance} \\ c & \text{otherwise}
    \end{cases}

  and, with ``restart`` and inequality constraints only, ``c <- c_0`` where ``m = 0``
  (the constraint is met). Cooper's ``MultiplicativePenaltyCoefficientUpdater``
  (Nocedal and Wright, Algorithm 17.4). Use ``state.value`` as the ``penalty=`` of
  :func:`~lagrangian_jax.augmented_lagrangian` or
  :func:`~lagrangian_jax.quadratic_penalty`: an array, so a jitted step does not
  recompile when it changes.

  Args:
    state: the current :class:`PenaltyState`.
    equality, inequality: constraint values ``g`` (``= 0``) and ``h`` (``<= 0``), pytrees.
    factor: ``gamma`` (> 1 to grow).
    tolerance: violations at most this large leave ``c`` unchanged.
    restart: return to ``c_0`` where an inequality-only constraint is met.

  Example:
    >>> import jax.numpy as jnp, lagrangian_jax as lj
    >>> s = lj.penalty_init(1.0)
    >>> s = lj.multiplicative_penalty_update(s, inequality=jnp.array([0.5, -1.0]), factor=2.0)
    >>> float(s.value)                                   # violated: 1 * 2
    2.0
    >>> s = lj.multiplicative_penalty_update(s, inequality=jnp.array([-0.5]), factor=2.0)
    >>> float(s.value)                                   # met: restart at c_0
    1.0
  """
  return _grow(state, equality, inequality, tolerance, restart, lambda c: c * factor)


def additive_penalty_update(
  state: PenaltyState,
  *,
  equality: PyTree = None,
  inequality: PyTree = None,
  increment: float = 1.0,
  tolerance: float = 1e-4,
  restart: bool = True,
) -> PenaltyState:
  r"""Grows the penalty by an increment while the violation exceeds a tolerance.

  As :func:`multiplicative_penalty_update` with ``c <- c + increment`` (Cooper's
  ``AdditivePenaltyCoefficientUpdater``).

  Example:
    >>> import jax.numpy as jnp, lagrangian_jax as lj
    >>> s = lj.penalty_init(jnp.array([1.0, 1.0]))       # one c per constraint
    >>> s = lj.additive_penalty_update(s, equality=jnp.array([0.3, 0.0]), increment=0.5)
    >>> s.value.tolist()
    [1.5, 1.0]
  """
  return _grow(state, equality, inequality, tolerance, restart, lambda c: c + increment)
