"""`qres swarm up` / `down`: real node processes on loopback, honest and under attack."""

from __future__ import annotations

import json
import subprocess

from node_helpers import qres, wait_for

from qres.node.launch import PIDS, node_rows
from qres.node.runtime import status_of
from qres.node.state import State


def _up(folder, *args) -> dict:
    subprocess.run(
        qres("swarm", "up", "--dir", str(folder), "--no-watch", "--time-scale", "1200", *args),
        check=True,
        capture_output=True,
    )
    return json.loads((folder / PIDS).read_text())


def _final(folder, n: int) -> list[dict]:
    out = []
    for i in range(n):
        state = State(folder / f"n{i}" / "data" / "state.sqlite")
        try:
            out.append(status_of(state))
        finally:
            state.close()
    return out


def _errors(status: dict) -> list[float]:
    return [r["error"] for r in status["rounds"] if r["error"] >= 0]


def _last_error(status: dict) -> float:
    return _errors(status)[-1]


def _learned(folder, n: int, rounds: int) -> bool:
    """Every node has measured its error in at least ``rounds`` rounds."""
    try:
        return all(len(_errors(status)) >= rounds for status in _final(folder, n))
    except Exception:  # a node's state not created yet
        return False


def test_swarm_up_learns_and_down_stops(tmp_path):
    folder = tmp_path / "run"
    _up(folder, "--nodes", "3", "--rounds", "200")
    try:
        wait_for(lambda: all(r[3] != "-" and r[5] == 2 for r in node_rows(folder)), 40, 0.3)
        wait_for(lambda: _learned(folder, 3, 6), 120, 0.5)
    finally:
        out = subprocess.run(
            qres("swarm", "down", "--dir", str(folder)), capture_output=True, text=True
        )
    assert out.returncode == 0 and out.stdout.startswith("3 nodes stopped, 0 killed")
    for status in _final(folder, 3):
        errors = _errors(status)  # learned from the genesis model: the error came down
        assert errors[-1] < errors[0] and not status["banned"] and len(status["peers"]) == 2
    again = subprocess.run(qres("swarm", "down", "--dir", str(folder)), capture_output=True)
    assert again.returncode == 1 and b"no swarm is up" in again.stderr


def test_attackers_are_outvoted_and_honest_nodes_never_banned(tmp_path):
    folder = tmp_path / "run"
    run = _up(
        folder, "--nodes", "5", "--rounds", "12", "--attack", "sign-flip", "--byzantine", "0.2"
    )
    try:
        wait_for(lambda: not any(r[-1] for r in node_rows(folder)), 60, 0.5)
    finally:
        subprocess.run(qres("swarm", "down", "--dir", str(folder)), capture_output=True)
    byzantine = {n["did"] for n in run["nodes"] if n["byzantine"]}
    assert len(byzantine) == 1
    for node, status in zip(run["nodes"], _final(folder, 5), strict=True):
        if node["byzantine"]:
            continue
        assert _last_error(status) < 0.1
        assert set(status["banned"]) <= byzantine  # no honest node is ever banned
