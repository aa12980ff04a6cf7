"""Preemption and the agreed checkpoint fallback (issue 22, item 3).

SIGTERM makes the launcher save the step it reached, print one line and exit with
``preemption.EXIT_STATUS``; rerunning gives the uninterrupted run's result, with one
process and with two (SIGTERM to both, or to one: JAX's notifier spreads it). Two
processes whose newest checkpoint is unreadable on one of them resume from the same older
step; a transient read error is retried before a step counts as unreadable.
"""

import json
import os
import re
import signal
import subprocess
import time
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lagrangian_jax import checkpoints
from lagrangian_jax import preemption
from tests import test_multihost as multihost
from tests import test_resume as resume
from tests.conftest import ROOT
from tests.test_multihost import compilation_cache  # noqa: F401 (fixture, autouse)
from tests.test_multihost import reference  # noqa: F401 (fixture)

# SIGTERM to exit, the bound stated in BUILD.md: Kubernetes' default grace period. Measured
# on 2 CPU cores at load average 12-17: 1.5 s (one process), 6-8 s (two).
EXIT_SECONDS = 30
LINE = re.compile(r"^preempted at step (\d+): checkpoint saved in (.+); rerun the same command")


def _preempted_step(stderr: str, workdir: str) -> int:
  lines = [l for l in stderr.splitlines() if l.startswith("preempted at step")]
  assert len(lines) == 1, stderr[-3000:]
  match = LINE.match(lines[0])
  assert match and match.group(2) == os.path.join(workdir, "checkpoints"), lines[0]
  assert "Traceback" not in stderr, stderr[-3000:]
  return int(match.group(1))


def _wait_for_step(workdir: str, step: int, procs) -> None:
  deadline = time.time() + multihost.TIMEOUT
  while time.time() < deadline and not any(s >= step for s in resume._steps(workdir)):
    assert all(p.poll() is None for p in procs), "a run ended before it was preempted"
    time.sleep(0.02)


def test_sigterm_sets_the_flag_and_the_handler_is_restored():
  before = signal.getsignal(signal.SIGTERM)
  with preemption.Watch() as watch:
    assert not watch.reached(1, ckpt=None)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(0.01)  # Python runs the handler between bytecodes
    assert watch.reached(2, ckpt=None)
  assert signal.getsignal(signal.SIGTERM) is before


def _two_checkpoints(tmp_path):
  ckpt = checkpoints.manager(str(tmp_path), types.SimpleNamespace(keep_checkpoints=3))
  for step in (10, 20):
    checkpoints.save(ckpt, step, {"w": jnp.full((3,), float(step))})
  ckpt.wait_until_finished()
  return ckpt, {"w": jnp.zeros((3,))}


@pytest.mark.parametrize("failures, restored", [(1, 20), (checkpoints.READ_TRIES, 10)])
def test_a_read_error_is_retried_before_the_step_counts_as_unreadable(
  failures, restored, tmp_path, monkeypatch, capsys
):
  ckpt, target = _two_checkpoints(tmp_path)
  real, calls = checkpoints._restore, []

  def flaky(ckpt, step, target, feed=None):
    calls.append(step)
    if step == 20 and calls.count(20) <= failures:
      raise OSError("transient")
    return real(ckpt, step, target, feed)

  monkeypatch.setattr(checkpoints, "_restore", flaky)
  monkeypatch.setattr(checkpoints, "READ_BACKOFF_S", 0.0)
  state, step = checkpoints.restore_newest(ckpt, target, str(tmp_path))
  assert step == restored
  np.testing.assert_array_equal(np.asarray(state["w"]), np.full((3,), float(restored)))
  assert calls.count(20) == min(failures + 1, checkpoints.READ_TRIES)
  warnings = [l for l in capsys.readouterr().err.splitlines() if l.startswith("warning: ")]
  assert len(warnings) == (restored == 10), warnings
  ckpt.close()


