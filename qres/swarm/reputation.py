"""Reputation and defence: per-peer reputation with rewards, penalties and bans; the Grubbs
outlier test; the suspect list of coordinated groups.

Reputation is one Q16.16 integer in [0, 65536] per node, the swarm's shared ledger of each
peer: the evidence behind it (outlier flags, audit results, bans) travels with the gossip, so
every honest node holds the same value once the evidence has reached it. Bans take effect
``ban_propagation_rounds`` after they are decided (default: the rounds an epidemic with the
profile's fan-out needs to reach every node, ``ceil(log(n) / log(fanout + 1))``).

* Rewards: an update that passed the round's outlier tests and helped (its accuracy gain,
  measured by its receivers on their own data, was positive) earns ``rep_reward``.
* Penalties: a Grubbs outlier loses ``rep_penalty_outlier``; a member of a suspected
  coordinated group ``rep_penalty_suspect``; a failed audit ``rep_penalty_audit``.
* A node whose reputation falls below ``ban_threshold`` is banned, and so is a coordinated
  group once it has stayed suspect for ``suspect_rounds`` rounds and numbers at least
  ``suspect_group_size`` members (a member that passed an audit while suspect is cleared).

The Grubbs test (two-sided, significance ``grubbs_alpha``) runs on one statistic per update:
the log of its Euclidean distance to the coordinate-wise median of the round's updates.
Critical values use Student's t quantile, computed here from the regularised incomplete beta
function (continued fraction) and bisection; pure Python floats, so the same on every machine.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

REP_ONE = 1 << 16


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


def update_statistic(updates: Any) -> Any:
    """Per update: log(1 + Euclidean distance to the coordinate-wise median), float64."""
    import numpy as np

    x = updates.astype(np.float64)
    med = np.median(x, axis=0)
    return np.log1p(np.sqrt(((x - med) ** 2).sum(axis=1)))


def tightness(updates: Any, k: int, rng: Any, sample: int = 1024) -> Any:
    """Per update: distance to its ``k``-th nearest other update (in a seeded reference sample
    of at most ``sample`` updates) over the median of that quantity. Near zero for members of
    a group sending (almost) the same vector; about 1 for independent updates."""
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
    med = float(np.median(out))
    return out / med if med > 0 else np.ones(n)


class Ledger:
    """Reputations, bans and the suspect list of every node (arrays of length ``n``)."""

    def __init__(self, n: int, settings: Any):
        import numpy as np

        self.s = settings
        q = lambda v: int(math.floor(v * REP_ONE + 0.5))  # noqa: E731 - tiny local helper
        self.reward = q(settings.rep_reward)
        self.pen_outlier = q(settings.rep_penalty_outlier)
        self.pen_suspect = q(settings.rep_penalty_suspect)
        self.pen_audit = q(settings.rep_penalty_audit)
        self.ban_level = q(settings.ban_threshold)
        self.rep = np.full(n, q(settings.rep_initial), np.int64)
        self.banned_at = np.full(n, -1, np.int64)  # round the ban was decided, -1: never
        self.effective_at = np.full(n, -1, np.int64)  # round from which everyone knows it
        self.suspect_streak = np.zeros(n, np.int32)
        self.cleared = np.zeros(n, bool)  # passed an audit during the current suspicion
        fan = settings.fanout + 1
        auto = max(1, math.ceil(math.log(max(n, 2)) / math.log(fan)))
        self.delay = settings.ban_propagation_rounds or auto

    def fraction(self) -> Any:
        """Reputations as floats in [0, 1]."""
        return self.rep / REP_ONE

    def banned_known(self, r: int) -> Any:
        """Nodes whose ban every node knows by round ``r``."""
        return (self.effective_at >= 0) & (self.effective_at <= r)

    def banned(self) -> Any:
        """Nodes banned (decided), whether or not the ban has reached everyone yet."""
        return self.banned_at >= 0

    def adjust(self, nodes: Any, delta: int) -> None:
        """Add ``delta`` (Q16.16) to the reputation of ``nodes``, clamped to [0, 1]."""
        import numpy as np

        if len(nodes):
            self.rep[nodes] = np.clip(self.rep[nodes] + delta, 0, REP_ONE)

    def ban(self, nodes: Any, r: int) -> Any:
        """Ban ``nodes`` (not already banned) in round ``r``; returns the newly banned."""
        import numpy as np

        nodes = np.asarray(nodes, dtype=np.int64)
        new = nodes[self.banned_at[nodes] < 0]
        self.banned_at[new] = r
        self.effective_at[new] = r + self.delay
        self.rep[new] = 0
        return new

    def suspects(self, flagged: Any, audited_ok: Any, r: int, senders: int | None = None) -> Any:
        """Update the suspect list with this round's coordinated-group flags (bool ``(n,)``,
        for every node that sent, banned or not) and audit passes; returns the nodes banned
        as a coordinated group. A "group" holding half of the round's ``senders`` or more
        is the swarm agreeing, not a cartel (attackers are a minority): nobody is banned."""
        import numpy as np

        self.suspect_streak = np.where(flagged, self.suspect_streak + 1, 0).astype(np.int32)
        self.cleared = np.where(flagged, self.cleared | audited_ok, False)
        # The group's size counts members already banned (they keep sending alike); those
        # banned now are the unbanned members suspect for long enough and never cleared.
        size = np.count_nonzero(flagged & ~self.cleared)
        if size < self.s.suspect_group_size or (senders is not None and 2 * size >= senders):
            return np.zeros(0, np.int64)
        group = flagged & (self.suspect_streak >= self.s.suspect_rounds) & ~self.cleared
        group &= self.banned_at < 0
        if group.any():
            return self.ban(np.flatnonzero(group), r)
        return np.zeros(0, np.int64)

    def ban_low(self, r: int) -> Any:
        """Ban every node whose reputation fell below the threshold; returns them."""
        import numpy as np

        low = np.flatnonzero((self.rep < self.ban_level) & (self.banned_at < 0))
        return self.ban(low, r)
