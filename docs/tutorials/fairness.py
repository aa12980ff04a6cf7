r"""Tutorial: demographic parity by proxy constraints, checked against scipy's SLSQP.

A logistic regression ``s = <theta, (x, a, 1)>`` on synthetic data where the label rate
depends on the group ``a``; the positive prediction rates ``PPR_g = P(s > 0 | a = g)`` of
the two groups must differ by at most ``eps``:

.. math::
  \min_\theta \tfrac1n \sum_i \log(1 + e^{-z_i s_i}) \quad\text{s.t.}\quad
  \mathrm{PPR}_1(\theta) - \mathrm{PPR}_0(\theta) - \epsilon \le 0, \quad
  \mathrm{PPR}_0(\theta) - \mathrm{PPR}_1(\theta) - \epsilon \le 0

The rates count examples, so they have no gradient. ``lj.rates`` returns them as
proxies (``lj.proxy``): the multipliers see the true rates, the model follows a sigmoid
surrogate's gradient. A constraint on the surrogate alone would be met by the surrogate
while the true gap stays above ``eps``; the proxy meets the true constraint.

Reference: SLSQP on the same problem with the counting rate smoothed by a sharp
sigmoid (temperature ``TAU``, so SLSQP gets gradients), started from ``theta = 0``.
We check that our solution meets the true constraint within 0.005 and that its
objective is within 1% of the reference's.

Run: ``python docs/tutorials/fairness.py``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import scipy.optimize

import lagrangian_jax as lj
from lagrangian_jax import rates

N, EPS, TAU = 4000, 0.05, 0.02
ITERATIONS = 3000


def make_data(seed=0):
  """Two Gaussian features shifted by the group, labels from a logistic model."""
  rng = np.random.default_rng(seed)
  a = (rng.uniform(size=N) < 0.5).astype(np.float32)
  x = rng.normal(size=(N, 2)).astype(np.float32) + np.outer(a, [1.0, 0.5]).astype(np.float32)
  logits = 1.5 * x[:, 0] - x[:, 1] + 0.8 * a - 0.5
  y = (rng.uniform(size=N) < 1 / (1 + np.exp(-logits))).astype(np.float32)
  design = np.concatenate([x, a[:, None], np.ones((N, 1), np.float32)], axis=1)
  return design, y, a


DESIGN, LABELS, GROUP = make_data()
X, Y, A = jnp.asarray(DESIGN), jnp.asarray(LABELS), jnp.asarray(GROUP)


def loss(theta):
  return jnp.mean(optax.sigmoid_binary_cross_entropy(X @ theta, Y))


def gap(theta, surrogate="sigmoid"):
  """PPR of group 1 minus group 0: the true gap, with the surrogate's gradient."""
  return rates.group_difference(
    rates.positive_prediction_rate, X @ theta, groups=(A, 1 - A), surrogate=surrogate
  )


problem = lj.Problem(
  objective=loss,
  constraints={
    "parity_above": lj.inequality(lambda theta: gap(theta) - EPS),
    "parity_below": lj.inequality(lambda theta: -gap(theta) - EPS),
  },
)


def surrogate_gap(theta):
  """The sigmoid surrogate's gap itself (value and gradient): no proxy."""
  s = jax.nn.sigmoid(X @ theta)
  return jnp.sum(A * s) / jnp.sum(A) - jnp.sum((1 - A) * s) / jnp.sum(1 - A)


surrogate_only = lj.Problem(
  objective=loss,
  constraints={
    "parity_above": lj.inequality(lambda theta: surrogate_gap(theta) - EPS),
    "parity_below": lj.inequality(lambda theta: -surrogate_gap(theta) - EPS),
  },
)


def solve(prob, iterations=ITERATIONS):
  """Extragradient: Adam on theta, SGD ascent on the multipliers; jitted loop."""
  tx = lj.extragradient(lj.descent_ascent(optax.adam(0.01), optax.sgd(0.5)))
  grad_fn = jax.grad(prob.lagrangian)

  @jax.jit
  def run(params):
    body = lambda _, carry: lj.solver_step(tx, grad_fn, *carry)
    return jax.lax.fori_loop(0, iterations, body, (params, tx.init(params)))

  params, state = run(prob.init(jnp.zeros(4)))
  return lj.current_iterate(params, state)


def reference_objective(theta):
  """The loss and its gradient in float64 numpy, for scipy."""
  design, z = DESIGN.astype(np.float64), LABELS.astype(np.float64)
  s = design @ theta
  value = np.mean(np.logaddexp(0.0, s) - z * s)
  return value, design.T @ (1 / (1 + np.exp(-s)) - z) / len(z)


def reference():
  """SLSQP (float64) on the true-rate constraint smoothed by sigmoid(s / TAU)."""
  design = DESIGN.astype(np.float64)
  weight = (GROUP / GROUP.sum() - (1 - GROUP) / (1 - GROUP).sum()).astype(np.float64)

  def smooth_gap(theta):
    p = 1 / (1 + np.exp(-(design @ theta) / TAU))
    return weight @ p, design.T @ (weight * p * (1 - p) / TAU)

  constraints = [
    {"type": "ineq", "fun": lambda t: EPS - smooth_gap(t)[0], "jac": lambda t: -smooth_gap(t)[1]},
    {"type": "ineq", "fun": lambda t: EPS + smooth_gap(t)[0], "jac": lambda t: smooth_gap(t)[1]},
  ]
  result = scipy.optimize.minimize(
    reference_objective,
    np.zeros(4),
    jac=True,
    method="SLSQP",
    constraints=constraints,
    options={"maxiter": 500, "ftol": 1e-12},
  )
  assert result.success, result.message
  return result.x


def main():
  """Solves with and without proxies and by SLSQP; returns the figures and checks them."""
  theta = solve(problem)["primal"]
  theta_surrogate = solve(surrogate_only)["primal"]
  theta_ref = reference()
  unconstrained = scipy.optimize.minimize(reference_objective, np.zeros(4), jac=True).x
  true_gap = lambda t: float(gap(jnp.asarray(t, jnp.float32)))
  objective = lambda t: float(loss(jnp.asarray(t, jnp.float32)))
  figures = {
    "unconstrained": {"gap": true_gap(unconstrained), "loss": objective(unconstrained)},
    "proxy": {"gap": true_gap(theta), "loss": objective(theta)},
    "surrogate_only": {"gap": true_gap(theta_surrogate), "loss": objective(theta_surrogate)},
    "slsqp_reference": {"gap": true_gap(theta_ref), "loss": objective(theta_ref)},
  }
  for name, f in figures.items():
    print(f"{name:16s} true gap = {f['gap']:+.4f}   loss = {f['loss']:.5f}")
  proxy, ref = figures["proxy"], figures["slsqp_reference"]
  assert abs(figures["unconstrained"]["gap"]) > 2 * EPS  # the constraint matters
  assert abs(proxy["gap"]) <= EPS + 0.005, proxy
  assert abs(figures["surrogate_only"]["gap"]) > EPS + 0.005  # why the proxy
  assert abs(proxy["loss"] - ref["loss"]) <= 0.01 * ref["loss"], (proxy, ref)
  return figures


if __name__ == "__main__":
  main()