@pytest.mark.slow
def test_sigterm_saves_the_step_reached_and_the_rerun_equals_the_uninterrupted_run(tmp_path):
  full, stopped = str(tmp_path / "full"), str(tmp_path / "stopped")
  subprocess.run(resume._cmd(full), cwd=ROOT, env=resume._env(), check=True, capture_output=True)

  proc = subprocess.Popen(
    resume._cmd(stopped),
    cwd=ROOT,
    env=resume._env(),
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
  )
  _wait_for_step(stopped, 60, [proc])
  t0 = time.time()
  proc.send_signal(signal.SIGTERM)
  _, stderr = proc.communicate(timeout=60)
  seconds = time.time() - t0
  assert proc.returncode == preemption.EXIT_STATUS, stderr[-3000:]
  print(f"one process: SIGTERM to exit {seconds:.2f} s")  # shown by pytest -s
  assert seconds < EXIT_SECONDS, seconds
  step = _preempted_step(stderr, stopped)
  assert 60 <= step < 600 and max(resume._steps(stopped)) == step
  resume._restore(stopped, step)  # complete: it restores

  rerun = subprocess.run(
    resume._cmd(stopped), cwd=ROOT, env=resume._env(), capture_output=True, text=True
  )
  assert rerun.returncode == 0, rerun.stderr
  assert f"resuming from the checkpoint at step {step} " in rerun.stderr
  a, b = multihost._summary(full), multihost._summary(stopped)
  assert b["resumed_from"] == step
  for key in multihost.FIGURES:
    assert a[key] == b[key], (key, a[key], b[key])
  for x, y in zip(
    jax.tree.leaves(resume._restore(full, 600)), jax.tree.leaves(resume._restore(stopped, 600))
  ):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.slow
@pytest.mark.parametrize("signalled", [(0, 1), (1,)], ids=["both", "one"])
def test_two_processes_sigterm_save_the_same_step_and_resume(signalled, reference, tmp_path):  # noqa: F811
  workdir, port = str(tmp_path / "run"), multihost._free_port()
  procs = multihost._start_pair(workdir, port)
  _wait_for_step(workdir, 40, procs)
  t0 = time.time()
  for i in signalled:
    procs[i].send_signal(signal.SIGTERM)
  results = multihost._finish(procs, timeout=60)
  seconds = time.time() - t0
  steps = set()
  for rc, _, stderr in results:
    assert rc == preemption.EXIT_STATUS, stderr[-3000:]
    steps.add(_preempted_step(stderr, workdir))
  (step,) = steps  # every process saved the same step
  assert 40 <= step < multihost.STEPS and max(multihost._steps(workdir)) == step
  print(f"two processes ({signalled}): SIGTERM to exit {seconds:.2f} s")  # pytest -s
  assert seconds < EXIT_SECONDS, seconds

  for rc, _, stderr in multihost._finish(multihost._start_pair(workdir, port)):
    assert rc == 0, stderr[-3000:]
  summary = multihost._summary(workdir)
  assert summary["resumed_from"] == step
  multihost._assert_same_figures(summary, reference("distprop"))


@pytest.mark.slow
def test_a_checkpoint_unreadable_on_one_process_only_makes_both_resume_from_the_older(
  reference,  # noqa: F811
  tmp_path,
  monkeypatch,
):
  workdir = str(tmp_path / "run")
  multihost._run_pair(workdir, "--config.num_steps=40", "--config.eval_every=40")
  assert multihost._steps(workdir) == [20, 40]
  monkeypatch.setenv(checkpoints.UNREADABLE_ENV, "1:40")  # process 1 cannot read step 40
  results = multihost._run_pair(workdir)
  for _, _, stderr in results:
    warnings = [l for l in stderr.splitlines() if l.startswith("warning: ")]
    assert len(warnings) == 1 and "step 40" in warnings[0], stderr[-3000:]
    assert "on process 1" in warnings[0] or "on process(es) 1" in warnings[0], warnings
  assert checkpoints.UNREADABLE_ENV in results[1][2]  # process 1 names its own reason
  assert "resuming from the checkpoint at step 20" in results[0][2]
  summary = multihost._summary(workdir)
  assert summary["resumed_from"] == 20
  multihost._assert_same_figures(summary, reference("distprop"))
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    evals = [json.loads(l)["step"] for l in f if '"eval"' in l]
  assert evals == [50, 100]  # the first run's evaluation at 40 dropped with its checkpoint


def test_the_report_programs_exit_75_at_a_preemption(capsys):
  from experiments import common

  def body():
    raise preemption.Preempted(7, "/runs/x/checkpoints")

  with pytest.raises(SystemExit) as stop:
    common.run_main(["prog"], body)
  assert stop.value.code == preemption.EXIT_STATUS
  assert LINE.match(capsys.readouterr().err.strip())
