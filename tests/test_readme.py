"""The README's command blocks run as written, with the installed ``qres``, in an empty folder;
the benchmark scripts that benchmarks/README.md runs work from a fresh copy of the sources."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def bash_blocks(markdown: Path) -> list[str]:
    """The ```bash blocks of a markdown file, in order."""
    return re.findall(r"^```bash\n(.*?)^```$", markdown.read_text(), flags=re.S | re.M)


def runnable(block: str) -> str:
    """A block as it runs after the installation: set-up steps (a venv, pip, the test suite
    itself) dropped, ``.venv/bin/`` commands taken from the installed environment."""
    lines = []
    for line in block.splitlines():
        steps = [step.strip() for step in line.split(" && ")]
        kept = [
            step.replace(".venv/bin/", "")
            for step in steps
            if not step.startswith("python3 -m venv")
            and "pip install" not in step
            and not step.replace(".venv/bin/", "").startswith("pytest")
        ]
        if kept:
            lines.append(" && ".join(kept))
    return "\n".join(lines)


def test_the_readme_has_the_blocks_this_test_runs():
    blocks = bash_blocks(REPO / "README.md")
    assert len(blocks) >= 3
    assert runnable(blocks[0]).strip() == "qres demo"
    assert "qres decompress readings.bin.qres" in blocks[1]


@pytest.mark.parametrize("number", range(len(bash_blocks(REPO / "README.md"))))
def test_readme_block_runs_as_written(number, tmp_path):
    block = bash_blocks(REPO / "README.md")[number]
    script = runnable(block)
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("QRES_") and key not in ("PYTHONPATH",)
    }
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        HOME=str(tmp_path / "home"),
        XDG_CONFIG_HOME=str(tmp_path / "home" / ".config"),
    )
    done = subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, f"{script}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
    if "readings.bin" in script:
        assert (tmp_path / "restored.bin").read_bytes() == (tmp_path / "readings.bin").read_bytes()


def fresh_copy(target: Path) -> Path:
    """The sources as a fresh clone has them: no compiled modules, no build products."""
    ignore = shutil.ignore_patterns(
        ".git", ".venv", "build", "*.egg-info", "__pycache__", "*.so", "*.c", "*.html"
    )
    shutil.copytree(REPO, target, ignore=ignore)
    return target


PROBE = """
import runpy, sys
sys.argv = [sys.argv[1], "--help"]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
except SystemExit as exc:
    assert not exc.code, exc.code
import qres
print(qres.__file__)
"""


def test_benchmark_scripts_use_the_installed_qres_from_a_fresh_clone(tmp_path):
    clone = fresh_copy(tmp_path / "clone")
    text = (REPO / "benchmarks" / "README.md").read_text()
    scripts = sorted(set(re.findall(r"\.venv/bin/python (benchmarks/\w+\.py)", text)))
    assert "benchmarks/swarm_targets.py" in scripts
    for script in scripts:
        done = subprocess.run(
            [sys.executable, "-c", PROBE, str(clone / script)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, f"{script}: {done.stderr}"
        used = Path(done.stdout.strip().splitlines()[-1]).resolve()
        assert clone.resolve() not in used.parents, f"{script} imported qres from {used}"


def layout_block() -> str:
    """The README's Layout block: the tree a newcomer reads first."""
    text = (REPO / "README.md").read_text()
    section = text.split("## Layout", 1)[1]
    return re.search(r"^```\n(.*?)^```$", section, flags=re.S | re.M).group(1)


def test_the_layout_block_names_every_part_of_the_package_and_nothing_else():
    named = set(re.findall(r"^  ([a-z_]+)/", layout_block(), flags=re.M))
    packages = {
        path.parent.name
        for path in (REPO / "qres").glob("*/__init__.py")
        if not path.parent.name.startswith("_")
    }
    assert named == packages


def test_the_layout_block_names_every_top_level_folder_and_every_plugin_kind():
    block = layout_block()
    named = set(re.findall(r"^([a-z_.]+)/", block, flags=re.M))
    assert named == {"qres", "plugins", "profiles", "tests", "benchmarks", "docs"}
    assert all((REPO / name).is_dir() for name in named)
    kinds = {path.stem for path in (REPO / "qres" / "kinds").glob("[a-z]*.py")}
    listed = re.search(r"kinds/.*?\((.*?)\)", block, flags=re.S).group(1)
    assert kinds == {word.strip() for word in listed.replace("\n", " ").split(",")}
