"""Interrupted runs: SIGKILL then resume gives the uninterrupted result; failures keep
the last good checkpoint."""

import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from tests.conftest import ROOT

COMMON = [
  "--config=configs/smoke.py",
  "--config.num_steps=600",
  "--config.eval_every=600",
  "--config.checkpoint_every=20",
  "--config.log_every=20",
  "--config.progress_bar=false",
]


def _cmd(workdir, *extra):
  return [sys.executable, "-m", "experiments.main", f"--workdir={workdir}", *COMMON, *extra]


def _env():
  return dict(os.environ, JAX_PLATFORMS="cpu")


def _restore(workdir, step):
  with ocp.CheckpointManager(os.path.join(workdir, "checkpoints")) as mngr:
    return mngr.restore(step, args=ocp.args.StandardRestore())


def _steps(workdir):
  path = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(path):
    return []
  return sorted(int(d) for d in os.listdir(path) if d.isdigit())


@pytest.mark.slow
def test_sigkill_then_rerun_matches_uninterrupted_run(tmp_path):
  full, killed = str(tmp_path / "full"), str(tmp_path / "killed")
  subprocess.run(_cmd(full), cwd=ROOT, env=_env(), check=True, capture_output=True)

  proc = subprocess.Popen(
    _cmd(killed), cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
  )
  deadline = time.time() + 240
  while time.time() < deadline and not any(s >= 60 for s in _steps(killed)):
    time.sleep(0.02)
  os.kill(proc.pid, signal.SIGKILL)
  proc.wait()
  assert proc.returncode == -signal.SIGKILL
  interrupted_at = max(_steps(killed))
  assert 60 <= interrupted_at < 600, "the run finished before it could be killed"

  rerun = subprocess.run(_cmd(killed), cwd=ROOT, env=_env(), capture_output=True, text=True)
  assert rerun.returncode == 0, rerun.stderr
  assert "SUMMARY method=distprop" in rerun.stdout
  a, b = _restore(full, 600), _restore(killed, 600)
  leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(leaves_a) == len(leaves_b) > 0
  for x, y in zip(leaves_a, leaves_b):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.slow
def test_divergence_exits_nonzero_and_keeps_last_good_checkpoint(tmp_path):
  workdir = str(tmp_path / "run")
  ok = subprocess.run(
    _cmd(workdir, "--config.num_steps=40"), cwd=ROOT, env=_env(), capture_output=True, text=True
  )
  assert ok.returncode == 0, ok.stderr
  assert _steps(workdir)[-1] == 40
  good = _restore(workdir, 40)

  bad = subprocess.run(
    _cmd(
      workdir,
      "--config.num_steps=100",
      "--config.learning_rates.weights=1e30",
      "--config.learning_rates.aux=1e30",
      "--config.log_every=1",
      "--config.allow_changes=learning_rates",  # on purpose: the run's identity changes
    ),
    cwd=ROOT,
    env=_env(),
    capture_output=True,
    text=True,
  )
  assert bad.returncode == 1
  errors = [l for l in bad.stderr.splitlines() if l.startswith("error: ")]
  assert len(errors) == 1 and "diverged" in errors[0] and "step 40" in errors[0], bad.stderr
  assert _steps(workdir)[-1] == 40
  for x, y in zip(jax.tree.leaves(good), jax.tree.leaves(_restore(workdir, 40))):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.slow
def test_resuming_with_an_incompatible_config_is_a_clear_error(tmp_path):
  workdir = str(tmp_path / "run")
  subprocess.run(
    _cmd(workdir, "--config.num_steps=20"), cwd=ROOT, env=_env(), check=True, capture_output=True
  )
  proc = subprocess.run(
    _cmd(workdir, "--config.num_steps=40", "--config.network.width=32"),
    cwd=ROOT,
    env=_env(),
    capture_output=True,
    text=True,
  )
  assert proc.returncode == 1
  assert "does not match this config" in proc.stderr, proc.stderr


@pytest.mark.slow
def test_a_corrupt_newest_checkpoint_is_named_and_the_older_one_used(tmp_path):
  full, broken = str(tmp_path / "full"), str(tmp_path / "broken")
  subprocess.run(
    _cmd(full, "--config.num_steps=60"), cwd=ROOT, env=_env(), check=True, capture_output=True
  )
  subprocess.run(
    _cmd(broken, "--config.num_steps=40"), cwd=ROOT, env=_env(), check=True, capture_output=True
  )
  assert _steps(broken) == [20, 40]
  # empty every file of the newest step, as a kill in the middle of a save could
  for root, _, files in os.walk(os.path.join(broken, "checkpoints", "40")):
    for name in files:
      open(os.path.join(root, name), "w").close()
  rerun = subprocess.run(
    _cmd(broken, "--config.num_steps=60"), cwd=ROOT, env=_env(), capture_output=True, text=True
  )
  assert rerun.returncode == 0, rerun.stderr
  warnings = [l for l in rerun.stderr.splitlines() if l.startswith("warning: ")]
  assert len(warnings) == 1 and "step 40" in warnings[0], rerun.stderr
  assert "resuming from the checkpoint at step 20" in rerun.stderr
  for x, y in zip(jax.tree.leaves(_restore(full, 60)), jax.tree.leaves(_restore(broken, 60))):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
