"""Time one full backprop training step of mnist_cnn per conv/pool formulation.

XLA's convolution and reduce_window *gradients* are slow on CPU, so
``lagrangian_jax.networks`` offers an im2col ("patches") convolution and a
reshape/slice max pool.  This script measures, in one process, a jitted
step (forward + cross-entropy + backward + optax.sgd update) at batch 128
for every combination, and reports seconds per step (median after warm-up)
and the ratio to the nn.Conv + nn.max_pool baseline.

Usage:
    python benchmarks/conv_formulations.py [--steps 10] [--batch 128]

The last line printed is ``RESULT {json}`` for machine parsing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

# Allow `python benchmarks/conv_formulations.py` from a source checkout.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp
import optax  # noqa: E402

from lagrangian_jax.networks import (  # noqa: E402
    build_network,
    forward,
    init_network,
    resolve_conv_impl,
    resolve_pool_impl,
)

CONV_IMPLS = ("xla", "patches_slices", "patches_separable", "patches_lax")
POOL_IMPLS = ("xla", "fast")


def make_step(net, opt):
    """Jitted SGD step on (params, opt_state, x, y)."""

    def loss_fn(params, x, y):
        logits = forward(net, params, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    @jax.jit
    def step(params, opt_state, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return step


def time_variant(conv_impl: str, pool_impl: str, x, y, steps: int, warmup: int) -> tuple[float, float]:
    """Return (compile+first step seconds, median seconds per step)."""
    net = build_network("mnist_cnn", conv_impl=conv_impl, pool_impl=pool_impl)
    params = init_network(net, jax.random.key(0))
    opt = optax.sgd(0.01)
    opt_state = opt.init(params)
    step = make_step(net, opt)
    t0 = time.perf_counter()
    params, opt_state, loss = step(params, opt_state, x, y)
    jax.block_until_ready(loss)
    first = time.perf_counter() - t0
    for _ in range(warmup - 1):
        params, opt_state, loss = step(params, opt_state, x, y)
    jax.block_until_ready(params)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        params, opt_state, loss = step(params, opt_state, x, y)
        jax.block_until_ready((params, loss))
        times.append(time.perf_counter() - t0)
    return first, statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--batch", type=int, default=128)
    args = ap.parse_args()

    kx, ky = jax.random.split(jax.random.key(42))
    x = jax.random.normal(kx, (args.batch, 28, 28, 1), jnp.float32)
    y = jax.random.randint(ky, (args.batch,), 0, 10)

    backend = jax.default_backend()
    print(f"backend={backend} devices={jax.devices()} batch={args.batch} steps={args.steps} (median)")
    results = {}
    for conv in CONV_IMPLS:
        for pool in POOL_IMPLS:
            first, sec = time_variant(conv, pool, x, y, args.steps, args.warmup)
            results[f"{conv}+{pool}"] = sec
            print(f"  conv={conv:15s} pool={pool:5s}  {sec:.4f} s/step   (compile+first {first:.1f} s)", flush=True)

    base = results["xla+xla"]
    print("ratio to xla+xla (lower is faster):")
    for k, v in results.items():
        print(f"  {k:22s} {v / base:.3f}   speed-up x{base / v:.2f}")
    best = min(results, key=results.get)
    auto = f"{resolve_conv_impl('auto')}+{resolve_pool_impl('auto')}"
    print(f"fastest: {best}; 'auto' on {backend} resolves to: {auto}")
    summary = {
        "backend": backend,
        "batch": args.batch,
        "sec_per_step": {k: round(v, 4) for k, v in results.items()},
        "fastest": best,
        "auto": auto,
    }
    print("RESULT " + json.dumps(summary, sort_keys=True))


if __name__ == "__main__":
    main()
