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
  assert set(fields) >= {"distprop_ms", "no_mixtures_ms", "fixed_noise_no_mixtures_ms"}
  assert float(fields["distprop_ratio"]) == 1.0
