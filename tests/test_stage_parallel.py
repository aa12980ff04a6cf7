"""Stage-parallel DistProp: layouts, errors, and the same iterates as the sequential code.

The multi-device comparisons need fake devices set before JAX starts, so they run in
child processes (slow-marked: CI runs them after the README's test command).
"""

import os
import re
import subprocess
import sys
import textwrap

import jax
import ml_collections
import numpy as np
import pytest

from lagrangian_jax import errors
from lagrangian_jax import networks
from lagrangian_jax import sharding
from lagrangian_jax import state as state_lib
from lagrangian_jax.data import feed as feed_lib
from lagrangian_jax.methods import distprop
from lagrangian_jax.methods.distprop import layout as layout_lib
from tests.conftest import ROOT
from tests.conftest import shrunken_config


def deep(stage=1, data=1, solver="", noise="per_step", mix=0.5, layout="auto", first_split=1):
  """The deep MLP config, small enough to compile in seconds: depth 8 (7 inner blocks),
  width 32, 4 samples per class, 2 seeds."""
  from configs import deep_mlp_distprop
  from configs import smoke

  c = smoke.shrink(deep_mlp_distprop.get_config())
  c.network.name, c.network.depth, c.network.width = "mlp", 8, 32
  c.network.split, c.network.split_activation = "every", "deferred"
  c.network.first_split = first_split
  c.distprop.noise, c.distprop.mix_fraction = noise, mix
  c.distprop.samples_per_class = 4
  c.distprop.block_layout = layout
  c.mesh.num_devices, c.mesh.stage, c.mesh.data = data * stage, stage, data
  c.batch_size, c.solver, c.num_seeds, c.progress_bar = 32, solver, 2, False
  return c


def run(config, steps):
  exp = state_lib.build_experiment(config)
  state = exp.initial_state
  for k in range(steps):
    state, metrics = exp.train_step(state, feed_lib.make_batch(exp, k))
  return exp, jax.device_get(state), jax.device_get(metrics)


def layout_of(exp):
  """The layout of ``exp``'s parameters (None: the sequential code's)."""
  return distprop.layout_for(exp.config, exp.net, exp.mesh.shape["stage"])


def sequential_params(exp, params):
  if layout_of(exp) is None:
    return params
  return jax.vmap(lambda p: layout_lib.params_from_layout(layout_of(exp), p))(params)


def assert_layout_consistent(exp, params):
  """Each boundary prototype's copy still equals its owner's and every unused entry
  (pads, other stages' slots) is still 0: laying the trained parameters out afresh gives
  them back. Both copies get the same summed gradient bit for bit, but XLA compiles each
  leaf's solver update on its own and may round it differently (past-extragradient on
  1x8: 1 ulp in 3% of the entries after 10 steps), hence the float32 tolerance."""
  layout = layout_of(exp)
  if layout is None or layout.stages == 1:
    return
  again = jax.vmap(
    lambda p: layout_lib.params_to_layout(layout, layout_lib.params_from_layout(layout, p))
  )
  for x, y in zip(jax.tree.leaves(again(params)), jax.tree.leaves(params), strict=True):
    np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-7)


def assert_same_run(a, b):
  (exp_a, state_a, m_a), (exp_b, state_b, m_b) = a, b
  assert_layout_consistent(exp_a, state_a.params)
  assert_layout_consistent(exp_b, state_b.params)
  pa, pb = sequential_params(exp_a, state_a.params), sequential_params(exp_b, state_b.params)
  for x, y in zip(jax.tree.leaves(pa), jax.tree.leaves(pb), strict=True):
    np.testing.assert_allclose(x, y, rtol=2e-4, atol=2e-5)
  np.testing.assert_allclose(m_a["objective"], m_b["objective"], rtol=1e-4)
  np.testing.assert_allclose(m_a["defect"], m_b["defect"], rtol=1e-4, atol=1e-6)


