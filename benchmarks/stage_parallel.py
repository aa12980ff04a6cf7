"""Stage-parallel DistProp: iteration time against depth and stages, bytes between stages.

For each depth of the deep plain MLP (``configs/deep_mlp_*.py``, width 128, batch 128,
every layer a block) and each number of stages, in ONE process on fake CPU devices:
  * backprop (Adam) on one device,
  * sequential DistProp (``mesh.stage=1``: the blocks one after another) on one device,
  * stage-parallel DistProp (``mesh.stage=S``, ``mesh.data=1``) on S devices,
timed round-robin (each round times every variant; ratios are taken within the round and
the median over rounds is reported, so machine noise hits all alike). The bytes that cross
stages per iteration are read from the compiled step's HLO: the result sizes of its
collectives (with ``mesh.data=1`` every collective is between stages); the same HLO at
twice the batch must have the same collectives (nothing grows with the batch).

Two cores cannot show an 8-way speed-up, so a cost model extrapolates: time per
iteration = gradient evaluations x (FLOPs of the slowest stage / device rate + rounds of
boundary messages x (latency + bytes / bandwidth)); the device rate is fitted on the
1-stage run and the model is checked against the measured 2-stage figure (its error is
printed). It then predicts a 64-stage accelerator run against backprop on one device
and GPipe (k stages, m micro-batches: bubble (k-1)/(m+k-1), activations and their
gradients sent both ways) under stated assumptions (``--accel_*`` flags).

Run (the device count and threading flags are set before JAX starts):
  python benchmarks/stage_parallel.py --single_thread
  python benchmarks/stage_parallel.py --processes=2 --depths=16 --rounds=7  # the target
``--single_thread`` sets ``--xla_cpu_multi_thread_eigen=false``, which still leaves a fake
device's operations on several threads (BUILD.md); ``--processes=2`` runs two processes,
each pinned to its own core with one device, so that every variant's operations are
single-threaded and the comparison shows the stages overlapping, not XLA's intra-op
threads (the processes meet at a barrier before each timing). Target: depth 16, 2 stages,
stage-parallel / sequential DistProp <= 0.65. ``--set`` overrides DistProp's config (e.g.
``--set=distprop.noise=fixed,distprop.mix_fraction=0.0``). Ends with one
``RESULT key=value ...`` line.
"""

import argparse
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--depths", default="8,16,32,64")
  p.add_argument("--stages", default="1,2,4,8")
  p.add_argument("--rounds", type=int, default=5)
  p.add_argument("--steps", type=int, default=5, help="iterations timed per round")
  p.add_argument("--batch_size", type=int, default=128)
  p.add_argument("--solver", default="extragradient", help="or past_extragradient")
  p.add_argument("--single_thread", action="store_true")
  p.add_argument(
    "--set",
    default="",
    help="DistProp config overrides for every DistProp variant, e.g. "
    "'distprop.noise=fixed,distprop.mix_fraction=0.0' (experiments.common.parse_settings)",
  )
  p.add_argument(
    "--processes",
    type=int,
    default=0,
    help="N > 0: N processes on 127.0.0.1, process i pinned to core i (one single-threaded "
    "device each); sequential DistProp and backprop on each process's own device, "
    "stage-parallel DistProp with one stage per process",
  )
  p.add_argument("--process_id", type=int, default=-1, help=argparse.SUPPRESS)
  p.add_argument("--coordinator", default="", help=argparse.SUPPRESS)
  p.add_argument("--cpu_bandwidth_gbs", type=float, default=10.0, help="fake devices' copy rate")
  p.add_argument(
    "--collective_latency_us", type=float, default=50.0, help="fake devices' cost per collective"
  )
  p.add_argument("--accel_tflops", type=float, default=100.0, help="assumed sustained rate")
  p.add_argument("--accel_link_gbs", type=float, default=50.0, help="assumed per-link GB/s")
  p.add_argument("--accel_latency_us", type=float, default=10.0, help="assumed per message")
  p.add_argument("--accel_width", type=int, default=4096, help="width of the predicted MLP")
  p.add_argument("--accel_batch", type=int, default=1024)
  p.add_argument("--gpipe_microbatches", type=int, default=8)
  return p.parse_args(argv)


