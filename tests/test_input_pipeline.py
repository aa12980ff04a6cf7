"""The grain pipeline over tfds array_record JPEGs, learning-rate steps, and the ImageNet
recipes end to end (and resumed) on generated records.

The records are written once per module by ``lagrangian_jax.data.fake_tfds`` (real
array_record files: grain's worker processes read them too, which
``tfds.testing.mock_data``'s in-process patch cannot serve).
"""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from lagrangian_jax import errors
from lagrangian_jax import optimizers
from lagrangian_jax import solvers
from lagrangian_jax import state as state_lib
from lagrangian_jax.data import fake_tfds
from lagrangian_jax.data import feed as feed_lib
from tests.conftest import ROOT
from tests.conftest import shrunken_config

TIMEOUT = 400


@pytest.fixture(scope="module")
def fake_imagenet(tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  fake_tfds.write_fake_imagenet(data_dir, num_train=48, num_validation=16, sizes=(24, 48))
  return data_dir


def _grain_config(data_dir, **overrides):
  config = shrunken_config("backprop", **overrides)
  config.data.name = "tfds:imagenet2012"
  config.data.data_dir = data_dir
  config.data.image_size = 16
  config.data.max_train_examples = 0
  config.batch_size = 8
  config.eval_batch_size = 8
  config.eval_train_examples = 16
  return config


def _batches(config, steps=3):
  exp = state_lib.build_experiment(config)
  feed = feed_lib.InputFeed(exp)
  return [jax.device_get(tuple(feed.batch(s))) for s in range(steps)]


@pytest.mark.slow  # tens of seconds: the quick phase stays under its six minutes
def test_grain_batches_are_the_memory_batches_and_do_not_depend_on_workers(fake_imagenet):
  memory = _batches(_grain_config(fake_imagenet))
  plain = _batches(_grain_config(fake_imagenet, **{"data.pipeline": "grain"}))
  for a, b in zip(memory, plain):  # same (seed, step) schedule, same decoding
    for x, y in zip(a, b):
      np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6, atol=1e-6)
  augmented = {
    workers: _batches(
      _grain_config(
        fake_imagenet,
        **{"data.pipeline": "grain", "data.augment": "crop_flip", "data.workers": workers},
      )
    )
    for workers in (0, 2)
  }
  for a, b in zip(augmented[0], augmented[2]):  # crops and flips: a function of the step
    for x, y in zip(a, b):
      np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  assert not np.allclose(augmented[0][0][0], plain[0][0])
  np.testing.assert_array_equal(augmented[0][0][2], plain[0][2])  # the same examples


def test_images_cross_as_uint8_and_normalise_on_device_to_the_host_figures(fake_imagenet):
  """The loop's batches (memory and grain) carry uint8 pixels; the step's normalisation
  gives the host's float32 figures (float32 rounding)."""
  from lagrangian_jax import data as data_lib

  for pipeline in ("memory", "grain"):
    exp = state_lib.build_experiment(_grain_config(fake_imagenet, **{"data.pipeline": pipeline}))
    batch = feed_lib.InputFeed(exp).batch(0)
    assert batch.images.dtype == jnp.uint8
    stats = data_lib.pixel_stats(exp.dataset)
    on_device = jax.jit(data_lib.normalise_on_device, static_argnums=1)(batch.images, stats)
    host, _ = data_lib.get_batch(exp.dataset.train, np.asarray(batch.indices)[0])
    np.testing.assert_allclose(np.asarray(on_device)[0], host, rtol=1e-6, atol=1e-6)
    assert np.abs(host).max() > 1.0  # normalised, not [0, 1]


