"""Distance-based selection rules: Krum, multi-Krum and Bulyan.

Scores come from exact squared distances (:func:`qres.robust.aggregate.distance_blocks`, blocked so
memory stays O(512 n) for Krum and multi-Krum). Rows are put in canonical order (by their
bytes) first, and selections sort by (score, canonical position), so equal scores are broken
by row content and the output is the same for every permutation of the input.
"""

from __future__ import annotations

import attrs

from qres.kernel.config import integer
from qres.kernel.errors import QresError
from qres.kernel.hookspecs import hookimpl
from qres.kinds.aggregator import Aggregator
from qres.robust.aggregate import (
    DistancePlan,
    canonical_rows,
    closest_to_median_mean,
    distance_blocks,
    krum_scores,
    mean_rows,
    smallest_sums,
)


def _check_krum(rule: str, n: int, f: int) -> None:
    if n < 2 * f + 3:
        raise QresError(
            f"aggregator {rule!r}: f={f} needs n >= 2f + 3, got n={n}; lower f or add nodes"
        )


def _lowest(scores: list[int], m: int) -> list[int]:
    """Indices of the ``m`` lowest scores, ties by index (= canonical row order)."""
    return sorted(range(len(scores)), key=lambda i: (scores[i], i))[:m]


class Krum(Aggregator):
    """Krum: the update whose ``n - f - 2`` nearest neighbours are closest (sum of squared
    distances).

    Blanchard, El Mhamdi, Guerraoui, Stainer, "Machine Learning with Adversaries: Byzantine
    Tolerant Gradient Descent", NeurIPS 2017. Needs ``n >= 2 f + 3``.
    """

    name = "krum"

    def check_f(self, n, f):
        """Krum's theory needs ``n >= 2 f + 3``."""
        _check_krum(self.name, n, f)

    def _aggregate(self, x, f, weights, rng):
        rows = canonical_rows(x)
        best = _lowest(krum_scores(rows, f), 1)[0]
        return rows[best].copy()


@attrs.frozen
class MultiKrumConfig:
    """Settings of multi-Krum."""

    #: Rows averaged: the ``m`` best by Krum score; 0 means ``n - f``.
    m: int = attrs.field(default=0, validator=integer(0, 1 << 24))


class MultiKrum(Aggregator):
    """Multi-Krum: the mean of the ``m`` updates with the best Krum scores (``m = n - f`` by
    default).

    Blanchard, El Mhamdi, Guerraoui, Stainer, "Machine Learning with Adversaries: Byzantine
    Tolerant Gradient Descent", NeurIPS 2017 (multi-Krum variant). Needs ``n >= 2 f + 3``.
    """

    name = "multi-krum"
    Config = MultiKrumConfig

    def check_f(self, n, f):
        """Krum's theory needs ``n >= 2 f + 3``; ``m`` must not exceed ``n``."""
        _check_krum(self.name, n, f)
        if self.config.m > n:
            raise QresError(
                f"aggregator 'multi-krum': m={self.config.m} exceeds n={n}; set m <= n or m = 0"
            )

    def _aggregate(self, x, f, weights, rng):
        n = x.shape[0]
        m = self.config.m or n - f
        rows = canonical_rows(x)
        chosen = sorted(_lowest(krum_scores(rows, f), m))
        return mean_rows(rows[chosen])


def _full_distances(rows):
    """The whole ``n x n`` exact distance matrix: int64, or an (hi, lo) pair (see
    :func:`distance_blocks`)."""
    import numpy as np

    blocks = list(distance_blocks(rows))
    if any(isinstance(b, tuple) for _, b in blocks):
        parts = [b if isinstance(b, tuple) else (b >> 32, b & 0xFFFFFFFF) for _, b in blocks]
        return (np.vstack([p[0] for p in parts]), np.vstack([p[1] for p in parts]))
    return np.vstack([b for _, b in blocks])


def _sub(dist, idx):
    import numpy as np

    sel = np.ix_(idx, idx)
    if isinstance(dist, tuple):
        return (dist[0][sel], dist[1][sel])
    return dist[sel]


def _as_ints(dist):
    """A distance block as an object array of exact Python ints (for the rare (hi, lo) form)."""

    if isinstance(dist, tuple):
        hi, lo = dist
        return hi.astype(object) * (1 << 32) + lo.astype(object)
    return dist.astype(object)


