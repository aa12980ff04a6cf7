"""DFA, DTP and OAM: single updates checked by hand in numpy, and short training runs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lagrangian_jax import errors
from lagrangian_jax import methods
from lagrangian_jax import networks
from lagrangian_jax import train
from lagrangian_jax.methods import base
from tests.conftest import shrunken_config

B, D, C = 4, 3, 5  # batch, input features, classes of the tiny networks


def _tiny(method, depth, width=4, **overrides):
  """A method on an MLP with ``depth`` hidden blocks, each its own segment, and a batch."""
  net = networks.build_network(
    "mlp",
    num_classes=C,
    input_shape=(D,),
    depth=depth,
    width=width,
    split="every",
    split_activation="relu",
  )
  method = methods.make_method(shrunken_config(method, **overrides), net, num_train=16)
  params, constants = method.init(jax.random.key(1), None)
  rng = np.random.default_rng(0)
  x = rng.normal(size=(B, D)).astype(np.float32)
  y = np.array([0, 3, 1, 3], np.int32)
  return method, params, constants, base.Batch(jnp.asarray(x), jnp.asarray(y), jnp.arange(B))


def _dense(params, l):
  layer = params["primal"]["weights"][l]["Dense_0"]
  return np.asarray(layer["kernel"], np.float64), np.asarray(layer["bias"], np.float64)


def _softmax(z):
  z = np.exp(z - z.max(-1, keepdims=True))
  return z / z.sum(-1, keepdims=True)


def _grads(method, params, constants, batch):
  (_, metrics), g = jax.value_and_grad(method.objective, has_aux=True)(params, constants, batch)
  return g["primal"], metrics


def test_dfa_update_is_the_projected_error_outer_product():
  method, params, constants, batch = _tiny("dfa", depth=1)
  x, y = np.asarray(batch.images, np.float64), np.asarray(batch.labels)
  (w0, b0), (w1, b1) = _dense(params, 0), _dense(params, 1)
  feedback = np.asarray(constants["feedback"][0], np.float64)  # (C, width)
  a = x @ w0 + b0
  h = np.maximum(a, 0)
  e = _softmax(h @ w1 + b1) - np.eye(C)[y]
  delta = (e @ feedback) * (a > 0)  # Nøkland: (B e) * f'(a), per example
  g, metrics = _grads(method, params, constants, batch)
  np.testing.assert_allclose(g["weights"][0]["Dense_0"]["kernel"], x.T @ delta / B, atol=1e-6)
  np.testing.assert_allclose(g["weights"][0]["Dense_0"]["bias"], delta.mean(0), atol=1e-6)
  # the last block: the true gradient of the loss
  np.testing.assert_allclose(g["weights"][1]["Dense_0"]["kernel"], h.T @ e / B, atol=1e-6)
  np.testing.assert_allclose(metrics["defect"], [np.abs(e @ feedback).mean()], rtol=1e-5)


def test_dfa_zero_output_init_zeroes_only_the_last_segment():
  _, params, constants, _ = _tiny("dfa", depth=2)
  _, zeroed, constants_z, _ = _tiny("dfa", depth=2, **{"dfa.output_init": "zero"})
  w, wz = params["primal"]["weights"], zeroed["primal"]["weights"]
  assert all(not np.any(np.asarray(x)) for x in jax.tree.leaves(wz[-1]))
  for a, b in zip(jax.tree.leaves(w[:-1]), jax.tree.leaves(wz[:-1])):
    np.testing.assert_array_equal(a, b)  # hidden segments: the network's initialiser
  for a, b in zip(constants["feedback"], constants_z["feedback"]):
    np.testing.assert_array_equal(a, b)  # the same fixed feedback matrices


@pytest.mark.slow  # the slow ones compile a conv network or train: CI's slow phase
def test_dfa_reaches_a_conv_block_through_its_feature_map():
  net = networks.build_network("mnist_cnn", split="every", split_activation="relu")
  method = methods.make_method(shrunken_config("dfa"), net, num_train=16)
  params, constants = method.init(jax.random.key(0), None)
  assert net.state_shapes[0] == (26, 26, 32)  # the first convolution's feature map
  assert [f.shape for f in constants["feedback"]] == [(10, np.prod(s)) for s in net.state_shapes]
  images = jax.random.normal(jax.random.key(1), (2, 28, 28, 1))
  batch = base.Batch(images, jnp.array([3, 7]), jnp.arange(2))
  g, _ = _grads(method, params, constants, batch)
  w = params["primal"]["weights"]
  logits = networks.forward(net, w, images)
  e = jax.nn.softmax(logits) - jax.nn.one_hot(batch.labels, 10)
  signal = (e @ constants["feedback"][0]).reshape(2, 26, 26, 32) / 2  # the mean over 2
  _, vjp = jax.vjp(lambda p: networks.apply_segment(net, (p,), 0, images), w[0])
  want = vjp(signal)[0]
  np.testing.assert_allclose(
    g["weights"][0]["Conv_0"]["kernel"], want["Conv_0"]["kernel"], rtol=1e-4, atol=1e-6
  )


def test_dtp_targets_and_inverse_loss_by_hand():
  eta = 0.5
  method, params, constants, batch = _tiny(
    "dtp", depth=2, **{"dtp.noise": 1e-6, "dtp.target_step": eta}
  )
  x, y = np.asarray(batch.images, np.float64), np.asarray(batch.labels)
  (w0, b0), (w1, b1), (w2, b2) = (_dense(params, l) for l in range(3))
  inv = params["primal"]["aux"]["inverses"][0]
  v, c = np.asarray(inv["kernel"], np.float64), np.asarray(inv["bias"], np.float64)
  a0 = x @ w0 + b0
  h0 = np.maximum(a0, 0)
  h1 = np.maximum(h0 @ w1 + b1, 0)
  e = _softmax(h1 @ w2 + b2) - np.eye(C)[y]
  t1 = h1 - eta * e @ w2.T  # a gradient step on the per-example loss
  t0 = h0 + np.tanh(t1 @ v + c) - np.tanh(h1 @ v + c)  # the difference correction
  g, metrics = _grads(method, params, constants, batch)
  np.testing.assert_allclose(
    metrics["defect"], [np.abs(h0 - t0).mean(), np.abs(h1 - t1).mean()], rtol=1e-4, atol=1e-7
  )
  # block 0 regresses onto its target: d/dW0 mean_i |relu(x W0 + b0) - t0|^2
  np.testing.assert_allclose(
    g["weights"][0]["Dense_0"]["kernel"], x.T @ (2 * (h0 - t0) * (a0 > 0)) / B, atol=1e-6
  )
  # the inverse reconstructs h0 from f_1(h0) (noise 1e-6: the clean reconstruction)
  rec = np.tanh(h1 @ v + c) - h0
  np.testing.assert_allclose(metrics["reconstruction"], (rec**2).sum() / B, rtol=1e-4)
  r = 2 * rec * (1 - np.tanh(h1 @ v + c) ** 2) / B
  np.testing.assert_allclose(g["aux"]["inverses"][0]["kernel"], h1.T @ r, atol=1e-6)


def test_dtp_noise_is_a_function_of_the_batch():
  method, params, constants, batch = _tiny("dtp", depth=2, **{"dtp.noise": 0.5})
  rec = lambda b: float(method.objective(params, constants, b)[1]["reconstruction"])
  assert rec(batch) == rec(batch)
  assert rec(batch) != rec(batch._replace(indices=batch.indices + 1))


def test_oam_one_code_step_and_the_local_weight_losses():
  gamma, mu = 0.1, 2.0
  method, params, constants, batch = _tiny(
    "oam",
    depth=1,
    **{"oam.code_steps": 1, "oam.code_learning_rate": gamma, "oam.penalty": mu},
  )
  x, y = np.asarray(batch.images, np.float64), np.asarray(batch.labels)
  (w0, b0), (w1, b1) = _dense(params, 0), _dense(params, 1)
  a0 = x @ w0 + b0  # the code starts at the forward pass: the penalty is 0 there
  e = _softmax(np.maximum(a0, 0) @ w1 + b1) - np.eye(C)[y]
  code = a0 - gamma * (e @ w1.T) * (a0 > 0)  # one step on sum_i E_i
  g, metrics = _grads(method, params, constants, batch)
  np.testing.assert_allclose(metrics["defect"], [np.abs(code - a0).mean()], rtol=1e-4)
  # block 0 fits its code: d/dW0 (mu / B) sum_i |c_i - (x_i W0 + b0)|^2
  np.testing.assert_allclose(
    g["weights"][0]["Dense_0"]["kernel"], -2 * mu * x.T @ (code - a0) / B, atol=1e-6
  )
  # the last block learns the loss on the code
  h = np.maximum(code, 0)
  e_code = _softmax(h @ w1 + b1) - np.eye(C)[y]
  np.testing.assert_allclose(g["weights"][1]["Dense_0"]["kernel"], h.T @ e_code / B, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["dtp", "oam"])
def test_dtp_and_oam_on_the_conv_network(name):
  net = networks.build_network("mnist_cnn", split_activation="relu")
  method = methods.make_method(shrunken_config(name), net, num_train=16)
  params, constants = method.init(jax.random.key(0), None)
  batch = base.Batch(jnp.ones((2, 28, 28, 1)), jnp.array([3, 7]), jnp.arange(2))
  g, metrics = _grads(method, params, constants, batch)
  assert metrics["defect"].shape == (len(net.state_shapes),)
  assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(g))
  assert float(jnp.abs(g["weights"][0]["Conv_0"]["kernel"]).max()) > 0


@pytest.mark.parametrize(
  "name, key, value",
  [
    ("dfa", "dfa.feedback_scale", 0.0),
    ("dfa", "dfa.output_init", "ones"),
    ("dtp", "dtp.noise", -1.0),
    ("dtp", "dtp.inverse_activation", "sigmoid"),
    ("oam", "oam.code_steps", -1),
    ("oam", "oam.penalty", 0.0),
  ],
)
def test_bad_keys_are_named(name, key, value):
  net = networks.build_network("mlp", depth=2, width=8, split="every")
  with pytest.raises(errors.ConfigError, match=rf"^config\.{key}: "):
    methods.make_method(shrunken_config(name, **{key: value}), net, num_train=16)


# Chance is 0.10. Measured at 150 steps of batch 50 on 1,000 digits (2x64 MLP, split
# "every"): about 0.80 (dfa), 0.86 (dtp), 0.87 (oam).
@pytest.mark.slow  # test_train trains each baseline in the quick phase (default split)
@pytest.mark.parametrize("name", ["dfa", "dtp", "oam"])
def test_trains_well_above_chance(name, tmp_path):
  config = shrunken_config(name, **{"network.split": "every"})
  assert config.network.split_activation == "relu"
  summary = train.train_and_evaluate(config, str(tmp_path))
  assert summary["test_accuracy"] > 0.10 + 0.55, summary
  assert len(summary["defects"]) == 2 and np.all(np.isfinite(summary["defects"]))
