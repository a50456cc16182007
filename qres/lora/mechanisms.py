"""The hierarchy's mechanisms as pure integer functions (Q16.16 where a value is a real).

Each takes and returns Python ints or int64/int32 numpy arrays, and rounds only by the one
rule, ``floor(n / d + 1/2)`` (:func:`qres.robust.aggregate.div_round`), so every node computes
the same bits. docs/lora.md gives each formula and why it is there.
"""

from __future__ import annotations

from typing import Any

from qres.fixed.q16 import ONE, Q_MAX
from qres.robust.aggregate import div_round


def tanh_q16(x: int) -> int:
    """tanh(x) for Q16.16 ``x >= 0``: ``(1 - e) / (1 + e)`` with ``e = exp(-2x)`` by the
    integer exp of the fixed-point core; 0 at 0, rising to ONE."""
    from qres import fixed

    if x <= 0:
        return 0
    e = fixed.q_exp(max(-(12 * ONE), -2 * min(x, 8 * ONE)))
    return div_round((ONE - e) * ONE, ONE + e)


def effective_inertia(base_q: int, density_q: int, k_q: int) -> int:
    """``base + (1 - base) * tanh(density / k)`` in Q16.16, below ONE.

    A layer that many nodes (or many ticks) touch resists each update more: its parameters
    carry consensus that one update should not overturn."""
    ratio = div_round(max(density_q, 0) * ONE, max(k_q, 1))
    value = base_q + div_round((ONE - base_q) * tanh_q16(min(ratio, Q_MAX)), ONE)
    return min(value, ONE - 1)


def decay_toward(values: Any, initial: Any, screened: Any, active_q: int, free_q: int):
    """Parameters moved toward their initial values: ``v - round((v - v0) * rate)``, with
    ``rate = active_q`` where ``screened`` and ``free_q`` elsewhere (int32)."""
    import numpy as np

    v = np.asarray(values, dtype=np.int64)
    gap = v - np.asarray(initial, dtype=np.int64)
    rate = np.where(np.asarray(screened, dtype=bool), active_q, free_q)
    return (v - div_round(gap * rate, ONE)).astype(np.int32)


def update_trace(trace: Any, active: Any, shift: int):
    """Activity traces (Q16.16): ``t += round((ONE * active - t) / 2**shift)`` (int32)."""
    import numpy as np

    t = np.asarray(trace, dtype=np.int64)
    target = np.where(np.asarray(active, dtype=bool), ONE, 0)
    return (t + div_round(target - t, 1 << shift)).astype(np.int32)


def update_spread(delta: Any) -> int:
    """How evenly an update spreads over its parameters, Q16.16 in [0, ONE]:
    ``(sum |d|)**2 / (n * sum d**2)``, the exponential of the collision (Renyi-2) entropy of
    the shares ``|d_i| / sum |d|`` divided by n. ONE: all parameters move alike; 1/n: one
    moves. 0 for an empty or zero update. Exact in Python integers."""
    import numpy as np

    d = np.asarray(delta, dtype=np.int64).reshape(-1)
    if d.size == 0:
        return 0
    l1 = int(np.abs(d).sum())
    l2 = sum(int(v) * int(v) for v in d.tolist())
    if l2 == 0:
        return 0
    return min(ONE, div_round(l1 * l1 * ONE, d.size * l2))


def gate(delta: Any, threshold_q: int):
    """The update with every component below ``threshold * mean |delta|`` zeroed (int32)."""
    import numpy as np

    d = np.asarray(delta, dtype=np.int64)
    if d.size == 0:
        return d.astype(np.int32)
    total = int(np.abs(d).sum())
    # |d_i| < threshold * total / n  <=>  |d_i| * n * ONE < threshold * total
    keep = np.abs(d) * (d.size * ONE) >= threshold_q * total
    return np.where(keep, d, 0).astype(np.int32)


def homeostasis(threshold_q: int, spread_q: int, low_q: int, high_q: int, step_q: int, max_q: int):
    """The next screening threshold: up by ``step`` when the spread is above the band, down
    when below, kept in [0, max]."""
    if spread_q > high_q:
        threshold_q += step_q
    elif spread_q < low_q:
        threshold_q -= step_q
    return max(0, min(max_q, threshold_q))


def autocorrelation(series: Any, lags: int) -> int:
    """The largest normalised autocorrelation of ``series`` over lags 1..``lags``, Q16.16:
    ``max_l sum_t (s_t - m)(s_{t+l} - m) / sum_t (s_t - m)**2`` with the mean ``m`` kept as
    the exact fraction ``S / n`` (everything scaled by n). 0 for a constant series."""
    import numpy as np

    s = np.asarray(series, dtype=np.int64).reshape(-1)
    n = s.size
    if n < 2:
        return 0
    centred = [int(v) * n - int(s.sum()) for v in s.tolist()]  # n * (s_t - m), exact
    energy = sum(c * c for c in centred)
    if energy == 0:
        return 0
    best = -ONE
    for lag in range(1, min(lags, n - 1) + 1):
        cov = sum(centred[t] * centred[t + lag] for t in range(n - lag))
        best = max(best, div_round(cov * ONE, energy))
    return best


def cosine_q16(a: Any, b: Any) -> int:
    """``<a, b> / (|a| |b|)`` in Q16.16 (0 when either is zero), exact integer square roots."""
    import math

    import numpy as np

    x = [int(v) for v in np.asarray(a, dtype=np.int64).reshape(-1).tolist()]
    y = [int(v) for v in np.asarray(b, dtype=np.int64).reshape(-1).tolist()]
    dot = sum(p * q for p, q in zip(x, y, strict=True))
    norm = math.isqrt(sum(p * p for p in x) * sum(q * q for q in y))
    if norm == 0:
        return 0
    return max(-ONE, min(ONE, div_round(dot * ONE, norm)))


def resonance_factor(cos_h: int, cos_v: int, gain_h: int, gain_v: int, cap_q: int) -> int:
    """The factor (Q16.16) an update is scaled by: ``(1 + gh*cos_h) * (1 + gv*cos_v)``, capped
    at ``cap``: aligned updates grow, opposed ones shrink, never beyond the cap."""
    fh = ONE + div_round(gain_h * cos_h, ONE)
    fv = ONE + div_round(gain_v * cos_v, ONE)
    return max(0, min(cap_q, div_round(fh * fv, ONE)))


def scale(delta: Any, factor_q: int):
    """``round(delta * factor)`` (int32, saturated)."""
    import numpy as np

    from qres.fixed.q16 import saturate

    return saturate(div_round(np.asarray(delta, dtype=np.int64) * factor_q, ONE))
