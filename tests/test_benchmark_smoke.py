"""The benchmark scripts still run (tiny sizes; their figures live in BUILD.md)."""

import pytest

from benchmarks import distprop_cost
from benchmarks import distprop_step_parts
from benchmarks import memory


@pytest.mark.slow
def test_distprop_step_parts_runs(capsys):
  distprop_step_parts.main(["--depth=2", "--batch_size=16", "--rounds=1", "--steps=1"])
  out = capsys.readouterr().out
  result = [line for line in out.splitlines() if line.startswith("RESULT ")]
  assert len(result) == 1, out
  fields = dict(item.split("=") for item in result[0].split()[1:])
  assert set(fields) >= {
    "distprop_ms",
    "no_mixtures_ms",
    "fixed_noise_no_mixtures_ms",
    "mixtures_as_matmul_ms",
  }
  assert float(fields["distprop_ratio"]) == 1.0


def result_fields(out: str) -> dict:
  result = [line for line in out.splitlines() if line.startswith("RESULT ")]
  assert len(result) == 1, out
  return dict(item.split("=") for item in result[0].split()[1:])


@pytest.mark.slow
def test_distprop_cost_runs(capsys):
  distprop_cost.main(
    ["--networks=deep", "--depths=2", "--batch_size=16", "--rounds=1", "--steps=1"]
  )
  fields = result_fields(capsys.readouterr().out)
  for solver in ("eg", "peg"):
    for key in ("ms", "gflop", "ratio", "flop_ratio", "efficiency"):
      assert float(fields[f"deep2_{solver}_{key}"]) > 0
  # extragradient evaluates the gradient twice, past extragradient once
  assert float(fields["deep2_eg_gflop"]) > 1.5 * float(fields["deep2_peg_gflop"])


@pytest.mark.slow
def test_distprop_cost_per_device_flops_runs(capsys):
  distprop_cost.main(["--devices=2", "--networks=deep", "--depths=2", "--batch_size=16"])
  fields = result_fields(capsys.readouterr().out)
  for label in ("bp", "dp"):
    one, two = (float(fields[f"deep2_{label}_gflop_{n}dev"]) for n in (1, 2))
    assert 0 < two < one  # the batch is divided over the data axis
  assert float(fields["deep2_bp_over_ideal"]) < 1.5


@pytest.mark.slow
def test_memory_runs(capsys):
  memory.main(
    ["--configs=imagenet_backprop", "--image_size=64", "--batch_size=8", "--num_train=64"]
  )
  fields = {k: float(v) for k, v in result_fields(capsys.readouterr().out).items()}
  f32, bf16 = "imagenet_backprop_float32", "imagenet_backprop_bfloat16"
  assert all(fields[f"{d}_{k}_mib"] > 0 for d in (f32, bf16) for k in ("temp", "argument"))
  # the state is float32 at both dtypes: the step's arguments take the same bytes
  assert fields[f"{f32}_argument_mib"] == fields[f"{bf16}_argument_mib"]


def test_mixtures_as_matmul_is_distprops_mixture():
  import jax
  import numpy as np

  from lagrangian_jax.methods import distprop

  t, partner = distprop.mix_draw(jax.random.key(0), 3, 4, 10, 2)
  for shape in [(10, 5), (10, 3, 3, 2)]:
    x = jax.random.normal(jax.random.key(1), shape)
    np.testing.assert_allclose(
      distprop_step_parts.mixed_as_matmul(x, t, partner),
      distprop.mixed(x, t, partner),
      rtol=1e-6,
      atol=1e-6,
    )
