r"""Past extragradient whose per-example rows extrapolate with a fresh gradient.

An experiment's solver (issue 23 item 5, ``config.solver="past_extragradient_fresh_rows"``),
not a method of the paper. Under :func:`~lagrangian_jax.past_extragradient` (Popov) every
variable lives at its extrapolated point ``x_{t+1/2} = x_t + T(g_{t-1})``, extrapolated
with the gradient of its last update. A per-example row (a lifted method's state or
multiplier) is updated once an epoch, so its extrapolation is an epoch stale. Here the
rows (``rows``: a pytree prefix of bools like the params) extrapolate as extragradient
does, from a gradient taken now, while every other variable (the weights) keeps Popov's
step:

.. math::
  h_{t+1/2} = h_t + T(g_h(w_{t+1/2}, h_t)),\quad
  g = \nabla L(w_{t+1/2}, h_{t+1/2}),\quad
  h_{t+1} = h_t + T(g_h),\quad
  w_{t+1} = w_t + T(g_w),\ w_{t+3/2} = w_{t+1} + T(g_w)

Rows are stored at ``h_{t+1}`` (their extrapolation in the state is 0), weights at
``w_{t+3/2}``; :func:`~lagrangian_jax.current_iterate` reads the iterate as for Popov.
Two gradients per iteration, as extragradient. ``fresh=False``
(``config.solver="past_extragradient_plain_rows"``) drops the rows' extrapolation instead:
``h_{t+1} = h_t + T(g_h(w_{t+1/2}, h_t))``, simultaneous steps for the rows beside Popov's
for the weights, one gradient per iteration. The inner step rule sees the weights'
part of the first gradient as 0 and the rows' part of the weights' extrapolation as 0,
so with ``accumulate="both"`` Adagrad accumulates, per variable, the two gradients that
variable's own scheme uses (ExtraAdagrad's for the rows, Popov's for the weights).

Example:
  >>> import jax, jax.numpy as jnp, optax
  >>> import lagrangian_jax as lj
  >>> L = lambda p: p['primal'] * p['dual']
  >>> params = {'primal': jnp.array(1.), 'dual': jnp.array(1.)}
  >>> tx = past_extragradient_fresh_rows(
  ...   lj.descent_ascent(optax.sgd(0.3), optax.sgd(0.3)), {'primal': False, 'dual': True})
  >>> state = tx.init(params)
  >>> for _ in range(300):
  ...   params, state = lj.solver_step(tx, jax.grad(L), params, state)
  >>> bool(abs(lj.current_iterate(params, state)['primal']) < 1e-3)
  True
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from lagrangian_jax import solvers

__all__ = ["past_extragradient_fresh_rows"]


def _only(rows: Any, tree: Any, keep_rows: bool) -> Any:
  """``tree`` with the leaves under ``rows == not keep_rows`` set to 0."""

  def part(is_row, sub):
    keep = bool(is_row) == keep_rows
    return jax.tree.map(lambda a: a if keep else jnp.zeros_like(a), sub)

  return jax.tree.map(part, rows, tree)


def past_extragradient_fresh_rows(
  inner: optax.GradientTransformation, rows: Any, *, accumulate: str = "both", fresh: bool = True
) -> optax.GradientTransformationExtraArgs:
  """Popov's past extragradient for the weights, extragradient for ``rows`` (``fresh=False``:
  no extrapolation for them; module docstring); ``update`` needs ``params`` and, when
  ``fresh``, ``grad_fn`` (:func:`solver_step`)."""
  if accumulate not in solvers.ACCUMULATE:
    raise ValueError(f"accumulate must be one of {solvers.ACCUMULATE}, got {accumulate!r}")
  inner = optax.with_extra_args_support(inner)

  def init_fn(params):
    return solvers.PastExtragradientState(
      extrapolation=optax.tree.zeros_like(params), inner_state=inner.init(params)
    )

  def update_fn(updates, state, params=None, *, grad_fn=None, **extra_args):
    if params is None or (fresh and grad_fn is None):
      raise ValueError("past_extragradient_fresh_rows: update needs params and grad_fn")
    x_t = jax.tree.map(lambda p, e: p - e.astype(p.dtype), params, state.extrapolation)
    grads, start = updates, state.inner_state  # fresh=False: g at (w_{t+1/2}, h_t)
    if fresh:  # the rows' fresh extrapolation, from the gradient at (w_{t+1/2}, h_t)
      ahead, half_state = inner.update(
        _only(rows, updates, True), state.inner_state, x_t, **extra_args
      )
      grads = grad_fn(optax.apply_updates(params, _only(rows, ahead, True)))
      start = half_state if accumulate == "both" else state.inner_state
    step, inner_state = inner.update(grads, start, x_t, **extra_args)
    x_next = optax.apply_updates(x_t, step)
    # the weights' Popov extrapolation reuses the gradient of their update
    extra, extra_state = inner.update(_only(rows, grads, False), inner_state, x_next, **extra_args)
    if accumulate == "both":
      inner_state = extra_state
    extra = _only(rows, extra, False)
    out = jax.tree.map(
      lambda e_old, s, e: (s + e - e_old).astype(e_old.dtype), state.extrapolation, step, extra
    )
    extra = jax.tree.map(lambda e, ref: e.astype(ref.dtype), extra, state.extrapolation)
    return out, solvers.PastExtragradientState(extrapolation=extra, inner_state=inner_state)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
