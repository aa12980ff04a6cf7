"""Overhead of lj.extragradient over its inner descent-ascent transformation.

One extragradient iteration = two jitted ``grad + tx.update + apply_updates`` calls with
``tx = lj.extragradient(lj.descent_ascent(optax.adagrad(.), optax.adagrad(.)))``; it is
compared with two calls of the same jitted step with the bare
``lj.descent_ascent(optax.adagrad(.), optax.adagrad(.))`` (same gradient function).
Measurements are interleaved (ABAB...) and the median of the per-pair ratios is
reported. Secondary figure: the same ratio for the update alone (no gradient).

Run:  python benchmarks/extragradient_overhead.py [--reps 200]
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


def make_problem(key, batch=128, sizes=(784, 1024, 512, 10)):
  keys = jax.random.split(key, len(sizes) + 2)
  primal = {}
  for i, (m, n) in enumerate(zip(sizes[:-1], sizes[1:])):
    primal[f"layer{i}"] = {"w": jax.random.normal(keys[i], (m, n)) / jnp.sqrt(m),
                           "b": jnp.zeros((n,))}
  dual = {"class_rate": jnp.zeros((sizes[-1],))}
  params = {"primal": primal, "dual": dual}
  x = jax.random.normal(keys[-2], (batch, sizes[0]))
  y = jax.random.randint(keys[-1], (batch,), 0, sizes[-1])

  def lagrangian(p):
    h = x
    layers = [p["primal"][f"layer{i}"] for i in range(len(sizes) - 1)]
    for layer in layers[:-1]:
      h = jax.nn.relu(h @ layer["w"] + layer["b"])
    logits = h @ layers[-1]["w"] + layers[-1]["b"]
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    # constraint: predicted class frequencies stay within 5% of uniform (h <= 0)
    rate = jax.nn.softmax(logits).mean(0)
    ineq = jnp.abs(rate - 1.0 / sizes[-1]) - 0.05
    return lj.lagrangian(loss, inequality=ineq,
                         inequality_multipliers=p["dual"]["class_rate"])
  return params, lagrangian


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--reps", type=int, default=200)
  parser.add_argument("--warmup", type=int, default=20)
  args = parser.parse_args()

  params, lagrangian = make_problem(jax.random.PRNGKey(0))
  n_params = sum(x.size for x in jax.tree.leaves(params))
  inner = lambda: lj.descent_ascent(optax.adagrad(0.01), optax.adagrad(0.01),
                                    nonnegative=True)
  txs = {"eg": lj.extragradient(inner()), "da": inner()}

  def make_steps(tx):
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

  fixed_grads = jax.grad(lagrangian)(params)
  runs = {}
  for name, tx in txs.items():
    step, update_only = make_steps(tx)
    runs[name] = dict(step=step, upd=update_only, params=jax.tree.map(jnp.copy, params),
                      state=tx.init(params))

  def two_calls(name, which):
    r = runs[name]
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

  results = {}
  for which in ("step", "update"):
    for _ in range(args.warmup):
      two_calls("eg", which)
      two_calls("da", which)
    t_eg, t_da, ratios = [], [], []
    for i in range(args.reps):
      order = ("eg", "da") if i % 2 == 0 else ("da", "eg")  # ABBA to cancel drift
      t = {name: two_calls(name, which) for name in order}
      t_eg.append(t["eg"])
      t_da.append(t["da"])
      ratios.append(t["eg"] / t["da"])
    results[which] = dict(eg=statistics.median(t_eg), da=statistics.median(t_da),
                          ratio=statistics.median(ratios),
                          q1=statistics.quantiles(ratios, n=4)[0],
                          q3=statistics.quantiles(ratios, n=4)[2])
  for name in runs:  # both executables compiled exactly once
    assert runs[name]["step"]._cache_size() == 1, name

  print(f"device: {jax.devices()[0].device_kind}  backend: {jax.default_backend()}  "
        f"params: {n_params:,}  reps: {args.reps}")
  for which, r in results.items():
    print(f"[{which:6s}] median per 2 calls: extragradient {r['eg'] * 1e3:.3f} ms, "
          f"descent_ascent {r['da'] * 1e3:.3f} ms, median ratio {r['ratio']:.3f} "
          f"(IQR {r['q1']:.3f}-{r['q3']:.3f})")
  s, u = results["step"], results["update"]
  print(f"RESULT extragradient_overhead_ratio={s['ratio']:.3f} target<=1.05 "
        f"met={'yes' if s['ratio'] <= 1.05 else 'no'} update_only_ratio={u['ratio']:.3f} "
        f"params={n_params} backend={jax.default_backend()}")


if __name__ == "__main__":
  main()
