"""What a pod run is set up and watched with: the per-device batch size, images/s, step
time and FLOP/s in the train records, a profiler trace, the compilation cache."""

import glob
import json
import os

import jax
import pytest

from experiments import main as main_lib
from lagrangian_jax import errors
from lagrangian_jax import identity
from lagrangian_jax import sharding
from lagrangian_jax import state as state_lib
from lagrangian_jax import throughput
from lagrangian_jax import train
from tests.conftest import shrunken_config


def _records(workdir, kind="train"):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [r for r in map(json.loads, f) if r["kind"] == kind]


def test_train_records_carry_throughput_and_the_profile_leaves_a_trace(tmp_path):
  config = shrunken_config(
    "backprop", num_steps=4, log_every=1, eval_every=4, checkpoint_every=4, profile_steps="1,3"
  )
  config.num_seeds = 2
  train.train_and_evaluate(config, str(tmp_path))
  records = _records(tmp_path)
  assert [r["step"] for r in records] == [1, 2, 3, 4]
  for r in records:
    assert r["images_per_second"] > 0 and r["step_ms"] > 0, r
    # images/s and ms per step describe the same steps: every seed's global batch
    examples = r["images_per_second"] * r["step_ms"] / 1e3
    assert examples == pytest.approx(config.batch_size * config.num_seeds, rel=1e-9), r
    if jax.default_backend() == "cpu":  # XLA's CPU backend gives a FLOP count
      assert r["flops_per_second"] > 0, r
  # the first record is the compiling step alone: slower than the steps after it
  assert records[0]["step_ms"] > min(r["step_ms"] for r in records[1:])
  traces = glob.glob(str(tmp_path / "profile" / "plugins" / "profile" / "*" / "*.xplane.pb"))
  assert traces and all(os.path.getsize(t) > 0 for t in traces), os.listdir(tmp_path)


def test_flops_are_the_compiled_programs_times_the_devices():
  f = jax.jit(lambda a, b: a @ b)
  a = jax.numpy.ones((64, 32))
  flops = throughput.step_flops(f, a, a.T, num_devices=3)
  assert flops == pytest.approx(3 * 2 * 64 * 32 * 64, rel=0.05)
  assert throughput.step_flops(object(), a, a, num_devices=1) is None  # never an error


def test_profiler_traces_only_its_window(monkeypatch, tmp_path):
  calls = []
  monkeypatch.setattr(jax.profiler, "start_trace", lambda d: calls.append(("start", d)))
  monkeypatch.setattr(jax.profiler, "stop_trace", lambda: calls.append(("stop",)))
  profiler = throughput.Profiler("2,3", str(tmp_path))
  for done in range(1, 6):
    profiler.before(done)
    calls.append(done)
    profiler.after(done, None)
  profiler.close()
  assert calls == [1, ("start", str(tmp_path / "profile")), 2, 3, ("stop",), 4, 5]
  resumed = throughput.Profiler("2,3", str(tmp_path))  # resumed at step 3: what is left
  calls.clear()
  resumed.before(3)
  resumed.close()
  assert calls == [("start", str(tmp_path / "profile")), ("stop",)]


@pytest.mark.parametrize(
  "key, value",
  [
    ("profile_steps", "3,1"),
    ("profile_steps", "0,2"),
    ("profile_steps", "1-3"),
    ("per_device_batch_size", -1),
    ("batch_size", -1),
  ],
)
def test_bad_values_are_one_line_errors(key, value, tmp_path):
  config = shrunken_config("backprop", **{key: value})
  workdir = tmp_path / "run"
  with pytest.raises(errors.ConfigError) as e:
    train.train_and_evaluate(config, str(workdir))
  assert str(e.value).startswith(f"config.{key}: must be") and "\n" not in str(e.value)
  assert not workdir.exists()  # refused before anything was written


@pytest.mark.parametrize(
  "batch, per_device, key",
  [(50, 10, "per_device_batch_size"), (0, 0, "batch_size")],
)
def test_both_or_neither_batch_size_is_refused(batch, per_device, key, tmp_path):
  config = shrunken_config("backprop", batch_size=batch, per_device_batch_size=per_device)
  with pytest.raises(errors.ConfigError, match=f"^config.{key}: ") as e:
    train.train_and_evaluate(config, str(tmp_path / "run"))
  assert "\n" not in str(e.value)
  assert not (tmp_path / "run").exists()


def test_per_device_batch_is_per_data_replica():
  config = shrunken_config("backprop", batch_size=0, per_device_batch_size=16)
  mesh = jax.sharding.AbstractMesh((4, 2), ("data", "stage"))
  resolved = sharding.with_global_batch(config, mesh)
  assert (resolved.batch_size, resolved.per_device_batch_size) == (64, 0)
  assert (config.batch_size, config.per_device_batch_size) == (0, 16)  # a copy
  unset = sharding.with_global_batch(config)  # no mesh: config.mesh over every device
  assert unset.batch_size == 16 * jax.device_count()
  global_batch = shrunken_config("backprop", batch_size=64)
  assert sharding.with_global_batch(global_batch, mesh) is global_batch  # as it is


def test_per_device_batch_resolves_to_the_global_batch_and_the_same_run(tmp_path):
  steps = {"num_steps": 6, "log_every": 3, "eval_every": 3, "checkpoint_every": 3}
  per_device = shrunken_config("backprop", batch_size=0, per_device_batch_size=50, **steps)
  exp = state_lib.build_experiment(per_device)
  assert exp.mesh.shape["data"] == 1 and exp.config.batch_size == 50  # 1 device: equal
  global_batch = shrunken_config("backprop", batch_size=50, **steps)
  assert global_batch.batch_size == 50
  a = train.train_and_evaluate(global_batch, str(tmp_path / "a"))
  b = train.train_and_evaluate(per_device, str(tmp_path / "b"))
  assert a["test_accuracy"] == b["test_accuracy"] and a["test_loss"] == b["test_loss"]
  assert _records(tmp_path / "a")[-1]["loss"] == _records(tmp_path / "b")[-1]["loss"]
  # the global batch is the run's identity; how it was asked for is not
  assert identity.fingerprint(exp.config) == identity.fingerprint(global_batch)
  more = shrunken_config("backprop", batch_size=0, per_device_batch_size=50, **steps)
  more.num_steps = 9  # resuming the batch_size=50 run with the per-device key: accepted
  train.train_and_evaluate(more, str(tmp_path / "a"))
  other = shrunken_config("backprop", batch_size=0, per_device_batch_size=25, **steps)
  other.num_steps = 12
  with pytest.raises(errors.ConfigError, match="batch_size"):  # another global batch
    train.train_and_evaluate(other, str(tmp_path / "a"))


def test_compilation_cache_dir_is_set_before_the_first_compile(tmp_path):
  before = jax.config.jax_compilation_cache_dir
  try:
    main_lib.use_compilation_cache(shrunken_config("backprop"))  # "": left as it is
    assert jax.config.jax_compilation_cache_dir == before
    config = shrunken_config("backprop", compilation_cache_dir=str(tmp_path / "cache"))
    main_lib.use_compilation_cache(config)
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / "cache")
    with pytest.raises(errors.ConfigError, match="^config.compilation_cache_dir: must be"):
      main_lib.use_compilation_cache({"compilation_cache_dir": 3})  # ConfigDict refuses 3
  finally:
    jax.config.update("jax_compilation_cache_dir", before)


def test_pod_keys_only_change_how_a_run_is_run():
  assert {"per_device_batch_size", "profile_steps", "compilation_cache_dir"} <= identity.RUN_KEYS
  assert "batch_size" not in identity.RUN_KEYS
