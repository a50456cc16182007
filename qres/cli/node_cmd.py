"""``qres node run|status|export``: one real node (its stream, its state, its peers)."""

from __future__ import annotations

import typer

app = typer.Typer(help="Run a real swarm node and inspect its state.", no_args_is_help=True)

PROFILE = typer.Option("node", "--profile", "-p", help="Profile name or .toml path.")
DATA_DIR = typer.Option(None, "--data-dir", help="The node's folder (default: [node] data_dir).")


def _folder(profile: str, data_dir: str | None):
    from pathlib import Path

    from qres.kernel import profiles
    from qres.kernel.config import build_config
    from qres.node.settings import NodeSettings

    loaded = profiles.load(profile)
    if data_dir:
        return loaded, Path(data_dir)
    table = {k: v for k, v in loaded.data.get("node", {}).items() if k != "transport"}
    return loaded, Path(build_config(NodeSettings, table, loaded.where("node")).data_dir)


@app.command()
def run(
    profile: str = PROFILE,
    source: str = typer.Option(
        "-", "--source", help="Raw sample file to replay, - (stdin) or mqtt://host:port/topic."
    ),
    speed: float = typer.Option(
        1.0, "--speed", help="Replay a file at N times its sample rate (0: as fast as possible)."
    ),
    time_scale: float = typer.Option(
        1.0, "--time-scale", help="Simulated seconds per second: rounds and wakes run faster."
    ),
    rounds: int = typer.Option(0, "--rounds", help="Stop after N learning rounds (0: never)."),
    exit_on_eof: bool = typer.Option(False, "--exit-on-eof", help="Stop when the source ends."),
    data_dir: str = DATA_DIR,
    listen: str = typer.Option(None, "--listen", help="TCP transport: host:port to listen on."),
    http: str = typer.Option(None, "--http", help="Serve the HTTP API on host:port."),
    key: str = typer.Option(None, "--key", help="The node's key file (default: qres keys')."),
    attack: str = typer.Option(
        None, "--attack", help="Forge this node's updates with an attack plugin (testing)."
    ),
) -> None:
    """Run the node until SIGTERM/SIGINT: compress the stream into segments, learn, gossip."""
    import asyncio
    import json
    import signal

    from qres.kernel import profiles
    from qres.kernel.errors import QresError
    from qres.node.runtime import Node, RunOptions
    from qres.trust.identity import default_key_path, load_identity

    if speed < 0 or not time_scale > 0 or rounds < 0:
        raise QresError("--speed must be >= 0, --time-scale > 0 and --rounds >= 0")
    loaded = profiles.load(profile)
    identity = load_identity(key) if key else None
    if identity is None:
        node_key = loaded.data.get("node", {}).get("key", "")
        identity = load_identity(node_key or default_key_path())
    options = RunOptions(
        source=source,
        speed=speed,
        time_scale=time_scale,
        rounds=rounds,
        exit_on_eof=exit_on_eof,
        data_dir=data_dir or "",
        listen=listen or "",
        http=http or "",
        attack=attack or "",
    )

    async def main():
        node = Node(loaded, options, identity=identity)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, node.stop)
        return await node.run()

    status = asyncio.run(main())
    keys = ("did", "round", "segments", "samples_stored", "asleep_rounds", "energy")
    keys += ("checks", "transport_bytes")
    summary = {k: status[k] for k in keys if k in status}
    print(json.dumps(summary))


