"""Lint, format and type checks (ruff and mypy), so the test command covers them too."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYTHON = ["src", "tests", "bench", "tools"]


def _tool(name):
    exe = Path(sys.executable).parent / name
    if exe.exists():
        return str(exe)
    found = shutil.which(name)
    if not found:
        pytest.fail(f"{name} is not installed: install the dev extra (pip install -e '.[dev]')")
    return found


@pytest.mark.parametrize("args", [["check", *PYTHON], ["format", "--check", *PYTHON]])
def test_ruff(args):
    result = subprocess.run([_tool("ruff"), *args], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy():
    result = subprocess.run([_tool("mypy"), "src"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
