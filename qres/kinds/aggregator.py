"""The aggregator kind: Byzantine-robust rules that combine n Q16.16 model updates into one.

An aggregator takes an ``(n, d)`` int32 array of Q16.16 updates (one row per node) and the
number ``f`` of Byzantine rows it must tolerate, and returns a ``(d,)`` int32 Q16.16 vector.

Determinism (docs/aggregators.md has the details):

* All arithmetic on the updates is integer: sums in int64 (or Python ints when they could
  overflow) and exact division rounded by the one rule of :mod:`qres.fixed`, round to nearest
  with ties toward +infinity: ``floor(num / den + 1/2)`` (:func:`div_round`).
* The result is bit-identical under any permutation of the rows: coordinate-wise rules are
  symmetric by construction, and rules that select rows (Krum, multi-Krum, Bulyan) first put
  the rows in canonical order (by their bytes, :func:`canonical_rows`) so that ties between
  equal scores are broken by the row's content, never by its input position.
* Pairwise squared distances are exact (:func:`distance_blocks`): float64 Gram matrices are
  used only where every partial sum is an integer below 2**53, so BLAS summation order cannot
  change a bit.
* The input is never modified: rules receive a read-only view.

This module imports numpy lazily (inside functions) so that loading plugins stays light.
"""

from __future__ import annotations

import operator
from collections.abc import Iterator
from fractions import Fraction
from typing import TYPE_CHECKING, Any

from qres.kernel.errors import QresError
from qres.kernel.plugins import Plugin

if TYPE_CHECKING:
    import numpy as np

#: Largest update dimension accepted: keeps every exact int64 partial sum below 2**63.
MAX_DIM = 1 << 24
#: Largest row count accepted (scores are summed in int64 halves of 31 bits).
MAX_ROWS = 1 << 24
#: Per-update weights are integers (sample counts) whose total is at most this, so that
#: sum(w * x) fits int64 with room for the rounding term.
MAX_WEIGHT_TOTAL = 1 << 30

Q_MIN = -(1 << 31)
Q_MAX = (1 << 31) - 1


class Aggregator(Plugin):
    """Base class of aggregation rules (plugin kind ``aggregator``).

    Subclasses set ``name``, ``Config``, ``takes_weights`` (whether per-update weights are
    meaningful for the rule) and implement :meth:`_aggregate`, and may override
    :meth:`check_f` with the rule's own bound on ``f`` and :meth:`prepare_weights` when their
    weights mean something other than sample counts (e.g. reputations).
    """

    #: Whether the rule accepts per-update weights (sample counts).
    takes_weights: bool = False

    def aggregate(self, updates: Any, *, f: int, weights: Any = None, rng: Any = None):
        """Combine ``(n, d)`` int32 Q16.16 ``updates`` into a ``(d,)`` int32 Q16.16 vector.

        ``f`` is the number of Byzantine rows to tolerate, ``weights`` optional non-negative
        integer weights per row (only for rules with ``takes_weights``), ``rng`` a seeded
        ``numpy.random.Generator`` for rules that need randomness. Raises :class:`QresError`
        on malformed input; never modifies ``updates``.
        """
        x = check_updates(updates, self.name)
        n = x.shape[0]
        f = check_f_basic(f, n, self.name)
        self.check_f(n, f)
        w = None
        if weights is not None:
            if not self.takes_weights:
                raise QresError(
                    f"aggregator {self.name!r}: this rule does not take per-update weights; "
                    "pass weights=None or use a rule that takes them"
                )
            w = self.prepare_weights(weights, n)
        return self._aggregate(x, f, w, rng)

    def prepare_weights(self, weights: Any, n: int) -> Any:
        """Validate the per-row weights; by default sample counts (:func:`check_weights`)."""
        return check_weights(weights, n, self.name)

    def check_f(self, n: int, f: int) -> None:
        """Raise :class:`QresError` if the rule cannot tolerate ``f`` of ``n`` rows."""

    def _aggregate(self, x: np.ndarray, f: int, weights: Any, rng: Any) -> np.ndarray:
        raise NotImplementedError(f"aggregator {self.name!r} does not implement _aggregate")


