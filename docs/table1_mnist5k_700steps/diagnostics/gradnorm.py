"""Gradient norms of DistProp per seed and parameter group at a checkpoint of the 5-seed
MNIST-5k Table 1 row *without* the clip (how the figures of configs/default.py's docstring
were measured; an ad-hoc script kept as run, not part of the package).

Made with: the row rerun with ``--set=grad_clip=0.0`` into a workdir, its step-400
checkpoint copied alone into /tmp/dp400/checkpoints/400 (with config.json), then
``python gradnorm.py``.
"""

import sys

sys.path.insert(0, "/work/main")
import jax
import jax.numpy as jnp
import numpy as np

from experiments import table1
from lagrangian_jax import checkpoints
from lagrangian_jax import state as state_lib
from lagrangian_jax.data import feed as feed_lib

c = table1.entry_config(
  "distprop",
  {"grad_clip": 0.0},
  dataset="mnist_5k",
  seeds=5,
  steps=700,
  batch_size=128,
  eval_every=100,
)
exp = state_lib.build_experiment(c)
ckpt = checkpoints.manager("/tmp/dp400", c)
state, step = checkpoints.restore_newest(ckpt, exp.initial_state, "/tmp/dp400")
print("step", step)
norms = []
for s in range(400, 440):
  b = feed_lib.make_batch(exp, s)
  per = []
  for k in range(5):
    p = state_lib.unstack(state.params, k)
    cst = state_lib.unstack(state.constants, k)
    bk = jax.tree.map(lambda x, k=k: x[k], b)
    g = jax.grad(lambda q, cst=cst, bk=bk: exp.method.objective(q, cst, bk)[0])(p)
    per.append([float(jnp.linalg.norm(x)) for x in jax.tree.leaves(g)])
  norms.append(per)
N = np.array(norms)  # (batches, seeds, leaves)
tot = np.sqrt((N**2).sum(-1))
print("global norm per batch (rows) x seed:\n", np.round(tot, 2))
print("median per leaf", np.round(np.median(N, axis=(0, 1)), 4))
print("max per leaf", np.round(N.max(axis=(0, 1)), 4))
