"""DistProp at depth: test accuracy of a plain MLP vs its depth, and where the real chain drifts.

Run (3 seeds of 700 steps of the configs' batch, 128, on the embedded digits at each
depth; every method starts from the deep configs' ``network.init``, he_normal; add
``--set=network.init=lecun_normal`` for flax's default):
  python -m experiments.depth --depths=4,16,32,64,100 --seeds=3 --steps=700 --workdir=runs/depth

Measured (2 shared CPU cores, about 50 min each), mean test accuracy over seeds 0-2
(validation in parentheses); "he" is the default (``docs/depth/``, rerun at stop 31 on
the current code: DistProp's pooled per-step noise, ``terms.pooled_draw``), "he, 11-29"
the same command on the code of 2026-11-29 (DistProp's noise a ``jax.random`` draw per
split; backprop and DFA moved since, presumably by rounding: the input normalised on the
device, JAX 0.10; not bisected), lecun_normal before the key existed (bit-identical parameters):

  depth                  4              16             32             64             100
  backprop  he           0.934 (0.941)  0.920 (0.929)  0.926 (0.919)  0.514 (0.521)  0.227 (0.251)
  backprop  he, 11-29    0.937 (0.941)  0.922 (0.924)  0.911 (0.919)  0.334 (0.331)  0.084 (0.090)
  backprop  lecun        0.938 (0.944)  0.906 (0.923)  0.520 (0.541)  0.084 (0.090)  0.084 (0.090)
  distprop  he           0.833 (0.841)  0.830 (0.846)  0.826 (0.843)  0.823 (0.841)  0.822 (0.841)
  distprop  he, 11-29    0.832 (0.845)  0.830 (0.849)  0.825 (0.845)  0.823 (0.843)  0.821 (0.840)
  distprop  lecun        0.832 (0.848)  0.833 (0.847)  0.827 (0.845)  0.824 (0.840)  0.820 (0.838)
  dfa       he           0.864 (0.879)  0.515 (0.534)  diverged       diverged       diverged
  dfa       he, 11-29    0.881 (0.908)  0.481 (0.489)  diverged       diverged       diverged
  dfa       lecun        0.894 (0.927)  0.392 (0.426)  diverged       diverged       diverged
  dtp       he, 11-29    0.887 (0.899)  0.424 (0.449)  0.113 (0.099)  0.103 (0.099)  diverged
  oam       he, 11-29    0.941 (0.941)  0.495 (0.493)  0.290 (0.299)  0.159 (0.167)  0.124 (0.142)

(``docs/depth/``, ``docs/depth/lecun/``; DTP and OAM, with their MLP configs' Adam 1e-3,
from ``--methods=dtp,oam``: ``docs/depth/dtp_oam/``.) He init moves backprop's collapse from depth 32
to depth 64; at Adam's 1e-3 it still fails there (seeds 0-2: 0.218 / 0.675 / 0.649 at 64,
0.084 / 0.084 / 0.513 at 100 in the rerun; one seed of three at chance at 64 before). With
He init and Adam's rate chosen per depth on validation among 1e-3, 3e-4 and 1e-4
(``--methods=backprop --set=network.init=he_normal,learning_rates.weights=R``):
R=3e-4 gives 0.821 (0.828) at depth 64, R=1e-4 0.691 (0.710) at depth 100; with
lecun_normal R=3e-4 stays at chance at 64 and 100.

DistProp's "he, 11-29" and "lecun" rows drew their per-step noise with ``jax.random``, a
draw per split (``--set=distprop.noise_rng=jax,distprop.noise_draws=per_split``); the
"he" row draws one pool per iteration (the default): the same figures within 0.001.

DistProp's blocks train the same whatever the depth; what limits it is its first block
(one Dense layer, the only one that sees data: the real chain's nearest-prototype
accuracy is 0.859 at split 0 and 0.839 at split 99 on the validation digits with
lecun_normal, 0.856 and 0.840 with he_normal). Blocks that also learn on the real chain
(``--set=distprop.real_inputs=local,distprop.local_warmup=100,distprop.margin=1.0``, issue
24, ``configs/deep_mlp_distprop.py``'s sweep) reach 0.857 (0.871) at depth 16, 3 seeds:
every split's real chain as separable as the first block's (0.88), not more
(``depth_real_chain.png``).

Methods (``--methods``, default all that exist): ``backprop`` (``configs/deep_mlp_backprop.py``),
``distprop`` (``configs/deep_mlp_distprop.py``), and ``dfa``, ``dtp``, ``oam``
(``configs/dfa.py``, ``configs/dtp.py``, ``configs/oam.py`` on the same MLP) when
``lagrangian_jax.methods.METHODS`` has them. Every cell is the same plain MLP of width
128 with ``network.depth`` hidden layers, every layer a block (``split="every"``), the same
initialisation (``network.init`` of the deep configs, or ``--set``'s) and seed, the same
step budget and batch; accuracy is the real forward pass through every layer. ``--set=key=value,...`` overrides config keys of every cell.

Each cell (method, depth) is one ``train.train_and_evaluate`` run in
``DIR/<method>/depth_<d>`` with the seeds vmapped in one program (``config.num_seeds``).
Rerunning the command skips finished cells and resumes unfinished ones from their
checkpoints. A DistProp cell asks the training loop for its split diagnostics
(``config.evaluators`` with ``split_diagnostics``; ``summary.json``'s
``"split_diagnostics"``), measured at the last step, per split and seed, on the
*validation* digits: the defect of the real forward activations against that of the
synthetic samples, their nearest-prototype accuracy and Fisher ratio, and how often a block
changes the real chain's nearest prototype. Writes ``DIR/depth.json``, ``DIR/depth.md``,
``DIR/depth_accuracy.png``, ``DIR/depth_defect.png`` and ``DIR/depth_real_chain.png`` (the
real chain's nearest-prototype accuracy by split: where DistProp's accuracy is made); the
last line is
``DEPTH dir=... steps=... seeds=... <method>@<depth>=<mean test accuracy> ...``. Expected
failures print one ``error: ...`` line and exit 1; a diverged cell is a result.
"""

