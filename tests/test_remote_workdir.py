"""A workdir on an object store (``gs://``): the launcher trains, checkpoints, is stopped,
resumes and gives the uninterrupted run's summary, writing nothing under a local ``gs:``.

The store is faked for the test. ``etils.epath`` sends ``gs://`` (without TensorFlow, as
here) to fsspec's ``gcs`` protocol: :class:`_FakeGcs` is registered there, a folder of
``tmp_path`` that, like GCS, refuses appends. Orbax writes array data through
TensorStore's own GCS driver, which does not go through fsspec: its kvstore spec for a
``gs://`` path (``gcs_utils.get_kvstore_for_gcs``) is pointed at the same folder with
TensorStore's ``file`` driver, so the epath-written and TensorStore-written parts of a
checkpoint lie side by side as they would in a bucket.
"""

import importlib
import os

from etils.epath import backend as epath_backend
import fsspec
from fsspec.implementations.local import LocalFileSystem
from orbax.checkpoint._src.path import gcs_utils
import pytest

from lagrangian_jax import checkpoints
from lagrangian_jax import errors
from lagrangian_jax import reporting
from lagrangian_jax import train
from tests.conftest import shrunken_config


class _FakeGcs(LocalFileSystem):
  """``gs://bucket/key`` as ``<root>/bucket/key``; no append (an object store has none)."""

  protocol = ("gs", "gcs")
  root = ""
  read_only = False

  def __init__(self, *args, **kwargs):
    super().__init__(auto_mkdir=True)  # a bucket has no folders to create first

  @classmethod
  def _strip_protocol(cls, path):
    path = os.fspath(path)
    for prefix in ("gs://", "gcs://"):
      if path.startswith(prefix):
        return f"{cls.root}/{path[len(prefix) :]}".rstrip("/")
    return LocalFileSystem._strip_protocol(path)

  def _open(self, path, mode="rb", **kwargs):
    if "a" in mode:
      raise NotImplementedError(f"{path}: an object store cannot append")
    if self.read_only and mode != "rb":
      raise PermissionError(f"403 Forbidden: {path}")
    return super()._open(path, mode, **kwargs)

  def glob(self, path, **kwargs):  # keys within the store, as gcsfs returns them
    return [p[len(self.root) + 1 :] for p in super().glob(path, **kwargs)]


@pytest.fixture
def fake_gcs(tmp_path, monkeypatch):
  """``(store, fs class)``: ``gs://`` served from ``tmp_path/store``; cwd is
  ``tmp_path/cwd``, where ``os.path.abspath("gs://...")`` would have written."""
  store, cwd = tmp_path / "store", tmp_path / "cwd"
  store.mkdir()
  cwd.mkdir()
  monkeypatch.chdir(cwd)
  fs_cls = type("FakeGcs", (_FakeGcs,), {"root": str(store)})
  registry = importlib.import_module("fsspec.registry")._registry  # noqa: SLF001 (no unregister)
  saved = {p: registry.get(p) for p in ("gs", "gcs")}
  for p in saved:
    fsspec.register_implementation(p, fs_cls, clobber=True)
  epath_backend.fsspec_backend._get_filesystem.cache_clear()  # noqa: SLF001

  def kvstore(path):
    bucket, key = gcs_utils.parse_gcs_path(path, add_trailing_slash=False)
    return {"driver": "file", "path": f"{store}/{bucket}/{key}"}

  monkeypatch.setattr(gcs_utils, "get_kvstore_for_gcs", kvstore)
  monkeypatch.setattr(gcs_utils, "is_hierarchical_namespace_enabled", lambda path: False)
  yield store, fs_cls
  for p, cls in saved.items():
    if cls is None:
      registry.pop(p, None)
    else:
      registry[p] = cls
  epath_backend.fsspec_backend._get_filesystem.cache_clear()  # noqa: SLF001


class _Preempted(Exception):
  pass


def _config():
  return shrunken_config(num_steps=40, checkpoint_every=20, log_every=10, eval_every=20)


def _no_local_gs(root):
  return [str(p) for p in root.rglob("*") if p.name.startswith("gs:")]


@pytest.mark.slow
def test_gs_workdir_stops_resumes_and_matches_a_local_run(fake_gcs, tmp_path, monkeypatch):
  store, _ = fake_gcs
  local = train.train_and_evaluate(_config(), str(tmp_path / "local"))

  save = checkpoints.save

  def save_then_stop(ckpt, step, state, feed=None):  # a preemption right after step 20's save
    save(ckpt, step, state, feed)
    if step == 20:
      raise _Preempted

  workdir = "gs://bkt/runs/smoke"
  with monkeypatch.context() as m:
    m.setattr(checkpoints, "save", save_then_stop)
    with pytest.raises(_Preempted):
      train.train_and_evaluate(_config(), workdir)
  run = store / "bkt" / "runs" / "smoke"
  assert sorted(os.listdir(run / "checkpoints")) == ["20"]

  resumed = train.train_and_evaluate(_config(), workdir)
  assert resumed["resumed_from"] == 20
  for key in ("test_accuracy", "validation_accuracy", "final_defect", "defects"):
    assert resumed[key] == local[key], key
  for name in ("run.json", "config.json", "summary.json", "accuracy.png", "defect.png"):
    assert (run / name).is_file(), name
  assert sorted(os.listdir(run / "checkpoints")) == ["20", "40"]

  # the metrics, rewritten whole (no append), hold the uninterrupted run's records
  def steps(path):
    return [(r["kind"], r["step"]) for r in reporting.read_metrics(path)]

  assert steps(str(run / "metrics.jsonl")) == steps(str(tmp_path / "local" / "metrics.jsonl"))
  assert steps("gs://bkt/runs/smoke/metrics.jsonl") == steps(str(run / "metrics.jsonl"))
  assert _no_local_gs(tmp_path) == []

  again = train.train_and_evaluate(_config(), workdir)  # finished: read back, not retrained
  assert again["test_accuracy"] == local["test_accuracy"]


def test_gs_workdir_write_probe_fails_in_one_line(fake_gcs, tmp_path, monkeypatch):
  _, fs_cls = fake_gcs
  monkeypatch.setattr(fs_cls, "read_only", True)
  with pytest.raises(errors.ConfigError, match=r"--workdir=gs://bkt/ro: cannot write there"):
    train._prepare_workdir("gs://bkt/ro")  # noqa: SLF001
  monkeypatch.setattr(fs_cls, "read_only", False)
  train._prepare_workdir("gs://bkt/rw")  # noqa: SLF001
  assert _no_local_gs(tmp_path) == []
