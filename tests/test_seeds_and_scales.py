"""Seeds in one program, per-example rows at their natural scale, every group moves."""

import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lagrangian_jax import methods
from lagrangian_jax import rows as rows_lib
from lagrangian_jax import solvers
from lagrangian_jax import state as state_lib
from lagrangian_jax.data import feed as feed_lib
from lagrangian_jax.methods import base
from tests.conftest import ROOT
from tests.conftest import shrunken_config

CONSTRAINED = [
  m
  for m in methods.METHODS
  if m in ("penalty", "gda", "augmented_lagrangian", "extraprop", "distprop")
]


def _run(config, steps):
  exp = state_lib.build_experiment(config)
  state = exp.initial_state
  for step in range(steps):
    state, _ = exp.train_step(state, feed_lib.make_batch(exp, step))
  return exp, state


@pytest.mark.parametrize("method", ["distprop", "extraprop"])
@pytest.mark.slow
def test_seed_k_of_a_vmapped_run_starts_as_a_run_of_seed_k(method):
  """Close after 5 steps (float32 rounding), not bit for bit, and only at the start:
  training amplifies the batched program's rounding (state.py: reproducibility)."""
  _, stacked = _run(shrunken_config(method, num_seeds=3, seed=4), 5)
  assert jax.tree.leaves(stacked.params)[0].shape[0] == 3
  for k in (0, 2):
    _, alone = _run(shrunken_config(method, seed=4 + k), 5)
    for a, b in zip(jax.tree.leaves(state_lib.unstack(stacked, k)), jax.tree.leaves(alone)):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b)[0], rtol=1e-5, atol=1e-6)
  # different seeds: different initialisation, noise and batches
  w = stacked.params["primal"]["weights"][0]["Dense_0"]["kernel"]
  assert not np.allclose(w[0], w[1])


def _documents():
  """Every docstring-bearing source and page a user reads: the package, the programs,
  the configs, BUILD.md, README.md and docs/."""
  for top in ("lagrangian_jax", "experiments", "configs", "benchmarks", "docs"):
    for folder, _, files in os.walk(os.path.join(ROOT, top)):
      yield from (os.path.join(folder, f) for f in files if f.endswith((".py", ".md")))
  yield from (os.path.join(ROOT, f) for f in ("BUILD.md", "README.md"))


def test_no_page_claims_a_seed_among_others_equals_that_seed_alone():
  """Issue 20 defect 11: train.py said "seed k of a run equals a run of config.seed + k
  alone"; at the main job's 700 steps it does not (0.963 alone, 0.973 beside seed 1). The
  claims that hold are tested here: the same command bit for bit (below), a seed alone
  and among others the same for the first steps only (above)."""
  claim = re.compile(r"equals? (a|the) run of .{0,40}?\balone\b")
  found = []
  for path in _documents():
    with open(path, encoding="utf-8") as f:
      text = " ".join(f.read().replace("``", "").split())
    found += [f"{os.path.relpath(path, ROOT)}: {m.group(0)}" for m in claim.finditer(text)]
  assert not found, found


@pytest.mark.slow
def test_the_same_command_reproduces_bit_for_bit():
  """What the docs claim bitwise: the same config and num_seeds, run twice."""
  config = shrunken_config("distprop", num_seeds=2, seed=4)
  (_, a), (_, b) = _run(config, 5), _run(config, 5)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_vmapped_seeds_compile_once():
  exp = state_lib.build_experiment(shrunken_config("distprop", num_seeds=2))
  state = exp.initial_state
  for step in range(3):
    state, _ = exp.train_step(state, feed_lib.make_batch(exp, step))
  assert exp.train_step._cache_size() == 1


