"""The sweep program: trials on a shrunken config, picked by validation accuracy."""

import json
import os
import subprocess
import sys

import pytest

from experiments import sweep
from experiments.common import apply_overrides
from lagrangian_jax import errors
from tests.conftest import ROOT
from tests.conftest import shrunken_config


@pytest.mark.slow
def test_sweep_runs_every_trial_and_picks_by_validation(tmp_path):
  config = shrunken_config("distprop", num_steps=20, eval_every=20, checkpoint_every=20)
  space = sweep.parse_grid("learning_rates.weights=0.0,0.01 distprop.margin=0.1")
  rows, best = sweep.run_sweep(config, str(tmp_path), space)
  assert [r["overrides"]["learning_rates.weights"] for r in rows] == [0.0, 0.01]
  assert best == max(rows, key=lambda r: r["validation_accuracy"])
  assert json.load(open(tmp_path / "best.json")) == json.loads(json.dumps(best))
  assert len(open(tmp_path / "trials.csv").read().splitlines()) == 3
  # a rerun resumes: nothing is trained again
  mtime = os.path.getmtime(tmp_path / "trials" / "weights=0.0_margin=0.1" / "summary.json")
  again, _ = sweep.run_sweep(config, str(tmp_path), space)
  assert again == rows
  assert os.path.getmtime(tmp_path / "trials" / "weights=0.0_margin=0.1" / "summary.json") == mtime


def test_random_draw_is_a_seeded_subset():
  space = sweep.parse_grid("a=1,2,3 b=x,y")
  drawn = sweep.trials(space, draw=3, seed=1)
  assert len(drawn) == 3 and drawn == sweep.trials(space, draw=3, seed=1)
  assert all(d in sweep.trials(space) for d in drawn)


def test_bad_grid_and_unknown_key_are_one_line_errors(tmp_path):
  with pytest.raises(errors.ConfigError, match="--grid"):
    sweep.parse_grid("learning_rates.weights")
  config = shrunken_config("distprop")
  # grid values are parsed as literals and cast to the key's type ("2" for a split string)
  assert apply_overrides(config, {"network.split": 2}).network.split == "2"
  assert apply_overrides(config, {"learning_rates.aux": 1}).learning_rates.aux == 1.0
  with pytest.raises(errors.ConfigError, match="config.learning_rates.nope: no such key"):
    apply_overrides(config, {"learning_rates.nope": 1.0})
  proc = subprocess.run(
    [
      sys.executable,
      "-m",
      "experiments.sweep",
      "--config=configs/smoke.py",
      f"--workdir={tmp_path}/s",
      "--grid=nope=1",
    ],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert proc.returncode == 1
  assert [l for l in proc.stderr.splitlines() if l.startswith("error: ")] == [
    "error: config.nope: no such key"
  ]
