"""Tests of the saddle-point solvers (lagrangian_jax/solvers.py, optimizers.py).

Exact sequences are computed by hand in comments/literal arithmetic (never by calling
a re-implementation of the solver). Unless said otherwise the test problem is the
bilinear game ``L(x, y) = x * y`` (grad_x = y, grad_y = x; descent on x, ascent on y)
from ``x = y = 1`` in float32.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lagrangian_jax as lj

F32 = jnp.float32


def bilinear(params):
  return params["primal"] * params["dual"]


def p0(x=1.0, y=1.0, dtype=F32):
  return {"primal": jnp.asarray(x, dtype), "dual": jnp.asarray(y, dtype)}


def contract_loop(tx, lagrangian, params, calls, state=None):
  """The user contract, verbatim (``calls`` = 2 * iterations for extragradient)."""
  state = tx.init(params) if state is None else state
  for _ in range(calls):
    grads = jax.grad(lagrangian)(params)
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
  return params, state


def one_call(tx, lagrangian, params, state):
  updates, state = tx.update(jax.grad(lagrangian)(params), state, params)
  return updates, optax.apply_updates(params, updates), state


def close(tree, expected, atol=1e-6):
  np.testing.assert_allclose(
    [float(tree["primal"]), float(tree["dual"])], expected, rtol=0, atol=atol
  )


# =================================================================================
# 1. Exact update sequences
# =================================================================================


@pytest.mark.parametrize(
  "make",
  [
    lambda: lj.gda(0.1),
    lambda: lj.descent_ascent(optax.sgd(0.1), optax.sgd(0.1)),
  ],
  ids=["gda", "descent_ascent"],
)
def test_gda_exact_sequence(make):
  tx = make()
  params, state = p0(), None
  state = tx.init(params)
  # call 1: g = (y, x) = (1, 1): x -= .1*1, y += .1*1
  u, params, state = one_call(tx, bilinear, params, state)
  close(u, [-0.1, 0.1])
  close(params, [0.9, 1.1])
  # call 2: g = (1.1, 0.9): x = .9 - .11 = .79, y = 1.1 + .09 = 1.19
  u, params, state = one_call(tx, bilinear, params, state)
  close(u, [-0.11, 0.09])
  close(params, [0.79, 1.19])


def test_descent_ascent_different_rates_and_custom_keys():
  tx = lj.gda(0.1, 0.5, primal_key="w", dual_key="lam")
  params = {"w": jnp.asarray(1.0), "lam": jnp.asarray(1.0)}
  g = jax.grad(lambda p: p["w"] * p["lam"])(params)
  u, _ = tx.update(g, tx.init(params), params)
  # w -= .1 * 1 ; lam += .5 * 1
  np.testing.assert_allclose([float(u["w"]), float(u["lam"])], [-0.1, 0.5], atol=1e-7)


@pytest.mark.parametrize(
  "make",
  [
    lambda: lj.extra_sgd(0.1),
    lambda: lj.extragradient(lj.descent_ascent(optax.sgd(0.1), optax.sgd(0.1))),
  ],
  ids=["extra_sgd", "extragradient(descent_ascent(sgd))"],
)
def test_extragradient_sgd_exact_sequence_updates_from_anchor(make):
  tx = make()
  params = p0()
  state = tx.init(params)
  # phase 0 (extrapolation): g(x_t) = (1, 1): x_half = (.9, 1.1)
  u, params, state = one_call(tx, bilinear, params, state)
  close(u, [-0.1, 0.1])
  close(params, [0.9, 1.1])
  # phase 1: g(x_half) = (y, x) = (1.1, .9); step (-.11, +.09) applied FROM x_t = (1, 1):
  # x_1 = (.89, 1.09); returned update = step - anchor = (-.11 + .1, .09 - .1) = (-.01, -.01)
  u, params, state = one_call(tx, bilinear, params, state)
  close(u, [-0.01, -0.01])
  close(params, [0.89, 1.09])
  # (applied from x_half it would have been (.79, 1.19))
  assert abs(float(params["primal"]) - 0.79) > 0.05
  # iteration 2, phase 0: g(.89, 1.09) = (1.09, .89): x_half = (.89 - .109, 1.09 + .089)
  u, params, state = one_call(tx, bilinear, params, state)
  close(params, [0.781, 1.179])
  # phase 1: g(x_half) = (1.179, .781): from (.89, 1.09): (.89 - .1179, 1.09 + .0781)
  u, params, state = one_call(tx, bilinear, params, state)
  close(params, [0.7721, 1.1681])


R11 = 1.0 / math.sqrt(1.1 + 1e-7)  # adagrad's first factor: G = .1 + 1^2, rsqrt(G + eps)


@pytest.mark.parametrize("accumulate", ["both", "update"])
@pytest.mark.parametrize("via_alias", [True, False])
def test_extragradient_adagrad_exact_sequence(accumulate, via_alias):
  if via_alias:
    tx = lj.extra_adagrad(0.1, 0.2, accumulate=accumulate)
  else:
    tx = lj.extragradient(
      lj.descent_ascent(optax.adagrad(0.1), optax.adagrad(0.2)), accumulate=accumulate
    )
  params = p0()
  state = tx.init(params)
  # phase 0: both accumulators G = .1 + 1 = 1.1 (dual sees -1, squared 1)
  # x_half = 1 - .1 / sqrt(1.1 + 1e-7) ; y_half = 1 + .2 / sqrt(1.1 + 1e-7)
  xh, yh = 1 - 0.1 * R11, 1 + 0.2 * R11
  u, params, state = one_call(tx, bilinear, params, state)
  close(params, [xh, yh])
  acc = state.inner_state
  if accumulate == "both":
    np.testing.assert_allclose(
      [float(acc.primal[0].sum_of_squares), float(acc.dual[0].sum_of_squares)],
      [1.1, 1.1],
      rtol=1e-6,
    )
  else:  # the extrapolation's state is discarded
    np.testing.assert_allclose(
      [float(acc.primal[0].sum_of_squares), float(acc.dual[0].sum_of_squares)],
      [0.1, 0.1],
      rtol=1e-6,
    )
  # phase 1: g(x_half) = (gx, gy) = (yh, xh)
  gx, gy = yh, xh
  g0 = 1.1 if accumulate == "both" else 0.1  # accumulator before this call
  gxx, gyy = g0 + gx**2, g0 + gy**2
  x1 = 1 - 0.1 * gx / math.sqrt(gxx + 1e-7)  # from x_t = 1
  y1 = 1 + 0.2 * gy / math.sqrt(gyy + 1e-7)
  u, params, state = one_call(tx, bilinear, params, state)
  close(params, [x1, y1], atol=2e-6)
  close(u, [x1 - xh, y1 - yh], atol=2e-6)
  acc = state.inner_state
  np.testing.assert_allclose(
    [float(acc.primal[0].sum_of_squares), float(acc.dual[0].sum_of_squares)], [gxx, gyy], rtol=1e-6
  )
  assert int(state.phase) == 0


def test_extra_adam_exact_two_half_steps():
  tx = lj.extra_adam(0.1)  # b1 .9, b2 .999, eps 1e-8, accumulate="both"
  params = p0()
  state = tx.init(params)
  # half-step 1 (count 1): m = .1 g, v = .001 g^2, m_hat = g, v_hat = g^2
  # -> step = -lr * g / (|g| + 1e-8): x: -.1 / (1 + 1e-8); y (grad fed -1): +.1/(1+1e-8)
  s = 0.1 / (1 + 1e-8)
  u, params, state = one_call(tx, bilinear, params, state)
  close(params, [1 - s, 1 + s])
  assert int(state.inner_state.primal[0].count) == 1
  # half-step 2 (count 2): g_x = y_half = 1.1 ; dual fed -x_half = -.9
  gx, gy = 1 + s, -(1 - s)
  mx = 0.9 * (0.1 * 1.0) + 0.1 * gx  # = .09 + .11 = .2
  vx = 0.999 * (0.001 * 1.0) + 0.001 * gx**2  # = .000999 + .00121 = .002209
  my = 0.9 * (0.1 * -1.0) + 0.1 * gy  # = -.09 - .09 = -.18
  vy = 0.999 * (0.001 * 1.0) + 0.001 * gy**2  # = .000999 + .00081 = .001809
  bc1, bc2 = 1 - 0.9**2, 1 - 0.999**2  # .19, .001999
  x1 = 1 - 0.1 * (mx / bc1) / (math.sqrt(vx / bc2) + 1e-8)  # from x_t = 1
  y1 = 1 - 0.1 * (my / bc1) / (math.sqrt(vy / bc2) + 1e-8)
  u, params, state = one_call(tx, bilinear, params, state)
  close(params, [x1, y1], atol=2e-6)
  inner = state.inner_state.primal[0]
  assert int(inner.count) == 2  # moments advanced at both half-steps
  np.testing.assert_allclose([float(inner.mu), float(inner.nu)], [mx, vx], rtol=1e-5)


def square(params):  # min x^2 (the dual does not enter)
  return params["primal"] ** 2 + 0.0 * params["dual"]


def test_past_extragradient_sgd_exact_sequence():
  tx = lj.past_extragradient(lj.descent_ascent(optax.sgd(0.1), optax.sgd(0.1)))
  params = p0(1.0, 0.0)
  state = tx.init(params)
  # call 1: x_t = 1, g = 2 -> x_1 = .8, extrapolate again with g: x_{3/2} = .6 ; update -.4
  u, params, state = one_call(tx, square, params, state)
  np.testing.assert_allclose(float(u["primal"]), -0.4, atol=1e-7)
  np.testing.assert_allclose(float(params["primal"]), 0.6, atol=1e-7)
  np.testing.assert_allclose(float(lj.current_iterate(params, state)["primal"]), 0.8, atol=1e-7)
  # call 2: x_t = .6 - (-.2) = .8, g = 2*.6 = 1.2: x_2 = .8 - .12 = .68, x_{5/2} = .56
  u, params, state = one_call(tx, square, params, state)
  np.testing.assert_allclose(float(u["primal"]), -0.04, atol=1e-7)
  np.testing.assert_allclose(float(params["primal"]), 0.56, atol=1e-7)
  np.testing.assert_allclose(float(lj.current_iterate(params, state)["primal"]), 0.68, atol=1e-7)
  # call 3: x_t = .68, g = 1.12: x_3 = .568, x_{7/2} = .456 ; update .456 - .56 = -.104
  u, params, state = one_call(tx, square, params, state)
  np.testing.assert_allclose(float(u["primal"]), -0.104, atol=1e-6)
  np.testing.assert_allclose(float(params["primal"]), 0.456, atol=1e-6)
  assert float(params["dual"]) == 0.0


def projection_L(params):  # 0.5 x^2 + y (x - 3): h = x - 3 <= 0, y >= 0
  return 0.5 * params["primal"] ** 2 + params["dual"] * (params["primal"] - 3.0)


def test_projection_gda_multiplier_goes_to_exact_zero():
  tx = lj.gda(0.1, nonnegative=True)
  params = p0(1.0, 0.05)
  state = tx.init(params)
  # g = (x + y, x - 3) = (1.05, -2): x = 1 - .105 = .895 ; y = max(.05 - .2, 0) = 0
  u, params, state = one_call(tx, projection_L, params, state)
  np.testing.assert_allclose(float(u["dual"]), -0.05, atol=1e-8)
  np.testing.assert_allclose(float(params["primal"]), 0.895, atol=1e-6)
  assert float(params["dual"]) == 0.0
  u, params, state = one_call(tx, projection_L, params, state)
  assert float(params["dual"]) == 0.0 and float(u["dual"]) == 0.0


def test_projection_extragradient_both_phases_exact_zero():
  tx = lj.extra_sgd(0.1, nonnegative=True)
  params = p0(1.0, 0.05)
  state = tx.init(params)
  # phase 0: as GDA above: (.895, 0)
  _, params, state = one_call(tx, projection_L, params, state)
  np.testing.assert_allclose(float(params["primal"]), 0.895, atol=1e-6)
  assert float(params["dual"]) == 0.0
  # phase 1: g(x_half) = (.895 + 0, .895 - 3) ; from x_t = (1, .05):
  # x_1 = 1 - .0895 = .9105 ; y_1 = max(.05 - .2105, 0) = 0
  _, params, state = one_call(tx, projection_L, params, state)
  np.testing.assert_allclose(float(params["primal"]), 0.9105, atol=1e-6)
  assert float(params["dual"]) == 0.0


def test_projection_past_extragradient_exact_zero():
  tx = lj.past_extragradient(lj.descent_ascent(optax.sgd(0.1), optax.sgd(0.1), nonnegative=True))
  params = p0(1.0, 0.05)
  state = tx.init(params)
  for _ in range(3):
    _, params, state = one_call(tx, projection_L, params, state)
    assert float(params["dual"]) == 0.0
  assert float(lj.current_iterate(params, state)["dual"]) == 0.0


@pytest.mark.parametrize(
  "nonnegative",
  [
    {"eq": False, "ineq": True},
    lambda path, leaf: "ineq" in jax.tree_util.keystr(path),
  ],
  ids=["prefix", "callable"],
)
def test_projection_selects_leaves(nonnegative):
  tx = lj.gda(0.1, nonnegative=nonnegative)
  params = {
    "primal": jnp.asarray(0.0),
    "dual": {"eq": jnp.asarray(0.05), "ineq": jnp.asarray(0.05)},
  }

  def L(p):  # both constraints have value -1 -> ascent step -.1
    return p["primal"] ** 2 + (p["dual"]["eq"] + p["dual"]["ineq"]) * (p["primal"] - 1.0)

  _, params, _ = one_call(tx, L, params, tx.init(params))
  np.testing.assert_allclose(float(params["dual"]["eq"]), -0.05, atol=1e-7)
  assert float(params["dual"]["ineq"]) == 0.0


def test_nonnegative_bad_prefix_raises():
  tx = lj.gda(0.1, nonnegative={"nope": True})
  params = {"primal": jnp.asarray(0.0), "dual": {"eq": jnp.asarray(0.0)}}
  with pytest.raises(ValueError, match="nonnegative"):
    tx.update(params, tx.init(params), params)


def test_nonnegative_needs_params():
  tx = lj.gda(0.1, nonnegative=True)
  params = p0()
  with pytest.raises(ValueError, match="params"):
    tx.update(params, tx.init(params))


@pytest.mark.parametrize("chained", [False, True])
def test_extragradient_phase_alternates(chained):
  tx = lj.extra_sgd(0.1)
  if chained:
    tx = optax.chain(optax.clip_by_global_norm(10.0), tx)
  params = p0()
  state = tx.init(params)
  phases = []
  for _ in range(4):
    phases.append(int(lj.extragradient_phase(state)))
    _, params, state = one_call(tx, bilinear, params, state)
  assert phases == [0, 1, 0, 1]
  assert int(lj.extragradient_phase(state)) == 0


def test_extragradient_phase_past_and_missing():
  tx = lj.past_extra_adagrad(0.1)
  assert int(lj.extragradient_phase(tx.init(p0()))) == 1
  with pytest.raises(ValueError, match="no extragradient state"):
    lj.extragradient_phase(lj.gda(0.1).init(p0()))
  # without a solver state the iterate is params itself
  assert lj.current_iterate(p0(), lj.gda(0.1).init(p0())) == p0()


def test_current_iterate_is_x_t_for_every_solver():
  params = p0(0.7, -0.3)
  # extragradient between its two half-steps: params are x_{t+1/2}, the iterate x_t
  tx = lj.extra_sgd(0.1)
  _, half, state = one_call(tx, bilinear, params, tx.init(params))
  close(lj.current_iterate(half, state), [0.7, -0.3])
  # after a whole iteration the phase is 0 and params are the iterate
  _, full, state = one_call(tx, bilinear, half, state)
  close(lj.current_iterate(full, state), [float(full["primal"]), float(full["dual"])])
  # past extragradient: params are x_{t+1} + e; g = (y, x) = (-.3, .7), steps of .1:
  # x_1 = (.7 + .03, -.3 + .07), e = the same step again
  tx = lj.past_extragradient(lj.gda(0.1))
  _, p, state = one_call(tx, bilinear, params, tx.init(params))
  close(p, [0.76, -0.16])
  close(lj.current_iterate(p, state), [0.73, -0.23])


@pytest.mark.parametrize("accumulate", ["both", "update"])
def test_one_call_iteration_equals_two_manual_calls(accumulate):
  tx = lj.extra_adagrad(0.1, 0.05, accumulate=accumulate)
  params = p0(0.7, -0.3)
  state = tx.init(params)
  manual_p, manual_s = contract_loop(tx, bilinear, params, 2, state)
  step_p, step_s = lj.solver_step(tx, jax.grad(bilinear), params, state)
  # The optimizer states are bitwise equal (same gradients, same accumulators); the
  # params differ only by rounding: x_{t+1/2} + (s_2 - s_1) against x_t + s_2.
  jax.tree.map(np.testing.assert_array_equal, manual_s, step_s)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), manual_p, step_p)
  # docstring example values: x = 1 - .5 * 1.5, y = 1 + .5 * .5
  p, _, aux = lj.solver_step(
    lj.extra_sgd(0.5),
    lambda q: (jax.grad(bilinear)(q), q["primal"]),
    p0(),
    lj.extra_sgd(0.5).init(p0()),
    has_aux=True,
  )
  close(p, [0.25, 1.25])
  np.testing.assert_allclose(float(aux), 1.0)  # aux at the iterate x_t, not x_{t+1/2}


def test_one_call_iteration_exact_sequence():
  """extra_sgd(.5) on x*y from (1, 1), one ``update`` call per iteration.

  Iteration 1: g(x_t) = (1, 1) -> x_half = (.5, 1.5); g(x_half) = (1.5, .5)
  -> x_1 = (1 - .75, 1 + .25) = (.25, 1.25). Iteration 2: g = (1.25, .25) ->
  x_half = (.25 - .625, 1.25 + .125) = (-.375, 1.375); g(x_half) = (1.375, -.375)
  -> x_2 = (.25 - .6875, 1.25 - .1875) = (-.4375, 1.0625).
  """
  tx = lj.extra_sgd(0.5)
  params, state = p0(), tx.init(p0())
  calls = []

  def grad_fn(p):
    calls.append(1)
    return jax.grad(bilinear)(p)

  for expected in ([0.25, 1.25], [-0.4375, 1.0625]):
    updates, state = tx.update(grad_fn(params), state, params, grad_fn=grad_fn)
    params = optax.apply_updates(params, updates)
    close(params, expected)
    assert int(lj.extragradient_phase(state)) == 0
  assert len(calls) == 4  # two gradients per iteration


def test_method_of_multipliers_exact_sequence():
  """min x^2 s.t. x - 1 = 0 with L_c = x^2 + lam (x - 1) + (c/2)(x - 1)^2, c = 1, sgd(.25).

  From x = 0, lam = 0: dL/dx = 2x + lam + (x - 1) = -1 -> x_1 = .25; the multiplier
  step at x_1: lam_1 = 0 + 1 * (.25 - 1) = -.75. Next: dL/dx = .5 - .75 - .75 = -1
  -> x_2 = .5, lam_2 = -.75 + (.5 - 1) = -1.25. With every=2 only the second
  iteration moves lam, by g(x_2).
  """

  def L(p):
    x, lam = p["primal"], p["dual"]
    return lj.augmented_lagrangian(x**2, x - 1.0, lam, penalty=1.0)

  tx = lj.method_of_multipliers(optax.sgd(0.25), penalty=1.0)
  params, state = p0(0.0, 0.0), tx.init(p0(0.0, 0.0))
  params, state = lj.solver_step(tx, jax.grad(L), params, state)
  close(params, [0.25, -0.75])
  params, state = lj.solver_step(tx, jax.grad(L), params, state)
  close(params, [0.5, -1.25])
  tx = lj.method_of_multipliers(optax.sgd(0.25), penalty=1.0, every=2)
  params, state = p0(0.0, 0.0), tx.init(p0(0.0, 0.0))
  params, state = lj.solver_step(tx, jax.grad(L), params, state)
  close(params, [0.25, 0.0])
  # dL/dx = .5 + 0 - .75 = -.25 -> x_2 = .3125; lam_2 = .3125 - 1
  params, state = lj.solver_step(tx, jax.grad(L), params, state)
  close(params, [0.3125, -0.6875])
  # a schedule of c: c_0 = 2 -> lam_1 = 2 * (.25 - 1)
  tx = lj.method_of_multipliers(optax.sgd(0.25), penalty=lambda count: 2.0 + count)
  params, state = lj.solver_step(tx, jax.grad(L), p0(0.0, 0.0), tx.init(p0(0.0, 0.0)))
  close(params, [0.25, -1.5])
  with pytest.raises(ValueError, match="every"):
    lj.method_of_multipliers(optax.sgd(0.1), every=0)


def test_one_call_mode_needs_params():
  tx = lj.extra_sgd(0.5)
  with pytest.raises(ValueError, match="needs params"):
    tx.update(jax.grad(bilinear)(p0()), tx.init(p0()), grad_fn=jax.grad(bilinear))


# =================================================================================
# 2. Bilinear game
# =================================================================================


def dist(params):
  return math.hypot(float(params["primal"]), float(params["dual"]))


def test_bilinear_gda_diverges():
  tx = lj.gda(0.1)
  params, state = p0(), tx.init(p0())
  distances = [dist(params)]
  for _ in range(50):
    params, state = contract_loop(tx, bilinear, params, 1, state)
    distances.append(dist(params))
  # each GDA step multiplies the norm by sqrt(1 + lr^2)
  assert all(b > a for a, b in zip(distances, distances[1:]))
  np.testing.assert_allclose(distances[-1], math.sqrt(2) * 1.01**25, rtol=1e-4)


@pytest.mark.parametrize(
  "make,calls",
  [
    (lambda: lj.extra_sgd(0.5), 2 * 100),
    (lambda: lj.extragradient(lj.descent_ascent(optax.sgd(0.5), optax.sgd(0.5))), 2 * 100),
    (lambda: lj.past_extragradient(lj.descent_ascent(optax.sgd(0.3), optax.sgd(0.3))), 200),
    (lambda: lj.extra_adagrad(1.0), 2 * 300),
    # measured: lr .5 needs ~2e4 calls (dist 3.3e-1 after 600, 8e-6 after 2e4); lr 1.0:
    # 3.9e-3 after 600 calls, 2e-8 after 2000.
    (lambda: lj.past_extra_adagrad(1.0), 1500),
  ],
  ids=[
    "extra_sgd",
    "extragradient(sgd)",
    "past_extragradient(sgd)",
    "extra_adagrad",
    "past_extra_adagrad",
  ],
)
def test_bilinear_extragradient_family_converges(make, calls):
  tx = make()
  step = jax.jit(lambda p, s: contract_loop(tx, bilinear, p, 1, s))
  params, state = p0(), tx.init(p0())
  for _ in range(calls):
    params, state = step(params, state)
  assert dist(params) < 1e-3


# =================================================================================
# 4. Composition
# =================================================================================


def test_chain_with_clip_by_global_norm():
  tx = optax.chain(optax.clip_by_global_norm(1.0), lj.extra_sgd(0.1))
  params = p0(3.0, 4.0)
  state = tx.init(params)
  # phase 0: g = (y, x) = (4, 3), norm 5 -> (.8, .6): x_half = (2.92, 4.06)
  _, params, state = one_call(tx, bilinear, params, state)
  close(params, [2.92, 4.06], atol=2e-6)
  # phase 1: g = (4.06, 2.92), norm sqrt(25.01); from x_t = (3, 4)
  n = math.sqrt(4.06**2 + 2.92**2)
  _, params, state = one_call(tx, bilinear, params, state)
  close(params, [3 - 0.1 * 4.06 / n, 4 + 0.1 * 2.92 / n], atol=2e-6)


def test_weighted_clip_counts_each_entry_its_weight():
  """``optimizers.clip_by_global_norm(max_norm, weights)`` (stage-parallel's clip): unit
  weights give optax's clip bit for bit; a duplicated leaf with weight 0 gives the step
  of the tree without the duplicate."""
  from lagrangian_jax import optimizers

  g = {"a": jnp.array([3.0, -1.0]), "b": jnp.array([[4.0], [0.5]])}
  ones = jax.tree.map(lambda _: 1.0, g)
  for max_norm in (0.5, 100.0):  # clipping and not
    want, _ = optax.clip_by_global_norm(max_norm).update(g, optax.EmptyState())
    got, _ = optimizers.clip_by_global_norm(max_norm, ones).update(g, optax.EmptyState())
    jax.tree.map(np.testing.assert_array_equal, got, want)
  twice = {**g, "copy": g["a"]}
  tx = optimizers.clip_by_global_norm(2.0, {"a": 1.0, "b": 1.0, "copy": 0.0})
  got, _ = tx.update(twice, tx.init(twice))
  norm = math.sqrt(9 + 1 + 16 + 0.25)
  np.testing.assert_allclose(got["a"], np.array([3.0, -1.0]) * 2.0 / norm, rtol=1e-6)
  np.testing.assert_allclose(got["copy"], got["a"], rtol=0)
  np.testing.assert_allclose(got["b"], np.array([[4.0], [0.5]]) * 2.0 / norm, rtol=1e-6)


def test_inject_hyperparams_schedule_changes_the_step():
  sched = optax.linear_schedule(0.1, 0.0, 4)  # .1, .075, .05, .025, 0 per call
  tx = optax.inject_hyperparams(lj.extra_adagrad)(
    primal_learning_rate=sched, dual_learning_rate=0.1
  )
  params = p0()
  state = tx.init(params)
  np.testing.assert_allclose(float(state.hyperparams["primal_learning_rate"]), 0.1)
  # phase 0 with lr sched(0) = .1: as in the adagrad test
  xh, yh = 1 - 0.1 * R11, 1 + 0.1 * R11
  _, params, state = one_call(tx, bilinear, params, state)
  close(params, [xh, yh])
  # phase 1 with primal lr sched(1) = .075 (dual stays .1), G = 1.1 + g^2
  x1 = 1 - 0.075 * yh / math.sqrt(1.1 + yh**2 + 1e-7)
  y1 = 1 + 0.1 * xh / math.sqrt(1.1 + xh**2 + 1e-7)
  _, params, state = one_call(tx, bilinear, params, state)
  close(params, [x1, y1], atol=2e-6)
  np.testing.assert_allclose(float(state.hyperparams["primal_learning_rate"]), 0.075)
  np.testing.assert_allclose(float(state.hyperparams["dual_learning_rate"]), 0.1)
  assert int(lj.extragradient_phase(state)) == 0
  # the schedule keeps going: calls 2, 3 use .05, .025; from call 4 on the rate is 0
  params, state = contract_loop(tx, bilinear, params, 2, state)
  x_before = float(params["primal"])
  params, state = contract_loop(tx, bilinear, params, 2, state)  # calls 4, 5: lr 0
  assert float(state.hyperparams["primal_learning_rate"]) == 0.0
  assert float(params["primal"]) == x_before  # x no longer moves
  assert float(params["dual"]) != 0.0


def test_multi_transform_frozen_leaves_do_not_move():
  tx = optax.multi_transform(
    {
      "eg": lj.extragradient(lj.descent_ascent(optax.sgd(0.1), optax.sgd(0.1))),
      "frozen": optax.set_to_zero(),
    },
    {"primal": {"w": "eg", "b": "frozen"}, "dual": "eg"},
  )
  params = {"primal": {"w": jnp.asarray(1.0), "b": jnp.asarray(5.0)}, "dual": jnp.asarray(1.0)}

  def L(p):  # the w*y game plus a frozen leaf with a nonzero gradient
    return p["primal"]["w"] * p["dual"] + p["primal"]["b"] ** 2

  state = tx.init(params)
  seq = []
  for _ in range(4):
    seq.append(int(lj.extragradient_phase(state)))
    _, params, state = one_call(tx, L, params, state)
    assert float(params["primal"]["b"]) == 5.0
  assert seq == [0, 1, 0, 1]
  # same as the extra_sgd sequence above: (.89, 1.09) then (.7721, 1.1681)
  np.testing.assert_allclose(
    [float(params["primal"]["w"]), float(params["dual"])], [0.7721, 1.1681], atol=1e-6
  )


def _all_txs():
  return {
    "gda": lambda: lj.gda(0.1),
    "extra_sgd": lambda: lj.extra_sgd(0.2),
    "extra_adagrad_both": lambda: lj.extra_adagrad(0.5),
    "extra_adagrad_update": lambda: lj.extra_adagrad(0.5, accumulate="update"),
    "extra_adam": lambda: lj.extra_adam(0.02),
    "past_extra_adagrad": lambda: lj.past_extra_adagrad(0.3),
    "extragradient(descent_ascent)": lambda: lj.extragradient(
      lj.descent_ascent(optax.adagrad(0.5), optax.sgd(0.2))
    ),
    "past_extragradient(descent_ascent)": lambda: lj.past_extragradient(
      lj.descent_ascent(optax.sgd(0.15), optax.sgd(0.15))
    ),
    # without grad_fn (two-call battery) the multiplier step uses g(x_t): stable for c <= .1
    "method_of_multipliers": lambda: lj.method_of_multipliers(optax.sgd(0.2), penalty=0.1),
    "alternating": lambda: lj.alternating(optax.sgd(0.2), optax.sgd(0.2)),
    "alternating(sgd, nupi)": lambda: lj.alternating(
      optax.sgd(0.2), lj.nupi(0.2, kp=1.0, ki=1.0, ema_nu=0.5)
    ),
    "descent_ascent(sgd, nupi)": lambda: lj.descent_ascent(
      optax.sgd(0.15), lj.nupi(0.15, kp=1.0, ki=1.0)
    ),
  }


ALL = _all_txs()


def test_jitted_update_compiles_once_over_both_phases():
  tx = lj.extra_adagrad(0.1, 0.05)
  traces = []

  @jax.jit
  def step(params, state):
    traces.append(1)  # Python side effect: runs once per trace
    grads = jax.grad(bilinear)(params)
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  params, state = p0(), tx.init(p0())
  for _ in range(6):
    params, state = step(params, state)
  assert len(traces) == 1
  assert step._cache_size() == 1


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("name", sorted(ALL))
def test_param_and_state_dtypes_are_kept(name, dtype):
  tx = ALL[name]()
  params = {"primal": jnp.asarray([1.0, -0.5], dtype), "dual": jnp.asarray([0.5], dtype)}

  def L(p):
    return jnp.sum(p["primal"] ** 2) + jnp.sum(p["dual"] * (p["primal"][0] - 1.0))

  state = tx.init(params)
  step = jax.jit(lambda p, s: contract_loop(tx, L, p, 1, s))
  sig0 = jax.tree.map(lambda x: (x.dtype, x.weak_type), state)
  for _ in range(5):
    params, state = step(params, state)
    assert jax.tree.map(lambda x: x.dtype, params) == {"primal": dtype, "dual": dtype}
    assert jax.tree.map(lambda x: (x.dtype, x.weak_type), state) == sig0
  assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(params))


# =================================================================================
# 5. Bad input
# =================================================================================

ALIASES = {
  "gda": lj.gda,
  "extra_sgd": lj.extra_sgd,
  "extra_adagrad": lj.extra_adagrad,
  "extra_adam": lj.extra_adam,
  "past_extra_adagrad": lj.past_extra_adagrad,
}


@pytest.mark.parametrize("name", sorted(ALL))
@pytest.mark.parametrize(
  "bad",
  [
    {"x": jnp.asarray(1.0), "y": jnp.asarray(1.0)},
    {"primal": jnp.asarray(1.0)},
    {"primal": jnp.asarray(1.0), "dual": jnp.asarray(1.0), "extra": jnp.asarray(1.0)},
    [jnp.asarray(1.0), jnp.asarray(1.0)],
  ],
  ids=["flat_dict", "missing_dual", "extra_key", "list"],
)
def test_params_without_primal_dual_split_raise(name, bad):
  with pytest.raises(ValueError, match="primal"):
    ALL[name]().init(bad)


@pytest.mark.parametrize("name", sorted(ALL))
def test_gradients_not_matching_params_raise(name):
  tx = ALL[name]()
  params = {"primal": {"w": jnp.ones((2,))}, "dual": jnp.ones((1,))}
  state = tx.init(params)
  extra_leaf = {"primal": {"w": jnp.ones((2,)), "v": jnp.ones((2,))}, "dual": jnp.ones((1,))}
  with pytest.raises(ValueError, match="do not match"):
    tx.update(extra_leaf, state, params)
  wrong_shape = {"primal": {"w": jnp.ones((3,))}, "dual": jnp.ones((1,))}
  with pytest.raises(ValueError, match=r"mismatched shapes.*'(primal/)?w'.*\(3,\) != \(2,\)"):
    tx.update(wrong_shape, state, params)


@pytest.mark.parametrize("name", sorted(ALIASES))
def test_negative_learning_rates_raise_naming_the_argument(name):
  make = ALIASES[name]
  with pytest.raises(ValueError, match="primal_learning_rate"):
    make(-0.1)
  with pytest.raises(ValueError, match="dual_learning_rate"):
    make(0.1, -0.1)
  with pytest.raises(ValueError, match="primal_learning_rate"):
    make(float("nan"))
  make(0.0, 0.0)  # zero is allowed
  make(optax.linear_schedule(0.1, 0.0, 10))  # schedules are not checked


@pytest.mark.parametrize(
  "make",
  [
    lambda a: lj.extragradient(lj.gda(0.1), accumulate=a),
    lambda a: lj.past_extragradient(lj.gda(0.1), accumulate=a),
    lambda a: lj.extra_adagrad(0.1, accumulate=a),
    lambda a: lj.extra_adam(0.1, accumulate=a),
    lambda a: lj.past_extra_adagrad(0.1, accumulate=a),
  ],
)
def test_invalid_accumulate_raises(make):
  with pytest.raises(ValueError, match="accumulate"):
    make("sometimes")


# =================================================================================
# 6. Shared battery
# =================================================================================

A_MAT = np.array([[1.0, 2.0, 0.0], [0.0, 1.0, -1.0]])
B_VEC = np.array([1.0, -1.0])
REG = 0.1
# L = .5|x|^2 + y.(Ax - b) - .5 REG |y|^2 ; saddle: x = -A^T y, (A A^T + REG I) y = -b
Y_STAR = np.linalg.solve(A_MAT @ A_MAT.T + REG * np.eye(2), -B_VEC)
X_STAR = -A_MAT.T @ Y_STAR


def saddle_L(p):
  x, y = p["primal"], p["dual"]
  return (
    0.5 * jnp.sum(x**2)
    + jnp.dot(y, jnp.asarray(A_MAT, F32) @ x - jnp.asarray(B_VEC, F32))
    - 0.5 * REG * jnp.sum(y**2)
  )


@pytest.mark.parametrize("name", sorted(ALL))
def test_battery(name):
  tx = ALL[name]()
  params = {"primal": jnp.zeros((3,), F32), "dual": jnp.zeros((2,), F32)}
  state = tx.init(params)
  traces = []

  @jax.jit
  def step(params, state):
    traces.append(1)
    grads = jax.grad(saddle_L)(params)
    # unknown extra keyword arguments are accepted and ignored
    updates, state = tx.update(grads, state, params, foo=1, bar="x")
    return optax.apply_updates(params, updates), state

  sig0 = jax.tree.map(lambda x: (x.dtype, x.weak_type, x.shape), state)
  for _ in range(3000):
    params, state = step(params, state)
  assert len(traces) == 1 and step._cache_size() == 1
  assert jax.tree.map(lambda x: (x.dtype, x.weak_type, x.shape), state) == sig0
  # an eager call with extra kwargs works too
  tx.update(jax.grad(saddle_L)(params), state, params, foo=1)
  params = lj.current_iterate(params, state)
  np.testing.assert_allclose(np.asarray(params["primal"]), X_STAR, atol=1e-3)
  np.testing.assert_allclose(np.asarray(params["dual"]), Y_STAR, atol=1e-3)


@pytest.mark.parametrize("name", sorted(ALL))
def test_battery_one_call_per_iteration(name):
  """Every solver through the trainer's interface: ``solver_step``, jitted once."""
  tx = ALL[name]()
  params = {"primal": jnp.zeros((3,), F32), "dual": jnp.zeros((2,), F32)}
  state = tx.init(params)
  traces = []

  @jax.jit
  def step(params, state):
    traces.append(1)
    return lj.solver_step(tx, jax.grad(saddle_L), params, state)

  sig0 = jax.tree.map(lambda x: (x.dtype, x.weak_type, x.shape), state)
  # 1,000 gradients for the extragradients: Adam at a constant rate does not settle (it
  # is within 3e-7 of X_STAR after 500 iterations, then wanders up to ~0.07 off by 3,000
  # in either mode, measured), and the others have converged by then
  for _ in range(500 if name.startswith("extra") else 3000):
    params, state = step(params, state)
  assert len(traces) == 1 and step._cache_size() == 1
  assert jax.tree.map(lambda x: (x.dtype, x.weak_type, x.shape), state) == sig0
  params = lj.current_iterate(params, state)
  np.testing.assert_allclose(np.asarray(params["primal"]), X_STAR, atol=1e-3)
  np.testing.assert_allclose(np.asarray(params["dual"]), Y_STAR, atol=1e-3)
