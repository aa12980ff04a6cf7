"""The benchmark scripts still run (tiny sizes; their figures live in BUILD.md)."""

import pytest

from benchmarks import distprop_step_parts


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
