"""Tests of the multiplier update rules (lagrangian_jax/dual.py) and of
``solvers.alternating``.

Expected values are literal arithmetic worked by hand in the comments, or a reference
implementation that is not ours (optax's optimistic gradient), never a re-run of the code
under test.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lagrangian_jax as lj

F32 = jnp.float32


def bilinear(params):
  return params["primal"] * params["dual"]


def p0(x=1.0, y=1.0):
  return {"primal": jnp.asarray(x, F32), "dual": jnp.asarray(y, F32)}


A_MAT = jnp.asarray([[1.0, 2.0, 0.0], [0.0, 1.0, -1.0]], F32)
B_VEC = jnp.asarray([1.0, -1.0], F32)


def linear_constraints_L(p):
  """0.5 |x|^2 + <y, A x - b>: two equality multipliers, both moving."""
  x, y = p["primal"], p["dual"]
  return 0.5 * jnp.sum(x**2) + jnp.dot(y, A_MAT @ x - B_VEC)


# =================================================================================
# nuPI
# =================================================================================


@pytest.mark.parametrize("ki,kp", [(1.0, 1.0), (1.0, 0.5), (0.7, 2.0)])
def test_nupi_nu0_equals_optimistic_gradient_for_10_steps_exactly(ki, kp):
  """nu = 0 is optax's (generalised) optimistic gradient on the dual, bitwise."""
  ours = lj.descent_ascent(optax.sgd(0.1), lj.nupi(0.3, kp=kp, ki=ki, ema_nu=0.0))
  ref = lj.descent_ascent(optax.sgd(0.1), optax.optimistic_gradient_descent(0.3, alpha=ki, beta=kp))
  params = {"primal": jnp.asarray([1.0, -0.5, 0.25], F32), "dual": jnp.zeros((2,), F32)}
  pa, sa = params, ours.init(params)
  pb, sb = params, ref.init(params)
  for _ in range(10):
    pa, sa = lj.solver_step(ours, jax.grad(linear_constraints_L), pa, sa)
    pb, sb = lj.solver_step(ref, jax.grad(linear_constraints_L), pb, sb)
    np.testing.assert_array_equal(np.asarray(pa["dual"]), np.asarray(pb["dual"]))
    np.testing.assert_array_equal(np.asarray(pa["primal"]), np.asarray(pb["primal"]))
  # the dual moved, and not as plain gradient ascent would have
  plain = lj.descent_ascent(optax.sgd(0.1), optax.sgd(0.3 * ki))
  pc, sc = params, plain.init(params)
  for _ in range(10):
    pc, sc = lj.solver_step(plain, jax.grad(linear_constraints_L), pc, sc)
  assert float(jnp.max(jnp.abs(pa["dual"]))) > 0.1
  assert float(jnp.max(jnp.abs(pa["dual"] - pc["dual"]))) > 1e-3


def test_nupi_zeros_init_nu0_is_popov_past_extragradient():
  """init="zeros", nu = 0, K_P = K_I = 1: 2 e_t - e_{t-1} with e_{-1} = 0, which is the
  library's extrapolation from the past around SGD (same maths, other rounding)."""
  ours = lj.descent_ascent(optax.sgd(0.1), lj.nupi(0.2, kp=1.0, ki=1.0, init="zeros"))
  ref = lj.descent_ascent(optax.sgd(0.1), lj.past_extragradient(optax.sgd(0.2)))
  params = {"primal": jnp.asarray([1.0, -0.5, 0.25], F32), "dual": jnp.zeros((2,), F32)}
  pa, sa, pb, sb = params, ours.init(params), params, ref.init(params)
  for _ in range(10):
    pa, sa = lj.solver_step(ours, jax.grad(linear_constraints_L), pa, sa)
    pb, sb = lj.solver_step(ref, jax.grad(linear_constraints_L), pb, sb)
    np.testing.assert_allclose(np.asarray(pa["dual"]), np.asarray(pb["dual"]), atol=1e-6)


def test_nupi_zeros_init_two_steps_by_hand():
  """Cooper's test_manual_nupi_dense_update, worked by hand: loss |p|^2/2 (e = p),
  lr .01, K_I = 1, K_P = (1, 0, 2), nu = .5, xi_{-1} = 0."""
  tx = lj.nupi(0.01, kp=jnp.asarray([1.0, 0.0, 2.0]), ki=1.0, ema_nu=0.5, init="zeros")
  p = jnp.asarray([1.0, 2.0, 3.0], F32)
  s = tx.init(p)
  u, s = tx.update(p, s)  # d0 = (1 + K_P/2) e0 = (1.5, 2, 6)
  p = p + u
  np.testing.assert_allclose(p, [0.985, 1.98, 2.94], rtol=0, atol=1e-6)
  # xi0 = e0/2 = (.5, 1, 1.5); d1 = (1 + K_P/2) p1 - K_P/2 xi0 = (1.2275, 1.98, 4.38)
  u, s = tx.update(p, s)
  p = p + u
  np.testing.assert_allclose(p, [0.972725, 1.9602, 2.8962], rtol=0, atol=1e-6)


