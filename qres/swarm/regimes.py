"""Regimes: Calm -> PreStorm -> Storm -> Calm, per node, from the entropy of its prediction
error, with hysteresis.

A node's *entropy* in a round is its mean ``|actual - predicted| / range`` over its window
(``range`` is the peak-to-peak of its first window), smoothed by a 3-point moving average over
the rounds it was awake; the *derivative* is the change of that average from the previous
round. Transitions (thresholds and confirmation counts from the profile):

* Calm -> PreStorm: derivative > ``derivative_threshold`` (0.15) on ``confirm_prestorm`` (2)
  consecutive observations.
* PreStorm -> Storm: entropy > ``entropy_threshold`` (0.45) on ``confirm_storm`` (3)
  consecutive observations. PreStorm -> Calm: entropy < ``recovery_threshold`` (0.30) on
  ``confirm_calm`` (5) consecutive observations (a false start).
* Storm -> Calm: at least ``storm_min_rounds`` (50) rounds in Storm and entropy <
  ``recovery_threshold`` on ``confirm_calm`` (5) consecutive observations.
* A node whose energy pool is below the forced-calm level is put in Calm at once.

Everything is vectorised over nodes; a round updates only the nodes that observed (were
awake).
"""

from __future__ import annotations

from typing import Any

CALM, PRESTORM, STORM = 0, 1, 2
NAMES = ("calm", "prestorm", "storm")


def window_range(windows: Any) -> Any:
    """Each window's peak-to-peak, at least 1 (float64 ``(n,)``): the range a node's entropy
    is measured against, taken once, from its first window."""
    import numpy as np

    x = np.asarray(windows)
    return np.maximum((x.max(axis=1) - x.min(axis=1)).astype(np.float64), 1.0)


class RegimeTracker:
    """The regime state machine of every node (arrays of length ``n``)."""

    def __init__(self, n: int, settings: Any):
        import numpy as np

        self.s = settings
        self.regime = np.zeros(n, np.int8)
        self.history = np.full((n, 3), np.nan)  # last three raw entropies, newest last
        self.smoothed = np.full(n, np.nan)
        self.derivative = np.zeros(n)
        self.up = np.zeros(n, np.int32)  # consecutive derivative alarms
        self.high = np.zeros(n, np.int32)  # consecutive entropy alarms
        self.low = np.zeros(n, np.int32)  # consecutive recovery observations
        self.age = np.zeros(n, np.int32)  # rounds spent in Storm

    def observe(self, nodes: Any, entropy: Any) -> None:
        """Feed the raw entropies of ``nodes`` for this round and step their state machines."""
        import numpy as np

        s = self.s
        h = self.history[nodes]
        h = np.concatenate([h[:, 1:], np.asarray(entropy, np.float64)[:, None]], axis=1)
        self.history[nodes] = h
        seen = np.isfinite(h)
        # The moving average of the observations so far (up to three).
        avg = np.where(seen, h, 0.0).sum(axis=1) / np.maximum(seen.sum(axis=1), 1)
        prev = self.smoothed[nodes]
        deriv = np.where(np.isfinite(prev), avg - prev, 0.0)
        self.smoothed[nodes] = avg
        self.derivative[nodes] = deriv
        reg = self.regime[nodes]
        up = np.where(deriv > s.derivative_threshold, self.up[nodes] + 1, 0)
        high = np.where(avg > s.entropy_threshold, self.high[nodes] + 1, 0)
        low = np.where(avg < s.recovery_threshold, self.low[nodes] + 1, 0)
        age = np.where(reg == STORM, self.age[nodes] + 1, 0)
        new = reg.copy()
        calm, pre, storm = reg == CALM, reg == PRESTORM, reg == STORM
        new[calm & (up >= s.confirm_prestorm)] = PRESTORM
        new[pre & (high >= s.confirm_storm)] = STORM
        new[pre & (low >= s.confirm_calm)] = CALM
        new[storm & (age >= s.storm_min_rounds) & (low >= s.confirm_calm)] = CALM
        changed = new != reg
        # A transition starts the next state's counts afresh.
        up[changed] = 0
        high[changed] = 0
        low[changed] = 0
        age[changed] = 0
        self.regime[nodes] = new
        self.up[nodes], self.high[nodes], self.low[nodes], self.age[nodes] = up, high, low, age

    def observe_errors(self, nodes: Any, errors: Any, span_range: Any, low: Any) -> Any:
        """One round's observation, as every node makes it (simulated or real): the entropy
        of ``nodes`` is their prediction error before the round (``errors``: the model they
        held, on the round's window, by :func:`qres.learning.task.prediction_error`) over
        their range (:func:`window_range`), capped at 1; then the nodes of the mask ``low``
        (energy below the forced-calm level) are put in Calm. Returns the entropies."""
        import numpy as np

        from qres.learning.task import SPAN

        entropy = np.minimum(np.asarray(errors, np.float64) * SPAN / span_range, 1.0)
        self.observe(nodes, entropy)
        self.force_calm(low)
        return entropy

    def force_calm(self, mask: Any) -> None:
        """Put the nodes of ``mask`` in Calm (energy below the forced-calm level)."""
        hit = mask & (self.regime != CALM)
        self.regime[hit] = CALM
        self.up[hit] = self.high[hit] = self.low[hit] = self.age[hit] = 0

    def counts(self, among: Any = None) -> dict[str, int]:
        """How many nodes (of the mask ``among``, default all) are in each regime."""
        import numpy as np

        reg = self.regime if among is None else self.regime[among]
        return {name: int(np.count_nonzero(reg == i)) for i, name in enumerate(NAMES)}
