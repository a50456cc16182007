"""The learned complexity estimator: one logistic regression per tier, in numpy.

For each tier, ``P(an answer from this tier passes validation | features)`` is
``sigmoid(w . z + b)`` with ``z = (log1p(features) - mean) / std``. Training reads decision
logs (JSON lines, docs/router.md): every attempt of a tier is one example, labelled by whether
its answer passed (or, when the log line carries ``"correct"``, by that). Full-batch gradient
descent on the mean log loss with an L2 penalty, from zero weights: the same logs give the
same model on every machine.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import attrs

from qres.kernel.errors import QresError
from qres.llm.features import FEATURES

MODEL_VERSION = 1
#: Longest decision-log line read (a malformed giant line is refused, not loaded).
MAX_LOG_LINE = 1 << 16


@attrs.frozen
class TierModel:
    """Weights of one tier's logistic regression (in :data:`FEATURES` order)."""

    weights: tuple[float, ...]
    bias: float
    examples: int


@attrs.frozen
class LearnedModel:
    """The per-tier models and the feature scaling they share."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    tiers: dict

    def probabilities(self, features: dict[str, float]) -> dict[str, float]:
        """Predicted success probability of every tier with a model."""
        import numpy as np

        z = (np.log1p([features[f] for f in FEATURES]) - self.mean) / self.std
        out = {}
        for name, m in self.tiers.items():
            out[name] = float(1.0 / (1.0 + np.exp(-(np.dot(m.weights, z) + m.bias))))
        return out

    def to_json(self) -> str:
        """The model file's text."""
        body = {
            "version": MODEL_VERSION,
            "features": list(FEATURES),
            "mean": list(self.mean),
            "std": list(self.std),
            "tiers": {k: attrs.asdict(v) for k, v in sorted(self.tiers.items())},
        }
        return json.dumps(body, indent=1) + "\n"


def load_model(path: str | Path) -> LearnedModel:
    """Read a model file written by ``qres llm router train``."""
    try:
        body = json.loads(Path(path).read_text())
        if body.get("version") != MODEL_VERSION or body.get("features") != list(FEATURES):
            raise ValueError("made for another version or feature set; retrain")
        tiers = {
            name: TierModel(tuple(map(float, t["weights"])), float(t["bias"]), int(t["examples"]))
            for name, t in body["tiers"].items()
        }
        if any(len(t.weights) != len(FEATURES) for t in tiers.values()):
            raise ValueError("weights of the wrong length")
        return LearnedModel(tuple(body["mean"]), tuple(body["std"]), tiers)
    except OSError as exc:
        raise QresError(f"router model {path}: {exc.strerror or exc}; train one first") from exc
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise QresError(f"router model {path}: not a router model ({exc})") from exc


def read_examples(lines: Iterable[str], where: str) -> list[tuple[list[float], str, bool]]:
    """``(features, tier, ok)`` per attempt in decision-log ``lines``."""
    out = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if len(line) > MAX_LOG_LINE:
            raise QresError(f"{where}, line {number}: longer than {MAX_LOG_LINE} characters")
        try:
            record = json.loads(line)
            features = [float(record["features"][f]) for f in FEATURES]
            for attempt in record["attempts"]:
                ok = attempt.get("correct", attempt["ok"])
                if attempt.get("skipped"):
                    continue
                out.append((features, str(attempt["tier"]), bool(ok)))
        except (ValueError, KeyError, TypeError) as exc:
            raise QresError(
                f"{where}, line {number}: not a decision-log record ({exc}); pass a log "
                "written by the router"
            ) from exc
    return out


def train(
    examples: list[tuple[list[float], str, bool]], l2: float = 1e-2, steps: int = 500
) -> LearnedModel:
    """Fit one logistic regression per tier (see the module docstring)."""
    import numpy as np

    if not examples:
        raise QresError("no attempts in the logs; route some prompts with a log first")
    x = np.log1p(np.array([e[0] for e in examples], dtype=np.float64).clip(min=0))
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    std[std == 0] = 1.0
    z = (x - mean) / std
    tiers = {}
    for name in sorted({e[1] for e in examples}):
        rows = np.array([e[1] == name for e in examples])
        zt, y = z[rows], np.array([float(e[2]) for e, r in zip(examples, rows, strict=True) if r])
        w, b = np.zeros(z.shape[1]), 0.0
        for _ in range(steps):
            p = 1.0 / (1.0 + np.exp(-(zt @ w + b)))
            w -= 0.5 * (zt.T @ (p - y) / len(y) + l2 * w)
            b -= 0.5 * float(np.mean(p - y))
        tiers[name] = TierModel(tuple(map(float, w)), float(b), int(len(y)))
    return LearnedModel(tuple(map(float, mean)), tuple(map(float, std)), tiers)
