"""Real node processes: two nodes learn together over TCP, stop gracefully on SIGTERM, keep
their state, and export what they stored."""

from __future__ import annotations

import signal
import subprocess

import numpy as np
from node_helpers import make_nodes, qres, signal_file, start_node, status


def test_two_nodes_learn_together_and_stop_on_sigterm(tmp_path):
    nodes = make_nodes(tmp_path, 2, segment_samples=4000)
    data = [signal_file(tmp_path / f"s{i}.bin", seed=i) for i in range(2)]
    procs = [
        start_node(node, "--source", str(d), "--speed", "20", "--time-scale", "1200")
        for node, d in zip(nodes, data, strict=True)
    ]
    try:
        from node_helpers import wait_for

        def learned():
            st = [status(n, check=False) for n in nodes]
            return None not in st and all(
                len([r for r in s["rounds"] if r["accepted"] >= 1]) >= 3 for s in st
            )

        wait_for(learned, timeout=60, step=0.3)
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            out, err = proc.communicate(timeout=20)
            assert proc.returncode == 0, err
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    for i, node in enumerate(nodes):
        st = status(node)
        other = nodes[1 - i]["id"].did
        assert [p["did"] for p in st["peers"]] == [other] and not st["banned"]
        assert st["peers"][0]["reputation"] >= 0.8  # an honest peer is never penalised
        errors = [r["error"] for r in st["rounds"] if r["error"] >= 0]
        # from the genesis model (all zeros) the error before each round falls as they learn
        assert len(errors) >= 3 and errors[-1] < errors[0] / 2
        # SIGTERM finished the segment being filled: nothing received was lost
        assert st["samples_stored"] > 0 and st["segments"] >= 1
        restored = subprocess.run(
            qres(
                "node",
                "export",
                "--profile",
                str(node["profile"]),
                "--from",
                "0",
                "--to",
                "99999999999",
            ),
            capture_output=True,
            check=True,
        ).stdout
        original = np.fromfile(tmp_path / f"s{i}.bin", dtype="<i2")
        got = np.frombuffer(restored, dtype="<i2")
        assert got.shape[0] == st["samples_stored"]
        assert np.array_equal(got, original[: got.shape[0]])


def test_mqtt_topic_source(tmp_path):
    import time

    import paho.mqtt.client as paho
    from mqtt_broker import Broker
    from node_helpers import wait_for

    broker = Broker(tmp_path).start()
    (node,) = make_nodes(tmp_path, 1, segment_samples=1000)
    proc = start_node(
        node, "--source", f"mqtt://127.0.0.1:{broker.port}/sensors/a", "--time-scale", "600"
    )
    client = paho.Client(callback_api_version=paho.CallbackAPIVersion.VERSION2)
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    try:
        sent = np.arange(-1500, 1500, dtype="<i2")
        wait_for(lambda: status(node, check=False) is not None, 30, 0.2)
        time.sleep(2.0)  # the node subscribes right after its state opens
        for chunk in np.split(sent, 30):
            client.publish("sensors/a", chunk.tobytes(), qos=1).wait_for_publish(5)
        client.publish("sensors/a", b"\x01", qos=1).wait_for_publish(5)  # half a sample
        wait_for(lambda: status(node)["samples_stored"] >= 2000, 30, 0.2)
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=20)
        assert proc.returncode == 0
        restored = subprocess.run(
            qres(
                "node", "export", "--profile", str(node["profile"]), "--from", "0", "--to", "1e11"
            ),
            capture_output=True,
            check=True,
        ).stdout
        assert np.array_equal(np.frombuffer(restored, dtype="<i2"), sent)
    finally:
        client.loop_stop()
        if proc.poll() is None:
            proc.kill()
        broker.stop()
