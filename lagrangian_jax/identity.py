"""A run's identity: the config keys that decide what its checkpoints mean, fingerprinted.

Two configs are the same run when every key but the run-only ones (:data:`RUN_KEYS`:
cadences, progress bar, evaluation batching, worker counts, the device mesh, the
convolution's implementation, the number of steps, which may grow, the per-device batch
size, whose global batch ``batch_size`` is compared, the profiler and the compilation
cache) is equal. The
fingerprint is the SHA-256 of the canonical JSON (sorted keys, no spaces) of those keys,
its first 16 hex digits; :func:`result_fingerprint` adds ``num_steps`` (what a finished
summary means: the sweep's trial cache keys on it).

A run's record is ``<workdir>/run.json``: the identity and fingerprint it runs under, and
its history, one entry per start or resume (time, command line, step, fingerprint and the
keys it changed). ``config.json`` is the config the run started with, never rewritten.
:func:`check_same_run` refuses to resume under another identity with one line naming the
keys that differ; ``config.allow_changes`` names keys (or sections) a resume may change
on purpose (a lower learning rate after a divergence), and the history records it.

Example:
  >>> from configs import base
  >>> a, b = base.get_config(), base.get_config()
  >>> b.num_steps, b.log_every = 5000, 1  # run-only: the same run
  >>> fingerprint(a) == fingerprint(b)
  True
  >>> b.data.seed = 1
  >>> differences(identity(a), identity(b))
  ['config.data.seed: 0 there, 1 now']
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import sys
import time

from lagrangian_jax import errors
from lagrangian_jax import paths

# Keys that change how a run is run (logged, evaluated, checkpointed, spread over
# devices), never what a checkpoint holds or what the next step computes from it.
# ``num_steps``: a checkpoint at step s means the same in a run of any length (no rate
# schedule reads it); a checkpoint past num_steps is refused by the loop itself.
RUN_KEYS = frozenset(
  {
    "num_steps",
    "log_every",
    "eval_every",
    "checkpoint_every",
    "keep_checkpoints",
    "progress_bar",
    "evaluators",
    "eval_batch_size",
    "allow_changes",
    "divergence_threshold",
    "data.workers",
    "data.prefetch",
    "mesh.num_devices",
    "mesh.data",
    "mesh.stage",
    "network.conv_impl",
    # the global batch (batch_size, resolved from it) decides what a checkpoint means
    "per_device_batch_size",
    "profile_steps",
    "compilation_cache_dir",
  }
)

RECORD = "run.json"


def flatten(tree: dict, prefix: str = "") -> dict:
  """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``.

  >>> flatten({"a": {"b": 1}, "c": 2})
  {'a.b': 1, 'c': 2}
  """
  out = {}
  for k, v in tree.items():
    if isinstance(v, dict):
      out.update(flatten(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def config_keys(config) -> dict:
  """Every key of ``config`` (a ``ConfigDict`` or a plain dict) as ``{"a.b": value}``,
  values as JSON writes them."""
  tree = config if isinstance(config, dict) else json.loads(config.to_json_best_effort())
  return flatten(json.loads(json.dumps(tree)))


def identity(config) -> dict:
  """The keys that decide what a run's checkpoints mean: all but :data:`RUN_KEYS`."""
  return {k: v for k, v in config_keys(config).items() if k not in RUN_KEYS}


def _digest(keys: dict) -> str:
  canonical = json.dumps(keys, sort_keys=True, separators=(",", ":"))
  return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def fingerprint(config) -> str:
  """The run's fingerprint: 16 hex digits of SHA-256 of :func:`identity`'s canonical JSON."""
  return _digest(identity(config))


def result_fingerprint(config) -> str:
  """:func:`fingerprint` with ``num_steps``: what a finished run's summary means."""
  return _digest({**identity(config), "num_steps": config_keys(config)["num_steps"]})