def test_scale_by_nupi_sgd_init_three_steps_by_hand():
  # K_P = K_I = 1, nu = .5, errors 1, 3, 0; xi_{-1} = e0 = 1 so xi0 = 1
  tx = lj.scale_by_nupi(kp=1.0, ki=1.0, ema_nu=0.5)
  s = tx.init(jnp.zeros((), F32))
  out = []
  for e in (1.0, 3.0, 0.0):
    d, s = tx.update(jnp.asarray(e, F32), s)
    out.append(float(d))
  # d0 = 1; d1 = 3 + .5 (3 - 1) = 4 (xi1 = 2); d2 = 0 + .5 (0 - 2) = -1
  assert out == [1.0, 4.0, -1.0]


def test_nupi_without_proportional_term_is_sgd_exactly():
  tx, ref = lj.nupi(0.1, kp=0.0, ki=1.0, ema_nu=0.9), optax.sgd(0.1)
  p = jnp.asarray([1.0, -2.0], F32)
  sa, sb, pa, pb = tx.init(p), ref.init(p), p, p
  for _ in range(5):
    ua, sa = tx.update(jnp.sin(pa), sa)
    ub, sb = ref.update(jnp.sin(pb), sb)
    pa, pb = pa + ua, pb + ub
  np.testing.assert_array_equal(pa, pb)


@pytest.mark.parametrize(
  "kwargs,match",
  [
    (dict(ema_nu=1.0), "ema_nu"),
    (dict(kp=-1.0), "kp"),
    (dict(ki=float("nan")), "ki"),
    (dict(init="ones"), "init"),
  ],
)
def test_nupi_bad_arguments_raise_naming_them(kwargs, match):
  with pytest.raises(ValueError, match=match):
    lj.nupi(0.1, **kwargs)


def test_nupi_state_dtypes_kept_under_jit_and_inject_hyperparams():
  tx = lj.descent_ascent(
    optax.sgd(0.1), optax.inject_hyperparams(lj.nupi)(learning_rate=0.1, kp=1.0, ki=1.0)
  )
  params = {"primal": jnp.ones((3,), jnp.bfloat16), "dual": jnp.zeros((2,), jnp.bfloat16)}
  state = tx.init(params)
  traces = []

  @jax.jit
  def step(p, s):
    traces.append(1)
    return lj.solver_step(tx, jax.grad(linear_constraints_L), p, s)

  sig0 = jax.tree.map(lambda x: (x.dtype, x.weak_type), state)
  for _ in range(4):
    params, state = step(params, state)
  assert len(traces) == 1
  assert jax.tree.map(lambda x: (x.dtype, x.weak_type), state) == sig0
  assert params["dual"].dtype == jnp.bfloat16


# =================================================================================
# Projection hook
# =================================================================================


def pushed_up_L(p):
  # the dual gradient is 1 - 0 = 1 forever (primal frozen at 0): y grows without a bound
  return p["primal"] ** 2 + jnp.sum(p["dual"]) * (1.0 - p["primal"])


@pytest.mark.parametrize(
  "rule", [lambda: optax.sgd(0.3), lambda: lj.nupi(0.3, kp=1.0, ki=1.0, ema_nu=0.5)]
)
def test_projection_keeps_the_bound_after_any_rule(rule):
  tx = lj.descent_ascent(optax.sgd(0.0), optax.chain(rule(), lj.project(lj.box(0.0, 1.0))))
  params = {"primal": jnp.asarray(0.0, F32), "dual": jnp.zeros((2,), F32)}
  state = tx.init(params)
  for _ in range(10):
    params, state = lj.solver_step(tx, jax.grad(pushed_up_L), params, state)
    assert float(jnp.max(params["dual"])) <= 1.0
  np.testing.assert_array_equal(params["dual"], [1.0, 1.0])  # 10 * .3 > 1: at the bound


def test_projection_onto_tfco_set_with_descent_ascent_nonnegative():
  tx = lj.descent_ascent(
    optax.sgd(0.0),
    optax.chain(optax.sgd(0.25), lj.project(lj.nonnegative_l1_ball(1.0))),
    nonnegative=True,
  )
  params = {"primal": jnp.asarray(0.0, F32), "dual": jnp.zeros((2,), F32)}
  state = tx.init(params)
  for _ in range(6):
    params, state = lj.solver_step(tx, jax.grad(pushed_up_L), params, state)
  # (.25, .25), (.5, .5), then (.75, .75) projected: tau = .25 -> (.5, .5), stays
  np.testing.assert_allclose(params["dual"], [0.5, 0.5], rtol=0, atol=1e-7)


