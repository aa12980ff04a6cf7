"""Dropout (AlexNet's classifier): inverted dropout in training, the identity in evaluation,
a key per (seed, step, segment), and a clear error where it cannot apply."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lagrangian_jax import errors
from lagrangian_jax import methods
from lagrangian_jax import networks
from lagrangian_jax.methods import base
from tests.conftest import shrunken_config

KEY = jax.random.key(0)


def test_dropout_layer_is_inverted_dropout_with_a_key_and_identity_without():
  seg = networks.Segment((networks.Dropout(0.25),))
  x = jnp.ones((200, 100))
  assert np.array_equal(seg.apply({}, x), x)
  y = np.asarray(seg.apply({}, x, KEY))
  kept = y != 0
  np.testing.assert_allclose(y[kept], 1 / 0.75, rtol=1e-6)  # survivors scaled by 1/(1-p)
  assert abs(kept.mean() - 0.75) < 0.01  # 20,000 draws: std of the share 0.003
  assert np.array_equal(y, np.asarray(seg.apply({}, x, KEY)))  # a pure function of the key
  assert not np.array_equal(y, np.asarray(seg.apply({}, x, jax.random.key(1))))


@pytest.mark.slow  # AlexNet at 64 px
def test_alexnet_dropout_sits_before_the_two_hidden_classifier_layers():
  net = networks.build_network("alexnet", input_shape=(64, 64, 3), dropout=0.5)
  plain = networks.build_network("alexnet", input_shape=(64, 64, 3))
  assert networks.has_dropout(net) and not networks.has_dropout(plain)
  classifier = net.segments[1].layers
  drops = [i for i, layer in enumerate(classifier) if isinstance(layer, networks.Dropout)]
  assert [type(classifier[i + 1]).__name__ for i in drops] == ["Dense", "Dense"]
  assert len([x for x in classifier if isinstance(x, networks.Dense)]) == 3
  # no parameters of its own: the same tree, and evaluation (no key) is the plain net
  params = networks.init_network(net, KEY)
  x = jax.random.normal(KEY, (2, 64, 64, 3))
  np.testing.assert_allclose(
    networks.forward(net, params, x), networks.forward(plain, params, x), rtol=1e-5, atol=1e-5
  )
  assert not np.allclose(networks.forward(net, params, x, KEY), networks.forward(net, params, x))


@pytest.mark.parametrize(
  "kwargs, message",
  [
    ({"name": "mlp", "dropout": 0.5}, "config.network.dropout: only alexnet has dropout"),
    ({"name": "alexnet", "dropout": 1.0}, "config.network.dropout: must be in [0, 1)"),
  ],
)
def test_bad_dropout_names_the_key(kwargs, message):
  with pytest.raises(errors.ConfigError, match=message.replace("[", r"\[").replace(")", r"\)")):
    networks.build_network(**kwargs)


def test_methods_without_dropout_refuse_a_network_with_it():
  net = networks.build_network("alexnet", input_shape=(64, 64, 3), dropout=0.5)
  with pytest.raises(errors.ConfigError, match="config.network.dropout: method 'gda'"):
    methods.make_method(shrunken_config("gda"), net, 10)


# DistProp on AlexNet compiles for minutes on 2 cores: in CI's slow phase.
@pytest.mark.parametrize("method", ["backprop", pytest.param("distprop", marks=pytest.mark.slow)])
def test_training_objective_drops_per_step_and_is_deterministic_within_a_step(method):
  config = shrunken_config(method)
  net = networks.build_network(
    "alexnet", input_shape=(64, 64, 3), dropout=0.5, split="default", split_activation="identity"
  )
  config.distprop.prototype_init = "sphere"
  m = methods.make_method(config, net, 10)
  params, constants = m.init(KEY, None)
  assert "dropout_key" in constants
  images = jax.random.normal(KEY, (4, 64, 64, 3))

  def value(step):
    batch = base.Batch(images, jnp.arange(4) % 10, jnp.arange(4), step)
    return float(jax.jit(m.objective)(params, constants, batch)[0])

  assert value(3) == value(3)  # both extragradient half-steps (and a resume) drop alike
  assert value(3) != value(4)
