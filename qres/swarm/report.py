"""The simulator's outputs: the JSON report, its PNG plots and the live view's table.

The report is plain data (see :meth:`qres.swarm.engine.Simulation.run`); :func:`to_json`
renders it with sorted keys and no timing, so the same seed and profile give the same bytes.
Plots use matplotlib, imported only when a plot is asked for.
"""

from __future__ import annotations

import json
import math
from typing import Any


def to_json(report: dict) -> bytes:
    """The report as canonical JSON bytes (sorted keys, NaN written as null)."""

    def clean(value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        return value

    return (json.dumps(clean(report), indent=1, sort_keys=True, allow_nan=False) + "\n").encode()


def summary_rows(report: dict) -> list[list[str]]:
    """The headline figures of a report, as (name, value) rows for a table."""
    rows = [
        ["nodes (Byzantine)", f"{report['nodes']} ({report['byzantine_nodes']})"],
        ["attack", str(report["attack"])],
        ["aggregator", report["aggregator"]],
        ["final honest error", str(report["final_honest_error"])],
    ]
    if "attack_free" in report:
        free = report["attack_free"]
        rows.append(["attack-free final error", str(free["final_honest_error"])])
        rows.append(["error ratio (attack / free)", str(free["error_ratio"])])
    rows += [
        ["banned honest / Byzantine", f"{report['banned_honest']} / {report['banned_byzantine']}"],
        ["Byzantine isolated at round", str(report["byzantine_isolated_round"])],
        ["bytes sent", f"{report['bytes_sent']:,}"],
        ["regime node-rounds", ", ".join(f"{k} {v}" for k, v in report["regime_rounds"].items())],
        ["radio asleep", f"{report['sleep_fraction']:.4f}"],
    ]
    saving = report["energy"]["saving_vs_always_on"]
    if saving is not None:
        rows.append(["energy saving vs always-on", f"{saving:.1f}x"])
    return rows


def plot(report: dict, target: Any) -> None:
    """Four panels: honest error (with the attack-free run), reputation of honest and
    Byzantine nodes, the regime timeline, and the mean energy level. ``target`` is a path or
    a binary file object; PNG."""
    from qres.kernel.plotting import pyplot

    plt = pyplot()

    rounds = list(range(len(report["honest_error"])))
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    ax = axes[0][0]
    label = f"attack: {report['attack']}" if report["attack"] else "honest error"
    ax.plot(rounds, _nan(report["honest_error"]), label=label, color="tab:red")
    if "attack_free" in report:
        ax.plot(
            rounds,
            _nan(report["attack_free"]["honest_error"]),
            label="attack-free",
            color="tab:blue",
            linestyle="--",
        )
    ax.set_yscale("log")
    ax.set_title("honest prediction error (relative to range)")
    ax.set_xlabel("round")
    ax.legend()
    ax = axes[0][1]
    rep = report["reputation"]
    ax.plot(rounds, _nan(rep["honest_mean"]), label="honest", color="tab:blue")
    if report["byzantine_nodes"]:
        ax.plot(rounds, _nan(rep["byzantine_mean"]), label="Byzantine", color="tab:red")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("mean reputation")
    ax.set_xlabel("round")
    ax.legend()
    ax = axes[1][0]
    timeline = report["regime_timeline"]
    names = ("calm", "prestorm", "storm")
    colours = ("tab:green", "tab:orange", "tab:purple")
    ax.stackplot(rounds, *[[t[k] for t in timeline] for k in names], labels=names, colors=colours)
    ax.set_title("regimes (nodes)")
    ax.set_xlabel("round")
    ax.legend(loc="upper right")
    ax = axes[1][1]
    ax.plot(rounds, _nan(report["energy"]["level"]), color="tab:olive")
    ax.set_ylim(0, 1.02)
    ax.set_title(f"mean energy pool level ({report['energy']['hardware']})")
    ax.set_xlabel("round")
    fig.suptitle(f"qres swarm: {report['profile']}, {report['nodes']} nodes, seed {report['seed']}")
    fig.tight_layout()
    fig.savefig(target, format="png", dpi=90, metadata={"Software": None})
    plt.close(fig)


def _nan(values: list) -> list:
    return [float("nan") if v is None else v for v in values]
