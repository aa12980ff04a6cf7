"""The multipliers' own step rule (``config.dual_optimizer``, issue 23 item 2): it reaches
the multipliers, leaves the primal's rule alone, and ``"primal"`` is today's optimizer."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lagrangian_jax import errors
from lagrangian_jax import optimizers
from lagrangian_jax import rows as rows_lib
from lagrangian_jax import state as state_lib
from lagrangian_jax.data import feed as feed_lib
from lagrangian_jax.methods import base
from tests.conftest import shrunken_config

DUAL_RATE = 1.39e-4  # the authors' GDA: plain SGD on the multipliers at this rate


def _toy(config, solver="gda"):
  """``from_config``'s optimizer on a weights / states / multipliers tree, one update."""
  params = {
    "primal": {"weights": jnp.array([1.0, -2.0]), "aux": {"states": jnp.array([0.5])}},
    "dual": {"multipliers": jnp.array([0.25, -0.75, 3.0])},
  }
  grads = {
    "primal": {"weights": jnp.array([0.3, -1.2]), "aux": {"states": jnp.array([2.0])}},
    "dual": {"multipliers": jnp.array([0.7, -0.05, 1.9])},
  }
  labels = {"weights": "weights", "aux": {"states": "aux"}}
  tx, _ = optimizers.from_config(config, default_solver=solver, primal_labels=labels)
  updates, _ = tx.update(grads, tx.init(params), params)
  return grads, updates


def test_dual_sgd_is_one_plain_step_of_the_dual_rate_and_the_primal_keeps_adagrad():
  config = shrunken_config("gda")
  config.optimizer, config.adagrad_init, config.momentum = "adagrad", 0.0, 0.5
  config.learning_rates.dual = DUAL_RATE
  config.dual_optimizer = "primal"  # configs/gda.py's own rule is sgd
  base_grads, base_updates = _toy(config)
  config.dual_optimizer = "sgd"
  grads, updates = _toy(config)
  # ascent by exactly rate x gradient (no momentum: config.momentum is the primal's)
  g = np.asarray(grads["dual"]["multipliers"])
  np.testing.assert_array_equal(
    np.asarray(updates["dual"]["multipliers"]), np.float32(DUAL_RATE) * g
  )
  # the primal's Adagrad step is the one without a dual rule
  for a, b in zip(jax.tree.leaves(updates["primal"]), jax.tree.leaves(base_updates["primal"])):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  # and "primal" gave the multipliers Adagrad's first step from a zero accumulator,
  # rate x g / sqrt(g^2 + eps), about rate x sign(g): not the SGD step
  g64 = g.astype(np.float64)
  np.testing.assert_allclose(
    np.asarray(base_updates["dual"]["multipliers"]),
    DUAL_RATE * g64 / np.sqrt(g64**2 + optimizers.ADAGRAD_EPS),
    rtol=1e-6,
  )


def test_dual_adagrad_starts_from_its_own_accumulator():
  config = shrunken_config("extraprop")
  config.solver = "gda"  # one step of the rule, no extrapolation
  config.learning_rates.dual = 0.1
  config.dual_optimizer, config.dual_adagrad_init = "adagrad", 4.0
  grads, updates = _toy(config)
  g = np.asarray(grads["dual"]["multipliers"], np.float64)
  eps = optimizers.ADAGRAD_EPS
  np.testing.assert_allclose(
    np.asarray(updates["dual"]["multipliers"]), 0.1 * g / np.sqrt(4.0 + g**2 + eps), rtol=1e-6
  )


def test_primal_is_todays_optimizer_bit_for_bit():
  # the default builds the same transformation as before the key: the same updates
  config = shrunken_config("extraprop")
  config.solver = "gda"
  _, updates = _toy(config)
  del config.dual_optimizer, config.dual_adagrad_init  # a config from before the keys
  _, before = _toy(config)
  for a, b in zip(jax.tree.leaves(updates), jax.tree.leaves(before)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_the_method_of_multipliers_refuses_a_dual_rule_naming_the_key():
  config = shrunken_config("augmented_lagrangian")
  config.dual_optimizer = "sgd"
  with pytest.raises(errors.ConfigError, match=r"^config\.dual_optimizer: must be 'primal'"):
    _toy(config, solver="multipliers")
  with pytest.raises(ValueError, match="dual_step_rule"):
    optimizers.saddle_point("multipliers", "sgd", 0.1, dual_step_rule="sgd")


def test_the_dual_rule_reaches_the_lifted_multipliers_in_training():
  # GDA on a training set of one batch (every row in every step). The first step starts
  # at g = 0 (states at the forward pass): the multipliers stay 0 and weights and states
  # move. The second moves each multiplier row by exactly rate x g_i at its start point
  # (simultaneous ascent; d L / d lambda_i = g_i at the rows' natural scale)
  config = shrunken_config("gda")
  config.data.max_train_examples = 64
  config.optimizer, config.adagrad_init = "adagrad", 0.0
  config.dual_optimizer, config.learning_rates.dual = "sgd", DUAL_RATE
  config.batch_size = n = 64
  exp = state_lib.build_experiment(config)
  if len(exp.dataset.train.labels) != n:  # max_train_examples counts before the hold-out
    config.batch_size = n = len(exp.dataset.train.labels)
    exp = state_lib.build_experiment(config)
  state, _ = exp.train_step(exp.initial_state, feed_lib.make_batch(exp, 0))
  before = state_lib.unstack(state)
  np.testing.assert_array_equal(np.asarray(before.params["dual"]["multipliers"][0]), 0.0)
  after = state_lib.unstack(exp.train_step(state, feed_lib.make_batch(exp, 1))[0])
  idx = np.arange(n)
  batch = base.Batch(exp.dataset.train.images[idx], exp.dataset.train.labels[idx], idx)
  start = rows_lib.gather(before.params, exp.placement.tables.params, idx)
  grads, _ = jax.grad(exp.method.objective, has_aux=True)(start, before.constants, batch)
  g = np.asarray(grads["dual"]["multipliers"][0])
  assert np.abs(g).max() > 1e-3  # the first step left the constraint
  moved = np.asarray(after.params["dual"]["multipliers"][0])
  np.testing.assert_allclose(moved, np.float32(DUAL_RATE) * g, rtol=1e-4, atol=1e-12)