@app.command()
def status(
    profile: str = PROFILE,
    data_dir: str = DATA_DIR,
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """The node's state: round, segments, peers and their reputation, bans, recent rounds."""
    from qres.cli.output import console, print_json, table
    from qres.kernel.errors import QresError
    from qres.node.runtime import status_of
    from qres.node.state import State

    _, folder = _folder(profile, data_dir)
    path = folder / "state.sqlite"
    if not path.exists():
        raise QresError(f"{path}: no node state; start the node with `qres node run` first")
    state = State(path)
    try:
        result = status_of(state)
    finally:
        state.close()
    if as_json:
        print_json(result)
        return
    rows = [[k, result[k]] for k in ("did", "round", "segments", "samples_stored", "bytes_stored")]
    rows.append(["peers", len(result["peers"])])
    rows.append(["banned", len(result["banned"])])
    lora = result.get("lora")
    if lora is not None:  # the adapter hierarchy's health
        reasons = f" ({'; '.join(lora['reasons'])})" if lora["reasons"] else ""
        rows.append(["adapters", f"{lora['health']}{reasons}, predicting with {lora['depth']}"])
        if lora["rounds"]:
            first, last = lora["first_bits_per_sample"], lora["bits_per_sample"]
            rows.append(["coded bits / sample", f"{first:.3f} (first round) -> {last:.3f}"])
        rows.append(["aggregates refused", lora["rejected_aggregates"]])
    console().print(table(f"qres node status: {folder}", ["", ""], rows))


def _when(text: str, flag: str) -> float:
    """Seconds since the epoch from a number or an ISO 8601 time."""
    import datetime

    from qres.kernel.errors import QresError

    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError as exc:
        raise QresError(
            f"{flag} {text!r}: not a time; give seconds since the epoch or ISO 8601 "
            "(2026-01-31T12:00:00+00:00)"
        ) from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return moment.timestamp()


@app.command()
def export(
    start: str = typer.Option(..., "--from", help="Start time (epoch seconds or ISO 8601)."),
    end: str = typer.Option(..., "--to", help="End time (epoch seconds or ISO 8601)."),
    output: str = typer.Option("-", "--output", "-o", help="Raw samples out (- for stdout)."),
    profile: str = PROFILE,
    data_dir: str = DATA_DIR,
    force: bool = typer.Option(False, "--force", help="Overwrite an existing output."),
) -> None:
    """Restore the samples taken between --from and --to from the node's segments."""
    from qres.codec.files import atomic_output
    from qres.kernel.errors import QresError
    from qres.node.export import export_range

    loaded, folder = _folder(profile, data_dir)
    t0, t1 = _when(start, "--from"), _when(end, "--to")
    if t1 < t0:
        raise QresError(f"--to {end!r} is before --from {start!r}; swap them")
    chunks = export_range(loaded, folder, t0, t1)
    with atomic_output(output, force) as out:
        for chunk in chunks:
            out.write(chunk.tobytes())


def swarm_up(
    nodes: int = typer.Option(8, "--nodes", help="Node processes to start."),
    transport: str = typer.Option("tcp", "--transport", help="tcp or mqtt (starts a broker)."),
    data: str = typer.Option(None, "--data", help="A MANIFEST folder (default: generated)."),
    attack: str = typer.Option(None, "--attack", help="Attack plugin of the Byzantine nodes."),
    byzantine: float = typer.Option(0.0, "--byzantine", help="Fraction of Byzantine nodes."),
    rounds: int = typer.Option(40, "--rounds", help="Rounds each node runs, then stops."),
    time_scale: float = typer.Option(600.0, "--time-scale", help="Simulated s per second."),
    seed: int = typer.Option(0, "--seed", help="Seed of the data and the keys."),
    profile: str = typer.Option("node", "--profile", "-p", help="Base profile of the nodes."),
    folder: str = typer.Option("qres-swarm", "--dir", help="Run folder (keys, data, logs)."),
    watch: bool = typer.Option(True, "--watch/--no-watch", help="Show a live table."),
) -> None:
    """Start N real node processes on loopback; `qres swarm down` stops them."""
    from qres.node.launch import UpOptions, up

    opts = UpOptions(
        nodes, transport, data or "", attack or "", byzantine, rounds, time_scale, seed,
        profile, folder,
    )  # fmt: skip
    run = up(opts)
    if watch:
        _watch(folder, len(run["nodes"]))
    else:
        print(f"{len(run['nodes'])} nodes up in {folder}; stop them with `qres swarm down`")


def _watch(folder: str, n: int) -> None:
    """A live table of the run's nodes until they all stop or Ctrl-C (they keep running)."""
    import time

    from rich.live import Live

    from qres.cli.output import console, table
    from qres.node.launch import node_rows

    columns = ["node", "DID", "round", "error", "segments", "peers", "banned", "running"]
    with Live(console=console(), refresh_per_second=2) as live:
        try:
            while True:
                rows = node_rows(folder)
                live.update(table(f"qres swarm: {n} nodes in {folder}", columns, rows))
                if not any(r[-1] for r in rows):
                    return
                time.sleep(1.0)
        except KeyboardInterrupt:
            return


def swarm_down(
    folder: str = typer.Option("qres-swarm", "--dir", help="Run folder given to `swarm up`."),
) -> None:
    """Stop the nodes (SIGTERM: each finishes its segment and saves its state) and the broker."""
    from qres.node.launch import down

    result = down(folder)
    print(f"{result['stopped']} nodes stopped, {result['killed']} killed after the timeout")


def register(app_: typer.Typer) -> None:
    """Add ``qres node`` and ``qres swarm up|down`` to the CLI."""
    from qres.cli import swarm_cmd

    app_.add_typer(app, name="node")
    swarm_cmd.app.command("up")(swarm_up)
    swarm_cmd.app.command("down")(swarm_down)