# ----------------------------------------------------------------------------------
# One device
# ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
  "stages, owner, per_stage, pad",
  [
    (1, (0,) * 9, 7, 0),
    (2, (0, 0, 0, 0, 1, 1, 1, 1, 1), 4, 1),
    (4, (0, 0, 1, 1, 2, 2, 3, 3, 3), 2, 1),
    (8, (0, 1, 2, 3, 4, 5, 6, 7, 7), 1, 1),
  ],
)
def test_stacked_layout_of_the_deep_mlp(stages, owner, per_stage, pad):
  net = networks.build_network("mlp", depth=8, split="every", split_activation="deferred")
  layout = layout_lib.make_layout(net, stages)
  assert layout == layout_lib.Layout("stacked", stages, 8, owner, per_stage, pad)


def test_a_deeper_first_block_keeps_the_stacked_layout():
  net = networks.build_network(
    "mlp", depth=8, split="every", first_split=3, split_activation="deferred"
  )
  layout = layout_lib.make_layout(net, 2)
  assert layout.kind == "stacked" and layout.num_splits == 6 and layout.owner[0] == 0


def test_layouts_refuse_what_they_cannot_place():
  net = networks.build_network("mlp", depth=4, split="every", split_activation="deferred")
  with pytest.raises(errors.ConfigError, match="config.mesh.stage: 8 stages for 3 stacked"):
    layout_lib.make_layout(net, 8)  # 3 inner blocks cannot fill 8 stages
  cnn = networks.build_network("mnist_cnn")  # 2 blocks: heterogeneous, slots
  assert layout_lib.make_layout(cnn, 2) == layout_lib.Layout("slots", 2, 1, (0, 1), 0, 0)
  with pytest.raises(errors.ConfigError, match="config.mesh.stage: 4 stages for a network of 2"):
    layout_lib.make_layout(cnn, 4)
  with pytest.raises(errors.ConfigError, match="config.distprop.block_layout: 'stacked' needs"):
    layout_lib.make_layout(cnn, 2, "stacked")
  with pytest.raises(errors.ConfigError, match="config.distprop.block_layout: must be one of"):
    layout_lib.make_layout(cnn, 2, "rows")


@pytest.mark.parametrize(
  "mesh, message",
  [
    ({"num_devices": -1, "data": -1, "stage": -1}, "config.mesh.stage: only one of"),
    ({"num_devices": 8, "data": 3, "stage": -1}, "config.mesh.data: 3 does not divide the 8"),
    ({"num_devices": 8, "data": 2, "stage": 2}, "config.mesh.data: mesh.data=2 x mesh.stage=2"),
    ({"num_devices": 16, "data": -1, "stage": 1}, "config.mesh.num_devices: 16 requested, 8"),
  ],
)
def test_mesh_shape_names_the_key(mesh, message):
  config = ml_collections.ConfigDict({"mesh": mesh})
  with pytest.raises(errors.ConfigError, match=re.escape(message)):
    sharding.mesh_shape(config, 8)
  fixed = ml_collections.ConfigDict({"mesh": {"num_devices": -1, "data": -1, "stage": 2}})
  assert sharding.mesh_shape(fixed, 8) == (4, 2)


@pytest.mark.slow  # tens of seconds: the quick phase stays under its six minutes
def test_layout_round_trip_is_exact():
  config = deep()
  net = networks.from_config(config.network, num_classes=10, input_shape=(28, 28, 1))

  seq = distprop.make(config, net, 100)
  params, constants = seq.init(jax.random.key(3), None)
  for stages in (1, 2, 4, 8):
    layout = layout_lib.make_layout(net, stages)
    back = layout_lib.params_from_layout(layout, layout_lib.params_to_layout(layout, params))
    jax.tree.map(np.testing.assert_array_equal, back, params)
    c = layout_lib.constants_from_layout(layout, layout_lib.constants_to_layout(layout, constants))
    jax.tree.map(np.testing.assert_array_equal, c, constants)


@pytest.mark.slow  # long compiles; the 8-device equalities below are slow too
def test_stage_parallel_code_on_one_device_equals_the_sequential_run():
  """The stacked layout's shard_map objective (one stage) gives the sequential iterates."""
  steps = 6
  assert_same_run(run(deep(layout="stacked"), steps), run(deep(), steps))


