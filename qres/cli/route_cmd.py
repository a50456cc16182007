"""``qres llm route`` and ``qres llm router train``: the tiered router from the terminal."""

from __future__ import annotations

import sys
from pathlib import Path

import attrs
import typer

from qres.cli.output import print_json
from qres.kernel.errors import ProfileError, QresError

LOGS = typer.Argument(..., help="Decision logs (JSON lines) to learn from.")
MODEL_OUT = typer.Option(Path("router-model.json"), "--out", "-o", help="Model file to write.")
ROUTER_PROFILE = typer.Option("router", "--profile", "-p", help="Profile with a [router] table.")
router_app = typer.Typer(help="Train the router's learned estimator.", no_args_is_help=True)


def open_router(profile_name: str, log: str | None = None, explain_only: bool = False):
    """The router the profile configures (``log`` overrides ``[router] log``)."""
    from qres.kernel import profiles
    from qres.kernel.config import build_config
    from qres.llm.route_settings import RouterSettings
    from qres.llm.router import Router

    profile = profiles.load(profile_name)
    table = profile.data.get("router")
    if table is None:
        raise ProfileError(f"{profile.where('router')}: no [router] table; pick a router profile")
    plain = {k: v for k, v in table.items() if k != "validators"}
    settings = build_config(RouterSettings, plain, profile.where("router"))
    if log is not None:
        settings = attrs.evolve(settings, log=log)
    count = len(table.get("validators", []))
    validators = [profile.build("router", "validators", i) for i in range(count)]
    embed = None
    if settings.cache_profile and not explain_only:
        backend = profiles.load(settings.cache_profile).build("llm", "backend")

        def embed(text: str):
            return backend.embed([text])[0]

    return Router(settings, validators, embed=embed)


def _prompt(text: str) -> str:
    return sys.stdin.read() if text == "-" else text


def route(
    prompt: str = typer.Argument(..., help="The prompt; '-' reads it from stdin."),
    profile: str = ROUTER_PROFILE,
    explain: bool = typer.Option(
        False, "--explain", help="Show the features and the decision; call no tier."
    ),
    log: str = typer.Option(None, "--log", help="Append the decision to this JSON-lines file."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object for scripts."),
) -> None:
    """Answer PROMPT with the cheapest tier that passes validation (exit 1 if none does)."""
    from qres.llm.router import log_record

    text = _prompt(prompt)
    router = open_router(profile, log, explain_only=explain)
    try:
        if explain:
            _explain(router, text, as_json)
            return
        outcome = router.route(text)
    finally:
        router.close()
    if as_json:
        print_json({"answer": outcome.answer, **log_record(text, outcome, 0.0, 0.0)})
    elif outcome.answer is not None:
        typer.echo(outcome.answer)
    if not outcome.ok:
        tried = "; ".join(f"{a.tier}: {a.reason}" for a in outcome.attempts)
        raise QresError(f"no tier's answer passed validation ({tried}); see --explain")


def _explain(router, text: str, as_json: bool) -> None:
    decision = router.decide(text)
    tier = router.tiers[decision.start]
    if as_json:
        print_json({**attrs.asdict(decision), "tier": tier.name})
        return
    typer.echo("features:")
    for name, value in decision.features.items():
        typer.echo(f"  {name:<11} {value:g}")
    typer.echo(f"estimator: {decision.estimator}")
    if decision.estimator == "learned":
        for name, p in decision.scores.items():
            typer.echo(f"  p({name}) = {p:.3f}")
    typer.echo(f"decision: start at {tier.name} ({tier.kind}): {decision.reason}")
    later = [t.name for t in router.tiers[decision.start + 1 :]]
    typer.echo(f"escalation: {' -> '.join(later) if later else 'none (top tier)'}")


@router_app.command("train")
def train(
    logs: list[Path] = LOGS,
    out: Path = MODEL_OUT,
    l2: float = typer.Option(0.01, "--l2", help="L2 penalty of the logistic regression."),
) -> None:
    """Fit the learned estimator (one logistic regression per tier) from decision logs."""
    from qres.codec.files import atomic_output
    from qres.llm.route_learn import read_examples
    from qres.llm.route_learn import train as fit

    examples = []
    for path in logs:
        try:
            with path.open(encoding="utf-8") as lines:
                examples += read_examples(lines, str(path))
        except OSError as exc:
            raise QresError(f"{path}: {exc.strerror or exc}; pass a decision log") from exc
    model = fit(examples, l2=l2)
    with atomic_output(str(out), force=True) as stream:
        stream.write(model.to_json().encode())
    for name, m in sorted(model.tiers.items()):
        typer.echo(f"{name}: {m.examples} attempts")
    typer.echo(f"wrote {out}")


def attach(llm_app: typer.Typer) -> None:
    """Add ``route`` and ``router`` to the ``qres llm`` group."""
    llm_app.command("route")(route)
    llm_app.add_typer(router_app, name="router")
