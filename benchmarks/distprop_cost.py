"""DistProp's step against backprop's: time per iteration, XLA's FLOPs, efficiency.

For the MNIST network (``configs/default.py`` vs ``configs/backprop.py``) and the deep MLP
(``configs/deep_mlp_distprop.py`` vs ``configs/deep_mlp_backprop.py``) at each depth:
backprop, DistProp extragradient and DistProp past extragradient, all in ONE process,
timed round-robin (each round times every variant; medians over rounds) so machine noise
hits all alike. Each step is compiled once (``train_step.lower(state, batch).compile()``)
and that executable is both timed and measured: its FLOPs are XLA's cost analysis of it.

DistProp's *efficiency* is its FLOP rate over backprop's on the same network,
``(F_dp / t_dp) / (F_bp / t_bp)``: 1.0 means its time is exactly its FLOPs' share of
backprop's time (the time ratio is the median of the per-round ratios).

``--devices=8``: the data-parallel step's per-device FLOPs (compile only, no timing),
computed in a child process with ``XLA_FLAGS=--xla_force_host_platform_device_count=8``:
each network's step on a 1-device mesh and on ``mesh.data=8``, for the MNIST network, the
deep MLP and ``configs/imagenet_distprop.py`` (AlexNet on in-memory zeros of
``--imagenet_size`` pixels, batch ``--imagenet_batch``: shapes only matter).

Run (the issue's figures; pin it to one core for a single-threaded comparison):
  python benchmarks/distprop_cost.py --networks=mnist,deep --depths=16,64 --rounds=5
  python benchmarks/distprop_cost.py --devices=8 --depths=16
  python benchmarks/distprop_cost.py --networks=deep --layouts=sequential,stacked

On a shared machine, time CPU work instead of wall time, on one core, one thread:
  taskset -c 1 env XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1" \
    python benchmarks/distprop_cost.py --networks=deep --depths=16 --clock=process

``--gradients=by_block,whole`` times DistProp's gradient block by block (the default)
against ``jax.value_and_grad`` of the whole objective (``config.distprop.gradient``).

``--layouts`` times DistProp in several ``config.distprop.block_layout`` side by side
(same process, same rounds). Each variant's op count (:func:`op_count`, the instructions
the compiled step runs outside fusions) is printed with its FLOPs: on CPU a step of many
small ops pays a dispatch per op, which its FLOPs do not show.

Ends with one ``RESULT key=value ...`` line.
"""

import argparse
import os
import re
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import numpy as np  # noqa: E402

from configs import backprop as backprop_config  # noqa: E402
from configs import deep_mlp_backprop  # noqa: E402
from configs import deep_mlp_distprop  # noqa: E402
from configs import default as distprop_config  # noqa: E402
from configs import imagenet_backprop  # noqa: E402
from configs import imagenet_distprop  # noqa: E402
from lagrangian_jax import state as state_lib  # noqa: E402
from lagrangian_jax.data import base as data_base  # noqa: E402
from lagrangian_jax.data import feed as feed_lib  # noqa: E402
from lagrangian_jax.methods.distprop import options as distprop_options  # noqa: E402

METHODS = {  # label -> (which config of the pair, solver override)
  "bp": (0, None),
  "eg": (1, None),
  "peg": (1, "past_extragradient"),
}


def configs_of(network: str, depth: int):
  """``(backprop config, DistProp config)`` of a network."""
  if network == "mnist":
    return backprop_config.get_config(), distprop_config.get_config()
  if network == "imagenet":
    pair = imagenet_backprop.get_config(), imagenet_distprop.get_config()
    for config in pair:  # the in-memory zeros of fake_imagenet
      config.data.pipeline, config.data.augment = "memory", "none"
    return pair
  pair = deep_mlp_backprop.get_config(), deep_mlp_distprop.get_config()
  for config in pair:
    config.network.depth = depth
  return pair


def flops_of(compiled) -> float:
  """XLA's FLOP count of a compiled executable (per device: the partitioned program);
  ``cost_analysis()`` is a dict, or a list of one dict per program in older jax."""
  cost = compiled.cost_analysis()
  costs = cost if isinstance(cost, (list, tuple)) else [cost]
  return float(sum(c.get("flops", 0.0) for c in costs))


def compile_step(config, dataset=None, steps: int = 1):
  """``(compiled step, state, batches)`` of ``config``."""
  config.progress_bar = False
  exp = state_lib.build_experiment(config, dataset)
  batches = [feed_lib.make_batch(exp, k) for k in range(steps)]
  compiled = exp.train_step.lower(exp.initial_state, batches[0]).compile()
  return compiled, exp.initial_state, batches


