"""The depth experiment (experiments/depth.py) and DistProp's per-split diagnostics, shrunken:
a depth-8 MLP, a few steps, 500 digits."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import depth as depth_exp
from lagrangian_jax import errors
from lagrangian_jax.methods import base
from lagrangian_jax.methods import distprop
from tests.conftest import apply_overrides

SMALL = {
  "data.max_train_examples": 500,
  "eval_batch_size": 250,
  "eval_train_examples": 500,
  "batch_size": 50,
}


def _deep_config(depth=8, **overrides):
  """The deep DistProp config at ``depth`` with one layer per block (``first_split=1``:
  ``depth`` splits, which these tests count; the config's own first block is two layers)."""
  from configs import deep_mlp_distprop

  config = deep_mlp_distprop.get_config()
  config.network.depth = depth
  config.network.first_split = 1
  config.progress_bar = False
  return apply_overrides(config, {**SMALL, **overrides})


def _method(config):
  """The config's network and DistProp method, initialised for seed 0 (no train step)."""
  from lagrangian_jax import data as data_lib
  from lagrangian_jax import methods
  from lagrangian_jax import networks

  dataset = data_lib.load_dataset("mnist_5k", max_train_examples=500)
  net = networks.from_config(config.network, num_classes=10, input_shape=(28, 28, 1))
  method = methods.make_method(config, net, len(dataset.train.labels))

  def map_train(fn, limit=None):
    return fn(jnp.asarray(dataset.train.images[:200]), jnp.asarray(dataset.train.labels[:200]))

  params, constants = method.init(jax.random.key(0), map_train)
  batch = base.Batch(
    jnp.asarray(dataset.train.images[:50]),
    jnp.asarray(dataset.train.labels[:50]),
    jnp.arange(50),
    jnp.asarray(1),
  )
  return dataset, net, method, params, constants, batch


@pytest.mark.slow
def test_split_diagnostics_real_vs_samples():
  config = _deep_config()
  dataset, net, _, params, constants, _ = _method(config)
  split = dataset.validation
  d = distprop.split_diagnostics(
    config, net, params, constants, jnp.asarray(split.images[:200]), split.labels[:200], 3
  )
  assert set(distprop.DIAGNOSTICS) <= set(d)
  for name in distprop.DIAGNOSTICS:
    v = np.asarray(d[name])
    assert v.shape == (8,), name
    assert np.all(np.isfinite(v)), name
  for name in ("real_accuracy", "sample_accuracy"):
    assert np.shape(d[name]) == () and 0 <= float(d[name]) <= 1
  # block 0 trains on real data: its "sample" figures are the real ones; after it the
  # samples are the Gaussians' images, the real chain something else
  for kind in ("defect", "rms_z", "prototype_accuracy", "fisher"):
    real, sample = np.asarray(d[f"real_{kind}"]), np.asarray(d[f"sample_{kind}"])
    assert real[0] == sample[0], kind
    assert not np.allclose(real[1:], sample[1:]), kind
  for name in ("real_prototype_accuracy", "sample_prototype_accuracy", "real_agreement"):
    assert np.all((0 <= d[name]) & (d[name] <= 1)), name
  assert d["real_agreement"][0] == 1.0
  assert np.all(d["real_defect"] >= 0) and np.all(d["sigma_rms"] > 0)
  # the prototypes start on a sphere of RMS 1 with sigma 1 (configs/base.py)
  np.testing.assert_allclose(d["sigma_rms"], 1.0, rtol=1e-4)


@pytest.mark.parametrize(
  "overrides",
  [
    {"distprop.noise": "fixed", "distprop.mix_targets": "mixed"},  # the mix is a constant
    {"distprop.real_inputs": "forward", "distprop.mix_fraction": 0.0},
  ],
)
@pytest.mark.slow
def test_remedy_variants_have_finite_gradients(overrides):
  config = _deep_config(3, **overrides)
  _, _, method, params, constants, batch = _method(config)
  assert ("mix" in constants) == ("distprop.noise" in overrides)
  (value, metrics), grads = jax.jit(jax.value_and_grad(method.objective, has_aux=True))(
    params, constants, batch
  )
  assert np.isfinite(float(value))
  assert all(np.all(np.isfinite(np.asarray(g))) for g in jax.tree.leaves(grads))
  if "distprop.real_inputs" in overrides:
    assert "real_loss" in metrics and "real_defect" in metrics
    # the real chain is detached between blocks: no gradient reaches block 0 through it,
    # which learns exactly as without it; the blocks after it get more
    plain = _deep_config(3, **{**overrides, "distprop.real_inputs": "none"})
    _, _, plain_method, *_ = _method(plain)
    plain_grads = jax.jit(jax.grad(lambda p: plain_method.objective(p, constants, batch)[0]))(
      params
    )
    w, w_plain = grads["primal"]["weights"], plain_grads["primal"]["weights"]
    for a, b in zip(jax.tree.leaves(w[0]), jax.tree.leaves(w_plain[0])):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)
    assert not np.allclose(w[1]["Dense_0"]["kernel"], w_plain[1]["Dense_0"]["kernel"])