ARGS = parse_args()
_STAGES = [int(s) for s in ARGS.stages.split(",")]
_flags = os.environ.get("XLA_FLAGS", "")
if ARGS.processes and ARGS.process_id < 0:  # the parent: start the pinned processes
  import socket
  import subprocess

  with socket.socket() as _s:
    _s.bind(("127.0.0.1", 0))
    _port = _s.getsockname()[1]
  _children = [
    subprocess.Popen(
      [sys.executable, *sys.argv, f"--process_id={i}", f"--coordinator=127.0.0.1:{_port}"],
      preexec_fn=lambda i=i: os.sched_setaffinity(0, {i % os.cpu_count()}),
      stdout=None if i == 0 else subprocess.DEVNULL,
    )
    for i in range(ARGS.processes)
  ]
  sys.exit(max(c.wait() for c in _children))
if ARGS.processes:  # a child: one device, on its own core
  pass
elif "xla_force_host_platform_device_count" not in _flags:
  _flags += f" --xla_force_host_platform_device_count={max(_STAGES)}"
if ARGS.single_thread and "xla_cpu_multi_thread_eigen" not in _flags:
  _flags += " --xla_cpu_multi_thread_eigen=false"
os.environ["XLA_FLAGS"] = _flags.strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
from jax.experimental import multihost_utils  # noqa: E402

if ARGS.processes:
  jax.distributed.initialize(
    coordinator_address=ARGS.coordinator,
    num_processes=ARGS.processes,
    process_id=ARGS.process_id,
  )

from configs import deep_mlp_backprop  # noqa: E402
from configs import deep_mlp_distprop  # noqa: E402
from experiments import common  # noqa: E402
from lagrangian_jax import errors  # noqa: E402
from lagrangian_jax import hlo  # noqa: E402
from lagrangian_jax import state as state_lib  # noqa: E402
from lagrangian_jax.data import feed as feed_lib  # noqa: E402
from lagrangian_jax.methods import distprop  # noqa: E402


def config_for(kind: str, depth: int, stages: int, batch_size: int):
  module = deep_mlp_backprop if kind == "backprop" else deep_mlp_distprop
  config = module.get_config()
  config.network.depth = depth
  config.batch_size = batch_size
  config.progress_bar = False
  config.mesh.num_devices, config.mesh.data, config.mesh.stage = stages, 1, stages
  if kind != "backprop":
    config.solver = ARGS.solver
    config = common.apply_overrides(config, common.parse_settings(ARGS.set))
  return config


def _local_mesh():
  """This process's own device (sequential runs beside a multi-process stage mesh)."""
  auto = (jax.sharding.AxisType.Auto,) * 2
  return jax.make_mesh((1, 1), ("data", "stage"), devices=jax.local_devices()[:1], axis_types=auto)


class Variant:
  def __init__(self, label, config, dataset, local=False):
    self.label = label
    self.exp = state_lib.build_experiment(config, dataset, _local_mesh() if local else None)
    self.state = self.exp.initial_state
    self.batches = [feed_lib.make_batch(self.exp, k) for k in range(ARGS.steps)]
    self.run()  # compile

  def run(self) -> float:
    if ARGS.processes:
      # the processes start each timing together: otherwise the first variant with a
      # collective also times the other process finishing the variants before it
      multihost_utils.sync_global_devices(self.label)
    start = time.perf_counter()
    for batch in self.batches:
      self.state, metrics = self.exp.train_step(self.state, batch)
    jax.block_until_ready((self.state, metrics))
    return (time.perf_counter() - start) / len(self.batches)

  def hlo(self, batch_size=None) -> str:
    exp = self.exp
    if batch_size is not None:
      config = exp.config.copy_and_resolve_references()
      config.batch_size = batch_size
      exp = state_lib.build_experiment(config, exp.dataset)
    batch = feed_lib.make_batch(exp, 0)
    return exp.train_step.lower(exp.initial_state, batch).compile().as_text()


def collective_latency(mesh, repeats: int = 50) -> float:
  """Seconds per call of a jitted boundary message (a ``ppermute`` of one split's
  prototypes over ``stage``) on ``mesh``: the fixed cost of a collective between
  processes (gloo). Fake devices of one process: ``--collective_latency_us`` (their
  in-process rendezvous cannot be timed alone: with fewer pool threads than devices a
  bare collective program can stall)."""
  if not ARGS.processes:
    return ARGS.collective_latency_us * 1e-6
  stages = mesh.shape["stage"]
  fn = jax.jit(
    jax.shard_map(
      lambda x: jax.lax.ppermute(x, "stage", [(i, (i + 1) % stages) for i in range(stages)]),
      mesh=mesh,
      in_specs=jax.P("stage"),
      out_specs=jax.P("stage"),
    )
  )
  x = jax.device_put(jax.numpy.ones((stages, 2, 10, 128)), jax.NamedSharding(mesh, jax.P("stage")))
  x = fn(x).block_until_ready()
  start = time.perf_counter()
  for _ in range(repeats):
    x = fn(x)
  x.block_until_ready()
  return (time.perf_counter() - start) / repeats


