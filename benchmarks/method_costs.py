"""Cost of one training iteration of every method, relative to one backprop iteration.

The paper's MNIST network at batch 128 on the embedded digits, all methods in ONE
process, measured round-robin (each round times every method once, ratios are taken
within the round, the median over rounds is reported) so machine noise hits all alike.
Also prints the memory of each method's auxiliary + multiplier + optimizer state as the
training set grows (shape inference only, nothing is allocated).

Targets: extragradient methods <= 2.0 (two gradient evaluations), past-extragradient
<= 1.2, DistProp state flat in the data-set size.

Run:  python benchmarks/method_costs.py [--rounds 5] [--steps 3]
"""

import argparse
import importlib
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax
import numpy as np

from lagrangian_jax import networks
from lagrangian_jax import state as state_lib
from lagrangian_jax.data import feed as feed_lib

VARIANTS = [  # (label, config module, overrides)
  ("backprop", "backprop", {}),
  ("penalty", "penalty", {}),
  ("gda", "gda", {}),
  ("augmented_lagrangian", "augmented_lagrangian", {}),
  ("extraprop", "extraprop", {}),
  ("extraprop+past_eg", "extraprop", {"solver": "past_extragradient"}),
  ("distprop", "default", {}),
  ("distprop+past_eg", "default", {"solver": "past_extragradient"}),
  ("distprop+gda", "default", {"solver": "gda"}),
]
TARGETS = {"extraprop": 2.0, "distprop": 2.0, "extraprop+past_eg": 1.2, "distprop+past_eg": 1.2}


def config_for(module, overrides, batch_size):
  config = importlib.import_module(f"configs.{module}").get_config()
  for key, value in overrides.items():
    config[key] = value
  config.batch_size = batch_size
  config.progress_bar = False
  return config


def state_bytes(config, num_train):
  """Bytes of aux + dual + constants + optimizer state, by shape inference."""
  net = networks.build_network(
    config.network.name, split="default", split_activation=config.network.split_activation
  )
  shapes = state_lib.abstract_state(config, net, num_train)
  params, constants, opt = shapes.params, shapes.constants, shapes.opt_state
  weights = params["primal"]["weights"]
  size = lambda t: sum(np.prod(x.shape) * x.dtype.itemsize for x in jax.tree.leaves(t))
  return (size(params) - size(weights)) + size(constants), size(opt)


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--rounds", type=int, default=5)
  parser.add_argument("--steps", type=int, default=3)
  parser.add_argument("--batch", type=int, default=128)
  args = parser.parse_args()

  runs = {}
  for label, module, overrides in VARIANTS:
    config = config_for(module, overrides, args.batch)
    exp = state_lib.build_experiment(config)
    state = exp.initial_state
    batches = [feed_lib.make_batch(exp, s) for s in range(args.steps)]
    for b in batches:  # compile + warm up
      state, m = exp.train_step(state, b)
    jax.block_until_ready(state)
    runs[label] = dict(exp=exp, state=state, batches=batches, times=[])
    print(f"ready: {label:22s} solver: {exp.solver}", flush=True)

  ratios = {label: [] for label in runs}
  for r in range(args.rounds):
    order = list(runs) if r % 2 == 0 else list(reversed(runs))
    t = {}
    for label in order:
      run = runs[label]
      state = run["state"]
      t0 = time.perf_counter()
      for b in run["batches"]:
        state, m = run["exp"].train_step(state, b)
      jax.block_until_ready(state)
      t[label] = (time.perf_counter() - t0) / len(run["batches"])
      run["state"] = state
      run["times"].append(t[label])
    for label in runs:
      ratios[label].append(t[label] / t["backprop"])

  bp = statistics.median(runs["backprop"]["times"])
  print(
    f"\ndevice: {jax.devices()[0].device_kind} backend: {jax.default_backend()} "
    f"batch: {args.batch} network: mnist_cnn rounds: {args.rounds}"
  )
  print(f"backprop step: {bp * 1e3:.1f} ms (median)")
  print(f"{'method':22s} {'ms/iter':>8s} {'ratio':>6s}  target")
  results = {}
  for label in runs:
    med = statistics.median(ratios[label])
    results[label] = med
    target = TARGETS.get(label)
    mark = "" if target is None else f"<= {target} {'met' if med <= target else 'NOT MET'}"
    print(f"{label:22s} {statistics.median(runs[label]['times']) * 1e3:8.1f} {med:6.2f}  {mark}")

  print("\nauxiliary + multiplier + constant state, and optimizer state (MiB):")
  sizes = {}
  for label, module in (("distprop", "default"), ("extraprop", "extraprop")):
    config = config_for(module, {}, args.batch)
    for n in (1_000, 10_000, 100_000, 1_000_000):
      aux, opt = state_bytes(config, n)
      sizes[(label, n)] = aux
      print(f"  {label:10s} N={n:>9,d}: state {aux / 2**20:10.2f}  optimizer {opt / 2**20:10.2f}")
  flat = sizes[("distprop", 1_000)] == sizes[("distprop", 1_000_000)]
  print(
    "RESULT backprop_ms={:.1f} {} distprop_state_flat={}".format(
      bp * 1e3, " ".join(f"{k}={v:.2f}" for k, v in results.items()), flat
    )
  )


if __name__ == "__main__":
  main()
