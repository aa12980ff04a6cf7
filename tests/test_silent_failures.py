"""Issue 20's silent paths: each either does what was asked or says why in one line.

Defect numbers are the issue's: 3 (labels past the class count), 5 (an unknown noise
kind), 7 (rerunning a finished run), 8 (an incomplete newest checkpoint), 9 (a torn
metrics line), 10 (tracebacks, divergence messages, a finite blow-up).
"""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from lagrangian_jax import data as data_lib
from lagrangian_jax import errors
from lagrangian_jax import reporting
from lagrangian_jax import state as state_lib
from lagrangian_jax import train
from tests.conftest import ROOT
from tests.conftest import shrunken_config
from tests.test_data import idx_bytes
from tests.test_data import write_idx_dir

# end-to-end runs and launches: in CI's slow phase, so the README's test command stays short
pytestmark = pytest.mark.slow


def _launch(module, *args, timeout=300):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.run(
    [sys.executable, "-m", module, *args],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=timeout,
  )


def _one_error_line(proc) -> str:
  assert proc.returncode == 1, proc.stderr
  assert "Traceback" not in proc.stderr, proc.stderr
  lines = [l for l in proc.stderr.splitlines() if l.startswith("error: ")]
  assert len(lines) == 1, proc.stderr
  return lines[0]


def _short(**overrides):
  return shrunken_config(
    "distprop",
    **{"num_steps": 20, "log_every": 10, "eval_every": 20, "checkpoint_every": 10, **overrides},
  )


# --- defect 3: the class count is declared or taken from the training labels ---------


def test_a_test_label_past_the_classes_names_file_value_and_index(tmp_path):
  labels = np.arange(10) % 10
  labels[3] = 255
  d = write_idx_dir(tmp_path / "idx", overrides={"t10k-labels-idx1-ubyte": idx_bytes(labels)})
  with pytest.raises(data_lib.DataError) as e:
    data_lib.load_dataset(f"idx:{d}")
  message = str(e.value)
  assert "t10k-labels-idx1-ubyte" in message and "255" in message, message
  assert "index 3" in message and "\n" not in message, message


def test_a_train_label_past_a_declared_class_count_is_refused(tmp_path):
  labels = np.arange(30) % 10
  labels[7] = 11
  d = write_idx_dir(tmp_path / "idx", overrides={"train-labels-idx1-ubyte": idx_bytes(labels)})
  with pytest.raises(data_lib.DataError) as e:
    data_lib.load_dataset(f"idx:{d}", num_classes=10)
  message = str(e.value)
  assert "train-labels-idx1-ubyte" in message and "11" in message, message
  assert "index 7" in message, message
  # undeclared, a class with no training example (10) is refused too: 11 is a typo
  with pytest.raises(data_lib.DataError, match="num_classes"):
    data_lib.load_dataset(f"idx:{d}")
  # declared, twelve classes are what was asked for
  assert data_lib.load_dataset(f"idx:{d}", num_classes=12).num_classes == 12


def test_the_config_declares_the_class_count(tmp_path):
  d = write_idx_dir(tmp_path / "idx")
  config = shrunken_config("distprop")
  config.data.name = f"idx:{d}"
  config.data.max_train_examples = 0
  config.data.num_classes = 9
  with pytest.raises(data_lib.DataError, match="train-labels-idx1-ubyte"):
    state_lib.load_dataset(config)
  config.data.num_classes = 10
  assert state_lib.load_dataset(config).num_classes == 10


def test_check_labels_names_the_first_offender():
  with pytest.raises(data_lib.DataError, match=r"tfds:x train: label -1 at index 2 .*\[0, 3\)"):
    data_lib.check_labels(np.array([0, 2, -1, 7]), 3, "tfds:x train")
  data_lib.check_labels(np.array([0, 2, 1]), 3, "ok")


def test_images_too_small_for_the_network_name_the_key(tmp_path):
  d = write_idx_dir(tmp_path / "idx")  # 6 x 5 images
  config = shrunken_config("distprop")
  config.network.name = "mnist_cnn"
  config.network.split = "default"
  config.network.depth = config.network.width = 0
  config.data.name = f"idx:{d}"
  config.data.max_train_examples = 0
  with pytest.raises(errors.ConfigError) as e:
    state_lib.build_experiment(config)
  message = str(e.value)
  assert message.startswith("config.network") and "too small" in message, message