@pytest.mark.parametrize(
  "method, multipliers",
  [("extraprop", None), pytest.param("distprop", "example", marks=pytest.mark.slow)],
)
def test_a_rows_gradient_and_step_do_not_depend_on_the_batch_size(method, multipliers):
  """Example 0's rows: the same gradient and the same GDA step in batches of 4 and 64."""
  config = shrunken_config(method, solver="gda", **{"data.max_train_examples": 250})
  if multipliers:
    config.distprop.multipliers = multipliers
  # The scale of a row, not DistProp's clip: a clip of the global gradient norm scales
  # every row's step by the whole batch's norm, whatever the reduction.
  config.grad_clip = 0.0
  # a few epochs first: at initialisation every defect and multiplier is 0
  exp, state = _run(config, 25)
  state = state_lib.unstack(state)
  tx = exp.tx
  grads_of, steps_of = {}, {}
  for size in (4, 64):
    idx = np.arange(size)
    images, labels = exp.dataset.train.images[idx], exp.dataset.train.labels[idx]
    batch = base.Batch(jnp.asarray(images), jnp.asarray(labels), jnp.asarray(idx))
    params = rows_lib.gather(state.params, exp.placement.tables.params, idx)
    opt = rows_lib.gather(state.opt_state, exp.placement.tables.opt_state, idx)

    def grad_fn(p, batch=batch):
      return jax.grad(lambda q: exp.method.objective(q, state.constants, batch)[0])(p)

    new, _ = solvers.solver_step(tx, grad_fn, params, opt)
    flags = exp.placement.tables.params
    grads_of[size] = [g[0] for g, f in zip(jax.tree.leaves(grad_fn(params)), flags) if f]
    steps_of[size] = [
      n[0] - p[0] for n, p, f in zip(jax.tree.leaves(new), jax.tree.leaves(params), flags) if f
    ]
  assert len(grads_of[4]) == sum(exp.placement.tables.params) > 0

  # A batch of 4 and one of 64 run different matmul kernels, so an entry that is the
  # difference of larger terms carries their float32 rounding: on an AMD EPYC, 1.4e-6
  # absolute in rows whose entries reach 1-3 (atol 1e-7 failed on 1-3 of 64 entries).
  # The bug this test guards against, a row's scale tied to the batch, is a factor of 16.
  def close(a, b):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * float(np.max(np.abs(b))))

  for a, b in zip(grads_of[4], grads_of[64]):
    assert float(jnp.max(jnp.abs(a))) > 0
    close(a, b)
  for a, b in zip(steps_of[4], steps_of[64]):
    close(a, b)


# The floor: 1e-3 relative change in 20 steps (the assertion message prints the slowest
# group when it fails; measured: penalty's first block 5.2e-3, distprop's prototypes 6.4e-3,
# gda's first block 7.4e-3, the others above 8e-2). 250 training digits, so 20 batches of
# 50 visit each row 4 times: the lifted methods start at a feasible point (every defect
# and multiplier 0), so the first block cannot move before a row is visited again.
FLOOR = 1e-3


@pytest.mark.parametrize("method", CONSTRAINED)
def test_every_table_and_weight_group_moves_in_20_steps(method):
  # The same rates for every method (ExtraProp's): the check is for scale mistakes, not
  # for a method's tuned rates (GDA's, 10x smaller, keep its first block near 2e-5).
  config = shrunken_config(
    method,
    **{"data.max_train_examples": 250, "learning_rates.weights": 0.03, "learning_rates.dual": 0.05},
  )
  exp = state_lib.build_experiment(config)
  before = state_lib.unstack(exp.initial_state).params
  touched = np.unique(
    np.concatenate([np.asarray(feed_lib.make_batch(exp, s).indices[0]) for s in range(20)])
  )
  _, state = _run(config, 20)
  after = state_lib.unstack(state).params
  moved = {}
  leaves = jax.tree_util.tree_leaves_with_path(before)
  for (path, b), a, is_table in zip(leaves, jax.tree.leaves(after), exp.placement.tables.params):
    b, a = np.asarray(b), np.asarray(a)
    if is_table:  # only the rows the 20 batches visited can move
      b, a = b[touched], a[touched]
    scale = max(np.linalg.norm(b), np.linalg.norm(a), 1e-12)
    moved[jax.tree_util.keystr(path)] = np.linalg.norm(a - b) / scale
  slow = {k: v for k, v in moved.items() if not v > FLOOR}
  assert not slow, (slow, min(moved.values()))
  print(method, "slowest group:", min(moved, key=moved.get), min(moved.values()))


@pytest.mark.parametrize("clip", [30.0, 0.0])
def test_distprops_default_clip_bounds_the_step(clip):
  """configs/default.py's ``grad_clip``: gradients of norm 10x apart above the clip give the
  same step (both scaled to the clip's norm); without a clip they do not."""
  config = shrunken_config("distprop", grad_clip=clip)
  assert shrunken_config("distprop").grad_clip == 30.0  # the default's value reaches the step
  exp = state_lib.build_experiment(config)
  state = state_lib.unstack(exp.initial_state)
  ones = jax.tree.map(jnp.ones_like, state.params)
  unit = 1.0 / float(optax.global_norm(ones))
  steps = []
  # global norms 50 and 500, above the clip; per entry small enough (~0.2 and ~2 here)
  # that Adagrad's own normalisation, g / sqrt(0.1 + g^2), does not equalise them
  for norm in (50.0, 500.0):
    new, _ = solvers.solver_step(
      exp.tx,
      lambda p, c=norm * unit: jax.tree.map(lambda o: c * o, ones),
      state.params,
      state.opt_state,
    )
    steps.append(jax.tree.map(lambda n, p: n - p, new, state.params))
  same = all(np.allclose(a, b, rtol=1e-5, atol=1e-8) for a, b in zip(*map(jax.tree.leaves, steps)))
  assert same == (clip > 0)