def test_nonnegative_l1_ball_is_the_euclidean_projection():
  P = lj.nonnegative_l1_ball(2.0)
  # worked: (3, 1, -1): sum of positives 4 > 2; tau = (3 + 1 - 2) / 2 = 1 -> (2, 0, 0)
  np.testing.assert_allclose(P(jnp.asarray([3.0, 1.0, -1.0])), [2.0, 0.0, 0.0], atol=1e-7)
  # (1.5, 1.5, .2): tau = (3.2 - 2)/3 = .4 -> (1.1, 1.1, 0)? .2 - .4 < 0, so
  # tau = (3 - 2)/2 = .5 -> (1, 1, 0)
  np.testing.assert_allclose(P(jnp.asarray([1.5, 1.5, 0.2])), [1.0, 1.0, 0.0], atol=1e-7)
  rng = np.random.default_rng(0)
  for _ in range(20):
    y = jnp.asarray(rng.normal(size=5) * 2, F32)
    py = np.asarray(P(y), np.float64)
    assert py.min() >= 0 and py.sum() <= 2.0 + 1e-6
    dist = np.linalg.norm(np.asarray(y) - py)
    for _ in range(50):  # no feasible point is closer
      z = rng.random(5)
      z = z / z.sum() * 2.0 * rng.random()
      assert dist <= np.linalg.norm(np.asarray(y) - z) + 1e-6


def test_projection_bad_input():
  with pytest.raises(ValueError, match="projection"):
    lj.project(3.0)
  with pytest.raises(ValueError, match="radius"):
    lj.nonnegative_l1_ball(0.0)
  with pytest.raises(ValueError, match="lower"):
    lj.box(1.0, 0.0)
  tx = lj.project(lj.box(0.0, 1.0))
  with pytest.raises(ValueError, match="params"):
    tx.update(jnp.ones(2), tx.init(jnp.ones(2)))


# =================================================================================
# Growing penalty coefficient
# =================================================================================


def test_multiplicative_penalty_growth_by_hand():
  s = lj.penalty_init(1.0)
  values = []
  for h in ([0.5, -1.0], [0.2, 0.0], [5e-5, -1.0], [-0.1, -2.0], [0.3, 0.0]):
    s = lj.multiplicative_penalty_update(s, inequality=jnp.asarray(h), factor=1.5)
    values.append(float(s.value))
  # violated 1.5, violated 2.25, within tolerance 2.25, met -> restart 1, violated 1.5
  assert values == [1.5, 2.25, 2.25, 1.0, 1.5]


def test_penalty_measure_is_the_norm_for_a_scalar_coefficient():
  # |(0.3, 0.4)| = 0.5 (each entry alone is under the tolerance .45)
  s = lj.penalty_init(2.0)
  grown = lj.additive_penalty_update(s, equality=jnp.asarray([0.3, -0.4]), tolerance=0.45)
  kept = lj.additive_penalty_update(s, equality=jnp.asarray([0.3, -0.4]), tolerance=0.55)
  assert (float(grown.value), float(kept.value)) == (3.0, 2.0)
  # an equality constraint met does not restart (restart is for inequality-only)
  met = lj.additive_penalty_update(grown, equality=jnp.zeros((2,)))
  assert float(met.value) == 3.0


def test_elementwise_penalty_and_mixed_kinds():
  s = lj.penalty_init(jnp.asarray([1.0, 1.0, 1.0]))
  s = lj.additive_penalty_update(s, inequality=jnp.asarray([0.5, 0.0, -1.0]), increment=0.25)
  s = lj.additive_penalty_update(s, inequality=jnp.asarray([0.5, 0.5, -1.0]), increment=0.25)
  # entry 0 violated twice, entry 1 met then violated (restart to 1 then +.25), 2 met
  np.testing.assert_array_equal(s.value, [1.5, 1.25, 1.0])
  with pytest.raises(ValueError, match="one constraint"):
    lj.additive_penalty_update(s, equality=jnp.zeros(3), inequality=jnp.zeros(3))
  with pytest.raises(ValueError, match="equality= and/or inequality="):
    lj.additive_penalty_update(s)
  with pytest.raises(ValueError, match="value"):
    lj.penalty_init(0.0)


