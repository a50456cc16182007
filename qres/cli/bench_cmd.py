"""``qres bench``: measured benchmarks; ``qres bench aggregators`` (logic in qres.robust.bench)."""

from __future__ import annotations

import typer

app = typer.Typer(help="Run the measured benchmarks.", no_args_is_help=True)


def _fmt_ratio(value) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"


def _fmt_s(value) -> str:
    if value is None:
        return "—"
    return f"{value:.3f} s" if value < 10 else f"{value:.1f} s"


def _print(report: dict) -> None:
    """The grid and the speed table, as rich tables on stdout."""
    from rich.console import Console

    # The grid has a dozen columns: never squeeze it below 160 characters.
    out = Console(highlight=False)
    if out.width < 160:
        out = Console(highlight=False, width=160)
    if report.get("grid"):
        _print_grid(out, report["grid"])
    if report.get("speed"):
        _print_speed(out, report["speed"])


def _print_grid(out, grid: dict) -> None:
    """The robustness grid, the refusals, the distrusted counts and the target."""
    from qres.cli.output import table

    s = grid["settings"]
    attacks = grid["attacks"]
    rows = [
        [r["name"], *(_fmt_ratio(r["cells"][a]) for a in attacks), _fmt_ratio(r["worst"])]
        for r in grid["rules"]
    ]
    title = (
        f"Robustness: honest error / mean without attack ({grid['baseline_error']:.5f}); "
        f"n={s['n']}, f={s['f']}, {s['rounds']} rounds, "
        f"{'IID' if s['iid'] else 'non-IID'}, seed {s['seed']}"
    )
    out.print(table(title, ["rule", *attacks, "worst"], rows))
    for r in grid["rules"]:
        if r["refused"]:
            out.print(f"{r['name']}: n/a, {r['refused']}")
    for r in grid["rules"]:
        if r.get("distrusted"):
            parts = ", ".join(f"{a} {h}/{b}" for a, (h, b) in r["distrusted"].items())
            out.print(f"{r['name']} distrusted at the end (honest/byzantine): {parts}")
    verdict = "holds" if grid["target_holds"] else "does NOT hold"
    out.print(
        f"target: {grid['default_rule']} worst case {_fmt_ratio(grid['default_worst'])} "
        f"<= {grid['target']:.2f}: {verdict}"
    )


def _print_speed(out, speed: dict) -> None:
    """The speed table, qres beside Flower."""
    from qres.cli.output import table

    st = speed["settings"]
    flower = f"Flower {speed['flower_version']}" if speed["flower_version"] else "Flower"
    rows = []
    for r in speed["rows"]:
        fl = _fmt_s(r["flower_s"])
        if r.get("flower_scaled"):
            fl += f" (scaled from n={r['flower_n']})"
        target = (
            ""
            if r["target_s"] is None
            else (f"< {r['target_s']} s: {'yes' if r['target_holds'] else 'NO'}")
        )
        ratio = "" if r["ratio"] is None else f"{r['ratio']:.1f}"
        rows.append([r["rule"], r["n"], r["f"], _fmt_s(r["qres_s"]), fl, ratio, target])
    out.print(
        table(
            f"Speed, d={st['d']} (N(0,1) in Q16.16; {flower} on the same values as float64)",
            ["rule", "n", "f", "qres", flower, "Flower / qres", "target"],
            rows,
        )
    )


