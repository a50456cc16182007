"""The examples of docs/aggregators.md, docs/learning.md and docs/llm.md run as written (other
docs have their own test files: test_docs_trust, test_docs_plugins, test_docs_ecosystem,
test_node_docs, test_mesh_docs, test_router_docs, test_lora_hierarchy, test_api)."""

from __future__ import annotations

import re
import shlex
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from corpus import needs_corpus

DOCS = Path(__file__).resolve().parent.parent / "docs"
BIN = Path(sys.executable).parent


def blocks(name: str, language: str) -> list[str]:
    text = (DOCS / name).read_text()
    return re.findall(rf"^```{language}\n(.*?)^```$", text, flags=re.S | re.M)


def run_python(name: str) -> dict:
    namespace: dict = {}
    for number, block in enumerate(blocks(name, "python")):
        exec(compile(block, f"docs/{name} python block {number + 1}", "exec"), namespace)
    return namespace


def test_the_aggregator_example_runs():
    namespace = run_python("aggregators.md")
    assert namespace["out"].shape == (64,)


@needs_corpus
def test_the_learning_example_runs():
    namespace = run_python("learning.md")
    assert namespace["deltas"].shape == (100, 16)
    assert namespace["err"].shape == (100,)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _serve(command: str) -> None:
    """A long-running ``serve`` line: it answers /health, then stops cleanly on SIGTERM. The
    documented port may be taken on a shared machine, so a free one replaces it."""
    port = _free_port()
    argv = re.sub(r"--port \d+", f"--port {port}", command)
    server = subprocess.Popen(shlex.split(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 300
        while True:
            assert server.poll() is None, server.stderr.read().decode()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
                    assert r.status == 200
                    break
            except OSError:
                assert time.monotonic() < deadline, "serve never answered /health"
                time.sleep(0.2)
    finally:
        server.terminate()
        assert server.wait(timeout=60) == 0


def test_the_llm_commands_run_as_written():
    pytest.importorskip("llama_cpp")
    lines = [line.split("  #")[0].strip() for line in blocks("llm.md", "bash")[0].splitlines()]
    commands = [line for line in lines if line and not line.startswith("pip install")]
    assert len(commands) >= 6
    env = {"PATH": f"{BIN}:/usr/bin:/bin"}
    for command in commands:
        if " llm serve " in command:
            _serve(command.replace("qres ", f"{BIN}/qres ", 1))
            continue
        stdin = b"Hello.\n\n" if " llm chat" in command else b""
        done = subprocess.run(
            ["bash", "-c", command], input=stdin, capture_output=True, env=env, timeout=600
        )
        assert done.returncode == 0, (command, done.stderr.decode())
        assert done.stdout.strip(), command
