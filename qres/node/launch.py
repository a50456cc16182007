"""``qres swarm up`` / ``down``: N real node processes on loopback, their keys, profiles, data
and (for MQTT) a broker, all in one run folder that ``down`` reads to stop them.

Each node replays its share of the data the simulator would give it (``qres.swarm.data``:
generated or a MANIFEST folder), one ``window`` of new samples per round, so that a run is
comparable with ``qres swarm simulate`` on the same data, seed and rounds.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import attrs

from qres.kernel.errors import QresError

PIDS = "pids.json"

#: How a node process is started: this interpreter in isolated mode (-I), so that a checkout's
#: source folder in the working directory never shadows the installed qres (which holds the
#: compiled core, the built-in plugins and the profiles); -u keeps the logs unbuffered.
QRES_COMMAND = (sys.executable, "-I", "-u", "-m", "qres")


@attrs.frozen
class UpOptions:
    """What ``qres swarm up`` was asked for."""

    nodes: int = 8
    transport: str = "tcp"
    data: str = ""
    attack: str = ""
    byzantine: float = 0.0
    rounds: int = 40
    time_scale: float = 600.0
    seed: int = 0
    profile: str = "node"
    folder: str = "qres-swarm"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_streams(folder: Path, opts: UpOptions, swarm) -> list[Path]:
    """Each node's recording as int16 little-endian: the simulator's windows, end to end."""
    import numpy as np

    from qres.swarm.data import open_data

    settings = attrs.evolve(swarm, nodes=opts.nodes, data=opts.data or "generated")
    data = open_data(settings, opts.seed)
    rounds = opts.rounds + 2  # a little more than the run needs
    nodes = np.arange(opts.nodes)
    parts = [data.windows(r, nodes)[:, : swarm.window] for r in range(rounds)]
    streams = np.concatenate(parts, axis=1).astype("<i2")
    paths = []
    for i in range(opts.nodes):
        path = folder / f"n{i}" / "stream.i16"
        streams[i].tofile(path)
        paths.append(path)
    return paths


def declared_domains(opts: UpOptions, swarm) -> list[str]:
    """Each node's domain, as the simulator's data declares it: the generated set's source
    (``source-k``) or the recording its shard comes from."""
    from qres.swarm.data import open_data

    settings = attrs.evolve(swarm, nodes=opts.nodes, data=opts.data or "generated")
    data = open_data(settings, opts.seed)
    names = getattr(data, "names", None)
    return [
        names[int(k)] if names is not None else f"source-{int(k)}"
        for k in data.source[: opts.nodes]
    ]


def _profile_text(
    i: int, opts: UpOptions, base: str, key: Path, transport: str, rate: float, domain: str = ""
):
    import json

    from qres.learning.task import TASK_UNITS

    return (
        f'[profile]\nname = "swarm-node-{i}"\nextends = "{base}"\n\n'
        f'[node]\ndata_dir = "{key.parent / "data"}"\nkey = "{key}"\ndtype = "int16"\n'
        f"sample_rate = {rate!r}\nsegment_samples = 4096\ndomain = {json.dumps(domain)}\n"
        "# the recording is the simulator's windows: already the learning task's integers\n"
        f"sample_range = [{TASK_UNITS.lo!r}, {TASK_UNITS.hi!r}]\n\n[node.transport]\n{transport}"
    )


def up(opts: UpOptions) -> dict:
    """Create the run folder and start the nodes (and a broker); returns the run description."""
    from qres.kernel import profiles
    from qres.swarm.engine import settings_from_profile
    from qres.trust.identity import Identity, save_identity

    if not 2 <= opts.nodes <= 256:
        raise QresError(f"--nodes {opts.nodes}: give 2 to 256 nodes on one machine")
    if opts.transport not in ("tcp", "mqtt"):
        raise QresError(f"--transport {opts.transport!r}: use tcp or mqtt")
    folder = Path(opts.folder).resolve()
    if (folder / PIDS).exists():
        raise QresError(f"{folder}: a swarm is already up here; run `qres swarm down` first")
    loaded = profiles.load(opts.profile)
    swarm = settings_from_profile(loaded)
    ids = [Identity.from_seed(bytes([opts.seed % 256, i % 256]) * 16) for i in range(opts.nodes)]
    ports = [_free_port() for _ in ids]
    byzantine = set(range(opts.nodes - round(opts.byzantine * opts.nodes), opts.nodes))
    if opts.byzantine and not opts.attack:
        raise QresError("--byzantine needs --attack NAME (see `qres plugins list`)")
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(opts.nodes):
        (folder / f"n{i}").mkdir(exist_ok=True)
    streams = write_streams(folder, opts, swarm)
    # a node with the adapter hierarchy learns the domain layer with the nodes of its source
    domains = declared_domains(opts, swarm) if "lora" in loaded.data else [""] * opts.nodes
    broker = None
    if opts.transport == "mqtt":
        broker = _start_broker(folder)
    rate = swarm.window / swarm.round_seconds  # one window of new samples per round
    procs = []
    for i, ident in enumerate(ids):
        key = folder / f"n{i}" / "node.key"
        if not key.exists():
            save_identity(ident, key)
        if opts.transport == "tcp":
            peers = ", ".join(
                f'{{ address = "127.0.0.1:{ports[j]}", did = "{ids[j].did}" }}'
                for j in range(opts.nodes)
                if j != i
            )
            table = (
                f'use = "tcp"\nlisten = "127.0.0.1:{ports[i]}"\nswarm = "local"\n'
                f"peers = [{peers}]\nbackoff_max = 1.0\n"
            )
        else:
            table = f'use = "mqtt"\nport = {broker["port"]}\nswarm = "local"\n'
        base = str(loaded.path)
        profile = folder / f"n{i}" / "profile.toml"
        profile.write_text(_profile_text(i, opts, base, key, table, rate, domains[i]))
        args = [
            *QRES_COMMAND, "node", "run", "--profile", str(profile),
            "--source", str(streams[i]), "--speed", repr(opts.time_scale),
            "--time-scale", repr(opts.time_scale), "--rounds", str(opts.rounds),
        ]  # fmt: skip
        if i in byzantine:
            args += ["--attack", opts.attack]
        log = (folder / f"n{i}" / "node.log").open("ab")
        proc = subprocess.Popen(
            args, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True
        )
        procs.append({"pid": proc.pid, "did": ident.did, "byzantine": i in byzantine})
    run = {"nodes": procs, "broker": broker, "transport": opts.transport, "rounds": opts.rounds}
    (folder / PIDS).write_text(json.dumps(run, indent=1))
    return run


def _start_broker(folder: Path) -> dict:
    mosquitto = shutil.which("mosquitto")
    if mosquitto is None:
        raise QresError("--transport mqtt needs an MQTT broker: install mosquitto")
    port = _free_port()
    config = folder / "mosquitto.conf"
    lines = [f"listener {port} 127.0.0.1", "allow_anonymous true", "persistence false"]
    if os.geteuid() == 0:
        lines.append("user root")  # keep reading this folder's files after starting as root
    config.write_text("\n".join(lines) + "\n")
    log = (folder / "broker.log").open("ab")
    proc = subprocess.Popen(
        [mosquitto, "-c", str(config)], stdout=log, stderr=log, start_new_session=True
    )
    return {"pid": proc.pid, "port": port}


def _is_ours(pid: int, word: str) -> bool:
    """True if ``pid`` still runs a process whose command line mentions ``word`` (a reused
    pid belongs to someone else and is left alone)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return word.encode() in cmdline