@app.command("aggregators")
def aggregators(
    quick: bool = typer.Option(
        False, "--quick", help="A small run in seconds: n=20, f=4, 5 rounds, speed at 500x50."
    ),
    n: int = typer.Option(None, "--n", min=4, help="Grid: nodes (default 100)."),
    f: int = typer.Option(None, "--f", min=0, help="Grid: Byzantine nodes (default 30)."),
    rounds: int = typer.Option(None, "--rounds", min=1, help="Grid: training rounds (30)."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of shards, windows and attacks."),
    iid: bool = typer.Option(False, "--iid", help="Grid: IID shards instead of non-IID."),
    data: str = typer.Option(
        None,
        "--data",
        help="Grid: a folder of recordings with a MANIFEST.tsv (default: ../shared/data).",
    ),
    speed_n: int = typer.Option(None, "--speed-n", min=8, help="Speed: updates (10000)."),
    d: int = typer.Option(None, "--d", min=1, help="Speed: weights per update (1000)."),
    flower_krum_n: int = typer.Option(
        None, "--flower-krum-n", min=8, help="Speed: rows Flower's Krum is timed on (1000)."
    ),
    no_flower: bool = typer.Option(False, "--no-flower", help="Speed: do not time Flower."),
    skip_grid: bool = typer.Option(False, "--no-grid", help="Skip the robustness grid."),
    skip_speed: bool = typer.Option(False, "--no-speed", help="Skip the speed table."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object for scripts."),
    png: str = typer.Option(None, "--png", help="Also draw the grid and the table to this PNG."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing PNG."),
) -> None:
    """Robustness grid and speed table of the aggregators, with their targets.

    The grid runs every rule against every attack on the learning task; the speed table
    times the rules side by side with Flower's in this process.
    """
    import sys
    from contextlib import ExitStack

    from qres.cli.output import print_json
    from qres.kernel.config import InvalidSetting
    from qres.kernel.errors import QresError, UsageError
    from qres.kernel.outputs import atomic_output
    from qres.robust import bench as aggbench

    if skip_grid and skip_speed:
        raise UsageError("--no-grid and --no-speed leave nothing to run; drop one of them")
    grid_args = _grid_args(quick, n, f, rounds, seed=seed, iid=iid, data=data)
    speed_args = _speed_args(quick, speed_n, d, flower_krum_n, seed=seed, flower=not no_flower)
    try:
        grid = None if skip_grid else aggbench.GridSettings(**grid_args)
        speed = None if skip_speed else aggbench.SpeedSettings(**speed_args)
    except InvalidSetting as exc:
        raise QresError(f"qres bench aggregators: {exc}; adjust the option") from exc
    on_terminal = not as_json and sys.stderr.isatty()
    with ExitStack() as stack:
        # The PNG is opened (and so checked) before the benchmark runs, published after.
        out = stack.enter_context(atomic_output(png, force)) if png else None
        report = aggbench.run(grid, speed, progress=_progress if on_terminal else None)
        if on_terminal:
            print("\r\033[K", end="", file=sys.stderr, flush=True)
        if out is not None:
            aggbench.write_png(report, out)
    if as_json:
        print_json(report)
    else:
        _print(report)
        if png:
            print(f"wrote {png}")


#: What --quick shrinks the grid and the speed table to.
QUICK_GRID = {"n": 20, "f": 4, "rounds": 5, "shard_len": 1024, "eval_len": 256, "window": 128}
QUICK_SPEED = {"n": 500, "d": 50, "flower_krum_n": 200, "bulyan_n": 23}


def _grid_args(quick: bool, n, f, rounds, **fixed) -> dict:
    """The grid's settings from the options: --quick's, then the explicit ones (an explicit
    --n without --f takes f = 30% of n)."""
    args = dict(QUICK_GRID) if quick else {}
    for key, value in (("n", n), ("f", f), ("rounds", rounds)):
        if value is not None:
            args[key] = value
    if n is not None and f is None and not quick:
        args["f"] = (3 * n) // 10
    return {**args, **fixed}


def _speed_args(quick: bool, speed_n, d, flower_krum_n, **fixed) -> dict:
    """The speed table's settings from the options: --quick's, then the explicit ones."""
    args = dict(QUICK_SPEED) if quick else {}
    for key, value in (("n", speed_n), ("d", d), ("flower_krum_n", flower_krum_n)):
        if value is not None:
            args[key] = value
    return {**args, **fixed}


def _progress(message: str) -> None:
    """One status line on the terminal, overwritten by the next."""
    import sys

    print(f"\r\033[K{message}", end="", file=sys.stderr, flush=True)


@app.command("defence")
def defence(
    quick: bool = typer.Option(
        False, "--quick", help="A small run: 20 nodes, 12 rounds, seed 0, 10% and 30%."
    ),
    profile: str = typer.Option("swarm-100", "--profile", "-p", help="Swarm profile."),
    nodes: int = typer.Option(None, "--nodes", min=4, help="Nodes per swarm (60)."),
    rounds: int = typer.Option(None, "--rounds", min=2, help="Rounds per run (40)."),
    seeds: str = typer.Option(None, "--seeds", help="Seeds, e.g. 0-4 or 0,3 (0-4)."),
    fractions: str = typer.Option(
        None, "--byzantine", help="Byzantine fractions, e.g. 0.1,0.3,0.45 (those)."
    ),
    attacks: str = typer.Option(None, "--attacks", help="Comma-separated attacks (all)."),
    data: str = typer.Option(
        None, "--data", help="A MANIFEST folder of recordings (default: the generated set)."
    ),
    iid: bool = typer.Option(False, "--iid", help="IID shards instead of non-IID."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object for scripts."),
) -> None:
    """Red-team suite of the swarm's defence: built-in and adaptive attacks at 10/30/45%
    Byzantine, honest error over all honest nodes, bans, beside the attack-free swarm."""
    import sys

    from qres.cli.output import print_json
    from qres.kernel.config import InvalidSetting
    from qres.kernel.errors import QresError
    from qres.robust import defence_bench as db

    args: dict = dict(QUICK_DEFENCE) if quick else {}
    for key, value in (("profile", profile), ("nodes", nodes), ("rounds", rounds)):
        if value is not None:
            args[key] = value
    try:
        if seeds is not None:
            args["seeds"] = _int_list(seeds)
        if fractions is not None:
            args["fractions"] = [float(v) for v in fractions.split(",") if v.strip()]
    except ValueError:
        raise QresError(
            f"qres bench defence: --seeds {seeds!r} / --byzantine {fractions!r}: not a list; "
            "write e.g. --seeds 0-4 --byzantine 0.1,0.3"
        ) from None
    if attacks is not None:
        args["attacks"] = [a.strip() for a in attacks.split(",") if a.strip()]
    if data is not None:
        args["data"] = data
    args["partition"] = "iid" if iid else "non-iid"
    try:
        settings = db.DefenceSettings(**args)
    except InvalidSetting as exc:
        raise QresError(f"qres bench defence: {exc}; adjust the option") from exc
    on_terminal = not as_json and sys.stderr.isatty()
    report = db.run(settings, progress=_progress if on_terminal else None)
    if on_terminal:
        print("\r\033[K", end="", file=sys.stderr, flush=True)
    if as_json:
        print_json(report)
    else:
        _print_defence(report)


#: What --quick shrinks the defence suite to.
QUICK_DEFENCE = {"nodes": 20, "rounds": 12, "seeds": (0,), "fractions": (0.1, 0.3)}


def _int_list(text: str) -> list[int]:
    """``0-4`` or ``0,2,3`` as a list of integers."""
    out: list[int] = []
    for part in text.split(","):
        if "-" in part.strip()[1:]:
            lo, hi = part.split("-", 1)
            out.extend(range(int(lo), int(hi) + 1))
        elif part.strip():
            out.append(int(part))
    return out


def _print_defence(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    cells = report["summary"]["cells"]
    fracs = sorted({c["byzantine"] for c in cells})
    table = Table(
        title="Defence (worst error ratio over seeds / honest banned / Byzantine banned / "
        "faulty nodes left unbanned)"
    )
    table.add_column("attack")
    for f in fracs:
        table.add_column(f"{f:.0%}")
    by = {(c["attack"], c["byzantine"]): c for c in cells}
    for attack in dict.fromkeys(c["attack"] for c in cells):
        row = [attack]
        for f in fracs:
            c = by[(attack, f)]
            text = f"{c['worst_ratio']:.3f} / {c['honest_banned']} / {c['byzantine_banned']}"
            text += f" / {c['committed_unbanned']}"
            if "worst_trimmed_ratio" in c:
                text += f" (trimmed {c['worst_trimmed_ratio']:.3f})"
            row.append(text)
        table.add_row(*row)
    console = Console()
    console.print(table)
    for name, ok in report["summary"]["targets"].items():
        console.print(f"target {name}: {'holds' if ok else 'does NOT hold'}")


def register(app_: typer.Typer) -> None:
    """Add the ``bench`` group to the app."""
    app_.add_typer(app, name="bench")
