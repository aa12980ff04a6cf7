"""Shared fixtures: shrunken configs that train in seconds on the embedded digits."""

import importlib
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # configs/ is a plain directory next to the package
  sys.path.insert(0, ROOT)


def shrunken_config(method: str = "distprop", **overrides):
  """The method's real config (``configs/<method>.py``) on a small MLP and 1,000 digits."""
  from configs import smoke

  config = importlib.import_module(f"configs.{method}").get_config()
  config = smoke.shrink(config)
  config.num_steps = 150
  config.log_every = 50
  config.eval_every = 150
  config.checkpoint_every = 75
  config.progress_bar = False
  return apply_overrides(config, overrides)


def apply_overrides(config, overrides: dict):
  """``{"a.b": v}`` sets ``config.a.b = v``."""
  for key, value in overrides.items():
    node = config
    *path, last = key.split(".")
    for p in path:
      node = node[p]
    node[last] = value
  return config


@pytest.fixture
def make_config():
  return shrunken_config


@pytest.fixture
def tfds_mock(monkeypatch):
  """tfds.testing.mock_data with its data_source __getitems__ bug fixed.

  In tfds 4.9.10 mock_data installs ``partial(_getitems, generator=...)``
  as an *instance* attribute of a MagicMock, so it is not bound and the call
  fails with "missing 1 required positional argument: 'record_keys'".
  ``__getitem__`` works (MagicMock binds supported dunders on the type).
  """
  tfds = pytest.importorskip("tensorflow_datasets")
  from tensorflow_datasets.testing import mocking

  def getitems(record_keys, generator, serialized=False):
    assert not serialized
    return [generator[k] for k in record_keys]

  monkeypatch.setattr(mocking, "_getitems", getitems)

  def mock(num_examples):
    return tfds.testing.mock_data(num_examples=num_examples)

  return mock


@pytest.fixture(scope="session", autouse=True)
def compilation_cache(tmp_path_factory):
  """One persistent compilation cache per test session, shared by xdist's workers: many
  tests build the same shrunken experiment, and XLA's compile is most of a short run's
  time on a small CPU. The programs and their results are the same with or without it."""
  import jax

  base = tmp_path_factory.getbasetemp()
  root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
  path = root / "jax_compilation_cache"
  path.mkdir(exist_ok=True)
  jax.config.update("jax_compilation_cache_dir", str(path))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  yield
