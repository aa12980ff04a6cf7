"""The README's ten-line example runs as written and gives the answer it claims."""

import os
import re
import subprocess
import sys

from tests.conftest import ROOT


def test_readme_example_runs():
  text = open(os.path.join(ROOT, "README.md")).read()
  code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
  code += (
    "\nimport numpy as np\nnp.testing.assert_allclose(params['primal'], [0.5, 0.5], atol=1e-4)"
  )
  code += "\nnp.testing.assert_allclose(params['dual'], -1.0, atol=1e-3)\n"
  proc = subprocess.run(
    [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300
  )
  assert proc.returncode == 0, proc.stderr


def test_readme_commands_match_ci():
  readme = open(os.path.join(ROOT, "README.md")).read()
  ci = open(os.path.join(ROOT, ".ci", "run")).read()
  assert "python -m pytest -q" in readme and "python -m pytest -q" in ci
  assert "--config=configs/default.py" in readme
