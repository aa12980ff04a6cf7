"""``past_extragradient_fresh_rows`` (issue 23 item 5's experiment): rows take
extragradient's step, the other variables Popov's, bit for bit."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lagrangian_jax as lj
from lagrangian_jax import fresh_rows
from lagrangian_jax import optimizers


def _L(p):  # a coupled saddle: weights w, rows h (primal) and multipliers lam (dual)
  w, h, lam = p["primal"]["w"], p["primal"]["h"], p["dual"]
  return jnp.sum(w**2 * h) + jnp.sum(lam * (h - jnp.sin(w))) + 0.1 * jnp.sum(h**2)


def _run(tx, steps=5):
  params = {
    "primal": {"w": jnp.array([0.5, -1.0]), "h": jnp.array([0.2, 0.3])},
    "dual": jnp.array([0.1, -0.4]),
  }
  state = tx.init(params)
  for _ in range(steps):
    params, state = lj.solver_step(tx, jax.grad(_L), params, state)
  return params, lj.current_iterate(params, state)


def _inner():
  return lj.descent_ascent(optax.adagrad(0.1, initial_accumulator_value=0.1), optax.sgd(0.05))


def _same(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_all_rows_is_extragradient_and_no_rows_is_popov():
  all_rows = {"primal": {"w": True, "h": True}, "dual": True}
  no_rows = {"primal": {"w": False, "h": False}, "dual": False}
  _same(
    _run(fresh_rows.past_extragradient_fresh_rows(_inner(), all_rows))[1],
    _run(lj.extragradient(_inner()))[1],
  )
  _same(
    _run(fresh_rows.past_extragradient_fresh_rows(_inner(), no_rows)),
    _run(lj.past_extragradient(_inner())),
  )


def test_plain_rows_are_simultaneous_steps_on_all_rows_and_popov_on_none():
  all_rows = {"primal": {"w": True, "h": True}, "dual": True}
  no_rows = {"primal": {"w": False, "h": False}, "dual": False}
  plain = lambda rows: fresh_rows.past_extragradient_fresh_rows(_inner(), rows, fresh=False)
  _same(_run(plain(all_rows))[1], _run(optax.with_extra_args_support(_inner()))[1])
  _same(_run(plain(no_rows)), _run(lj.past_extragradient(_inner())))


def test_rows_are_stored_at_their_iterate_and_weights_extrapolated():
  rows = {"primal": {"w": False, "h": True}, "dual": True}
  params, iterate = _run(fresh_rows.past_extragradient_fresh_rows(_inner(), rows))
  np.testing.assert_array_equal(np.asarray(params["primal"]["h"]), iterate["primal"]["h"])
  np.testing.assert_array_equal(np.asarray(params["dual"]), np.asarray(iterate["dual"]))
  assert np.all(np.asarray(params["primal"]["w"]) != np.asarray(iterate["primal"]["w"]))


def test_the_saddle_alias_marks_the_aux_group_and_the_multipliers_as_rows():
  params = {"primal": {"weights": jnp.ones(2), "aux": jnp.ones(3)}, "dual": jnp.ones(3)}
  labels = {"weights": "weights", "aux": optimizers.ROW_GROUP}
  tx = optimizers.saddle_point(
    "past_extragradient_fresh_rows",
    "sgd",
    {"weights": 0.1, "aux": 0.1},
    0.1,
    primal_labels=labels,
  )
  grads = jax.tree.map(jnp.ones_like, params)
  calls = []
  _, state = tx.update(grads, tx.init(params), params, grad_fn=lambda p: calls.append(p) or grads)
  (half,) = calls  # the second gradient's point: rows moved, weights not
  np.testing.assert_array_equal(np.asarray(half["primal"]["weights"]), 1.0)
  np.testing.assert_allclose(np.asarray(half["primal"]["aux"]), 0.9)
  np.testing.assert_allclose(np.asarray(half["dual"]), 1.1)
  with pytest.raises(ValueError, match="primal_labels"):
    optimizers.saddle_point("past_extragradient_fresh_rows", "sgd", 0.1)
