"""``config.dtype="bfloat16"``: the step of a bf16 network against the float32 one.

The tolerances, derived from bfloat16's rounding and set from measurements (CPU: the
shrunken configs, three seeds x six batches each from the initial state; and the MLP and
the MNIST CNN from their states after 0, 10 and 20 steps):

* bfloat16 keeps 8 significant bits: each rounding is off by at most u = 2^-8 ~ 3.9e-3
  relative. The objective is a mean over the batch (and over DistProp's samples) of
  terms each a few roundings away from their float32 value; those errors are of either
  sign and mostly cancel in the mean. Measured: relative error of the objective at most
  9e-4 (backprop 9e-4, DistProp 8e-4). Bound: ``OBJECTIVE_RTOL = 1e-2`` = 2.5 u, ten
  times the largest measured, and what a systematic (non-cancelling) error of two or
  three roundings would reach.
* An update's error is a gradient's: the weight gradients are batch sums of products,
  each rounded, so a coordinate's absolute error is ~u times the sum of its terms'
  magnitudes, large against the sum itself where the terms cancel. Measured: the update's
  relative error ``|u16 - u32| / |u32|`` at most 0.045 (SGD, 12 u: the cancellation),
  0.005 (DistProp's MLP); the cosine at least 0.9989 (SGD) and 0.9994 (DistProp, the
  MNIST CNN). Bound: ``UPDATE_COSINE = 0.99``, a relative error of up to ~0.14
  (1 - cos = e^2/2): nine times the largest measured 1 - cos, three times the largest
  relative error.

Backprop runs ``configs/backprop_sgd.py`` (the update is -lr x the gradient), not
``configs/backprop.py``'s Adam: Adam's first step is ``-lr g / |g|`` per coordinate, which
turns a rounding that flips the sign of a near-zero gradient coordinate into a full-size
difference (measured cosine 0.965 from the same state): a property of Adam, not of the
precision. DistProp runs its own config (ExtraAdagrad).
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lagrangian_jax import networks
from lagrangian_jax import state as state_lib
from lagrangian_jax.data import feed as feed_lib
from tests.conftest import shrunken_config

OBJECTIVE_RTOL = 1e-2  # module docstring: 2.5 x bf16's unit roundoff
UPDATE_COSINE = 0.99  # module docstring: an update's relative error up to ~0.14
_BF16_RESULT = re.compile(r"->\s*tensor<[0-9x]*bf16>")

_EXPERIMENTS = {}


def _experiments(method: str):
  """``(float32, bfloat16)`` experiments of ``method``'s shrunken config (cached: each
  compiles its step once for the module)."""
  if method not in _EXPERIMENTS:
    f32 = state_lib.build_experiment(shrunken_config(method))
    bf16 = state_lib.build_experiment(shrunken_config(method, dtype="bfloat16"), f32.dataset)
    _EXPERIMENTS[method] = f32, bf16
  return _EXPERIMENTS[method]


def _flat(tree) -> np.ndarray:
  return np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in jax.tree.leaves(tree)])


def _step(exp, state, batch):
  return exp.train_step(jax.tree.map(jnp.copy, state), batch)  # the step donates its state


def _bf16_ops(text: str, op: str) -> int:
  """How many ``op`` instructions of a StableHLO text give a bfloat16 result."""
  return sum(1 for line in text.splitlines() if op in line and _BF16_RESULT.search(line))


@pytest.mark.parametrize("method", ["backprop_sgd", "distprop"])
def test_bf16_step_matches_the_float32_step(method):
  f32, bf16 = _experiments(method)
  state = f32.initial_state
  before = _flat(state.params)
  for step in range(3):
    batch = feed_lib.make_batch(f32, step)
    new32, m32 = _step(f32, state, batch)
    new16, m16 = _step(bf16, state, batch)
    o32, o16 = float(m32["objective"][0]), float(m16["objective"][0])
    assert abs(o16 - o32) <= OBJECTIVE_RTOL * abs(o32), (step, o16, o32)
    u32, u16 = _flat(new32.params) - before, _flat(new16.params) - before
    cosine = u32 @ u16 / (np.linalg.norm(u32) * np.linalg.norm(u16))
    assert cosine >= UPDATE_COSINE, (step, cosine)
    # not the same program: bf16 rounds, so the updates differ somewhere
    assert not np.array_equal(u16, u32)


@pytest.mark.parametrize("method", ["backprop_sgd", "distprop"])
def test_the_state_stays_float32_after_a_bf16_step(method):
  f32, bf16 = _experiments(method)
  new16, metrics = _step(bf16, f32.initial_state, feed_lib.make_batch(f32, 0))
  dtypes = {str(x.dtype) for x in jax.tree.leaves(new16)}
  assert dtypes <= {"float32", "int32"}, dtypes  # parameters, optimizer, solver, step
  assert [x.dtype for x in jax.tree.leaves(new16)] == [
    x.dtype for x in jax.tree.leaves(f32.initial_state)
  ]
  assert {str(x.dtype) for x in jax.tree.leaves(metrics)} <= {"float32", "int32"}


@pytest.mark.parametrize("method", ["backprop_sgd", "distprop"])
def test_the_bf16_step_computes_in_bf16(method):
  f32, bf16 = _experiments(method)
  args = (f32.initial_state, feed_lib.make_batch(f32, 0))
  assert _bf16_ops(bf16.train_step.lower(*args).as_text(), "dot_general") > 0
  assert "bf16" not in f32.train_step.lower(*args).as_text()  # float32: no cast at all


@pytest.mark.parametrize("conv_impl, op", [("xla", "convolution"), ("rows", "dot_general")])
def test_bf16_convolutions(conv_impl, op):
  """Both convolution paths (``nn.Conv`` and the CPU kernels) run in bf16, and the
  network's output is float32 either way."""
  for dtype in networks.DTYPES:
    net = networks.build_network("mnist_cnn", conv_impl=conv_impl, dtype=dtype)
    params = networks.init_network(net, jax.random.key(0))
    x = jnp.zeros((2, *net.input_shape))
    text = jax.jit(lambda p, x, net=net: networks.forward(net, p, x)).lower(params, x).as_text()
    assert (_bf16_ops(text, op) >= 2) == (dtype == "bfloat16"), (dtype, text)
    assert {p.dtype for p in jax.tree.leaves(params)} == {jnp.dtype("float32")}
    assert networks.forward(net, params, x).dtype == jnp.float32
