"""``qres profiles``: list, show (resolved) and check profiles against their hardware."""

from __future__ import annotations

import typer

from qres.cli.output import console, print_json, table

app = typer.Typer(help="List, show and check TOML profiles.", no_args_is_help=True)

NAME = typer.Argument(..., help="A profile name (see `qres profiles list`) or a .toml path.")


@app.command("list")
def list_(
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list for scripts."),
) -> None:
    """List the profiles found on the search path."""
    from qres.kernel import profiles

    found = profiles.available()
    rows = []
    for name, path in found.items():
        meta = profiles.read_toml(path).get("profile", {})
        rows.append(
            {
                "name": name,
                "extends": meta.get("extends", ""),
                "description": meta.get("description", ""),
                "path": str(path),
            }
        )
    if as_json:
        print_json(rows)
        return
    console().print(
        table(
            "Profiles",
            ["name", "extends", "description"],
            [[r["name"], r["extends"], r["description"]] for r in rows],
        )
    )


@app.command("show")
def show(
    name: str = NAME,
    as_json: bool = typer.Option(False, "--json", help="Print the resolved profile as JSON."),
) -> None:
    """Print the fully resolved profile (inheritance applied, every table validated)."""
    from qres.kernel import profiles

    profile = profiles.load(name)
    if as_json:
        print_json(profile.data)
        return
    from rich.syntax import Syntax

    chain = " <- ".join(str(p) for p in reversed(profile.chain))
    out = console()
    out.print(f"# {profile.name}: resolved from {chain}")
    out.print(Syntax(profiles.to_toml(profile.data), "toml", theme="ansi_dark"))


@app.command("check")
def check(
    name: str = NAME,
    as_json: bool = typer.Option(False, "--json", help="Print the budget check as JSON."),
) -> None:
    """Check that the profile's pipeline fits its hardware's memory budget (exit 1 if not)."""
    from qres.kernel import budget, profiles

    report = budget.check(profiles.load(name))
    if as_json:
        print_json(report.to_dict())
    else:
        rows = [[item.path, item.kind, item.plugin, f"{item.bytes:,}"] for item in report.items]
        out = console()
        out.print(table(f"Memory of {report.profile}", ["part", "kind", "plugin", "bytes"], rows))
        print(report.summary())
    if not report.fits:
        raise typer.Exit(1)
