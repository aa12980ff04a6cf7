"""Per-device FLOPs of DistProp's data-parallel step: does the work divide over ``data``?

XLA's cost analysis of the compiled train step (``exp.train_step.lower(state, batch)
.compile().cost_analysis()``: the per-device SPMD program) on 1 and on D fake CPU devices
(``mesh.data = D``), each count in a child process (the device count is fixed before JAX
starts). Cases:

* ``deep16``: ``configs/deep_mlp_distprop.py`` as it is (depth 16, width 128, 32 samples
  per class, batch 128, per-step noise and mixtures), on the embedded digits.
* ``imagenet``: ``configs/imagenet_distprop.py`` (AlexNet split after ``features``, 1000
  classes, one sample per class, L1 multipliers, batch 256, 224x224 crops) on random
  in-memory images (256 of them: only the shapes matter), ``prototype_init="sphere"`` as
  configured, no grain pipeline and no augmentation (the crops' shapes are the same).
* ``backprop_deep16``: the deep MLP's backprop step, for reference.

The acceptance figure is ``ratio = flops(D) / (flops(1) / D)``: 1.0 when the per-device
work divides exactly, <= 1.2 wanted.

Measured on this CPU, 8 fake devices, GFLOP per device (ratio): before the samples were
split over ``data`` (commit a92a1a8) deep16 1.591 -> 1.500 (7.54), imagenet 2663 -> 951
(2.86), backprop_deep16 0.247 -> 0.035 (1.14); after (``distprop.sequential.on_data``)
deep16 1.591 -> 0.210 (1.06), imagenet 2663 -> 334 (1.00).

Run: ``python benchmarks/distprop_data_parallel.py [--devices 8] [--cases deep16,imagenet]``
(one ``RESULT`` line; the ImageNet compiles take a few minutes on two CPU cores).
"""

import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

CASES = ("deep16", "imagenet", "backprop_deep16")


def config_of(case: str, devices: int):
  """The config of ``case`` on a ``data`` mesh of ``devices``."""
  from configs import deep_mlp_backprop
  from configs import deep_mlp_distprop
  from configs import imagenet_distprop

  module = {
    "deep16": deep_mlp_distprop,
    "imagenet": imagenet_distprop,
    "backprop_deep16": deep_mlp_backprop,
  }[case]
  config = module.get_config()
  if case == "imagenet":
    config.data.pipeline, config.data.workers, config.data.augment = "memory", 0, "none"
  else:
    config.network.depth = 16
  config.mesh.num_devices, config.mesh.data, config.mesh.stage = devices, devices, 1
  config.progress_bar = False
  return config


def fake_imagenet(config):
  """256 random 224x224 RGB images of 1000 classes: the shapes of the real batches."""
  import numpy as np

  from lagrangian_jax.data import base as data_base

  rng = np.random.default_rng(0)
  n, size = config.batch_size, config.data.image_size
  split = data_base.Split(
    rng.standard_normal((n, size, size, 3), dtype=np.float32),
    rng.integers(0, 1000, n).astype(np.int32),
  )
  return data_base.Dataset("fake_imagenet", split, split, split, 1000, (size, size, 3))


def flops(case: str, devices: int) -> float:
  """GFLOP of one device's compiled train step (run in a process with ``devices``)."""
  import jax

  from lagrangian_jax import state as state_lib
  from lagrangian_jax.data import feed as feed_lib

  assert jax.device_count() == devices, jax.devices()
  config = config_of(case, devices)
  dataset = fake_imagenet(config) if case == "imagenet" else None
  exp = state_lib.build_experiment(config, dataset)
  batch = feed_lib.make_batch(exp, 0)
  cost = exp.train_step.lower(exp.initial_state, batch).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  return float(cost["flops"]) / 1e9


def child(case: str, devices: int) -> float:
  env = dict(
    os.environ,
    JAX_PLATFORMS="cpu",
    XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
    PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
  )
  code = (
    "import json, sys; sys.path.insert(0, sys.argv[1]);"
    "from benchmarks.distprop_data_parallel import flops;"
    "print('GFLOP', json.dumps(flops(sys.argv[2], int(sys.argv[3]))))"
  )
  proc = subprocess.run(
    [sys.executable, "-c", code, ROOT, case, str(devices)],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    check=False,
  )
  if proc.returncode != 0:
    raise RuntimeError(f"{case} on {devices} devices failed:\n{proc.stderr[-4000:]}")
  line = [x for x in proc.stdout.splitlines() if x.startswith("GFLOP")][-1]
  return json.loads(line.split(" ", 1)[1])


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--devices", type=int, default=8)
  parser.add_argument("--cases", default="deep16,imagenet")
  args = parser.parse_args()
  d, fields = args.devices, []
  for case in args.cases.split(","):
    assert case in CASES, (case, CASES)
    one, many = child(case, 1), child(case, d)
    ratio = many / (one / d)
    print(
      f"{case:16s} 1 device {one:10.3f} GFLOP   {d} devices {many:10.3f} GFLOP/device   "
      f"ideal {one / d:10.3f}   ratio {ratio:5.2f}",
      flush=True,
    )
    fields += [f"{case}_1={one:.4g}", f"{case}_{d}={many:.4g}", f"{case}_ratio={ratio:.3f}"]
  print("RESULT devices={} {}".format(d, " ".join(fields)))


if __name__ == "__main__":
  main()
