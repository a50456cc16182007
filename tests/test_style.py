"""The code stays linted, formatted and within the complexity limit (pyproject's [tool.ruff])."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

RUFF = Path(sys.executable).with_name("ruff")


@pytest.mark.parametrize(
    "args", [("check", "--no-cache", "."), ("format", "--check", "--no-cache", ".")]
)
def test_ruff_is_clean(args):
    assert RUFF.exists(), f"{RUFF} missing: install the test extra (pip install '.[test]')"
    done = subprocess.run([str(RUFF), *args], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, f"ruff {' '.join(args)}:\n{done.stdout}{done.stderr}"


def test_the_complexity_limit_is_on():
    branches = "".join(f"    if x == {i}:\n        return {i}\n" for i in range(16))
    code = f"def tangled(x):\n{branches}    return -1\n"
    done = subprocess.run(
        [
            str(RUFF),
            "check",
            "--no-cache",
            "--config",
            str(REPO / "pyproject.toml"),
            "--stdin-filename",
            "tangled.py",
            "-",
        ],
        input=code,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1 and "C901" in done.stdout, done.stdout + done.stderr
