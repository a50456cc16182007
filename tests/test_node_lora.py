"""Real nodes with a ``[lora]`` profile run the adapter hierarchy: over TCP they learn (their
coded bits fall below their first round's), an attacker on the shared layers is outvoted and
one that signs a packet of the wrong layer is banned by everyone, and a restarted node keeps
its hierarchy."""

from __future__ import annotations

import signal
import subprocess
import urllib.request

import pytest
from node_helpers import (
    free_port,
    live_status,
    make_nodes,
    qres,
    signal_file,
    start_node,
    status,
    stop_nodes,
)
from node_helpers import wait_for as wait

from qres.trust.identity import Identity

LORA = (
    'aggregator = { use = "trimmed-mean" }\nassumed_byzantine = 0.34\n\n'
    "[lora]\nranks = [64, 32, 16, 8, 4]\ninertia = [0.99, 0.9, 0.7, 0.5, 0.1]\n"
)
ARGS = ("--speed", "20", "--time-scale", "1200")


def _start(nodes, tmp_path, attack=None, attackers=0):
    procs, ports = [], []
    for i, node in enumerate(nodes):
        data = signal_file(tmp_path / f"s{i}.bin", seed=i % 2)
        port = free_port()
        extra = ["--attack", attack] if attack and i >= len(nodes) - attackers else []
        procs.append(
            start_node(node, "--source", str(data), *ARGS, "--http", f"127.0.0.1:{port}", *extra)
        )
        ports.append(port)
    return procs, ports


def _learned(ports, peers: int):
    """The nodes' statuses once each has learned 8 rounds, taken ``peers`` of its peers'
    changes and codes its newest windows (the last three) in fewer bits than its first."""

    def check():
        st = [_lora(p) for p in ports]
        if None in st:
            return None
        for s in st:
            lora = s["lora"]
            newest = [b for _, b in lora["bits"][-3:]]
            if lora["rounds"] < 8 or lora["aggregated"] < peers:
                return None
            if sum(newest) / len(newest) >= lora["first_bits_per_sample"]:
                return None
        return st

    return wait(check, timeout=240, step=0.5)


def _lora(port):
    st = live_status(port)
    return None if st is None or "lora" not in st else st


