"""Hyper-parameter search on the validation split: a grid or a random search over config keys.

Every trial is a real run (``train.train_and_evaluate``) of the base config with some keys
overridden; trials are ranked by validation accuracy (the test split is never looked at
to choose). Each trial's figures go to ``DIR/trials.jsonl`` (one JSON object per line,
appended as they finish, so an interrupted sweep resumes where it stopped) and
``DIR/trials.csv``; the chosen overrides to ``DIR/best.json``.

Run (a grid of 3 x 2 = 6 trials of 300 steps):
  python -m experiments.sweep --config=configs/extraprop.py --workdir=runs/sweep_extraprop \
    --grid="learning_rates.weights=0.003,0.01,0.03 learning_rates.aux=0.05,0.2" \
    --config.num_steps=300

``--random=K`` draws K trials uniformly from the grid instead (``--seed`` fixes them).
Values are parsed as Python literals when they can be (``0.01``, ``True``, ``'relu'``)
and kept as strings otherwise. The last line is ``BEST validation_accuracy=... key=value
...``.
"""

from __future__ import annotations

import csv
import io
import itertools
import os
import random

from absl import app
from absl import flags
from ml_collections import config_flags

from experiments import common
from lagrangian_jax import errors
from lagrangian_jax import identity
from lagrangian_jax import networks
from lagrangian_jax import paths
from lagrangian_jax import reporting
from lagrangian_jax import state as state_lib
from lagrangian_jax import train

FLAGS = flags.FLAGS

COLUMNS = ("validation_accuracy", "test_accuracy", "final_defect", "seconds")


def parse_grid(grid: str) -> dict[str, list]:
  """``"a.b=1,2 c=x"`` -> ``{"a.b": [1, 2], "c": ["x"]}``.

  Example:
    >>> parse_grid("learning_rates.aux=0.05,0.2 network.split_activation=relu,deferred")
    {'learning_rates.aux': [0.05, 0.2], 'network.split_activation': ['relu', 'deferred']}
  """
  space = {}
  for item in grid.split():
    key, sep, values = item.partition("=")
    if not sep or not values:
      raise errors.ConfigError(f"--grid: expected key=v1,v2,... items, got {item!r}")
    if key in space:
      raise errors.ConfigError(f"--grid: {key} is given twice; give its values once, v1,v2,...")
    space[key] = [common.literal(v) for v in values.split(",")]
  return space


def trials(space: dict[str, list], draw: int = 0, seed: int = 0) -> list[dict]:
  """The grid's points in a fixed order, or ``draw`` of them sampled without repeats."""
  if draw < 0:
    raise errors.ConfigError(f"--random: must be >= 0 (0: every point), got {draw}")
  points = [dict(zip(space, combo)) for combo in itertools.product(*space.values())]
  if draw and draw < len(points):
    points = random.Random(seed).sample(points, draw)
  return points


def trial_name(overrides: dict) -> str:
  return "_".join(f"{k.split('.')[-1]}={v}" for k, v in overrides.items()) or "base"


def check_trial(config, run_dir: str, datasets: dict) -> None:
  """Every check a trial's run makes before its first step, without training: the loop's
  keys, the data set (loaded once per ``config.data``), the network, the method and the
  optimizer (shapes only, ``state.abstract_state``), and the trial's folder."""
  state_lib.check_loop_config(config)
  key = config.data.to_json()
  if key not in datasets:
    datasets[key] = state_lib.load_dataset(config)
  dataset = datasets[key]
  net = networks.from_config(
    config.network, num_classes=dataset.num_classes, input_shape=tuple(dataset.image_shape)
  )
  state_lib.abstract_state(config, net, len(dataset.train.labels))
  common.check_run_dir(config, run_dir)


def _planned(config, workdir: str, space: dict[str, list], draw: int, seed: int) -> list:
  """``[(overrides, trial config, run dir)]``, every one checked before the first trial
  trains: a bad value or key fails in seconds, not after hours of earlier trials."""
  config = config.copy_and_resolve_references()
  config.progress_bar = False
  planned, datasets = [], {}
  for overrides in trials(space, draw, seed):
    trial = common.apply_overrides(config, overrides)
    run_dir = os.path.join(workdir, "trials", trial_name(overrides))
    check_trial(trial, run_dir, datasets)
    planned.append((overrides, trial, run_dir))
  return planned


