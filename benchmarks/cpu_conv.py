"""The MNIST network's backprop step as a fraction of a large matmul's FLOP/s, one process.

In ONE process: a 2048 x 2048 f32 matmul's FLOP/s, then the backprop training step of
``configs/backprop.py`` (mnist_cnn, batch 128, Adam; built by
``state.build_experiment``) for every convolution formulation (``config.network.
conv_impl``: xla | patches | rows). Rounds are round-robin: each times the matmul, then
every formulation's step; the fraction

  fraction = (F / t_step) / (2 * 2048^3 / t_matmul)

is taken within the round and the median over rounds reported, so a busy machine hits
numerator and denominator alike. ``F`` is the FLOPs of XLA's cost analysis of the
compiled *xla* step for every formulation: "rows" multiplies on all padded columns
(``W / Wo`` more FLOPs, reported as ``own_gflop``), which must not count as work done.

``--sweep`` reruns this script in a subprocess per XLA flag / environment variant
(``SWEEP``: flags are process-wide, so each variant is its own process with its own
matmul) and prints one line per variant, then one ``RESULT`` line for all.

``--values`` checks that a variant computes the same function: every variant's process
writes, per formulation, the loss and the gradient of the objective at the initial
state on the first batch, and each is compared with the default variant's ``xla`` one
(``max |g - g_ref| / max |g_ref|`` over every leaf, and the loss's relative difference).
A flag that speeds the step up but changes the gradient past float32 rounding (~1e-5 here)
is not a speed-up.

Usage:
  python benchmarks/cpu_conv.py [--rounds 5] [--steps 2] [--impls xla,patches,rows]
  python benchmarks/cpu_conv.py --sweep            # every SWEEP variant, a process each
  python benchmarks/cpu_conv.py --sweep --values   # ... and whether each computes the same
  python benchmarks/cpu_conv.py --sweep --values --variants=default,ynn_dot
  python benchmarks/cpu_conv.py --rounds 1 --steps 1 --batch 8   # smoke run

The last line printed is ``RESULT key=value ...``.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import subprocess
import sys
import time

# Lets `python benchmarks/cpu_conv.py` run from a source checkout.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

MATMUL_N = 2048

# label -> extra environment. Flags that do not exist abort jaxlib (checked by hand for
# 0.10.2: xla_cpu_use_mkl_dnn is gone). The malloc variant keeps freed big buffers in
# the heap: glibc otherwise mmaps every buffer over 32 MB afresh, and the page faults of
# the im2col buffers cost more than their matmul.
_MALLOC = {
  "MALLOC_MMAP_THRESHOLD_": "2000000000",
  "MALLOC_TRIM_THRESHOLD_": "4000000000",
  "MALLOC_TOP_PAD_": "536870912",
}
SWEEP = {
  "default": {},
  "malloc_no_mmap": _MALLOC,
  "thunk_runtime_off": {"XLA_FLAGS": "--xla_cpu_use_thunk_runtime=false"},
  "eigen_single_thread": {"XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false"},
  "xnnpack": {"XLA_FLAGS": "--xla_cpu_use_xnnpack=true"},
  "onednn": {"XLA_FLAGS": "--xla_cpu_use_onednn=true"},
  "onednn_custom_call": {"XLA_FLAGS": "--xla_cpu_experimental_onednn_custom_call=true"},
  "ynn_dot": {"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type=dot"},
}


def _median_time(fn, reps: int) -> float:
  import jax

  times = []
  for _ in range(reps):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def _flops(compiled) -> float:
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  return float(cost["flops"])


def build(conv_impl: str, batch: int):
  """``(experiment, state, batch, compiled FLOPs)`` of the backprop step with ``conv_impl``."""
  from configs import backprop
  from lagrangian_jax import state as state_lib
  from lagrangian_jax.data import feed as feed_lib

  config = backprop.get_config()
  config.network.conv_impl = conv_impl
  config.batch_size = batch
  config.progress_bar = False
  exp = state_lib.build_experiment(config)
  state, b = exp.initial_state, feed_lib.make_batch(exp, 0)
  flops = _flops(exp.train_step.lower(state, b).compile())
  return exp, state, b, flops


def measure(impls, rounds: int, steps: int, batch: int) -> dict:
  """Per formulation: median ms per step, own and reference GFLOP, GFLOP/s, fraction."""
  import jax
  import jax.numpy as jnp

  a = jax.random.normal(jax.random.key(0), (MATMUL_N, MATMUL_N), jnp.float32)
  matmul = jax.jit(lambda a: a @ a)
  matmul(a).block_until_ready()
  runs = {}
  for impl in impls:
    exp, state, b, flops = build(impl, batch)
    state, _ = exp.train_step(state, b)  # compile + warm up
    jax.block_until_ready(state)
    runs[impl] = dict(exp=exp, state=state, batch=b, flops=flops, times=[], fracs=[])
  ref = runs["xla"]["flops"] if "xla" in runs else build("xla", batch)[3]
  mm_rates = []
  for r in range(rounds):
    mm_rate = 2 * MATMUL_N**3 / _median_time(lambda: matmul(a), 3)
    mm_rates.append(mm_rate)
    for impl in impls if r % 2 == 0 else reversed(impls):
      run = runs[impl]
      t0 = time.perf_counter()
      for _ in range(steps):
        run["state"], _ = run["exp"].train_step(run["state"], run["batch"])
      jax.block_until_ready(run["state"])
      sec = (time.perf_counter() - t0) / steps
      run["times"].append(sec)
      run["fracs"].append(ref / sec / mm_rate)
  out = {"matmul_gflops": statistics.median(mm_rates) / 1e9, "ref_gflop": ref / 1e9}
  for impl, run in runs.items():
    sec = statistics.median(run["times"])
    out[impl] = dict(
      ms=sec * 1e3,
      own_gflop=run["flops"] / 1e9,
      gflops=ref / sec / 1e9,
      frac=statistics.median(run["fracs"]),
    )
  return out


def _loss(objective, constants, batch, params):
  return objective(params, constants, batch)[0]


def values(impls, batch: int, path: str) -> None:
  """Writes ``path`` (npz): per formulation, the objective's loss and flat gradient at the
  initial state of seed 0 on the first batch."""
  import jax
  import numpy as np

  def first(tree):  # seed 0
    return jax.tree.map(lambda x: x[0], tree)

  out = {}
  for impl in impls:
    exp, state, b, _ = build(impl, batch)
    constants, b0 = first(state.constants), first(b)
    loss_fn = functools.partial(_loss, exp.method.objective, constants, b0)
    loss, grads = jax.value_and_grad(loss_fn)(first(state.params))
    out[f"{impl}_loss"] = np.asarray(loss, np.float64)
    for i, g in enumerate(jax.tree.leaves(grads)):
      out[f"{impl}_grad_{i}"] = np.asarray(g, np.float64)
  np.savez(path, **out)


def _compare(path: str, ref_path: str, impls) -> str:
  """``impl: loss rel. diff / grad max rel. diff`` against the reference's ``xla``."""
  import numpy as np

  got, ref = np.load(path), np.load(ref_path)
  parts = []
  for impl in impls:
    loss = abs(float(got[f"{impl}_loss"] - ref["xla_loss"])) / abs(float(ref["xla_loss"]))
    grads = [k for k in ref.files if k.startswith("xla_grad_")]
    err = max(
      float(np.max(np.abs(got[k.replace("xla", impl, 1)] - ref[k])) / np.max(np.abs(ref[k])))
      for k in grads
    )
    parts.append(f"{impl}_loss_rel={loss:.1e} {impl}_grad_rel={err:.1e}")
  return " ".join(parts)


