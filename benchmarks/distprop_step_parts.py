"""What DistProp's step spends its time on: the deep MLP's sequential step with parts off.

The deep config (``configs/deep_mlp_distprop.py``: per-step noise and interpolated
"mixture" samples) against the same step without mixtures and with a fixed noise
snapshot too, a what-if (``mixtures_as_matmul``: ``terms.mixed`` written as a one-hot
mixing matrix times the prototypes, a dot instead of a gather and, in the gradient, a dot
instead of a scatter-add; same values up to rounding, not the library's code), plus
backprop on the same network and batch, all in ONE process and
timed round-robin (each round times every variant; medians over rounds) so machine
noise hits all alike. Ratios are to the full DistProp step.

Run (pin it to one core for a single-threaded comparison):
  taskset -c 0 python benchmarks/distprop_step_parts.py --depth=16 --rounds=5

Ends with one ``RESULT key=value ...`` line.
"""

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from configs import deep_mlp_backprop  # noqa: E402
from configs import deep_mlp_distprop  # noqa: E402
from experiments import common  # noqa: E402
from lagrangian_jax import state as state_lib  # noqa: E402
from lagrangian_jax.data import feed as feed_lib  # noqa: E402
from lagrangian_jax.methods.distprop import terms  # noqa: E402


def mixed_as_matmul(x, t, partner):
  """``terms.mixed`` as ``M @ x``, ``M[(s, c)] = (1 - t) e_c + t e_partner``."""
  c = x.shape[0]
  eye = jnp.eye(c, dtype=x.dtype)
  m = (1 - t)[..., None] * eye[None] + t[..., None] * eye[partner]  # (S, C, C)
  return (m.reshape(-1, c) @ x.reshape(c, -1)).reshape((-1,) + x.shape[1:])


VARIANTS = {  # label -> (config module, --set overrides)
  "distprop": (deep_mlp_distprop, ""),
  "no_mixtures": (deep_mlp_distprop, "distprop.mix_fraction=0.0"),
  "fixed_noise_no_mixtures": (
    deep_mlp_distprop,
    "distprop.mix_fraction=0.0,distprop.noise=fixed",
  ),
  "mixtures_as_matmul": (deep_mlp_distprop, ""),
  "backprop": (deep_mlp_backprop, ""),
}


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--depth", type=int, default=16)
  p.add_argument("--batch_size", type=int, default=128)
  p.add_argument("--rounds", type=int, default=5)
  p.add_argument("--steps", type=int, default=5, help="iterations timed per round")
  p.add_argument(
    "--solver",
    default="extragradient",
    choices=("extragradient", "past_extragradient"),
    help="the DistProp variants' solver (backprop keeps its own)",
  )
  args = p.parse_args(argv)

  exps, states, batches = {}, {}, {}

  def run(label):
    state = states[label]
    start = time.perf_counter()
    for batch in batches[label]:
      state, metrics = exps[label].train_step(state, batch)
    jax.block_until_ready((state, metrics))
    states[label] = state
    return (time.perf_counter() - start) / args.steps

  library_mixed = terms.mixed
  try:
    for label, (module, sets) in VARIANTS.items():
      # the what-if is built and traced (its first call compiles) with the matmul version
      terms.mixed = mixed_as_matmul if label == "mixtures_as_matmul" else library_mixed
      config = module.get_config()
      config.network.depth, config.batch_size = args.depth, args.batch_size
      config.progress_bar = False
      if module is deep_mlp_distprop:
        config.solver = args.solver
      exps[label] = state_lib.build_experiment(
        common.apply_overrides(config, common.parse_settings(sets))
      )
      states[label] = exps[label].initial_state
      batches[label] = [feed_lib.make_batch(exps[label], k) for k in range(args.steps)]
      run(label)
  finally:
    terms.mixed = library_mixed
  times = {label: [] for label in exps}
  for _ in range(args.rounds):
    for label in exps:
      times[label].append(run(label))
  summary = {}
  for label in exps:
    ms = 1e3 * statistics.median(times[label])
    ratio = statistics.median(a / b for a, b in zip(times[label], times["distprop"]))
    print(f"depth={args.depth} {label:>24}: {ms:8.2f} ms/iter  vs distprop {ratio:.3f}")
    summary[f"{label}_ms"], summary[f"{label}_ratio"] = round(ms, 3), round(ratio, 3)
  print("RESULT " + " ".join(f"{k}={v}" for k, v in summary.items()))


if __name__ == "__main__":
  main()
