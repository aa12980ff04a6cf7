"""The paper's Table 1 as a report anyone can rerun: every method, N seeds, one data set.

Run (all ten default entries, 3 seeds of the README's 700 steps on the embedded MNIST-5k):
  python -m experiments.table1 --dataset=mnist_5k --seeds=3 --steps=700 --workdir=runs/table1

``--methods=backprop_adam,distprop,dfa`` picks the table's entries: a name of
:data:`ENTRIES`, or any method of ``lagrangian_jax.methods.METHODS`` (its
``configs/<name>.py`` as is). When ``configs/<entry>.py`` exists it is that entry's config
and replaces the table's recipe (a tuned ``configs/backprop_sgd.py``, say); an entry tuned
on one data set's own validation split has its config in :data:`DATASET_CONFIGS`, used on
that data set only. ``--dataset`` is ``config.data.name``: ``mnist_5k``,
``fashion_mnist``, ``idx:<dir>``, ``tfds:...`` (``--data_dir`` for the latter two);
``--shrink`` applies ``configs/smoke.py``'s ``shrink`` to every entry (a quick look, tests).
``--set=key=value,...`` sets config keys on every entry after its own overrides (and
``--shrink``), before the flags above; values as ``experiments.common.parse_settings``
reads them (Python literals when they parse), a piece without ``=`` continues the previous
value (``network.split=1,2`` is one item). E.g. every entry on the 3x256 MLP:

  python -m experiments.table1 --dataset=mnist_5k --seeds=3 --steps=700 \
    --methods=backprop_adam,dfa,dtp,oam --workdir=runs/table1_mlp \
    --set=network.name=mlp,network.depth=3,network.width=256,network.split=every,\
network.split_activation=relu

Each entry is one ``train.train_and_evaluate`` run in ``DIR/<entry>`` with all seeds in one
vmapped program (``config.num_seeds``); rerunning the command resumes unfinished entries
from their checkpoints and skips finished ones. An entry that diverges is a result
("diverged", with its message), not a crash. Writes ``DIR/table1.json`` (the entries'
records under ``"rows"``), ``DIR/table1.md``, ``DIR/accuracy.png`` and ``DIR/defect.png``;
the last line is ``TABLE1 dir=... rows=<entries> <entry>=<mean test accuracy> ...``.
Expected failures print one ``error: ...`` line, exit 1.
"""

from __future__ import annotations

from collections.abc import Sequence
import os
import shlex

from absl import app
from absl import flags
import jax
import numpy as np

from experiments import common
from lagrangian_jax import data as data_lib
from lagrangian_jax import errors
from lagrangian_jax import identity
from lagrangian_jax import methods as methods_lib
from lagrangian_jax import networks
from lagrangian_jax import reporting
from lagrangian_jax import state as state_lib

FLAGS = flags.FLAGS

# The table's entries, in its order: name -> (config module in configs/, {config key: value}).
ENTRIES = {
  "backprop_sgd": (
    "backprop",
    {"optimizer": "sgd", "momentum": 0.9, "learning_rates.weights": 0.05},
  ),
  "backprop_adam": ("backprop", {}),
  "penalty": ("penalty", {}),
  "gda": ("gda", {}),
  "augmented_lagrangian": ("augmented_lagrangian", {}),
  "extraprop": ("extraprop", {}),
  "distprop": ("distprop", {}),
  "extraprop_past": ("extraprop", {"solver": "past_extragradient"}),
  "distprop_past": ("distprop", {"solver": "past_extragradient"}),
  # Algorithm 1 as the paper writes it: the plain Lagrangian, no augmented term
  "distprop_plain": ("distprop", {"distprop.augmented_coefficient": 0.0}),
  # evaluation at an exponential moving average of the iterate (the swing remedy)
  "distprop_ema": ("distprop", {"average_decay": 0.99}),
}

# (data set, entry) -> config module: an entry whose settings were chosen on that data
# set's own validation split (the config's docstring has the sweep), for that data set only.
DATASET_CONFIGS = {
  ("fashion_mnist", "extraprop"): "fashion_mnist_extraprop",
}

# The paper's Table 1, MNIST test accuracy, for reference next to whatever data set ran.
PAPER_MNIST = {
  "backprop_sgd": 0.9881,
  "penalty": 0.9627,  # "Regularized"
  "gda": 0.9743,
  "extraprop": 0.9827,
  "distprop": 0.9903,
}