def _result_line(out: dict, impls) -> str:
  parts = [f"matmul_gflops={out['matmul_gflops']:.1f}", f"step_gflop={out['ref_gflop']:.2f}"]
  for impl in impls:
    parts += [f"{impl}_ms={out[impl]['ms']:.1f}", f"{impl}_frac={out[impl]['frac']:.3f}"]
  return " ".join(parts)


def sweep(args) -> None:
  """One subprocess per ``SWEEP`` variant; collects their RESULT lines."""
  import tempfile

  lines, folder = {}, tempfile.mkdtemp(prefix="cpu_conv_values_")
  chosen = args.variants.split(",") if args.variants else list(SWEEP)
  unknown = [v for v in chosen if v not in SWEEP]
  if unknown or "default" not in chosen:
    sys.exit(f"--variants: {unknown or 'default'} missing from SWEEP ({', '.join(SWEEP)})")
  for label in ["default"] + [v for v in chosen if v != "default"]:
    env = SWEEP[label]
    cmd = [sys.executable, os.path.abspath(__file__)]
    cmd += ["--rounds", str(args.rounds), "--steps", str(args.steps)]
    cmd += ["--batch", str(args.batch), "--impls", args.impls]
    if args.values:
      cmd += ["--values", os.path.join(folder, f"{label}.npz")]
    proc = subprocess.run(cmd, env={**os.environ, **env}, capture_output=True, text=True)
    result = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    lines[label] = result[-1].removeprefix("RESULT ") if result else f"failed rc={proc.returncode}"
    if args.values and result:
      ref = os.path.join(folder, "default.npz")
      lines[label] += " " + _compare(
        os.path.join(folder, f"{label}.npz"), ref, args.impls.split(",")
      )
    print(f"{label:20s} {lines[label]}", flush=True)
  print("RESULT " + " | ".join(f"{k}: {v}" for k, v in lines.items()))


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--rounds", type=int, default=5)
  ap.add_argument("--steps", type=int, default=2)
  ap.add_argument("--batch", type=int, default=128)
  ap.add_argument("--impls", default="xla,patches,rows")
  ap.add_argument("--sweep", action="store_true", help="a subprocess per SWEEP variant")
  ap.add_argument("--variants", default="", help="with --sweep: these SWEEP labels only")
  ap.add_argument(
    "--values",
    nargs="?",
    const=True,
    default=None,
    help="with --sweep: compare every variant's loss and gradient with the default's; "
    "alone, with a path: write this process's (npz)",
  )
  args = ap.parse_args()
  if args.sweep:
    sweep(args)
    return
  import jax

  impls = args.impls.split(",")
  if isinstance(args.values, str):
    values(impls, args.batch, args.values)
  out = measure(impls, args.rounds, args.steps, args.batch)
  print(
    f"backend={jax.default_backend()} batch={args.batch} rounds={args.rounds} "
    f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}"
  )
  print(f"matmul {MATMUL_N}^2 f32: {out['matmul_gflops']:.1f} GFLOP/s (median)")
  for impl in impls:
    o = out[impl]
    print(
      f"  conv_impl={impl:8s} {o['ms']:8.1f} ms/step  {o['gflops']:6.1f} GFLOP/s  "
      f"fraction {o['frac']:.3f}  (compiled step {o['own_gflop']:.2f} GFLOP, "
      f"counted {out['ref_gflop']:.2f})"
    )
  print("RESULT " + _result_line(out, impls))


if __name__ == "__main__":
  main()
