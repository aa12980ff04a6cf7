"""The Table 1 report (experiments/table1.py) end to end on shrunken configs, and its errors."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from experiments import table1
from experiments.common import parse_settings
from lagrangian_jax import errors
from lagrangian_jax import methods
from tests.conftest import ROOT

SETTINGS = dict(seeds=2, steps=20, batch_size=50, eval_every=10, shrink=True)
FLAGS = ["--seeds=2", "--steps=20", "--batch_size=50", "--eval_every=10", "--shrink"]


def _cli(*args, timeout=300):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.run(
    [sys.executable, "-m", "experiments.table1", *args],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=timeout,
  )


def _parse_line(line: str) -> dict:
  head, *items = line.split()
  assert head == "TABLE1", line
  return dict(item.split("=", 1) for item in items)


@pytest.mark.slow
def test_report_end_to_end_then_rerun_skips_finished_rows(tmp_path, monkeypatch):
  # SGD at a rate of 1e8 leaves the finite numbers within a few steps: a diverged row
  monkeypatch.setitem(
    table1.ENTRIES, "diverges", ("backprop", {"optimizer": "sgd", "learning_rates.weights": 1e8})
  )
  workdir = str(tmp_path / "t1")
  report = table1.run_report(workdir, entries=["backprop_adam", "distprop", "diverges"], **SETTINGS)

  assert {"table1.json", "table1.md", "accuracy.png", "defect.png"} <= set(os.listdir(workdir))
  written = json.load(open(os.path.join(workdir, "table1.json")))
  assert written == json.loads(json.dumps(report))
  rows = {r["row"]: r for r in written["rows"]}
  assert list(rows) == ["backprop_adam", "distprop", "diverges"]
  for name in ("backprop_adam", "distprop"):
    r = rows[name]
    assert r["status"] == "ok" and r["seeds"] == [0, 1], r
    for key in ("test_accuracy", "validation_accuracy", "final_defect"):
      assert len(r[key]["per_seed"]) == 2, (name, key)
      assert r[key]["mean"] == pytest.approx(np.mean(r[key]["per_seed"]), abs=1e-12)
      assert r[key]["std"] == pytest.approx(np.std(r[key]["per_seed"]), abs=1e-12)
    assert len(r["final_defect"]["per_split"]) >= 1
    assert r["ms_per_iteration_per_seed"] == pytest.approx(r["ms_per_iteration"] / 2)
  assert rows["distprop"]["paper_mnist"] == 0.9903 and rows["backprop_adam"]["paper_mnist"] is None
  # backprop has no auxiliary state; DistProp's prototypes and multipliers are a few KiB
  assert rows["backprop_adam"]["state_mib"] == 0 < rows["distprop"]["state_mib"] < 1
  assert (
    rows["distprop"]["final_defect"]["mean"] > 0 == rows["backprop_adam"]["final_defect"]["mean"]
  )
  assert rows["diverges"]["status"] == "diverged" and "diverged" in rows["diverges"]["error"]
  assert rows["diverges"]["test_accuracy"] is None

  md = open(os.path.join(workdir, "table1.md")).read()
  assert "| distprop | distprop | extragradient |" in md and "0.9903" in md
  assert "distprop `configs/distprop.py`" in md
  assert "diverges `configs/backprop.py` with `optimizer=sgd`, `learning_rates.weights=" in md
  assert report["command"] in md and "--methods=backprop_adam,distprop,diverges" in md

  fields = _parse_line(table1.table_line(report))
  assert fields["dir"] == workdir and fields["rows"] == "3" and fields["diverges"] == "nan"
  assert float(fields["distprop"]) == pytest.approx(
    rows["distprop"]["test_accuracy"]["mean"], abs=1e-4
  )

  # The command line on the same directory finds both rows finished and only rewrites the table.
  proc = _cli(f"--workdir={workdir}", "--methods=backprop_adam,distprop", *FLAGS)
  assert proc.returncode == 0, proc.stderr
  fields = _parse_line(proc.stdout.strip().splitlines()[-1])
  assert fields["rows"] == "2"
  for name in ("backprop_adam", "distprop"):
    assert float(fields[name]) == pytest.approx(rows[name]["test_accuracy"]["mean"], abs=1e-4)
  rerun = json.load(open(os.path.join(workdir, "table1.json")))
  assert rerun["command"].startswith("python -m experiments.table1 --workdir=")
  assert [r["test_accuracy"] for r in rerun["rows"]] == [
    rows[n]["test_accuracy"] for n in ("backprop_adam", "distprop")
  ]
  assert "resuming" not in proc.stderr  # skipped, not retrained


def test_unknown_row_is_one_line_naming_it_and_the_valid_ones(tmp_path):
  with pytest.raises(errors.ConfigError) as e:
    table1.resolve_entries(["distprop", "sgd_magic"])
  message = str(e.value)
  assert "'sgd_magic'" in message and "\n" not in message
  for name in (*table1.ENTRIES, *methods.METHODS):  # methods outside the table are rows too
    assert name in message

  proc = _cli(f"--workdir={tmp_path}", "--methods=backprop_adam,sgd_magic", *FLAGS)
  assert proc.returncode == 1, proc.stderr
  lines = [l for l in proc.stderr.splitlines() if l.startswith("error: ")]
  assert len(lines) == 1 and "'sgd_magic'" in lines[0] and "distprop_past" in lines[0], proc.stderr
  assert "Traceback" not in proc.stderr and not os.listdir(tmp_path)


def test_rows_outside_the_table_come_from_methods():
  rows = table1.resolve_entries(None)
  assert list(rows) == list(table1.ENTRIES)
  assert rows["distprop_past"] == ("distprop", {"solver": "past_extragradient"})
  for name in table1.valid_entries():
    if name not in table1.ENTRIES:
      assert table1.resolve_entries([name]) == {name: (name, {})}


def test_a_row_tuned_on_one_data_set_is_used_on_that_data_set_only():
  assert table1.DATASET_CONFIGS, "nothing to check"
  settings = dict(seeds=1, steps=30, batch_size=64, eval_every=10)
  for (dataset, row), module in table1.DATASET_CONFIGS.items():
    assert table1.resolve_entries([row], dataset) == {row: (module, {})}
    elsewhere = table1.resolve_entries([row], "mnist_5k")[row]
    assert elsewhere[0] != module
    tuned = table1.entry_config(module, {}, dataset=dataset, **settings)
    plain = table1.entry_config(*elsewhere, dataset=dataset, **settings)
    assert tuned.method == plain.method and tuned.data.name == plain.data.name == dataset
    assert tuned.to_dict() != plain.to_dict(), module  # it carries settings of its own


def test_set_applies_to_every_row_after_its_own_overrides():
  common = parse_settings(
    "network.name=mlp,network.depth=3,network.width=256,network.split=every,"
    "network.split_activation=relu,learning_rates.weights=0.002"
  )
  assert common["network.depth"] == 3 and common["learning_rates.weights"] == 0.002
  # a comma inside a value (a list of split points) stays with its key, as a string
  assert parse_settings(["network.split=1", "2", "seed=4"]) == {
    "network.split": "1,2",
    "seed": 4,
  }
  settings = dict(dataset="mnist_5k", seeds=2, steps=30, batch_size=64, eval_every=10)
  for name, (module, overrides) in table1.resolve_entries(["backprop_sgd", "dfa"]).items():
    config = table1.entry_config(module, overrides, **settings, sets=common)
    net = config.network
    assert (net.name, net.depth, net.width, net.split, net.split_activation) == (
      "mlp",
      3,
      256,
      "every",
      "relu",
    ), name
    assert config.learning_rates.weights == 0.002  # --set wins over the row's own value
    assert config.num_steps == 30 and config.num_seeds == 2  # the report's flags still apply
  assert table1.entry_config("backprop", {}, **settings).network.name == "mnist_cnn"
  command = table1.command_for("d", ["dfa"], "mnist_5k", "", 2, 30, 64, 10, False, common)
  assert parse_settings(command.split("--set=")[1].strip("'")) == common

  with pytest.raises(errors.ConfigError, match="--set"):
    parse_settings("network.depth")
  with pytest.raises(errors.ConfigError, match="network.depht"):
    table1.entry_config("backprop", {}, **settings, sets={"network.depht": 3})


@pytest.mark.slow
def test_set_on_the_command_line_reaches_every_row_and_the_table(tmp_path):
  workdir = str(tmp_path / "t1")
  proc = _cli(
    f"--workdir={workdir}",
    "--methods=backprop_adam,dfa",
    "--set=network.name=mlp,network.depth=2,network.width=32,network.split=every,"
    "network.split_activation=relu",
    *FLAGS,
  )
  assert proc.returncode == 0, proc.stderr
  report = json.load(open(os.path.join(workdir, "table1.json")))
  assert report["set"]["network.width"] == 32
  for row in report["rows"]:
    config = json.load(open(os.path.join(workdir, row["row"], "config.json")))
    assert config["network"]["name"] == "mlp" and config["network"]["width"] == 32, row["row"]
    assert row["overrides"]["network.depth"] == 2
  assert "`network.width=32`" in open(os.path.join(workdir, "table1.md")).read()