# ----------------------------------------------------------------------------------
# Entries and their configs
# ----------------------------------------------------------------------------------


def valid_entries() -> list[str]:
  """The table's entries, then every other method of ``methods.METHODS`` under its name."""
  return [*ENTRIES, *(m for m in methods_lib.METHODS if m not in ENTRIES)]


def resolve_entries(
  names: Sequence[str] | None = None, dataset: str = ""
) -> dict[str, tuple[str, dict]]:
  """``{entry: (config module, overrides)}`` for ``names`` (default: all of :data:`ENTRIES`).

  An entry's own ``configs/<entry>.py`` replaces the table's recipe; on ``dataset``, an
  entry of :data:`DATASET_CONFIGS` replaces both.
  """
  names = list(ENTRIES) if not names else list(dict.fromkeys(names))
  valid = valid_entries()
  unknown = [n for n in names if n not in valid]
  if unknown:
    raise errors.ConfigError(
      f"--methods: unknown entries {', '.join(map(repr, unknown))}; choose from {', '.join(valid)}"
    )
  out = {}
  for name in names:
    module, overrides = ENTRIES.get(name, (name, {}))
    if os.path.exists(common.config_path(name)):  # its own config wins over the recipe
      module, overrides = name, {}
    if (dataset, name) in DATASET_CONFIGS:
      module, overrides = DATASET_CONFIGS[dataset, name], {}
    out[name] = (module, dict(overrides))
  return out


def entry_config(
  module: str,
  overrides: dict,
  *,
  dataset: str,
  data_dir: str = "",
  seeds: int,
  steps: int,
  batch_size: int,
  eval_every: int,
  shrink: bool = False,
  sets: dict | None = None,
):
  """The entry's config module's ``get_config()`` with the entry's overrides, then
  ``shrink``, then ``sets`` (``--set``: keys set on every entry), then the report's flags."""
  path = common.config_path(module)
  if not os.path.exists(path):
    raise errors.ConfigError(f"{path}: no such config for this entry")
  config = common.apply_overrides(common.load_config(module), overrides)
  if shrink:
    from configs import smoke

    config = smoke.shrink(config)
  config = common.apply_overrides(config, sets or {})
  config.num_seeds = seeds
  config.num_steps = steps
  config.batch_size = batch_size
  config.eval_every = eval_every
  config.checkpoint_every = eval_every
  config.progress_bar = False
  config.data.name = dataset
  if data_dir:
    config.data.data_dir = data_dir
  return config


# ----------------------------------------------------------------------------------
# What an entry costs
# ----------------------------------------------------------------------------------

_DATASETS: dict[str, data_lib.Dataset] = {}


def load_data(config) -> data_lib.Dataset:
  """The entry's data set, loaded as ``state.build_experiment`` loads it (cached per report)."""
  key = config.data.to_json()
  if key not in _DATASETS:
    _DATASETS[key] = state_lib.load_dataset(config)
  return _DATASETS[key]


def state_sizes(config, dataset: data_lib.Dataset) -> dict:
  """One seed's state in MiB by shape inference (nothing is allocated), and the solver.

  ``state_mib``: auxiliary variables + multipliers + constants, i.e. the parameters minus
  the network weights plus the constants (what grows with the data set for the lifted
  methods and does not for DistProp); ``optimizer_state_mib``: the solver's state.
  """
  net = networks.from_config(
    config.network, num_classes=dataset.num_classes, input_shape=tuple(dataset.image_shape)
  )
  shapes = state_lib.abstract_state(config, net, len(dataset.train.labels))
  params = shapes.params

  def mib(tree):
    return sum(int(np.prod(x.shape)) * x.dtype.itemsize for x in jax.tree.leaves(tree)) / 2**20

  return {
    "solver": shapes.solver,
    "state_mib": mib(params) - mib(params["primal"]["weights"]) + mib(shapes.constants),
    "optimizer_state_mib": mib(shapes.opt_state),
  }


# ----------------------------------------------------------------------------------
# One entry
# ----------------------------------------------------------------------------------


