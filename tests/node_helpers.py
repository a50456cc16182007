"""Helpers for tests that run real node processes: keys, profiles, data and waiting."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np

from qres.trust.identity import Identity, save_identity


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def signal_file(path: Path, n: int = 40_000, seed: int = 0) -> Path:
    """A smooth noisy int16 recording."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    x = 800 * np.sin(t / (40 + 5 * seed)) + 300 * np.sin(t / 7.0) + rng.normal(0, 15, n)
    x.astype("<i2").tofile(path)
    return path


def make_nodes(
    folder: Path, n: int, transport: str = "tcp", extra: str = "", route=None, **node
) -> list[dict]:
    """n nodes: each a key, a profile (peers: all others over TCP) and a data folder.
    ``route(i, j, port)`` gives the address node i dials to reach node j (default: j's own
    port; a test puts a proxy in between)."""
    ids = [Identity.generate() for _ in range(n)]
    ports = [free_port() for _ in range(n)]
    route = route or (lambda i, j, port: f"127.0.0.1:{port}")
    out = []
    for i, ident in enumerate(ids):
        home = folder / f"n{i}"
        home.mkdir(parents=True)
        key = save_identity(ident, home / "node.key")
        node_lines = "\n".join(f"{k} = {json.dumps(v)}" for k, v in node.items())
        if transport == "tcp":
            peers = ", ".join(
                f'{{ address = "{route(i, j, ports[j])}", did = "{ids[j].did}" }}'
                for j in range(n)
                if j != i
            )
            table = (
                f'use = "tcp"\nlisten = "127.0.0.1:{ports[i]}"\nswarm = "test"\n'
                f"peers = [{peers}]\nbackoff_max = 0.5\n"
            )
        else:
            table = transport
        profile = home / "profile.toml"
        profile.write_text(
            f'[profile]\nname = "n{i}"\nextends = "node"\n\n[swarm]\nround_seconds = 600.0\n'
            f'{extra}\n[node]\ndata_dir = "{home / "data"}"\nkey = "{key}"\n{node_lines}\n\n'
            f"[node.transport]\n{table}"
        )
        out.append({"id": ident, "home": home, "profile": profile, "port": ports[i]})
    return out


def qres(*args: str) -> list[str]:
    # isolated mode: the checkout's source folder (the working directory) must not shadow the
    # installed qres, which holds the compiled core and the built-in plugins
    return [sys.executable, "-I", "-u", "-m", "qres", *args]


def start_node(node: dict, *args: str, env: dict | None = None, **kw) -> subprocess.Popen:
    env = {**(os.environ if env is None else env), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        qres("node", "run", "--profile", str(node["profile"]), *args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        **kw,
    )


def status(node: dict, check: bool = True) -> dict | None:
    """``qres node status --json`` of a node (None if it fails and ``check`` is False)."""
    out = subprocess.run(
        qres("node", "status", "--profile", str(node["profile"]), "--json"),
        capture_output=True,
        text=True,
        check=check,
    )
    return json.loads(out.stdout) if out.returncode == 0 else None


def live_status(port: int) -> dict | None:
    """``GET /v1/status`` of a node's HTTP API on ``port``, or None while it does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/status", timeout=5) as r:
            return json.loads(r.read())
    except OSError:
        return None


def wait_passed(ports, counter: str, more: int, timeout: float) -> None:
    """Wait until every node on ``ports`` has passed ``more`` further ``counter`` (``audits``
    or ``checks``) than now: the honest nodes go on verifying one another."""
    start = [live_status(port)[counter]["passed"] for port in ports]

    def grown():
        return all(
            (live_status(port) or {counter: {"passed": 0}})[counter]["passed"] >= n + more
            for port, n in zip(ports, start, strict=True)
        )

    wait_for(grown, timeout=timeout, step=0.5)


def stop_nodes(procs, timeout: float = 60.0) -> None:
    """SIGTERM every node still running, then check that each one exits 0 (a clean stop)."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        _, err = proc.communicate(timeout=timeout)
        assert proc.returncode == 0, err


def wait_for(condition, timeout: float = 30.0, step: float = 0.05):
    end = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError("condition not reached in time")
        time.sleep(step)
