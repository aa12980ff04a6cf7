r"""How much of the input a trained network's real activations still hold, split by split.

``python -m experiments.split_probes --config=configs/X.py --workdir=RUN [--config.<key>=...]``
reads the newest checkpoint of the finished (or stopped) run in ``RUN`` (the config and
overrides it was trained with, as for a resume: another is refused naming the keys),
passes the training and validation digits through the network, and at the input and at
every split ``l`` fits two probes on the training rows' activations ``h_l`` (standardised
with the training rows' mean and scale):

* linear: multinomial logistic regression, ``softmax(W h + b)``;
* MLP: one hidden ReLU layer of ``--hidden`` units, then the same;

each by ``--probe_steps`` full-batch Adam steps on the softmax cross-entropy (plus
``--weight_decay`` ``|W|^2 / 2`` on the weight matrices), from a fixed key. Each probe's
validation accuracy is what the activation still tells about the label. The nearest-
prototype accuracy of ``distprop.make_split_diagnostics`` asks whether the activation
sits at its class's Gaussian; these ask whether *any* reader could recover the class,
so they bound what the blocks after the split can reach: a block cannot put back what the
blocks before it threw away. For DistProp on the deep MLP (issue 24) the MLP probe of
split 0 is the ceiling of the whole network.

Output: ``split_probes.json`` in ``RUN`` (per split and probe, validation and training
accuracy) and one line, ``PROBES step=N seed=0 input=LIN/MLP split0=LIN/MLP ...``.

Example (a short DistProp run on the deep MLP, then its probes)::

  python -m experiments.main --config=configs/deep_mlp_distprop.py --workdir=runs/dp16 \
      --config.num_steps=700
  python -m experiments.split_probes --config=configs/deep_mlp_distprop.py \
      --workdir=runs/dp16 --config.num_steps=700
"""

from __future__ import annotations

import functools
import os
from typing import NamedTuple

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
from ml_collections import config_flags
import numpy as np
import optax

from experiments import common
from lagrangian_jax import checkpoints
from lagrangian_jax import errors
from lagrangian_jax import identity
from lagrangian_jax import networks
from lagrangian_jax import paths
from lagrangian_jax import state as state_lib
from lagrangian_jax.data import batching

FLAGS = flags.FLAGS


class ProbeResult(NamedTuple):
  validation: float  # accuracy on the held-out rows
  train: float  # accuracy on the rows it was fitted to


def _init_probe(key, dim: int, classes: int, hidden: int) -> dict:
  """A probe's parameters: ``hidden = 0`` linear, else one hidden ReLU layer (He init)."""
  sizes = [dim] + ([hidden] if hidden else []) + [classes]
  keys = jax.random.split(key, len(sizes) - 1)
  return {
    f"w{i}": jax.random.normal(k, (a, b), jnp.float32) * jnp.sqrt(2.0 / a)
    for i, (k, a, b) in enumerate(zip(keys, sizes[:-1], sizes[1:]))
  } | {f"b{i}": jnp.zeros((b,), jnp.float32) for i, b in enumerate(sizes[1:])}


def _logits(params: dict, x):
  n = len(params) // 2
  for i in range(n):
    x = x @ params[f"w{i}"] + params[f"b{i}"]
    if i < n - 1:
      x = jax.nn.relu(x)
  return x


def fit_probe(
  x_train,
  y_train,
  x_val,
  y_val,
  *,
  classes: int,
  hidden: int = 0,
  steps: int = 500,
  learning_rate: float = 1e-2,
  weight_decay: float = 1e-4,
  seed: int = 0,
) -> ProbeResult:
  """Fits a probe (linear: ``hidden = 0``; else one hidden ReLU layer) to ``(x_train,
  y_train)`` by full-batch Adam, the inputs standardised with the training rows' mean and
  scale; returns its accuracies.

  >>> x = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]] * 8)
  >>> y = np.array([0, 1, 1, 0] * 8)  # XOR: a line gets 3 of the 4 points at best
  >>> fit_probe(x, y, x, y, classes=2).validation <= 0.75
  True
  >>> fit_probe(x, y, x, y, classes=2, hidden=16, steps=300, learning_rate=3e-2).validation
  1.0
  """
  x_train = np.asarray(x_train, np.float32).reshape(len(y_train), -1)
  x_val = np.asarray(x_val, np.float32).reshape(len(y_val), -1)
  mean, std = x_train.mean(0), x_train.std(0) + 1e-6
  xt, xv = (x_train - mean) / std, (x_val - mean) / std
  yt, yv = jnp.asarray(y_train, jnp.int32), jnp.asarray(y_val, jnp.int32)
  params = _init_probe(jax.random.key(seed), xt.shape[1], classes, hidden)
  tx = optax.adam(learning_rate)

  def loss(p):
    ce = optax.softmax_cross_entropy_with_integer_labels(_logits(p, xt), yt).mean()
    return ce + 0.5 * weight_decay * sum(jnp.sum(v * v) for k, v in p.items() if k[0] == "w")

  @jax.jit
  def fit(p):
    def step(carry, _):
      p, s = carry
      updates, s = tx.update(jax.grad(loss)(p), s, p)
      return (optax.apply_updates(p, updates), s), None

    (p, _), _ = jax.lax.scan(step, (p, tx.init(p)), None, length=steps)
    return p

  params = fit(params)

  def accuracy(x, y):
    return float(jnp.mean(jnp.argmax(_logits(params, jnp.asarray(x)), -1) == y))

  return ProbeResult(accuracy(xv, yv), accuracy(xt, yt))


