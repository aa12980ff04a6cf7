"""Overhead of lj.extragradient over its inner descent-ascent transformation.

One extragradient iteration = two jitted ``grad + tx.update + apply_updates`` calls with
``tx = lj.extragradient(lj.descent_ascent(optax.adagrad(.), optax.adagrad(.)))``; it is
compared with two calls of the same jitted step with the bare
``lj.descent_ascent(optax.adagrad(.), optax.adagrad(.))`` (same gradient function).
Measurements are interleaved (ABAB...) and the median of the per-pair ratios is
reported. Secondary figure: the same ratio for the update alone (no gradient).

Run:  python benchmarks/extragradient_overhead.py [--network mnist_cnn|mlp] [--reps 200]

``mnist_cnn`` (default) is the paper's MNIST network; ``mlp`` is a stress case whose
gradient is so cheap that the two extra elementwise passes of the wrapper (read the
anchor, write it) show.
"""

import argparse
import functools
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax
import jax.numpy as jnp
import optax

import lagrangian_jax as lj


def make_problem(key, network="mnist_cnn", batch=128, sizes=(784, 1024, 512, 10)):
  """``params = {'primal': network weights, 'dual': multipliers}`` and a Lagrangian.

  The objective is the network's cross-entropy; the constraint asks the predicted class
  frequencies to stay within 5% of uniform (an inequality with 10 multipliers).
  ``mnist_cnn`` is the paper's MNIST network (1.2M weights, gradient-dominated);
  ``mlp`` a 1.3M-weight MLP whose gradient is cheap next to its update (stress case).
  """
  keys = jax.random.split(key, len(sizes) + 2)
  if network == "mnist_cnn":
    from lagrangian_jax import networks

    net = networks.build_network("mnist_cnn", split=[])
    primal = networks.init_network(net, keys[0])
    x = jax.random.normal(keys[-2], (batch, 28, 28, 1))
    forward = lambda w: networks.forward(net, w, x)
  else:
    primal = {}
    for i, (m, n) in enumerate(zip(sizes[:-1], sizes[1:])):
      primal[f"layer{i}"] = {
        "w": jax.random.normal(keys[i], (m, n)) / jnp.sqrt(m),
        "b": jnp.zeros((n,)),
      }
    x = jax.random.normal(keys[-2], (batch, sizes[0]))

    def forward(w):
      h = x
      layers = [w[f"layer{i}"] for i in range(len(sizes) - 1)]
      for layer in layers[:-1]:
        h = jax.nn.relu(h @ layer["w"] + layer["b"])
      return h @ layers[-1]["w"] + layers[-1]["b"]

  params = {"primal": primal, "dual": {"class_rate": lj.nonnegative(jnp.zeros((10,)))}}
  y = jax.random.randint(keys[-1], (batch,), 0, 10)

  def lagrangian(p):
    logits = forward(p["primal"])
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    rate = jax.nn.softmax(logits).mean(0)
    ineq = jnp.abs(rate - 0.1) - 0.05
    return lj.lagrangian(loss, inequality=ineq, inequality_multipliers=p["dual"]["class_rate"])

  return params, lagrangian


def _parse_args():
  parser = argparse.ArgumentParser()
  parser.add_argument("--reps", type=int, default=None, help="200 (mlp), 20 (mnist_cnn)")
  parser.add_argument("--warmup", type=int, default=None, help="20 (mlp), 3 (mnist_cnn)")
  parser.add_argument("--network", choices=("mnist_cnn", "mlp"), default="mnist_cnn")
  args = parser.parse_args()
  if args.reps is None:
    args.reps = 200 if args.network == "mlp" else 20
  if args.warmup is None:
    args.warmup = 20 if args.network == "mlp" else 3
  return args


def _make_steps(tx, lagrangian):
  """The jitted full step (gradient + update) and the update alone, both donating."""

  @functools.partial(jax.jit, donate_argnums=(0, 1))
  def step(params, state):
    grads = jax.grad(lagrangian)(params)
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  @functools.partial(jax.jit, donate_argnums=(1, 2))
  def update_only(grads, params, state):
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  return step, update_only


def _two_calls(r: dict, fixed_grads, which: str) -> float:
  """Seconds for two calls of the run's ``step`` (or update only); advances its state."""
  p, s = r["params"], r["state"]
  jax.block_until_ready((p, s))
  t0 = time.perf_counter()
  if which == "step":
    p, s = r["step"](p, s)
    p, s = r["step"](p, s)
  else:
    p, s = r["upd"](fixed_grads, p, s)
    p, s = r["upd"](fixed_grads, p, s)
  jax.block_until_ready((p, s))
  dt = time.perf_counter() - t0
  r["params"], r["state"] = p, s
  return dt


def _measure(runs: dict, fixed_grads, which: str, warmup: int, reps: int) -> dict:
  """Medians of extragradient's and descent-ascent's times and of their ratio."""
  for _ in range(warmup):
    _two_calls(runs["eg"], fixed_grads, which)
    _two_calls(runs["da"], fixed_grads, which)
  t_eg, t_da, ratios = [], [], []
  for i in range(reps):
    order = ("eg", "da") if i % 2 == 0 else ("da", "eg")  # ABBA to cancel drift
    t = {name: _two_calls(runs[name], fixed_grads, which) for name in order}
    t_eg.append(t["eg"])
    t_da.append(t["da"])
    ratios.append(t["eg"] / t["da"])
  return dict(
    eg=statistics.median(t_eg),
    da=statistics.median(t_da),
    ratio=statistics.median(ratios),
    q1=statistics.quantiles(ratios, n=4)[0],
    q3=statistics.quantiles(ratios, n=4)[2],
  )


def _print_results(args, results: dict, n_params: int) -> None:
  print(
    f"device: {jax.devices()[0].device_kind}  backend: {jax.default_backend()}  "
    f"params: {n_params:,}  reps: {args.reps}"
  )
  for which, r in results.items():
    print(
      f"[{which:6s}] median per 2 calls: extragradient {r['eg'] * 1e3:.3f} ms, "
      f"descent_ascent {r['da'] * 1e3:.3f} ms, median ratio {r['ratio']:.3f} "
      f"(IQR {r['q1']:.3f}-{r['q3']:.3f})"
    )
  s, u = results["step"], results["update"]
  print(
    f"RESULT network={args.network} extragradient_overhead_ratio={s['ratio']:.3f} target<=1.05 "
    f"met={'yes' if s['ratio'] <= 1.05 else 'no'} update_only_ratio={u['ratio']:.3f} "
    f"params={n_params} backend={jax.default_backend()}"
  )


def main():
  args = _parse_args()
  params, lagrangian = make_problem(jax.random.PRNGKey(0), args.network)
  n_params = sum(x.size for x in jax.tree.leaves(params))
  inner = lambda: lj.descent_ascent(optax.adagrad(0.01), optax.adagrad(0.01), nonnegative=True)
  txs = {"eg": lj.extragradient(inner()), "da": inner()}
  fixed_grads = jax.grad(lagrangian)(params)
  runs = {}
  for name, tx in txs.items():
    step, update_only = _make_steps(tx, lagrangian)
    runs[name] = dict(
      step=step, upd=update_only, params=jax.tree.map(jnp.copy, params), state=tx.init(params)
    )
  results = {
    which: _measure(runs, fixed_grads, which, args.warmup, args.reps)
    for which in ("step", "update")
  }
  for name in runs:  # both executables compiled exactly once
    assert runs[name]["step"]._cache_size() == 1, name
  _print_results(args, results, n_params)


if __name__ == "__main__":
  main()
