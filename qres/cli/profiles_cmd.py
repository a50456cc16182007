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

    rows = []
    for name, found in profiles.candidates().items():
        path = found[0]
        meta = profiles.read_toml(path).get("profile", {})
        hidden = profiles.shadowed_bundled(found)
        rows.append(
            {
                "name": name,
                "extends": meta.get("extends", ""),
                "description": meta.get("description", ""),
                "path": str(path),
                "source": "bundled" if profiles.is_bundled(path) else "QRES_PROFILE_PATH",
                "shadows": [str(p) for p in found[1:]],
            }
        )
        if hidden is not None:
            profiles.warn_shadowed(name, found)
    if as_json:
        print_json(rows)
        return
    console().print(
        table(
            "Profiles",
            ["name", "from", "extends", "description"],
            [[r["name"], _origin(r), r["extends"], r["description"]] for r in rows],
        )
    )


def _origin(row: dict) -> str:
    """Where a listed profile comes from, and what it hides."""
    if row["source"] == "bundled":
        return "bundled"
    hides = " (shadows bundled)" if row["shadows"] else ""
    return f"{row['path']}{hides}"


@app.command("show")
def show(
    name: str = NAME,
    as_json: bool = typer.Option(False, "--json", help="Print the resolved profile as JSON."),
    as_toml: bool = typer.Option(
        False,
        "--toml",
        help="Print the resolved profile as a self-contained TOML file that loads back "
        "identically (no extends, no comments, no colour).",
    ),
) -> None:
    """Print the fully resolved profile (inheritance applied, every table validated)."""
    import sys

    from qres.kernel import profiles

    profile = profiles.load(name)
    if as_json:
        print_json(profile.data)
        return
    if as_toml:
        sys.stdout.write(profiles.to_toml(profiles.standalone(profile.data)))
        return
    chain = " <- ".join(str(p) for p in reversed(profile.chain))
    text = profiles.to_toml(profile.data)
    if not sys.stdout.isatty():  # piped: plain TOML (the comment line is TOML too)
        sys.stdout.write(f"# {profile.name}: resolved from {chain}\n{text}")
        return
    from rich.syntax import Syntax

    out = console()
    out.print(f"# {profile.name}: resolved from {chain}", markup=False)
    out.print(Syntax(text, "toml", theme="ansi_dark"))


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