def check_updates(updates: Any, rule: str) -> np.ndarray:
    """``updates`` as a read-only view of a 2-D int32 array, or a :class:`QresError`."""
    import numpy as np

    if not isinstance(updates, np.ndarray):
        raise QresError(
            f"aggregator {rule!r}: updates must be a numpy array, got {type(updates).__name__}; "
            "pass an (n, d) int32 Q16.16 array"
        )
    if updates.ndim != 2:
        raise QresError(
            f"aggregator {rule!r}: updates must be 2-D (n, d), got shape {updates.shape}; "
            "stack one row per node"
        )
    if updates.dtype != np.int32:
        raise QresError(
            f"aggregator {rule!r}: updates must be int32 Q16.16, got dtype {updates.dtype}; "
            "convert with qres.fixed.to_fixed"
        )
    n, d = updates.shape
    if n < 1 or d < 1:
        raise QresError(
            f"aggregator {rule!r}: updates must have n >= 1 rows and d >= 1 columns, "
            f"got shape {updates.shape}; pass at least one non-empty update"
        )
    if n > MAX_ROWS or d > MAX_DIM:
        raise QresError(
            f"aggregator {rule!r}: shape {updates.shape} exceeds the limits "
            f"n <= {MAX_ROWS}, d <= {MAX_DIM}; split the update into chunks"
        )
    view = updates.view()
    view.flags.writeable = False  # a rule that tried to write would fail loudly
    return view


def check_f_basic(f: Any, n: int, rule: str) -> int:
    """``f`` as an int in [0, n - 1], or a :class:`QresError`."""
    try:
        if isinstance(f, bool):
            raise TypeError
        value = operator.index(f)
    except TypeError:
        raise QresError(
            f"aggregator {rule!r}: f must be an integer, got {f!r}; pass the Byzantine count"
        ) from None
    if not 0 <= value < n:
        raise QresError(
            f"aggregator {rule!r}: f={value} is out of range for n={n}; need 0 <= f < n"
        )
    return value


def check_weights(weights: Any, n: int, rule: str) -> np.ndarray:
    """Per-row weights as int64 (non-negative integers, positive total), or a QresError."""
    import numpy as np

    w = np.asarray(weights)
    if w.shape != (n,) or (w.size and w.dtype.kind not in "iu"):
        raise QresError(
            f"aggregator {rule!r}: weights must be {n} integers (one per row), got "
            f"shape {w.shape} dtype {w.dtype}; pass sample counts"
        )
    w64 = w.astype(np.int64)
    if (w64 < 0).any() or (w.dtype.kind == "u" and (w > MAX_WEIGHT_TOTAL).any()):
        raise QresError(f"aggregator {rule!r}: weights must be >= 0; fix the sample counts")
    total = int(w64.sum(dtype=np.int64)) if not (w64 > MAX_WEIGHT_TOTAL).any() else None
    if total is None or total > MAX_WEIGHT_TOTAL or total == 0:
        raise QresError(
            f"aggregator {rule!r}: weights must sum to between 1 and {MAX_WEIGHT_TOTAL}; "
            "scale the sample counts down"
        )
    return w64


def div_round(num: Any, den: Any) -> Any:
    """``floor(num / den + 1/2)`` exactly, for ``den > 0`` (ints or int64 arrays).

    The one rounding rule of qres: to nearest, ties toward +infinity. Callers keep
    ``2 * |num| + den`` below 2**63 for arrays.
    """
    return (2 * num + den) // (2 * den)


def to_q(values: np.ndarray) -> np.ndarray:
    """int64 values saturated into Q16.16 and returned as int32."""
    import numpy as np

    return np.clip(values, Q_MIN, Q_MAX).astype(np.int32)


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


#: Reputations are Q16.16 values in [0, 1]: integers in [0, REP_ONE].
REP_ONE = 1 << 16


def check_reputations(reputations: Any, n: int, rule: str) -> list[int]:
    """Per-row reputations as Python ints in [0, 65536] (Q16.16 in [0, 1]), or a QresError."""
    import numpy as np

    r = np.asarray(reputations)
    if r.shape != (n,) or (r.size and r.dtype.kind not in "iu"):
        raise QresError(
            f"aggregator {rule!r}: reputations must be {n} integers (one per row), got "
            f"shape {r.shape} dtype {r.dtype}; pass Q16.16 values in [0, 65536]"
        )
    values = [int(v) for v in r]
    if any(v < 0 or v > REP_ONE for v in values):
        raise QresError(
            f"aggregator {rule!r}: reputations must lie in [0, {REP_ONE}] (Q16.16 0.0 to 1.0); "
            "clamp them"
        )
    return values


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


