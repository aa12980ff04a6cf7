"""The README's examples run as written and give the answers they claim."""

import os
import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT

# the answer each of the README's python blocks claims, in order
CHECKS = (
  "np.testing.assert_allclose(params['primal'], [0.5, 0.5], atol=1e-4)\n"
  "np.testing.assert_allclose(params['dual'], -1.0, atol=1e-3)\n",
  "np.testing.assert_allclose(params['primal'], [2.0, 1.0], atol=1e-3)\n"
  "assert float(params['dual']['norm'].value) == 0.0\n",
)


@pytest.mark.parametrize("block", range(len(CHECKS)))
def test_readme_example_runs(block):
  text = open(os.path.join(ROOT, "README.md")).read()
  blocks = re.findall(r"```python\n(.*?)```", text, re.S)
  assert len(blocks) == len(CHECKS), "a README python block without its check here"
  code = blocks[block] + "\nimport numpy as np\n" + CHECKS[block]
  proc = subprocess.run(
    [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300
  )
  assert proc.returncode == 0, proc.stderr


def test_readme_commands_match_ci():
  readme = open(os.path.join(ROOT, "README.md")).read()
  ci = open(os.path.join(ROOT, ".ci", "run")).read()
  assert "python -m pytest -q" in readme and "python -m pytest -q" in ci
  assert "--config=configs/default.py" in readme
