"""``qres lora show``: a saved adapter-hierarchy state as a table, JSON or PNG."""

from __future__ import annotations

import typer

app = typer.Typer(help="Inspect adapter hierarchies (docs/lora.md).", no_args_is_help=True)


@app.command()
def show(
    state: str = typer.Argument(..., help="A state written by qres.lora (JSON)."),
    plot: str = typer.Option(
        None, "--plot", help="Write a PNG of layer contributions over time here."
    ),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing PNG."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Per layer: rank, inertia, drift from init, threshold, updates; migrations, queues,
    health and the depth the node predicts with."""
    from pathlib import Path

    from qres.cli.output import console, print_json, table
    from qres.kernel.outputs import atomic_output
    from qres.lora import state as saved

    loaded = saved.load(state)
    if plot:
        with atomic_output(plot, force, binary=True) as out:
            saved.plot(loaded, out, Path(state).name)
    report = saved.report(loaded)
    if as_json:
        print_json(report)
        return
    out = console()
    columns = ["layer", "kept", "rank", "inertia base / now", "drift", "threshold", "updates"]
    out.print(
        table(
            f"{Path(state).name}: {report['rounds']} rounds, predicting with depth "
            f"{report['depth']} (*)",
            [*columns, "score"],
            saved.layer_rows(loaded),
        )
    )
    queues = ", ".join(f"{k} {v}" for k, v in report["queues"].items())
    out.print(f"migrations {report['migrations']}; queues: {queues}")
    health = report["health"]
    out.print(f"health: {health['status']}")
    for reason in health["reasons"]:
        out.print(f"  - {reason}")


def register(app_: typer.Typer) -> None:
    """Add the ``lora`` command group to the app."""
    app_.add_typer(app, name="lora")


def simulate_swarm(loaded, settings, attack, baseline, outputs, started) -> None:
    """``qres swarm simulate`` of a profile with a ``[lora]`` table: the LoRA swarm."""
    import sys
    import time
    from contextlib import ExitStack

    from qres.cli.output import console, table
    from qres.kernel.errors import UsageError
    from qres.lora import swarm as lora_swarm
    from qres.swarm.report import to_json

    if outputs.record:
        raise UsageError("--record: the LoRA swarm does not record packets; leave it out")
    with ExitStack() as stack:
        streams = outputs.open(stack)  # checked before the run, published after it
        result = lora_swarm.simulate(loaded, settings, attack, baseline)
        cpu = result.pop("cpu_seconds_per_round")
        body = to_json(result)
        if "report" in streams:
            streams["report"].write(body)
        if "plot" in streams:
            lora_swarm.plot(result, streams["plot"])
    if outputs.as_json:
        sys.stdout.write(body.decode())
        return
    out = console()
    rows = lora_swarm.summary_rows(result)
    rows.append(["CPU per round (all nodes)", f"{sum(cpu) / max(1, len(cpu)):.3f} s"])
    out.print(table(f"qres swarm simulate --profile {loaded.name}", ["", ""], rows))
    out.print(f"{time.perf_counter() - started:.1f} s")