from __future__ import annotations

from collections.abc import Sequence
import os
import shlex

from absl import app
from absl import flags
import numpy as np

from experiments import common
from lagrangian_jax import errors
from lagrangian_jax import identity
from lagrangian_jax import methods as methods_lib
from lagrangian_jax import networks
from lagrangian_jax import state as state_lib

FLAGS = flags.FLAGS

# method -> (config module, overrides that put it on the depth experiment's MLP)
_MLP = {
  "network.name": "mlp",
  "network.width": 128,
  "network.split": "every",
}
CELLS = {
  "backprop": ("deep_mlp_backprop", {}),
  "distprop": ("deep_mlp_distprop", {}),
  "dfa": ("dfa", {**_MLP, "network.split_activation": "relu"}),
  "dtp": ("dtp", {**_MLP, "network.split_activation": "relu"}),
  "oam": ("oam", {**_MLP, "network.split_activation": "relu"}),
}

# The evaluator that puts DistProp's per-split diagnostics in the run's summary.json.
SPLIT_DIAGNOSTICS = "split_diagnostics"


def available_methods() -> list[str]:
  """The cells' methods that this tree has (a method in ``METHODS`` and its config)."""
  return [
    m
    for m, (module, _) in CELLS.items()
    if m in methods_lib.METHODS and os.path.exists(common.config_path(module))
  ]


def deep_init() -> str:
  """``config.network.init`` of the deep configs, which every cell starts from."""
  init = common.load_config("deep_mlp_backprop").network.init
  other = common.load_config("deep_mlp_distprop").network.init
  if init != other:  # the comparison needs one initialisation for every method
    raise errors.ConfigError(
      f"config.network.init: configs/deep_mlp_backprop.py has {init!r}, "
      f"configs/deep_mlp_distprop.py {other!r}; the depth experiment needs the same one"
    )
  return init