def differences(old: dict, new: dict, allowed=()) -> list[str]:
  """``"config.k: <old> there, <new> now"`` for each key both have and that differs,
  except those ``allowed`` names (a key or a section, ``learning_rates``). Keys only one
  side has (added to the configs since) are not compared. The method and the data keys
  come first (what a reader most needs to see), then the rest in order."""

  def is_allowed(key):
    return any(key == a or key.startswith(a + ".") for a in allowed)

  return [
    f"config.{k}: {old[k]!r} there, {new[k]!r} now"
    for k in sorted(old.keys() & new.keys(), key=lambda k: (k != "method", k[:5] != "data.", k))
    if old[k] != new[k] and not is_allowed(k)
  ]


def _allowed(config) -> list[str]:
  text = config_keys(config).get("allow_changes", "") or ""
  allowed = [a.strip() for a in text.split(",") if a.strip()]
  keys = config_keys(config)
  for a in allowed:
    if not any(k == a or k.startswith(a + ".") for k in keys):
      raise errors.ConfigError(f"config.allow_changes: {a!r} is no config key or section")
  return allowed


def read_record(workdir: str) -> dict | None:
  """The run's record (``run.json``); for a run written before records, one made from its
  ``config.json``; None when ``workdir`` holds neither."""
  path = os.path.join(workdir, RECORD)
  if paths.exists(path):
    return paths.read_json(path)
  path = os.path.join(workdir, "config.json")
  if paths.exists(path):
    keys = identity(paths.read_json(path))
    return {"identity": keys, "fingerprint": _digest(keys), "history": []}
  return None


def check_same_run(workdir: str, config) -> None:
  """Refuses ``config`` for the run in ``workdir`` when their identities differ, in one
  line naming the keys (at most three, and how many more)."""
  record = read_record(workdir)
  if record is None:
    return
  diff = differences(record["identity"], identity(config), _allowed(config))
  if diff:
    more = f" and {len(diff) - 3} more" if len(diff) > 3 else ""
    raise errors.ConfigError(
      f"{workdir} holds a run that does not match this config ({'; '.join(diff[:3])}{more}); "
      "resume with the config that wrote it, name the keys in --config.allow_changes to "
      "change them on purpose, or use a new --workdir"
    )


def command_line() -> str:
  """The command that started this process, as a shell would read it back."""
  return shlex.join(getattr(sys, "orig_argv", sys.argv))


def write_start(workdir: str, config, step: int) -> None:
  """Records a start (``step`` 0: a new record, and ``config.json``) or a resume (an entry
  appended to the history, with the keys it changed)."""
  new = identity(config)
  record = read_record(workdir) if step > 0 else None
  entry = {
    "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    "command": command_line(),
    "step": int(step),
    "fingerprint": _digest(new),
  }
  if record is None:
    record = {"history": []}
  else:
    changed = differences(record["identity"], new)
    if changed:
      entry["changed"] = changed
  if step == 0 or not paths.exists(os.path.join(workdir, "config.json")):
    paths.write_text(os.path.join(workdir, "config.json"), config.to_json_best_effort(indent=2))
  record.update(identity=new, fingerprint=entry["fingerprint"])
  record["history"].append(entry)
  # the other processes read it: written whole (paths.write_text), never half-written
  paths.write_json(os.path.join(workdir, RECORD), record)


# ----------------------------------------------------------------------------------
# Which program a folder belongs to
# ----------------------------------------------------------------------------------

OWNER = "owner.json"

# program -> (what it is called, the files that show its folder, for folders written
# before owner.json existed)
PROGRAMS = {
  "run": ("a training run", ("run.json", "config.json", "checkpoints", "metrics.jsonl")),
  "table1": ("a Table 1 report", ("table1.json",)),
  "depth": ("a depth report", ("depth.json",)),
  "sweep": ("a sweep", ("trials.jsonl", "best.json")),
}


