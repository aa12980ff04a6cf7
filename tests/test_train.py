"""End-to-end runs of every method on shrunken configs, and what a run leaves behind."""

import json
import os

import numpy as np
import pytest

from lagrangian_jax import evaluators
from lagrangian_jax import methods
from lagrangian_jax import state as state_lib
from lagrangian_jax import train
from lagrangian_jax.data import feed as feed_lib
from tests.conftest import ROOT
from tests.conftest import shrunken_config

METHODS = list(methods.METHODS)


def test_every_method_has_its_config():
  for name in METHODS:
    assert os.path.exists(os.path.join(ROOT, "configs", f"{name}.py")), name


@pytest.mark.parametrize("method", METHODS)
def test_each_method_trains_well_above_chance(method, tmp_path):
  summary = train.train_and_evaluate(shrunken_config(method), str(tmp_path))
  assert summary["method"] == method
  assert summary["steps"] == 150
  # Chance is 0.10 on ten digit classes; 150 steps of batch 50 visit each row of the
  # per-example tables only 7.5 times, so the lifted methods are still early.
  # GDA is the slowest of them (configs/gda.py: still rising at 700 steps, diverging at
  # larger dual rates); measured 0.354 here (0.359 with the primal's dual rule), chance 0.10.
  assert summary["test_accuracy"] > (0.25 if method == "gda" else 0.5), summary
  assert np.isfinite(summary["final_defect"])


@pytest.mark.parametrize("solver", ["past_extragradient", "gda"])
def test_other_solvers_drive_distprop(solver, tmp_path):
  config = shrunken_config("distprop", solver=solver)
  summary = train.train_and_evaluate(config, str(tmp_path))
  assert summary["solver"] == solver
  assert summary["test_accuracy"] > 0.5, summary


def test_run_writes_metrics_plots_summary_and_line(tmp_path):
  config = shrunken_config(
    "distprop", num_steps=60, log_every=20, eval_every=30, checkpoint_every=30
  )
  summary = train.train_and_evaluate(config, str(tmp_path))
  files = set(os.listdir(tmp_path))
  assert {
    "metrics.jsonl",
    "summary.json",
    "accuracy.png",
    "defect.png",
    "config.json",
    "checkpoints",
  } <= files
  records = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
  # every log step, and every checkpoint step (its metrics are checked finite before saving)
  assert [r["step"] for r in records if r["kind"] == "train"] == [20, 30, 40, 60]
  evals = [r for r in records if r["kind"] == "eval"]
  assert [r["step"] for r in evals] == [30, 60]
  assert {"test_accuracy", "validation_accuracy", "defect_0", "mean_defect"} <= set(evals[0])
  assert json.load(open(tmp_path / "summary.json")) == json.loads(json.dumps(summary))
  line = train.summary_line(summary)
  fields = dict(kv.split("=") for kv in line.split()[1:])
  assert line.startswith("SUMMARY ")
  assert fields["method"] == "distprop" and fields["steps"] == "60"
  assert float(fields["test_accuracy"]) == pytest.approx(summary["test_accuracy"], abs=1e-4)
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["30", "60"]


def test_evaluation_is_the_real_forward_pass(tmp_path):
  """Test accuracy equals argmax of f_L(...f_0(x)) computed independently."""
  from lagrangian_jax import networks

  config = shrunken_config("distprop", num_steps=20, eval_every=20, checkpoint_every=20)
  exp = state_lib.build_experiment(config)
  state = exp.initial_state
  for step in range(20):
    state, _ = exp.train_step(state, feed_lib.make_batch(exp, step))
  accuracy_fn = evaluators.accuracy_totals(exp.net, exp.method)
  weights = state_lib.current_params(state)["primal"]["weights"]
  got = float(evaluators.evaluate(exp.dataset.test, weights, accuracy_fn, 250)["accuracy"][0])
  weights = state_lib.unstack(weights)  # the only seed
  h = exp.dataset.test.images
  for i in range(len(exp.net.segments)):
    h = networks.apply_segment(exp.net, weights, i, h)
  want = float(np.mean(np.argmax(np.asarray(h), -1) == exp.dataset.test.labels))
  assert got == pytest.approx(want, abs=1e-6)


def test_tfds_mock_data_end_to_end(tfds_mock, tmp_path):
  config = shrunken_config("distprop", num_steps=40, eval_every=40, checkpoint_every=40)
  config.data.name = "tfds:mnist"
  config.data.max_train_examples = 0
  config.eval_train_examples = 200
  with tfds_mock(num_examples=400):
    summary = train.train_and_evaluate(config, str(tmp_path))
  assert summary["dataset"].endswith("mnist")
  assert 0.0 <= summary["test_accuracy"] <= 1.0
  assert np.isfinite(summary["final_defect"])
