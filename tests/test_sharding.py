"""Sharded training on 8 fake CPU devices equals the single-device run.

The device count must be set before JAX starts, so the comparison runs in a child
process (this module never initialises a backend with 8 devices itself).
"""

import os
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import ROOT

SCRIPT = textwrap.dedent("""
    import jax, numpy as np
    assert jax.device_count() == 8, jax.devices()
    from tests.conftest import shrunken_config
    from lagrangian_jax import state as state_lib
    from lagrangian_jax.data import feed as feed_lib

    def run(method, devices, **overrides):
      config = shrunken_config(method, **overrides)
      config.batch_size = 64
      config.mesh.num_devices = devices
      exp = state_lib.build_experiment(config)
      state = exp.initial_state
      for step in range(4):
        state, metrics = exp.train_step(state, feed_lib.make_batch(exp, step))
      return exp, state, jax.device_get(metrics)

    for method, extra in [("extraprop", {}), ("distprop", {"distprop.multipliers": "example"}),
                          ("distprop", {}), ("backprop", {})]:
      exp8, s8, m8 = run(method, 8, **extra)
      _, s1, m1 = run(method, 1, **extra)
      # tables are really split by rows over the 8 devices, the batch too
      for leaf, is_table in zip(jax.tree.leaves(s8.params), exp8.placement.tables.params):
        if is_table:
          assert leaf.sharding.spec == jax.P(None, "data"), leaf.sharding  # (seed, row, ...)
          assert len(leaf.addressable_shards) == 8
          assert leaf.addressable_shards[0].data.shape[1] * 8 == leaf.shape[1]
      batch = feed_lib.make_batch(exp8, 0)
      assert len({s.device for s in batch.images.addressable_shards}) == 8
      s8, s1 = jax.device_get(s8), jax.device_get(s1)
      for a, b in zip(jax.tree.leaves(s8), jax.tree.leaves(s1)):
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape:  # tables padded to a multiple of 8 rows (axis 1: seed first)
          a = a[:, : b.shape[1]]
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)
      np.testing.assert_allclose(m8["objective"], m1["objective"], rtol=1e-4)
      print("OK", method, extra)
""")

ROWS = textwrap.dedent("""
    import jax
    assert jax.device_count() == 8, jax.devices()
    from tests.test_stage_parallel import assert_same_run, deep, run
    # DistProp's synthetic rows split over data (sequential.on_data): the deep MLP with
    # per-step noise and mixtures; 4 samples x 10 classes = 5 rows per device, 3 x 10 =
    # 30 rows padded to 32 by the partitioner
    for samples in (4, 3):
      configs = [deep(data=d) for d in (8, 1)]
      for c in configs:
        c.distprop.samples_per_class = samples
      assert_same_run(run(configs[0], 6), run(configs[1], 6))
      print("OK deep distprop data=8 samples", samples)
""")

FLOPS = textwrap.dedent("""
    import jax
    assert jax.device_count() == 8, jax.devices()
    from lagrangian_jax import state as state_lib
    from lagrangian_jax.data import feed as feed_lib
    from tests.test_stage_parallel import deep

    def flops(data):
      config = deep(data=data)
      # the rows outweigh the solver's update of the weights, which every device repeats
      config.distprop.samples_per_class, config.batch_size = 32, 64
      exp = state_lib.build_experiment(config)
      step = exp.train_step.lower(exp.initial_state, feed_lib.make_batch(exp, 0)).compile()
      cost = step.cost_analysis()
      return (cost[0] if isinstance(cost, list) else cost)["flops"]

    print("RATIO", flops(8) / (flops(1) / 8))
""")


def _on_eight_devices(script):
  """Runs ``script`` in a child process with 8 fake CPU devices; fails on a non-zero exit."""
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=8")
  proc = subprocess.run(
    [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
  )
  assert proc.returncode == 0, proc.stdout + proc.stderr
  return proc


@pytest.mark.slow
def test_sharded_run_equals_single_device_run():
  proc = _on_eight_devices(SCRIPT)
  assert proc.stdout.count("OK") == 4, proc.stdout


@pytest.mark.slow
def test_distprop_rows_split_over_data_run_like_one_device():
  proc = _on_eight_devices(ROWS)
  assert proc.stdout.count("OK") == 2, proc.stdout


@pytest.mark.slow  # compiles the deep MLP on 1 and 8 fake devices in child processes
def test_distprop_synthetic_rows_divide_over_data():
  """Each of 8 data devices runs an eighth of the step's FLOPs (XLA's cost analysis of
  the compiled per-device program), the synthetic rows' share included."""
  proc = _on_eight_devices(FLOPS)
  ratio = float(proc.stdout.split("RATIO")[-1])
  assert ratio <= 1.2, ratio
