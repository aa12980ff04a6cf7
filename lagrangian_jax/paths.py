"""Files of a workdir, local or on an object store (``gs://``, ``s3://``): ``etils.epath``.

Every file a run or an experiment program writes goes through here, so a ``--workdir``
on a bucket works like a local one. An object store has no append and no rename, but
writes each object whole when it is closed: :func:`write_text` writes a local file
through a temporary and a rename (a reader never sees half of it) and a remote object
directly (it appears whole). Local relative paths are made absolute where a library
needs it (:func:`resolve`); a remote path is kept as it is.

>>> import tempfile
>>> d = os.path.join(tempfile.mkdtemp(), "run")
>>> makedirs(d); write_json(os.path.join(d, "a.json"), {"x": 1}); listdir(d)
['a.json']
>>> read_json(os.path.join(d, "a.json")), exists(os.path.join(d, "b.json"))
({'x': 1}, False)
>>> is_remote("gs://bkt/run"), str(resolve("gs://bkt/run")), is_remote(d)
(True, 'gs://bkt/run', False)
"""

from __future__ import annotations

import io
import json
import os
import uuid

from etils import epath

PathLike = str | os.PathLike


def is_remote(path: PathLike) -> bool:
  """Whether ``path`` is a URL (``gs://b/run``): a store reached through a library, not
  the local filesystem."""
  return "://" in os.fspath(path)


def resolve(path: PathLike) -> epath.Path:
  """``path`` as an ``epath.Path``; a local one made absolute (orbax wants that), a
  remote one unchanged (``os.path.abspath`` would turn ``gs://b/run`` into
  ``$CWD/gs:/b/run``)."""
  path = os.fspath(path)
  return epath.Path(path if is_remote(path) else os.path.abspath(os.path.expanduser(path)))


def exists(path: PathLike) -> bool:
  return epath.Path(path).exists()


def isdir(path: PathLike) -> bool:
  return epath.Path(path).is_dir()


def makedirs(path: PathLike) -> None:
  """Creates the folder ``path`` and its parents (an object store has no folders: a
  no-op there until a file is written under it)."""
  epath.Path(path).mkdir(parents=True, exist_ok=True)


def listdir(path: PathLike) -> list[str]:
  """The names in the folder ``path``, sorted (``[]`` when it does not exist)."""
  p = epath.Path(path)
  return sorted(c.name for c in p.iterdir()) if p.is_dir() else []


def remove(path: PathLike) -> None:
  """Deletes the file ``path`` if it is there."""
  p = epath.Path(path)
  if p.exists():
    p.unlink()


def read_text(path: PathLike) -> str:
  return epath.Path(path).read_text()


def write_bytes(path: PathLike, data: bytes) -> None:
  """Writes ``data`` whole: locally through a temporary and a rename, remotely as one
  object (it appears when it is complete)."""
  p = epath.Path(path)
  if is_remote(path):
    p.write_bytes(data)
    return
  tmp = p.with_name(f"{p.name}.{uuid.uuid4().hex[:8]}.tmp")
  tmp.write_bytes(data)
  tmp.replace(p)


def write_text(path: PathLike, text: str) -> None:
  """Writes ``text`` whole (:func:`write_bytes`): another process never reads half."""
  write_bytes(path, text.encode("utf-8"))


def read_json(path: PathLike):
  return json.loads(read_text(path))


def write_json(path: PathLike, obj, indent: int | None = 2) -> None:
  write_text(path, json.dumps(obj, indent=indent))


def save_figure(fig, path: PathLike, dpi: int = 100) -> str:
  """Renders a matplotlib ``fig`` to PNG bytes and writes them to ``path`` (``savefig``
  itself opens only local files); returns ``path``."""
  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=dpi)
  write_bytes(path, buf.getvalue())
  return os.fspath(path)


def probe_write(folder: PathLike) -> None:
  """Writes and deletes a small file in ``folder`` (which must exist, or be on an object
  store): an ``OSError`` or the store's own error when this process cannot write there."""
  p = epath.Path(folder) / f".write_probe_{uuid.uuid4().hex}"
  p.write_text("probe")
  p.unlink()
