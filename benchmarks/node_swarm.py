"""Real nodes measured side by side with their anchors, in one run.

    python benchmarks/node_swarm.py [--rounds 30] [--json out.json]

* learning: 8 node processes over TCP and over MQTT (``qres swarm up``) against
  ``qres swarm simulate`` with the same profile, data, seed and rounds learned (a node's first
  round has no full window yet: the simulator runs the rounds the nodes learned in): final
  honest error and the ratio to the simulator's (target <= 1.10); then 2 of 8 running
  ``--attack``: honest error against the attack-free run (target <= 1.10) and honest nodes
  banned (target 0); each attack of ``--attack`` (default ``sign-flip,base-poison``) in turn;
  and all of it twice, side by side: nodes that check every packet before use (the ``node``
  profile, ``check_rate = 1``) and nodes that only audit (``check_rate = 0``, the anchor;
  ``--no-anchor`` skips it), with the wire bytes per node and round, the checks' counts and
  the rounds until each honest node banned each attacker;
* cost: TCP handshake time, per-update latency p50/p95 over TCP and MQTT, bytes on the wire per
  update vs the packet's bytes, CPU seconds and RSS per node process;
* HTTP: compression throughput through ``POST /v1/compress`` vs the in-process codec on the
  same bytes;
* LoRA (``--lora``, or alone with ``--lora-only``): 8 nodes of the ``node-lora`` profile (the
  adapter hierarchy) over TCP and MQTT, attack-free and with 2 of 8 running ``--attack`` on
  the shared layers: honest nodes' coded bits per sample (first round, last quarter) against
  two anchors computed in process on the very streams the nodes replayed: the same nodes in
  lockstep (each takes every change of its group each round: :mod:`qres.lora.exchange` as
  the simulator runs it) and each node alone (its hierarchy never aggregated: local-only).
  ``qres swarm up`` declares each node's domain from its data (the generated set's source).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from mqtt_broker import Broker  # noqa: E402
from node_helpers import free_port, make_nodes, signal_file, start_node, wait_for  # noqa: E402
from qres.builtin_plugins.transports.mqtt import MqttConfig, MqttTransport  # noqa: E402
from qres.builtin_plugins.transports.tcp import TcpConfig, TcpTransport  # noqa: E402

from qres.trust.identity import Identity  # noqa: E402


def _pct(values, q):
    return float(np.percentile(np.asarray(values) * 1000, q))


def _packets(n: int) -> list[bytes]:
    """``n`` distinct signed 16-weight update packets (a fresh nonce each, as nodes send)."""
    from qres.trust import commitment as cm
    from qres.trust.packet import make_packet

    me = Identity.generate()
    w = list(range(16))
    base, new = cm.commit(w, 0), cm.commit(w, 1)
    return [
        make_packet(me, 1, os.urandom(16), [1] * 16, base=base, commitment=new).encode()
        for _ in range(n)
    ]


async def _tcp_costs(n: int = 300) -> dict:
    a = TcpTransport(TcpConfig(), identity=Identity.generate())
    await a.start()
    clients = []
    for i in range(50):  # handshakes, one at a time
        b = TcpTransport(
            TcpConfig(peers=[{"address": f"127.0.0.1:{a.port}", "did": a.did}]),
            identity=Identity.generate(),
        )
        await b.start()
        clients.append(b)
        while len(a.connected()) < i + 1:
            await asyncio.sleep(0.001)
    hs = list(a.handshake_seconds)
    sender = clients[0]
    packets = _packets(n)
    payload = packets[0]
    latencies = []
    before = sender.wire_bytes_sent
    for payload in packets:
        t0 = time.perf_counter()
        await sender.asend(a.did, payload)
        await a.recv(5)
        latencies.append(time.perf_counter() - t0)
    wire = (sender.wire_bytes_sent - before) / n
    for t in (a, *clients):
        await t.aclose()
    return {
        "handshake_ms_p50": _pct(hs, 50),
        "handshake_ms_p95": _pct(hs, 95),
        "update_latency_ms_p50": _pct(latencies, 50),
        "update_latency_ms_p95": _pct(latencies, 95),
        "packet_bytes": len(payload),
        "wire_bytes_per_update": wire,
    }


async def _mqtt_costs(port: int, n: int = 300) -> dict:
    a = MqttTransport(MqttConfig(port=port, swarm="b"), identity=Identity.generate())
    b = MqttTransport(MqttConfig(port=port, swarm="b"), identity=Identity.generate())
    await a.start()
    await b.start()
    packets = _packets(n)
    latencies = []
    before = a.wire_bytes_sent
    for payload in packets:
        t0 = time.perf_counter()
        await a.asend(b.did, payload)
        await b.recv(5)
        latencies.append(time.perf_counter() - t0)
    wire = (a.wire_bytes_sent - before) / n
    await a.aclose()
    await b.aclose()
    return {
        "update_latency_ms_p50": _pct(latencies, 50),
        "update_latency_ms_p95": _pct(latencies, 95),
        "packet_bytes": len(payload),
        "envelope_bytes_per_update": wire,
    }


def _proc_usage(pid: int) -> tuple[float, float]:
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")
    rss = int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    return cpu, rss / 2**20


def _summary(log: Path) -> dict:
    """The one-line JSON status a node prints when it stops (the last in its log)."""
    lines = [x for x in log.read_text(errors="replace").splitlines() if x.startswith("{")]
    return json.loads(lines[-1]) if lines else {}


def _audits_only(folder: Path, base: str = "node") -> str:
    """A profile like ``base`` whose nodes check nothing before use (audits only: the node
    before checks), the anchor the checks are measured against."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "audits-only.toml"
    path.write_text(
        f'[profile]\nname = "audits-only"\nextends = "{base}"\n\n[node]\ncheck_rate = 0.0\n'
    )
    return str(path)


