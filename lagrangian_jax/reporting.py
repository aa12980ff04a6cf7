"""What a person reads: a progress bar, JSON-lines metrics and PNG plots."""

from __future__ import annotations

import json
import os
import sys

import jax
import tqdm

from lagrangian_jax import errors
from lagrangian_jax import paths


def say(line: str) -> None:
  """A warning or progress line on stderr, from process 0 only (one line per run)."""
  if jax.process_index() == 0:
    print(line, file=sys.stderr, flush=True)


class MetricsWriter:
  """Writes one JSON object per line of ``path``; only process 0 writes.

  A local file is appended to (a crash may tear its last line: :func:`read_metrics`
  drops it). An object store (``gs://``) has no append: the records (those already in
  the file, then each one written) are kept in memory and the whole object is rewritten
  at each :meth:`write`. One object keeps ``metrics.jsonl`` the same file every reader
  knows, and each rewrite replaces it whole, so it is never torn; the cost, a rewrite of
  ``n`` records per record, is small at the rate records are written (every
  ``log_every`` / ``eval_every`` steps).

  >>> import os, tempfile
  >>> path = os.path.join(tempfile.mkdtemp(), "metrics.jsonl")
  >>> w = MetricsWriter(path); w.write({"step": 1}); w.write({"step": 2}); w.close()
  >>> read_metrics(path)
  [{'step': 1}, {'step': 2}]
  """

  def __init__(self, path: str, enabled: bool = True):
    self._path, self._f, self._records = path, None, None
    if not enabled:
      return
    if paths.is_remote(path):
      self._records = [json.dumps(r) for r in read_metrics(path)]
    else:
      self._f = open(path, "a")  # noqa: SIM115 (held open for the run)

  def write(self, record: dict) -> None:
    line = json.dumps(record)
    if self._f is not None:
      self._f.write(line + "\n")
      self._f.flush()
    elif self._records is not None:
      self._records.append(line)
      paths.write_text(self._path, "".join(r + "\n" for r in self._records))

  def close(self) -> None:
    if self._f is not None:
      self._f.close()


def read_metrics(path: str) -> list[dict]:
  """The records of a metrics file (``[]`` if there is none).

  A torn last line (a crash in the middle of a write) is dropped: the run resumes from its
  checkpoint and writes that record again. A torn line before it is a damaged file: a
  ``DataError`` names the file and the line.
  """
  if not paths.exists(path):
    return []
  text = paths.read_text(path)
  lines = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
  records = []
  for i, (n, line) in enumerate(lines):
    try:
      records.append(json.loads(line))
    except json.JSONDecodeError as e:
      if i == len(lines) - 1:
        break
      raise errors.DataError(f"{path}: line {n} is not a JSON record ({e})") from None
  return records


def truncate_metrics(path: str, step: int) -> None:
  """Drops records written after ``step`` (by a run that was killed before saving)."""
  records = [r for r in read_metrics(path) if r["step"] <= step]
  paths.write_text(path, "".join(json.dumps(r) + "\n" for r in records))


def progress(total: int, initial: int, enabled: bool = True):
  return tqdm.tqdm(
    total=total,
    initial=initial,
    disable=not enabled,
    dynamic_ncols=True,
    mininterval=2.0 if sys.stderr.isatty() else 30.0,
    file=sys.stderr,
    desc="train",
  )


def postfix(train: dict, last_eval: dict | None) -> dict:
  out = {}
  if "loss" in train:
    out["loss"] = f"{train['loss']:.4f}"
  if "defect_0" in train:
    out["defect"] = f"{sum(v for k, v in train.items() if k.startswith('defect_')):.3g}"
  if last_eval:
    out["test_acc"] = f"{last_eval['test_accuracy']:.4f}"
  return out


def plot_metrics(metrics_path: str, workdir: str) -> list[str]:
  """Writes ``accuracy.png`` and ``defect.png`` (mean |defect| per split, log scale)."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  evals = [r for r in read_metrics(metrics_path) if r.get("kind") == "eval"]
  if not evals:
    return []
  steps = [r["step"] for r in evals]
  written = []
  fig, ax = plt.subplots(figsize=(6, 4))
  for key, label in (("test_accuracy", "test"), ("validation_accuracy", "validation")):
    ax.plot(steps, [r[key] for r in evals], marker="o", label=label)
  ax.set_xlabel("step")
  ax.set_ylabel("top-1 accuracy (real forward pass)")
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  written.append(paths.save_figure(fig, os.path.join(workdir, "accuracy.png")))
  plt.close(fig)

  keys = sorted(k for k in evals[-1] if k.startswith("defect_"))
  fig, ax = plt.subplots(figsize=(6, 4))
  for k in keys:
    values = [max(r.get(k, 0.0), 1e-12) for r in evals]
    ax.plot(steps, values, marker="o", label=f"split {k.split('_')[1]}")
  ax.set_yscale("log")
  ax.set_xlabel("step")
  ax.set_ylabel("mean |defect| on training data")
  ax.grid(alpha=0.3)
  if keys:
    ax.legend()
  fig.tight_layout()
  written.append(paths.save_figure(fig, os.path.join(workdir, "defect.png")))
  plt.close(fig)
  return written
