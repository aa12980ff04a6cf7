"""Two CPU processes on 127.0.0.1 equal one process on two devices; kills and corrupt
checkpoints resume like a one-process run.

Each run is the launcher itself, ``python -m experiments.main ... --coordinator_address
--num_processes --process_id``, one CPU device per process; the reference is one process
with ``--xla_force_host_platform_device_count=2`` and the same global batch. Every child
has a timeout, so a hung collective fails the test instead of hanging CI.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow  # minutes of subprocesses: run by CI, not by the quick command

STEPS = 100
COMMON = [
  "--config=configs/smoke.py",
  f"--config.num_steps={STEPS}",
  "--config.eval_every=50",
  "--config.checkpoint_every=20",
  "--config.log_every=20",
  "--config.progress_bar=false",
  "--config.mesh.num_devices=-1",
  "--config.mesh.data=2",  # both devices (one per process, or 2 fake ones) on data
]
TIMEOUT = 240  # seconds for any one run; a hung collective fails, never hangs
FIGURES = ("test_accuracy", "validation_accuracy", "final_defect", "test_loss")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _cmd(workdir, *extra):
  return [sys.executable, "-m", "experiments.main", f"--workdir={workdir}", *COMMON, *extra]


_CACHE = {}


@pytest.fixture(scope="module", autouse=True)
def compilation_cache(tmp_path_factory):
  """One persistent compilation cache for the module's runs: they compile the same
  programs, and compiling is most of a short run's time on a small CPU."""
  _CACHE["dir"] = str(tmp_path_factory.mktemp("jax_cache"))
  yield
  _CACHE.clear()


