"""``qres lora show``: a saved adapter-hierarchy state as a table, JSON or PNG;
``qres lora train``: such a state trained on a recording."""

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


@app.command()
def train(
    input: str = typer.Argument(..., help="A recording: WAV, .npy, or raw with --dtype."),
    state: str = typer.Option(..., "--state", "-o", help="Write the trained state here (JSON)."),
    profile: str = typer.Option("swarm-lora", "--profile", "-p", help="A profile with [lora]."),
    dtype: str = typer.Option(None, "--dtype", help="Sample type of a raw file."),
    channels: int = typer.Option(None, "--channels", min=1, help="Channels of a raw file."),
    layout: str = typer.Option(None, "--layout", help="interleaved (default) or planar."),
    byte_order: str = typer.Option(None, "--byte-order", help="little (default) or big."),
    first_channel: int = typer.Option(
        0, "--first-channel", min=0, help="The model reads this channel and the next."
    ),
    rounds: int = typer.Option(
        0, "--rounds", min=0, help="Windows to learn from (0: all the file holds, <= 4096)."
    ),
    window: int = typer.Option(None, "--window", min=8, help="Samples per window."),
    seed: int = typer.Option(0, "--seed", help="Seed of the adapters' initial values."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing state."),
) -> None:
    """Train one node's adapter hierarchy on a recording, alone, and save its state for
    ``qres lora show``."""
    import json

    from qres.cli.output import console
    from qres.codec.files import codec_settings, open_samples
    from qres.kernel import profiles
    from qres.kernel.errors import ProfileError
    from qres.kernel.outputs import atomic_output
    from qres.kinds.lora import ROLES
    from qres.lora import train as trainer
    from qres.swarm.engine import settings_from_profile

    loaded = profiles.load(profile)
    if "lora" not in loaded.data:
        raise ProfileError(
            f"{loaded.path}: profile {loaded.name!r} has no [lora] table; use one that does "
            "(e.g. --profile swarm-lora)"
        )
    hierarchy = loaded.settings("lora")
    swarm = settings_from_profile(loaded, window=window)
    _, default_dtype = codec_settings(profile)
    coder = loaded.build("codec", "coder")
    plan = trainer.TrainPlan(swarm.window, swarm.order, swarm.lr, first_channel, rounds)
    with atomic_output(state, force, binary=False) as out:
        source, stream = open_samples(
            input,
            dtype=dtype,
            channels=channels,
            layout=layout,
            byte_order=byte_order,
            default_dtype=default_dtype,
        )
        with stream:
            samples = trainer.read_frames(source, plan.frames(), input)
        x = trainer.streams(samples, plan, input)
        node = trainer.train(hierarchy, plan, x, coder, seed)
        out.write(json.dumps(node.to_state()).encode())
    console().print(
        f"{input}: {len(node.depths)} windows of {plan.window}, channels {first_channel} and "
        f"{first_channel + 1}; predicting with depth {ROLES[node.depth()]}; "
        f"{len(node.changes)} change(s) of stream, {node.h.migrations} migration(s); "
        f"state in {state}"
    )


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