def test_growing_penalty_drives_quadratic_penalty_to_feasibility_without_recompiling():
  """min x^2 s.t. x >= 1 by the quadratic penalty: x*(c) = c / (2 + c) -> 1 as c grows."""

  def loss(x, c):
    return lj.quadratic_penalty(x**2, inequality=1.0 - x, penalty=c)

  traces = []

  @jax.jit
  def outer(x, s):
    traces.append(1)
    x = jax.lax.fori_loop(0, 200, lambda _, x: x - 0.01 * jax.grad(loss)(x, s.value), x)
    return x, lj.multiplicative_penalty_update(s, inequality=1.0 - x, factor=2.0)

  x, s = jnp.asarray(0.0, F32), lj.penalty_init(1.0)
  for _ in range(8):
    x, s = outer(x, s)
  assert len(traces) == 1
  assert float(s.value) == 256.0  # violated all 8 times: 2^8
  assert abs(float(x) - 128.0 / 130.0) < 1e-3  # the minimiser for c = 128, the last used


# =================================================================================
# Alternating updates
# =================================================================================


def run_alternating(tx, steps, one_call):
  params, state = p0(), tx.init(p0())
  out = []
  for _ in range(steps):
    if one_call:
      params, state = lj.solver_step(tx, jax.grad(bilinear), params, state)
    else:  # the plain optax contract: two calls per iteration
      for _ in range(2):
        updates, state = tx.update(jax.grad(bilinear)(params), state, params)
        params = optax.apply_updates(params, updates)
    out.append((float(params["primal"]), float(params["dual"])))
  return out


@pytest.mark.parametrize("one_call", [True, False], ids=["one_call", "two_calls"])
def test_alternating_two_steps_by_hand(one_call):
  tx = lj.alternating(optax.sgd(0.1), optax.sgd(0.1))
  got = run_alternating(tx, 2, one_call)
  # x1 = 1 - .1 * y0 = .9; y1 = 1 + .1 * x1 = 1.09 (simultaneous GDA would give 1.1)
  # x2 = .9 - .1 * 1.09 = .791; y2 = 1.09 + .1 * .791 = 1.1691
  np.testing.assert_allclose(got, [(0.9, 1.09), (0.791, 1.1691)], rtol=0, atol=1e-6)


def test_alternating_with_nupi_and_projection_by_hand():
  # L = x * y, y kept in [0, 1.15]; nuPI K_P = K_I = 1 (sgd init) on the dual
  tx = lj.alternating(
    optax.sgd(0.1),
    optax.chain(lj.nupi(0.1, kp=1.0, ki=1.0), lj.project(lj.box(0.0, 1.15))),
  )
  got = run_alternating(tx, 3, one_call=True)
  # x1 = .9;  e0 = -.9, d0 = e0: y1 = 1 + .09 = 1.09
  # x2 = .9 - .109 = .791;  e1 = -.791, d1 = 2 e1 - e0 = -.682: y2 = 1.09 + .0682 = 1.1582
  #   -> projected to 1.15
  # x3 = .791 - .115 = .676; e2 = -.676, d2 = -1.352 + .791 = -.561: y3 = 1.15 + .0561
  #   -> 1.15
  np.testing.assert_allclose(got, [(0.9, 1.09), (0.791, 1.15), (0.676, 1.15)], rtol=0, atol=1e-6)


def test_alternating_modes_agree_and_jit_once():
  tx = lj.alternating(optax.adam(0.05), optax.sgd(0.1), nonnegative=True)
  params = {"primal": jnp.asarray([1.0, -0.5, 0.25], F32), "dual": jnp.zeros((2,), F32)}
  traces = []

  @jax.jit
  def one(p, s):
    traces.append(1)
    return lj.solver_step(tx, jax.grad(linear_constraints_L), p, s)

  @jax.jit
  def half(p, s):
    u, s = tx.update(jax.grad(linear_constraints_L)(p), s, p)
    return optax.apply_updates(p, u), s

  pa, sa, pb, sb = params, tx.init(params), params, tx.init(params)
  for _ in range(20):
    pa, sa = one(pa, sa)
    pb, sb = half(*half(pb, sb))
    assert int(sb.phase) == 0 and int(sa.phase) == 0
    for k in ("primal", "dual"):
      np.testing.assert_allclose(pa[k], pb[k], rtol=0, atol=1e-6)
  assert len(traces) == 1 and one._cache_size() == 1
  assert float(jnp.min(pa["dual"])) >= 0.0


def test_alternating_inside_optax_chain_gets_grad_fn():
  tx = optax.chain(optax.clip(10.0), lj.alternating(optax.sgd(0.1), optax.sgd(0.1)))
  params, state = p0(), tx.init(p0())
  for _ in range(2):
    params, state = lj.solver_step(tx, jax.grad(bilinear), params, state)
  np.testing.assert_allclose(
    [float(params["primal"]), float(params["dual"])], [0.791, 1.1691], atol=1e-6
  )


def test_alternating_one_call_needs_params():
  tx = lj.alternating(optax.sgd(0.1), optax.sgd(0.1))
  state = tx.init(p0())
  with pytest.raises(ValueError, match="needs params"):
    tx.update(jax.grad(bilinear)(p0()), state, None, grad_fn=jax.grad(bilinear))