def _entry_record(name, module, overrides, config, sizes, run_dir, summary=None, error=""):
  """The entry's record in ``table1.json`` (``"row"``: its name); figures ``None`` when it
  diverged."""
  n = config.num_seeds
  record = {
    "row": name,
    "status": "ok" if summary else "diverged",
    "error": error,
    "method": config.method,
    "solver": sizes["solver"],
    "config": f"configs/{module}.py",
    "overrides": overrides,
    "dataset": config.data.name,
    "steps": config.num_steps,
    "num_seeds": n,
    "seeds": list(range(config.seed, config.seed + n)),
    "test_accuracy": None,
    "validation_accuracy": None,
    "final_defect": None,
    "ms_per_iteration": None,
    "ms_per_iteration_per_seed": None,
    "state_mib": sizes["state_mib"],
    "optimizer_state_mib": sizes["optimizer_state_mib"],
    "paper_mnist": PAPER_MNIST.get(name),
    "seconds": None,
    "workdir": run_dir,
  }
  if not summary:
    return record
  per_seed = summary["seeds"]
  splits = sorted((k for k in per_seed if k.startswith("defect_")), key=lambda k: int(k[7:]))
  defect = common.seed_stats(per_seed["mean_defect"])
  defect["per_split"] = [common.seed_stats(per_seed[k]) for k in splits]
  # all seeds at once, compilation excluded; None for an entry finished by an earlier run
  ms = summary["ms_per_iteration"]
  record.update(
    dataset=summary["dataset"],
    seeds=list(per_seed["seed"]),
    test_accuracy=common.seed_stats(per_seed["test_accuracy"]),
    validation_accuracy=common.seed_stats(per_seed["validation_accuracy"]),
    final_defect=defect,
    ms_per_iteration=ms,
    ms_per_iteration_per_seed=None if ms is None else ms / n,
    seconds=summary["seconds"],
  )
  return record


def run_entry(name: str, module: str, overrides: dict, config, sizes: dict, workdir: str) -> dict:
  """Trains (or resumes, or skips) one entry; its record for ``table1.json``."""
  run_dir = os.path.join(workdir, name)
  summary, error = common.run_or_resume(config, run_dir)
  return _entry_record(name, module, overrides, config, sizes, run_dir, summary, error)


# ----------------------------------------------------------------------------------
# The table and the figures
# ----------------------------------------------------------------------------------


def _pm(stats, fmt) -> str:
  return f"{stats['mean']:{fmt}} ± {stats['std']:{fmt}}" if stats else "—"


def _num(x, fmt) -> str:
  return "—" if x is None else f"{x:{fmt}}"


def _table_line(r: dict) -> str:
  """One entry's line of the Markdown table."""
  test = _pm(r["test_accuracy"], ".4f") if r["status"] == "ok" else "diverged"
  return (
    f"| {r['row']} | {r['method']} | {r['solver']} | {test} "
    f"| {_pm(r['validation_accuracy'], '.4f')} | {_pm(r['final_defect'], '.3g')} "
    f"| {_num(r['ms_per_iteration'], '.1f')} | {_num(r['ms_per_iteration_per_seed'], '.1f')} "
    f"| {r['state_mib']:.3g} | {_num(r['paper_mnist'], '.4f')} |"
  )


def markdown(report: dict) -> str:
  """The table as Markdown: means ± std over seeds, the paper's MNIST column, the command."""
  n = report["seeds"]
  sets = report.get("set")
  lines = [
    f"# Table 1 on {report['dataset']}",
    "",
    f"{n} seed(s) ({', '.join(map(str, range(n)))}), {report['steps']} steps of batch "
    f"{report['batch_size']}{', shrunken configs' if report['shrink'] else ''}; mean ± std "
    "(population) over seeds. Accuracy: the real forward pass; defect: mean |constraint| "
    "over splits on training data, not comparable across formulations. ms / iteration: "
    "all seeds in one program, compilation excluded where the run logged twice; state: "
    "auxiliary variables + multipliers + constants of one seed.",
    "",
    *(
      [f"Set on every row (`--set`): {', '.join(f'`{k}={v}`' for k, v in sets.items())}.", ""]
      if sets
      else []
    ),
    "| row | method | solver | test accuracy | validation accuracy | final defect "
    f"| ms / iteration ({n} seeds) | ms / iteration / seed | state (MiB) | paper, MNIST |",
    "|---|---|---|---|---|---|---|---|---|---|",
    *(_table_line(r) for r in report["rows"]),
  ]
  lines += ["", "Configs: " + "; ".join(_config_text(r) for r in report["rows"]) + "."]
  failed = [r for r in report["rows"] if r["status"] != "ok"]
  if failed:
    lines += ["", "Diverged:", ""]
    lines += [f"* {r['row']}: {r['error']}" for r in failed]
  lines += ["", "Reproduce with:", "", f"    {report['command']}", ""]
  return "\n".join(lines)


