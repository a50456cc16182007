"""The 8-node targets as behaviour, with real node processes on loopback (``qres swarm up``):
with 2 of 8 nodes sign-flipping, every honest node bans both attackers on attributable
evidence (a failed check of a packet before its use, or a failed audit, checked again by every
receiver of a ban notice), no honest node is ever banned, and the honest nodes' error stays
within 1.10x of theirs in the same swarm without the attack. The audit rate comes from the
profile (the rule is the simulator's); the test profile raises it for the packets a node does
not check."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest
from node_helpers import qres, wait_for

from qres.node.launch import PIDS, node_rows
from qres.node.state import State

NODES, ROUNDS = 8, 16


def _profile(tmp_path):
    path = tmp_path / "targets.toml"
    path.write_text('[profile]\nname = "targets"\nextends = "node"\n\n[swarm]\naudit_rate = 0.25\n')
    return path


def _run(folder, profile, transport: str, attack: bool) -> list[dict]:
    args = ["--nodes", str(NODES), "--rounds", str(ROUNDS), "--transport", transport]
    args += ["--profile", str(profile), "--time-scale", "600", "--no-watch"]
    if attack:
        args += ["--attack", "sign-flip", "--byzantine", "0.25"]
    subprocess.run(qres("swarm", "up", "--dir", str(folder), *args), check=True)
    run = json.loads((folder / PIDS).read_text())
    try:
        wait_for(lambda: not any(r[-1] for r in node_rows(folder)), 60 + 6 * ROUNDS, 0.5)
    finally:
        subprocess.run(qres("swarm", "down", "--dir", str(folder)), capture_output=True)
    out = []
    for i, node in enumerate(run["nodes"]):
        state = State(folder / f"n{i}" / "data" / "state.sqlite")
        try:
            errors = [r["error"] for r in state.rounds(1000) if r["error"] >= 0]
            out.append({**node, "error": errors[-1], "bans": state.bans()})
        finally:
            state.close()
    return out


def _check_bans(nodes: list[dict]) -> None:
    attackers = {n["did"] for n in nodes if n["byzantine"]}
    assert len(attackers) == 2
    for node in nodes:
        if node["byzantine"]:
            continue
        banned = {b["did"] for b in node["bans"]}
        assert banned == attackers, (node["did"], banned)  # both attackers, nobody else
        # each ban rests on evidence this node checked: a failed audit (kind 3)
        assert all(b["kind"] == 3 and b["evidence"] for b in node["bans"])


def test_tcp_swarm_bans_sign_flippers_and_keeps_its_error(tmp_path):
    profile = _profile(tmp_path)
    hit = _run(tmp_path / "attacked", profile, "tcp", attack=True)
    _check_bans(hit)
    free = _run(tmp_path / "free", profile, "tcp", attack=False)
    assert not any(n["bans"] for n in free)
    honest = [i for i, n in enumerate(hit) if not n["byzantine"]]
    ratio = np.mean([hit[i]["error"] for i in honest]) / np.mean([free[i]["error"] for i in honest])
    assert ratio <= 1.10, ratio


@pytest.mark.skipif(not shutil.which("mosquitto"), reason="needs mosquitto (.ci/run installs it)")
def test_mqtt_swarm_bans_sign_flippers(tmp_path):
    _check_bans(_run(tmp_path / "attacked", _profile(tmp_path), "mqtt", attack=True))