def flops(depth, width, batch, rows, num_classes=10, inputs=784):
  """Forward+backward FLOPs (3 x forward matmuls) per block of one gradient evaluation:
  ``(first, inner, last)`` for DistProp (inner/last on ``rows`` samples) and backprop."""
  first = 3 * 2 * batch * inputs * width
  inner = 3 * 2 * rows * width * width
  last = 3 * 2 * rows * width * num_classes
  backprop = 3 * 2 * batch * (inputs * width + (depth - 1) * width * width + width * num_classes)
  return first, inner, last, backprop


def stage_flops(layout, first, inner, last) -> list[float]:
  """FLOPs of each stage of ``layout`` for one gradient evaluation."""
  per = [0.0] * layout.stages
  for l, owner in enumerate(layout.owner):
    per[owner] += first if l == 0 else (last if l == layout.num_splits else inner)
  return per


def make_variants(depth: int, stages, dataset, local: bool) -> dict:
  """Backprop, sequential DistProp and stage-parallel DistProp on each number of stages."""
  variants = {}
  bp = Variant("backprop", config_for("backprop", depth, 1, ARGS.batch_size), dataset, local)
  variants["backprop"] = bp
  variants["sequential"] = Variant(
    "sequential", config_for("distprop", depth, 1, ARGS.batch_size), bp.exp.dataset, local
  )
  for s in stages:
    try:
      config = config_for("distprop", depth, s, ARGS.batch_size)
      if s == 1:  # the stage-parallel code on one device (stacked layout, one stage)
        config.distprop.block_layout = "stacked"
      variants[f"stage{s}"] = Variant(f"stage{s}", config, bp.exp.dataset, local and s == 1)
    except errors.ConfigError as e:
      print(f"depth {depth} stages {s}: skipped ({e})")
  return variants


def stage_traffic(v) -> dict:
  """What crosses stages in ``v``'s compiled step (and whether it grows with the batch)."""
  text = v.hlo()
  ops = [c for c in hlo.collectives(text) if c.group_size != 1]
  grows = sorted(hlo.collectives(text)) != sorted(hlo.collectives(v.hlo(2 * ARGS.batch_size)))
  return {
    "bytes": hlo.moved_bytes(text),
    "layout": distprop.layout_for(v.exp.config, v.exp.net, v.exp.mesh.shape["stage"]),
    "grows": grows,
    "collectives": len(ops),
    "latency": collective_latency(v.exp.mesh),
  }


def time_depth(depth: int, variants: dict, results: dict, summary: dict) -> dict:
  """Round-robin timings of ``variants``; prints a line each; returns the medians."""
  times = {k: [] for k in variants}
  for _ in range(ARGS.rounds):
    for k, v in variants.items():
      times[k].append(v.run())
  med = {k: statistics.median(t) for k, t in times.items()}
  ratios = {
    k: statistics.median(a / b for a, b in zip(times[k], times["sequential"])) for k in variants
  }
  for k, v in variants.items():
    line = f"depth={depth} {k:>10}: {1e3 * med[k]:8.2f} ms/iter  vs sequential {ratios[k]:.3f}"
    if k.startswith("stage") and v.exp.mesh.shape["stage"] > 1:
      r = results[(depth, k)] = stage_traffic(v)
      line += (
        f"  bytes_between_stages={r['bytes']} in {r['collectives']} collectives"
        f"  grows_with_batch={r['grows']}  layout={r['layout'].kind} owner={r['layout'].owner}"
      )
    print(line, flush=True)
  for k in med:
    summary[f"d{depth}_{k}_ms"] = round(1e3 * med[k], 3)
    summary[f"d{depth}_{k}_ratio"] = round(ratios[k], 3)
  return med