def _config_text(record: dict) -> str:
  sets = ", ".join(f"`{k}={v}`" for k, v in record["overrides"].items())
  return f"{record['row']} `{record['config']}`" + (f" with {sets}" if sets else "")


def eval_curves(metrics_path: str, key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """``(steps, mean, std)`` over seeds of an eval metric, from the records' ``"seeds"``."""
  by_step = {}  # a resumed, finished run evaluates its last step again: keep the last
  for r in reporting.read_metrics(metrics_path):
    if r.get("kind") == "eval" and key in r:
      by_step[r["step"]] = np.asarray(r.get("seeds", {}).get(key, [r[key]]), np.float64)
  steps = np.array(sorted(by_step))
  values = [by_step[s] for s in steps]
  return (
    steps,
    np.array([v.mean() for v in values]),
    np.array([v.std() for v in values]),
  )


def _draw_curve(ax, record: dict, key: str, log: bool, color) -> bool:
  """One entry's mean ± std curve of ``key``; ``False`` when it has nothing to draw."""
  steps, mean, std = eval_curves(os.path.join(record["workdir"], "metrics.jsonl"), key)
  if not len(steps) or (log and not np.any(mean > 0)):  # backprop has no constraint
    return False
  lo, hi = mean - std, mean + std
  if log:  # a band reaching 0 would vanish off a log axis
    floor = np.min(mean[mean > 0]) * 1e-2
    mean, lo, hi = (np.maximum(x, floor) for x in (mean, lo, hi))
  label = record["row"] + ("" if record["status"] == "ok" else " (diverged)")
  ax.plot(steps, mean, marker="o", markersize=3, color=color, label=label)
  ax.fill_between(steps, lo, hi, color=color, alpha=0.2, linewidth=0)
  return True


def plot_entries(report: dict, workdir: str) -> list[str]:
  """``accuracy.png`` (test) and ``defect.png`` (log axis): one curve ± std band per entry."""
  plt = common.pyplot()
  records = report["rows"]
  cmap = plt.get_cmap("tab10" if len(records) <= 10 else "tab20")
  paths = []
  for key, file, ylabel, log in (
    ("test_accuracy", "accuracy.png", "test accuracy (real forward pass)", False),
    ("mean_defect", "defect.png", "mean |defect| over splits, training data", True),
  ):
    fig, ax = plt.subplots(figsize=(7, 4.5))
    drawn = [_draw_curve(ax, r, key, log, cmap(i)) for i, r in enumerate(records)]
    if log:
      ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.set_title(f"{report['dataset']}, mean ± std over {report['seeds']} seed(s)")
    ax.grid(alpha=0.3)
    if any(drawn):
      ax.legend(fontsize=8)
    paths.append(common.save_figure(fig, os.path.join(workdir, file)))
  return paths


def table_line(report: dict) -> str:
  """One line a script can parse: ``TABLE1 dir=... rows=N <entry>=<mean test accuracy> ...``."""
  items = [
    f"{r['row']}={r['test_accuracy']['mean']:.4f}" if r["test_accuracy"] else f"{r['row']}=nan"
    for r in report["rows"]
  ]
  return f"TABLE1 dir={report['workdir']} rows={len(report['rows'])} {' '.join(items)}"


def command_for(
  workdir, entries, dataset, data_dir, seeds, steps, batch_size, eval_every, shrink, sets=None
) -> str:
  """The command line equivalent to a :func:`run_report` call."""
  args = [
    f"--dataset={dataset}",
    f"--seeds={seeds}",
    f"--steps={steps}",
    f"--workdir={workdir}",
    f"--methods={','.join(entries)}",
    f"--batch_size={batch_size}",
    f"--eval_every={eval_every}",
  ]
  args += [f"--data_dir={data_dir}"] if data_dir else []
  args += ["--shrink"] if shrink else []
  args += [common.settings_flag(sets)] if sets else []
  return "python -m experiments.table1 " + " ".join(map(shlex.quote, args))


def _prepare(chosen: dict, settings: dict, sets: dict, workdir: str) -> tuple[dict, dict]:
  """Every entry's config, directory check and shapes, so that a bad entry, key or data
  set fails before hours of training, not after them."""
  configs, sizes = {}, {}
  for name, (module, overrides) in chosen.items():
    configs[name] = entry_config(module, overrides, **settings, sets=sets)
    state_lib.check_loop_config(configs[name])  # every value, as build_experiment will
    common.check_run_dir(configs[name], os.path.join(workdir, name))
    sizes[name] = state_sizes(configs[name], load_data(configs[name]))
  return configs, sizes


def _run_entries(chosen: dict, configs: dict, sizes: dict, sets: dict, workdir: str) -> list:
  records = []
  for i, (name, (module, overrides)) in enumerate(chosen.items()):
    # the record names everything set on the entry: its own overrides, then --set's
    record = run_entry(name, module, {**overrides, **sets}, configs[name], sizes[name], workdir)
    records.append(record)
    result = (
      f"test_accuracy={record['test_accuracy']['mean']:.4f}"
      if record["status"] == "ok"
      else f"diverged: {record['error']}"
    )
    print(f"entry {i + 1}/{len(chosen)} {name}: {result}", flush=True)
  return records


def run_report(
  workdir: str,
  *,
  entries: Sequence[str] | None = None,
  dataset: str = "mnist_5k",
  data_dir: str = "",
  seeds: int = 1,
  steps: int = 700,
  batch_size: int = 128,
  eval_every: int = 100,
  shrink: bool = False,
  sets: dict | None = None,
  command: str | None = None,
) -> dict:
  """Runs (or resumes) every entry, writes the table and the figures; returns the report.

  ``sets``: ``{config key: value}`` set on every entry after its own overrides (``--set``).
  """
  common.check_at_least_one(seeds=seeds, steps=steps, batch_size=batch_size, eval_every=eval_every)
  chosen = resolve_entries(entries, dataset)
  sets = dict(sets or {})
  settings = dict(
    dataset=dataset,
    data_dir=data_dir,
    seeds=seeds,
    steps=steps,
    batch_size=batch_size,
    eval_every=eval_every,
    shrink=shrink,
  )
  if command is None:
    command = command_for(workdir, list(chosen), **settings, sets=sets)
  identity.claim(workdir, "table1", write=False)
  configs, sizes = _prepare(chosen, settings, sets, workdir)
  identity.claim(workdir, "table1")
  report = {
    "workdir": workdir,
    "command": command,
    **{k: v for k, v in settings.items() if k != "data_dir"},
    "data_dir": data_dir,
    "set": sets,
    "rows": _run_entries(chosen, configs, sizes, sets, workdir),
  }
  common.write_report(workdir, "table1", report, markdown(report))
  plot_entries(report, workdir)
  return report


# ----------------------------------------------------------------------------------
# The command line
# ----------------------------------------------------------------------------------


def define_flags() -> None:
  """Flags, defined only when this module is the program: tests import it next to the
  other launchers, which define some of the same names (``--workdir``)."""
  flags.DEFINE_string("workdir", None, "Directory for the entries' runs, the table, the figures.")
  flags.DEFINE_string("dataset", "mnist_5k", "config.data.name of every entry.")
  flags.DEFINE_string("data_dir", "", "config.data.data_dir of every entry (idx, tfds).")
  flags.DEFINE_integer("seeds", 1, "Seeds per entry, run in one vmapped program.")
  flags.DEFINE_integer("steps", 700, "Training steps per entry.")
  flags.DEFINE_list("methods", [], f"Table entries (default: all of {', '.join(ENTRIES)}).")
  flags.DEFINE_integer("batch_size", 128, "Training batch size.")
  flags.DEFINE_integer("eval_every", 100, "Evaluate (and checkpoint) every this many steps.")
  flags.DEFINE_bool("shrink", False, "Apply configs/smoke.py's shrink to every entry.")
  flags.DEFINE_list(
    "set",
    [],
    "key=value,... config keys set on every entry, after its own overrides "
    "(e.g. network.name=mlp,network.depth=3,network.width=256).",
  )
  flags.mark_flags_as_required(["workdir"])


def main(argv):
  def body():
    report = run_report(
      FLAGS.workdir,
      sets=common.parse_settings(FLAGS.set),
      entries=FLAGS.methods,
      dataset=FLAGS.dataset,
      data_dir=FLAGS.data_dir,
      seeds=FLAGS.seeds,
      steps=FLAGS.steps,
      batch_size=FLAGS.batch_size,
      eval_every=FLAGS.eval_every,
      shrink=FLAGS.shrink,
      command=common.command_line("experiments.table1"),
    )
    return table_line(report)

  common.run_main(argv, body)


if __name__ == "__main__":
  define_flags()
  app.run(main, flags_parser=common.parse_flags)
