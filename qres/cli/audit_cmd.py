"""``qres audit FILE``: verify a recorded stream of update packets and audit responses."""

from __future__ import annotations

import typer


def audit(
    path: str = typer.Argument(..., metavar="FILE", help="A recorded packet stream (- = stdin)."),
    window: int = typer.Option(
        None, "--window", min=0, help="Flag packets more than this many rounds behind the newest."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON report for scripts."),
) -> None:
    """Check signatures, replays, commitment chains, proofs and audit openings per sender.

    Prints which senders and rounds fail and why; exits 5 when anything fails.
    """
    import sys

    from qres.cli.output import console, print_json, table
    from qres.kernel.errors import IntegrityError, QresError
    from qres.trust.audit import audit_stream

    if path == "-":
        report = audit_stream(sys.stdin.buffer, "<stdin>", window)
    else:
        try:
            handle = open(path, "rb")
        except FileNotFoundError as exc:
            raise QresError(f"{path}: no such file; give a recorded packet stream") from exc
        with handle:
            report = audit_stream(handle, path, window)
    if report.records == 0 and [f.check for f in report.failures] == ["bad-stream"]:
        # Not a packet stream at all (foreign or empty file): one error line, no empty tables.
        raise IntegrityError(report.failures[0].detail + "; give a stream recorded by qres")
    if as_json:
        print_json({"file": path, **report.as_dict()})
    else:
        out = console()
        rows = [
            [
                _short(s.did),
                s.packets,
                len(s.rounds),
                s.proofs_verified,
                s.audits_passed,
                f"{s.linked}/{s.rebased}",
                s.failures,
            ]
            for s in (report.senders[k] for k in sorted(report.senders))
        ]
        out.print(
            _fit(
                table(
                    f"{path}: {report.packets} packets, {report.audit_responses} audit responses",
                    ["sender", "packets", "rounds", "proofs", "audits", "chain", "fails"],
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