def _select_blocked(rows, f: int, picks: int, block: int = 512) -> list[int]:
    """Bulyan's repeated Krum selection in O(block * n) memory; the same picks as the
    full-matrix selection.

    With ``m`` rows remaining, Krum scores a row by its ``k = m - f - 1`` smallest distances
    (its own 0 included), which is its total distance to the remaining rows ``S`` minus its
    ``f + 1`` largest ``T``. ``S`` drops by one distance row when a row is picked; ``T``
    changes only for rows whose ``f + 1`` largest included the picked row, i.e. whose
    distance to it is at least their current ``(f + 1)``-th largest ``tau``: only those
    rows are re-scored from fresh distance blocks.
    """
    import numpy as np

    n = rows.shape[0]
    plan = DistancePlan(rows)
    remaining = np.ones(n, bool)
    s_tot = np.zeros(n, dtype=object)
    t_top = np.zeros(n, dtype=object)
    tau = np.zeros(n, dtype=object)

    def top_count(m):
        return m - max(m - f - 1, 1)

    def rescore(idx):
        cols = np.flatnonzero(remaining)
        m = cols.size
        c = top_count(m)
        for start, dist in plan.blocks(block, rows=idx, cols=cols):
            part = idx[start : start + block]
            if isinstance(dist, tuple):  # beyond int64: exact Python ints, row by row
                full = np.sort(_as_ints(dist), axis=1)
                for i, line in zip(part, full, strict=True):
                    s_tot[i] = sum(line)
                    t_top[i] = sum(line[m - c :])
                    tau[i] = line[m - c] if c else None
                continue
            s_tot[part] = _row_sums(dist)
            if c:
                dist.partition(m - c, axis=1)  # the block is ours
                t_top[part] = _row_sums(dist[:, m - c :])
                tau[part] = dist[:, m - c].astype(object)
            else:
                t_top[part] = 0
                tau[part] = None

    rescore(np.arange(n))
    picked: list[int] = []
    for _ in range(picks):
        live = np.flatnonzero(remaining)
        scores = s_tot[live] - t_top[live]
        best = int(live[min(range(live.size), key=lambda j: (scores[j], j))])
        picked.append(best)
        remaining[best] = False
        if len(picked) == picks:
            break
        live = np.flatnonzero(remaining)
        c_before = top_count(live.size + 1)
        _, drow = next(plan.blocks(block, rows=[best], cols=live))
        drow = _as_ints(drow)[0]
        s_tot[live] -= drow
        if top_count(live.size) != c_before:
            rescore(live)
            continue
        hit = [i for i, v in zip(live, drow, strict=True) if tau[i] is not None and v >= tau[i]]
        if hit:
            rescore(np.array(hit, dtype=np.int64))
    return picked


def _row_sums(block):
    """Exact row sums of a non-negative int64 block as Python ints (31-bit halves, so that
    no int64 sum can overflow)."""

    hi = (block >> 31).sum(axis=1).astype(object)
    lo = (block & 0x7FFFFFFF).sum(axis=1).astype(object)
    return hi * (1 << 31) + lo


#: Up to this many rows Bulyan keeps the whole distance matrix (1.6 MB), which is faster
#: there; above it the blocked selection is faster as well as bounded (measured crossover).
FULL_MATRIX_ROWS = 448


class Bulyan(Aggregator):
    """Bulyan: pick ``n - 2f`` updates by repeated Krum, then per coordinate average the
    ``n - 4f`` selected values closest to their median.

    El Mhamdi, Guerraoui, Rouault, "The Hidden Vulnerability of Distributed Learning in
    Byzantium", ICML 2018. Needs ``n >= 4 f + 3``. Up to :data:`FULL_MATRIX_ROWS` rows the
    whole distance matrix is kept (:func:`_select_full`); above, the selection runs in
    bounded row blocks (:func:`_select_blocked`, memory O(512 n), never the n x n matrix),
    picking exactly the same rows (the tests compare both).
    """

    name = "bulyan"

    def check_f(self, n, f):
        """Bulyan's theory needs ``n >= 4 f + 3``."""
        if n < 4 * f + 3:
            raise QresError(
                f"aggregator 'bulyan': f={f} needs n >= 4f + 3 = {4 * f + 3}, got n={n}; "
                "lower f, add nodes, or use 'krum' or 'trimmed-mean'"
            )

    def _aggregate(self, x, f, weights, rng):
        n = x.shape[0]
        rows = canonical_rows(x)
        if n <= FULL_MATRIX_ROWS:
            selected = _select_full(rows, f, n - 2 * f)
        else:
            selected = _select_blocked(rows, f, n - 2 * f)
        return closest_to_median_mean(rows[sorted(selected)], n - 4 * f)


def _select_full(rows, f: int, picks: int) -> list[int]:
    """Bulyan's repeated Krum selection from the whole n x n distance matrix (O(n**2)
    memory: only for n up to :data:`FULL_MATRIX_ROWS`)."""
    n = rows.shape[0]
    dist = _full_distances(rows)
    remaining = list(range(n))
    selected: list[int] = []
    for _ in range(picks):
        m = len(remaining)
        # Krum on the remaining rows; with fewer than 2f + 3 left (only in the last
        # rounds) it keeps at least one neighbour.
        k = max(m - f - 1, 1)
        scores = smallest_sums(_sub(dist, remaining), k)
        pick = _lowest(scores, 1)[0]
        selected.append(remaining.pop(pick))
    return selected


@hookimpl
def register_aggregators(register):
    """Register Krum, multi-Krum and Bulyan."""
    for cls in (Krum, MultiKrum, Bulyan):
        register(cls)
