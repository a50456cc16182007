"""The evidence reputations act on: tests that single out updates in a round.

* :func:`grubbs_outliers` on :func:`update_statistic`: the iterated two-sided Grubbs test
  (significance ``alpha``) on the log of each update's Euclidean distance to the
  coordinate-wise median. Critical values use Student's t quantile, computed here from the
  regularised incomplete beta function (continued fraction) and bisection; pure Python
  floats, so the same on every machine. It catches lone outliers (a group sending alike
  inflates the standard deviation and masks itself).
* :func:`robust_outliers`: the same significance as Grubbs on robust moments: each value's
  distance to the median of the *other* values over their scaled MAD. Attackers cannot
  inflate the scale to mask themselves, nor shrink it to push honest nodes out, while they
  are fewer than half; the node under test never counts in its own reference.
* :func:`tightness`: each update's distance to its ``k``-th nearest other over the round's
  median of that distance; near 0 for members of a group sending (almost) the same vector.
* :func:`far_or_grouped`: the exact integer test of the aggregators' reputation tracker, far
  from a robust reference, or one of at least ``group`` rows at (almost) the same distance
  from it.

What a flag costs is decided by the rules of :mod:`qres.robust.reputation`, not here.
"""

from __future__ import annotations

import math
from fractions import Fraction
from functools import lru_cache
from typing import Any


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularised incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 400):
        m2 = 2 * m
        num = m * (b - m) * x / ((a + m2 - 1.0) * (a + m2))
        d = 1.0 + num * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + num / c if abs(1.0 + num / c) > tiny else tiny
        h *= d * c
        num = -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1.0))
        d = 1.0 + num * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + num / c if abs(1.0 + num / c) > tiny else tiny
        step = d * c
        h *= step
        if abs(step - 1.0) < 1e-15:
            break
    return h


def incomplete_beta(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b), for x in [0, 1]."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    front = math.exp(log_front)
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_sf(t: float, df: float) -> float:
    """Upper tail P(T > t) of Student's t with ``df`` degrees of freedom (t >= 0)."""
    return 0.5 * incomplete_beta(df / 2.0, 0.5, df / (df + t * t))


def t_quantile_upper(p: float, df: float) -> float:
    """The t with P(T > t) = p (0 < p < 0.5), by bisection on :func:`t_sf`."""
    lo, hi = 0.0, 1.0
    while t_sf(hi, df) > p:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_sf(mid, df) > p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * hi:
            break
    return 0.5 * (lo + hi)


@lru_cache(maxsize=4096)
def grubbs_critical(n: int, alpha: float) -> float:
    """Two-sided Grubbs critical value G for ``n`` values at significance ``alpha`` (n >= 3)."""
    t = t_quantile_upper(alpha / (2 * n), n - 2)
    return (n - 1) / math.sqrt(n) * math.sqrt(t * t / (n - 2 + t * t))


def grubbs_outliers(values: Any, alpha: float, max_outliers: int | None = None) -> Any:
    """Indices flagged by the iterated two-sided Grubbs test (most extreme first removed).

    Stops at the first value that is not significant, at ``max_outliers``, or when fewer
    than 3 values remain. Ties in the extreme value go to the lowest index.
    """
    import numpy as np

    v = np.asarray(values, dtype=np.float64)
    keep = np.ones(v.shape[0], bool)
    flagged: list[int] = []
    limit = v.shape[0] - 3 if max_outliers is None else max_outliers
    while len(flagged) < limit and keep.sum() >= 3:
        idx = np.flatnonzero(keep)
        x = v[idx]
        mean = x.mean()
        sd = x.std(ddof=1)
        if not sd > 0:
            break
        dev = np.abs(x - mean)
        j = int(np.argmax(dev))
        if dev[j] / sd <= grubbs_critical(int(idx.shape[0]), alpha):
            break
        flagged.append(int(idx[j]))
        keep[idx[j]] = False
    return np.array(sorted(flagged), dtype=np.int64)


def loo_median(values: Any) -> Any:
    """Per value: the median of all the *other* values (float64; n >= 2)."""
    import numpy as np

    v = np.asarray(values, dtype=np.float64)
    n = v.shape[0]
    order = np.argsort(v, kind="stable")
    s = v[order]
    rank = np.empty(n, np.int64)
    rank[order] = np.arange(n)
    lo, hi = (n - 2) // 2, (n - 1) // 2  # the middle of the n - 1 others
    return (s[lo + (lo >= rank)] + s[hi + (hi >= rank)]) / 2.0


#: MAD of a normal sample times this estimates its standard deviation.
MAD_TO_SD = 1.482602218505602


def robust_outliers(values: Any, alpha: float) -> Any:
    """Indices whose distance to the median of the other values exceeds Grubbs' critical
    value (``n``, ``alpha``) in units of the others' scaled MAD (median absolute deviation
    from that median). The same significance as :func:`grubbs_outliers` for normal data,
    with moments a minority cannot move; needs at least 3 values, else flags none."""
    import numpy as np

    v = np.asarray(values, dtype=np.float64)
    n = v.shape[0]
    if n < 3:
        return np.zeros(0, np.int64)
    med = loo_median(v)
    mad = np.empty(n)
    for m in np.unique(med):  # at most three distinct medians of the others
        sel = med == m
        mad[sel] = loo_median(np.abs(v - m))[sel]
    limit = grubbs_critical(n, alpha) * MAD_TO_SD * mad
    return np.flatnonzero((mad > 0) & (np.abs(v - med) > limit)).astype(np.int64)