# --- defect 5: distprop.noise is validated -------------------------------------------


@pytest.mark.parametrize("noise", ["Fixed", "perstep"])
def test_an_unknown_noise_kind_is_refused(noise):
  config = shrunken_config("distprop")
  config.distprop.noise = noise
  with pytest.raises(errors.ConfigError) as e:
    state_lib.build_experiment(config)
  assert "config.distprop.noise" in str(e.value) and noise in str(e.value)


# --- defect 7: finished and half-finished runs ----------------------------------------


def _metrics(workdir):
  return reporting.read_metrics(os.path.join(workdir, "metrics.jsonl"))


def test_rerunning_a_finished_run_says_so_and_does_not_retrain(tmp_path, capsys):
  workdir = str(tmp_path / "run")
  first = train.train_and_evaluate(_short(), workdir)
  records = _metrics(workdir)
  capsys.readouterr()
  again = train.train_and_evaluate(_short(), workdir)
  err = capsys.readouterr().err
  assert "finished" in err and "SUMMARY" in err, err
  assert train.summary_line(again) == train.summary_line(first)
  assert _metrics(workdir) == records  # nothing evaluated or written again


def test_a_finished_run_without_its_summary_completes_it(tmp_path, capsys):
  workdir = str(tmp_path / "run")
  first = train.train_and_evaluate(_short(), workdir)
  os.remove(os.path.join(workdir, "summary.json"))
  again = train.train_and_evaluate(_short(), workdir)
  assert again["test_accuracy"] == first["test_accuracy"]
  with open(os.path.join(workdir, "summary.json")) as f:
    assert json.load(f)["test_accuracy"] == first["test_accuracy"]
  evals = [r for r in _metrics(workdir) if r["kind"] == "eval"]
  assert [r["step"] for r in evals] == [20]  # the final evaluation is not written twice


def test_a_table1_entry_killed_after_its_last_checkpoint_completes_on_rerun(tmp_path):
  # defect 7's report half: the entry's training finished (its last checkpoint saved) but
  # its summary was never written; every rerun of the report crashed until the folder was
  # deleted by hand
  from experiments import table1

  workdir = str(tmp_path / "t1")
  settings = dict(entries=["backprop_adam"], seeds=1, steps=10, batch_size=50, eval_every=10)
  first = table1.run_report(workdir, shrink=True, **settings)
  os.remove(os.path.join(workdir, "backprop_adam", "summary.json"))
  again = table1.run_report(workdir, shrink=True, **settings)
  (a,), (b,) = first["rows"], again["rows"]
  assert b["status"] == "ok" and b["test_accuracy"] == a["test_accuracy"], b
  assert os.path.exists(os.path.join(workdir, "backprop_adam", "summary.json"))


def test_num_steps_zero_runs_and_reruns(tmp_path):
  workdir = str(tmp_path / "run")
  first = train.train_and_evaluate(_short(num_steps=0), workdir)
  again = train.train_and_evaluate(_short(num_steps=0), workdir)
  assert first["steps"] == again["steps"] == 0
  assert again["test_accuracy"] == first["test_accuracy"]


# --- defect 8: an incomplete newest checkpoint folder is skipped -------------------------


@pytest.mark.parametrize("how", ["removed", "emptied"])
def test_an_incomplete_newest_checkpoint_is_skipped(tmp_path, capsys, how):
  workdir = str(tmp_path / "run")
  train.train_and_evaluate(_short(), workdir)
  item = os.path.join(workdir, "checkpoints", "20", "default")
  shutil.rmtree(item)
  if how == "emptied":
    os.mkdir(item)
  capsys.readouterr()
  summary = train.train_and_evaluate(_short(num_steps=30), workdir)
  err = capsys.readouterr().err
  assert summary["resumed_from"] == 10, err
  warnings = [l for l in err.splitlines() if l.startswith("warning: ")]
  assert len(warnings) == 1 and "step 20" in warnings[0] and "incomplete" in warnings[0], err
  assert "new --workdir" not in err, err  # never an invitation to delete good work
  assert os.listdir(item)  # step 20 written again, whole


