"""rates: proxy semantics (exact) and the rate helpers' true values and surrogate gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lagrangian_jax as lj
from lagrangian_jax import rates

KEY = jax.random.PRNGKey(0)


def data(n=64):
  k1, k2, k3, k4 = jax.random.split(KEY, 4)
  scores = jax.random.normal(k1, (n,))
  labels = (jax.random.uniform(k2, (n,)) < 0.4).astype(jnp.float32)
  group = (jax.random.uniform(k3, (n,)) < 0.5).astype(jnp.float32)
  weights = jax.random.uniform(k4, (n,), minval=0.5, maxval=2.0)
  return scores, labels, group, weights


def test_proxy_multiplier_gradient_is_the_true_value_exactly():
  x = jnp.linspace(-2.0, 3.0, 7)
  true = lambda x: jnp.floor(3.3 * x) / 7.0  # no gradient, values not representable sums
  surrogate = lambda x: jnp.sin(x) + 0.1 * x**3

  def L(mu, x):
    return jnp.sum(mu * lj.proxy(true(x), surrogate(x)))

  mu = jnp.linspace(0.1, 0.9, 7)
  g_mu, g_x = jax.grad(L, argnums=(0, 1))(mu, x)
  np.testing.assert_array_equal(g_mu, true(x))  # exact: multiplier sees the true value
  np.testing.assert_array_equal(g_x, jax.grad(lambda x: jnp.sum(mu * surrogate(x)))(x))
  np.testing.assert_array_equal(lj.proxy(true(x), surrogate(x)), true(x))


def test_proxy_is_leafwise_and_checks_shapes():
  out = lj.proxy({"a": jnp.ones(2), "b": jnp.zeros(())}, {"a": jnp.zeros(2), "b": jnp.ones(())})
  assert float(out["b"]) == 0.0 and out["a"].tolist() == [1.0, 1.0]
  with pytest.raises(ValueError, match=r"true value has shape \(2,\) but the surrogate \(3,\)"):
    lj.proxy(jnp.ones(2), jnp.ones(3))


def weighted_rate(indicator, weights):
  return np.sum(weights * indicator) / np.sum(weights)


@pytest.mark.parametrize("surrogate", rates.SURROGATES)
def test_rate_values_are_counts_and_gradients_the_surrogates(surrogate):
  scores, labels, _, weights = data()
  s, y, w = np.asarray(scores), np.asarray(labels), np.asarray(weights)
  pos = (s > 0).astype(np.float64)
  expected = {
    "ppr": weighted_rate(pos, w),
    "fpr": weighted_rate(pos, w * (1 - y)),
    "tpr": weighted_rate(pos, w * y),
    "precision": np.sum(w * y * pos) / np.sum(w * pos),
  }
  fns = {
    "ppr": lambda s: rates.positive_prediction_rate(s, weights, surrogate=surrogate),
    "fpr": lambda s: rates.false_positive_rate(s, labels, weights, surrogate=surrogate),
    "tpr": lambda s: rates.true_positive_rate(s, labels, weights, surrogate=surrogate),
    "precision": lambda s: rates.precision(s, labels, weights, surrogate=surrogate),
  }
  ind = lambda s: rates.indicator(s, surrogate)
  surrogates = {
    "ppr": lambda s: jnp.sum(weights * ind(s)) / jnp.sum(weights),
    "fpr": lambda s: jnp.sum(weights * (1 - labels) * ind(s)) / jnp.sum(weights * (1 - labels)),
    "tpr": lambda s: jnp.sum(weights * labels * ind(s)) / jnp.sum(weights * labels),
    "precision": lambda s: jnp.sum(weights * labels * ind(s)) / jnp.sum(weights * ind(s)),
  }
  for name, fn in fns.items():
    np.testing.assert_allclose(float(fn(scores)), expected[name], rtol=1e-6, err_msg=name)
    np.testing.assert_allclose(
      jax.grad(fn)(scores), jax.grad(surrogates[name])(scores), rtol=1e-6, atol=1e-9
    )
  assert rates.recall is rates.true_positive_rate


def test_hinge_bounds_the_indicator_and_sigmoid_is_sigmoid():
  s = jnp.linspace(-3.0, 3.0, 13)
  assert bool(jnp.all(rates.indicator(s, "hinge") >= (s > 0)))
  np.testing.assert_allclose(rates.indicator(s, "sigmoid"), jax.nn.sigmoid(s))
  with pytest.raises(ValueError, match="surrogate must be one of"):
    rates.indicator(s, "logistic")


def test_precision_without_positive_predictions_is_zero():
  assert float(rates.precision(-jnp.ones(4), jnp.ones(4), surrogate="sigmoid")) == 0.0


def test_group_difference_of_rates():
  scores, labels, group, weights = data()
  s, y, g, w = (np.asarray(a) for a in (scores, labels, group, weights))
  pos = (s > 0).astype(np.float64)
  gap = rates.group_difference(
    rates.false_positive_rate, scores, labels, groups=(group, 1 - group), weights=weights
  )
  expected = weighted_rate(pos, w * (1 - y) * g) - weighted_rate(pos, w * (1 - y) * (1 - g))
  np.testing.assert_allclose(float(gap), expected, rtol=1e-5)
  ppr_gap = rates.group_difference(
    rates.positive_prediction_rate, scores, groups=(group, 1 - group), surrogate="sigmoid"
  )
  np.testing.assert_allclose(
    float(ppr_gap), weighted_rate(pos, g) - weighted_rate(pos, 1 - g), rtol=1e-5
  )
