"""The robustness study (the paper's section 5.1, Fig. 4): a model-based search over a
method's hyper-parameters, then the ranges that keep accuracy near the best.

The search is ``experiments.sweep``'s (:func:`experiments.sweep.run_search`: optuna's TPE
on the validation split, resumable). Of its ``N`` finished trials, those kept are

  ``K = {t : acc_t >= (1 - within) * max_s acc_s}``   (``within = 0.1``: the paper's "10%")

with ``acc`` the validation accuracy (the test split is never read). For each
hyper-parameter the report gives the range its kept trials span, ``[min_K v, max_K v]``,
beside the searched range ``[lo, hi]``, and the share of the searched range that is kept:
``(log max_K v - log min_K v) / (log hi - log lo)`` for a log range (the decades kept over
the decades searched), the same without logs for a uniform one, and the kept choices over
all the choices for a categorical one. A share near 1 says accuracy stays within 10% of the
best over the whole searched range (the paper's claim for DistProp's lifting
hyper-parameters); as the paper warns, the keys interact, so a range is a heuristic.

Files in ``--workdir`` (beside the search's ``trials.jsonl``, ``trials.csv``, ``best.json``
and ``search.json``): ``robustness.png`` (parallel coordinates: one axis per
hyper-parameter, log axes for log ranges, the kept trials coloured by accuracy, the others
light grey, each axis's kept range shaded), ``robustness.md`` and ``robustness.json`` (the
range table). The last line printed is

  ``ROBUSTNESS trials=N kept=K best=0.9800 threshold=0.8820 mean_share=0.74 key=lo:hi ...``

(a categorical key: ``key=v1,v2``), one ``key=value`` token each, for a script to split.

Default spaces (:data:`SPACES`, ``--space`` overrides): the authors' search for the paper's
Fig. 4 (``sweep_hyper.yaml`` of ``manuel-delverme/constrained_nn`` at ``6ef47ee``, the
MNIST version beside the paper's plots; W&B's ``log_uniform`` bounds are natural logs,
converted here): weights' rate ``e^-6 .. e^-1``, the states' (``aux``) ``e^-6.30 .. e^-1.20``
(``1.83e-3 .. 0.3``), the multipliers' (``dual``) ``e^-20 .. e^-1``, DistProp's band
``margin`` ``e^-4 .. 1``, batch 128 or 256, Gaussian samples per class 1, 2, 4 or 8. Ours
adds 32 to the samples (this library's default, so that the default lies in the space);
every other key stays at the config's value (``configs/distprop.py``: clip 30, augmented
coefficient 3). The paper gives no space for ExtraProp (Fig. 4 is DistProp's only):
ExtraProp's is the same three rates and batch sizes and eq. 3's band on its constraint,
``lifted.band``, over the authors' ``tabular_margin`` range ``e^-4 .. 1``.

Run (the study; 100 trials at Table 1's 700 steps):
  python -m experiments.robustness --config=configs/distprop.py \\
    --workdir=runs/robustness_distprop --trials=100

``--report_only`` draws the report from the workdir's finished trials without training.
A rerun replays the finished trials and continues (``experiments.sweep``).
"""

from __future__ import annotations

import math
import os

from absl import app
from absl import flags
from ml_collections import config_flags
import numpy as np

from experiments import common
from experiments import sweep
from lagrangian_jax import errors
from lagrangian_jax import paths
from lagrangian_jax import reporting

FLAGS = flags.FLAGS

# the authors' Fig. 4 search (module docstring), in --space's syntax
_RATES = (
  "learning_rates.weights=log:0.002479:0.3679 learning_rates.aux=log:0.001832:0.3 "
  "learning_rates.dual=log:2.061e-09:0.3679 batch_size=cat:128,256"
)
SPACES = {
  "distprop": _RATES + " distprop.margin=log:0.01832:1.0 distprop.samples_per_class=cat:1,2,4,8,32",
  "extraprop": _RATES + " lifted.band=log:0.01832:1.0",
}


def default_space(method: str) -> str:
  """The method's default ``--space`` (:data:`SPACES`)."""
  if method not in SPACES:
    raise errors.ConfigError(
      f"--space: no default space for method {method!r} (defaults: {', '.join(SPACES)}); "
      "give --space"
    )
  return SPACES[method]


def kept_trials(rows: list[dict], within: float = 0.1) -> tuple[float, float, list[dict]]:
  """``(best, threshold, kept)``: the best validation accuracy, ``(1 - within) * best``
  and the finished trials at or above it (diverged trials are never kept).

  >>> rows = [{"validation_accuracy": a, "error": ""} for a in (0.9, 0.85, 0.5)]
  >>> best, threshold, kept = kept_trials(rows)
  >>> best, round(threshold, 2), [r["validation_accuracy"] for r in kept]
  (0.9, 0.81, [0.9, 0.85])
  """
  if not 0 < within < 1:
    raise errors.ConfigError(f"--within: must be in (0, 1), got {within}")
  ok = [r for r in rows if not r["error"] and math.isfinite(r["validation_accuracy"])]
  if not ok:
    raise errors.TrainingError("every trial failed; see trials.jsonl")
  best = max(r["validation_accuracy"] for r in ok)
  threshold = (1 - within) * best
  return best, threshold, [r for r in ok if r["validation_accuracy"] >= threshold]


