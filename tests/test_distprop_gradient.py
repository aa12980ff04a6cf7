"""DistProp's gradient block by block (``distprop.gradient="by_block"``) is the gradient of
the whole objective: the value, the metrics and every leaf of the gradient, on the deep
MLP (mixtures, per-step noise), the MNIST network's head split, per-example multipliers
and the plain Lagrangian."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import deep_mlp_distprop
from configs import default
from lagrangian_jax import networks
from lagrangian_jax.methods import base
from lagrangian_jax.methods.distprop import sequential


def _deep(depth=2):
  config = deep_mlp_distprop.get_config()
  config.network.depth, config.network.width = depth, 16
  return config


def _mlp_default(**distprop):
  config = default.get_config()
  config.network.name = "mlp"
  config.network.depth, config.network.width, config.network.split = 2, 16, "every"
  for key, value in distprop.items():
    config.distprop[key] = value
  return config


CASES = {
  "deep_mixtures_per_step": _deep,
  "plain_lagrangian": functools.partial(_mlp_default, augmented_coefficient=0.0),
  "augmented_per_example": functools.partial(_mlp_default, multipliers="example"),
  "hard_fixed_noise": functools.partial(_mlp_default, shrinkage="hard"),
}
SLOW = {"augmented_per_example", "deep_mixtures_per_step", "hard_fixed_noise"}  # quick: one


def _setup_and_args(config, batch_size=8, step=5):
  net = networks.from_config(config.network, num_classes=10, input_shape=(28, 28, 1))
  method = sequential.make(config, net, num_train=batch_size)
  params, constants = method.init(jax.random.key(1), None)
  # move the multipliers and prototypes off their initial values, so no term is trivial
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(2), len(leaves))
  params = jax.tree.unflatten(
    tree, [x + 0.3 * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys)]
  )
  rng = np.random.default_rng(0)
  batch = base.Batch(
    jnp.asarray(rng.normal(size=(batch_size, 28, 28, 1)), jnp.float32),
    jnp.asarray(rng.integers(0, 10, batch_size)),
    jnp.arange(batch_size),
    jnp.asarray(step),
  )
  return sequential.setup_of(config, net), method, params, constants, batch


@pytest.mark.parametrize(
  "case", [pytest.param(c, marks=[pytest.mark.slow] if c in SLOW else []) for c in sorted(CASES)]
)
def test_by_block_equals_the_whole_gradient(case):
  setup, method, params, constants, batch = _setup_and_args(CASES[case]())
  assert method.value_and_grad is not None  # the default is by block
  whole = jax.jit(jax.value_and_grad(method.objective, has_aux=True))
  by_block = jax.jit(method.value_and_grad)
  (v1, m1), g1 = whole(params, constants, batch)
  (v2, m2), g2 = by_block(params, constants, batch)
  assert jax.tree.structure(g1) == jax.tree.structure(g2)
  np.testing.assert_allclose(float(v2), float(v1), rtol=1e-6)
  np.testing.assert_allclose(m2["loss"], m1["loss"], rtol=1e-6)
  np.testing.assert_allclose(m2["defect"], m1["defect"], rtol=1e-6)
  for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
    assert a.shape == b.shape and a.dtype == b.dtype
    # float32 rounding of a sum taken in another order, relative to the leaf's scale
    np.testing.assert_allclose(b, a, rtol=0, atol=1e-6 * float(jnp.max(jnp.abs(a))) + 1e-12)
  del setup


def test_whole_gradient_key_and_real_inputs_differentiate_the_objective():
  config = _deep()
  config.distprop.gradient = "whole"
  assert _setup_and_args(config)[1].value_and_grad is None
  config = _deep()
  config.distprop.real_inputs = "forward"
  setup, method, params, constants, batch = _setup_and_args(config)
  assert method.value_and_grad is None
  with pytest.raises(ValueError, match="real_inputs"):
    sequential.value_and_grad(setup, params, constants, batch)


@pytest.mark.slow
def test_by_block_holds_fewer_temporaries():
  """The point of it: XLA's temporaries of the gradient, whole vs by block (a deep MLP
  of 8 blocks of width 64: every block's activations at once vs about one block's)."""
  config = _deep(depth=8)
  config.network.width = 64
  _, method, params, constants, batch = _setup_and_args(config, batch_size=32)

  def temp(fn):
    compiled = jax.jit(fn).lower(params, constants, batch).compile()
    return compiled.memory_analysis().temp_size_in_bytes

  whole = temp(jax.value_and_grad(method.objective, has_aux=True))
  by_block = temp(method.value_and_grad)
  assert by_block < 0.6 * whole, (by_block, whole)
