"""``qres plugins``: what plugins are installed, of which kind, from which package."""

from __future__ import annotations

import typer

from qres.cli import warn
from qres.cli.output import console, print_json, table

app = typer.Typer(help="List installed plugins.", no_args_is_help=True)


@app.command("list")
def list_(
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list for scripts."),
) -> None:
    """List every registered plugin with its kind, package and version."""
    from qres.kernel import plugins

    infos = plugins.list_plugins()
    for name, reason in plugins.problems():
        if (name, reason) not in plugins.load_failures:  # those were reported at start-up
            warn(f"{reason}; it is not usable until fixed")
    if as_json:
        print_json(
            [
                {
                    "name": i.name,
                    "kind": i.kind,
                    "package": i.package,
                    "version": i.version,
                    "source": i.source,
                }
                for i in infos
            ]
        )
        return
    rows = [[i.kind, i.name, i.package, i.version, i.source] for i in infos]
    console().print(table("Plugins", ["kind", "name", "package", "version", "module"], rows))
    for name, reason in plugins.load_failures:
        console().print(f"[red]failed[/red] {name}: {reason}")
