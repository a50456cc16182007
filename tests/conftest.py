"""Shared fixtures: register a plugin object for one test only, and run the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture
def register_plugin():
    """Register plugin objects with the qres plugin manager; unregister them after the test."""
    from qres.kernel import plugins

    plugins.load_plugins()
    names = []

    def register(obj, name):
        plugins.pm.register(obj, name=name)
        names.append(name)
        return obj

    yield register
    for name in names:
        plugins.pm.unregister(name=name)


def run_qres(*args: str, env: dict | None = None, input: bytes | None = None, cwd=None):
    """Run the installed ``qres`` console script in a subprocess, as a user would."""
    exe = Path(sys.executable).with_name("qres")
    full_env = {**os.environ, **(env or {})}
    full_env.pop("QRES_PLUGINS", None) if env is None or "QRES_PLUGINS" not in env else None
    return subprocess.run(
        [str(exe), *args], capture_output=True, env=full_env, input=input, cwd=cwd, timeout=120
    )


@pytest.fixture(scope="session")
def llama_backend():
    """The llama-cpp backend on the bundled SmolLM2 model, loaded once for the whole session
    (one thread: a second thread collapses throughput whenever the other core is busy)."""
    from qres.kernel import plugins
    from qres.kernel.config import Location

    backend = plugins.create(
        "llm_backend",
        {"use": "llama-cpp", "n_threads": 1, "n_ctx": 1024, "max_tokens": 128},
        Location("tests"),
    )
    backend.load()
    yield backend
    backend.close()
