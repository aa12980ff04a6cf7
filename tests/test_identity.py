"""Nothing silent (issue 20): a run's identity guards its resume, the sweep's cache and the
report cells; a sweep's grid is checked before its first trial; a report never writes into
another program's folder."""

import json
import os

import pytest

from experiments import depth
from experiments import sweep
from experiments import table1
from lagrangian_jax import errors
from lagrangian_jax import train
from tests.conftest import shrunken_config

# end-to-end runs and launches: in CI's slow phase, so the README's test command stays short
pytestmark = pytest.mark.slow

SHORT = dict(num_steps=10, log_every=5, eval_every=10, checkpoint_every=5)


def test_resume_under_another_data_split_is_refused_naming_the_key(tmp_path):
  """Defect 2: a rerun with another data.seed (a new test split) used to say "resuming"
  and finish, and overwrite config.json."""
  workdir = str(tmp_path / "run")
  train.train_and_evaluate(shrunken_config("distprop", **SHORT), workdir)
  changed = shrunken_config("distprop", **{**SHORT, "num_steps": 20})
  changed.data.seed = 1
  with pytest.raises(errors.ConfigError) as e:
    train.train_and_evaluate(changed, workdir)
  message = str(e.value)
  assert "\n" not in message and "config.data.seed: 0 there, 1 now" in message, message
  assert json.load(open(os.path.join(workdir, "config.json")))["data"]["seed"] == 0
  # growing num_steps and changing the cadence is the same run: it resumes
  grown = shrunken_config("distprop", **{**SHORT, "num_steps": 20, "log_every": 2})
  assert train.train_and_evaluate(grown, workdir)["resumed_from"] == 10
  record = json.load(open(os.path.join(workdir, "run.json")))
  assert [h["step"] for h in record["history"]] == [0, 10]
  assert json.load(open(os.path.join(workdir, "config.json")))["num_steps"] == 10  # the first


def test_a_learning_rate_changed_on_purpose_is_allowed_and_recorded(tmp_path):
  workdir = str(tmp_path / "run")
  train.train_and_evaluate(shrunken_config("distprop", **SHORT), workdir)
  lower = shrunken_config("distprop", **{**SHORT, "num_steps": 15})
  lower.learning_rates.weights = 0.001
  with pytest.raises(errors.ConfigError, match="config.learning_rates.weights: 0.01 there"):
    train.train_and_evaluate(lower, workdir)
  lower.allow_changes = "learning_rates"
  assert train.train_and_evaluate(lower, workdir)["resumed_from"] == 10
  (last,) = json.load(open(os.path.join(workdir, "run.json")))["history"][1:]
  assert last["changed"] == ["config.learning_rates.weights: 0.01 there, 0.001 now"]


def test_sweep_on_another_base_config_never_reports_the_old_trial(tmp_path):
  """Defect 1: the same grid on another base config into the same folder exited 0 and
  reported the old 20-step DistProp trial as BEST."""
  space = sweep.parse_grid("learning_rates.weights=0.01")
  first = shrunken_config("distprop", **SHORT)
  sweep.run_sweep(first, str(tmp_path), space)
  other = shrunken_config("backprop", **{**SHORT, "num_steps": 20})
  with pytest.raises(errors.ConfigError, match="config.method: 'distprop' there, 'backprop' now"):
    sweep.run_sweep(other, str(tmp_path), space)
  # the same base with more steps is not the cached trial: it resumes and trains on
  longer = shrunken_config("distprop", **{**SHORT, "num_steps": 15})
  rows, best = sweep.run_sweep(longer, str(tmp_path), space)
  summary = json.load(open(tmp_path / "trials" / "weights=0.01" / "summary.json"))
  assert summary["steps"] == 15 and summary["resumed_from"] == 10
  assert best["validation_accuracy"] == summary["validation_accuracy"]


def test_grid_key_twice_and_bad_value_are_refused_before_any_trial(tmp_path):
  """Defect 6: a key given twice kept only its last values; a bad value was found only
  after the earlier trials had trained."""
  with pytest.raises(errors.ConfigError, match="--grid: learning_rates.weights is given twice"):
    sweep.parse_grid("learning_rates.weights=0.01 learning_rates.weights=0.1")
  config = shrunken_config("distprop", **SHORT)
  space = sweep.parse_grid("learning_rates.weights=0.01 optimizer=adagrad,nope")
  with pytest.raises(errors.ConfigError, match="optimizer") as e:
    sweep.run_sweep(config, str(tmp_path / "s"), space)
  assert "\n" not in str(e.value)
  assert not os.path.exists(tmp_path / "s" / "trials"), "a trial ran before the check"
  space = sweep.parse_grid("learning_rates.nope=1")
  with pytest.raises(errors.ConfigError, match="config.learning_rates.nope: no such key"):
    sweep.run_sweep(config, str(tmp_path / "s"), space)


def test_reports_never_write_into_another_programs_folder(tmp_path):
  """Defect 10 (table1/depth part): table1 into a run's folder overwrote its plots."""
  run = str(tmp_path / "run")
  train.train_and_evaluate(shrunken_config("distprop", **SHORT), run)
  before = open(os.path.join(run, "accuracy.png"), "rb").read()
  settings = dict(seeds=1, steps=5, batch_size=50, eval_every=5, shrink=True)
  with pytest.raises(errors.ConfigError, match="holds a training run") as e:
    table1.run_report(run, entries=["backprop_adam"], **settings)
  assert "\n" not in str(e.value)
  with pytest.raises(errors.ConfigError, match="holds a training run"):
    depth.run_report(run, depths=[2], methods=["backprop"], seeds=1, steps=5, eval_every=5)
  assert sorted(os.listdir(run)) == sorted(
    ["accuracy.png", "checkpoints", "config.json", "defect.png", "metrics.jsonl"]
    + ["run.json", "summary.json"]
  )
  assert open(os.path.join(run, "accuracy.png"), "rb").read() == before
  # a table's folder is the table's: depth and a sweep refuse it, table1 reruns there
  t1 = str(tmp_path / "t1")
  table1.run_report(t1, entries=["backprop_adam"], **settings)
  with pytest.raises(errors.ConfigError, match="holds a Table 1 report"):
    depth.run_report(t1, depths=[2], methods=["backprop"], seeds=1, steps=5, eval_every=5)
  with pytest.raises(errors.ConfigError, match="holds a Table 1 report"):
    sweep.run_sweep(shrunken_config("distprop", **SHORT), t1, sweep.parse_grid("seed=1"))
  table1.run_report(t1, entries=["backprop_adam"], **settings)