def cost_model(depth, stages, med, results, summary, *, evals, rows, width, cores) -> None:
  """The cost model: the device rate fitted on the stage-parallel code on one device."""
  first, inner, last, _ = flops(depth, width, ARGS.batch_size, rows)
  fit = "stage1" if "stage1" in med else "sequential"
  total = first + (depth - 1) * inner + last
  rate = evals * total / med[fit]
  for s in stages:
    key = f"stage{s}"
    if s == 1 or (depth, key) not in results:
      continue
    r = results[(depth, key)]
    # the slowest stage, but no faster than the machine's cores can run all stages
    busy = max(max(stage_flops(r["layout"], first, inner, last)), total / min(s, cores))
    messages = r["collectives"] * r["latency"] + r["bytes"] / (ARGS.cpu_bandwidth_gbs * 1e9)
    predicted = evals * busy / rate + messages
    err = predicted / med[key] - 1
    print(
      f"depth={depth} {key}: model {1e3 * predicted:.2f} ms vs measured {1e3 * med[key]:.2f} ms "
      f"(error {100 * err:+.0f}%; device rate {rate / 1e9:.2f} GFLOP/s fitted on {fit}, "
      f"{min(s, cores)} of {s} stages at once on {cores} cores, {r['collectives']} "
      f"collectives x {1e6 * r['latency']:.0f} us "
      f"{'measured' if ARGS.processes else '(--collective_latency_us)'})"
    )
    summary[f"d{depth}_{key}_model_error"] = round(err, 3)


def predict_accelerator(summary: dict, *, evals: int, rows: int) -> None:
  """Prediction: a 64-layer MLP on 64 accelerator stages, against backprop and GPipe."""
  k, m = 64, ARGS.gpipe_microbatches
  w, b = ARGS.accel_width, ARGS.accel_batch
  first, inner, last, bp_flops = flops(k, w, b, rows)
  rate = ARGS.accel_tflops * 1e12
  link, lat = ARGS.accel_link_gbs * 1e9, ARGS.accel_latency_us * 1e-6
  proto_bytes = 2 * 10 * w * 4  # mu and rho of one split, float32
  dp = evals * (max(first, inner, last) / rate + 2 * (lat + proto_bytes / link))
  backprop = bp_flops / rate
  act_bytes = (b // m) * w * 2  # one micro-batch's activation, bf16
  gpipe = (m + k - 1) * (bp_flops / (k * m) / rate + 2 * (lat + act_bytes / link))
  print(
    f"predicted 64-layer MLP (width {w}, batch {b}) on 64 stages at {ARGS.accel_tflops:g} "
    f"TFLOP/s, {ARGS.accel_link_gbs:g} GB/s links, {ARGS.accel_latency_us:g} us latency: "
    f"stage-parallel DistProp {1e3 * dp:.3f} ms/iter, backprop on one device "
    f"{1e3 * backprop:.3f} ms, GPipe ({m} micro-batches, bubble "
    f"{(k - 1) / (m + k - 1):.2f}) {1e3 * gpipe:.3f} ms"
  )
  summary["predicted64_distprop_ms"] = round(1e3 * dp, 4)
  summary["predicted64_backprop_ms"] = round(1e3 * backprop, 4)
  summary["predicted64_gpipe_ms"] = round(1e3 * gpipe, 4)


def main():
  depths = [int(d) for d in ARGS.depths.split(",")]
  stages = sorted(set(_STAGES) | {1})
  local = bool(ARGS.processes)  # one-device variants run on each process's own device
  if local:
    stages = [1, ARGS.processes]
  evals = 2 if ARGS.solver == "extragradient" else 1
  cfg = deep_mlp_distprop.get_config()
  rows = cfg.distprop.samples_per_class * 10
  print(
    f"devices={jax.device_count()} processes={jax.process_count()} "
    f"cores_of_this_process={len(os.sched_getaffinity(0))} "
    f"XLA_FLAGS={os.environ['XLA_FLAGS']!r} solver={ARGS.solver}"
  )
  dataset = None
  results, summary = {}, {}
  # cores that run devices at once: each process's own core, or this process's cores
  cores = ARGS.processes or len(os.sched_getaffinity(0))
  for depth in depths:
    variants = make_variants(depth, stages, dataset, local)
    dataset = variants["backprop"].exp.dataset
    med = time_depth(depth, variants, results, summary)
    cost_model(
      depth,
      stages,
      med,
      results,
      summary,
      evals=evals,
      rows=rows,
      width=cfg.network.width,
      cores=cores,
    )
  predict_accelerator(summary, evals=evals, rows=rows)
  for (depth, key), r in sorted(results.items()):
    summary[f"d{depth}_{key}_bytes"] = r["bytes"]
    summary[f"d{depth}_{key}_grows_with_batch"] = r["grows"]
  print("RESULT " + " ".join(f"{k}={v}" for k, v in summary.items()))


if __name__ == "__main__":
  main()
