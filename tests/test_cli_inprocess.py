"""The in-process CLI runner the suite uses gives what the real console script gives."""

from __future__ import annotations

import pytest
from conftest import run_qres, run_qres_process

from qres.codec.container import MAGIC


@pytest.mark.parametrize(
    "args",
    [
        ("--version",),
        ("profiles", "show", "esp32", "--json"),
        ("compress", "no-such-input.bin", "--dtype", "int16"),  # exit 1, one line
        ("compress", "-", "--channels", "0"),  # a usage error, exit 2
        ("profiles", "show", "no-such-profile"),  # exit 3
        ("frobnicate",),  # unknown command
    ],
)
def test_in_process_matches_the_console_script(args, tmp_path):
    mine = run_qres(*args, cwd=tmp_path, input=b"")
    real = run_qres_process(*args, cwd=tmp_path, input=b"")
    assert (mine.returncode, mine.stdout, mine.stderr) == (
        real.returncode,
        real.stdout,
        real.stderr,
    )


def test_pipes_and_environment_are_the_runs_own(tmp_path):
    import os

    before = dict(os.environ), os.getcwd()
    packed = run_qres("compress", "-", "-o", "-", "--dtype", "int16", input=b"\x01\x00" * 500)
    assert packed.returncode == 0 and packed.stdout.startswith(MAGIC), packed.stderr
    back = run_qres("decompress", "-", "-o", "-", input=packed.stdout, cwd=tmp_path)
    assert back.returncode == 0 and back.stdout == b"\x01\x00" * 500
    assert (dict(os.environ), os.getcwd()) == before


@pytest.mark.real_process
def test_real_process_tests_get_the_console_script():
    done = run_qres("--version")
    assert done.returncode == 0 and done.args[0].endswith("qres") and done.args[0] != "qres"


def test_other_tests_run_in_process():
    assert run_qres("--version").args[0] == "qres"