# --- defect 9: a torn last line of metrics.jsonl ---------------------------------------


def test_read_metrics_drops_a_torn_last_line_and_names_a_torn_middle_one(tmp_path):
  path = tmp_path / "metrics.jsonl"
  path.write_text('{"step": 1}\n{"step": 2}\n{"step": 3, "lo')
  assert reporting.read_metrics(str(path)) == [{"step": 1}, {"step": 2}]
  reporting.truncate_metrics(str(path), 5)
  assert path.read_text() == '{"step": 1}\n{"step": 2}\n'
  path.write_text('{"step": 1}\n{"st\n{"step": 3}\n')
  with pytest.raises(errors.Error, match=r"metrics.jsonl.* line 2"):
    reporting.read_metrics(str(path))


def test_a_run_whose_metrics_end_in_a_torn_line_resumes(tmp_path):
  workdir = str(tmp_path / "run")
  train.train_and_evaluate(_short(num_steps=10), workdir)
  with open(os.path.join(workdir, "metrics.jsonl"), "a") as f:
    f.write('{"step": 11, "kind": "tra')
  summary = train.train_and_evaluate(_short(), workdir)
  assert summary["resumed_from"] == 10 and summary["steps"] == 20
  assert [r["step"] for r in _metrics(workdir) if r["kind"] == "train"] == [10, 20]


# --- defect 10: one line instead of a traceback; divergence said as it is ---------------


def test_a_typo_in_a_config_key_is_one_line_with_the_suggestion(tmp_path):
  proc = _launch(
    "experiments.main",
    "--config=configs/smoke.py",
    f"--workdir={tmp_path}/run",
    "--config.num_stepz=3",
  )
  line = _one_error_line(proc)
  assert "num_stepz" in line and '"num_steps"' in line, line


def test_a_workdir_that_is_a_file_is_one_line(tmp_path):
  path = tmp_path / "afile"
  path.write_text("")
  proc = _launch("experiments.main", "--config=configs/smoke.py", f"--workdir={path}")
  line = _one_error_line(proc)
  assert str(path) in line and "--workdir" in line, line


def test_a_read_only_workdir_is_one_line(tmp_path):
  workdir = tmp_path / "ro"
  workdir.mkdir()
  workdir.chmod(0o555)
  if os.access(workdir, os.W_OK):  # root writes anyway: /proc refuses even root
    workdir = "/proc"
  with pytest.raises(errors.ConfigError) as e:
    train.train_and_evaluate(_short(), str(workdir))
  assert f"--workdir={workdir}" in str(e.value) and "writ" in str(e.value), str(e.value)


def test_sweep_random_negative_is_one_line(tmp_path):
  proc = _launch(
    "experiments.sweep",
    "--config=configs/smoke.py",
    f"--workdir={tmp_path}/sweep",
    "--grid=learning_rates.weights=0.01,0.02",
    "--random=-1",
  )
  assert "--random" in _one_error_line(proc)
  assert not os.path.exists(tmp_path / "sweep" / "trials")


def test_divergence_before_the_first_checkpoint_does_not_claim_one(tmp_path):
  config = _short(checkpoint_every=100, log_every=1)
  config.learning_rates.weights = config.learning_rates.aux = 1e30
  with pytest.raises(errors.TrainingError) as e:
    train.train_and_evaluate(config, str(tmp_path / "run"))
  message = str(e.value)
  assert "diverged" in message and "is kept" not in message, message
  assert "no checkpoint" in message, message


def test_an_exploding_but_finite_loss_stops_the_run(tmp_path):
  # the threshold is set below the loss a fresh network has (~2.3), as a blow-up to 1e29
  # exceeds the default one
  config = _short(divergence_threshold=1.0)
  with pytest.raises(errors.TrainingError) as e:
    train.train_and_evaluate(config, str(tmp_path / "run"))
  message = str(e.value)
  assert "diverged at step 10" in message and "config.divergence_threshold" in message, message
  assert "\n" not in message


def test_the_divergence_threshold_is_validated():
  config = _short(divergence_threshold=-1.0)
  with pytest.raises(errors.ConfigError, match="config.divergence_threshold"):
    state_lib.build_experiment(config)