def position(r: sweep.Range, value) -> float:
  """Where ``value`` lies on its axis, 0 (``low``, the first choice) .. 1 (``high``, the
  last choice); log ranges in log space.

  >>> position(sweep.Range("log", 1e-4, 1e-1), 1e-2), position(sweep.Range("cat", choices=(1, 2, 4)), 2)
  (0.6666666666666666, 0.5)
  """
  if r.kind == "cat":
    return r.choices.index(value) / (len(r.choices) - 1)
  if r.kind == "log":
    return (math.log(value) - math.log(r.low)) / (math.log(r.high) - math.log(r.low))
  return (value - r.low) / (r.high - r.low)


def range_row(key: str, r: sweep.Range, values: list) -> dict:
  """One line of the range table: the searched and the kept range of ``key`` and the
  share kept (module docstring).

  >>> row = range_row("lr", sweep.Range("log", 1e-4, 1.0), [1e-3, 1e-1])
  >>> row["kept"], round(row["share"], 3)
  ('0.001:0.1', 0.5)
  >>> range_row("b", sweep.Range("cat", choices=(128, 256)), [128])["kept"]
  '128'
  """
  if r.kind == "cat":
    kept = [c for c in r.choices if c in values]
    return {
      "key": key,
      "kind": "cat",
      "searched": ",".join(map(str, r.choices)),
      "kept": ",".join(map(str, kept)),
      "share": len(kept) / len(r.choices),
    }
  lo, hi = min(values), max(values)
  return {
    "key": key,
    "kind": r.kind,
    "searched": f"{r.low:.4g}:{r.high:.4g}",
    "kept": f"{lo:.4g}:{hi:.4g}",
    "kept_low": lo,
    "kept_high": hi,
    "share": position(r, hi) - position(r, lo),
  }


def report(space: dict[str, sweep.Range], rows: list[dict], within: float = 0.1) -> dict:
  """The range table of a finished search's ``rows`` (module docstring)."""
  best, threshold, kept = kept_trials(rows, within)
  table = [range_row(k, r, [t["overrides"][k] for t in kept]) for k, r in space.items()]
  return {
    "trials": len(rows),
    "diverged": sum(bool(r["error"]) for r in rows),
    "kept": len(kept),
    "within": within,
    "best_validation_accuracy": best,
    "threshold": threshold,
    "mean_share": float(np.mean([row["share"] for row in table])),
    "ranges": table,
  }


def markdown(rep: dict) -> str:
  """The report's table in markdown."""
  lines = [
    f"{rep['kept']} of {rep['trials']} trials ({rep['diverged']} diverged) within "
    f"{rep['within']:.0%} of the best validation accuracy {rep['best_validation_accuracy']:.4f} "
    f"(at or above {rep['threshold']:.4f}).",
    "",
    "| hyper-parameter | scale | searched | kept (within the band) | share kept |",
    "|---|---|---|---|---|",
  ]
  for row in rep["ranges"]:
    lines.append(
      f"| `{row['key']}` | {row['kind']} | {row['searched']} | {row['kept']} | {row['share']:.2f} |"
    )
  lines += ["", f"Mean share kept: {rep['mean_share']:.2f} (1: the whole searched range)."]
  return "\n".join(lines) + "\n"


def summary_line(rep: dict) -> str:
  """The last line printed: ``ROBUSTNESS trials=.. kept=.. best=.. ... key=lo:hi ...``."""
  head = (
    f"ROBUSTNESS trials={rep['trials']} kept={rep['kept']} "
    f"best={rep['best_validation_accuracy']:.4f} threshold={rep['threshold']:.4f} "
    f"mean_share={rep['mean_share']:.2f}"
  )
  return " ".join([head, *(f"{row['key']}={row['kept']}" for row in rep["ranges"])])


def _axis_labels(r: sweep.Range) -> list[tuple[float, str]]:
  """``[(position, label)]`` of an axis's ticks: every choice, or three values."""
  if r.kind == "cat":
    return [(position(r, c), str(c)) for c in r.choices]
  if r.kind == "log":
    values = [r.low, math.sqrt(r.low * r.high), r.high]
  else:
    values = [r.low, (r.low + r.high) / 2, r.high]
  return [(position(r, v), f"{v:.3g}") for v in values]