def owner(workdir: str) -> str | None:
  """The program whose output ``workdir`` holds: its ``owner.json``, else the first whose
  files are there; None for a missing or unclaimed folder."""
  path = os.path.join(workdir, OWNER)
  if paths.exists(path):
    return paths.read_json(path)["program"]
  present = set(paths.listdir(workdir))
  return next((p for p, (_, files) in PROGRAMS.items() if present & set(files)), None)


def claim(workdir: str, program: str, write: bool = True) -> None:
  """Refuses ``workdir`` when another program's output is there; else marks it as
  ``program``'s (``owner.json``; a training run's ``run.json`` marks its folder).

  >>> import tempfile
  >>> d = tempfile.mkdtemp()
  >>> claim(d, "table1"); owner(d)
  'table1'
  >>> try:
  ...   claim(d, "depth")
  ... except errors.ConfigError as e:
  ...   print(str(e).split(" holds ")[1])
  a Table 1 report (owner.json); a depth report writes only into its own folder: use another --workdir
  """
  found, marked = owner(workdir), paths.exists(os.path.join(workdir, OWNER))
  if found is not None and found != program:
    raise errors.ConfigError(
      f"{workdir} holds {PROGRAMS[found][0]} ({OWNER if marked else 'its files'}); "
      f"{PROGRAMS[program][0]} writes only into its own folder: use another --workdir"
    )
  if write and program != "run" and not marked:
    paths.makedirs(workdir)
    paths.write_json(os.path.join(workdir, OWNER), {"program": program}, indent=None)


# ----------------------------------------------------------------------------------
# Processes of one run agree
# ----------------------------------------------------------------------------------


def versions() -> dict:
  """The versions of the libraries a run's arithmetic and checkpoints depend on."""
  import importlib.metadata as metadata

  import jax

  import lagrangian_jax

  out = {"jax": jax.__version__, "lagrangian_jax": lagrangian_jax.__version__}
  for name in ("jaxlib", "flax", "optax", "orbax-checkpoint", "numpy"):
    try:
      out[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
      out[name] = None
  return out


def _hash32(value) -> int:
  digest = hashlib.sha256(json.dumps(value, sort_keys=True).encode()).digest()
  return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def _disagreement(names: list[str], table, values: list) -> str | None:
  """The first of ``names`` whose hash differs between the rows of ``table`` (one row per
  process), as one line; None when every process agrees."""
  import jax

  me = jax.process_index()
  for j, name in enumerate(names):
    column = [int(x) for x in table[:, j]]
    others = [p for p, h in enumerate(column) if h != column[me]]
    if others:
      return (
        f"{name} differs across processes: {values[j]!r} on process {me}, another value on "
        f"process {', '.join(map(str, others))}; run the same command and the same "
        "installation on every process"
      )
  return None


def check_processes_agree(config) -> None:
  """Refuses to run when the processes of a multi-process run were given different
  configs (any key: a different ``num_steps`` would hang a collective) or run different
  library versions: every process allgathers a 31-bit hash of each key and version and
  raises one ``ConfigError`` naming the first that differs. A no-op for one process.
  """
  import jax
  from jax.experimental import multihost_utils
  import numpy as np

  if jax.process_count() == 1:
    return
  items = {f"the version of {k}": v for k, v in versions().items()}
  items.update({f"config.{k}": v for k, v in sorted(config_keys(config).items())})
  names, values = list(items), list(items.values())
  # first the names (the same code has the same keys), then one hash per key
  shape = multihost_utils.process_allgather(
    np.asarray([len(names), _hash32(names)], np.int32)
  ).reshape(jax.process_count(), 2)
  line = _disagreement(["the list of config keys"], shape[:, 1:], [f"{len(names)} keys"])
  if line is None:
    hashes = np.asarray([_hash32(v) for v in values], np.int32)
    table = multihost_utils.process_allgather(hashes).reshape(jax.process_count(), -1)
    line = _disagreement(names, table, values)
  if line is not None:
    raise errors.ConfigError(line)