def _activations(forward, weights, split) -> tuple[list[np.ndarray], np.ndarray]:
  """The input and every split's real activation of ``split``'s examples, and labels
  (``forward``: the jitted ``networks.segment_output`` of the run's network)."""
  images, labels = batching.get_batch(split, np.arange(len(split.labels)))
  outs = forward(weights, images)
  # the last segment's output is the logits: not a split
  return [np.asarray(images)] + [np.asarray(o) for o in outs[:-1]], np.asarray(labels)


def restore_run(config, workdir: str):
  """``(experiment, state, step)`` of the newest checkpoint in ``workdir``,
  written by ``config`` (refused otherwise, naming the keys that differ)."""
  where = os.path.join(workdir, "checkpoints")
  if not paths.exists(where):
    raise errors.ConfigError(f"--workdir: {where} does not exist: no run to probe")
  identity.check_same_run(workdir, config)
  state_lib.check_loop_config(config)
  exp = state_lib.build_experiment(config)
  state, step = checkpoints.restore_newest(
    checkpoints.manager(workdir, exp.config), exp.initial_state, workdir
  )
  if step is None:
    raise errors.ConfigError(f"--workdir: {where} holds no checkpoint")
  return exp, state, step


def probe_run(config, workdir: str, *, seed_index=0, hidden=256, steps=500) -> dict:
  """Every split's linear and MLP probe of the run in ``workdir`` (module docstring);
  writes ``split_probes.json`` there and returns its dict."""
  exp, state, step = restore_run(config, workdir)
  if not 0 <= seed_index < len(exp.seeds):
    raise errors.ConfigError(
      f"--seed_index: the run has {len(exp.seeds)} seed(s), got {seed_index}"
    )
  params = state_lib.unstack(state_lib.current_params(state), seed_index)
  weights = params["primal"]["weights"]
  forward = jax.jit(functools.partial(networks.segment_output, exp.net))
  train, y_train = _activations(forward, weights, exp.dataset.train)
  val, y_val = _activations(forward, weights, exp.dataset.validation)
  classes = exp.dataset.num_classes
  rows = []
  for l, (a, b) in enumerate(zip(train, val)):
    fits = {
      name: fit_probe(a, y_train, b, y_val, classes=classes, hidden=h, steps=steps)
      for name, h in (("linear", 0), ("mlp", hidden))
    }
    rows.append(
      {
        "where": "input" if l == 0 else f"split{l - 1}",
        **{f"{n}_validation": r.validation for n, r in fits.items()},
        **{f"{n}_train": r.train for n, r in fits.items()},
      }
    )
  report = {
    "workdir": workdir,
    "step": int(step),
    "seed": int(exp.seeds[seed_index]),
    "hidden": hidden,
    "probe_steps": steps,
    "train_examples": int(len(y_train)),
    "validation_examples": int(len(y_val)),
    "rows": rows,
  }
  paths.write_json(os.path.join(workdir, "split_probes.json"), report)
  return report


def probes_line(report: dict) -> str:
  """``PROBES step=.. seed=.. input=LIN/MLP split0=LIN/MLP ...`` (validation accuracies)."""
  cells = " ".join(
    f"{r['where']}={r['linear_validation']:.4f}/{r['mlp_validation']:.4f}" for r in report["rows"]
  )
  return f"PROBES step={report['step']} seed={report['seed']} {cells}"


def define_flags() -> None:
  config_flags.DEFINE_config_file("config", None, "The run's config file.", lock_config=True)
  flags.DEFINE_string("workdir", None, "The run's directory (its checkpoints).")
  flags.DEFINE_integer("seed_index", 0, "Which of the run's seeds to probe.")
  flags.DEFINE_integer("hidden", 256, "Hidden units of the MLP probe.")
  flags.DEFINE_integer("probe_steps", 500, "Full-batch Adam steps per probe.")
  flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  def body():
    common.check_at_least_one(hidden=FLAGS.hidden, probe_steps=FLAGS.probe_steps)
    report = probe_run(
      FLAGS.config,
      FLAGS.workdir,
      seed_index=FLAGS.seed_index,
      hidden=FLAGS.hidden,
      steps=FLAGS.probe_steps,
    )
    return probes_line(report)

  common.run_main(argv, body)


if __name__ == "__main__":
  define_flags()
  app.run(main, flags_parser=common.parse_flags)
