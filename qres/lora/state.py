"""Saved hierarchy states (:meth:`qres.lora.personal.Personal.to_state`): reading them back
checked, their report rows, and the PNG of layer contributions over time (``qres lora show``).
"""

from __future__ import annotations

import json
import math
from typing import Any

from qres.kernel.errors import QresError
from qres.kinds.lora import ROLES
from qres.lora.health import DEGRADED, HEALTHY
from qres.lora.personal import STATE_FORMAT

#: Largest state file read (a state of a 4096-wide model with long traces fits easily).
MAX_STATE_BYTES = 64 << 20
_LAYER_KEYS = {
    "rank": int,
    "shared": bool,
    "dense": bool,
    "inertia": (int, float),
    "effective_inertia": (int, float),
    "drift": (int, float),
    "threshold": (int, float),
    "updates": int,
}


def load(path: str) -> dict:
    """The state in ``path``, checked; a :class:`QresError` naming what is wrong otherwise."""
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_STATE_BYTES + 1)
    except OSError as exc:
        raise QresError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    if len(raw) > MAX_STATE_BYTES:
        raise QresError(f"{path}: larger than {MAX_STATE_BYTES >> 20} MiB; not a lora state")
    try:
        state = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise QresError(f"{path}: not JSON ({exc}); give a state written by qres.lora") from exc
    check(state, path)
    return state


def check(state: Any, where: str) -> None:
    """Raise a one-line :class:`QresError` unless ``state`` has the saved-state shape."""

    def need(ok: bool, what: str) -> None:
        if not ok:
            raise QresError(
                f"{where}: not a lora state ({what}); give a state written by qres.lora"
            )

    need(isinstance(state, dict), "not a JSON object")
    need(state.get("format") == STATE_FORMAT, f"format is not {STATE_FORMAT!r}")
    summary = state.get("summary")
    need(isinstance(summary, dict), "no summary")
    layers = summary.get("layers")
    need(isinstance(layers, dict) and list(layers) == list(ROLES), "layers are not the five roles")
    for role, layer in layers.items():
        need(isinstance(layer, dict), f"layer {role} is not an object")
        for key, kind in _LAYER_KEYS.items():
            value = layer.get(key)
            good = isinstance(value, kind) and (key in ("shared", "dense") or _finite(value))
            need(good and (kind is bool or not isinstance(value, bool)), f"{role}.{key}")
    need(_count(summary.get("tick")) and _count(summary.get("migrations")), "tick, migrations")
    queues = summary.get("queues")
    need(isinstance(queues, dict) and all(map(_count, queues.values())), "queues")
    health = summary.get("health")
    need(isinstance(health, dict) and health.get("status") in (HEALTHY, DEGRADED), "health")
    reasons = health.get("reasons")
    need(isinstance(reasons, list) and all(isinstance(r, str) for r in reasons), "reasons")
    need(state.get("depth") in ROLES, "depth")
    scores = state.get("scores")
    need(isinstance(scores, list) and len(scores) == len(ROLES), "scores")
    need(all(s is None or (_finite(s) and not isinstance(s, bool)) for s in scores), "scores")
    trace = state.get("trace")
    need(isinstance(trace, list), "trace")
    for row in trace:
        need(isinstance(row, list) and len(row) == len(ROLES) and all(map(_count, row)), "trace")
    depths = state.get("depths")
    need(isinstance(depths, list) and len(depths) == len(trace), "depths")
    need(all(_count(d) and d < len(ROLES) for d in depths), "depths")


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def report(state: dict) -> dict:
    """The JSON report: per layer rank, inertia, drift, threshold, updates; migrations,
    queues, health; the depth the node predicts with and each depth's score; rounds."""
    summary = state["summary"]
    return {
        "tick": summary["tick"],
        "rounds": len(state["trace"]),
        "depth": state["depth"],
        "scores": dict(zip(ROLES, state["scores"], strict=True)),
        "layers": summary["layers"],
        "migrations": summary["migrations"],
        "queues": summary["queues"],
        "health": summary["health"],
    }


def layer_rows(state: dict) -> list[list[str]]:
    """One row per layer for the text table."""
    rows = []
    for role, layer in state["summary"]["layers"].items():
        score = state["scores"][ROLES.index(role)]
        rows.append(
            [
                role + (" *" if role == state["depth"] else ""),
                "shared" if layer["shared"] else "node",
                f"{layer['rank']}{' dense' if layer['dense'] else ''}",
                f"{layer['inertia']:.3f} / {layer['effective_inertia']:.3f}",
                f"{layer['drift']:.3f}",
                f"{layer['threshold']:.3f}",
                str(layer["updates"]),
                "-" if score is None else f"{score:.4f}",
            ]
        )
    return rows


def plot(state: dict, target: Any, title: str) -> None:
    """Two panels: each layer's contribution (sum of |delta|) per round, and the depth the
    node predicted with. ``target``: a path or binary file object; PNG."""
    from qres.fixed.q16 import ONE
    from qres.kernel.plotting import pyplot

    plt = pyplot()
    trace = state["trace"]
    rounds = list(range(len(trace)))
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6.5), sharex=True)
    for i, role in enumerate(ROLES):
        top.plot(rounds, [row[i] / ONE for row in trace], label=role)
    top.set_title("layer contributions: sum of |delta| per layer")
    top.legend(loc="upper left")
    bottom.step(rounds, state["depths"], where="post", color="tab:gray")
    bottom.set_yticks(range(len(ROLES)), ROLES)
    bottom.set_title("depth predicted with")
    bottom.set_xlabel("round")
    health = state["summary"]["health"]["status"]
    fig.suptitle(f"{title}: {health}, {state['summary']['migrations']} migrations")
    fig.tight_layout()
    fig.savefig(target, format="png", dpi=90, metadata={"Software": None})
    plt.close(fig)