@pytest.mark.slow
def test_slot_layout_on_one_device_equals_the_sequential_run():
  """Heterogeneous splits (the MNIST network cut after the convolutions and after the
  128-unit layer: 9,216 and 128 features) in slots, per-step noise and mixtures."""

  def cnn(layout):
    config = shrunken_config("distprop")
    config.network.name, config.network.split = "mnist_cnn", "2,3"
    config.network.depth = config.network.width = 0
    config.distprop.noise, config.distprop.mix_fraction = "per_step", 0.5
    config.distprop.samples_per_class = 2
    config.distprop.block_layout = layout
    config.batch_size, config.num_seeds = 16, 1
    return config

  assert_same_run(run(cnn("slots"), 3), run(cnn("auto"), 3))


def test_unsupported_options_name_their_key():
  with pytest.raises(errors.ConfigError, match="config.distprop.multipliers: stage-parallel"):
    config = deep(layout="stacked")
    config.distprop.multipliers = "example"
    state_lib.build_experiment(config)
  with pytest.raises(errors.ConfigError, match="config.distprop.real_inputs: stage-parallel"):
    config = deep(layout="stacked")
    config.distprop.real_inputs = "forward"
    state_lib.build_experiment(config)


def _plain_norm(params):  # squared, in float64
  return sum(float(np.sum(np.square(np.asarray(x, np.float64)))) for x in jax.tree.leaves(params))


def _layout_norm(layout, params):
  weights = layout_lib.norm_weights(layout, params)
  squares = jax.tree.map(
    lambda x, w: np.sum(np.asarray(w) * np.square(np.asarray(x, np.float64))), params, weights
  )
  return sum(float(v) for v in jax.tree.leaves(squares))


@pytest.mark.parametrize("net_name", ["mlp", pytest.param("mnist_cnn", marks=pytest.mark.slow)])
def test_norm_weights_count_every_sequential_entry_once(net_name):
  """``grad_clip`` on stages: the layout's weighted norm is the sequential tree's norm, on
  every layout; the unweighted one counts the boundary copies twice (so it would not)."""

  config = deep()
  if net_name == "mnist_cnn":
    config.network.name, config.network.split = "mnist_cnn", "2,3"
    config.network.depth = config.network.width = 0
  net = networks.from_config(config.network, num_classes=10, input_shape=(28, 28, 1))
  params, _ = distprop.make(config, net, 100).init(jax.random.key(0), None)
  # every entry non-zero, so a miscounted entry shows
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(1), len(leaves))
  params = treedef.unflatten([jax.random.normal(k, x.shape) for k, x in zip(keys, leaves)])
  sequential = _plain_norm(params)
  for stages in (1, 2, 4) if net_name == "mlp" else (1, 2, 3):
    layout = layout_lib.make_layout(net, stages)
    laid = layout_lib.params_to_layout(layout, params)
    np.testing.assert_allclose(_layout_norm(layout, laid), sequential, rtol=1e-12)
    plain = _plain_norm(laid)
    assert (plain > sequential * (1 + 1e-9)) == (stages > 1), (stages, plain, sequential)


# ----------------------------------------------------------------------------------
# Fake devices (child processes)
# ----------------------------------------------------------------------------------

MESHES = textwrap.dedent("""
    import jax, numpy as np
    from tests.test_stage_parallel import deep, run, assert_same_run, layout_of
    from configs import default, smoke
    assert jax.device_count() == 8, jax.devices()

    def cnn(stage, solver):
      c = smoke.shrink(default.get_config())
      c.network.name, c.network.split = "mnist_cnn", "default"
      c.network.depth = c.network.width = 0
      c.mesh.num_devices, c.mesh.stage, c.mesh.data = stage, stage, 1
      c.batch_size, c.solver, c.num_seeds, c.progress_bar = 16, solver, 1, False
      # clipping at every step (norms 100-7,000 here): the layout's norm must be the
      # sequential one (layout_lib.norm_weights). Measured after 10 steps, worst entry in units of
      # assert_same_run's tolerance: 0.0005-0.0006 weighted, 3.2-4.6 with the plain norm
      # (the boundary prototype counted twice). At 0.5 both pass: the clip normalises
      # every step and the two norms differ by too little to show.
      c.grad_clip = 3.0
      return c

    for solver in ("extragradient", "past_extragradient"):
      noise = "per_step" if solver == "extragradient" else "fixed"
      one = run(deep(solver=solver, noise=noise), 10)
      for data, stage in ((1, 8), (2, 4), (4, 2)):
        many = run(deep(stage, data, solver=solver, noise=noise), 10)
        exp = many[0]
        assert layout_of(exp).stages == stage and exp.mesh.shape == {"data": data, "stage": stage}
        kernel = jax.tree.leaves(exp.initial_state.params["primal"]["weights"]["inner"])[0]
        assert kernel.sharding.spec == jax.P(None, "stage"), kernel.sharding  # (seed, block, ...)
        assert exp.method.objective.args[0].data == data  # each runs its share of the samples
        assert_same_run(many, one)
        print("OK deep", solver, data, stage, flush=True)
      assert_same_run(run(cnn(2, solver), 10), run(cnn(1, solver), 10))
      print("OK mnist_cnn", solver, flush=True)
    # a first block of 3 layers (network.first_split): block 0 a slot, the rest stacked
    one = run(deep(first_split=3), 10)
    many = run(deep(2, 4, first_split=3), 10)
    assert layout_of(many[0]).kind == "stacked" and layout_of(many[0]).num_splits == 6
    assert_same_run(many, one)
    print("OK first_split", flush=True)
""")