def _finished_trials(path: str) -> dict:
  """The rows of ``trials.jsonl`` by the fingerprint of the run that gave them
  (``identity.result_fingerprint``; rows written before fingerprints are not reused)."""
  return {row["fingerprint"]: row for row in reporting.read_metrics(path) if "fingerprint" in row}


def run_sweep(config, workdir: str, space: dict[str, list], draw: int = 0, seed: int = 0):
  """Runs (or resumes) the sweep; returns ``(rows, best_row)``.

  A trial is reused from ``trials.jsonl`` only when a run of the same identity and number
  of steps wrote it; a trial folder holding another config's run is refused up front."""
  identity.claim(workdir, "sweep", write=False)
  planned = _planned(config, workdir, space, draw, seed)
  identity.claim(workdir, "sweep")
  done_path = os.path.join(workdir, "trials.jsonl")
  done = _finished_trials(done_path)
  rows = []
  rows_file = reporting.MetricsWriter(done_path)  # appended to, or rewritten on a bucket
  try:
    _run_trials(planned, done, rows, rows_file)
  finally:
    rows_file.close()
  ok = [r for r in rows if not r["error"]]
  best = max(ok, key=lambda r: r["validation_accuracy"]) if ok else None
  table = io.StringIO(newline="")
  writer = csv.writer(table)
  writer.writerow([*space, *COLUMNS, "error"])
  for r in rows:
    writer.writerow([*(r["overrides"][k] for k in space), *(r[c] for c in COLUMNS), r["error"]])
  paths.write_text(os.path.join(workdir, "trials.csv"), table.getvalue())
  paths.write_json(os.path.join(workdir, "best.json"), best)
  return rows, best


def _run_trials(planned: list, done: dict, rows: list, rows_file) -> None:
  """Trains each planned trial not ``done``, appending its row to ``rows`` and
  ``rows_file`` (``trials.jsonl``)."""
  for overrides, trial, run_dir in planned:
    key = identity.result_fingerprint(trial)
    if key in done:
      rows.append(done[key])
      continue
    try:
      summary = train.train_and_evaluate(trial, run_dir)
      row = {"overrides": overrides, **{c: summary[c] for c in COLUMNS}, "error": ""}
    except errors.TrainingError as e:  # a diverged trial is a result, not a crash
      row = {"overrides": overrides, **{c: float("nan") for c in COLUMNS}, "error": str(e)}
    row["fingerprint"] = key
    rows_file.write(row)
    rows.append(row)
    print(
      f"trial {len(rows)}: {trial_name(overrides)} validation_accuracy="
      f"{row['validation_accuracy']:.4f}",
      flush=True,
    )


def main(argv):
  def body():
    _, best = run_sweep(
      FLAGS.config, FLAGS.workdir, parse_grid(FLAGS.grid), FLAGS.random, FLAGS.seed
    )
    if best is None:
      raise errors.TrainingError("every trial failed; see trials.jsonl")
    picked = " ".join(f"{k}={v}" for k, v in best["overrides"].items())
    return f"BEST validation_accuracy={best['validation_accuracy']:.4f} {picked}"

  common.run_main(argv, body)


def define_flags():
  """The command-line flags (defined only when run as a program, so that importing
  this module next to another program's flags does not clash)."""
  flags.DEFINE_string("workdir", None, "Directory for the trials' runs and the results.")
  flags.DEFINE_string("grid", None, "Space-separated key=v1,v2,... items (config keys).")
  flags.DEFINE_integer("random", 0, "Draw this many trials at random from the grid (0: all).")
  flags.DEFINE_integer("seed", 0, "Seed of the random draw.")
  config_flags.DEFINE_config_file("config", None, "The base configuration file.", lock_config=True)
  flags.mark_flags_as_required(["config", "workdir", "grid"])


if __name__ == "__main__":
  define_flags()
  app.run(main, flags_parser=common.parse_flags)
