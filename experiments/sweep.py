"""Hyper-parameter search on the validation split: a grid, a random or a model-based search
over config keys.

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

A model-based search (optuna's TPE, ``--sampler=tpe``; its GP sampler ``gp`` needs torch;
``random`` for a baseline) takes ``--space`` instead of ``--grid``, typed ranges
(:func:`parse_space`), and ``--trials=N``:

  python -m experiments.sweep --config=configs/distprop.py --workdir=runs/search_distprop \
    --space="learning_rates.weights=log:1e-4:1e-1 distprop.margin=0.0:1.0 \
    network.split_activation=cat:relu,deferred" --trials=20 --config.num_steps=300

Trial ``i`` is asked of a study rebuilt from trials ``0 .. i-1`` with a sampler seeded by
``(--seed, i)`` (:func:`ask`), so its point depends on the seed and the earlier results
only: a rerun replays the finished trials from ``trials.jsonl`` (nothing is trained again)
and continues; a larger ``--trials`` extends the search. No study database is kept.
``DIR/search.json`` records the space, sampler, seed and base config; a rerun with another
one is refused, except for keys added to the configs since (a study that spans sessions
survives a new key whose default keeps the old behaviour). A search's whole record is
``owner.json``, ``search.json`` and ``trials.jsonl``: copied into another folder (a
repository, another machine), the search resumes there. The search is told a diverged
trial's value as 0 (the worst accuracy) so it steers away from it; its row keeps NaN.
``experiments.robustness`` draws the report.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import itertools
import math
import os
import random
from typing import NamedTuple

from absl import app
from absl import flags
from ml_collections import config_flags
import numpy as np

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


class Range(NamedTuple):
  """One key's searched range: ``kind`` is ``log`` / ``float`` (``low .. high``), ``int``
  (``low .. high`` inclusive) or ``cat`` (``choices``)."""

  kind: str
  low: float = 0.0
  high: float = 0.0
  choices: tuple = ()


RANGE_FORMS = "log:LOW:HIGH, LOW:HIGH (uniform), int:LOW:HIGH or cat:V1,V2,..."


def parse_range(key: str, text: str) -> Range:
  """One ``--space`` item's range (forms in :data:`RANGE_FORMS`).

  >>> parse_range("a", "log:1e-4:1e-1"), parse_range("a", "0:1")
  (Range(kind='log', low=0.0001, high=0.1, choices=()), Range(kind='float', low=0.0, high=1.0, choices=()))
  >>> parse_range("a", "int:1:8").high, parse_range("a", "cat:relu,deferred").choices
  (8, ('relu', 'deferred'))
  """

  def bad(why: str):
    return errors.ConfigError(f"--space: {key}={text}: {why}")

  kind, _, rest = text.partition(":")
  if kind == "cat":
    choices = tuple(common.literal(v) for v in rest.split(",") if v)
    if len(choices) < 2 or len(set(map(repr, choices))) < len(choices):
      raise bad("cat: needs two or more distinct values, cat:V1,V2,...")
    return Range("cat", choices=choices)
  if kind not in ("log", "int", "float"):
    kind, rest = "float", text
  bounds = rest.split(":")
  try:
    low, high = (int(b) if kind == "int" else float(b) for b in bounds)
  except ValueError:
    raise bad(f"expected {RANGE_FORMS}") from None
  if not (math.isfinite(low) and math.isfinite(high) and low < high):
    raise bad("needs finite LOW < HIGH")
  if kind == "log" and low <= 0:
    raise bad("a log range needs LOW > 0")
  return Range(kind, low, high)


def parse_space(text: str) -> dict[str, Range]:
  """``"a.b=log:1e-4:1e-1 c=cat:x,y"`` -> ``{key: Range}`` (forms in :data:`RANGE_FORMS`).

  Example:
    >>> space = parse_space("learning_rates.weights=log:1e-4:1e-1 distprop.margin=0.0:1.0")
    >>> {k: r.kind for k, r in space.items()}
    {'learning_rates.weights': 'log', 'distprop.margin': 'float'}
  """
  space = {}
  for item in text.split():
    key, sep, spec = item.partition("=")
    if not sep or not key or not spec:
      raise errors.ConfigError(f"--space: expected key=RANGE items ({RANGE_FORMS}), got {item!r}")
    if key in space:
      raise errors.ConfigError(f"--space: {key} is given twice")
    space[key] = parse_range(key, spec)
  if not space:
    raise errors.ConfigError("--space: no key=RANGE item")
  return space


def range_spec(r: Range) -> str:
  """The ``--space`` spelling of ``r`` (``parse_range(key, range_spec(r)) == r``).

  >>> range_spec(Range("log", 1e-4, 0.1)), range_spec(Range("cat", choices=(1, "relu")))
  ('log:0.0001:0.1', 'cat:1,relu')
  """
  if r.kind == "cat":
    return "cat:" + ",".join(map(str, r.choices))
  return f"{'' if r.kind == 'float' else r.kind + ':'}{r.low!r}:{r.high!r}"


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
  _check_config(config, datasets)
  common.check_run_dir(config, run_dir)


def _check_config(config, datasets: dict) -> None:
  """:func:`check_trial` without the folder."""
  state_lib.check_loop_config(config)
  key = config.data.to_json()
  if key not in datasets:
    datasets[key] = state_lib.load_dataset(config)
  dataset = datasets[key]
  net = networks.from_config(
    config.network, num_classes=dataset.num_classes, input_shape=tuple(dataset.image_shape)
  )
  state_lib.abstract_state(config, net, len(dataset.train.labels))


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
  return rows, _write_results(workdir, list(space), rows)


def _write_results(workdir: str, keys: list, rows: list) -> dict | None:
  """``trials.csv`` and ``best.json`` (the row of the best validation accuracy, None when
  every trial failed); returns that row."""
  ok = [r for r in rows if not r["error"]]
  best = max(ok, key=lambda r: r["validation_accuracy"]) if ok else None
  table = io.StringIO(newline="")
  writer = csv.writer(table)
  writer.writerow([*keys, *COLUMNS, "error"])
  for r in rows:
    writer.writerow([*(r["overrides"][k] for k in keys), *(r[c] for c in COLUMNS), r["error"]])
  paths.write_text(os.path.join(workdir, "trials.csv"), table.getvalue())
  paths.write_json(os.path.join(workdir, "best.json"), best)
  return best


def _train_row(trial, run_dir: str, overrides: dict, key: str) -> dict:
  """One trial trained: its ``trials.jsonl`` row (a diverged trial is a result, not a
  crash: NaN figures and the error)."""
  try:
    summary = train.train_and_evaluate(trial, run_dir)
    row = {"overrides": overrides, **{c: summary[c] for c in COLUMNS}, "error": ""}
  except errors.TrainingError as e:
    row = {"overrides": overrides, **{c: float("nan") for c in COLUMNS}, "error": str(e)}
  row["fingerprint"] = key
  return row


def _run_trials(planned: list, done: dict, rows: list, rows_file) -> None:
  """Trains each planned trial not ``done``, appending its row to ``rows`` and
  ``rows_file`` (``trials.jsonl``)."""
  for overrides, trial, run_dir in planned:
    key = identity.result_fingerprint(trial)
    if key in done:
      rows.append(done[key])
      continue
    row = _train_row(trial, run_dir, overrides, key)
    rows_file.write(row)
    rows.append(row)
    print(
      f"trial {len(rows)}: {trial_name(overrides)} validation_accuracy="
      f"{row['validation_accuracy']:.4f}",
      flush=True,
    )


# ----------------------------------------------------------------------------------
# The model-based search
# ----------------------------------------------------------------------------------

SAMPLERS = ("tpe", "gp", "random")


def _optuna():
  """optuna, quiet (it logs every trial at INFO); a ConfigError when it is not installed."""
  try:
    import optuna
  except ImportError:
    raise errors.ConfigError(
      "--space: the model-based search needs optuna: pip install 'lagrangian_jax[search]'"
    ) from None
  optuna.logging.set_verbosity(optuna.logging.WARNING)
  return optuna


def make_sampler(name: str, seed: int, startup_trials: int = 10):
  """optuna's sampler ``name`` (:data:`SAMPLERS`) seeded by ``seed``; TPE and GP draw their
  first ``startup_trials`` points at random."""
  if name not in SAMPLERS:
    raise errors.ConfigError(f"--sampler: must be one of {', '.join(SAMPLERS)}, got {name!r}")
  samplers = _optuna().samplers
  if name == "tpe":
    return samplers.TPESampler(seed=seed, n_startup_trials=startup_trials)
  if name == "gp":
    if importlib.util.find_spec("torch") is None:
      raise errors.ConfigError("--sampler: gp (optuna's GPSampler) needs torch; use tpe")
    return samplers.GPSampler(seed=seed, n_startup_trials=startup_trials)
  return samplers.RandomSampler(seed=seed)


def distribution(r: Range):
  """``r`` as an optuna distribution."""
  d = _optuna().distributions
  if r.kind == "cat":
    return d.CategoricalDistribution(r.choices)
  if r.kind == "int":
    return d.IntDistribution(r.low, r.high)
  return d.FloatDistribution(r.low, r.high, log=r.kind == "log")


def search_value(row: dict) -> float:
  """What the search is told of a trial: its validation accuracy, 0 for a diverged one."""
  return 0.0 if row["error"] else float(row["validation_accuracy"])


def ask(
  space: dict[str, Range],
  history: list[dict],
  index: int,
  seed: int = 0,
  sampler: str = "tpe",
  startup_trials: int = 10,
) -> dict:
  """Trial ``index``'s overrides: asked of a study rebuilt from ``history`` (the rows of
  trials ``0 .. index-1``) with the sampler seeded by ``(seed, index)``. The point depends
  on those alone (not on the order of the space's items), so a resumed search asks what an
  uninterrupted one would.

  >>> space = parse_space("a=log:1e-3:1 b=cat:x,y")
  >>> first = ask(space, [], 0, seed=3)
  >>> first == ask(space, [], 0, seed=3), 1e-3 <= first["a"] <= 1, first["b"] in ("x", "y")
  (True, True, True)
  """
  optuna = _optuna()
  # sorted: the sampler draws keys in this order, and a space is the same whatever the
  # order its items were given in (search.json compares them as such)
  dists = {k: distribution(space[k]) for k in sorted(space)}
  trial_seed = int(np.random.SeedSequence([seed, index]).generate_state(1)[0])
  study = optuna.create_study(
    direction="maximize", sampler=make_sampler(sampler, trial_seed, startup_trials)
  )
  for row in history:
    params = {k: row["overrides"][k] for k in dists}
    study.add_trial(
      optuna.trial.create_trial(params=params, distributions=dists, value=search_value(row))
    )
  params = study.ask(dists).params
  return {k: params[k] for k in space}


def _check_space(config, space: dict[str, Range], datasets: dict) -> None:
  """Every key exists and takes its range's ends (and every choice); the configs at the
  ranges' low and high ends pass :func:`check_trial`'s checks. Before any training."""
  for key, r in space.items():
    for value in r.choices or (r.low, r.high):
      common.apply_overrides(config, {key: value})
  for end in (0, -1):
    corner = {k: r.choices[end] if r.choices else (r.low, r.high)[end] for k, r in space.items()}
    _check_config(common.apply_overrides(config, corner), datasets)


def _claim_search(workdir: str, search: dict) -> bool:
  """Writes ``search.json``; refuses a folder holding a search over another space,
  sampler, seed or config (its trials would be replayed against the wrong study). Returns
  whether the folder's search recorded its config (a search written before configs were
  recorded is replayed by fingerprint only).

  Keys only one side has are not compared: a key added to the configs since (whose default
  keeps the old behaviour) does not throw away a study that spans sessions."""
  path = os.path.join(workdir, "search.json")
  recorded = False
  if paths.exists(path):
    old = paths.read_json(path)
    for field in ("space", "sampler", "seed", "startup_trials"):
      if old.get(field) != search[field]:
        raise errors.ConfigError(
          f"--{field}: {workdir} holds a search with {field} {old.get(field)!r}, not "
          f"{search[field]!r}; use another --workdir"
        )
    recorded = "config" in old
    changed = identity.differences(old["config"], search["config"]) if recorded else []
    if changed:
      raise errors.ConfigError(
        f"--config: {workdir} holds a search of another config ({'; '.join(changed)}); "
        "use another --workdir"
      )
  paths.write_json(path, search)
  return recorded


def _replayed(row: dict | None, overrides: dict, key: str, recorded: bool) -> bool:
  """Whether a ``trials.jsonl`` row is trial's result: the same run (fingerprint), or, when
  the folder's search recorded its config (checked by :func:`_claim_search`), the same
  index asked the same point."""
  if row is None:
    return False
  return row.get("fingerprint") == key or (recorded and row.get("overrides") == overrides)


def run_search(
  config,
  workdir: str,
  space: dict[str, Range],
  num_trials: int,
  seed: int = 0,
  sampler: str = "tpe",
  startup_trials: int = 10,
):
  """Runs (or resumes, or extends) a model-based search of ``num_trials`` trials; returns
  ``(rows, best_row)``. Each row has the trial's ``index``; trial folders are
  ``trials/<index>_<fingerprint>``."""
  common.check_at_least_one(trials=num_trials)
  make_sampler(sampler, seed, startup_trials)  # the name and the library, before anything
  identity.claim(workdir, "sweep", write=False)
  config = config.copy_and_resolve_references()
  config.progress_bar = False
  datasets = {}
  _check_space(config, space, datasets)
  identity.claim(workdir, "sweep")
  recorded = _claim_search(
    workdir,
    {
      "space": {k: range_spec(r) for k, r in space.items()},
      "sampler": sampler,
      "seed": seed,
      "startup_trials": startup_trials,
      "trials": num_trials,
      "config": {**identity.identity(config), "num_steps": config.num_steps},
    },
  )
  done_path = os.path.join(workdir, "trials.jsonl")
  done = {row["index"]: row for row in reporting.read_metrics(done_path) if "index" in row}
  rows = []
  rows_file = reporting.MetricsWriter(done_path)
  try:
    for index in range(num_trials):
      overrides = ask(space, rows, index, seed, sampler, startup_trials)
      trial = common.apply_overrides(config, overrides)
      key = identity.result_fingerprint(trial)
      if _replayed(done.get(index), overrides, key, recorded):
        rows.append(done[index])
        continue
      run_dir = os.path.join(workdir, "trials", f"{index:04d}_{key[:10]}")
      check_trial(trial, run_dir, datasets)
      row = {"index": index, **_train_row(trial, run_dir, overrides, key)}
      rows_file.write(row)
      rows.append(row)
      shown = " ".join(
        f"{k.split('.')[-1]}={v:.4g}" if isinstance(v, float) else f"{k.split('.')[-1]}={v}"
        for k, v in overrides.items()
      )
      print(
        f"trial {index}: {shown} validation_accuracy={row['validation_accuracy']:.4f}", flush=True
      )
  finally:
    rows_file.close()
  return rows, _write_results(workdir, list(space), rows)


def main(argv):
  def body():
    if (FLAGS.grid is None) == (FLAGS.space is None):
      raise errors.ConfigError("--grid or --space: give one of them")
    if FLAGS.space is None:
      _, best = run_sweep(
        FLAGS.config, FLAGS.workdir, parse_grid(FLAGS.grid), FLAGS.random, FLAGS.seed
      )
    else:
      _, best = run_search(
        FLAGS.config,
        FLAGS.workdir,
        parse_space(FLAGS.space),
        FLAGS.trials,
        FLAGS.seed,
        FLAGS.sampler,
        FLAGS.startup_trials,
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
  define_search_flags()
  config_flags.DEFINE_config_file("config", None, "The base configuration file.", lock_config=True)
  flags.mark_flags_as_required(["config", "workdir"])


def define_search_flags(space_default: str | None = None, trials_default: int = 20) -> None:
  """The model-based search's flags (and ``--seed``), shared with ``experiments.robustness``."""
  flags.DEFINE_string(
    "space", space_default, f"Space-separated key=RANGE items, RANGE: {RANGE_FORMS}."
  )
  flags.DEFINE_integer("trials", trials_default, "Trials of the model-based search (--space).")
  flags.DEFINE_enum("sampler", "tpe", SAMPLERS, "optuna sampler of the search (gp needs torch).")
  flags.DEFINE_integer("startup_trials", 10, "Trials drawn at random before TPE / GP model.")
  flags.DEFINE_integer("seed", 0, "Seed of the random draw or of the search's sampler.")


if __name__ == "__main__":
  define_flags()
  app.run(main, flags_parser=common.parse_flags)
