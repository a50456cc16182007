"""Shared fixtures: register a plugin object for one test only, and run the CLI.

``run_qres`` runs the CLI in this process (``qres.cli.main`` with its own stdin, stdout, stderr,
environment and working directory): fast, and it returns what a subprocess would. It starts a
real ``qres`` subprocess (``run_qres_process``) instead in tests marked ``real_process`` (the
smoke tests that prove the installed console script, its pipes and exit codes work) and when
the environment it is given changes which plugins load.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import subprocess
import sys
import traceback
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "real_process: run_qres starts the installed qres console script"
    )


_REAL_PROCESS = False


@pytest.fixture(autouse=True)
def _real_process(request):
    """Tests marked ``real_process`` get a real subprocess from :func:`run_qres`."""
    # pytest loads this file as ``tests.conftest`` while test modules import it as ``conftest``
    # (pythonpath): set the flag in the copy whose run_qres the tests call.
    shared = importlib.import_module("conftest")
    shared._REAL_PROCESS = request.node.get_closest_marker("real_process") is not None
    yield
    shared._REAL_PROCESS = False


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


#: Variables read when plugins load (once per process): a run that sets one needs a subprocess.
PROCESS_ONLY_ENV = ("QRES_PLUGINS", "QRES_TRACE_PLUGINS", "PYTHONPATH")


def run_qres_process(*args: str, env: dict | None = None, input: bytes | None = None, cwd=None):
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


def run_qres(*args: str, env: dict | None = None, input: bytes | None = None, cwd=None):
    """Run ``qres ARGS`` in this process; the result has ``returncode`` and ``stdout``/``stderr``
    bytes like ``subprocess.run``'s. Uses :func:`run_qres_process` in ``real_process`` tests
    and when ``env`` sets a variable that only matters while plugins load."""
    if _REAL_PROCESS or (env and any(key in env for key in PROCESS_ONLY_ENV)):
        return run_qres_process(*args, env=env, input=input, cwd=cwd)
    from qres import cli

    out, err = io.BytesIO(), io.BytesIO()
    streams = (
        io.TextIOWrapper(io.BytesIO(input or b""), encoding="utf-8"),
        io.TextIOWrapper(out, encoding="utf-8", write_through=True),
        io.TextIOWrapper(err, encoding="utf-8", write_through=True),
    )
    with _environment(env, cwd), _std_streams(*streams):
        try:
            cli.main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = _exit_code(exc.code)
        except BaseException:  # what an uncaught exception does to a process (--debug)
            traceback.print_exc()
            code = 1
        sys.stdout.flush()
        sys.stderr.flush()
    return subprocess.CompletedProcess(["qres", *args], code, out.getvalue(), err.getvalue())


def _exit_code(code) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)  # sys.exit("message"): printed, exit status 1
    return 1


@contextlib.contextmanager
def _std_streams(stdin, stdout, stderr):
    saved = sys.stdin, sys.stdout, sys.stderr
    sys.stdin, sys.stdout, sys.stderr = stdin, stdout, stderr
    try:
        yield
    finally:
        sys.stdin, sys.stdout, sys.stderr = saved


@contextlib.contextmanager
def _environment(env: dict | None, cwd):
    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    os.environ.pop("QRES_PLUGINS", None)
    os.environ.update(env or {})
    if cwd is not None:
        os.chdir(cwd)
    try:
        yield
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