@pytest.mark.slow  # tens of seconds: the quick phase stays under its six minutes
def test_mixing_changes_the_objective_and_zero_is_the_plain_one():
  plain_config = _deep_config(2, **{"distprop.mix_fraction": 0.0})
  _, _, plain, params, constants, batch = _method(plain_config)
  _, _, mixed, _, mixed_constants, _ = _method(_deep_config(2, **{"distprop.mix_fraction": 0.25}))
  a, _ = plain.objective(params, constants, batch)
  b, _ = mixed.objective(params, mixed_constants, batch)
  assert np.isfinite(float(a)) and np.isfinite(float(b))
  assert float(a) != float(b)  # a quarter of the samples moved towards another class


@pytest.mark.parametrize(
  "key, value", [("distprop.mix_fraction", 1.5), ("distprop.mix_targets", "x")]
)
def test_bad_remedy_keys_name_themselves(key, value):
  with pytest.raises(errors.ConfigError, match=key):
    _method(_deep_config(2, **{key: value}))


@pytest.mark.slow
def test_depth_report_end_to_end_then_rerun_skips(tmp_path, capsys):
  workdir = str(tmp_path / "depth")
  kwargs = dict(
    depths=[8], methods=["backprop", "distprop"], seeds=2, steps=4, eval_every=4, sets=SMALL
  )
  report = depth_exp.run_report(workdir, **kwargs)
  files = set(os.listdir(workdir))
  assert {"depth.json", "depth.md", "depth_accuracy.png", "depth_defect.png"} <= files
  written = json.load(open(os.path.join(workdir, "depth.json")))
  assert written == json.loads(json.dumps(report))
  for m in ("backprop", "distprop"):
    cell = written["cells"][m]["8"]
    assert cell["status"] == "ok" and cell["seeds"] == [0, 1]
    for key in ("test_accuracy", "validation_accuracy"):
      assert len(cell[key]["per_seed"]) == 2
      assert cell[key]["mean"] == pytest.approx(np.mean(cell[key]["per_seed"]))
  diag = written["cells"]["distprop"]["8"]["diagnostics"]
  # the deep config's first block is two layers (network.first_split=2): 7 splits at depth 8
  assert written["cells"]["distprop"]["8"]["num_splits"] == 7
  assert np.asarray(diag["real_defect"]["per_seed"]).shape == (2, 7)
  assert len(diag["real_defect"]["mean"]) == 7
  assert "diagnostics" not in written["cells"]["backprop"]["8"]
  md = open(os.path.join(workdir, "depth.md")).read()
  assert "python -m experiments.depth --depths=8 --seeds=2" in md
  line = depth_exp.depth_line(report)
  assert line.startswith("DEPTH ") and "distprop@8=" in line and "backprop@8=" in line

  # a rerun trains nothing: the finished cells (and diagnostics) are read back
  before = os.path.getmtime(os.path.join(workdir, "distprop", "depth_8", "summary.json"))
  again = depth_exp.run_report(workdir, **kwargs)
  assert os.path.getmtime(os.path.join(workdir, "distprop", "depth_8", "summary.json")) == before
  assert again["cells"] == report["cells"]

  # another config in the same directory is refused, naming the key
  with pytest.raises(errors.ConfigError, match="learning_rates.weights"):
    depth_exp.run_report(workdir, **{**kwargs, "sets": {**SMALL, "learning_rates.weights": 0.5}})


@pytest.mark.slow
def test_local_learning_baselines_run_as_depth_cells(tmp_path):
  report = depth_exp.run_report(
    str(tmp_path),
    depths=[3],
    methods=["dfa", "dtp", "oam"],
    seeds=1,
    steps=2,
    eval_every=2,
    sets=SMALL,
  )
  for m in ("dfa", "dtp", "oam"):
    cell = report["cells"][m]["3"]
    assert cell["status"] == "ok", (m, cell)
    assert 0.0 <= cell["test_accuracy"]["mean"] <= 1.0


def test_methods_flag_rejects_unknown(tmp_path):
  with pytest.raises(errors.ConfigError, match="--methods"):
    depth_exp.run_report(str(tmp_path), depths=[2], methods=["nope"], steps=1)
  assert jax.devices()  # nothing above started a run


def test_every_cell_starts_from_the_deep_configs_init():
  init = depth_exp.deep_init()
  assert init in ("lecun_normal", "he_normal")
  for m in depth_exp.available_methods():
    kwargs = dict(seeds=1, steps=1, eval_every=1)
    assert depth_exp.cell_config(m, 8, sets={}, **kwargs).network.init == init, m
    lecun = depth_exp.cell_config(m, 8, sets={"network.init": "lecun_normal"}, **kwargs)
    assert lecun.network.init == "lecun_normal", m
  # a report written before the key existed ran flax's default
  cells = {"backprop": {"4": {"init": "he_normal"}}, "distprop": {"4": {}}}
  assert depth_exp.inits({"cells": cells}) == "he_normal, lecun_normal"