def plot(space: dict[str, sweep.Range], rows: list[dict], rep: dict, path: str) -> str:
  """``robustness.png``: parallel coordinates (module docstring); returns ``path``."""
  plt = common.pyplot()
  keys = list(space)
  ok = [r for r in rows if not r["error"] and math.isfinite(r["validation_accuracy"])]
  accs = [r["validation_accuracy"] for r in ok]
  acc_range = sweep.Range("float", min(accs), max(accs) + 1e-12)
  fig, ax = plt.subplots(figsize=(1.8 * (len(keys) + 1) + 1, 4.5))
  cmap, norm = (
    plt.get_cmap("viridis"),
    plt.Normalize(rep["threshold"], rep["best_validation_accuracy"]),
  )
  xs = np.arange(len(keys) + 1)
  for r in sorted(ok, key=lambda r: r["validation_accuracy"]):  # best drawn last, on top
    ys = [position(space[k], r["overrides"][k]) for k in keys]
    ys.append(position(acc_range, r["validation_accuracy"]))
    kept = r["validation_accuracy"] >= rep["threshold"]
    style = {"color": cmap(norm(r["validation_accuracy"])), "lw": 1.2, "alpha": 0.8, "zorder": 2}
    ax.plot(xs, ys, **(style if kept else {"color": "0.85", "lw": 0.8, "zorder": 1}))
  for x, row in enumerate(rep["ranges"]):
    ax.axvline(x, color="k", lw=0.8)
    r = space[row["key"]]
    if r.kind == "cat":
      kept_pos = [position(r, c) for c in r.choices if str(c) in row["kept"].split(",")]
    else:
      kept_pos = [position(r, row["kept_low"]), position(r, row["kept_high"])]
    ax.add_patch(
      plt.Rectangle(
        (x - 0.06, min(kept_pos) - 0.01), 0.12, np.ptp(kept_pos) + 0.02, color="C1", alpha=0.3
      )
    )
    for y, label in _axis_labels(r):
      ax.text(x + 0.04, y, label, fontsize=7, va="center")
  ax.axvline(len(keys), color="k", lw=0.8)
  for y, label in _axis_labels(acc_range):
    ax.text(len(keys) + 0.04, y, label, fontsize=7, va="center")
  ax.set_xticks(xs, [*(k.split(".")[-1] for k in keys), "validation\naccuracy"], fontsize=8)
  ax.set_yticks([])
  ax.set_xlim(-0.2, len(keys) + 0.5)
  ax.set_ylim(-0.05, 1.05)
  fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label="validation accuracy")
  ax.set_title(
    f"{rep['kept']} of {rep['trials']} trials within {rep['within']:.0%} of the best "
    "(grey: the others; shaded: the kept range)",
    fontsize=9,
  )
  return common.save_figure(fig, path)


def load_search(workdir: str) -> tuple[dict[str, sweep.Range], list[dict]]:
  """A search's space (``search.json``) and its finished trials (``trials.jsonl``, the
  last row of each trial index below the search's ``trials``), without training."""
  path = os.path.join(workdir, "search.json")
  if not paths.exists(path):
    raise errors.ConfigError(
      f"--workdir: {workdir} has no search.json; run experiments.sweep --space (or this "
      "program without --report_only) there first"
    )
  search = paths.read_json(path)
  space = {k: sweep.parse_range(k, spec) for k, spec in search["space"].items()}
  rows = {}
  for row in reporting.read_metrics(os.path.join(workdir, "trials.jsonl")):
    if "index" in row and row["index"] < search["trials"]:
      rows[row["index"]] = row
  return space, [rows[i] for i in sorted(rows)]


def write(workdir: str, space: dict[str, sweep.Range], rows: list[dict], within: float) -> dict:
  """``robustness.{png,md,json}`` in ``workdir``; returns the report."""
  rep = report(space, rows, within)
  rep["space"] = {k: sweep.range_spec(r) for k, r in space.items()}
  common.write_report(workdir, "robustness", rep, markdown(rep))
  plot(space, rows, rep, os.path.join(workdir, "robustness.png"))
  return rep


def main(argv):
  def body():
    config = FLAGS.config
    if FLAGS.report_only:
      space, rows = load_search(FLAGS.workdir)
    else:
      space = sweep.parse_space(FLAGS.space or default_space(config.method))
      rows, _ = sweep.run_search(
        config, FLAGS.workdir, space, FLAGS.trials, FLAGS.seed, FLAGS.sampler, FLAGS.startup_trials
      )
    return summary_line(write(FLAGS.workdir, space, rows, FLAGS.within))

  common.run_main(argv, body)


def define_flags():
  """The command-line flags (defined only when run as a program)."""
  flags.DEFINE_string("workdir", None, "Directory of the search's trials and the report.")
  sweep.define_search_flags(space_default=None, trials_default=100)
  flags.DEFINE_float("within", 0.1, "Keep the trials within this share of the best accuracy.")
  flags.DEFINE_bool("report_only", False, "Draw the report from the finished trials only.")
  config_flags.DEFINE_config_file("config", None, "The base configuration file.", lock_config=True)
  flags.mark_flags_as_required(["config", "workdir"])


if __name__ == "__main__":
  define_flags()
  app.run(main, flags_parser=common.parse_flags)
