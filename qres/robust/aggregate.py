"""Stateless exact arithmetic of robust aggregation, shared by the aggregator plugins.

Everything here is a pure function of its integer inputs (int32 Q16.16 rows, int64 sums,
Python ints where int64 could overflow): rounding (:func:`div_round`, :func:`to_q`), the
canonical row order, column sums and means, coordinate-wise medians, exact pairwise squared
distances (:class:`DistancePlan`, :func:`distance_blocks`), Krum scores and distances to a
vector. The rules themselves (their classes and settings) are plugins of the aggregator kind
(:mod:`qres.kinds.aggregator`, ``plugins/aggregators/``); the reputations that some of them
read are kept by :mod:`qres.robust.reputation`.

Exactness and order independence are the point: docs/aggregators.md explains each path.
numpy is imported inside the functions so that loading the plugins stays light.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from qres.fixed.q16 import saturate

if TYPE_CHECKING:
    import numpy as np


def div_round(num: Any, den: Any) -> Any:
    """``floor(num / den + 1/2)`` exactly, for ``den > 0`` (ints or int64 arrays).

    The one rounding rule of qres: to nearest, ties toward +infinity. Callers keep
    ``2 * |num| + den`` below 2**63 for arrays.
    """
    return (2 * num + den) // (2 * den)


def to_q(values: np.ndarray) -> np.ndarray:
    """int64 values saturated into Q16.16 and returned as int32."""
    return saturate(values)


def canonical_rows(x: np.ndarray) -> np.ndarray:
    """The rows of ``x`` sorted by their bytes (a fixed, content-only order)."""
    import numpy as np

    c = np.ascontiguousarray(x)
    keys = c.view(np.dtype((np.void, c.shape[1] * c.itemsize))).ravel()
    return c[np.argsort(keys, kind="stable")]


def column_sum(x: np.ndarray, weights: Any = None) -> np.ndarray:
    """Exact int64 column sums of int32 rows (optionally weighted, weights per MAX_WEIGHT_TOTAL)."""
    import numpy as np

    if weights is None:
        return x.sum(axis=0, dtype=np.int64)
    return weights @ x.astype(np.int64)


def mean_rows(x: np.ndarray, weights: Any = None) -> np.ndarray:
    """The (weighted) mean of int32 rows, rounded by the rule, as int32."""
    total = x.shape[0] if weights is None else int(weights.sum())
    return to_q(div_round(column_sum(x, weights), total))


def median_columns(x: np.ndarray) -> np.ndarray:
    """Coordinate-wise median as int32; for even n the mean of the two middle values, rounded."""
    import numpy as np

    n = x.shape[0]
    h = n // 2
    t = x.T.copy()  # C order, and ours to sort in place
    # One selection per column: after partitioning at h, the lower middle value (even n) is
    # the largest of the h values before it, a cheap max instead of a second selection.
    t.partition(h, axis=1)
    if n % 2:
        return t[:, h].copy()
    pair = t[:, :h].max(axis=1).astype(np.int64) + t[:, h]
    return to_q(div_round(pair, 2))


def trimmed_mean(x: np.ndarray, f: int) -> np.ndarray:
    """Coordinate-wise trimmed mean of int32 rows ``(..., m, d)``: per column, drop the ``f``
    smallest and ``f`` largest values and average the rest, rounded by the rule; ``(..., d)``
    int32. A leading batch axis aggregates many row sets at once, each on its own."""
    import numpy as np

    m = x.shape[-2]
    t = np.swapaxes(x, -1, -2).copy()  # C order, and ours to sort in place
    if f:
        # Partitioning at both cut points puts exactly the f smallest before f and the
        # f largest from m - f on, in O(m) per column.
        t.partition([f - 1, m - f], axis=-1)
    kept = t[..., f : m - f].sum(axis=-1, dtype=np.int64)
    return to_q(div_round(kept, m - 2 * f))


def closest_to_median_mean(x: np.ndarray, keep: int) -> np.ndarray:
    """Per coordinate, the mean of the ``keep`` values closest to the median (MeaMed core).

    Ties in distance are broken toward the smaller value (key ``2 * |x - med| - (x < med)``),
    so the selected multiset, and the result, depend only on the values.
    """
    import numpy as np

    n = x.shape[0]
    med = median_columns(x).astype(np.int64)
    t = np.ascontiguousarray(x.T).astype(np.int64)
    diff = t - med[:, None]
    key = 2 * np.abs(diff) - (diff < 0)
    if keep < n:
        idx = np.argpartition(key, keep - 1, axis=1)[:, :keep]
        t = np.take_along_axis(t, idx, axis=1)
    return to_q(div_round(t.sum(axis=1), keep))


# --- exact pairwise squared distances -------------------------------------------------------

_ROW_BLOCK = 512
_MASK32 = (1 << 32) - 1


def _center(x: np.ndarray) -> np.ndarray:
    """Rows minus their coordinate-wise median (int64, |y| < 2**32): distances are unchanged
    and the magnitudes small, so the cheap exact path applies more often."""
    import numpy as np

    return x.astype(np.int64) - median_columns(x).astype(np.int64)


def distance_blocks(
    x: np.ndarray, block: int = _ROW_BLOCK, rows: Any = None, cols: Any = None
) -> Iterator[tuple[int, Any]]:
    """Exact squared Euclidean distances from rows of ``x`` to rows of ``x``, one row block at
    a time (:meth:`DistancePlan.blocks`; build a :class:`DistancePlan` once to ask many times).

    By default every row to every row; ``rows`` and ``cols`` (index arrays) restrict the
    sources and the targets. Yields ``(start, dist)`` where ``dist`` covers the sources
    ``start:start + b`` (positions in ``rows``) against every target, in target order: either
    an int64 ``(b, m)`` array, or, when a distance may exceed int64, a pair ``(hi, lo)`` of
    int64 arrays with ``dist = hi * 2**32 + lo`` and ``0 <= lo < 2**32``. Memory is
    O(block * m).
    """
    return DistancePlan(x).blocks(block, rows, cols)


class DistancePlan:
    """The rows of ``x`` prepared once for exact distance blocks between any of them.

    Exactness: with ``M = max |y|`` over the rows as given or, when those are too large,
    centred on the coordinate-wise median of ``x`` (distances unchanged, magnitudes
    smaller), if ``d * M**2 < 2**50`` every partial
    sum of the float64 Gram product, and every distance, is an integer below 2**52 and so
    exact whatever order BLAS adds in. Otherwise each value is split as
    ``y = a * 2**16 + b`` (``|a| <= 2**16``, ``0 <= b < 2**16``); products are at most 2**32
    and columns are taken in chunks of 2**18, keeping each chunk's float64 sums exact, and
    the chunks are added in int64.
    """

    def __init__(self, x: np.ndarray):
        import numpy as np

        self.n, self.d = x.shape
        raw = max(-int(x.min()), int(x.max())) if x.size else 0
        if self.d * raw * raw < (1 << 50):
            # Small enough as given: centring would not change a distance, so skip it.
            self.simple = True
            self.y = x.astype(np.int64)
            self.yf = x.astype(np.float64)
            self.norms = np.einsum("ij,ij->i", self.yf, self.yf)  # integers below 2**50
            return
        y = _center(x)
        m = int(np.abs(y).max()) if y.size else 0
        self.simple = self.d * m * m < (1 << 50)
        if self.simple:
            self.y = y
            self.yf = y.astype(np.float64)
            self.norms = (y * y).sum(axis=1).astype(np.float64)
            return
        a = y >> 16
        b = y & 0xFFFF
        self.naa = (a * a).sum(axis=1)
        self.nab = (a * b).sum(axis=1)
        self.nbb = (b * b).sum(axis=1)
        self.af = a.astype(np.float64)
        self.bf = b.astype(np.float64)

    def blocks(
        self, block: int = _ROW_BLOCK, rows: Any = None, cols: Any = None
    ) -> Iterator[tuple[int, Any]]:
        """Distance blocks as :func:`distance_blocks` describes."""
        import numpy as np

        src = np.arange(self.n) if rows is None else np.asarray(rows, dtype=np.int64)
        dst = None if cols is None else np.asarray(cols, dtype=np.int64)
        if self.simple:
            tf = self.yf if dst is None else self.yf[dst]
            tn = self.norms if dst is None else self.norms[dst]
            for s in range(0, src.size, block):
                part = src[s : s + block] if rows is not None else slice(s, s + block)
                # In place in float64: every intermediate is an integer of magnitude below
                # 4 * d * M**2 < 2**52, hence exact.
                g = self.yf[part] @ tf.T
                g *= -2.0
                g += self.norms[part, None]
                g += tn[None, :]
                yield s, g.astype(np.int64)
            return
        d = self.d
        chunk = 1 << 18
        chunks = [(c, min(c + chunk, d)) for c in range(0, d, chunk)]
        dsel = slice(None) if dst is None else dst
        at, bt = self.af[dsel], self.bf[dsel]
        for s in range(0, src.size, block):
            part = src[s : s + block]
            shape = (part.size, at.shape[0])
            gaa = np.zeros(shape, np.int64)
            gab = np.zeros(shape, np.int64)
            gba = np.zeros(shape, np.int64)
            gbb = np.zeros(shape, np.int64)
            for c0, c1 in chunks:
                ap, bp = self.af[part, c0:c1], self.bf[part, c0:c1]
                gaa += (ap @ at[:, c0:c1].T).astype(np.int64)
                gab += (ap @ bt[:, c0:c1].T).astype(np.int64)
                gba += (bp @ at[:, c0:c1].T).astype(np.int64)
                gbb += (bp @ bt[:, c0:c1].T).astype(np.int64)
            # dist = p32 * 2**32 + p17 * 2**17 + p0, with p32, p0 >= 0 and p17 signed.
            p32 = self.naa[part, None] + self.naa[None, dsel] - 2 * gaa
            p17 = self.nab[part, None] + self.nab[None, dsel] - gab - gba
            p0 = self.nbb[part, None] + self.nbb[None, dsel] - 2 * gbb
            low = p0 + ((p17 & 0x7FFF) << 17)
            hi = p32 + (p17 >> 15) + (low >> 32)
            lo = low & _MASK32
            if int(hi.max()) < (1 << 30):
                yield s, (hi << 32) | lo
            else:
                yield s, (hi, lo)


def smallest_sums(dist: Any, k: int) -> list[int]:
    """Per row of a distance block, the exact sum of its ``k`` smallest entries (Python ints)."""
    import numpy as np

    if isinstance(dist, tuple):
        hi, lo = dist
        order = np.lexsort((lo, hi), axis=1)[:, :k]
        sh = np.take_along_axis(hi, order, axis=1).sum(axis=1)
        sl = np.take_along_axis(lo, order, axis=1).sum(axis=1)
        return [(int(h) << 32) + int(v) for h, v in zip(sh, sl, strict=True)]
    if k < dist.shape[1]:
        dist.partition(k - 1, axis=1)  # the blocks are ours: partition in place
    part = dist[:, :k]
    # Halves of 31 bits so that k terms cannot overflow int64.
    sh = (part >> 31).sum(axis=1)
    sl = (part & 0x7FFFFFFF).sum(axis=1)
    return [(int(h) << 31) + int(v) for h, v in zip(sh, sl, strict=True)]


def krum_scores(x: np.ndarray, f: int) -> list[int]:
    """Krum score of every row: the sum of squared distances to its ``n - f - 2`` nearest others.

    The row's zero distance to itself is counted among the ``n - f - 1`` smallest, which adds 0.
    """
    n = x.shape[0]
    k = n - f - 1
    plan = DistancePlan(x)
    if plan.simple:
        return _krum_scores_simple(plan, k)
    scores: list[int] = []
    for _start, dist in plan.blocks():
        scores.extend(smallest_sums(dist, k))
    return scores


def _krum_scores_simple(plan: DistancePlan, k: int) -> list[int]:
    """Krum scores on the exact float64 path: each row's total distance (exact, from norms
    and the column sums) minus the sum of its ``n - k`` largest distances.

    Distances stay float64 (exact integers below 2**52): one selection per row finds the
    ``n - k`` largest, whose sum is taken exactly as two float64 sums of 26-bit halves
    (each below 2**53). Saves converting and summing the whole distance matrix.
    """
    import numpy as np

    n = plan.n
    y = plan.y
    norms = [int(v) for v in (y * y).sum(axis=1)]  # below 2**50 each: int64 is exact
    col = y.sum(axis=0)  # |col| <= n * M: int64
    lo_part = col & ((1 << 22) - 1)
    hi_part = col >> 22
    # y . col exactly: both int64 matrix-vector products stay below 2**63 (see DistancePlan)
    dot = [(int(h) << 22) + int(lo) for h, lo in zip(y @ hi_part, y @ lo_part, strict=True)]
    all_norms = sum(norms)
    totals = [n * nv + all_norms - 2 * dv for nv, dv in zip(norms, dot, strict=True)]
    scale = float(1 << 26)
    tf2 = plan.yf * -2.0  # exact: a power of two
    fnorms = plan.norms
    scores: list[int] = []
    for s in range(0, n, _ROW_BLOCK):
        g = plan.yf[s : s + _ROW_BLOCK] @ tf2.T
        g += fnorms[s : s + _ROW_BLOCK, None]
        g += fnorms[None, :]
        if k < n:
            g.partition(k, axis=1)
        top = g[:, k:]
        hi = np.floor(top / scale)
        lo = top - hi * scale
        sh, sl = hi.sum(axis=1), lo.sum(axis=1)
        for i, (a, b) in enumerate(zip(sh, sl, strict=True)):
            scores.append(totals[s + i] - ((int(a) << 26) + int(b)))
    return scores


def sq_dists_to(x: np.ndarray, z: np.ndarray, block: int = 1024) -> list[int]:
    """Exact squared distance from each row of ``x`` to the int32 vector ``z`` (Python ints).

    Each difference (``|diff| <= 2**32``) is split as ``a * 2**16 + b`` with ``0 <= b < 2**16``;
    the sums of ``a*a``, ``a*b`` and ``b*b`` stay below 2**57 in int64 for ``d <= MAX_DIM`` and
    are combined exactly as ``Saa * 2**32 + Sab * 2**17 + Sbb``. Memory is O(block * d).
    """
    import numpy as np

    z64 = z.astype(np.int64)
    out: list[int] = []
    for s in range(0, x.shape[0], block):
        diff = x[s : s + block].astype(np.int64) - z64
        a = diff >> 16
        b = diff & 0xFFFF
        saa = (a * a).sum(axis=1)
        sab = (a * b).sum(axis=1)
        sbb = (b * b).sum(axis=1)
        out.extend(
            (int(p) << 32) + (int(q) << 17) + int(r) for p, q, r in zip(saa, sab, sbb, strict=True)
        )
    return out


def close_counts(x: np.ndarray, limits: list[int]) -> list[int]:
    """For each row ``i``, how many *other* rows lie within squared distance ``limits[i]``.

    Exact (the distances of :func:`distance_blocks`), blocked: memory O(512 n).
    """
    import numpy as np

    out: list[int] = []
    big = (1 << 63) - 1
    for start, dist in distance_blocks(x):
        b = dist[0].shape[0] if isinstance(dist, tuple) else dist.shape[0]
        rows = np.arange(b)
        lim = limits[start : start + b]
        if isinstance(dist, tuple):
            hi, lo = dist
            lh = np.array([min(v >> 32, big) for v in lim], np.int64)[:, None]
            ll = np.array([v & _MASK32 for v in lim], np.int64)[:, None]
            close = (hi < lh) | ((hi == lh) & (lo <= ll))
        else:
            close = dist <= np.array([min(v, big) for v in lim], np.int64)[:, None]
        close[rows, start + rows] = False  # not one's own copy
        out.extend(int(c) for c in close.sum(axis=1))
    return out
