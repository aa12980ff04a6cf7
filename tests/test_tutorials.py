"""Every tutorial in docs/tutorials runs and meets the figures it asserts."""

import glob
import os
import runpy

import pytest

from tests.conftest import ROOT

TUTORIALS = sorted(glob.glob(os.path.join(ROOT, "docs", "tutorials", "*.py")))


def test_there_are_tutorials():
  names = {os.path.basename(p) for p in TUTORIALS}
  assert {"quadratic_program.py", "fairness.py"} <= names


@pytest.mark.parametrize("path", TUTORIALS, ids=[os.path.basename(p) for p in TUTORIALS])
def test_tutorial_runs(path):
  module = runpy.run_path(path)  # not "__main__": defines main() without running it
  figures = module["main"]()  # each tutorial asserts its own figures
  assert figures