def _swarm(
    folder: Path, transport: str, rounds: int, attack: str = "", profile: str = "node"
) -> dict:
    from qres.node.launch import PIDS, down
    from qres.node.runtime import status_of
    from qres.node.state import State

    args = [sys.executable, "-I", "-m", "qres", "swarm", "up", "--dir", str(folder), "--no-watch"]
    args += ["--nodes", "8", "--transport", transport, "--rounds", str(rounds)]
    args += ["--time-scale", "600", "--profile", profile]
    if attack:
        args += ["--attack", attack, "--byzantine", "0.25"]
    subprocess.run(args, check=True, capture_output=True)
    run = json.loads((folder / PIDS).read_text())
    usage = []
    try:
        time.sleep(rounds * 0.6)
        usage = [_proc_usage(n["pid"]) for n in run["nodes"] if Path(f"/proc/{n['pid']}").exists()]
        wait_for(
            lambda: not any(Path(f"/proc/{n['pid']}/stat").exists() for n in run["nodes"]),
            rounds * 2 + 60,
            0.5,
        )
    finally:
        if (folder / PIDS).exists():
            down(str(folder))
    errors, learned, banned_honest, byz_banned, bits = {}, [], 0, [], {}
    per_round, checks, ban_after = [], {}, []
    byz = {n["did"] for n in run["nodes"] if n["byzantine"]}
    for i, node in enumerate(run["nodes"]):
        state = State(folder / f"n{i}" / "data" / "state.sqlite")
        st, log = status_of(state), state.rounds(rounds + 10)
        ban_rows = state.bans()
        state.close()
        if node["byzantine"]:
            continue
        summary = _summary(folder / f"n{i}" / "node.log")
        moved = summary.get("transport_bytes", {})
        if moved and log:
            # bytes this node's transport carried per round (sent and received, on the wire)
            per_round.append((moved["wire_sent"] + moved["wire_received"]) / len(log))
        for key, count in summary.get("checks", {}).items():
            checks[key] = checks.get(key, 0) + count
        if log:
            first = min(r["round"] for r in log)
            ban_after += [b["round"] - first for b in ban_rows if b["did"] in byz]
        if "lora" in st:
            bits[i] = _lora_bits(folder / f"n{i}" / "data" / "state.sqlite")
        errs = [r["error"] for r in log if r["error"] >= 0]
        errors[i] = errs[-1]
        learned.append(len(errs))
        banned_honest += len(set(st["banned"]) - byz)
        byz_banned.append(len(set(st["banned"]) & byz))
    return {
        "final_honest_error": float(np.mean(list(errors.values()))),
        "errors_by_node": errors,
        # rounds with a window to learn on (the first round's samples are still arriving)
        "rounds_learned": min(learned),
        "honest_banned": banned_honest,
        "byzantine_banned_per_honest_node": byz_banned,
        "wire_bytes_per_node_round": float(np.mean(per_round)) if per_round else None,
        # summed over the honest nodes
        "checks": checks,
        # rounds from an honest node's first round to its ban of each attacker
        "ban_round_max": max(ban_after) if ban_after else None,
        "ban_round_mean": float(np.mean(ban_after)) if ban_after else None,
        "cpu_s_per_node": float(np.mean([u[0] for u in usage])) if usage else None,
        "rss_mib_per_node": float(np.mean([u[1] for u in usage])) if usage else None,
        **({"lora": _bits_summary(bits)} if bits else {}),
    }


