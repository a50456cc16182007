"""Nodes sleep on their wake schedule: in the rounds between wakes a node does no work (no
update signed or sent, nothing aggregated, nothing received looked at), and its energy account
pays only sleep for them. Real node processes, the hardware profile's powers (ESP32-C6)."""

from __future__ import annotations

import json
import signal

from node_helpers import make_nodes, signal_file, start_node, wait_for

from qres.node.state import State

ROUNDS = 8
#: Every schedule of the test profile: one wake every two rounds of 600 s.
EVERY_OTHER = "wake_calm_s = 1200.0\nwake_prestorm_s = 1200.0\nwake_storm_s = 1200.0\n"


def _run(nodes, data) -> list[dict]:
    procs = [
        start_node(n, "--source", str(d), "--speed", "20", "--time-scale", "1200",
                   "--rounds", str(ROUNDS))
        for n, d in zip(nodes, data, strict=True)
    ]  # fmt: skip
    try:
        wait_for(lambda: all(p.poll() is not None for p in procs), timeout=120, step=0.3)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
    out = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=30)
        assert proc.returncode == 0, stderr
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    return out


def _log(node) -> list[dict]:
    state = State(node["home"] / "data" / "state.sqlite")
    try:
        return state.rounds(100)
    finally:
        state.close()


def test_a_node_sleeps_between_wakes_and_pays_only_sleep_for_it(tmp_path):
    sleepy = make_nodes(tmp_path / "sleepy", 2, extra=EVERY_OTHER, segment_samples=4000)
    awake = make_nodes(tmp_path / "awake", 1, segment_samples=4000)
    data = [signal_file(tmp_path / f"s{i}.bin", seed=i) for i in range(3)]
    summaries = _run([*sleepy, *awake], data)
    for node, summary in zip(sleepy, summaries, strict=False):
        log = _log(node)
        assert len(log) == ROUNDS
        woke = [r["round"] for r in log if r["error"] >= 0]
        # every other round on the clock's grid: the two nodes wake in the same rounds (an
        # awake round may still lack a training window right after the start: error -1 too)
        slept = [r for r in log if r["round"] % 2 != woke[0] % 2]
        assert summary["asleep_rounds"] == len(slept) >= ROUNDS // 2 - 1
        assert all(r % 2 == woke[0] % 2 for r in woke)
        assert all(r["error"] < 0 and r["received"] == 0 and r["accepted"] == 0 for r in slept)
        assert any(r["accepted"] == 1 for r in log if r["error"] >= 0)  # the peer, when awake
        assert summary["energy"]["wakes"] == ROUNDS - len(slept)
    parities = {r["round"] % 2 for n in sleepy for r in _log(n) if r["error"] >= 0}
    assert len(parities) == 1  # both woke in the same rounds of the clock
    (always,) = [s["energy"] for s in summaries[2:]]
    assert summaries[2]["asleep_rounds"] == 0 and always["wakes"] == ROUNDS
    for summary in summaries[:2]:
        e = summary["energy"]
        # the same hardware and rounds of the same length: sleeping rounds cost less
        assert e["elapsed_s"] == always["elapsed_s"]
        assert e["spent_j"] < always["spent_j"] and e["radio_on_s"] < always["radio_on_s"]
