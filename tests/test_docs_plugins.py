"""Every example in docs/plugins.md runs: the plugin package is installed in a temporary folder
with a ``qres`` entry point (as pip would), the commands are run, the tests are executed."""

from __future__ import annotations

import json
import re
import shlex
import sys
from pathlib import Path

import pytest
from conftest import run_qres

from qres.kernel.profiles import tomllib

DOC = Path(__file__).resolve().parent.parent / "docs" / "plugins.md"
FENCE = re.compile(r"^```(\w+)([^\n]*)\n(.*?)^```", re.M | re.S)


def _blocks() -> list[tuple[str, str, str]]:
    return [(m.group(1), m.group(2).strip(), m.group(3)) for m in FENCE.finditer(DOC.read_text())]


def _install(root: Path) -> dict[str, str]:
    """Write the documented files; lay the package out as an installed distribution."""
    for _lang, info, body in _blocks():
        if info.startswith("file="):
            target = root / info.removeprefix("file=")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(body)
    entry_points = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    lines = [f"{k} = {v}" for k, v in entry_points["entry-points"]["qres"].items()]
    dist = root / "qres_pigeon-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: qres-pigeon\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[qres]\n" + "\n".join(lines) + "\n")
    (dist / "RECORD").write_text("")
    return {"PYTHONPATH": str(root)}


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    root = tmp_path_factory.mktemp("pigeon")
    return root, _install(root)


def test_every_block_is_an_example_this_test_runs():
    kinds = {(lang, info.split("=")[0]) for lang, info, _ in _blocks()}
    assert kinds <= {("python", "file"), ("toml", "file"), ("bash", "run"), ("python", "test")}
    assert ("bash", "run") in kinds and ("python", "test") in kinds


def test_documented_commands_run(installed):
    root, env = installed
    import numpy as np

    t = np.arange(50_000)
    wave = (3000 * np.sin(t / 40) + 50 * np.sin(t / 3)).astype("<i2")
    (root / "readings.bin").write_bytes(wave.tobytes())
    ran = 0
    for lang, info, body in _blocks():
        if (lang, info) != ("bash", "run"):
            continue
        for line in body.splitlines():
            args = shlex.split(line)
            assert args[0] == "qres"
            out = run_qres(*args[1:], env=env, cwd=root)
            assert out.returncode == 0, (line, out.stderr.decode())
            if "simulate" in args:  # the documented transport carried the swarm's messages
                report = json.loads(out.stdout)
                assert report["transport"]["delivered_messages"] > 0, report["transport"]
            assert b"warning" not in out.stderr, (line, out.stderr.decode())
            ran += 1
    assert ran >= 5
    assert (root / "restored.bin").read_bytes() == (root / "readings.bin").read_bytes()
    packed = (root / "readings.bin.qres").stat().st_size
    assert packed < 0.6 * (root / "readings.bin").stat().st_size  # hold did predict


def test_documented_tests_pass(installed):
    root, _ = installed
    sys.path.insert(0, str(root))
    try:
        for lang, info, body in _blocks():
            if (lang, info) != ("python", "test"):
                continue
            scope: dict = {}
            exec(compile(body, f"{DOC}:test", "exec"), scope)  # noqa: S102 - our own docs
            tests = [f for name, f in scope.items() if name.startswith("test_")]
            assert tests
            for test in tests:
                test()
    finally:
        sys.path.remove(str(root))
        for name in [m for m in sys.modules if m.startswith("qres_pigeon")]:
            del sys.modules[name]