def _lora_bits(path: Path) -> list[float]:
    """Coded bits per sample of every round a LoRA node's state holds."""
    from qres.node import lora
    from qres.node.state import State

    state = State(path)
    try:
        held = lora.read(state.load_lora()[1], str(path))
    finally:
        state.close()
    return [b / 65536 for _, b in held["bits"]]


def _bits_summary(bits: dict) -> dict:
    """Mean over nodes of the first round's bits and of the last quarter's."""
    n = min(len(b) for b in bits.values())
    tail = max(1, n // 4)
    return {
        "rounds": n,
        "first_bits": float(np.mean([b[0] for b in bits.values()])),
        "final_bits": float(np.mean([np.mean(b[n - tail : n]) for b in bits.values()])),
        "final_bits_by_node": {i: float(np.mean(b[n - tail : n])) for i, b in bits.items()},
    }


def _lora_anchors(folder: Path, rounds: int, honest: list[int]) -> dict:
    """The in-process anchors on the streams a LoRA run's nodes replayed (see the module
    docstring): lockstep (every change taken every round) and local-only."""
    from qres.kernel import profiles
    from qres.learning.task import TASK_UNITS, Scale
    from qres.lora import exchange
    from qres.node.lora import LoraNode
    from qres.node.lora_wire import LoraPacket
    from qres.swarm.engine import settings_from_profile

    loaded = profiles.load("node-lora")
    swarm = settings_from_profile(loaded)
    scale = Scale(TASK_UNITS.lo, TASK_UNITS.hi)
    paths = sorted(folder.glob("n*/stream.i16"), key=lambda p: int(p.parent.name[1:]))
    streams = [scale.apply(np.fromfile(p, dtype="<i2").astype(np.int64)) for p in paths]
    span, w = swarm.order + swarm.window, swarm.window
    from qres.node.launch import UpOptions, declared_domains

    domains = declared_domains(UpOptions(nodes=len(streams), profile="node-lora"), swarm)
    out = {}
    for name, together in (("lockstep", True), ("local_only", False)):
        nodes = [LoraNode(loaded, swarm, domain) for domain in domains]
        bits: dict[int, list[float]] = {i: [] for i in range(len(nodes))}
        for r in range(rounds):
            rows = []
            for i, node in enumerate(nodes):
                window = streams[i][None, r * w : r * w + span]
                role, change, b, _ = node.learn(r, window)
                bits[i].append(b / 65536)
                rows.append(change)
            if not together:
                continue
            keys = [bytes([i]) * 32 for i in range(len(nodes))]
            for i, node in enumerate(nodes):
                others = [
                    LoraPacket(keys[j], r, bytes(16), role, nodes[j].tag, bytes(32), 0, rows[j])
                    for j in range(len(nodes))
                    if j != i
                ]
                node.close(r, role, rows[i], keys[i], node.group(role, others))
            assert exchange.role_of_round(r) == role
        out[name] = _bits_summary({i: bits[i] for i in honest})
    return out


def _lora(tmp: Path, transports, rounds: int, attack: str) -> dict:
    """The LoRA section (see the module docstring)."""
    out: dict = {}
    for transport in transports:
        free = _swarm(tmp / f"lora-{transport}-free", transport, rounds, profile="node-lora")
        hit = _swarm(tmp / f"lora-{transport}-attack", transport, rounds, attack, "node-lora")
        honest = sorted(hit["lora"]["final_bits_by_node"])
        anchors = _lora_anchors(tmp / f"lora-{transport}-free", free["lora"]["rounds"], honest)
        same = np.mean([free["lora"]["final_bits_by_node"][i] for i in honest])
        out[transport] = {
            "attack_free": free["lora"],
            "attacked": hit["lora"],
            "honest_banned": hit["honest_banned"],
            "anchors": anchors,
            "final_over_first": free["lora"]["final_bits"] / free["lora"]["first_bits"],
            "final_over_lockstep": same / anchors["lockstep"]["final_bits"],
            "final_over_local_only": same / anchors["local_only"]["final_bits"],
            "attacked_over_attack_free": hit["lora"]["final_bits"] / same,
            "cpu_s_per_node": free["cpu_s_per_node"],
            "rss_mib_per_node": free["rss_mib_per_node"],
        }
    return out


def _learning(folder: Path, transport: str, rounds: int, attacks, profile: str) -> dict:
    """One transport and one profile: attack-free against the simulator, then each attack
    against the attack-free run."""
    free = _swarm(folder / "free", transport, rounds, profile=profile)
    # the simulator learns as many rounds as the nodes did, on the same data and seed
    sim = _simulated(free["rounds_learned"])
    out = {"attack_free": free, "simulator": sim}
    out["error_over_simulator"] = free["final_honest_error"] / sim
    for attack in attacks:
        hit = _swarm(folder / attack, transport, rounds, attack, profile=profile)
        out[attack] = {
            "attacked": hit,
            "simulator_attacked": _simulated(hit["rounds_learned"], attack),
            # the same nodes in both runs: those honest under attack (the attackers' data
            # differs from theirs, so the swarm-wide mean would compare different streams)
            "attacked_over_attack_free": hit["final_honest_error"]
            / _mean_over(free, hit["errors_by_node"]),
        }
    return out


def _mean_over(run: dict, nodes) -> float:
    """``run``'s mean final error over ``nodes`` only."""
    return float(np.mean([run["errors_by_node"][i] for i in nodes]))


def _simulated(rounds: int, attack: str = "") -> float:
    import attrs

    from qres.kernel import profiles
    from qres.swarm.engine import Simulation, settings_from_profile

    loaded = profiles.load("node")
    settings = settings_from_profile(loaded, nodes=8, rounds=rounds, seed=0)
    if attack:
        settings = attrs.evolve(settings, byzantine=0.25)
    sim = Simulation(loaded, settings, attack=attack or None)
    return float(sim.run()["final_honest_error"])


def _http(folder: Path) -> dict:
    from qres.codec.files import compress_bytes
    from qres.codec.samples import StreamSpec

    (spec,) = make_nodes(folder / "http", 1)
    data = signal_file(folder / "big.bin", n=4_000_000)
    raw = data.read_bytes()
    port = free_port()
    proc = start_node(spec, "--http", f"127.0.0.1:{port}")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _ok(url + "/v1/status"), 30)
        t0 = time.perf_counter()
        for _ in range(3):
            req = urllib.request.Request(url + "/v1/compress?dtype=int16", data=raw)
            with urllib.request.urlopen(req, timeout=120) as response:
                over_http = response.read()
        http_s = (time.perf_counter() - t0) / 3
    finally:
        proc.terminate()
        proc.wait(20)
    t0 = time.perf_counter()
    for _ in range(3):
        local = compress_bytes(raw, StreamSpec("int16"), profile=str(spec["profile"]))
    local_s = (time.perf_counter() - t0) / 3
    assert local == over_http
    mb = len(raw) / 1e6
    return {
        "mb": mb,
        "http_mb_s": mb / http_s,
        "in_process_mb_s": mb / local_s,
        "http_over_in_process": local_s / http_s,
    }


