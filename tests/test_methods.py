"""The methods' maths: state sizes, sparse rows, fixed noise, the DistProp objective."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lagrangian_jax import methods
from lagrangian_jax import networks
from lagrangian_jax import rows as rows_lib
from lagrangian_jax import state as state_lib
from lagrangian_jax.data import feed as feed_lib
from lagrangian_jax.methods import base
from tests.conftest import shrunken_config


def _fake_map_train(num_train, dim, num_classes=10):
  """A map_train over a synthetic data set: costs nothing under jax.eval_shape."""

  def map_train(fn, limit=None):
    n = num_train if limit is None else min(limit, num_train)
    x = jnp.zeros((n, 784), jnp.float32)
    y = jnp.arange(n, dtype=jnp.int32) % num_classes
    return fn(x, y)

  return map_train


def _aux_and_dual_size(config, num_train):
  net = networks.build_network(
    "mlp", depth=2, width=64, split=[1], split_activation=config.network.split_activation
  )
  method = methods.make_method(config, net, num_train)
  params, constants = jax.eval_shape(
    lambda: method.init(jax.random.key(0), _fake_map_train(num_train, 784))
  )
  size = lambda t: sum(int(np.prod(x.shape)) for x in jax.tree.leaves(t))
  return size(params["primal"]["aux"]) + size(params["dual"]) + size(constants)


@pytest.mark.parametrize("prototype_init", ["data", "sphere"])
def test_distprop_state_does_not_grow_with_the_data_set(prototype_init):
  config = shrunken_config("distprop")
  config.distprop.prototype_init = prototype_init
  small, large = _aux_and_dual_size(config, 1_000), _aux_and_dual_size(config, 1_000_000)
  assert small == large
  # 10 classes x 64 features x (mu, rho, multiplier) + 32 x 10 x 64 fixed noise
  assert small == 10 * 64 * 3 + 32 * 10 * 64


def test_extraprop_state_grows_linearly_with_the_data_set():
  config = shrunken_config("extraprop")
  a, b = _aux_and_dual_size(config, 1_000), _aux_and_dual_size(config, 1_000_000)
  assert a == 1_000 * 64 * 2  # states and multipliers, one row per example
  assert b == 1_000_000 * 64 * 2


def test_distprop_per_example_multipliers_are_a_table():
  config = shrunken_config("distprop")
  config.distprop.multipliers = "example"
  assert _aux_and_dual_size(config, 2_000) - _aux_and_dual_size(config, 1_000) == 1_000 * 64
  config.distprop.multipliers = "l1"
  assert _aux_and_dual_size(config, 2_000) - _aux_and_dual_size(config, 1_000) == 1_000


@pytest.mark.parametrize("method, multipliers", [("extraprop", None), ("distprop", "example")])
def test_a_step_changes_only_the_batch_rows_of_tables(method, multipliers):
  config = shrunken_config(method)
  if multipliers:
    config.distprop.multipliers = multipliers
  exp = state_lib.build_experiment(config)
  # Take a few steps first so accumulators and multipliers are not at their init value.
  state = exp.initial_state
  for step in range(3):
    state, _ = exp.train_step(state, feed_lib.make_batch(exp, step))
  before = jax.tree.map(np.array, state_lib.unstack(state))
  batch = feed_lib.make_batch(exp, 3)
  after, _ = exp.train_step(state, batch)
  after = jax.tree.map(np.array, state_lib.unstack(after))
  rows = np.asarray(batch.indices[0])
  others = np.setdiff1d(np.arange(len(exp.dataset.train.labels)), rows)
  changed = {"params": 0, "opt_state": 0}
  for name, flags in (
    ("params", exp.placement.tables.params),
    ("opt_state", exp.placement.tables.opt_state),
  ):
    leaves_b = jax.tree.leaves(getattr(before, name))
    leaves_a = jax.tree.leaves(getattr(after, name))
    for b, a, is_table in zip(leaves_b, leaves_a, flags):
      if is_table:
        np.testing.assert_array_equal(a[others], b[others])
        changed[name] += int(np.any(a[rows] != b[rows]))
  # every parameter table moved on the batch rows (extraprop: states and multipliers)
  assert (
    changed["params"] == sum(exp.placement.tables.params) == (2 if method == "extraprop" else 1)
  )
  # the optimizer mirrors rows too (accumulators; the extragradient anchor is reset to 0)
  assert changed["opt_state"] >= 1 and sum(exp.placement.tables.opt_state) > sum(
    exp.placement.tables.params
  )


def test_extraprop_states_start_at_a_valid_forward_pass():
  config = shrunken_config("extraprop")
  exp = state_lib.build_experiment(config)
  idx = np.arange(100)
  images, labels = exp.dataset.train.images[idx], exp.dataset.train.labels[idx]
  state = state_lib.unstack(exp.initial_state)
  d = exp.method.defects(
    rows_lib.gather(state.params, exp.placement.tables.params, idx),
    state.constants,
    base.Batch(images, labels, idx),
  )
  np.testing.assert_allclose(np.asarray(d), 0.0, atol=1e-5)


def test_distprop_noise_is_fixed_and_sigma_has_a_floor():
  config = shrunken_config("distprop")
  config.distprop.sigma_floor = 0.05
  exp = state_lib.build_experiment(config)
  state = exp.initial_state
  noise = np.asarray(state.constants["noise"][0])
  one = state_lib.unstack(state)
  batch = state_lib.unstack(feed_lib.make_batch(exp, 0))
  v1, _ = exp.method.objective(one.params, one.constants, batch)
  v2, _ = exp.method.objective(one.params, one.constants, batch)
  assert float(v1) == float(v2)  # no fresh noise between evaluations
  for step in range(5):
    state, _ = exp.train_step(state, feed_lib.make_batch(exp, step))
  np.testing.assert_array_equal(np.asarray(state.constants["noise"][0]), noise)
  rho = state_lib.unstack(state).params["primal"]["aux"]["prototypes"][0]["rho"]
  rho = rho.at[0].set(-1e4)  # softplus underflows to 0
  sigma = jax.nn.softplus(rho) + 0.05
  assert float(jnp.min(sigma)) >= 0.05


def test_distprop_per_step_noise_is_a_function_of_the_step():
  """Algorithm 1's eps_k: the same at both half-steps (same batch.step), new each step."""
  config = shrunken_config("distprop", **{"distprop.noise": "per_step"})
  exp = state_lib.build_experiment(config)
  one = state_lib.unstack(exp.initial_state)
  assert "noise" not in one.constants
  b0, b1 = (state_lib.unstack(feed_lib.make_batch(exp, k)) for k in (0, 1))
  same_batch_other_step = b0._replace(step=b1.step)
  v0, _ = exp.method.objective(one.params, one.constants, b0)
  assert float(v0) == float(exp.method.objective(one.params, one.constants, b0)[0])
  assert float(v0) != float(
    exp.method.objective(one.params, one.constants, same_batch_other_step)[0]
  )