def cell_config(method: str, depth: int, *, seeds: int, steps: int, eval_every: int, sets: dict):
  """The cell's config: its module's ``get_config()``, the MLP at ``depth``, the budget.

  Every cell gets the deep configs' ``network.init`` (``configs/dfa.py`` keeps flax's
  default of its own) unless ``sets`` overrides it for all of them. A DistProp cell's
  evaluations add its split diagnostics (``config.evaluators``).
  """
  module, overrides = CELLS[method]
  overrides = {**overrides, "network.init": deep_init(), "network.depth": depth, **sets}
  config = common.apply_overrides(common.load_config(module), overrides)
  config.num_seeds = seeds
  config.num_steps = steps
  config.eval_every = eval_every
  config.checkpoint_every = eval_every
  config.progress_bar = False
  if config.method == "distprop" and SPLIT_DIAGNOSTICS not in config.evaluators.split(","):
    config.evaluators = f"{config.evaluators},{SPLIT_DIAGNOSTICS}"
  return config


def cell_dir(workdir: str, method: str, depth: int) -> str:
  return os.path.join(workdir, method, f"depth_{depth}")


# ----------------------------------------------------------------------------------
# One cell
# ----------------------------------------------------------------------------------


def num_splits(config) -> int:
  """The cell's network's splits: ``depth`` with one layer per block, fewer with a deeper
  first block (``network.first_split``). The MLP flattens its input, so the count does
  not depend on the data's shape."""
  net = networks.from_config(config.network, num_classes=10, input_shape=(28, 28, 1))
  return len(net.state_shapes)


def run_cell(method: str, depth: int, config, workdir: str) -> dict:
  """Trains (or resumes, or skips) one cell; its record for ``depth.json``.

  A DistProp cell's record holds ``"diagnostics"``: its summary's ``split_diagnostics``
  (``{name: {"mean": [per split], "per_seed": [[per split] per seed]}, "step", "examples"}``).
  """
  run_dir = cell_dir(workdir, method, depth)
  common.check_run_dir(config, run_dir)
  record = {
    "method": method,
    "depth": depth,
    "config": f"configs/{CELLS[method][0]}.py",
    "status": "ok",
    "error": "",
    "workdir": run_dir,
    "num_splits": num_splits(config),
    "init": config.network.init,
  }
  summary, error = common.run_or_resume(config, run_dir)
  if summary is None:  # a diverged cell is a result, not a crash
    record.update(status="diverged", error=error)
    return record
  per_seed = summary["seeds"]
  record.update(
    seeds=list(per_seed["seed"]),
    test_accuracy=common.seed_stats(per_seed["test_accuracy"]),
    validation_accuracy=common.seed_stats(per_seed["validation_accuracy"]),
    seconds=summary["seconds"],
    resumed_from=summary.get("resumed_from", 0),
    ms_per_iteration=summary.get("ms_per_iteration"),
  )
  if SPLIT_DIAGNOSTICS in summary:
    record["diagnostics"] = summary[SPLIT_DIAGNOSTICS]
  return record


# ----------------------------------------------------------------------------------
# The report
# ----------------------------------------------------------------------------------


def inits(report: dict) -> str:
  """The cells' ``config.network.init`` values, comma separated (a report written before
  the key existed ran flax's default, lecun_normal)."""
  values = {
    c.get("init", "lecun_normal") for cells in report["cells"].values() for c in cells.values()
  }
  return ", ".join(sorted(values))


def _pm(stats) -> str:
  return f"{stats['mean']:.4f} ± {stats['std']:.4f}" if stats else "—"


def _accuracy_cell(c: dict) -> str:
  if c["status"] != "ok":
    return "diverged"
  return f"{_pm(c['test_accuracy'])} ({c['validation_accuracy']['mean']:.4f})"