def _env(devices=1):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  if "dir" in _CACHE:
    env["JAX_COMPILATION_CACHE_DIR"] = _CACHE["dir"]
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    env["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
  return env


def _start_pair(workdir, port, *extra):
  return [_start(workdir, port, i, *extra) for i in range(2)]


def _finish(procs, timeout=TIMEOUT):
  """``[(returncode, stdout, stderr)]``; kills every process if one outlives ``timeout``."""
  deadline, out = time.time() + timeout, []
  try:
    for p in procs:
      stdout, stderr = p.communicate(timeout=max(1.0, deadline - time.time()))
      out.append((p.returncode, stdout, stderr))
  except subprocess.TimeoutExpired:
    for p in procs:
      p.kill()
    pytest.fail(f"a multi-process run did not finish in {timeout} s (hung collective?)")
  return out


def _run_pair(workdir, *extra):
  results = _finish(_start_pair(workdir, _free_port(), *extra))
  for rc, _, stderr in results:
    assert rc == 0, stderr[-3000:]
  return results


def _summary(workdir):
  with open(os.path.join(workdir, "summary.json")) as f:
    return json.load(f)


def _assert_same_figures(a, b):
  for key in FIGURES:
    assert abs(a[key] - b[key]) <= 1e-4, (key, a[key], b[key])


def _steps(workdir):
  path = os.path.join(workdir, "checkpoints")
  return sorted(int(d) for d in os.listdir(path) if d.isdigit()) if os.path.isdir(path) else []


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """Summaries of one process on two fake devices, by method."""
  cache = {}

  def get(method):
    if method not in cache:
      workdir = str(tmp_path_factory.mktemp(f"one_{method}"))
      subprocess.run(
        _cmd(workdir, f"--config.method={method}"),
        cwd=ROOT,
        env=_env(devices=2),
        check=True,
        capture_output=True,
        timeout=TIMEOUT,
      )
      cache[method] = _summary(workdir)
    return cache[method]

  return get


@pytest.mark.parametrize("method", ["distprop", "extraprop"])
def test_two_processes_equal_one_process_on_two_devices(method, reference, tmp_path):
  workdir = str(tmp_path / "run")
  results = _run_pair(workdir, f"--config.method={method}")
  for _, stdout, _ in results:
    assert f"SUMMARY method={method}" in stdout
  # only process 0 writes files; both write (their shards of) the checkpoints
  assert {"summary.json", "metrics.jsonl", "config.json", "accuracy.png"} <= set(
    os.listdir(workdir)
  )
  summary = _summary(workdir)
  assert summary["steps"] == STEPS and summary["resumed_from"] == 0
  _assert_same_figures(summary, reference(method))
  records = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  assert [r["step"] for r in records if r["kind"] == "eval"] == [50, 100]  # not twice


def test_sigkill_one_process_then_both_resume_to_the_uninterrupted_result(reference, tmp_path):
  workdir, port = str(tmp_path / "run"), _free_port()
  procs = _start_pair(workdir, port)
  deadline = time.time() + TIMEOUT
  while time.time() < deadline and not any(s >= 40 for s in _steps(workdir)):
    if any(p.poll() is not None for p in procs):
      break
    time.sleep(0.02)
  procs[1].send_signal(signal.SIGKILL)  # the other one hangs or fails in a collective
  procs[1].wait(timeout=30)
  procs[0].send_signal(signal.SIGKILL)
  _finish(procs, timeout=30)
  assert procs[1].returncode == -signal.SIGKILL, "the run ended before it was killed"
  interrupted_at = max(_steps(workdir))
  assert 40 <= interrupted_at < STEPS

  results = _finish(_start_pair(workdir, port))  # the same command, the same port
  for rc, _, stderr in results:
    assert rc == 0, stderr[-3000:]
  assert "resuming from the checkpoint at step" in results[0][2]
  summary = _summary(workdir)
  assert summary["resumed_from"] >= 40
  _assert_same_figures(summary, reference("distprop"))


def test_a_corrupt_newest_checkpoint_is_named_and_both_resume_from_the_older(reference, tmp_path):
  workdir = str(tmp_path / "run")
  _run_pair(workdir, "--config.num_steps=40", "--config.eval_every=40")
  assert _steps(workdir) == [20, 40]
  # empty every file of the newest step, as a kill in the middle of a save could
  for root, _, files in os.walk(os.path.join(workdir, "checkpoints", "40")):
    for name in files:
      open(os.path.join(root, name), "w").close()
  results = _run_pair(workdir)
  stderr0 = results[0][2]
  warnings = [l for l in stderr0.splitlines() if l.startswith("warning: ")]
  assert len(warnings) == 1 and "step 40" in warnings[0], stderr0
  assert "resuming from the checkpoint at step 20" in stderr0
  summary = _summary(workdir)
  assert summary["resumed_from"] == 20
  _assert_same_figures(summary, reference("distprop"))


READS = textwrap.dedent("""
    import sys
    import jax
    import numpy as np
    port, pid = sys.argv[1], int(sys.argv[2])
    jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=pid)
    from lagrangian_jax import data as data_lib, evaluators, state as state_lib
    from lagrangian_jax.data import feed as feed_lib
    from tests.conftest import shrunken_config

    reads = []
    get_batch = data_lib.get_batch
    def recording(split, idx, **kwargs):
      reads.append((split, np.asarray(idx).reshape(-1)))
      return get_batch(split, idx, **kwargs)
    data_lib.get_batch = recording

    config = shrunken_config("extraprop", batch_size=50, eval_batch_size=250)
    config.mesh.num_devices = -1
    exp = state_lib.build_experiment(config)
    train_rows = lambda: np.concatenate([i for s, i in reads if s is exp.dataset.train])
    n = len(exp.dataset.train.labels)  # 1000 rows, 500 per process
    # the tables' initial rows (a forward pass): only this process's half of the rows
    assert sorted(train_rows()) == list(range(500 * pid, 500 * pid + 500)), pid
    for leaf, flag in zip(jax.tree.leaves(exp.initial_state.params), exp.placement.tables.params):
      if flag:
        (shard,) = leaf.addressable_shards
        assert shard.data.shape[1] == leaf.shape[1] // 2 == 500, (leaf.shape, shard.data.shape)
    reads.clear()
    batch = feed_lib.make_batch(exp, 3)
    idx = np.asarray(batch.indices.addressable_shards[0].data).reshape(-1)
    assert sorted(train_rows()) == sorted(idx) and len(idx) == 25
    state, metrics = exp.train_step(exp.initial_state, batch)
    reads.clear()
    record = evaluators.evaluation_record(evaluators.from_config(exp), state, 1)
    test = np.concatenate([i for s, i in reads if s is exp.dataset.test])
    assert len(test) == 500 and len(set(test)) == 500, len(test)  # half of every batch
    print("OK", pid, record["test_accuracy"], flush=True)
""")


def test_each_process_reads_only_its_rows(tmp_path):
  port = _free_port()
  procs = [
    subprocess.Popen(
      [sys.executable, "-c", READS, str(port), str(i)],
      cwd=ROOT,
      env=_env(),
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
    )
    for i in range(2)
  ]
  results = _finish(procs)
  for i, (rc, stdout, stderr) in enumerate(results):
    assert rc == 0 and f"OK {i}" in stdout, stdout + stderr[-3000:]
  assert results[0][1].split()[-1] == results[1][1].split()[-1]  # the same accuracy


@pytest.mark.parametrize(
  "flags, named",
  [
    (["--coordinator_address=127.0.0.1:1", "--num_processes=2"], "--process_id"),
    (["--coordinator_address=127.0.0.1:1", "--num_processes=2", "--process_id=2"], "--process_id"),
  ],
)
def test_bad_multiprocess_flags_are_one_line_errors(flags, named, tmp_path):
  proc = subprocess.run(
    _cmd(str(tmp_path / "run"), *flags),
    cwd=ROOT,
    env=_env(),
    capture_output=True,
    text=True,
    timeout=TIMEOUT,
  )
  assert proc.returncode == 1
  errors = [l for l in proc.stderr.splitlines() if l.startswith("error: ")]
  assert len(errors) == 1 and named in errors[0], proc.stderr


def _start(workdir, port, i, *extra):
  return subprocess.Popen(
    _cmd(
      workdir,
      *extra,
      f"--coordinator_address=127.0.0.1:{port}",
      "--num_processes=2",
      f"--process_id={i}",
    ),
    cwd=ROOT,
    env=_env(),
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
  )


def _error_lines(stderr):
  return [l for l in stderr.splitlines() if l.startswith("error: ")]


@pytest.mark.parametrize(
  "key, values",
  [("learning_rates.weights", [0.01, 0.02]), ("batch_size", [32, 64]), ("num_steps", [40, 60])],
)
def test_processes_given_different_configs_refuse_to_run(key, values, tmp_path):
  """Issue 20 defect 4: a learning rate or batch size on one process only ran to rc 0 (a
  wrong result); a different num_steps hung a collective for minutes, then aborted."""
  workdir, port = str(tmp_path / "run"), _free_port()
  procs = [_start(workdir, port, i, f"--config.{key}={v}") for i, v in enumerate(values)]
  for i, (rc, _, stderr) in enumerate(_finish(procs, timeout=120)):
    lines = _error_lines(stderr)
    assert rc == 1 and len(lines) == 1, stderr[-3000:]
    assert f"config.{key} differs across processes" in lines[0], lines
    assert f"on process {i}, another value on process {1 - i}" in lines[0], lines
  assert not os.path.exists(os.path.join(workdir, "checkpoints"))


def test_a_missing_process_is_a_one_line_error_after_the_wait(tmp_path):
  t0 = time.time()
  (result,) = _finish(
    [_start(str(tmp_path / "run"), _free_port(), 0, "--initialization_timeout=5")]
  )
  rc, _, stderr = result
  lines = _error_lines(stderr)
  assert rc == 1 and len(lines) == 1 and "--initialization_timeout=5 s" in lines[0], stderr
  assert time.time() - t0 < 60
