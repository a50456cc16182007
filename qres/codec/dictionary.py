"""Dictionary mapping (side-record kind 8): a channel of few distinct values as their ranks.

Activity counts (half zeros, bursts up to thousands), quantised light levels, a thermistor's
lookup table: few distinct values, spread unevenly. A predictor and a coder spend the raw bits
of every large magnitude; the rank of a value among the block's distinct values carries the
same information in a few bits, and keeps the order (a smooth signal stays smooth). The side
record holds the table (the distinct values, ascending, in the sample type), the predictor
sees the ranks.

Values are ranked in an order-preserving integer view: integers as themselves, floats as the
order-preserving view of their bits (every bit pattern its own value: -0.0, NaN payloads).
"""

from __future__ import annotations

#: A channel is a dictionary candidate when its block has at most one distinct value per
#: DENSITY samples (screened first on an evenly spaced probe of PROBE samples).
DENSITY = 8
PROBE = 4096


def distinct(values):
    """The sorted distinct values of an int64 array (``np.unique`` without its lazy import
    of numpy.ma, which would land inside a timed coding call)."""
    import numpy as np

    ordered = np.sort(values)
    if len(ordered) < 2:
        return ordered
    keep = np.empty(len(ordered), dtype=bool)
    keep[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=keep[1:])
    return ordered[keep]


def probe_index(n: int, size: int):
    """The positions of ``size`` samples evenly spaced over ``n`` (numpy's ``linspace`` from the
    first to the last, truncated), read-only; the last few lengths are kept (every channel of
    a block asks for the same ones)."""
    import numpy as np

    key = (n, size)
    found = _PROBE_INDEX.get(key)
    if found is None:
        found = np.linspace(0, n - 1, size).astype(np.int64)
        found.flags.writeable = False
        if len(_PROBE_INDEX) >= 8:
            _PROBE_INDEX.pop(next(iter(_PROBE_INDEX)))
        _PROBE_INDEX[key] = found
    return found


_PROBE_INDEX: dict = {}


def table(view):
    """The ascending distinct values of ``view`` (int64, one channel of a block) when there
    are few enough, else None. The count stops as soon as it passes the limit (compiled):
    most channels have too many distinct values, and show it within their first samples."""
    from qres.codec._mapping_kernels import distinct_at_most

    n = len(view)
    if n < 2 * DENSITY:
        return None
    if n > PROBE and distinct_at_most(view[probe_index(n, PROBE)], PROBE // DENSITY) is None:
        return None
    return distinct_at_most(view, n // DENSITY)


def ranks(view, values):
    """The rank of each sample of ``view`` in the ascending table ``values`` (compiled:
    ``np.searchsorted(values, view)``, through a table of ranks when the values span little)."""
    import numpy as np

    from qres.codec._mapping_kernels import sorted_ranks

    return sorted_ranks(
        np.ascontiguousarray(view, dtype=np.int64), np.ascontiguousarray(values, dtype=np.int64)
    )


def distinct_counts(values):
    """:func:`distinct` and how many times each value occurs (float64 runs counted compiled:
    ``_mapping_kernels.sorted_runs``; :func:`distinct_counts_numpy` is the reference)."""
    import numpy as np

    ordered = np.sort(values)
    if ordered.dtype == np.float64 and ordered.ndim == 1 and len(ordered) >= 2:
        from qres.codec._mapping_kernels import sorted_runs

        return sorted_runs(ordered)
    return _counted(ordered)


def distinct_counts_numpy(values):
    """:func:`distinct_counts` in numpy alone."""
    import numpy as np

    return _counted(np.sort(values))


def _counted(ordered):
    """The distinct values of sorted ``ordered`` (the first of each run) and their counts."""
    import numpy as np

    if len(ordered) < 2:
        return ordered, np.ones(len(ordered), dtype=np.int64)
    keep = np.empty(len(ordered), dtype=bool)
    keep[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=keep[1:])
    starts = np.flatnonzero(keep)
    return ordered[keep], np.diff(starts, append=len(ordered))


def lookup(ranks, values):
    """The table's values at ``ranks``; None when a rank is outside the table (damage)."""
    if len(ranks) and (int(ranks.min()) < 0 or int(ranks.max()) >= len(values)):
        return None
    return values[ranks]
