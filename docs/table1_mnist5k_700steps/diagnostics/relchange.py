"""(Ad-hoc script kept as run, not part of the package; run before the clip became the
default: add grad_clip=0.0 to reproduce.) Per-leaf relative change per step of DistProp (one seed), and validation accuracy, to find
what jumps when accuracy swings.  python /tmp/diag/relchange.py SEED STEPS [key=value ...]"""

import json
import sys

sys.path.insert(0, "/work/main")
import jax
import jax.numpy as jnp
import numpy as np

from experiments import common
from experiments import table1
from lagrangian_jax import evaluators
from lagrangian_jax import state as state_lib
from lagrangian_jax.data import feed as feed_lib

seed, steps = int(sys.argv[1]), int(sys.argv[2])
over = common.parse_settings(sys.argv[3:])
c = table1.entry_config(
  "distprop", over, dataset="mnist_5k", seeds=1, steps=steps, batch_size=128, eval_every=50
)
c.seed = seed
exp = state_lib.build_experiment(c)
evals = evaluators.from_config(exp)
state = exp.initial_state
names = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(state.params)]


@jax.jit
def rel(a, b):
  return jnp.stack(
    [
      jnp.linalg.norm(x - y) / jnp.maximum(jnp.linalg.norm(y), 1e-12)
      for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
    ]
  )


out = open(f"/tmp/diag/rel_seed{seed}.jsonl", "w")
for step in range(steps):
  old = jax.tree.map(jnp.copy, state.params)
  new, metrics = exp.train_step(state, feed_lib.make_batch(exp, step))
  r = np.asarray(rel(new.params, old))
  state = new
  rec = {"step": step + 1, "rel": r.tolist()}
  if (step + 1) % 25 == 0:
    e = evaluators.evaluation_record(evals, state, step + 1)
    rec["val"] = float(np.mean(e["validation_accuracy"]))
    print(
      step + 1,
      rec["val"],
      " ".join(f"{n[-40:]}={v:.1e}" for n, v in zip(names, r) if v > 0.02),
      flush=True,
    )
  out.write(json.dumps(rec) + "\n")
json.dump(names, open("/tmp/diag/names.json", "w"))
