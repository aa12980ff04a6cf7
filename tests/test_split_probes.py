"""experiments.split_probes: the probes themselves, and one shrunken run probed end to end."""

import json
import os

import numpy as np
import pytest

from experiments import split_probes
from lagrangian_jax import errors
from lagrangian_jax import train
from tests.test_depth import _deep_config


def test_probes_read_what_they_can_and_no_more():
  rng = np.random.default_rng(0)
  # two Gaussian blobs 8 standard deviations apart: a line separates them
  x = np.concatenate([rng.normal(-4.0, 1.0, (64, 3)), rng.normal(4.0, 1.0, (64, 3))])
  y = np.repeat([0, 1], 64)
  assert split_probes.fit_probe(x, y, x, y, classes=2).validation == 1.0
  # XOR of two noisy bits: a line gets at most 3 of its 4 corners, a hidden layer all
  corners = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
  xor = np.tile(corners, (32, 1)) + rng.normal(0.0, 0.05, (128, 2))
  labels = np.tile([0, 1, 1, 0], 32)
  linear = split_probes.fit_probe(xor, labels, xor, labels, classes=2)
  mlp = split_probes.fit_probe(
    xor, labels, xor, labels, classes=2, hidden=16, steps=300, learning_rate=3e-2
  )
  assert linear.validation <= 0.76  # 0.75 plus a noisy point or two across the line
  assert mlp.validation == 1.0 and mlp.train == 1.0
  # labels that are noise: nothing to read on held-out rows
  noise = rng.normal(size=(400, 5))
  coin = rng.integers(0, 2, 400)
  held_out = split_probes.fit_probe(
    noise[:200], coin[:200], noise[200:], coin[200:], classes=2, hidden=64
  )
  assert held_out.validation < 0.65 < held_out.train


def test_a_short_run_probed_end_to_end(tmp_path):
  config = _deep_config(
    2, **{"num_steps": 4, "eval_every": 4, "checkpoint_every": 4, "data.max_train_examples": 300}
  )
  workdir = str(tmp_path / "run")
  train.train_and_evaluate(config, workdir)
  report = split_probes.probe_run(config, workdir, hidden=32, steps=60)
  assert report["step"] == 4 and report["seed"] == 0
  assert [r["where"] for r in report["rows"]] == ["input", "split0", "split1"]
  for row in report["rows"]:
    for key in ("linear_validation", "mlp_validation", "linear_train", "mlp_train"):
      assert 0.0 <= row[key] <= 1.0
  # the digits are readable from their pixels: far above chance after 60 steps
  assert report["rows"][0]["linear_validation"] > 0.6
  with open(os.path.join(workdir, "split_probes.json")) as f:
    assert json.load(f) == report
  line = split_probes.probes_line(report)
  assert line.startswith("PROBES step=4 seed=0 input=") and " split1=" in line


def test_refusals_name_the_problem(tmp_path):
  config = _deep_config(2, **{"num_steps": 4, "eval_every": 4, "checkpoint_every": 4})
  with pytest.raises(errors.ConfigError, match="--workdir: .* does not exist"):
    split_probes.probe_run(config, str(tmp_path / "nothing"))
  workdir = str(tmp_path / "run")
  train.train_and_evaluate(config, workdir)
  other = _deep_config(2, **{"num_steps": 4, "distprop.margin": 0.5})
  with pytest.raises(errors.ConfigError, match="distprop.margin"):
    split_probes.probe_run(other, workdir)
  with pytest.raises(errors.ConfigError, match="--seed_index: the run has 1 seed"):
    split_probes.probe_run(config, workdir, seed_index=3)