def variant_configs(network, depth, batch_size, layouts=("auto",), gradients=("by_block",)):
  """``{label: config}`` of the variants on one network: backprop, and each DistProp
  solver in each ``config.distprop.block_layout`` of ``layouts`` (label ``eg`` for
  ``"auto"``, else ``eg_<layout>``) and each ``config.distprop.gradient`` of
  ``gradients`` (``_<gradient>`` appended but for ``"by_block"``)."""
  out = {}
  for label, (which, solver) in METHODS.items():
    for layout in layouts if which else ("auto",):
      for gradient in gradients if which else ("by_block",):
        config = configs_of(network, depth)[which]
        config.batch_size = batch_size
        if solver:
          config.solver = solver
        if which:
          config.distprop.block_layout = layout
          config.distprop.gradient = gradient
        name = label if layout == "auto" else f"{label}_{layout}"
        out[name if gradient == "by_block" else f"{name}_{gradient}"] = config
  return out


def op_count(compiled) -> int:
  """How many instructions the compiled step runs outside fusions (its computations but
  the fused ones): on CPU each is (about) one thunk, dispatched one after another, so at
  a few microseconds each their number bounds a step of small ops from below."""
  count = 0
  for comp in re.split(r"\n(?=\S)", compiled.as_text()):
    head = comp.split("\n", 1)[0]
    if head.startswith("HloModule") or "fused" in head or "fusion" in head.split("(")[0]:
      continue
    count += len(re.findall(r"^\s+\S+ = \S+ [\w-]+\(", comp, re.M))
  return count


def time_network(network, depth, args):
  """The three variants of one network: ms per iteration (median), FLOPs and ratios."""
  runs = {}
  variants = variant_configs(network, depth, args.batch_size, args.layouts, args.gradients)
  for label, config in variants.items():
    compiled, state, batches = compile_step(config, steps=args.steps)
    runs[label] = {"step": compiled, "state": state, "batches": batches, "times": []}
    runs[label]["flops"] = flops_of(compiled)
    runs[label]["ops"] = op_count(compiled)
    _time(runs[label])  # warm up

  clock = CLOCKS[args.clock]
  for r in range(args.rounds):
    for label in list(runs) if r % 2 == 0 else list(reversed(runs)):
      runs[label]["times"].append(_time(runs[label], clock))
  bp = runs["bp"]
  out = {
    "bp_ms": 1e3 * statistics.median(bp["times"]),
    "bp_gflop": bp["flops"] / 1e9,
    "bp_ops": bp["ops"],
  }
  for label in (lab for lab in runs if lab != "bp"):
    run = runs[label]
    ratio = statistics.median(a / b for a, b in zip(run["times"], bp["times"]))
    flop_ratio = run["flops"] / bp["flops"]
    out[f"{label}_ms"] = 1e3 * statistics.median(run["times"])
    out[f"{label}_gflop"] = run["flops"] / 1e9
    out[f"{label}_ratio"] = ratio
    out[f"{label}_flop_ratio"] = flop_ratio
    out[f"{label}_efficiency"] = flop_ratio / ratio
    out[f"{label}_ops"] = run["ops"]
  return out


CLOCKS = {"wall": time.perf_counter, "process": time.process_time}


def _time(run, clock=time.perf_counter) -> float:
  state = run["state"]
  start = clock()
  for batch in run["batches"]:
    state, metrics = run["step"](state, batch)
  jax.block_until_ready((state, metrics))
  run["state"] = state
  return (clock() - start) / len(run["batches"])


def fake_imagenet(size: int, n: int) -> data_base.Dataset:
  """Zeros of ImageNet's shapes: the compiled step depends on shapes only."""
  images = np.zeros((n, size, size, 3), np.float32)
  split = data_base.Split(images, np.arange(n, dtype=np.int32) % 1000)
  return data_base.Dataset("fake_imagenet", split, split, split, 1000, (size, size, 3))


def per_device_flops(args):
  """The child of ``--devices=D``: each step's FLOPs on 1 device and per device on D."""
  out = {}
  for network, depth in networks_of(args):
    name = network + (str(depth) if depth else "")
    for label, which in (("bp", 0), ("dp", 1)):
      for n_dev in (1, args.devices):
        config, dataset = configs_of(network, depth)[which], None
        config.batch_size = args.batch_size
        if network == "imagenet":
          config.batch_size = args.imagenet_batch
          dataset = fake_imagenet(args.imagenet_size, args.imagenet_batch)
        config.mesh.num_devices, config.mesh.data, config.mesh.stage = n_dev, n_dev, 1
        start = time.perf_counter()
        compiled, _, _ = compile_step(config, dataset)
        gflop = flops_of(compiled) / 1e9
        out[f"{name}_{label}_gflop_{n_dev}dev"] = gflop
        print(
          f"{name:>10} {label}: {gflop:10.3f} GFLOP per device on {n_dev} "
          f"(built + compiled in {time.perf_counter() - start:.0f} s)",
          flush=True,
        )
      one, many = out[f"{name}_{label}_gflop_1dev"], out[f"{name}_{label}_gflop_{n_dev}dev"]
      out[f"{name}_{label}_over_ideal"] = many / (one / args.devices)
      print(
        f"{name:>10} {label}: per device / (1-device / {args.devices}) = "
        f"{out[f'{name}_{label}_over_ideal']:.2f}"
      )
  return out


