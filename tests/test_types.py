"""The project's pinned type checker (mypy), with the project's own configuration (pyproject.toml):
the seams between the parts type-check (the files are listed there)."""
from __future__ import annotations

import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def pinned_mypy() -> str:
    match = re.search(r"^mypy==(\S+)", (ROOT / "requirements-test.txt").read_text(), re.MULTILINE)
    assert match, "requirements-test.txt pins no mypy"
    return match.group(1)


def test_mypy_finds_no_errors_in_the_seams():
    try:
        installed = metadata.version("mypy")
    except metadata.PackageNotFoundError:
        pytest.fail("mypy is not installed: pip install -r requirements-test.txt")
    # another version reports other errors: the pin is the one the configuration was written for
    pinned = pinned_mypy()
    assert installed == pinned, f"mypy {installed} installed, {pinned} pinned: pip install -r requirements-test.txt"
    result = subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml")],
                            capture_output=True, text=True, cwd=ROOT, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
