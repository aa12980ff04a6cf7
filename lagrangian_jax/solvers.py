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
    transformation; two ``update`` calls (two gradients) per iteration (paper eq. 2).
  * :func:`past_extragradient` -- extrapolation from the past (Popov 1980), one gradient
    per iteration.

Nothing here imports training code.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

PyTree = Any

__all__ = [
    "DescentAscentState",
    "ExtragradientState",
    "PastExtragradientState",
    "descent_ascent",
    "extragradient",
    "extragradient_phase",
    "extragradient_step",
    "past_extragradient",
    "past_extragradient_iterate",
]

_ACCUMULATE = ("both", "update")


def _check_like(tree: PyTree, reference: PyTree, who: str, what: str) -> None:
  """Raises a readable error when ``tree`` does not match ``reference`` leaf for leaf."""
  s_tree, s_ref = jax.tree.structure(tree), jax.tree.structure(reference)
  if s_tree != s_ref:
    raise ValueError(
        f"{who}: {what} do not match the pytree this optimizer was initialised with: "
        f"got {s_tree}, expected {s_ref}")
  for path_leaf, ref in zip(jax.tree_util.tree_leaves_with_path(tree),
                            jax.tree.leaves(reference)):
    path, leaf = path_leaf
    if jnp.shape(leaf) != jnp.shape(ref):
      raise ValueError(
          f"{who}: {what} leaf {jax.tree_util.keystr(path)} has shape "
          f"{jnp.shape(leaf)}, expected {jnp.shape(ref)}")


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
  """One Python bool per dual leaf: is that multiplier projected onto ``>= 0``?"""
  leaves_with_path = jax.tree_util.tree_leaves_with_path(dual_params)
  if nonnegative is None or nonnegative is False:
    return [False] * len(leaves_with_path)
  if nonnegative is True:
    return [True] * len(leaves_with_path)
  if callable(nonnegative):
    return [bool(nonnegative(path, leaf)) for path, leaf in leaves_with_path]
  try:  # a pytree prefix of bools
    full = jax.tree.map(lambda flag, sub: jax.tree.map(lambda _: bool(flag), sub),
                        nonnegative, dual_params)
  except (ValueError, TypeError) as e:
    raise ValueError(
        "descent_ascent: `nonnegative` must be None, a bool, a callable (path, leaf) "
        "-> bool, or a pytree prefix of bools of the dual variables; it does not match "
        f"the dual pytree {jax.tree.structure(dual_params)}") from e
  return jax.tree.leaves(full)


def descent_ascent(primal: optax.GradientTransformation,
                   dual: optax.GradientTransformation,
                   *,
                   primal_key: str = "primal",
                   dual_key: str = "dual",
                   nonnegative: Any = None) -> optax.GradientTransformationExtraArgs:
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
      projection: ``None``/``False`` (none), ``True`` (all), a pytree prefix of bools
      of the dual subtree, or a callable ``(key_path, leaf) -> bool``. Needs ``params``
      in ``update``.

  Returns:
    A ``GradientTransformationExtraArgs``; unknown keyword arguments of ``update`` are
    passed on to the inner transformations (which ignore what they do not use).

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
    if not isinstance(tree, Mapping) or set(tree.keys()) != set(keys):
      got = sorted(tree.keys()) if isinstance(tree, Mapping) else type(tree).__name__
      raise ValueError(
          f"descent_ascent: {what} must be a dict with exactly the keys "
          f"{list(keys)} (primal variables and multipliers); got {got}. Pass "
          "primal_key=/dual_key= to use other names.")
    return tree[primal_key], tree[dual_key]

  def init_fn(params):
    x, y = split(params, "params")
    return DescentAscentState(primal=primal.init(x), dual=dual.init(y))

  def update_fn(updates, state, params=None, **extra_args):
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
        raise ValueError("descent_ascent: projecting multipliers onto >= 0 "
                         "(nonnegative=...) needs params in update(updates, state, params)")
      leaves_u, treedef = jax.tree.flatten(uy)
      leaves_y = jax.tree.leaves(y)
      leaves_u = [(jnp.maximum(p + u, 0) - p).astype(u.dtype) if m else u
                  for u, p, m in zip(leaves_u, leaves_y, mask)]
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
  if accumulate not in _ACCUMULATE:
    raise ValueError(f"{who}: accumulate must be one of {_ACCUMULATE}, got {accumulate!r}")