def test_distprop_loss_scores_samples_against_their_class_over_the_logits_axis():
  """The reference code's bug was a log-softmax over the prototype axis; not here."""
  config = shrunken_config("distprop")
  config.distprop.prototype_init = "sphere"
  net = networks.build_network("mlp", depth=2, width=64, split=[1])
  method = methods.make_method(config, net, 100)
  params, constants = method.init(jax.random.key(0), _fake_map_train(100, 784))
  batch = base.Batch(jnp.zeros((4, 784)), jnp.zeros((4,), jnp.int32), jnp.arange(4))
  _, aux = method.objective(params, constants, batch)
  proto = params["primal"]["aux"]["prototypes"][0]
  noise = constants["noise"][0]  # (S, C, H)
  s, c, h = noise.shape
  samples = proto["mu"][None] + noise * (jax.nn.softplus(proto["rho"]) + 1e-2)[None]
  logits = networks.apply_segment(
    net, params["primal"]["weights"], 1, samples.reshape(-1, h)
  ).reshape(s, c, 10)
  own = np.arange(c)
  want = -np.mean(np.asarray(jax.nn.log_softmax(logits, axis=-1))[:, own, own])
  wrong = -np.mean(np.asarray(jax.nn.log_softmax(logits, axis=1))[:, own, own])
  assert float(aux["loss"]) == pytest.approx(want, rel=1e-5)
  assert abs(want - wrong) > 1e-3


# ------------------------------------------- eq. 3's band on the lifted constraints


