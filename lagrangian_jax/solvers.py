"""Saddle-point solvers as optax gradient transformations.

For ``min_x max_y L(x, y)`` the solvers here consume the plain gradient of ``L`` with
respect to *all* variables (``jax.grad(L)(params)``) and produce additive updates, so
they are used exactly like any optax optimizer and compose with ``optax.chain``,
``optax.multi_transform`` and ``optax.inject_hyperparams``:

  * :func:`descent_ascent` -- descent on the primal subtree, ascent on the dual subtree
    (the gradient of the multipliers is negated before their inner transformation),
    optionally projecting inequality multipliers onto ``lambda >= 0``. Used alone,
    one update per gradient, it is simultaneous gradient descent-ascent (GDA,
    Arrow-Hurwicz-Uzawa).
  * :func:`extragradient` -- Korpelevich's extragradient around any inner
    transformation, two gradients per iteration: the paper's eq. 2 (ExtraProp when
    applied to the lifted problem of eq. 1).
  * :func:`past_extragradient` -- extrapolation from the past (Popov 1980), one gradient
    per iteration.

One iteration, whatever the solver. Every transformation here accepts the keyword
argument ``grad_fn`` in ``update`` (as ``optax.contrib.sam``'s opaque mode does): given
the gradient at ``params`` and ``grad_fn(params) -> gradient``, one ``update`` call
performs a whole iteration and evaluates any further gradient it needs itself (the
extragradient's second one). :func:`solver_step` wraps that call, and
:func:`current_iterate` says which point is the iterate ``x_t`` to evaluate and report
(past extragradient keeps ``params`` at the extrapolated point). A training loop written
against these two functions never needs to know which solver it runs.

Nothing here imports training code.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from lagrangian_jax import _trees
from lagrangian_jax import formulations
from lagrangian_jax import multipliers

PyTree = Any

__all__ = [
  "AlternatingState",
  "DescentAscentState",
  "ExtragradientState",
  "PastExtragradientState",
  "alternating",
  "current_iterate",
  "descent_ascent",
  "extragradient",
  "extragradient_phase",
  "method_of_multipliers",
  "MultipliersState",
  "past_extragradient",
  "solver_step",
]

ACCUMULATE = ("both", "update")


def _check_like(tree: PyTree, reference: PyTree, who: str, what: str) -> None:
  _trees.check_like(
    tree, reference, f"{who}: {what} do not match the pytree this optimizer was initialised with"
  )


def _split(tree: PyTree, keys: tuple[str, str], who: str, what: str):
  """``(tree[primal_key], tree[dual_key])``, or a readable error."""
  if not isinstance(tree, Mapping) or set(tree.keys()) != set(keys):
    got = sorted(tree.keys()) if isinstance(tree, Mapping) else type(tree).__name__
    raise ValueError(
      f"{who}: {what} must be a dict with exactly the keys {list(keys)} (primal variables "
      f"and multipliers); got {got}. Pass primal_key=/dual_key= to use other names."
    )
  return tree[keys[0]], tree[keys[1]]


def _tree_select(pred: jax.Array, on_true: PyTree, on_false: PyTree) -> PyTree:
  return jax.tree.map(lambda a, b: jnp.where(pred, a, b), on_true, on_false)


# ----------------------------------------------------------------------------------
# Descent-ascent
# ----------------------------------------------------------------------------------


class DescentAscentState(NamedTuple):
  """State of :func:`descent_ascent`: the two inner states."""

  primal: optax.OptState
  dual: optax.OptState


def _nonnegative_mask(nonnegative, dual_params: PyTree) -> list[bool]:
  """One Python bool per dual leaf: is that multiplier projected onto ``>= 0``?

  Leaves inside :class:`~lagrangian_jax.multipliers.Nonnegative` always are (the
  inequality kind decides); ``nonnegative`` can only add leaves.
  """
  marked = multipliers.nonnegative_mask(dual_params)
  return [m or f for m, f in zip(marked, _flagged(nonnegative, dual_params), strict=True)]


def _flagged(nonnegative, dual_params: PyTree) -> list[bool]:
  """One Python bool per dual leaf: does the ``nonnegative`` argument select it?"""
  leaves_with_path = jax.tree_util.tree_leaves_with_path(dual_params)
  if nonnegative is None or nonnegative is False:
    return [False] * len(leaves_with_path)
  if nonnegative is True:
    return [True] * len(leaves_with_path)
  if callable(nonnegative):
    return [bool(nonnegative(path, leaf)) for path, leaf in leaves_with_path]
  try:  # a pytree prefix of bools
    full = jax.tree.map(
      lambda flag, sub: jax.tree.map(lambda _: bool(flag), sub), nonnegative, dual_params
    )
  except (ValueError, TypeError) as e:
    raise ValueError(
      "descent_ascent: `nonnegative` must be None, a bool, a callable (path, leaf) "
      "-> bool, or a pytree prefix of bools of the dual variables; it does not match "
      f"the dual pytree {jax.tree.structure(dual_params)}"
    ) from e
  return jax.tree.leaves(full)


def descent_ascent(
  primal: optax.GradientTransformation,
  dual: optax.GradientTransformation,
  *,
  primal_key: str = "primal",
  dual_key: str = "dual",
  nonnegative: Any = None,
) -> optax.GradientTransformationExtraArgs:
  r"""Descent on the primal variables, ascent on the multipliers.

  With ``params = {primal_key: x, dual_key: y}`` and ``grads = jax.grad(L)(params)``:

  .. math::
    u_x = T_{\text{primal}}(\nabla_x L), \qquad
    u_y = T_{\text{dual}}(-\nabla_y L), \qquad
    u_y \leftarrow \max(y + u_y, 0) - y \ \text{ for nonnegative multipliers.}

  where ``T`` are the inner optax transformations (which already contain the minus sign
  of a descent step, e.g. ``optax.sgd``), so ``y`` moves *up* the gradient.

  Args:
    primal: optax transformation for the primal subtree (weights, states, ...).
    dual: optax transformation for the multipliers; it is fed negated gradients.
    primal_key: key of the primal subtree in ``params``.
    dual_key: key of the multiplier subtree in ``params``.
    nonnegative: which multipliers are inequality multipliers, kept ``>= 0`` by
      projection. Those marked ``lj.nonnegative(...)`` in ``params`` (as
      ``lj.Problem`` makes them) always are; this adds more: ``None``/``False`` (no
      more), ``True`` (all), a pytree prefix of bools of the dual subtree, or a
      callable ``(key_path, leaf) -> bool``. Needs ``params`` in ``update``.

  Returns:
    A ``GradientTransformationExtraArgs``; unknown keyword arguments of ``update`` are
    passed on to the inner transformations (which ignore what they do not use), except
    ``grad_fn``, which is not needed: one gradient per iteration.

  Example:
    >>> import jax, jax.numpy as jnp, optax
    >>> import lagrangian_jax as lj
    >>> L = lambda p: p['primal'] * p['dual']          # min_x max_y x*y
    >>> params = {'primal': jnp.array(1.), 'dual': jnp.array(1.)}
    >>> tx = lj.descent_ascent(optax.sgd(0.1), optax.sgd(0.1))
    >>> state = tx.init(params)
    >>> updates, state = tx.update(jax.grad(L)(params), state, params)
    >>> jax.tree.map(lambda u: round(float(u), 6), updates)
    {'dual': 0.1, 'primal': -0.1}
  """
  primal = optax.with_extra_args_support(primal)
  dual = optax.with_extra_args_support(dual)
  keys = (primal_key, dual_key)

  def split(tree, what):
    return _split(tree, keys, "descent_ascent", what)

  def init_fn(params):
    x, y = split(params, "params")
    return DescentAscentState(primal=primal.init(x), dual=dual.init(y))

  def update_fn(updates, state, params=None, *, grad_fn=None, **extra_args):
    del grad_fn  # one gradient per iteration: the one given
    gx, gy = split(updates, "gradients")
    x = y = None
    if params is not None:
      x, y = split(params, "params")
      _check_like(gx, x, "descent_ascent", "primal gradients")
      _check_like(gy, y, "descent_ascent", "dual gradients")
    ux, sx = primal.update(gx, state.primal, x, **extra_args)
    uy, sy = dual.update(jax.tree.map(jnp.negative, gy), state.dual, y, **extra_args)
    mask = _nonnegative_mask(nonnegative, gy)
    if any(mask):
      if y is None:
        raise ValueError(
          "descent_ascent: projecting multipliers onto >= 0 "
          "(nonnegative=...) needs params in update(updates, state, params)"
        )
      leaves_u, treedef = jax.tree.flatten(uy)
      leaves_y = jax.tree.leaves(y)
      leaves_u = [
        (jnp.maximum(p + u, 0) - p).astype(u.dtype) if m else u
        for u, p, m in zip(leaves_u, leaves_y, mask)
      ]
      uy = jax.tree.unflatten(treedef, leaves_u)
    out = {primal_key: ux, dual_key: uy}
    if type(updates) is not dict:  # keep e.g. FrozenDict / OrderedDict containers
      out = type(updates)(out)
    return out, DescentAscentState(primal=sx, dual=sy)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


# ----------------------------------------------------------------------------------
# Extragradient
# ----------------------------------------------------------------------------------


class ExtragradientState(NamedTuple):
  """State of :func:`extragradient`.

  Attributes:
    phase: int32 scalar; 0 when the next ``update`` extrapolates from ``x_t``, 1 when it
      applies the step computed at the extrapolated point from ``x_t``.
    anchor: the extrapolation step ``x_{t+1/2} - x_t`` while ``phase == 1``; zeros
      otherwise. It is the only extra buffer (one copy of the parameters).
    inner_state: the wrapped transformation's state.
  """

  phase: jax.Array
  anchor: optax.Updates
  inner_state: optax.OptState


def _check_accumulate(accumulate: str, who: str) -> None:
  if accumulate not in ACCUMULATE:
    raise ValueError(f"{who}: accumulate must be one of {ACCUMULATE}, got {accumulate!r}")


def extragradient(
  inner: optax.GradientTransformation, *, accumulate: str = "both"
) -> optax.GradientTransformationExtraArgs:
  r"""Extragradient (Korpelevich 1976) around any optax transformation.

  One iteration (the paper's eq. 2; Gidel et al. 2019, Alg. 2-4),
  with ``T`` the inner transformation:

  .. math::
    x_{t+1/2} = x_t + T(\nabla L(x_t)), \qquad x_{t+1} = x_t + T(\nabla L(x_{t+1/2}))

  The update starts from the saved point ``x_t``, not from ``x_{t+1/2}``, and the inner
  transformation always sees ``params = x_t``, so projections and weight decay act on
  the anchor point.

  Two ways to drive it:

  * one call per iteration (what :func:`solver_step` and the trainer do): pass
    ``grad_fn`` to ``update``; given the gradient at ``x_t`` it extrapolates, calls
    ``grad_fn(x_{t+1/2})`` and returns ``x_{t+1} - x_t``. The state stays at phase 0.
  * two calls per iteration (plain optax usage, no ``grad_fn``): successive calls
    alternate between extrapolation (phase 0, returns ``x_{t+1/2} - x_t``) and update
    (phase 1, given the gradient at ``x_{t+1/2}``, returns ``x_{t+1} - x_{t+1/2}``).

  Both calls advance the inner state by default (``accumulate="both"``): for Adam and
  Adagrad this is Extra-Adam of Gidel et al. (2019), where moments, accumulators and
  step counts advance at both half-steps as if each were an ordinary iteration; it is
  the paper's ExtraAdagrad. ``accumulate="update"`` discards the state produced by the
  extrapolation, so the inner state advances once per iteration, with the gradient at
  the extrapolated point; the extrapolation then uses ``s_t`` as well. A schedule inside
  ``inner`` counts half-steps, i.e. two per iteration with ``accumulate="both"``.

  Gradient pre-processing (clipping, noise) belongs *inside* ``inner``: in one-call
  mode the gradient returned by ``grad_fn`` goes straight to ``inner``.

  Args:
    inner: any optax transformation, e.g. ``descent_ascent(optax.adagrad(.1), ...)``.
    accumulate: ``"both"`` (default) or ``"update"``, see above.

  Returns:
    A ``GradientTransformationExtraArgs``; :func:`extragradient_phase` tells which
    half-step a two-call ``update`` performs next.

  Example:
    >>> import jax, jax.numpy as jnp, optax
    >>> import lagrangian_jax as lj
    >>> L = lambda p: p['primal'] * p['dual']          # min_x max_y x*y
    >>> params = {'primal': jnp.array(1.), 'dual': jnp.array(1.)}
    >>> tx = lj.extragradient(lj.descent_ascent(optax.sgd(0.5), optax.sgd(0.5)))
    >>> state = tx.init(params)
    >>> for _ in range(100):                           # one call per iteration
    ...   updates, state = tx.update(jax.grad(L)(params), state, params,
    ...                              grad_fn=jax.grad(L))
    ...   params = optax.apply_updates(params, updates)
    >>> bool(abs(params['primal']) < 1e-3 and abs(params['dual']) < 1e-3)
    True

  References:
    Korpelevich, The extragradient method for finding saddle points and other
    problems, 1976. Gidel et al., A Variational Inequality Perspective on Generative
    Adversarial Networks, ICLR 2019.
  """
  _check_accumulate(accumulate, "extragradient")
  inner = optax.with_extra_args_support(inner)

  def init_fn(params):
    return ExtragradientState(
      phase=jnp.zeros([], jnp.int32),
      anchor=optax.tree.zeros_like(params),
      inner_state=inner.init(params),
    )

  def one_call(updates, state, params, grad_fn, extra_args):
    if params is None:
      raise ValueError("extragradient: update(..., grad_fn=...) needs params (x_t)")
    _check_like(params, state.anchor, "extragradient", "params")
    step, half_state = inner.update(updates, state.inner_state, params, **extra_args)
    grads = grad_fn(optax.apply_updates(params, step))
    _check_like(grads, state.anchor, "extragradient", "gradients from grad_fn")
    start_state = state.inner_state if accumulate == "update" else half_state
    step, inner_state = inner.update(grads, start_state, params, **extra_args)
    step = jax.tree.map(lambda u, a: u.astype(a.dtype), step, state.anchor)
    return step, state._replace(inner_state=inner_state)

  def update_fn(updates, state, params=None, *, grad_fn=None, **extra_args):
    _check_like(updates, state.anchor, "extragradient", "gradients")
    if grad_fn is not None:
      return one_call(updates, state, params, grad_fn, extra_args)
    extrapolating = state.phase == 0
    anchor_params = None
    if params is not None:
      _check_like(params, state.anchor, "extragradient", "params")
      # anchor is zero in phase 0, so this is x_t in both phases.
      anchor_params = jax.tree.map(lambda p, a: p - a.astype(p.dtype), params, state.anchor)
    step, inner_state = inner.update(updates, state.inner_state, anchor_params, **extra_args)
    out = jax.tree.map(
      lambda u, a: jnp.where(extrapolating, u, u - a).astype(a.dtype), step, state.anchor
    )
    anchor = jax.tree.map(
      lambda u, a: jnp.where(extrapolating, u, jnp.zeros_like(u)).astype(a.dtype),
      step,
      state.anchor,
    )
    if accumulate == "update":
      inner_state = _tree_select(extrapolating, state.inner_state, inner_state)
    return out, ExtragradientState(phase=1 - state.phase, anchor=anchor, inner_state=inner_state)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


# ----------------------------------------------------------------------------------
# Extrapolation from the past
# ----------------------------------------------------------------------------------


class PastExtragradientState(NamedTuple):
  """State of :func:`past_extragradient`.

  Attributes:
    extrapolation: the last extrapolation step ``x_{t+1/2} - x_t`` (params are kept at
      the extrapolated point between calls).
    inner_state: the wrapped transformation's state.
  """

  extrapolation: optax.Updates
  inner_state: optax.OptState


def past_extragradient(
  inner: optax.GradientTransformation, *, accumulate: str = "both"
) -> optax.GradientTransformationExtraArgs:
  r"""Extrapolation from the past (Popov 1980; Gidel et al. 2019): one gradient per step.

  Params live at the extrapolated points ``x_{t+1/2}``; each ``update`` receives
  ``g = grad L(x_{t+1/2})`` and performs

  .. math::
    x_{t+1} = x_t + T(g), \qquad x_{t+3/2} = x_{t+1} + T(g),

  returning ``x_{t+3/2} - x_{t+1/2}``. The extrapolation reuses the gradient of the
  update (that is the "past" gradient of the next iteration), so each iteration costs
  one gradient. For SGD this is ``x_{t+3/2} = x_{t+1/2} - 2 eta g_t + eta g_{t-1}``,
  i.e. optimistic gradient descent. The inner transformation is called twice per
  update (anchored at ``x_t`` and ``x_{t+1}``, so projections act on both points);
  ``accumulate="both"`` keeps both inner states (the gradient is accumulated twice,
  as two half-steps of Extra-Adam would), ``"update"`` keeps only the first.

  Use :func:`current_iterate` for the non-extrapolated iterate ``x_{t+1}``. A
  ``grad_fn`` passed to ``update`` is not needed (one gradient per iteration) and ignored.

  Example:
    >>> import jax, jax.numpy as jnp, optax
    >>> import lagrangian_jax as lj
    >>> L = lambda p: p['primal'] * p['dual']
    >>> params = {'primal': jnp.array(1.), 'dual': jnp.array(1.)}
    >>> tx = lj.past_extragradient(lj.descent_ascent(optax.sgd(0.3), optax.sgd(0.3)))
    >>> state = tx.init(params)
    >>> for _ in range(200):
    ...   updates, state = tx.update(jax.grad(L)(params), state, params)
    ...   params = optax.apply_updates(params, updates)
    >>> bool(abs(params['primal']) < 1e-3)
    True
  """
  _check_accumulate(accumulate, "past_extragradient")
  inner = optax.with_extra_args_support(inner)

  def init_fn(params):
    return PastExtragradientState(
      extrapolation=optax.tree.zeros_like(params), inner_state=inner.init(params)
    )

  def update_fn(updates, state, params=None, *, grad_fn=None, **extra_args):
    del grad_fn  # the given gradient, at the extrapolated point, is the only one
    _check_like(updates, state.extrapolation, "past_extragradient", "gradients")
    x_t = x_next = None
    if params is not None:
      _check_like(params, state.extrapolation, "past_extragradient", "params")
      x_t = jax.tree.map(lambda p, e: p - e.astype(p.dtype), params, state.extrapolation)
    step, inner_state = inner.update(updates, state.inner_state, x_t, **extra_args)
    if x_t is not None:
      x_next = jax.tree.map(lambda p, s: p + s.astype(p.dtype), x_t, step)
    extra, extra_state = inner.update(updates, inner_state, x_next, **extra_args)
    if accumulate == "both":
      inner_state = extra_state
    out = jax.tree.map(
      lambda e_old, s, e: (s + e - e_old).astype(e_old.dtype), state.extrapolation, step, extra
    )
    extra = jax.tree.map(lambda e, ref: e.astype(ref.dtype), extra, state.extrapolation)
    return out, PastExtragradientState(extrapolation=extra, inner_state=inner_state)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


# ----------------------------------------------------------------------------------
# Method of multipliers
# ----------------------------------------------------------------------------------


class MultipliersState(NamedTuple):
  """State of :func:`method_of_multipliers`: the iteration count and the primal state."""

  count: jax.Array
  primal: optax.OptState


def method_of_multipliers(
  primal: optax.GradientTransformation,
  *,
  penalty: optax.ScalarOrSchedule = 1.0,
  every: int = 1,
  primal_key: str = "primal",
  dual_key: str = "dual",
) -> optax.GradientTransformationExtraArgs:
  r"""The method of multipliers (Hestenes 1969, Powell 1969) for an augmented Lagrangian.

  For ``L_c(x, lambda) = f + <lambda, g> + (c/2)|g|^2`` one iteration is a primal step on
  ``L_c`` with the multipliers fixed, then (every ``every`` iterations) the first-order
  multiplier update at the new point (``formulations.method_of_multipliers_update``):

  .. math::
    x_{t+1} = x_t + T(\nabla_x L_c(x_t, \lambda_t)), \qquad
    \lambda_{t+1} = \lambda_t + c_t\, \nabla_\lambda L_c(x_{t+1}, \lambda_t)
                  = \lambda_t + c_t\, g(x_{t+1})

  Unlike descent-ascent the multipliers move by ``c g`` itself (no step rule, no
  learning rate), sequentially after the primal step. With ``grad_fn`` (one call per
  iteration, :func:`solver_step`) the constraint is evaluated at ``x_{t+1}``; without it
  the given gradient's ``g(x_t)`` is used. ``penalty`` may be a schedule of the iteration
  count (e.g. an increasing ``c``), so the multiplier updates have their own schedule.
  Inequality multipliers are not supported here (use :func:`descent_ascent`).

  Args:
    primal: the optax transformation of the primal step, e.g. ``optax.adagrad(0.1)``.
    penalty: ``c`` (the same ``c`` as in the augmented Lagrangian), or a schedule.
    every: update the multipliers every this many iterations (>= 1).
    primal_key, dual_key: the two keys of ``params``.

  Example:
    >>> import jax, jax.numpy as jnp, optax
    >>> import lagrangian_jax as lj
    >>> def L(p):          # min x^2  s.t.  x - 1 = 0, augmented with c = 1
    ...   x, lam = p['primal'], p['dual']
    ...   return lj.augmented_lagrangian(x**2, x - 1.0, lam, penalty=1.0)
    >>> params = {'primal': jnp.array(0.), 'dual': jnp.array(0.)}
    >>> tx = lj.method_of_multipliers(optax.sgd(0.2), penalty=1.0)
    >>> state = tx.init(params)
    >>> step = jax.jit(lambda p, s: lj.solver_step(tx, jax.grad(L), p, s))
    >>> for _ in range(200):
    ...   params, state = step(params, state)
    >>> round(float(params['primal']), 4), round(float(params['dual']), 4)
    (1.0, -2.0)
  """
  if not isinstance(every, int) or every < 1:
    raise ValueError(f"method_of_multipliers: every must be an integer >= 1, got {every!r}")
  if isinstance(penalty, (int, float)) and not penalty > 0:
    raise ValueError(f"method_of_multipliers: penalty must be > 0, got {penalty}")
  primal = optax.with_extra_args_support(primal)
  keys = (primal_key, dual_key)

  def init_fn(params):
    x, _ = _split(params, keys, "method_of_multipliers", "params")
    return MultipliersState(count=jnp.zeros([], jnp.int32), primal=primal.init(x))

  def update_fn(updates, state, params=None, *, grad_fn=None, **extra_args):
    if params is None:
      raise ValueError("method_of_multipliers: update needs params")
    gx, gy = _split(updates, keys, "method_of_multipliers", "gradients")
    x, y = _split(params, keys, "method_of_multipliers", "params")
    _check_like(gx, x, "method_of_multipliers", "primal gradients")
    _check_like(gy, y, "method_of_multipliers", "dual gradients")
    ux, sx = primal.update(gx, state.primal, x, **extra_args)
    c = penalty(state.count) if callable(penalty) else penalty

    def multiplier_step():
      g = gy
      if grad_fn is not None:  # the constraint at the new primal point
        _, g = _split(
          grad_fn({primal_key: optax.apply_updates(x, ux), dual_key: y}),
          keys,
          "method_of_multipliers",
          "gradients from grad_fn",
        )
      new_y, _ = formulations.method_of_multipliers_update(y, g, penalty=c)
      return jax.tree.map(lambda n, o: (n - o).astype(o.dtype), new_y, y)

    uy = jax.lax.cond(
      (state.count + 1) % every == 0, multiplier_step, lambda: optax.tree.zeros_like(y)
    )
    out = {primal_key: ux, dual_key: uy}
    if type(updates) is not dict:
      out = type(updates)(out)
    return out, MultipliersState(count=state.count + 1, primal=sx)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


# ----------------------------------------------------------------------------------
# One iteration, any solver
# ----------------------------------------------------------------------------------

_SOLVER_STATES = (ExtragradientState, PastExtragradientState)


def _find_solver_state(state: optax.OptState):
  """The first extragradient or past-extragradient state inside ``state``, or None."""
  found = [
    s
    for s in jax.tree.leaves(state, is_leaf=lambda s: isinstance(s, _SOLVER_STATES))
    if isinstance(s, _SOLVER_STATES)
  ]
  return found[0] if found else None


def extragradient_phase(state: optax.OptState) -> jax.Array:
  """The half-step the next two-call ``update`` performs: 0 extrapolation, 1 update.

  Looks for the first :class:`ExtragradientState` or :class:`PastExtragradientState`
  anywhere inside ``state`` (so it works through ``optax.chain``,
  ``inject_hyperparams`` and ``multi_transform``). Past extragradient always
  reports 1: every call is an update (followed by its own extrapolation).
  """
  found = _find_solver_state(state)
  if found is None:
    raise ValueError("extragradient_phase: no extragradient state found in this optimizer state")
  if isinstance(found, PastExtragradientState):
    return jnp.ones([], jnp.int32)
  return found.phase


def current_iterate(params: PyTree, state: optax.OptState) -> PyTree:
  """The iterate ``x_t`` to evaluate, report and export, for any solver of this module.

  ``params`` is ``x_t`` itself for :func:`descent_ascent`, for plain optax optimizers and
  for :func:`extragradient` between iterations; it is ``x_t + e`` with ``e`` the last
  extrapolation for :func:`past_extragradient` (whose params live at the extrapolated
  point) and for an extragradient stopped between its two half-steps.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> import lagrangian_jax as lj
    >>> L = lambda p: p['primal'] * p['dual']
    >>> params = {'primal': jnp.array(1.), 'dual': jnp.array(1.)}
    >>> tx = lj.past_extra_adagrad(0.1)
    >>> params, state = lj.solver_step(tx, jax.grad(L), params, tx.init(params))
    >>> x_t = lj.current_iterate(params, state)
    >>> bool(x_t['primal'] != params['primal'])       # params are extrapolated
    True
  """
  found = _find_solver_state(state)
  if found is None:
    return params
  offset = found.anchor if isinstance(found, ExtragradientState) else found.extrapolation
  return jax.tree.map(lambda p, e: p - e.astype(p.dtype), params, offset)


def solver_step(
  tx: optax.GradientTransformation,
  grad_fn: Callable[..., PyTree],
  params: PyTree,
  state: optax.OptState,
  *args,
  has_aux: bool = False,
  **kwargs,
):
  """One full iteration of any solver (or any optax optimizer) in one call.

  Evaluates ``grad_fn(params, *args, **kwargs)`` once and calls
  ``tx.update(grads, state, params, grad_fn=...)``, so extragradient evaluates its second
  gradient itself; then applies the update. Jit it as a whole for one compiled step.

  Args:
    tx: a transformation of this module (possibly inside ``optax.chain``) or any optax
      transformation (which ignores ``grad_fn``).
    grad_fn: returns the gradient pytree, or ``(grads, aux)`` with ``has_aux=True``.
    params, state: the current point and optimizer state.
    *args, **kwargs: passed on to every ``grad_fn`` evaluation (e.g. the batch).
    has_aux: whether ``grad_fn`` returns ``(grads, aux)``.

  Returns:
    ``(new_params, new_state)``, or ``(new_params, new_state, aux)`` with ``aux`` the
    auxiliary output at ``params`` (for extragradient that is the iterate ``x_t``).

  Example:
    >>> import jax, jax.numpy as jnp
    >>> import lagrangian_jax as lj
    >>> L = lambda p: p['primal'] * p['dual']
    >>> params = {'primal': jnp.array(1.), 'dual': jnp.array(1.)}
    >>> tx = lj.extra_sgd(0.5)
    >>> params, state = lj.solver_step(tx, jax.grad(L), params, tx.init(params))
    >>> jax.tree.map(float, params)      # x: 1 - .5 * 1.5, y: 1 + .5 * .5
    {'dual': 1.25, 'primal': 0.25}
  """

  def grads_only(p):
    out = grad_fn(p, *args, **kwargs)
    return out[0] if has_aux else out

  out = grad_fn(params, *args, **kwargs)
  grads, aux = out if has_aux else (out, None)
  updates, state = tx.update(grads, state, params, grad_fn=grads_only)
  new_params = optax.apply_updates(params, updates)
  return (new_params, state, aux) if has_aux else (new_params, state)


# ----------------------------------------------------------------------------------
# Alternating primal-then-dual updates
# ----------------------------------------------------------------------------------


class AlternatingState(NamedTuple):
  """State of :func:`alternating`.

  Attributes:
    phase: int32 scalar, for the two-call mode only: 0 when the next ``update`` is the
      primal step, 1 when it is the dual step (always 0 in one-call mode).
    inner: the :class:`DescentAscentState` of the two rules.
  """

  phase: jax.Array
  inner: DescentAscentState


def alternating(
  primal: optax.GradientTransformation,
  dual: optax.GradientTransformation,
  *,
  primal_key: str = "primal",
  dual_key: str = "dual",
  nonnegative: Any = None,
) -> optax.GradientTransformationExtraArgs:
  r"""Alternating updates: the primal step first, then the dual step at the new point.

  .. math::
    x_{t+1} = x_t + T_{\text{primal}}(\nabla_x L(x_t, y_t)), \qquad
    y_{t+1} = y_t + T_{\text{dual}}(-\nabla_y L(x_{t+1}, y_t))

  (then projected as in :func:`descent_ascent`, whose rules, keys and ``nonnegative=``
  it takes). For a Lagrangian ``\nabla_y L(x_{t+1}, y_t)`` is the constraint at the
  *new* primal point, so the multipliers react to the step just taken: Cooper's
  ``AlternatingPrimalDualOptimizer``. Two gradients per iteration (only the dual part
  of the second is used; under ``jit`` the primal part of it is dead code).

  Two ways to drive it:

  * one call per iteration (:func:`solver_step`): pass ``grad_fn`` to ``update``; given
    the gradient at ``(x_t, y_t)`` it steps ``x``, calls ``grad_fn((x_{t+1}, y_t))`` and
    steps ``y``. The state stays at phase 0.
  * two calls per iteration (plain optax usage, no ``grad_fn``): successive calls
    alternate between the primal step (phase 0: the dual update is zero and the dual
    rule's state does not move) and the dual step (phase 1, given the gradient at
    ``(x_{t+1}, y_t)``: the primal update is zero and its state does not move).

  Both modes compute the same iterates.

  Example:
    >>> import jax, jax.numpy as jnp, optax
    >>> import lagrangian_jax as lj
    >>> L = lambda p: p['primal'] * p['dual']          # min_x max_y x*y
    >>> params = {'primal': jnp.array(1.), 'dual': jnp.array(1.)}
    >>> tx = lj.alternating(optax.sgd(0.1), optax.sgd(0.1))
    >>> params, state = lj.solver_step(tx, jax.grad(L), params, tx.init(params))
    >>> jax.tree.map(lambda v: round(float(v), 6), params)  # x = 1 - .1, y = 1 + .1 * .9
    {'dual': 1.09, 'primal': 0.9}
  """
  inner = descent_ascent(
    primal, dual, primal_key=primal_key, dual_key=dual_key, nonnegative=nonnegative
  )
  keys = (primal_key, dual_key)

  def split(tree, what):
    return _split(tree, keys, "alternating", what)

  def join(x, y, like):
    out = {primal_key: x, dual_key: y}
    return out if type(like) is dict else type(like)(out)

  def init_fn(params):
    return AlternatingState(phase=jnp.zeros([], jnp.int32), inner=inner.init(params))

  def primal_half(grads, state, params, extra_args):
    """``(u_x, primal state)`` from the gradient at ``(x_t, y_t)``."""
    updates, new = inner.update(grads, state.inner, params, **extra_args)
    return split(updates, "updates")[0], new.primal

  def dual_half(grads, state, params, extra_args):
    """``(u_y, dual state)`` from the gradient at ``(x_{t+1}, y_t)``."""
    updates, new = inner.update(grads, state.inner, params, **extra_args)
    return split(updates, "updates")[1], new.dual

  def one_call(updates, state, params, grad_fn, extra_args):
    if params is None:
      raise ValueError("alternating: update(..., grad_fn=...) needs params (x_t, y_t)")
    ux, sx = primal_half(updates, state, params, extra_args)
    x, y = split(params, "params")
    moved = join(optax.apply_updates(x, ux), y, params)
    grads = grad_fn(moved)
    _check_like(grads, params, "alternating", "gradients from grad_fn")
    uy, sy = dual_half(grads, state, params, extra_args)
    inner_state = DescentAscentState(primal=sx, dual=sy)
    return join(ux, uy, updates), state._replace(inner=inner_state)

  def update_fn(updates, state, params=None, *, grad_fn=None, **extra_args):
    if grad_fn is not None:
      return one_call(updates, state, params, grad_fn, extra_args)
    # Two calls: phase 0 keeps the primal half, phase 1 the dual half; both halves are
    # computed (one traced program for both phases) and the other one discarded.
    ux, sx = primal_half(updates, state, params, extra_args)
    uy, sy = dual_half(updates, state, params, extra_args)
    primal_phase = state.phase == 0
    ux = jax.tree.map(lambda u: jnp.where(primal_phase, u, jnp.zeros_like(u)), ux)
    uy = jax.tree.map(lambda u: jnp.where(primal_phase, jnp.zeros_like(u), u), uy)
    sx = _tree_select(primal_phase, sx, state.inner.primal)
    sy = _tree_select(primal_phase, state.inner.dual, sy)
    inner_state = DescentAscentState(primal=sx, dual=sy)
    return join(ux, uy, updates), AlternatingState(phase=1 - state.phase, inner=inner_state)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
