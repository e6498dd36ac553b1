"""The command line: check, version."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from .support import run_python

VALID = """\
listeners:
  - address: 127.0.0.1:18080
drain_timeout: ${FASTGW_TEST_DRAIN:-5s}
services:
  echo: {instances: ["http://127.0.0.1:9001"]}
routes:
  - id: echo
    uri: lb://echo
    predicates: [Path=/echo/**]
    auth: none
"""

INVALID = """\
listeners:
  - address: 127.0.0.1:18080
limitz: {max_body: 1MiB}
services:
  echo: {instances: ["http://127.0.0.1:9001"]}
routes:
  - id: echo
    uri: lb://echo
    predicates: [Path=/echo/**]
    auth: none
drain_timeout: 10 parsecs
"""


def fastgw(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return run_python("-m", "fastgw", *args, env=env)


def test_check_accepts_a_valid_file(tmp_path):
    path = tmp_path / "gateway.yaml"
    path.write_text(VALID)
    result = fastgw("check", "-c", str(path))
    assert result.returncode == 0, result


def test_check_accepts_json(tmp_path):
    path = tmp_path / "gateway.json"
    path.write_text(json.dumps(yaml.safe_load(VALID)))
    result = fastgw("check", "-c", str(path))
    assert result.returncode == 0, result


def test_check_reports_every_error_with_its_line(tmp_path):
    path = tmp_path / "gateway.yaml"
    path.write_text(INVALID)
    result = fastgw("check", "-c", str(path))
    assert result.returncode == 2, result
    output = result.stdout + result.stderr
    located = [line for line in output.splitlines() if line.startswith(f"{path}:")]
    assert any(line.startswith(f"{path}:3:") and "limitz" in line for line in located), output
    assert any(line.startswith(f"{path}:11:") for line in located), output


def test_check_of_a_missing_file_fails(tmp_path):
    result = fastgw("check", "-c", str(tmp_path / "missing.yaml"))
    assert result.returncode != 0, result


@pytest.mark.parametrize(("value", "status"), [("7s", 0), ("banana", 2)])
def test_check_expands_environment_variables(tmp_path, value, status):
    path = tmp_path / "gateway.yaml"
    path.write_text(VALID.replace("${FASTGW_TEST_DRAIN:-5s}", "${FASTGW_TEST_DRAIN}"))
    result = fastgw("check", "-c", str(path), env={"FASTGW_TEST_DRAIN": value})
    assert result.returncode == status, result
    if status:
        assert f"{path}:3:" in result.stdout + result.stderr, result


def test_check_uses_the_default_of_an_unset_variable(tmp_path):
    path = tmp_path / "gateway.yaml"
    path.write_text(VALID.replace(":-5s}", ":-banana}"))
    result = fastgw("check", "-c", str(path), env={"FASTGW_TEST_DRAIN": None})
    assert result.returncode == 2, result
    assert f"{path}:3:" in result.stdout + result.stderr, result


def project_version() -> str:
    """The version pyproject.toml declares (the checkout the tests belong to)."""
    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    for line in pyproject.read_text().splitlines():
        if line.startswith("version"):
            return line.split('"')[1]
    raise AssertionError(f"no version in {pyproject}")


def test_version_names_the_version_and_the_core():
    result = fastgw("version")
    assert result.returncode == 0, result
    assert project_version() in result.stdout
    assert "compiled" in result.stdout.lower() or "pure" in result.stdout.lower(), result


def test_version_says_pure_python_when_extensions_are_disabled():
    result = fastgw("version", env={"FASTGW_NO_EXTENSIONS": "1"})
    assert result.returncode == 0, result
    assert "pure python" in result.stdout.lower(), result


def test_version_matches_the_core_in_use():
    env = {"FASTGW_NO_EXTENSIONS": None}
    compiled = run_python("-c", "import fastgw._core as c; print(c.COMPILED)", env=env)
    assert compiled.stdout.strip() in ("True", "False"), compiled
    result = fastgw("version", env=env)
    expected = "compiled" if compiled.stdout.strip() == "True" else "pure python"
    assert expected in result.stdout.lower(), result
