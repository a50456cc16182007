"""Attacks that tune themselves: optimal IPM and ALIE (scale searched against a given
aggregator), MinMax, and a slow coordinated drift.

Statistics and searches run in float64 on the honest rows; the forged rows are rounded to
Q16.16 by the rule and saturated (:func:`qres.kinds.attack.from_real`).
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from qres.kernel.config import InvalidSetting, Location, integer, number
from qres.kernel.hookspecs import hookimpl
from qres.kinds.attack import Attack, from_real, honest_stats


def _aggregator_table(_inst, attribute, value):
    if not isinstance(value, Mapping) or not isinstance(value.get("use"), str):
        raise InvalidSetting(attribute.name, value, 'a table with use = "<aggregator>"')


def _as_table(value):
    return dict(value) if isinstance(value, Mapping) else value


@attrs.frozen
class OptimalConfig:
    """Settings of a scale search against an aggregator."""

    #: The aggregator the attack tries to displace.
    aggregator: dict = attrs.field(
        factory=lambda: {"use": "trimmed-mean"}, validator=_aggregator_table, converter=_as_table
    )
    #: Largest scale tried; the grid is geometric from ``max_scale / 2**(steps-1)``.
    max_scale: float = attrs.field(default=20.0, validator=number(1e-6, 1e6))
    #: Number of scales tried.
    steps: int = attrs.field(default=12, validator=integer(2, 64))


class _Optimal(Attack):
    """Try a geometric grid of scales; keep the one whose forged rows move the aggregator's
    output farthest (Euclidean) from the honest mean. Ties keep the smaller scale."""

    Config = OptimalConfig

    def __init__(self, config=None):
        from qres.kernel import plugins

        super().__init__(config)
        self.aggregator = plugins.create(
            "aggregator", self.config.aggregator, Location(f"<{self.name}>").child("aggregator")
        )

    def _row(self, mean, std, scale):
        raise NotImplementedError(f"attack {self.name!r} does not implement _row")

    def _forge(self, honest, f, rng):
        import numpy as np

        from qres.kernel.errors import QresError

        mean, std = honest_stats(honest)
        steps = self.config.steps
        best, best_gap = None, -1.0
        for i in range(steps):
            scale = self.config.max_scale / 2.0 ** (steps - 1 - i)
            forged = np.repeat(self._row(mean, std, scale)[None, :], f, axis=0)
            try:
                out = self.aggregator.aggregate(np.vstack([honest, forged]), f=f, rng=rng)
            except QresError:
                # The aggregator refuses this f for this n: nothing to optimise against.
                return forged if best is None else best
            gap = float(np.linalg.norm(out.astype(np.float64) - mean))
            if gap > best_gap:
                best, best_gap = forged, gap
        return best


class OptimalIpm(_Optimal):
    """IPM with the epsilon searched to displace the given aggregator most.

    Xie, Koyejo, Gupta, "Fall of Empires: Breaking Byzantine-tolerant SGD by Inner Product
    Manipulation", UAI 2019; the optimised variant as in Allouah et al., "Fixing by Mixing",
    AISTATS 2023.
    """

    name = "optimal-ipm"

    def _row(self, mean, std, scale):
        return from_real(-scale * mean)


class OptimalAlie(_Optimal):
    """ALIE with z searched to displace the given aggregator most.

    Baruch, Baruch, Goldberg, "A Little Is Enough", NeurIPS 2019; the optimised variant as
    in Allouah et al., "Fixing by Mixing", AISTATS 2023.
    """

    name = "optimal-alie"

    def _row(self, mean, std, scale):
        return from_real(mean - scale * std)


@attrs.frozen
class MinMaxConfig:
    """Settings of MinMax."""

    #: Perturbation direction: "std" (minus the coordinate std), "unit" (minus the unit mean)
    #: or "sign" (minus the sign of the mean).
    direction: str = attrs.field(default="std")

    @direction.validator
    def _check(self, attribute, value):
        if value not in ("std", "unit", "sign"):
            raise InvalidSetting(attribute.name, value, "one of 'std', 'unit', 'sign'")


class MinMax(Attack):
    """MinMax: ``mean + gamma * p`` with the largest gamma (bisection) such that the forged
    row's largest distance to an honest row is no more than the largest honest-honest distance.

    Shejwalkar, Houmansadr, "Manipulating the Byzantine: Optimizing Model Poisoning Attacks
    and Defenses for Federated Learning", NDSS 2021.
    """

    name = "minmax"
    Config = MinMaxConfig

    def _forge(self, honest, f, rng):
        import numpy as np

        h = honest.astype(np.float64)
        mean, std = honest_stats(honest)
        kind = self.config.direction
        if kind == "std":
            p = -std
        elif kind == "unit":
            norm = np.linalg.norm(mean)
            p = -mean / norm if norm > 0 else np.zeros_like(mean)
        else:
            p = -np.sign(mean)
        sq = (h * h).sum(axis=1)
        pair = sq[:, None] + sq[None, :] - 2.0 * (h @ h.T)
        limit = float(np.sqrt(max(pair.max(), 0.0)))

        def reach(gamma):
            return float(np.linalg.norm(h - (mean + gamma * p), axis=1).max())

        lo, hi = 0.0, 1.0
        while reach(hi) <= limit and hi < 1e12 and np.any(p):
            lo, hi = hi, hi * 2.0
        for _ in range(50):  # bisection to well below one Q16.16 unit
            mid = (lo + hi) / 2.0
            if reach(mid) <= limit:
                lo = mid
            else:
                hi = mid
        return np.repeat(from_real(mean + lo * p)[None, :], f, axis=0)


@attrs.frozen
class DriftConfig:
    """Settings of the coordinated drift."""

    #: Shift per coordinate, in honest standard deviations (small: stay inside the spread).
    strength: float = attrs.field(default=0.5, validator=number(0.0, 100.0))
    #: Seed of the fixed drift direction, shared by the cartel and constant across rounds.
    direction_seed: int = attrs.field(default=0, validator=integer(0, (1 << 63) - 1))


class Drift(Attack):
    """Slow coordinated drift: the cartel sends ``mean + strength * std * u`` with one fixed
    random sign vector ``u``, so each round stays inside the honest spread but the bias
    always points the same way and accumulates over rounds.

    After the "small but persistent" perturbations of Baruch et al., NeurIPS 2019, made
    consistent across rounds (a fixed direction seeded by ``direction_seed``, not by the
    per-round generator). Each forged row adds its own small jitter (a tenth of the shift)
    from the generator passed in, so the rows are not exact copies.
    """

    name = "drift"
    Config = DriftConfig

    def _forge(self, honest, f, rng):
        import numpy as np

        mean, std = honest_stats(honest)
        d = honest.shape[1]
        u = np.random.default_rng(self.config.direction_seed).choice([-1.0, 1.0], size=d)
        shift = self.config.strength * std * u
        jitter = rng.uniform(-0.1, 0.1, (f, d)) * np.abs(shift)
        return from_real(mean[None, :] + shift[None, :] + jitter)


@hookimpl
def register_attacks(register):
    """Register the optimised and adaptive attacks."""
    for cls in (OptimalIpm, OptimalAlie, MinMax, Drift):
        register(cls)
