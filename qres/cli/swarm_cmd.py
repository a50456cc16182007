"""``qres swarm simulate``: a deterministic simulation of a swarm learning under attack."""

from __future__ import annotations

import attrs
import typer

app = typer.Typer(
    help="Simulate swarms of nodes that learn predictors together.", no_args_is_help=True
)


@app.command()
def simulate(
    profile: str = typer.Option("swarm-100", "--profile", "-p", help="Profile name or .toml path."),
    attack: str = typer.Option(
        None, "--attack", help="Attack plugin the Byzantine nodes run (see `qres plugins list`)."
    ),
    byzantine: float = typer.Option(
        None, "--byzantine", help="Fraction of Byzantine nodes, in [0, 0.49]."
    ),
    rounds: int = typer.Option(None, "--rounds", help="Rounds to simulate."),
    seed: int = typer.Option(None, "--seed", help="Seed of every random choice of the run."),
    nodes: int = typer.Option(None, "--nodes", help="Override the profile's node count."),
    data: str = typer.Option(
        None, "--data", help="A MANIFEST folder of recordings (default: the generated set)."
    ),
    partition: str = typer.Option(None, "--partition", help="iid or non-iid."),
    report: str = typer.Option(None, "--report", help="Write the JSON report here."),
    plot: str = typer.Option(None, "--plot", help="Write the PNG plots here."),
    baseline: bool = typer.Option(
        None,
        "--baseline/--no-baseline",
        help="Also run the attack-free swarm to compare (default: on when there is an attack).",
    ),
    record: str = typer.Option(
        None,
        "--record",
        help="Record every packet, really signed with proofs, as a QRPS stream (small swarms; "
        "check it with `qres audit`).",
    ),
    force: bool = typer.Option(False, "--force", help="Overwrite existing outputs."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON on stdout."),
    engine: str = typer.Option(
        "local",
        "--engine",
        help="local (one process) or ray (nodes sharded across Ray actors; same report bytes).",
    ),
    address: str = typer.Option(
        None, "--address", help="Ray cluster to join (host:port); default: start a local Ray."
    ),
    shards: int = typer.Option(None, "--shards", help="Ray actors holding the nodes (default 2)."),
) -> None:
    """Run the swarm of a profile round by round and report error, bans, bytes and energy."""
    import sys
    import time
    from contextlib import ExitStack

    from qres.kernel import profiles
    from qres.swarm.engine import settings_from_profile

    outputs = _Outputs(report, plot, record, force, as_json)
    outputs.check(data)
    where = _engine_settings(engine, address, shards)
    loaded = profiles.load(profile)
    settings = settings_from_profile(
        loaded,
        byzantine=byzantine,
        rounds=rounds,
        seed=seed,
        nodes=nodes,
        data=data,
        partition=partition,
    )
    live = sys.stderr.isatty() and not as_json
    started = time.perf_counter()
    if "lora" in loaded.data:  # nodes personalise with the adapter hierarchy (docs/lora.md)
        from qres.cli.lora_cmd import simulate_swarm

        return simulate_swarm(loaded, settings, attack, baseline, outputs, started)
    with ExitStack() as stack:
        # Every output is opened (and so checked) before the run, which can take minutes;
        # they are published together at the end, or none if anything failed.
        streams = outputs.open(stack)
        if where.engine == "ray":
            # one Ray for the run and its attack-free baseline
            from qres.swarm.ray_engine import RayCluster

            stack.enter_context(RayCluster(where.address, where.shards))
        sim = _simulation(where, loaded, settings, attack=attack, record=streams.get("record"))
        result = _run(sim, live, "swarm")
        if baseline is None:
            baseline = sim.attack is not None
        if baseline:
            result["attack_free"] = _attack_free(where, loaded, settings, result, live)
        body = outputs.write(result, streams)
    outputs.show(result, body, loaded.name, started)


@attrs.frozen
class _Outputs:
    """Where ``simulate`` writes: the report, the plot, the packet recording, stdout."""

    report: str | None
    plot: str | None
    record: str | None
    force: bool
    as_json: bool

    def check(self, data: str | None) -> None:
        """Refuse one file named for two outputs and a --data that is not a folder."""
        from pathlib import Path

        from qres.kernel.errors import QresError
        from qres.kernel.outputs import check_distinct

        check_distinct(self.report, self.plot, self.record)
        if data is not None and not Path(data).is_dir():
            raise QresError(f"--data {data}: not a folder; give a folder with a MANIFEST.tsv")

    def open(self, stack) -> dict:
        """Open every output on ``stack`` (refused now if it cannot be written; published
        when the stack closes without an error): name -> stream."""
        from qres.kernel.outputs import atomic_output

        wanted = (("record", self.record, True), ("report", self.report, False))
        wanted += (("plot", self.plot, True),)
        return {
            name: stack.enter_context(atomic_output(target, self.force, binary=binary))
            for name, target, binary in wanted
            if target
        }

    def write(self, result: dict, streams: dict) -> bytes:
        """Write the report and the plot into their opened outputs; return the JSON report."""
        from qres.swarm.report import plot as draw
        from qres.swarm.report import to_json

        body = to_json(result)
        if "report" in streams:
            streams["report"].write(body)
        if "plot" in streams:
            draw(result, streams["plot"])
        return body

    def show(self, result: dict, body: bytes, profile_name: str, started: float) -> None:
        """Print the JSON report or the summary table."""
        import sys
        import time

        from qres.cli.output import console, table
        from qres.swarm.report import summary_rows

        if self.as_json:
            sys.stdout.write(body.decode())
            return
        out = console()
        title = f"qres swarm simulate --profile {profile_name}"
        out.print(table(title, ["", ""], summary_rows(result)))
        out.print(f"{time.perf_counter() - started:.1f} s")


def _engine_settings(engine: str, address: str | None, shards: int | None):
    """The engine options, checked: ``--address`` and ``--shards`` belong to ``--engine ray``."""
    from qres.kernel.config import InvalidSetting
    from qres.kernel.errors import UsageError
    from qres.swarm.ray_engine import EngineSettings

    if engine != "ray":
        for flag, value in (("--address", address), ("--shards", shards)):
            if value is not None:
                raise UsageError(f"{flag} needs --engine ray (got --engine {engine})")
    try:
        return EngineSettings(engine, address, 2 if shards is None else shards)
    except InvalidSetting as exc:
        raise UsageError(f"--shards: bad value {exc.value!r}; allowed: {exc.allowed}") from exc


def _simulation(where, loaded, settings, **kwargs):
    """A simulation on the chosen engine."""
    if where.engine == "ray":
        from qres.swarm.ray_engine import RaySimulation

        return RaySimulation(loaded, settings, where, **kwargs)
    from qres.swarm.engine import Simulation

    return Simulation(loaded, settings, **kwargs)


def _attack_free(where, loaded, settings, result: dict, live: bool) -> dict:
    """The same swarm without the attack, and how the attacked run compares."""
    free = _run(_simulation(where, loaded, settings, attack_free=True), live, "attack-free")
    a, b = result["final_honest_error"], free["final_honest_error"]
    return {
        "honest_error": free["honest_error"],
        "final_honest_error": b,
        "banned_honest": free["banned_honest"],
        "error_ratio": round(a / b, 6) if a is not None and b else None,
    }


def _run(sim, live: bool, label: str) -> dict:
    """Run a simulation, with a rich live table on a terminal."""
    if not live:
        return sim.run()
    from rich.live import Live

    from qres.cli.output import console, table

    def view(st) -> object:
        regimes = ", ".join(f"{k} {v}" for k, v in st.regimes.items())
        byz_rep = "-" if st.rep_byzantine != st.rep_byzantine else f"{st.rep_byzantine:.3f}"
        rows = [
            ["round", f"{st.round + 1} / {sim.s.rounds}"],
            ["honest error", f"{st.honest_error:.5f}"],
            ["awake / sending", f"{st.active} / {st.senders}"],
            ["banned honest / Byzantine", f"{st.banned_honest} / {st.banned_byzantine}"],
            ["regimes", regimes],
            ["bytes sent", f"{st.bytes_sent:,}"],
            ["reputation honest / Byzantine", f"{st.rep_honest:.3f} / {byz_rep}"],
            ["energy level", f"{st.energy_level:.3f}"],
        ]
        return table(f"{label}: {sim.profile.name}", ["", ""], rows)

    with Live(console=console(stderr=True), refresh_per_second=4, transient=True) as screen:
        return sim.run(on_round=lambda st: screen.update(view(st)))


def register(app_: typer.Typer) -> None:
    """Add the ``swarm`` command group to the app."""
    app_.add_typer(app, name="swarm")