@pytest.mark.parametrize("workers", [0, 1])
def test_evaluation_through_grain_reads_every_row_in_order(fake_imagenet, workers):
  """``eval_batches`` over a lazy split (grain: threads, or a worker process) gives the
  rows of a plain read, uint8, in order, the last short batch whole."""
  from lagrangian_jax import data as data_lib

  ds = data_lib.load_dataset("tfds:imagenet2012", data_dir=fake_imagenet, image_size=16, lazy=True)
  mesh = jax.make_mesh((1,), ("data",))
  options = feed_lib.EvalOptions(workers=workers, prefetch=2, min_rows_per_worker=1)
  got = list(feed_lib.eval_batches(ds.test, 6, mesh, options=options))
  assert [len(b[1]) for b in got] == [6, 6, 4]
  images, labels, indices = (np.concatenate([np.asarray(b[i]) for b in got]) for i in range(3))
  want_images, want_labels = data_lib.get_batch(ds.test, np.arange(16), raw=True)
  assert images.dtype == np.uint8
  np.testing.assert_array_equal(images, want_images)
  np.testing.assert_array_equal(labels, want_labels)
  np.testing.assert_array_equal(indices, np.arange(16))


@pytest.mark.parametrize(
  "overrides, key",
  [
    ({"data.pipeline": "disk"}, "data.pipeline"),
    ({"data.augment": "crop_flip"}, "data.augment"),
    ({"data.workers": -2}, "data.workers"),
    ({"lr_schedule.kind": "cosine"}, "lr_schedule.kind"),
    ({"lr_schedule.kind": "step", "lr_schedule.factor": 2.0}, "lr_schedule.factor"),
  ],
)
def test_bad_pipeline_and_schedule_keys_are_named(overrides, key):
  with pytest.raises(errors.ConfigError, match=f"config.{key}"):
    state_lib.build_experiment(shrunken_config("backprop", **overrides))


def test_grain_needs_a_tfds_data_set():
  with pytest.raises(errors.ConfigError, match="config.data.pipeline: 'grain' reads tfds"):
    state_lib.build_experiment(shrunken_config("backprop", **{"data.pipeline": "grain"}))


@pytest.mark.parametrize("solver", ["extragradient", "descent"])  # 2 / 1 optax counts per step
def test_step_schedule_divides_every_rate_by_10_every_k_epochs_of_iterations(solver):
  config = ml_collections.ConfigDict(
    {
      "solver": solver,
      "optimizer": "sgd",
      "accumulate": "both",
      "learning_rates": {"weights": 0.1, "aux": 0.1, "dual": 0.1},
      "adagrad_init": 0.1,
      "momentum": 0.0,
      "grad_clip": 0.0,
      "penalty": 1.0,
      "multiplier_every": 1,
      "lr_schedule": {"kind": "step", "every_epochs": 2.0, "factor": 0.1},
    }
  )
  tx, _ = optimizers.from_config(
    config, default_solver=solver, primal_labels={"weights": "weights"}, steps_per_epoch=1.5
  )
  params = {"primal": {"weights": jnp.zeros(())}, "dual": {}}
  state = tx.init(params)
  grad_fn = lambda p: jax.tree.map(jnp.ones_like, p)  # a constant gradient of 1
  steps = []
  for _ in range(7):
    new, state = solvers.solver_step(tx, grad_fn, params, state)
    steps.append(float(params["primal"]["weights"] - new["primal"]["weights"]))
    params = new
  # 2 epochs of 1.5 iterations: the rate drops after iterations 3 and 6
  np.testing.assert_allclose(steps, [0.1] * 3 + [0.01] * 3 + [0.001], rtol=1e-4)


def _launch(workdir, config_file, data_dir, steps, *extra):
  cmd = [
    sys.executable,
    "-m",
    "experiments.main",
    f"--config={config_file}",
    f"--workdir={workdir}",
    f"--config.data.data_dir={data_dir}",
    "--config.data.image_size=64",
    "--config.data.validation_fraction=0.1",
    "--config.batch_size=8",
    f"--config.num_steps={steps}",
    "--config.checkpoint_every=1",
    "--config.eval_every=1000",
    "--config.log_every=1",
    "--config.eval_batch_size=8",
    "--config.eval_train_examples=8",
    "--config.lr_schedule.every_epochs=0.25",  # the rate steps down within the run
    "--config.progress_bar=false",
    *extra,
  ]
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env["JAX_COMPILATION_CACHE_DIR"] = os.path.join(os.path.dirname(workdir), "jax_cache")
  env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
  proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc


def _losses(workdir):
  records = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  return [(r["step"], r["loss"]) for r in records if r["kind"] == "train"]


@pytest.mark.slow
@pytest.mark.parametrize(
  "config_file, workers",
  [("configs/imagenet_distprop.py", 2), ("configs/imagenet_backprop.py", 0)],
)
def test_imagenet_recipe_runs_and_resumes_with_the_pipeline_state(
  config_file, workers, fake_imagenet, tmp_path
):
  """AlexNet at 64x64 on the generated records: 3 steps straight, or 2 steps and a rerun
  that restores the grain iterator from the checkpoint: the same batches, the same run."""
  full, resumed = str(tmp_path / "full"), str(tmp_path / "resumed")
  extra = [f"--config.data.workers={workers}"]
  proc = _launch(full, config_file, fake_imagenet, 3, *extra)
  assert "dataset=tfds:imagenet2012" in proc.stdout
  _launch(resumed, config_file, fake_imagenet, 2, *extra)
  assert sorted(os.listdir(os.path.join(resumed, "checkpoints", "2"))) == [
    "_CHECKPOINT_METADATA",
    "commit_success.txt",
    "input",
    "state",
  ]
  rerun = _launch(resumed, config_file, fake_imagenet, 3, *extra)
  assert "resuming from the checkpoint at step 2" in rerun.stderr
  assert _losses(full) == _losses(resumed)
  a, b = (json.load(open(os.path.join(w, "summary.json"))) for w in (full, resumed))
  for key in ("test_accuracy", "test_loss", "final_defect", "validation_accuracy"):
    assert a[key] == b[key], key


@pytest.mark.slow
def test_two_processes_read_their_own_columns_through_grain(fake_imagenet, tmp_path):
  """Each process's grain pipeline (1 worker, crops and flips) reads its columns of every
  global batch; the run equals one process on two devices, and each process's iterator
  state is in the checkpoint."""
  from tests.test_multihost import _finish
  from tests.test_multihost import _free_port

  common = [
    sys.executable,
    "-m",
    "experiments.main",
    "--config=configs/smoke.py",
    "--config.method=backprop",
    "--config.data.name=tfds:imagenet2012",
    f"--config.data.data_dir={fake_imagenet}",
    "--config.data.image_size=16",
    "--config.data.max_train_examples=0",
    "--config.data.pipeline=grain",
    "--config.data.augment=crop_flip",
    "--config.data.workers=1",
    "--config.batch_size=8",
    "--config.eval_batch_size=8",
    "--config.eval_train_examples=16",
    "--config.num_steps=10",
    "--config.eval_every=10",
    "--config.checkpoint_every=5",
    "--config.mesh.num_devices=-1",
    "--config.progress_bar=false",
  ]
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  one, two, port = str(tmp_path / "one"), str(tmp_path / "two"), _free_port()
  procs = [
    subprocess.Popen(
      [*common, f"--workdir={two}", f"--coordinator_address=127.0.0.1:{port}"]
      + ["--num_processes=2", f"--process_id={i}"],
      cwd=ROOT,
      env=env,
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
    )
    for i in range(2)
  ]
  for rc, _, stderr in _finish(procs, timeout=TIMEOUT):
    assert rc == 0, stderr[-3000:]
  env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
  subprocess.run([*common, f"--workdir={one}"], cwd=ROOT, env=env, check=True, capture_output=True)
  assert sorted(os.listdir(os.path.join(two, "checkpoints", "10", "input"))) == [
    "commit_success.txt",
    "process_0-of-2.json",
    "process_1-of-2.json",
  ]
  a, b = (json.load(open(os.path.join(w, "summary.json"))) for w in (one, two))
  for key in ("test_loss", "test_accuracy", "validation_accuracy"):
    assert abs(a[key] - b[key]) <= 1e-4, (key, a[key], b[key])
