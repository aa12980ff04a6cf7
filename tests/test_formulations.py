"""Hand-checked values of the Lagrangian formulations (lagrangian_jax/formulations.py).

Every expected number below is computed by hand in the comments next to it.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lagrangian_jax as lj

F32 = jnp.float32


def a(*v):
  return jnp.asarray(v, F32)


# --------------------------------------------------------------------------- lagrangian


def test_lagrangian_objective_only():
  assert float(lj.lagrangian(jnp.asarray(3.5))) == 3.5


def test_lagrangian_equality_and_inequality_pytrees():
  # f = 2; <lam, g> = .5*1 + 3*(-2) = -5.5; <mu, h> = 2*1.5 = 3  ->  2 - 5.5 + 3 = -0.5
  value = lj.lagrangian(
    jnp.asarray(2.0),
    {"g": a(1.0, -2.0)},
    {"g": a(0.5, 3.0)},
    {"h": jnp.asarray(1.5)},
    lj.nonnegative({"h": jnp.asarray(2.0)}),
  )
  np.testing.assert_allclose(float(value), -0.5, rtol=0, atol=1e-6)


def test_lagrangian_gradient_is_constraint_for_multipliers():
  # dL/dlam = g, dL/dmu = h, dL/dx = f'(x) + lam g'(x) + mu h'(x)
  def L(x, lam, mu):
    return lj.lagrangian(x**2, x - 1.0, lam, 2.0 * x, lj.nonnegative(mu))

  gx, glam, gmu = jax.grad(L, argnums=(0, 1, 2))(
    jnp.asarray(3.0), jnp.asarray(0.5), jnp.asarray(0.25)
  )
  # dx: 2*3 + .5*1 + .25*2 = 7 ; dlam: 3-1 = 2 ; dmu: 2*3 = 6
  assert (float(gx), float(glam), float(gmu)) == (7.0, 2.0, 6.0)


def test_lagrangian_bf16_multipliers_accumulate_in_float32():
  value = lj.lagrangian(
    jnp.asarray(0.0, F32), jnp.ones((4,), jnp.bfloat16), jnp.ones((4,), jnp.bfloat16)
  )
  assert value.dtype == F32 and float(value) == 4.0


# ------------------------------------------------------------------ augmented lagrangian


def test_augmented_lagrangian_equality():
  # c = 2: f + <lam,g> + c/2 |g|^2 = 2 + (.5 - 6) + 1 * (1 + 4) = 1.5
  value = lj.augmented_lagrangian(jnp.asarray(2.0), a(1.0, -2.0), a(0.5, 3.0), penalty=2.0)
  np.testing.assert_allclose(float(value), 1.5, atol=1e-6)


def test_augmented_lagrangian_inequality_rockafellar_form():
  # c = 2, mu = [1, .5], h = [.5, -1]:  mu + c h = [2, -1.5]
  # (max(0, .)^2 - mu^2) = [4 - 1, 0 - .25] = [3, -.25]; sum 2.75; / (2c = 4) = .6875
  # first entry (active) = mu h + c/2 h^2 = .5 + .25 = .75 = 3/4  (plain term + penalty)
  # second (inactive) = -mu^2 / (2c) = -.0625
  value = lj.augmented_lagrangian(
    jnp.asarray(1.0), inequality=a(0.5, -1.0), inequality_multipliers=a(1.0, 0.5), penalty=2.0
  )
  np.testing.assert_allclose(float(value), 1.0 + 0.6875, atol=1e-6)


def test_augmented_lagrangian_both_and_gradients():
  # f = x^2 at x=1, g = x - 2 = -1 (lam = .5), h = x - 3 = -2 (mu = 1), c = 1
  # L = 1 + (-.5) + .5*1 + (max(0, 1 - 2)^2 - 1)/2 = 1 - .5 + .5 - .5 = .5
  def L(x, lam, mu):
    return lj.augmented_lagrangian(x**2, x - 2.0, lam, x - 3.0, mu, penalty=1.0)

  x, lam, mu = jnp.asarray(1.0), jnp.asarray(0.5), jnp.asarray(1.0)
  np.testing.assert_allclose(float(L(x, lam, mu)), 0.5, atol=1e-6)
  gx, glam, gmu = jax.grad(L, argnums=(0, 1, 2))(x, lam, mu)
  # dx: 2x + lam + c g + max(0, mu + c h) = 2 + .5 - 1 + 0 = 1.5
  # dlam: g = -1 ; dmu: (max(0, mu + c h) - mu)/c = (0 - 1) = -1
  np.testing.assert_allclose([float(gx), float(glam), float(gmu)], [1.5, -1.0, -1.0], atol=1e-6)


@pytest.mark.parametrize("penalty", [0.0, -1.0, -0.5])
def test_augmented_lagrangian_rejects_nonpositive_penalty(penalty):
  with pytest.raises(ValueError, match="penalty"):
    lj.augmented_lagrangian(jnp.asarray(0.0), a(1.0), a(1.0), penalty=penalty)


def test_augmented_lagrangian_keeps_float64_precision_under_x64():
  """Under x64 the penalty term must not be rounded to float32.

  f = 0, g = 1 + 1e-12, lam = 0, c = 1:  L = .5 (1 + 1e-12)^2 = .5 + 1e-12 + O(1e-24).
  In float32 1 + 1e-12 rounds to 1, so a float32 sum of squares returns exactly .5.
  """
  with jax.enable_x64(True):
    g = jnp.asarray(1.0 + 1e-12, jnp.float64)
    value = lj.augmented_lagrangian(
      jnp.asarray(0.0, jnp.float64), g, jnp.asarray(0.0, jnp.float64), penalty=1.0
    )
    assert value.dtype == jnp.float64
    np.testing.assert_allclose(float(value) - 0.5, 1e-12, rtol=1e-3)
    qp = lj.quadratic_penalty(jnp.asarray(0.0, jnp.float64), g, penalty=1.0)
    np.testing.assert_allclose(float(qp) - 0.5, 1e-12, rtol=1e-3)


# ---------------------------------------------------------------------- quadratic penalty


def test_quadratic_penalty():
  # f + c/2 |g|^2 + c/2 |max(0,h)|^2 = 1 + 1*(1 + 4) + 1*(.25 + 0) = 6.25
  value = lj.quadratic_penalty(jnp.asarray(1.0), a(1.0, -2.0), a(0.5, -1.0), penalty=2.0)
  np.testing.assert_allclose(float(value), 6.25, atol=1e-6)
  # c = 0 is allowed and gives f
  assert float(lj.quadratic_penalty(jnp.asarray(1.0), a(3.0), penalty=0.0)) == 1.0


def test_quadratic_penalty_rejects_negative_penalty():
  with pytest.raises(ValueError, match="penalty"):
    lj.quadratic_penalty(jnp.asarray(1.0), a(1.0), penalty=-1.0)


# --------------------------------------------------------------- method of multipliers


def test_method_of_multipliers_update():
  # lam + c g = [.5 + 2, 3 - 4] = [2.5, -1]
  # max(0, mu + c h) = [max(0, 1 + 1), max(0, .5 - 2)] = [2, 0]
  lam, mu = lj.method_of_multipliers_update(
    {"e": a(0.5, 3.0)}, {"e": a(1.0, -2.0)}, a(1.0, 0.5), a(0.5, -1.0), penalty=2.0
  )
  np.testing.assert_allclose(np.asarray(lam["e"]), [2.5, -1.0])
  np.testing.assert_array_equal(np.asarray(mu), [2.0, 0.0])
  assert float(mu[1]) == 0.0 and not np.signbit(np.asarray(mu[1]))


def test_method_of_multipliers_update_absent_parts_are_none():
  lam, mu = lj.method_of_multipliers_update(a(1.0), a(1.0))
  assert mu is None and float(lam[0]) == 2.0
  lam, mu = lj.method_of_multipliers_update(inequality_multipliers=a(1.0), inequality=a(-3.0))
  assert lam is None and float(mu[0]) == 0.0


def test_method_of_multipliers_update_mismatch_raises():
  with pytest.raises(ValueError, match="same structure"):
    lj.method_of_multipliers_update({"a": a(1.0)}, {"b": a(1.0)})
  with pytest.raises(ValueError, match="mismatched shape"):
    lj.method_of_multipliers_update(a(1.0, 2.0), a(1.0))


# ---------------------------------------------------------------------------- shrinkage


def test_soft_and_hard_shrink_values():
  g = a(-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0)
  # soft: g - 1 above 1, g + 1 below -1, else 0
  np.testing.assert_array_equal(
    np.asarray(lj.soft_shrink(g, 1.0)), [-1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]
  )
  # hard: g where |g| > 1 else 0 (the band edge |g| = 1 is inside)
  np.testing.assert_array_equal(
    np.asarray(lj.hard_shrink(g, 1.0)), [-2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 2.0]
  )
  assert lj.soft_shrink(g, 1.0).dtype == F32


def test_soft_shrink_gradient_zero_inside_one_outside():
  g = a(-3.0, -2.0, -0.5, 0.0, 0.3, 2.0, 3.0)
  grad = jax.grad(lambda v: jnp.sum(lj.soft_shrink(v, 1.0)))(g)
  np.testing.assert_array_equal(np.asarray(grad), [1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0])
  grad_h = jax.grad(lambda v: jnp.sum(lj.hard_shrink(v, 1.0)))(g)
  np.testing.assert_array_equal(np.asarray(grad_h), [1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0])


def test_epsilon_insensitive_pytree_soft_default_and_hard():
  tree = {"a": a(-2.0, -0.5), "b": [a(0.5, 2.0)]}
  soft = lj.epsilon_insensitive(tree, 1.0)
  hard = lj.epsilon_insensitive(tree, 1.0, "hard")
  assert jax.tree.structure(soft) == jax.tree.structure(tree)
  np.testing.assert_array_equal(np.asarray(soft["a"]), [-1.0, 0.0])
  np.testing.assert_array_equal(np.asarray(soft["b"][0]), [0.0, 1.0])
  np.testing.assert_array_equal(np.asarray(hard["a"]), [-2.0, 0.0])
  np.testing.assert_array_equal(np.asarray(hard["b"][0]), [0.0, 2.0])
  # epsilon = 0 is the identity
  np.testing.assert_array_equal(np.asarray(lj.epsilon_insensitive(a(-2.0, 0.5), 0.0)), [-2.0, 0.5])


def test_epsilon_insensitive_rejects_negative_epsilon_and_unknown_shrinkage():
  with pytest.raises(ValueError, match="epsilon"):
    lj.epsilon_insensitive(a(1.0), -0.1)
  with pytest.raises(ValueError, match="shrinkage"):
    lj.epsilon_insensitive(a(1.0), 0.1, "medium")


# ------------------------------------------------------------------ defect / tree_inner


def test_mean_abs_defect():
  # (|1| + |-2| + |3|) / 3 = 2
  tree = {"a": a(1.0, -2.0), "b": jnp.asarray([[3.0]], jnp.bfloat16)}
  np.testing.assert_allclose(float(lj.mean_abs_defect(tree)), 2.0)
  assert float(lj.mean_abs_defect({})) == 0.0


def test_tree_inner_value():
  # 1*4 + 2*5 + 3*6 = 32
  np.testing.assert_allclose(
    float(lj.tree_inner({"x": a(1.0, 2.0), "y": a(3.0)}, {"x": a(4.0, 5.0), "y": a(6.0)})), 32.0
  )


@pytest.mark.parametrize(
  "lhs,rhs,match",
  [
    ({"x": a(1.0)}, {"y": a(1.0)}, "same structure"),
    ([a(1.0), a(2.0)], [a(1.0)], "same structure"),
    ({"x": a(1.0, 2.0)}, {"x": a(1.0)}, "mismatched shape"),
  ],
)
def test_tree_inner_mismatch_raises(lhs, rhs, match):
  with pytest.raises(ValueError, match=match):
    lj.tree_inner(lhs, rhs)
  with pytest.raises(ValueError, match=match):
    lj.lagrangian(jnp.asarray(0.0), rhs, lhs)