def _first_middle_last(diag: dict, name: str) -> str:
  v = diag[name]["mean"]
  return " / ".join(f"{v[i]:.3f}" for i in (0, len(v) // 2, len(v) - 1))


def _diagnostics_table(report: dict) -> list[str]:
  """DistProp's per-split lines of ``depth.md`` (none without a DistProp cell)."""
  if "distprop" not in report["cells"]:
    return []
  lines = [
    "",
    "DistProp per split (validation digits, mean over seeds): first / middle / last split.",
    "",
    "| depth | real defect | sample defect | real nearest-prototype acc. "
    "| sample nearest-prototype acc. | real Fisher | sample Fisher |",
    "|---|---|---|---|---|---|---|",
  ]
  names = ("real_defect", "sample_defect", "real_prototype_accuracy")
  names += ("sample_prototype_accuracy", "real_fisher", "sample_fisher")
  for d in report["depths"]:
    diag = report["cells"]["distprop"][str(d)].get("diagnostics")
    if diag:
      lines.append(f"| {d} | " + " | ".join(_first_middle_last(diag, n) for n in names) + " |")
  return lines


def markdown(report: dict) -> str:
  methods, cells = report["methods"], report["cells"]
  batch = ", ".join(map(str, report.get("batch_sizes", [128])))  # 128 before the key existed
  lines = [
    "# Test accuracy vs depth: plain MLP, width 128, every layer a block",
    "",
    f"{report['seeds']} seed(s), {report['steps']} steps of batch {batch} on "
    f"{report['dataset']}; mean ± std (population) over seeds of the real forward pass; "
    "validation accuracy in parentheses. Depth = hidden layers (DistProp's splits: one per "
    "layer after its first block, `config.network.first_split` layers). "
    f"Kernel initialisation (`config.network.init`) of every method: {inits(report)}.",
    "",
    "| depth | " + " | ".join(methods) + " |",
    "|---|" + "---|" * len(methods),
  ]
  for d in report["depths"]:
    lines.append(f"| {d} | " + " | ".join(_accuracy_cell(cells[m][str(d)]) for m in methods) + " |")
  lines += _diagnostics_table(report)
  failed = [c for m in methods for c in cells[m].values() if c["status"] != "ok"]
  if failed:
    lines += ["", "Diverged:", ""]
    lines += [f"* {c['method']} depth {c['depth']}: {c['error']}" for c in failed]
  lines += ["", "Reproduce with:", "", f"    {report['command']}", ""]
  return "\n".join(lines)


def _plot_accuracy(report: dict, path: str) -> str:
  """Test accuracy vs depth, one line ± std band per method."""
  plt = common.pyplot()
  cmap = plt.get_cmap("tab10")
  fig, ax = plt.subplots(figsize=(6.5, 4.5))
  for i, m in enumerate(report["methods"]):
    pts = [
      (d, c["test_accuracy"]["mean"], c["test_accuracy"]["std"])
      for d in report["depths"]
      if (c := report["cells"][m][str(d)])["status"] == "ok"
    ]
    if not pts:
      continue
    d, mean, std = (np.array(x) for x in zip(*pts))
    ax.plot(d, mean, marker="o", color=cmap(i), label=m)
    ax.fill_between(d, mean - std, mean + std, color=cmap(i), alpha=0.2, linewidth=0)
  ax.set_xlabel("depth (hidden layers, every one a block)")
  ax.set_ylabel("test accuracy (real forward pass)")
  ax.set_title(
    f"{report['dataset']}, {report['steps']} steps, ± std over {report['seeds']} seeds, "
    f"init {inits(report)}"
  )
  ax.set_ylim(0, 1)
  ax.grid(alpha=0.3)
  ax.legend()
  return common.save_figure(fig, path)


def _plot_defects(report: dict, path: str) -> str:
  """DistProp's per-split defect (solid: real, dotted: samples) and the real chain's
  nearest-prototype accuracy, one line per depth."""
  plt = common.pyplot()
  fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
  # deepest first: the blocks of a shallower run often match the first ones of a deeper
  # run (they train alike whatever the depth), so its shorter line is drawn on top
  for i, d in reversed(list(enumerate(report["depths"]))):
    diag = report["cells"].get("distprop", {}).get(str(d), {}).get("diagnostics")
    if not diag:
      continue
    splits = np.arange(len(diag["real_defect"]["mean"]))
    color = plt.get_cmap("viridis")(i / max(len(report["depths"]) - 1, 1))
    ax.plot(splits, diag["real_defect"]["mean"], color=color, label=f"depth {d}")
    ax.plot(splits, diag["sample_defect"]["mean"], color=color, linestyle=":")
    ax2.plot(splits, diag["real_prototype_accuracy"]["mean"], color=color, label=f"depth {d}")
  ax.set_xlabel("split")
  ax.set_ylabel("mean |shrunk z| (solid: real, dotted: samples)")
  ax.set_title("DistProp defect per split, validation digits")
  ax2.set_xlabel("split")
  ax2.set_ylabel("nearest-prototype accuracy of real activations")
  ax2.set_title("class separation of the real chain")
  for a in (ax, ax2):
    a.grid(alpha=0.3)
    a.legend(fontsize=8)
  return common.save_figure(fig, path)


def _best_ok(report: dict, method: str, key: str = "test_accuracy") -> float | None:
  """``method``'s best mean ``key`` over the depths (None without an ok cell)."""
  accs = [c[key]["mean"] for c in report["cells"].get(method, {}).values() if c["status"] == "ok"]
  return max(accs) if accs else None


def _plot_real_chain(report: dict, path: str) -> str:
  """Where DistProp's accuracy is made: the real chain's nearest-prototype accuracy at
  each split (± std over seeds), one line per depth, its accuracy (the last block on the
  real chain) dashed in the same colour, backprop's best over depths dotted; all on the
  validation digits (the diagnostics' examples)."""
  plt = common.pyplot()
  fig, ax = plt.subplots(figsize=(7, 4.5))
  for i, d in reversed(list(enumerate(report["depths"]))):
    cell = report["cells"].get("distprop", {}).get(str(d), {})
    diag = cell.get("diagnostics")
    if not diag:
      continue
    per_seed = np.asarray(diag["real_prototype_accuracy"]["per_seed"], np.float64)
    mean, std = per_seed.mean(0), per_seed.std(0)
    splits = np.arange(len(mean))
    color = plt.get_cmap("viridis")(i / max(len(report["depths"]) - 1, 1))
    ax.plot(splits, mean, color=color, label=f"depth {d}")
    ax.fill_between(splits, mean - std, mean + std, color=color, alpha=0.2, linewidth=0)
    ax.axhline(cell["validation_accuracy"]["mean"], color=color, linestyle="--", linewidth=0.8)
  best = _best_ok(report, "backprop", "validation_accuracy")
  if best is not None:
    ax.axhline(best, color="black", linestyle=":", label=f"backprop's best ({best:.3f})")
  ax.set_xlabel("split (block l's output)")
  ax.set_ylabel("nearest-prototype accuracy of the real chain")
  ax.set_title("DistProp: where accuracy is made (validation; dashed: the network's)")
  ax.grid(alpha=0.3)
  if ax.get_legend_handles_labels()[0]:  # no DistProp cell and no backprop: no legend
    ax.legend(fontsize=8)
  return common.save_figure(fig, path)


def plot(report: dict, workdir: str) -> list[str]:
  """``depth_accuracy.png`` (test accuracy vs depth, ± std band), ``depth_defect.png``
  (DistProp's per-split defect of real activations, one line per depth; dotted: samples)
  and ``depth_real_chain.png`` (the real chain's nearest-prototype accuracy by split)."""
  return [
    _plot_accuracy(report, os.path.join(workdir, "depth_accuracy.png")),
    _plot_defects(report, os.path.join(workdir, "depth_defect.png")),
    _plot_real_chain(report, os.path.join(workdir, "depth_real_chain.png")),
  ]


def depth_line(report: dict) -> str:
  """``DEPTH dir=... steps=... seeds=... <method>@<depth>=<mean test accuracy> ...``."""
  items = []
  for m in report["methods"]:
    for d in report["depths"]:
      c = report["cells"][m][str(d)]
      items.append(
        f"{m}@{d}=" + (f"{c['test_accuracy']['mean']:.4f}" if c["status"] == "ok" else "nan")
      )
  return (
    f"DEPTH dir={report['workdir']} steps={report['steps']} seeds={report['seeds']} "
    + " ".join(items)
  )


def _chosen_methods(methods: Sequence[str] | None) -> list[str]:
  valid = available_methods()
  methods = list(dict.fromkeys(methods or valid))
  unknown = [m for m in methods if m not in valid]
  if unknown:
    raise errors.ConfigError(f"--methods: unknown {unknown}; this tree has {valid}")
  return methods


def command_for(workdir, depths, methods, seeds, steps, eval_every, sets) -> str:
  """The command line equivalent to a :func:`run_report` call."""
  args = [
    f"--depths={','.join(map(str, depths))}",
    f"--seeds={seeds}",
    f"--workdir={workdir}",
    f"--steps={steps}",
    f"--methods={','.join(methods)}",
  ]
  args += [f"--eval_every={eval_every}"] if eval_every != 100 else []
  args += [common.settings_flag(sets)] if sets else []
  return "python -m experiments.depth " + " ".join(map(shlex.quote, args))


def _run_cells(configs: dict, methods: list[str], workdir: str) -> dict:
  cells = {m: {} for m in methods}
  for (m, d), config in configs.items():
    c = run_cell(m, d, config, workdir)
    cells[m][str(d)] = c
    result = f"{c['test_accuracy']['mean']:.4f}" if c["status"] == "ok" else "diverged"
    print(f"cell {m} depth {d}: test_accuracy={result}", flush=True)
  return cells


def run_report(
  workdir: str,
  *,
  depths: Sequence[int] = (4, 16, 32, 64, 100),
  methods: Sequence[str] | None = None,
  seeds: int = 1,
  steps: int = 700,
  eval_every: int = 100,
  sets: dict | None = None,
  command: str | None = None,
) -> dict:
  """Runs (or resumes) every cell, writes the table, the JSON and the figures."""
  common.check_at_least_one(seeds=seeds, steps=steps, eval_every=eval_every)
  identity.claim(workdir, "depth", write=False)
  depths = [int(d) for d in depths]
  if not depths or min(depths) < 1:
    raise errors.ConfigError(f"--depths: positive integers, got {depths}")
  methods = _chosen_methods(methods)
  sets = dict(sets or {})
  if command is None:
    command = command_for(workdir, depths, methods, seeds, steps, eval_every, sets)
  configs = {
    (m, d): cell_config(m, d, seeds=seeds, steps=steps, eval_every=eval_every, sets=sets)
    for m in methods
    for d in depths
  }
  for (m, d), config in configs.items():  # a bad key or directory fails before training
    state_lib.check_loop_config(config)
    common.check_run_dir(config, cell_dir(workdir, m, d))
  identity.claim(workdir, "depth")
  report = {
    "workdir": workdir,
    "command": command,
    "dataset": next(iter(configs.values())).data.name,
    "steps": steps,
    "seeds": seeds,
    "batch_sizes": sorted({c.batch_size for c in configs.values()}),
    "depths": depths,
    "methods": methods,
    "sets": {k: v if isinstance(v, (int, float, str, bool)) else repr(v) for k, v in sets.items()},
    "cells": _run_cells(configs, methods, workdir),
  }
  common.write_report(workdir, "depth", report, markdown(report))
  plot(report, workdir)
  return report


# ----------------------------------------------------------------------------------
# The command line
# ----------------------------------------------------------------------------------


def define_flags() -> None:
  flags.DEFINE_string("workdir", None, "Directory for the cells' runs, the table, the figures.")
  flags.DEFINE_list("depths", ["4", "16", "32", "64", "100"], "Hidden layers of the MLP.")
  flags.DEFINE_integer("seeds", 1, "Seeds per cell, run in one vmapped program.")
  flags.DEFINE_integer("steps", 700, "Training steps per cell (of the configs' batch).")
  flags.DEFINE_list("methods", [], f"Methods (default: those of {', '.join(CELLS)} present).")
  flags.DEFINE_integer("eval_every", 100, "Evaluate (and checkpoint) every this many steps.")
  flags.DEFINE_list("set", [], "key=value config overrides for every cell.")
  flags.mark_flags_as_required(["workdir"])


def main(argv):
  def body():
    try:
      depths = [int(d) for d in FLAGS.depths]
    except ValueError:
      raise errors.ConfigError(f"--depths: integers, got {FLAGS.depths}") from None
    report = run_report(
      FLAGS.workdir,
      depths=depths,
      methods=FLAGS.methods,
      seeds=FLAGS.seeds,
      steps=FLAGS.steps,
      eval_every=FLAGS.eval_every,
      sets=common.parse_settings(FLAGS.set),
      command=common.command_line("experiments.depth"),
    )
    return depth_line(report)

  common.run_main(argv, body)


if __name__ == "__main__":
  define_flags()
  app.run(main, flags_parser=common.parse_flags)