def test_lora_nodes_learn_over_tcp_and_a_restart_keeps_the_hierarchy(tmp_path):
    nodes = make_nodes(tmp_path, 3, extra=LORA, segment_samples=4000, domain="sine")
    procs, ports = _start(nodes, tmp_path)
    try:
        statuses = _learned(ports, peers=2)  # learned, with its peers' changes
        for st in statuses:
            lora = st["lora"]
            assert set(lora["layers"]) == {"foundation", "domain", "swarm", "agent", "context"}
            assert lora["health"] in ("HEALTHY", "DEGRADED")
            assert not st["banned"] and not st["rejected"].get("NOT_LORA")
        with urllib.request.urlopen(f"http://127.0.0.1:{ports[1]}/metrics", timeout=10) as r:
            metrics = r.read().decode()
        assert (
            "qres_lora_bits_per_sample " in metrics and 'qres_lora_drift{layer="agent"}' in metrics
        )
        procs[0].send_signal(signal.SIGTERM)
        procs[0].communicate(timeout=60)
        assert procs[0].returncode == 0
        before = status(nodes[0])["lora"]  # read from the stopped node's state
        table = subprocess.run(
            qres("node", "status", "--profile", str(nodes[0]["profile"])),
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert "adapters" in table and "(first round) ->" in table
        assert before["rounds"] >= statuses[0]["lora"]["rounds"]
        port = free_port()
        data = tmp_path / "s0.bin"
        procs[0] = start_node(nodes[0], "--source", str(data), *ARGS, "--http", f"127.0.0.1:{port}")
        again = wait(lambda: _lora(port), timeout=60, step=0.3)["lora"]
        # the hierarchy, its figures and its layers came back from the state
        assert again["rounds"] >= before["rounds"] and before["bits"][-1] in again["bits"]
        assert again["first_bits_per_sample"] == before["first_bits_per_sample"]
        assert again["layers"]["agent"]["drift"] > 0
    finally:
        stop_nodes(procs)


@pytest.mark.parametrize("attack", ["sign-flip"])
def test_an_attacker_on_the_shared_layers_is_outvoted(tmp_path, attack):
    nodes = make_nodes(tmp_path, 4, extra=LORA, segment_samples=4000)
    procs, ports = _start(nodes, tmp_path, attack=attack, attackers=1)
    try:
        for st in _learned(ports[:3], peers=3):  # the attacker's changes are outvoted
            assert not st["banned"]  # statistics never ban
    finally:
        stop_nodes(procs)


def test_mqtt_lora_nodes_learn_with_an_attacker(tmp_path):
    from mqtt_broker import Broker

    broker = Broker(tmp_path).start()
    table = f'use = "mqtt"\nport = {broker.port}\nswarm = "test"\n'
    nodes = make_nodes(tmp_path, 4, transport=table, extra=LORA, segment_samples=4000)
    procs, ports = _start(nodes, tmp_path, attack="extreme", attackers=1)
    try:
        for st in _learned(ports[:3], peers=3):  # the attacker's changes are outvoted
            assert not st["banned"]  # statistics never ban
    finally:
        stop_nodes(procs)
        broker.stop()


def test_a_packet_of_the_wrong_layer_is_a_fault_that_bans(tmp_path):
    """In process: the receiver's checks on a LoRA packet, as the running node makes them."""
    import asyncio

    from qres.kernel import profiles
    from qres.lora import exchange
    from qres.node import lora_wire
    from qres.node.runtime import Node, RunOptions

    (node,) = make_nodes(tmp_path, 1, extra=LORA)
    mallory = Identity.generate()

    def message(packet):
        return type("M", (), {"payload": packet.encode(), "src": mallory.did})()

    async def main():
        live = Node(profiles.load(str(node["profile"])), RunOptions(), identity=node["id"])
        try:
            live.round = 6
            size = exchange.size(live.lora.personal, "foundation")
            tag, base = live.lora.tag, bytes(32)

            def packet(r, role, n, nonce=b"a" * 16):
                p = lora_wire.LoraPacket(mallory.public_key, r, nonce, role, tag, base, 0, [1] * n)
                return p.signed(mallory)

            live._take_lora(message(packet(6, "foundation", size)))  # round 6: foundation
            assert 6 in live._inbox and not live.stats["rejected"]
            live._take_lora(message(packet(6, "foundation", size)))  # the same bytes again
            assert live.stats["duplicates"] == 1
            live._take_lora(message(packet(7, "swarm", size)))  # round 7 is the domain's
            assert live.stats["rejected"] == {"WRONG_LAYER": 1}
            live._take_lora(message(packet(6, "foundation", size, b"b" * 16)))
            assert live.stats["rejected"]["EQUIVOCATION"] == 1 and not live._inbox[6]
            live._apply_bans(6)
            assert live.state.bans()[0]["did"] == mallory.did
            assert live.state.bans()[0]["kind"] in (4, 5)
            await asyncio.sleep(0)
        finally:
            live.state.close()

    asyncio.run(main())


def test_a_state_holds_one_kind_of_model(tmp_path):
    from qres.kernel import profiles
    from qres.kernel.errors import QresError
    from qres.node.runtime import Node, RunOptions

    (node,) = make_nodes(tmp_path, 1)
    lora = tmp_path / "lora.toml"
    lora.write_text(node["profile"].read_text() + "\n" + "[lora]\nranks = [64, 32, 16, 8, 4]\n")
    lora.write_text(lora.read_text().replace('name = "n0"', 'name = "n0-lora"'))
    Node(profiles.load(str(node["profile"])), RunOptions(), identity=node["id"]).state.close()
    with pytest.raises(QresError, match=r"holds the swarm's shared model.*\[lora\]"):
        Node(profiles.load(str(lora)), RunOptions(), identity=node["id"])


def test_the_documented_lora_commands_and_profile_work():
    import re
    from pathlib import Path

    from qres.kernel import profiles

    doc = (Path(__file__).parent.parent / "docs" / "node.md").read_text()
    section = doc[doc.index("## LoRA nodes") :]
    assert "qres node run --profile node-lora" in section
    loaded = profiles.load("node-lora")
    profiles.validate(loaded)
    assert "lora" in loaded.data and loaded.build("swarm", "aggregator").name == "trimmed-mean"
    assert re.search(r"\| 140 \+ 4n \| 64 \|", section)
