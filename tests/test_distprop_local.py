"""DistProp's local losses (``distprop.real_inputs="local"``): each block's real output
classified by its split's Gaussians, no gradient across a split."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lagrangian_jax import errors
from lagrangian_jax.methods.distprop import options
from lagrangian_jax.methods.distprop import sequential
from lagrangian_jax.methods.distprop import terms
from tests.test_depth import _deep_config
from tests.test_depth import _method


def _opts(**kw):
  base = options.Options(
    "class",
    "sphere",
    1.0,
    1.0,
    0,
    "soft",
    "fixed",
    0.1,
    0.0,
    1,
    0.0,
    1.0,
    "local",
    0.0,
    "own",
    "auto",
  )
  return base._replace(**kw)


def _proto(mu, sigma):
  """Gaussians of means ``mu`` and scales ``sigma`` (``rho`` = softplus^-1(sigma))."""
  sigma = jnp.asarray(sigma, jnp.float32)
  return {"mu": jnp.asarray(mu, jnp.float32), "rho": jnp.log(jnp.expm1(sigma))}


def test_local_loss_value_and_gradient_by_hand():
  # one coordinate, classes at 0 and 2, sigma 1 and 2, h = 1.5 of class 0:
  # logits = -z^2 / 2 - log sigma = (-1.125, -0.03125 - log 2)
  proto = _proto([[0.0], [2.0]], [[1.0], [2.0]])
  h, labels = jnp.array([[1.5]]), jnp.array([0])
  l0, l1 = -1.125, -0.5 * 0.25**2 - np.log(2.0)
  logits = terms.prototype_logits(_opts(), h, proto)
  np.testing.assert_allclose(np.asarray(logits), [[l0, l1]], rtol=1e-5)
  p0 = 1.0 / (1.0 + np.exp(l1 - l0))
  np.testing.assert_allclose(
    float(terms.local_loss(_opts(), h, proto, labels)), -np.log(p0), rtol=1e-5
  )
  # d/dh CE = sum_c (p_c - y_c) dl_c/dh, dl_c/dh = -(h - mu_c) / sigma_c^2
  grad = jax.grad(lambda x: terms.local_loss(_opts(), x, proto, labels))(h)
  expected = (p0 - 1.0) * -1.5 + (1.0 - p0) * -(1.5 - 2.0) / 4.0
  np.testing.assert_allclose(float(grad[0, 0]), expected, rtol=1e-5)
  # the temperature divides the logits
  t = _opts(local_temperature=4.0)
  q0 = 1.0 / (1.0 + np.exp((l1 - l0) / 4.0))
  np.testing.assert_allclose(float(terms.local_loss(t, h, proto, labels)), -np.log(q0), rtol=1e-5)


def test_local_ramp():
  assert sequential.local_ramp(_opts(), 0) == 1.0
  ramp = [float(sequential.local_ramp(_opts(local_warmup=4), s)) for s in (0, 1, 3, 9)]
  assert ramp == [0.25, 0.5, 1.0, 1.0]
  late = _opts(local_warmup=4, local_start=2)
  assert [float(sequential.local_ramp(late, s)) for s in (0, 1, 2, 5, 9)] == [0, 0, 0.25, 1, 1]
  step = _opts(local_start=2)
  assert [float(sequential.local_ramp(step, s)) for s in (0, 1, 2)] == [0.0, 0.0, 1.0]


def test_no_gradient_crosses_a_split():
  config = _deep_config(3, **{"distprop.real_inputs": "local"})
  _, _, method, params, constants, batch = _method(config)
  setup = sequential.setup_of(config, method_net(config))
  h0 = sequential._apply(setup, params["primal"]["weights"], constants, batch.step, 0, batch.images)

  def local(p, l):
    h0 = sequential._apply(setup, p["primal"]["weights"], constants, batch.step, 0, batch.images)
    return sequential.local_losses(setup, p, constants, batch, h0)[0][l]

  assert h0.shape[0] == batch.images.shape[0]
  for l in (1, 2):
    g = jax.grad(local)(params, l)
    w = g["primal"]["weights"]
    for before in range(l):  # the blocks before l: exactly zero
      assert all(float(jnp.max(jnp.abs(x))) == 0.0 for x in jax.tree.leaves(w[before])), (l, before)
    assert float(jnp.max(jnp.abs(w[l]["Dense_0"]["kernel"]))) > 0  # its own block learns
    protos = g["primal"]["aux"]["prototypes"]
    for k in range(3):  # only split l's Gaussians
      moved = float(jnp.max(jnp.abs(protos[k]["mu"]))) > 0
      assert moved == (k == l), (l, k)


def method_net(config):
  from lagrangian_jax import networks

  return networks.from_config(config.network, num_classes=10, input_shape=(28, 28, 1))


@pytest.mark.parametrize(
  "key, value",
  [
    ("distprop.real_inputs", "Local"),
    ("distprop.local_weight", -1.0),
    ("distprop.local_temperature", 0.0),
    ("distprop.local_warmup", -1),
    ("distprop.local_start", -3),
  ],
)
def test_bad_local_keys_name_themselves(key, value):
  with pytest.raises(errors.ConfigError, match=f"config.{key}: "):
    options.parse(_deep_config(2, **{key: value}))


def test_local_objective_adds_the_real_terms_and_none_is_unchanged():
  plain = _deep_config(2)
  _, _, plain_method, params, constants, batch = _method(plain)
  local = _deep_config(2, **{"distprop.real_inputs": "local", "distprop.local_weight": 0.5})
  _, _, local_method, *_ = _method(local)
  a, _ = plain_method.objective(params, constants, batch)
  b, m = local_method.objective(params, constants, batch)
  setup = sequential.setup_of(local, method_net(local))
  h0 = sequential._apply(setup, params["primal"]["weights"], constants, batch.step, 0, batch.images)
  per_split, real_loss = sequential.local_losses(setup, params, constants, batch, h0)
  assert per_split.shape == (2,)
  np.testing.assert_allclose(float(b - a), float(real_loss + 0.5 * jnp.sum(per_split)), rtol=1e-4)
  assert set(m) >= {"loss", "defect", "real_loss", "local_loss"}
  assert local_method.value_and_grad is None  # differentiated whole


@pytest.mark.slow  # tens of seconds: the quick phase stays under its six minutes
def test_local_trains_end_to_end(tmp_path):
  from lagrangian_jax import train

  overrides = {"distprop.real_inputs": "local", "distprop.local_warmup": 2}
  overrides.update({"network.width": 16, "num_steps": 2, "eval_every": 2, "checkpoint_every": 2})
  config = _deep_config(2, **overrides)
  config.evaluators = f"{config.evaluators},split_diagnostics"
  summary = train.train_and_evaluate(config, str(tmp_path / "run"))
  acc = summary["seeds"]["test_accuracy"][0]
  assert 0.0 <= acc <= 1.0 and np.isfinite(summary["seeds"]["test_loss"][0])
  assert len(summary["split_diagnostics"]["real_prototype_accuracy"]["mean"]) == 2


def test_real_chain_plot_is_written(tmp_path):
  from experiments import depth as depth_exp

  def cell(acc, splits):
    per_seed = [[0.8 + 0.01 * i for i in range(splits)], [0.82] * splits]
    diag = {
      "real_prototype_accuracy": {"mean": np.mean(per_seed, 0).tolist(), "per_seed": per_seed}
    }
    accuracy = {"mean": acc, "std": 0.0}
    return {
      "status": "ok",
      "test_accuracy": accuracy,
      "validation_accuracy": accuracy,
      "diagnostics": diag,
    }

  report = {
    "depths": [2, 4],
    "cells": {
      "distprop": {"2": cell(0.85, 2), "4": cell(0.9, 4)},
      "backprop": {
        "2": {
          "status": "ok",
          "test_accuracy": {"mean": 0.93},
          "validation_accuracy": {"mean": 0.94},
        },
        "4": {"status": "diverged"},
      },
    },
  }
  assert depth_exp._best_ok(report, "backprop") == 0.93
  assert depth_exp._best_ok(report, "backprop", "validation_accuracy") == 0.94
  assert depth_exp._best_ok(report, "dfa") is None
  path = depth_exp._plot_real_chain(report, str(tmp_path / "depth_real_chain.png"))
  assert os.path.getsize(path) > 0


def test_stage_parallel_refuses_local_saying_why():
  from lagrangian_jax import state as state_lib
  from tests.test_stage_parallel import deep

  config = deep(layout="stacked")
  config.distprop.real_inputs = "local"
  with pytest.raises(
    errors.ConfigError, match="config.distprop.real_inputs: .*'local'.*sequential"
  ):
    state_lib.build_experiment(config)


def test_linear_head_loss_value_and_gradient_by_hand():
  # logits = h A + b; CE's gradient in A is h^T (p - y) / B, in b the mean of (p - y)
  opts = _opts(local_head="linear")
  h, labels = jnp.array([[1.0, -2.0], [0.5, 3.0]]), jnp.array([1, 0])
  head = {"kernel": jnp.array([[0.2, -0.1], [0.3, 0.4]]), "bias": jnp.array([0.1, -0.2])}
  logits = np.asarray(h) @ np.asarray(head["kernel"]) + np.asarray(head["bias"])
  p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
  y = np.eye(2)[np.asarray(labels)]
  value, grad = jax.value_and_grad(lambda hd: terms.local_loss(opts, h, None, labels, hd))(head)
  np.testing.assert_allclose(float(value), -np.mean(np.log(p[[0, 1], [1, 0]])), rtol=1e-5)
  np.testing.assert_allclose(np.asarray(grad["kernel"]), np.asarray(h).T @ (p - y) / 2, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(grad["bias"]), (p - y).mean(0), rtol=1e-5)


def test_linear_heads_start_at_zero_learn_at_the_weights_rate_and_stay_local():
  config = _deep_config(3, **{"distprop.real_inputs": "local", "distprop.local_head": "linear"})
  _, _, method, params, constants, batch = _method(config)
  heads = params["primal"]["aux"]["heads"]
  assert [h["kernel"].shape for h in heads] == [(config.network.width, 10)] * 3
  assert all(float(jnp.max(jnp.abs(x))) == 0.0 for x in jax.tree.leaves(heads))
  labels = sequential.primal_labels(params["primal"])
  assert set(jax.tree.leaves(labels["aux"]["heads"])) == {"weights"}
  setup = sequential.setup_of(config, method_net(config))

  def local(p, l):
    h0 = sequential._apply(setup, p["primal"]["weights"], constants, batch.step, 0, batch.images)
    return sequential.local_losses(setup, p, constants, batch, h0)[0][l]

  for l in range(3):
    # zero heads: every class equally likely
    np.testing.assert_allclose(float(local(params, l)), np.log(10.0), rtol=1e-5)
    g = jax.grad(local)(params, l)
    w, gh = g["primal"]["weights"], g["primal"]["aux"]["heads"]
    for before in range(l):  # no gradient crosses a split
      assert all(float(jnp.max(jnp.abs(x))) == 0.0 for x in jax.tree.leaves(w[before]))
    for k in range(3):  # only split l's read-out
      assert (float(jnp.max(jnp.abs(gh[k]["kernel"]))) > 0) == (k == l), (l, k)
    # the prototypes do not classify: no gradient reaches them
    assert all(
      float(jnp.max(jnp.abs(x))) == 0.0 for x in jax.tree.leaves(g["primal"]["aux"]["prototypes"])
    )


def test_linear_head_needs_the_local_losses():
  with pytest.raises(
    errors.ConfigError, match="config.distprop.local_head: 'linear' .* needs real_inputs='local'"
  ):
    sequential.setup_of(
      _deep_config(2, **{"distprop.local_head": "linear"}), method_net(_deep_config(2))
    )
  with pytest.raises(errors.ConfigError, match="config.distprop.local_head: "):
    options.parse(_deep_config(2, **{"distprop.local_head": "mlp"}))