HLO = textwrap.dedent("""
    import jax
    from lagrangian_jax import hlo, state as state_lib
    from lagrangian_jax.data import feed as feed_lib
    from tests.test_stage_parallel import deep

    def compiled(batch_size, stages=4):
      config = deep(stages, 8 // stages)
      config.batch_size = batch_size
      exp = state_lib.build_experiment(config)
      return exp.train_step.lower(exp.initial_state, feed_lib.make_batch(exp, 0)).compile().as_text()

    small, large = hlo.collectives(compiled(32)), hlo.collectives(compiled(256))
    assert sorted(small) == sorted(large), (small, large)  # nothing grows with the batch
    permutes = [c for c in small if c.op == "collective-permute"]
    # the gradient of mu and rho of one split (2 seeds x 2 x 10 classes x 32 floats) as
    # one message, at each of extragradient's two evaluations: to the next stage and to
    # the previous one on 4 stages, one swap on 2
    assert [c.bytes for c in permutes] == [2 * 2 * 10 * 32 * 4] * 4, permutes
    two = [c for c in hlo.collectives(compiled(32, 2)) if c.op == "collective-permute"]
    assert [c.bytes for c in two] == [2 * 2 * 10 * 32 * 4] * 2, two
    print("OK", len(small), "collectives", flush=True)
""")


def child(script, devices, timeout=900):
  env = dict(
    os.environ,
    JAX_PLATFORMS="cpu",
    XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
  )
  proc = subprocess.run(
    [sys.executable, "-c", script],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=timeout,
  )
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
  return proc.stdout


@pytest.mark.slow
def test_stage_parallel_runs_equal_the_single_device_run():
  out = child(MESHES, 8)
  assert out.count("OK deep") == 6 and out.count("OK mnist_cnn") == 2, out
  assert "OK first_split" in out, out


@pytest.mark.slow
def test_no_collective_grows_with_the_batch():
  assert "OK" in child(HLO, 8)


@pytest.mark.slow
def test_launcher_runs_stage_parallel_like_one_stage(tmp_path):
  def summary(stage):
    args = [
      sys.executable,
      "-m",
      "experiments.main",
      "--config=configs/deep_mlp_distprop.py",
      f"--workdir={tmp_path / f'stage{stage}'}",
      "--config.network.depth=8",
      "--config.network.width=32",
      "--config.distprop.samples_per_class=4",
      "--config.num_steps=20",
      "--config.eval_every=20",
      "--config.log_every=10",
      "--config.checkpoint_every=20",
      "--config.eval_train_examples=500",
      "--config.progress_bar=False",
      f"--config.mesh.num_devices={stage}",
      f"--config.mesh.stage={stage}",
    ]
    env = dict(
      os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=4"
    )
    proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-5000:]
    line = [x for x in proc.stdout.splitlines() if x.startswith("SUMMARY")][-1]
    return dict(kv.split("=", 1) for kv in line.split()[1:])

  four, one = summary(4), summary(1)
  for key in ("test_accuracy", "final_defect"):
    assert abs(float(four[key]) - float(one[key])) < 1e-4, (key, four, one)