def update_statistic(updates: Any) -> Any:
    """Per update: log(1 + Euclidean distance to the coordinate-wise median), float64."""
    import numpy as np

    x = updates.astype(np.float64)
    med = np.median(x, axis=0)
    return np.log1p(np.sqrt(((x - med) ** 2).sum(axis=1)))


def tightness(updates: Any, k: int, rng: Any, sample: int = 1024, scale_rows: Any = None) -> Any:
    """Per update: distance to its ``k``-th nearest other update (in a seeded reference sample
    of at most ``sample`` updates) over the median of that quantity among ``scale_rows``
    (bool mask; all rows by default: pass the unbanned ones, so that banned senders cannot
    shrink the scale). Near zero for members of a group sending (almost) the same vector;
    about 1 for independent updates."""
    import numpy as np

    n = updates.shape[0]
    if n <= k:
        return np.ones(n)
    # Centre the integers on the coordinate-wise median and clip them to +-2**bits so that
    # every partial sum of the float64 products below is an integer under 2**53: the matrix
    # product is then exact whatever order BLAS adds in, and the flags the same on every
    # machine. Clipping only shortens distances between rows that are far apart anyway.
    from qres.robust.aggregate import median_columns

    bits = max(1, (51 - max(updates.shape[1], 1).bit_length()) // 2)
    lim = (1 << bits) - 1
    xi = updates.astype(np.int64) - median_columns(updates).astype(np.int64)
    x = np.clip(xi, -lim, lim).astype(np.float64)
    ref = np.arange(n) if n <= sample else np.sort(rng.choice(n, sample, replace=False))
    r = x[ref]
    rn = (r * r).sum(axis=1)
    out = np.empty(n)
    for s in range(0, n, 1024):
        b = x[s : s + 1024]
        d2 = (b * b).sum(axis=1)[:, None] + rn[None, :] - 2.0 * (b @ r.T)
        np.maximum(d2, 0.0, out=d2)
        # the update itself, when in the reference sample, is at distance 0: skip one zero
        self_in = np.isin(np.arange(s, s + b.shape[0]), ref)
        kk = np.where(self_in, k, k - 1)
        part = np.partition(d2, min(k, d2.shape[1] - 1), axis=1)
        out[s : s + b.shape[0]] = np.sqrt(part[np.arange(b.shape[0]), kk])
    ref_rows = out if scale_rows is None or not np.any(scale_rows) else out[scale_rows]
    med = float(np.median(ref_rows))
    return out / med if med > 0 else np.ones(n)


def far_or_grouped(x: Any, reference: Any, far2: Fraction, group: int, near_bits: int) -> Any:
    """Which rows of ``x`` are far from ``reference`` or members of a coordinated group (bool):
    :func:`far_and_grouped` combined."""
    far, grouped = far_and_grouped(x, reference, far2, group, near_bits)
    return far | grouped


def far_and_grouped(x: Any, reference: Any, far2: Fraction, group: int, near_bits: int) -> Any:
    """Which rows of ``x`` are far from ``reference``, and which are members of a coordinated
    group (two bool arrays).

    * **far**: the row's squared distance to ``reference`` exceeds ``far2`` times the median
      squared distance of the rows not already in a group (the outlier rule of reputation
      defences, e.g. Rodríguez-Barroso et al., FGCS 2022); the scale comes from those rows so
      that a cartel parked next to the reference cannot shrink it and push honest rows past
      the limit;
    * **grouped**: at least ``group`` rows (itself included) lie within ``2**-near_bits`` of
      its own distance to the reference. Nodes training on their own data do not send the
      same vector in numbers; a cartel that copies one forged vector does (the similarity
      signal of FoolsGold, Fung, Yoon, Beschastnikh, RAID 2020). Rows equal to the reference
      are not tested (nothing to tell apart).

    Every comparison is exact integer arithmetic on exact squared distances, so the flags are
    the same on every machine and follow the rows in any order. A cartel that adds
    independent noise large enough to look like separate nodes is not grouped.
    """
    import numpy as np

    from qres.robust.aggregate import close_counts, sq_dists_to

    m = x.shape[0]
    dref = sq_dists_to(x, reference)
    grouped = [False] * m
    if m >= group:
        # within 2**-near_bits of the row's own distance: squared, shift by 2 * near_bits
        counts = close_counts(x, [d >> (2 * near_bits) for d in dref])
        grouped = [d > 0 and c + 1 >= group for d, c in zip(dref, counts, strict=True)]
    scale = sorted(d for d, g in zip(dref, grouped, strict=True) if not g) or sorted(dref)
    med = max(scale[(len(scale) - 1) // 2], 1)
    num, den = far2.numerator, far2.denominator
    far = np.array([d * den > num * med for d in dref], bool)
    return far, np.array(grouped, bool)
