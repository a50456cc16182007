"""``qres aggregate``: run one aggregation rule on an (n, d) array of Q16.16 updates."""

from __future__ import annotations

import typer


def aggregate(
    updates: str = typer.Argument(..., help="An .npy file: (n, d) int32 Q16.16 updates."),
    rule: str = typer.Option(
        ..., "--rule", "-r", help="Aggregator plugin name (see `qres plugins list`)."
    ),
    f: int = typer.Option(0, "--f", min=0, help="Number of Byzantine updates to tolerate."),
    output: str = typer.Option(
        None,
        "-o",
        "--output",
        help="Write the (d,) int32 result here as .npy (default: UPDATES with .agg.npy).",
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the generator for rules that need one."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing output."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary for scripts."),
) -> None:
    """Aggregate n model updates into one with a robust rule; deterministic in any row order."""
    import numpy as np

    from qres.cli.output import print_json
    from qres.kernel import plugins
    from qres.kernel.config import Location
    from qres.kernel.errors import QresError
    from qres.kernel.outputs import atomic_output

    try:
        data = np.load(updates, allow_pickle=False)
    except FileNotFoundError as exc:
        raise QresError(f"{updates}: no such file; check the path") from exc
    except (ValueError, OSError, EOFError) as exc:
        raise QresError(f"{updates}: not a readable .npy array ({exc})") from exc
    if data.dtype != np.int32:
        raise QresError(
            f"{updates}: dtype {data.dtype}, expected int32 Q16.16 updates; convert with "
            "np.round(x * 65536).astype(np.int32)"
        )
    aggregator = plugins.create("aggregator", {"use": rule}, Location("--rule"))
    target = output or (updates[:-4] if updates.endswith(".npy") else updates) + ".agg.npy"
    with atomic_output(target, force) as out:  # checked before the aggregation runs
        result = aggregator.aggregate(data, f=f, rng=np.random.default_rng(seed))
        np.save(out, np.asarray(result, dtype=np.int32))
    if as_json:
        print_json(
            {
                "rule": rule,
                "n": int(data.shape[0]),
                "d": int(data.shape[1]),
                "f": f,
                "output": target,
            }
        )
    else:
        print(
            f"{rule}: aggregated {data.shape[0]} updates of {data.shape[1]} weights "
            f"(f={f}) -> {target}"
        )


def register(app: typer.Typer) -> None:
    """Add the command to the app."""
    app.command()(aggregate)