def networks_of(args):
  """``(network, depth)`` of each network asked for."""
  nets = [(n, 0) for n in args.networks if n in ("mnist", "imagenet")]
  return nets + [("deep", d) for d in args.depths if "deep" in args.networks]


def result_line(summary) -> str:
  return "RESULT " + " ".join(
    f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in summary.items()
  )


def parse(argv):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument(
    "--networks",
    default="",
    help="comma-separated: mnist, deep, imagenet (--devices only); default mnist,deep "
    "(and imagenet with --devices)",
  )
  p.add_argument("--depths", default="16,64", help="the deep MLP's depths")
  p.add_argument(
    "--layouts",
    default="auto",
    help="comma-separated config.distprop.block_layout values timed side by side "
    "(auto, sequential, stacked, slots); labels eg_<layout> but for auto",
  )
  p.add_argument(
    "--gradients",
    default="by_block",
    help="comma-separated config.distprop.gradient values timed side by side (by_block, "
    "whole); labels eg, eg_whole, ...",
  )
  p.add_argument("--batch_size", type=int, default=128)
  p.add_argument("--rounds", type=int, default=5)
  p.add_argument("--steps", type=int, default=3, help="iterations timed per round")
  p.add_argument(
    "--clock",
    default="wall",
    choices=tuple(CLOCKS),
    help="process: this process's CPU time (all its threads), not wall time: on a shared "
    "machine, pinned to one core and single-threaded (module docstring), other jobs' "
    "load then stretches neither variant",
  )
  p.add_argument("--devices", type=int, default=0, help="> 0: per-device FLOPs on D")
  p.add_argument("--imagenet_size", type=int, default=224)
  p.add_argument("--imagenet_batch", type=int, default=256)
  p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  args.depths = [int(d) for d in args.depths.split(",") if d]
  args.layouts = tuple(x for x in args.layouts.split(",") if x)
  args.gradients = tuple(x for x in args.gradients.split(",") if x)
  for gradient in args.gradients:
    if gradient not in distprop_options.GRADIENTS:
      p.error(f"--gradients: {gradient!r} is not one of {', '.join(distprop_options.GRADIENTS)}")
  default = "mnist,deep,imagenet" if args.devices else "mnist,deep"
  args.networks = [n for n in (args.networks or default).split(",") if n]
  for layout in args.layouts:
    if layout not in distprop_options.BLOCK_LAYOUTS:
      p.error(f"--layouts: {layout!r} is not one of {', '.join(distprop_options.BLOCK_LAYOUTS)}")
  for network in args.networks:
    if network not in ("mnist", "deep", "imagenet"):
      p.error(f"--networks: {network!r} is not one of mnist, deep, imagenet")
  return args


def main(argv=None):
  argv = sys.argv[1:] if argv is None else list(argv)
  args = parse(argv)
  if args.devices and not args.child:
    env = dict(os.environ)
    env["XLA_FLAGS"] = (
      env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={args.devices}"
    )
    # the child's lines are relayed as they come (a compile can take minutes), through
    # this process's sys.stdout (so that pytest's capsys sees them)
    child = subprocess.Popen(
      [sys.executable, os.path.abspath(__file__), *argv, "--child"],
      env=env,
      stdout=subprocess.PIPE,  # stderr: this process's
      text=True,
    )
    for line in child.stdout:
      sys.stdout.write(line)
      sys.stdout.flush()
    if child.wait():
      raise SystemExit(child.returncode)
    return
  if args.devices:
    print(result_line(per_device_flops(args)))
    return
  summary = {}
  for network, depth in networks_of(args):
    name = network + (str(depth) if depth else "")
    out = time_network(network, depth, args)
    print(
      f"{name:>8}: backprop {out['bp_ms']:8.2f} ms {out['bp_gflop']:8.3f} GFLOP "
      f"{out['bp_ops']} ops\n"
      + "\n".join(
        f"{'':>8}  {lab:<14} {out[f'{lab}_ms']:8.2f} ms {out[f'{lab}_gflop']:8.3f} GFLOP "
        f"{out[f'{lab}_ops']:6d} ops time x{out[f'{lab}_ratio']:.2f} "
        f"FLOPs x{out[f'{lab}_flop_ratio']:.2f} efficiency {out[f'{lab}_efficiency']:.2f}"
        for lab in (k[: -len("_ms")] for k in out if k.endswith("_ms") and k != "bp_ms")
      ),
      flush=True,
    )
    summary.update({f"{name}_{k}": v for k, v in out.items()})
  print(result_line(summary))


if __name__ == "__main__":
  main()