class ReputationTracker:
    """Per-node reputations (Q16.16 integers in [0, 65536]) kept from round to round, from how
    each node's update sits among the others; the input of ``reputation-weighted`` and
    ``adaptive``.

    Each round (:meth:`observe`) a node's update is *flagged* when it is

    * **far**: its squared distance to a robust reference aggregate (e.g. the trimmed mean)
      exceeds ``far**2`` times the median of those squared distances (the outlier rule of
      reputation defences, e.g. Rodríguez-Barroso et al., FGCS 2022); or
    * **one of a coordinated group**: at least ``group`` updates (itself included) lie within
      ``2**-near_bits`` of its own distance to the reference. Nodes training on their own
      data do not send the same vector in numbers; a cartel that copies one forged vector
      does (the similarity signal of FoolsGold, Fung, Yoon, Beschastnikh, RAID 2020). Rows
      equal to the reference are not tested (nothing to tell apart).

    Flagged nodes lose ``penalty``, the others gain ``reward``, clamped to [0, 1]. Every
    comparison is exact integer arithmetic on exact squared distances, so reputations are the
    same on every machine and for any order of the nodes. Nodes absent from a round
    (``active`` False) keep their value. A cartel that adds independent noise large enough to
    look like separate nodes is not caught by the group test; the robust rule it feeds
    (``adaptive``'s trimmed mean) is then the defence.
    """

    def __init__(
        self,
        n: int,
        *,
        reward: float = 0.05,
        penalty: float = 0.25,
        far: float = 32.0,
        group: int = 5,
        near_bits: int = 10,
        start: float = 1.0,
    ):
        import numpy as np

        if n < 1:
            raise QresError(f"ReputationTracker: n={n}; track at least one node")
        for name, value in (("reward", reward), ("penalty", penalty), ("start", start)):
            if not 0.0 <= value <= 1.0:
                raise QresError(f"ReputationTracker: {name}={value} must lie in [0, 1]")
        if not far > 0 or group < 2 or not 0 <= near_bits <= 30:
            raise QresError(
                f"ReputationTracker: need far > 0, group >= 2, near_bits in [0, 30]; got "
                f"{far}, {group}, {near_bits}"
            )
        self.reward = int(reward * REP_ONE + 0.5)
        self.penalty = int(penalty * REP_ONE + 0.5)
        self.group = group
        self.near_bits = near_bits
        self._far2 = Fraction(far) ** 2
        self.reputations = np.full(n, int(start * REP_ONE + 0.5), np.int64)

    def observe(self, updates: Any, reference: Any, active: Any = None) -> np.ndarray:
        """Update the reputations from one round: ``updates`` ``(m, d)`` int32 rows of the
        active nodes (in node order), ``reference`` the ``(d,)`` int32 robust aggregate.
        Returns the flags of the active nodes (bool ``(m,)``)."""
        import numpy as np

        x = check_updates(updates, "reputation tracker")
        n = self.reputations.shape[0]
        act = np.ones(n, bool) if active is None else np.asarray(active, bool).reshape(-1)
        if act.shape[0] != n or int(act.sum()) != x.shape[0]:
            raise QresError(
                f"ReputationTracker: {x.shape[0]} updates for {int(act.sum())} active of {n} "
                "nodes; pass one row per active node"
            )
        ref = np.asarray(reference)
        if ref.shape != (x.shape[1],) or ref.dtype != np.int32:
            raise QresError(
                f"ReputationTracker: reference must be ({x.shape[1]},) int32, got "
                f"{ref.shape} {ref.dtype}"
            )
        flags = self.flags(x, ref)
        delta = np.where(flags, -self.penalty, self.reward)
        idx = np.flatnonzero(act)
        self.reputations[idx] = np.clip(self.reputations[idx] + delta, 0, REP_ONE)
        return flags

    def flags(self, x: Any, reference: Any) -> Any:
        """Which rows are far from ``reference`` or members of a coordinated group (bool)."""
        import numpy as np

        m = x.shape[0]
        dref = sq_dists_to(x, reference)
        grouped = [False] * m
        if m >= self.group:
            # within 2**-near_bits of the row's own distance: squared, shift by 2 * near_bits
            counts = close_counts(x, [d >> (2 * self.near_bits) for d in dref])
            grouped = [d > 0 and c + 1 >= self.group for d, c in zip(dref, counts, strict=True)]
        # The scale of "far" comes from the rows not already in a group, so that a cartel
        # parked next to the reference cannot shrink it and push honest rows past the limit.
        scale = sorted(d for d, g in zip(dref, grouped, strict=True) if not g) or sorted(dref)
        med = max(scale[(len(scale) - 1) // 2], 1)
        num, den = self._far2.numerator, self._far2.denominator
        return np.array(
            [g or d * den > num * med for d, g in zip(dref, grouped, strict=True)], bool
        )

    def as_weights(self) -> np.ndarray:
        """The reputations as the ``weights`` argument of the reputation rules (int64)."""
        return self.reputations.copy()
