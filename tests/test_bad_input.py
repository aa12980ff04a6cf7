"""Bad input: each a one-line error that names the key or path, never a deep traceback."""

import os
import subprocess
import sys

import pytest

from lagrangian_jax import data as data_lib
from lagrangian_jax import errors
from lagrangian_jax import state as state_lib
from tests.conftest import ROOT
from tests.conftest import apply_overrides
from tests.conftest import shrunken_config


@pytest.mark.parametrize(
  "overrides, needle",
  [
    ({"method": "sgd_magic"}, "config.method: must be one of ['backprop'"),
    ({"solver": "newton"}, "config.solver: must be one of ['', "),
    ({"optimizer": "lion"}, "config.optimizer: must be one of ['adagrad'"),
    ({"learning_rates.weights": -0.1}, "config.learning_rates.weights: must be a non-negative"),
    ({"learning_rates.dual": -1.0}, "config.learning_rates.dual: must be a non-negative"),
    ({"distprop.margin": -0.5}, "config.distprop.margin: must be a non-negative number, got -0.5"),
    ({"distprop.sigma_floor": 0.0}, "config.distprop.sigma_floor: must be a positive number"),
    ({"distprop.multipliers": "row"}, "config.distprop.multipliers: must be one of"),
    ({"network.split": "7"}, "config.network.split: value(s) [7] out of range"),
    ({"network.split": "x,y"}, "config.network.split: must be 'default', 'every' or comma"),
    ({"network.name": "resnet"}, "config.network.name: must be one of ['mnist_cnn'"),
    ({"batch_size": 0}, "config.batch_size: must be a positive int, got 0"),
    ({"mesh.num_devices": 64}, "config.mesh.num_devices: 64 requested"),
  ],
)
def test_bad_config_values_name_the_key(overrides, needle):
  config = apply_overrides(shrunken_config("distprop"), overrides)
  with pytest.raises(errors.ConfigError) as e:
    state_lib.build_experiment(config)
  message = str(e.value)
  assert needle in message, message
  assert "\n" not in message


def test_unknown_data_set_names_it():
  config = shrunken_config("distprop")
  config.data.name = "mnist_9000"
  with pytest.raises(data_lib.DataError, match="mnist_9000"):
    state_lib.build_experiment(config)


def test_missing_data_directory_names_the_path(tmp_path):
  config = shrunken_config("distprop")
  config.data.name = "idx"
  config.data.data_dir = str(tmp_path / "nowhere")
  with pytest.raises(data_lib.DataError, match="nowhere"):
    state_lib.build_experiment(config)


def _launch(*args, timeout=300):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.run(
    [sys.executable, "-m", "experiments.main", *args],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=timeout,
  )


def test_launcher_prints_one_line_and_exits_nonzero(tmp_path):
  cases = [
    (["--config.learning_rates.weights=-0.1"], "config.learning_rates.weights"),
    (
      ["--config.data.name=idx", f"--config.data.data_dir={tmp_path}/missing"],
      f"{tmp_path}/missing",
    ),
  ]
  for extra, needle in cases:
    proc = _launch("--config=configs/default.py", f"--workdir={tmp_path}/run", *extra)
    assert proc.returncode == 1, proc.stderr
    lines = [l for l in proc.stderr.splitlines() if l.startswith("error: ")]
    assert len(lines) == 1 and needle in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