def down(folder: str, timeout: float = 30.0) -> dict:
    """SIGTERM every node of the run (then the broker); returns how each ended."""
    path = Path(folder) / PIDS
    if not path.exists():
        raise QresError(f"{path}: no swarm is up in {folder}; start one with `qres swarm up`")
    run = json.loads(path.read_text())
    pids = [n["pid"] for n in run["nodes"] if _is_ours(n["pid"], "node")]
    for pid in pids:
        os.kill(pid, signal.SIGTERM)
    end = time.monotonic() + timeout
    while time.monotonic() < end and any(_alive(p) for p in pids):
        time.sleep(0.05)
    killed = [p for p in pids if _alive(p)]
    for pid in killed:
        os.kill(pid, signal.SIGKILL)
    broker = run.get("broker")
    if broker and _is_ours(broker["pid"], "mosquitto"):
        os.kill(broker["pid"], signal.SIGTERM)
    path.unlink()
    return {"stopped": len(pids) - len(killed), "killed": len(killed)}


def _alive(pid: int) -> bool:
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done:
            return False
    except ChildProcessError:
        pass
    return Path(f"/proc/{pid}").exists() and "zombie" not in _state(pid)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split("\n")[0].lower()
    except (OSError, IndexError):
        return "zombie"


def node_rows(folder: str) -> list[list]:
    """One row per node of a run: index, DID, round, error, segments, peers, banned, alive."""
    from qres.node.runtime import status_of
    from qres.node.state import State

    run = json.loads((Path(folder) / PIDS).read_text())
    rows = []
    for i, node in enumerate(run["nodes"]):
        db = Path(folder) / f"n{i}" / "data" / "state.sqlite"
        if not db.exists():
            rows.append([i, node["did"][9:21], "-", "-", 0, 0, 0, _alive(node["pid"])])
            continue
        state = State(db)
        try:
            st = status_of(state)
        finally:
            state.close()
        errors = [r["error"] for r in st["rounds"] if r["error"] >= 0]
        rows.append(
            [
                i,
                node["did"][9:21] + (" (byz)" if node["byzantine"] else ""),
                st["round"] if st["round"] is not None else "-",
                f"{errors[-1]:.4f}" if errors else "-",
                st["segments"],
                len(st["peers"]),
                len(st["banned"]),
                _alive(node["pid"]),
            ]
        )
    return rows
