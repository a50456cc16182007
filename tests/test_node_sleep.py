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


def test_an_asleep_node_records_its_stream_and_stores_it_when_it_wakes(tmp_path):
    import subprocess
    import urllib.error
    import urllib.request

    import numpy as np
    from node_helpers import free_port, qres

    (node,) = make_nodes(tmp_path, 1, extra=EVERY_OTHER, segment_samples=500)
    data = signal_file(tmp_path / "s.bin")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_node(node, "--source", str(data), "--speed", "20", "--time-scale", "600",
                      "--http", f"127.0.0.1:{port}")  # fmt: skip
    seen: dict = {}

    def live():
        try:
            with urllib.request.urlopen(url + "/v1/status", timeout=2) as r:
                return json.loads(r.read())
        except OSError:
            return None

    def recorded_not_stored():
        """Two looks within one slept round: two segments' worth of samples came in, and no
        segment was written."""
        st = live()
        if st is None or not st["asleep"]:
            return False
        key = st["round"]
        before = seen.setdefault(key, st)
        more = st["samples_in"] - before["samples_in"]
        return more > 2 * 500 and st["segments"] == before["segments"]

    def compress_answers(code: int):
        st = live()
        if st is None or st["asleep"] != (code == 503):
            return None
        request = urllib.request.Request(url + "/v1/compress?dtype=int16", data=b"\x01\x00" * 64)
        try:
            with urllib.request.urlopen(request, timeout=5) as r:
                return (r.status, None) if r.status == code else None
        except urllib.error.HTTPError as exc:
            return (exc.code, exc.headers.get("Retry-After")) if exc.code == code else None

    try:
        wait_for(recorded_not_stored, timeout=60, step=0.05)
        _, retry = wait_for(lambda: compress_answers(503), timeout=60, step=0.05)
        assert int(retry) >= 1  # seconds to the next wake
        wait_for(lambda: compress_answers(200), timeout=60, step=0.05)  # awake again
        last = wait_for(live, timeout=30)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
    summary = json.loads(out.strip().splitlines()[-1])
    # every sample recorded, asleep or awake, is in a segment: nothing was lost to sleep
    restored = subprocess.run(
        qres("node", "export", "--profile", str(node["profile"]), "--from", "0",
             "--to", "99999999999"),
        capture_output=True, check=True,
    ).stdout  # fmt: skip
    got = np.frombuffer(restored, dtype="<i2")
    assert got.shape[0] == summary["samples_stored"] >= last["samples_in"] > 0
    assert np.array_equal(got, np.fromfile(data, dtype="<i2")[: got.shape[0]])
