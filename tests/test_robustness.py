"""The model-based search (experiments.sweep --space) and the robustness report."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from experiments import robustness
from experiments import sweep
from lagrangian_jax import errors
from tests.conftest import ROOT
from tests.conftest import shrunken_config

SPACE = "learning_rates.weights=log:1e-3:1e-1 distprop.margin=0.0:1.0"


def test_space_forms_and_bad_ranges_are_one_line_errors():
  space = sweep.parse_space(
    SPACE + " batch_size=int:32:64 network.split_activation=cat:relu,deferred"
  )
  assert [r.kind for r in space.values()] == ["log", "float", "int", "cat"]
  assert all(sweep.parse_range(k, sweep.range_spec(r)) == r for k, r in space.items())
  for text, says in [
    ("learning_rates.weights", "expected key=RANGE"),
    ("learning_rates.weights=log:1e-3", "learning_rates.weights=log:1e-3: expected"),
    ("distprop.margin=1.0:0.5", "distprop.margin=1.0:0.5: needs finite LOW < HIGH"),
    ("learning_rates.weights=log:0:1", "a log range needs LOW > 0"),
    ("batch_size=int:32:6.5", "batch_size=int:32:6.5: expected"),
    ("a=cat:relu", "needs two or more distinct values"),
    ("a=0:1 a=0:2", "a is given twice"),
  ]:
    with pytest.raises(errors.ConfigError, match=f"^--space: .*{says}"):
      sweep.parse_space(text)


def test_unknown_key_and_bad_sampler_fail_before_training(tmp_path):
  config = shrunken_config("distprop")
  with pytest.raises(errors.ConfigError, match="^config.distprop.nope: no such key$"):
    sweep.run_search(config, str(tmp_path / "a"), sweep.parse_space("distprop.nope=0:1"), 2)
  with pytest.raises(errors.ConfigError, match="^config.batch_size: cannot set 1.5"):
    sweep.run_search(config, str(tmp_path / "b"), sweep.parse_space("batch_size=1.5:3.0"), 2)
  with pytest.raises(errors.ConfigError, match="^--sampler: must be one of tpe, gp, random"):
    sweep.run_search(config, str(tmp_path / "c"), sweep.parse_space(SPACE), 2, sampler="bayes")
  assert not (tmp_path / "a" / "trials").exists()


def _distance(x):
  return abs(math.log10(x) + 2)  # 0 at x = 0.01


def test_tpe_asks_near_the_good_region_and_depends_only_on_seed_index_history():
  space = sweep.parse_space("x=log:1e-4:1")
  rng = np.random.default_rng(0)
  history = [
    {"overrides": {"x": float(x)}, "validation_accuracy": 1 - _distance(x) / 4, "error": ""}
    for x in 10 ** rng.uniform(-4, 0, 30)
  ]
  tpe = [sweep.ask(space, history, i, sampler="tpe")["x"] for i in range(30, 46)]
  drawn = [sweep.ask(space, history, i, sampler="random")["x"] for i in range(30, 46)]
  # the model's points lie near the best region; random draws over 4 decades do not
  assert np.median([_distance(x) for x in tpe]) < 0.5 < np.median([_distance(x) for x in drawn])
  assert tpe == [sweep.ask(space, history, i, sampler="tpe")["x"] for i in range(30, 46)]
  assert sweep.ask(space, history, 30, seed=1) != sweep.ask(space, history, 30, seed=0)
  # the order the items are given in does not change the points
  ab, ba = sweep.parse_space("a=0:1 b=log:1e-3:1"), sweep.parse_space("b=log:1e-3:1 a=0:1")
  assert [sweep.ask(ab, [], i) for i in range(3)] == [sweep.ask(ba, [], i) for i in range(3)]


def test_search_survives_a_new_config_key_and_refuses_a_changed_one(tmp_path, monkeypatch):
  """A study spans sessions: its folder (owner.json, search.json, trials.jsonl) copied
  elsewhere resumes there, and a key added to the configs since does not throw its trials
  away; a changed key is refused by name. The training is faked (figures from the point)."""
  trained = []

  def fake(trial, run_dir):
    trained.append(run_dir)
    lr = float(trial.learning_rates.weights)
    return {"validation_accuracy": 1 - abs(math.log10(lr) + 2), "test_accuracy": 0.0,
            "final_defect": 0.0, "seconds": 0.0}  # fmt: skip

  monkeypatch.setattr(sweep.train, "train_and_evaluate", fake)
  space = sweep.parse_space("learning_rates.weights=log:1e-3:1e-1")
  config = shrunken_config("distprop")
  first = str(tmp_path / "first")
  rows, _ = sweep.run_search(config, first, space, 3, startup_trials=2)
  assert len(trained) == 3
  # the folder as a search before `distprop.components` existed wrote it: that key absent
  # from its config, every row's fingerprint another
  moved = tmp_path / "moved"
  moved.mkdir()
  (moved / "owner.json").write_bytes((tmp_path / "first" / "owner.json").read_bytes())
  search = json.loads((tmp_path / "first" / "search.json").read_text())
  del search["config"]["distprop.components"]
  (moved / "search.json").write_text(json.dumps(search))
  old_rows = [{**r, "fingerprint": "0" * 16} for r in rows]
  (moved / "trials.jsonl").write_text("".join(json.dumps(r) + "\n" for r in old_rows))
  trained.clear()
  more, _ = sweep.run_search(config, str(moved), space, 4, startup_trials=2)
  assert more[:3] == old_rows and len(trained) == 1  # three replayed, the fourth trained
  assert trained[0].startswith(str(moved / "trials" / "0003_"))
  changed = shrunken_config("distprop", **{"learning_rates.aux": 0.5})
  with pytest.raises(errors.ConfigError, match=r"^--config: .* another config \(config"
                     r"\.learning_rates\.aux: .* there, 0\.5 now\); use another --workdir$"):  # fmt: skip
    sweep.run_search(changed, str(moved), space, 4, startup_trials=2)
  # a folder written before searches recorded their config: replayed by fingerprint only
  legacy = json.loads((tmp_path / "first" / "search.json").read_text())
  del legacy["config"]
  (tmp_path / "first" / "search.json").write_text(json.dumps(legacy))
  trained.clear()
  again, _ = sweep.run_search(config, first, space, 4, startup_trials=2)
  assert again[:3] == rows and len(trained) == 1
  assert "config" in json.loads((tmp_path / "first" / "search.json").read_text())


def test_kept_ranges_and_shares_by_hand():
  space = sweep.parse_space("lr=log:1e-4:1 m=0:1 b=cat:128,256")
  rows = [
    {"overrides": {"lr": 1e-3, "m": 0.2, "b": 128}, "validation_accuracy": 0.90, "error": ""},
    {"overrides": {"lr": 1e-1, "m": 0.6, "b": 128}, "validation_accuracy": 0.82, "error": ""},
    {"overrides": {"lr": 1.0, "m": 0.9, "b": 256}, "validation_accuracy": 0.50, "error": ""},
    {"overrides": {"lr": 1e-4, "m": 0.0, "b": 256}, "validation_accuracy": math.nan, "error": "x"},
  ]
  rep = robustness.report(space, rows)
  assert (rep["trials"], rep["kept"], rep["diverged"]) == (4, 2, 1)
  assert rep["threshold"] == pytest.approx(0.81)
  lr, m, b = rep["ranges"]
  # lr kept over 1e-3 .. 1e-1: 2 of the 4 decades searched; m 0.2 .. 0.6 of 0 .. 1
  assert (lr["kept"], lr["share"]) == ("0.001:0.1", pytest.approx(0.5))
  assert (m["kept"], m["share"]) == ("0.2:0.6", pytest.approx(0.4))
  assert (b["kept"], b["share"]) == ("128", 0.5)
  assert rep["mean_share"] == pytest.approx((0.5 + 0.4 + 0.5) / 3)
  line = robustness.summary_line(rep)
  assert dict(t.split("=") for t in line.split()[1:])["lr"] == "0.001:0.1"
  assert "| `m` | float | 0:1 | 0.2:0.6 | 0.40 |" in robustness.markdown(rep)


def test_default_spaces_parse_and_name_their_method():
  for method, text in robustness.SPACES.items():
    space = sweep.parse_space(text)
    assert space["learning_rates.dual"].kind == "log", method
  assert "distprop.margin" in robustness.SPACES["distprop"]
  with pytest.raises(errors.ConfigError, match="^--space: no default space for method 'gda'"):
    robustness.default_space("gda")


@pytest.mark.slow  # 4 trials of real training: the slow phase (the quick one stays < 6 min)
def test_search_resumes_after_interruption_and_writes_the_report(tmp_path, monkeypatch):
  """4 TPE trials (2 at random, then the model) of 3 steps, interrupted in the third.

  Backprop's config, the cheapest to compile (each new rate compiles a new program): the
  search and the report do not depend on the method."""
  config = shrunken_config(
    "backprop", num_steps=3, eval_every=3, checkpoint_every=3, log_every=3, eval_train_examples=250
  )
  space, workdir = (
    sweep.parse_space("learning_rates.weights=log:1e-3:1e-1 seed=int:0:9"),
    str(tmp_path),
  )
  calls, real = [], sweep.train.train_and_evaluate

  def interrupted(trial, run_dir):
    calls.append(run_dir)
    if len(calls) == 3:
      raise KeyboardInterrupt
    return real(trial, run_dir)

  monkeypatch.setattr(sweep.train, "train_and_evaluate", interrupted)
  with pytest.raises(KeyboardInterrupt):
    sweep.run_search(config, workdir, space, 4, startup_trials=2)
  first = [json.loads(l) for l in open(tmp_path / "trials.jsonl")]
  assert [r["index"] for r in first] == [0, 1]
  calls.clear()
  monkeypatch.setattr(sweep.train, "train_and_evaluate", real)
  rows, best = sweep.run_search(config, workdir, space, 4, startup_trials=2)
  assert rows[:2] == first  # replayed, not trained again
  assert [r["index"] for r in rows] == [0, 1, 2, 3]
  # each trial is what the study rebuilt from the trials before it asks
  assert all(
    sweep.ask(space, rows[:i], i, startup_trials=2) == rows[i]["overrides"] for i in range(4)
  )
  assert best == max(rows, key=lambda r: r["validation_accuracy"])
  with pytest.raises(errors.ConfigError, match="^--space: .* holds a search with space"):
    sweep.run_search(config, workdir, sweep.parse_space("seed=int:0:9"), 4)
  space_read, rows_read = robustness.load_search(workdir)
  assert space_read == space and rows_read == rows
  rep = robustness.write(workdir, space, rows, 0.1)
  assert rep["kept"] >= 1 and os.path.getsize(tmp_path / "robustness.png") > 10_000
  assert json.load(open(tmp_path / "robustness.json"))["kept"] == rep["kept"]
  assert "| `learning_rates.weights` | log | 0.001:0.1 |" in open(tmp_path / "robustness.md").read()


def test_command_lines_give_one_error_line(tmp_path):
  def error_lines(module, *args):
    proc = subprocess.run(
      [sys.executable, "-m", module, "--config=configs/smoke.py", f"--workdir={tmp_path}", *args],
      cwd=ROOT,
      capture_output=True,
      text=True,
      timeout=300,
    )
    assert proc.returncode == 1, proc.stderr
    return [l for l in proc.stderr.splitlines() if l.startswith("error: ")]

  assert error_lines("experiments.sweep") == ["error: --grid or --space: give one of them"]
  assert error_lines("experiments.robustness", "--space=distprop.margin=cat:0.1") == [
    "error: --space: distprop.margin=cat:0.1: cat: needs two or more distinct values, cat:V1,V2,..."
  ]
  with pytest.raises(errors.ConfigError, match=f"^--workdir: {tmp_path} has no search.json"):
    robustness.load_search(str(tmp_path))
