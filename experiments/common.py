"""What the experiment programs share: settings, one report cell's run, seed statistics,
the report files and the command-line wrapper.

``experiments.sweep``, ``experiments.table1`` and ``experiments.depth`` each keep only what
is their own (the grid, Table 1's entries, the depth cells) and import the rest from here:

* :func:`parse_settings` / :func:`apply_overrides`: ``--set=key=value,...`` onto a config;
* :func:`check_at_least_one`: the programs' integer flags;
* :func:`check_run_dir` / :func:`run_or_resume`: one cell of a report trained, resumed
  from its checkpoints, or read back when finished;
* :func:`seed_stats`: mean, population std and per-seed values;
* :func:`write_report`, :func:`pyplot`, :func:`save_figure`: ``<name>.json``,
  ``<name>.md`` and the figures;
* :func:`run_main`: the programs' ``main``, one ``error: ...`` line and exit 1 for an
  expected failure, exit 75 for a preemption; :func:`parse_flags`: the same for a bad
  flag (``app.run(main, flags_parser=common.parse_flags)``).
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Mapping, Sequence
import importlib
import os
import shlex
import sys

from absl import app
from absl import flags
from absl import logging
import numpy as np

from lagrangian_jax import errors
from lagrangian_jax import identity
from lagrangian_jax import paths
from lagrangian_jax import preemption
from lagrangian_jax import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # configs/ is a plain directory next to the package
  sys.path.insert(0, ROOT)

# ----------------------------------------------------------------------------------
# Settings
# ----------------------------------------------------------------------------------


def literal(text: str):
  """``text`` as a Python literal when it parses (``0.01``, ``True``, ``'relu'``), else as is.

  >>> literal("0.01"), literal("relu")
  (0.01, 'relu')
  """
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def parse_settings(items: Sequence[str] | str) -> dict:
  """``--set``'s items -> ``{key: value}``, values as :func:`literal` reads them.

  A piece without ``=`` belongs to the previous value (``network.split=1,2``, kept as the
  string ``"1,2"``).

  Example:
    >>> parse_settings("network.name=mlp,network.depth=3,network.split=1,2")
    {'network.name': 'mlp', 'network.depth': 3, 'network.split': '1,2'}
  """
  if isinstance(items, str):
    items = items.split(",") if items else []
  raw: dict[str, str] = {}
  last = None
  for item in items:
    key, sep, value = item.partition("=")
    if sep:
      if not key or not value:
        raise errors.ConfigError(f"--set: expected key=value items, got {item!r}")
      last = key.strip()
      raw[last] = value
    elif last is None:
      raise errors.ConfigError(f"--set: expected key=value items, got {item!r}")
    else:
      raw[last] += "," + item
  # "1,2" stays a string (a split's spelling), not the tuple Python would read
  return {k: v if "," in v else literal(v) for k, v in raw.items()}


def settings_flag(settings: Mapping) -> str:
  """The ``--set=...`` argument that :func:`parse_settings` reads back as ``settings``.

  >>> settings_flag({"network.depth": 3, "network.split": "1,2"})
  '--set=network.depth=3,network.split=1,2'
  """
  return "--set=" + ",".join(f"{k}={v}" for k, v in settings.items())


def apply_overrides(config, overrides: Mapping):
  """A copy of ``config`` with ``{"a.b": v}`` set; unknown keys name themselves.

  A float or string key casts its value (``2`` -> ``"2"`` for a split, ``1`` -> ``1.0``).
  """
  config = config.copy_and_resolve_references()
  for key, value in overrides.items():
    *parents, last = key.split(".")
    node = config
    for p in parents:
      if p not in node:
        raise errors.ConfigError(f"config.{key}: no such key (at {p!r})")
      node = node[p]
    if last not in node:
      raise errors.ConfigError(f"config.{key}: no such key")
    try:
      node[last] = type(node[last])(value) if isinstance(node[last], (float, str)) else value
    except (TypeError, ValueError) as e:
      raise errors.ConfigError(f"config.{key}: cannot set {value!r} ({e})") from None
  return config


def config_path(module: str) -> str:
  """``configs/<module>.py`` in this tree."""
  return os.path.join(ROOT, "configs", f"{module}.py")


def load_config(module: str):
  """``configs/<module>.py``'s ``get_config()``."""
  return importlib.import_module(f"configs.{module}").get_config()


def check_at_least_one(**values: int) -> None:
  """Raises ``ConfigError("--<flag>: must be >= 1, got ...")`` for the first value below 1."""
  for flag, value in values.items():
    if value < 1:
      raise errors.ConfigError(f"--{flag}: must be >= 1, got {value}")


# ----------------------------------------------------------------------------------
# One cell of a report
# ----------------------------------------------------------------------------------


def check_run_dir(config, run_dir: str) -> None:
  """Refuses a cell's directory whose run another config wrote (resuming would mix them):
  the run's identity (``lagrangian_jax.identity``) must match, and no checkpoint may lie
  past ``num_steps`` (it would be evaluated as if at ``num_steps``)."""
  identity.check_same_run(run_dir, config)
  ckpt_dir = os.path.join(run_dir, "checkpoints")
  steps = [int(d) for d in paths.listdir(ckpt_dir) if d.isdigit()]
  if steps and max(steps) > config.num_steps:
    raise errors.ConfigError(
      f"{ckpt_dir} has a checkpoint at step {max(steps)}, past --steps={config.num_steps}; "
      "use another --workdir"
    )


