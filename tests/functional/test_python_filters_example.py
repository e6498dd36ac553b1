"""examples/python_filters as its user meets it: ``pytest`` in that folder passes, and
``fastgw check`` accepts its config."""

from __future__ import annotations

import shutil
from pathlib import Path

from .support import run_python

EXAMPLE = Path(__file__).parents[2] / "examples" / "python_filters"


def test_the_examples_own_tests_pass(pytester):
    for name in ("conftest.py", "filters.py", "test_filters.py"):
        shutil.copy(EXAMPLE / name, pytester.path / name)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=4)


def test_the_examples_config_passes_check():
    result = run_python("-m", "fastgw", "check", "-c", str(EXAMPLE / "gateway.yaml"))
    assert result.returncode == 0, result.stderr
