"""``qres audit FILE``: verify a recorded stream of update packets and audit responses."""

from __future__ import annotations

import typer


def audit(
    path: str = typer.Argument(..., metavar="FILE", help="A recorded packet stream (- = stdin)."),
    window: int = typer.Option(
        None, "--window", min=0, help="Flag packets more than this many rounds behind the newest."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON report for scripts."),
    profile: str = typer.Option(
        "swarm-100",
        "--profile",
        "-p",
        help="The profile the swarm ran: its aggregator replays the round steps.",
    ),
) -> None:
    """Check signatures, replays, commitment chains, proofs, audit openings and round steps
    per sender.

    Prints which senders and rounds fail and why; exits 5 when anything fails.
    """
    import sys

    from qres.cli.output import console, print_json, table
    from qres.kernel.errors import IntegrityError, QresError
    from qres.trust.audit import audit_stream

    rule = _step_rule(profile)
    if path == "-":
        report = audit_stream(sys.stdin.buffer, "<stdin>", window, rule)
    else:
        try:
            handle = open(path, "rb")
        except FileNotFoundError as exc:
            raise QresError(f"{path}: no such file; give a recorded packet stream") from exc
        with handle:
            report = audit_stream(handle, path, window, rule)
    if report.records == 0 and [f.check for f in report.failures] == ["bad-stream"]:
        # Not a packet stream at all (foreign or empty file): one error line, no empty tables.
        raise IntegrityError(report.failures[0].detail + "; give a stream recorded by qres")
    if as_json:
        print_json({"file": path, "profile": profile, **report.as_dict()})
    else:
        out = console()
        rows = [
            [
                _short(s.did),
                s.packets,
                len(s.rounds),
                s.proofs_verified,
                s.audits_passed,
                s.steps_verified,
                f"{s.linked}/{s.rebased}",
                s.failures,
            ]
            for s in (report.senders[k] for k in sorted(report.senders))
        ]
        out.print(
            _fit(
                table(
                    f"{path}: {report.packets} packets, {report.audit_responses} audit responses",
                    ["sender", "packets", "rounds", "proofs", "audits", "steps", "chain", "fails"],
                    rows,
                )
            )
        )
        if report.failures:
            out.print(
                _fit(
                    table(
                        "Failures",
                        ["record", "sender", "round", "check", "why"],
                        [
                            [
                                f.record,
                                _short(f.did),
                                "-" if f.round is None else f.round,
                                f.check,
                                f.detail,
                            ]
                            for f in report.failures
                        ],
                    )
                )
            )
    if not report.ok:
        senders = len({f.did for f in report.failures})
        print(
            f"qres: audit failed: {len(report.failures)} failures from {senders} senders",
            file=sys.stderr,
        )
        raise typer.Exit(5)


def _step_rule(name: str):
    """The swarm's rule of profile ``name``, as ``qres swarm simulate`` applies it: its
    aggregator (``adaptive`` when it names none) by
    :func:`qres.robust.combine.robust_aggregate` with the profile's assumed Byzantine share."""
    from qres.kernel import plugins, profiles
    from qres.kernel.config import Location
    from qres.node.defence import Defence
    from qres.swarm.engine import settings_from_profile

    loaded = profiles.load(name)
    if "aggregator" in loaded.data.get("swarm", {}):
        aggregator = loaded.build("swarm", "aggregator")
    else:
        where = Location(str(loaded.path)).child("swarm")
        aggregator = plugins.create("aggregator", {"use": "adaptive"}, where)
    return Defence(settings_from_profile(loaded), None, aggregator).rule


def _short(did: str) -> str:
    """A DID cut to 12 hex digits for tables (``--json`` gives it whole)."""
    return did if len(did) <= 22 else did[:21] + "…"


def _fit(table):
    """Keep the sender column whole: narrow terminals wrap the other columns instead."""
    for column in table.columns:
        if column.header == "sender":
            column.no_wrap = True
            column.min_width = 22
    return table


def register(app: typer.Typer) -> None:
    """Add the command to the app."""
    app.command("audit")(audit)