def finished_summary(config, run_dir: str) -> dict | None:
  """The cell's ``summary.json`` when a run of this identity, budget and seeds wrote it."""
  path = os.path.join(run_dir, "summary.json")
  record = identity.read_record(run_dir)
  if not paths.exists(path) or record is None:
    return None
  if identity.differences(record["identity"], identity.identity(config)):
    return None
  summary = paths.read_json(path)
  if summary.get("steps") != config.num_steps or summary.get("num_seeds") != config.num_seeds:
    return None
  return summary


def run_or_resume(config, run_dir: str) -> tuple[dict | None, str]:
  """``(summary, "")`` of the cell: read back when finished, else trained (or resumed from
  its checkpoints); ``(None, message)`` when training diverged (a result, not a crash)."""
  summary = finished_summary(config, run_dir)
  if summary is not None:
    return summary, ""
  try:
    return train.train_and_evaluate(config, run_dir), ""
  except errors.TrainingError as e:
    return None, str(e)


def seed_stats(values) -> dict:
  """``{"mean", "std", "per_seed"}`` of per-seed values; population std (ddof 0), as the
  summary's ``test_accuracy_std``.

  >>> seed_stats([0.5, 1.0])
  {'mean': 0.75, 'std': 0.25, 'per_seed': [0.5, 1.0]}
  """
  v = np.asarray(values, np.float64)
  return {"mean": float(np.mean(v)), "std": float(np.std(v)), "per_seed": [float(x) for x in v]}


# ----------------------------------------------------------------------------------
# Report files
# ----------------------------------------------------------------------------------


def write_report(workdir: str, name: str, report: dict, markdown: str) -> None:
  """``workdir/<name>.json`` (the report) and ``workdir/<name>.md`` (its table)."""
  paths.write_json(os.path.join(workdir, f"{name}.json"), report)
  paths.write_text(os.path.join(workdir, f"{name}.md"), markdown)


def pyplot():
  """``matplotlib.pyplot`` on the file-only Agg backend (imported when a figure is drawn)."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  return plt


def save_figure(fig, path: str) -> str:
  """Lays out, writes (100 dpi PNG, local or remote: ``paths.save_figure``) and closes
  ``fig``; returns ``path``."""
  fig.tight_layout()
  paths.save_figure(fig, path)
  pyplot().close(fig)
  return path


# ----------------------------------------------------------------------------------
# The command line
# ----------------------------------------------------------------------------------


def command_line(module: str) -> str:
  """The command that started this program, ``python -m <module> <its arguments>``."""
  return " ".join([f"python -m {module}", *map(shlex.quote, sys.argv[1:])])


def run_main(argv: Sequence[str], body: Callable[[], str]) -> None:
  """A program's ``main``: runs ``body`` and prints the line it returns.

  An expected failure (:class:`lagrangian_jax.errors.Error`) prints one ``error: ...``
  line and exits 1; a preemption (SIGTERM: the running cell saved its step) prints its
  line and exits ``preemption.EXIT_STATUS`` (75): rerunning the command resumes. Logging
  is at WARNING unless ``--verbosity`` says otherwise (orbax logs every save at INFO).
  """
  if len(argv) > 1:
    raise app.UsageError("Too many command-line arguments.")
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  try:
    line = body()
  except preemption.Preempted as e:
    print(e, file=sys.stderr, flush=True)
    sys.exit(preemption.EXIT_STATUS)
  except errors.Error as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)
  print(line, flush=True)


def _flag_error(e: Exception, argv: Sequence[str]) -> str:
  r"""One line for a flag that does not parse; a config key that does not exist names the
  argument and keeps ml_collections' suggestion.

  >>> e = AttributeError(KeyError("'num_stepz'\nDid you mean 'num_steps'?"))
  >>> _flag_error(e, ["prog", "--config.num_stepz=3"])
  "--config.num_stepz=3: no such config key; did you mean 'num_steps'?"
  """
  text = str(e)
  for _ in range(2):  # a KeyError's message inside an AttributeError's, each repr-quoted
    try:
      text = ast.literal_eval(text) if text[:1] in "'\"" else text
    except (ValueError, SyntaxError):
      break
  first, _, rest = str(text).partition("\n")
  key = first.strip("'\"")
  if "Did you mean" in rest or isinstance(e, (AttributeError, KeyError)):
    arg = next((a for a in argv[1:] if a.startswith("--") and key and key in a), key)
    hint = rest.strip()
    return f"{arg}: no such config key" + (f"; {hint[0].lower()}{hint[1:]}" if hint else "")
  return " ".join(str(text).split())


def parse_flags(argv: Sequence[str]) -> list[str]:
  """absl's flag parsing with one ``error: ...`` line and exit 1 for a bad flag (a typo'd
  ``--config.<key>`` raises from deep in ml_collections: 55 lines of traceback)."""
  try:
    return flags.FLAGS(argv)
  except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as e:
    print(f"error: {_flag_error(e, argv)}", file=sys.stderr)
    sys.exit(1)