# g = h - f(x) of one example's 4 state entries, and eq. 3 of it with the band eps = 1
# (soft: g -+ 1 outside the band; hard: g itself outside it), by hand
_OFFSETS = np.array([[-2.0, -0.5, 0.25, 1.5]], np.float32)
_BAND = 1.0
_BANDED = {"soft": [[-1.0, 0.0, 0.0, 0.5]], "hard": [[-2.0, 0.0, 0.0, 1.5]]}
_SLOPE = {"soft": [[1.0, 0.0, 0.0, 1.0]], "hard": [[1.0, 0.0, 0.0, 1.0]]}  # d g_eps / d g


def _lifted_at_offsets(
  method: str, band: float, shrinkage: str, lams, c: float = 0.5, offsets=_OFFSETS
):
  """``method``'s objective on one example whose state is ``f(x) + offsets``, the
  multipliers ``lams``: its value, aux (the raw defect) and gradient in the state row."""
  from configs import base as base_config

  config = base_config.get_config()
  config.method, config.penalty = method, c
  config.network.split_activation = "deferred"
  config.lifted.band, config.lifted.shrinkage = band, shrinkage
  net = networks.build_network(
    "mlp", input_shape=(3,), depth=2, width=4, split=[1], split_activation="deferred"
  )
  m = methods.make_method(config, net, 1)
  x = jnp.asarray([[0.3, -0.7, 1.1]], jnp.float32)
  batch = base.Batch(x, jnp.asarray([2]), jnp.asarray([0]))
  params = m.init_rows(m.init(jax.random.key(1), None)[0], {}, x, batch.labels)
  f = params["primal"]["aux"]["states"][0]
  params["primal"]["aux"]["states"] = (f + offsets,)
  if "multipliers" in params["dual"]:
    params["dual"]["multipliers"] = (jnp.asarray(lams, jnp.float32),)
  (value, aux), grads = jax.value_and_grad(m.objective, has_aux=True)(params, {}, batch)
  return value, aux, grads["primal"]["aux"]["states"][0]


@pytest.mark.parametrize("shrinkage", ["soft", "hard"])
@pytest.mark.parametrize("method", ["gda", "extraprop", "augmented_lagrangian", "penalty"])
def test_the_lifted_band_is_eq3_on_g_in_value_and_gradient(method, shrinkage):
  lams = np.array([[0.5, -1.0, 2.0, 3.0]], np.float32)
  c = 0.5
  value, aux, grad = _lifted_at_offsets(method, _BAND, shrinkage, lams, c)
  value0, aux0, grad0 = _lifted_at_offsets(method, 0.0, shrinkage, lams, c)
  g, g_eps, slope = _OFFSETS, np.array(_BANDED[shrinkage]), np.array(_SLOPE[shrinkage])
  lam = 0.0 if method == "penalty" else lams
  quad = 0.0 if method in ("gda", "extraprop") else c
  # the loss and its gradient in the state are the same with and without the band:
  # the difference is the constraint terms, <lam, g_eps> + c/2 |g_eps|^2 against g's
  term = lambda v: np.sum(lam * v) + 0.5 * quad * np.sum(v**2)
  np.testing.assert_allclose(float(value - value0), term(g_eps) - term(g), rtol=1e-5, atol=1e-6)
  # d/dh of the terms: (lam + c g_eps) g_eps'(g) with the band, lam + c g without
  expected = (lam + quad * g_eps) * slope - (lam + quad * g)
  np.testing.assert_allclose(np.asarray(grad - grad0), expected, rtol=1e-5, atol=1e-6)
  # the defect stays the raw mean |g|, band or not
  np.testing.assert_allclose(np.asarray(aux["defect"]), np.mean(np.abs(g)), rtol=1e-5)
  np.testing.assert_array_equal(np.asarray(aux["defect"]), np.asarray(aux0["defect"]))


@pytest.mark.parametrize("shrinkage", ["soft", "hard"])
def test_a_zero_band_is_g_itself_where_every_row_starts(shrinkage):
  # at g = 0 (states at the forward pass), d<lam, g>/dh = lam; soft shrinkage by 0 has
  # the value of g but a zero gradient there: a zero band must not shrink at all
  lams = np.array([[0.5, -1.0, 2.0, 3.0]], np.float32)
  zero = np.zeros_like(_OFFSETS)
  _, _, grad = _lifted_at_offsets("extraprop", 0.0, shrinkage, lams, offsets=zero)
  _, _, loss_grad = _lifted_at_offsets("penalty", 0.0, shrinkage, lams, c=0.0, offsets=zero)
  np.testing.assert_allclose(np.asarray(grad - loss_grad), lams, rtol=1e-6)