def _ok(url):
    try:
        return urllib.request.urlopen(url, timeout=2).status == 200
    except OSError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument(
        "--attack", default="sign-flip,base-poison", help="Attacks, comma-separated."
    )
    parser.add_argument(
        "--no-anchor",
        dest="anchor",
        action="store_false",
        help="Skip the audits-only runs (nodes with check_rate = 0).",
    )
    parser.add_argument("--json", default="")
    parser.add_argument("--costs-only", action="store_true", help="Skip the learning runs.")
    parser.add_argument("--lora", action="store_true", help="Also run the LoRA section.")
    parser.add_argument("--lora-only", action="store_true", help="Run the LoRA section only.")
    args = parser.parse_args()
    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        transports = ("tcp", "mqtt") if shutil.which("mosquitto") else ("tcp",)
        if args.lora_only:
            out["lora"] = _lora(tmp, transports, args.rounds, args.attack.split(",")[0])
            print(json.dumps(out, indent=1))
            if args.json:
                Path(args.json).write_text(json.dumps(out, indent=1))
            return
        out["tcp"] = asyncio.run(_tcp_costs())
        broker = Broker(tmp).start() if shutil.which("mosquitto") else None
        if broker:
            out["mqtt"] = asyncio.run(_mqtt_costs(broker.port))
            broker.stop()
        out["http"] = _http(tmp)
        if args.costs_only:
            print(json.dumps(out, indent=1))
            return
        learning: dict = {}
        attacks = [a for a in args.attack.split(",") if a]
        for transport in ("tcp", "mqtt") if broker else ("tcp",):
            for policy in ("checks", "audits-only") if args.anchor else ("checks",):
                profile = "node" if policy == "checks" else _audits_only(tmp / "profiles")
                learning[f"{transport}/{policy}"] = _learning(
                    tmp / f"{transport}-{policy}", transport, args.rounds, attacks, profile
                )
        out["learning"] = learning
        if args.lora:
            out["lora"] = _lora(
                tmp, ("tcp", "mqtt") if broker else ("tcp",), args.rounds, attacks[0]
            )
    text = json.dumps(out, indent=1)
    print(text)
    if args.json:
        Path(args.json).write_text(text)


if __name__ == "__main__":
    main()