def extragradient(inner: optax.GradientTransformation,
                  *,
                  accumulate: str = "both") -> optax.GradientTransformationExtraArgs:
  r"""Extragradient (Korpelevich 1976) around any optax transformation.

  Successive ``update`` calls alternate between two phases (paper eq. 2; Gidel et al.
  2019, Alg. 2-4). With ``T`` the inner transformation:

  .. math::
    \text{phase 0 (extrapolation):}\quad x_{t+1/2} = x_t + T(\nabla L(x_t)) \\
    \text{phase 1 (update):}\quad x_{t+1} = x_t + T(\nabla L(x_{t+1/2}))

  The update step starts from the saved point ``x_t``, not from ``x_{t+1/2}``: the
  returned update of phase 1 is ``T(...) - (x_{t+1/2} - x_t)``. The inner
  transformation always sees ``params = x_t``, so projections and weight decay act
  on the anchor point.

  Both calls advance the inner state by default (``accumulate="both"``): for Adam and
  Adagrad this is Extra-Adam of Gidel et al. (2019), where moments, accumulators and
  step counts advance at both half-steps as if each were an ordinary iteration; it is
  the paper's ExtraAdagrad. ``accumulate="update"`` discards the state produced by the
  extrapolation, so the inner state advances once per iteration, with the gradient at
  the extrapolated point; the extrapolation then uses ``s_t`` as well.

  A schedule inside ``inner`` (or ``optax.inject_hyperparams``) counts *calls*, i.e.
  two per iteration with ``accumulate="both"``.

  Args:
    inner: any optax transformation, e.g. ``descent_ascent(optax.adagrad(.1), ...)``.
    accumulate: ``"both"`` (default) or ``"update"``, see above.

  Returns:
    A ``GradientTransformationExtraArgs``; see :func:`extragradient_phase` for the
    phase that comes next, and :func:`extragradient_step` for a one-call form.

  Example:
    >>> import jax, jax.numpy as jnp, optax
    >>> import lagrangian_jax as lj
    >>> L = lambda p: p['primal'] * p['dual']          # min_x max_y x*y
    >>> params = {'primal': jnp.array(1.), 'dual': jnp.array(1.)}
    >>> tx = lj.extragradient(lj.descent_ascent(optax.sgd(0.5), optax.sgd(0.5)))
    >>> state = tx.init(params)
    >>> for _ in range(2 * 100):                       # extrapolation, update, ...
    ...   updates, state = tx.update(jax.grad(L)(params), state, params)
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
    return ExtragradientState(phase=jnp.zeros([], jnp.int32),
                              anchor=optax.tree.zeros_like(params),
                              inner_state=inner.init(params))

  def update_fn(updates, state, params=None, **extra_args):
    _check_like(updates, state.anchor, "extragradient", "gradients")
    extrapolating = state.phase == 0
    anchor_params = None
    if params is not None:
      _check_like(params, state.anchor, "extragradient", "params")
      # anchor is zero in phase 0, so this is x_t in both phases.
      anchor_params = jax.tree.map(lambda p, a: p - a.astype(p.dtype), params, state.anchor)
    step, inner_state = inner.update(updates, state.inner_state, anchor_params, **extra_args)
    out = jax.tree.map(
        lambda u, a: jnp.where(extrapolating, u, u - a).astype(a.dtype), step, state.anchor)
    anchor = jax.tree.map(
        lambda u, a: jnp.where(extrapolating, u, jnp.zeros_like(u)).astype(a.dtype),
        step, state.anchor)
    if accumulate == "update":
      inner_state = _tree_select(extrapolating, state.inner_state, inner_state)
    return out, ExtragradientState(phase=1 - state.phase, anchor=anchor,
                                   inner_state=inner_state)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def extragradient_phase(state: optax.OptState) -> jax.Array:
  """The phase the next ``update`` will perform: 0 extrapolation, 1 update.

  Looks for the first :class:`ExtragradientState` or :class:`PastExtragradientState`
  anywhere inside ``state`` (so it works through ``optax.chain``,
  ``inject_hyperparams`` and ``multi_transform``). Past extragradient always
  reports 1: every call is an update (followed by its own extrapolation).
  """
  found = [s for s in jax.tree.leaves(
      state, is_leaf=lambda s: isinstance(s, (ExtragradientState, PastExtragradientState)))
           if isinstance(s, (ExtragradientState, PastExtragradientState))]
  if not found:
    raise ValueError("extragradient_phase: no extragradient state found in this "
                     "optimizer state")
  if isinstance(found[0], PastExtragradientState):
    return jnp.ones([], jnp.int32)
  return found[0].phase


def extragradient_step(tx: optax.GradientTransformation,
                       grad_fn: Callable[..., PyTree],
                       params: PyTree,
                       state: optax.OptState,
                       *args,
                       has_aux: bool = False,
                       **kwargs):
  """One full extragradient iteration (both half-steps) in one call.

  ``grad_fn(params, *args, **kwargs)`` returns the gradient pytree (or
  ``(grads, aux)`` with ``has_aux=True``). ``tx`` must be an :func:`extragradient`
  (possibly chained) whose state is at phase 0. Jit it as a whole for one compiled
  step with two gradient evaluations.

  Returns:
    ``(new_params, new_state)``, or ``(new_params, new_state, aux)`` where ``aux`` is
    the auxiliary output at the extrapolated point.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> import lagrangian_jax as lj
    >>> L = lambda p: p['primal'] * p['dual']
    >>> params = {'primal': jnp.array(1.), 'dual': jnp.array(1.)}
    >>> tx = lj.extra_sgd(0.5)
    >>> state = tx.init(params)
    >>> params, state = lj.extragradient_step(tx, jax.grad(L), params, state)
    >>> jax.tree.map(float, params)      # x: 1 - .5 * 1.5, y: 1 + .5 * .5
    {'dual': 1.25, 'primal': 0.25}
  """
  def grads_at(p):
    out = grad_fn(p, *args, **kwargs)
    return out if has_aux else (out, None)

  grads, _ = grads_at(params)
  updates, state = tx.update(grads, state, params)
  half = optax.apply_updates(params, updates)
  grads, aux = grads_at(half)
  updates, state = tx.update(grads, state, half)
  new_params = optax.apply_updates(half, updates)
  return (new_params, state, aux) if has_aux else (new_params, state)


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


def past_extragradient(inner: optax.GradientTransformation,
                       *,
                       accumulate: str = "both") -> optax.GradientTransformationExtraArgs:
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

  Use :func:`past_extragradient_iterate` for the non-extrapolated iterate ``x_{t+1}``.

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
    return PastExtragradientState(extrapolation=optax.tree.zeros_like(params),
                                  inner_state=inner.init(params))

  def update_fn(updates, state, params=None, **extra_args):
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
    out = jax.tree.map(lambda e_old, s, e: (s + e - e_old).astype(e_old.dtype),
                       state.extrapolation, step, extra)
    extra = jax.tree.map(lambda e, ref: e.astype(ref.dtype), extra, state.extrapolation)
    return out, PastExtragradientState(extrapolation=extra, inner_state=inner_state)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def past_extragradient_iterate(params: PyTree, state: optax.OptState) -> PyTree:
  """The non-extrapolated iterate ``x_t = params - (last extrapolation)``."""
  found = [s for s in jax.tree.leaves(
      state, is_leaf=lambda s: isinstance(s, PastExtragradientState))
           if isinstance(s, PastExtragradientState)]
  if not found:
    raise ValueError("past_extragradient_iterate: no past_extragradient state found")
  return jax.tree.map(lambda p, e: p - e.astype(p.dtype), params, found[0].extrapolation)
