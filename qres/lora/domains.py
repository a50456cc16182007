"""Domains found from the data: nodes on the same kind of sensor, grouped by what their
streams look like, when the deployment does not declare them.

Each node computes a :func:`signature` of a window of its stream: for every channel the
normalised autocorrelations of its first differences at lags 1..``lags``, how rough the
channel is (mean |difference| over mean |deviation from the mean|), and the correlation of
every pair of channels' differences. Every number is scale-free (a sensor's gain does not
matter, its dynamics do) and an integer in Q16.16, so every node computes the same
signature from the same samples. :func:`discover` then clusters the signatures of all nodes
by complete linkage on L1 distances (integers, ties to the lowest index) and cuts the tree at
its largest jump in merge distance: the clusters are as tight as the data makes them, and
no count of domains or distance threshold is set by hand. Every node that holds every
node's signature gets the same domains. :class:`Regrouping` keeps them current: a node whose
stream changes kind moves to the domain it now resembles, with hysteresis so domains do not
flap.
"""

from __future__ import annotations

import math
from typing import Any

from qres.fixed.q16 import ONE
from qres.robust.aggregate import div_round

#: Lags of the autocorrelations in a signature.
LAGS = 2


def _corr(u: list[int], v: list[int]) -> int:
    """``sum u v / sqrt(sum u**2 * sum v**2)`` in Q16.16 (0 when either is constant)."""
    energy = math.isqrt(sum(a * a for a in u) * sum(b * b for b in v))
    if energy == 0:
        return 0
    return div_round(sum(a * b for a, b in zip(u, v, strict=True)) * ONE, energy)


def signature(window: Any, lags: int = LAGS) -> list[int]:
    """The scale-free description of a (C, n) integer window (Q16.16 integers): per channel
    the autocorrelations of its differences at lags 1..``lags`` and its roughness, then the
    correlation of each pair of channels' differences."""
    import numpy as np

    x = np.asarray(window, dtype=np.int64)
    out: list[int] = []
    diffs = []
    for row in x:
        d = np.diff(row).tolist()
        diffs.append(d)
        for lag in range(1, lags + 1):
            out.append(_corr(d[:-lag], d[lag:]) if len(d) > lag else 0)
        n = len(row)
        deviation = int(np.abs(row * n - int(row.sum())).sum())  # n * sum |x - mean|, exact
        rough = int(np.abs(np.asarray(d)).sum()) * n * n  # n**2 * sum |d|
        out.append(div_round(rough * ONE, deviation * max(1, len(d))) if deviation else 0)
    for i in range(len(diffs)):
        for j in range(i + 1, len(diffs)):
            out.append(_corr(diffs[i], diffs[j]))
    return out


#: Mean silhouette below which the nodes show no substantial structure (Kaufman and
#: Rousseeuw 1990): they form one domain.
STRUCTURE = ONE // 4


#: Most domains :func:`discover` considers.
MAX_DOMAINS = 64


def silhouette(dist: Any, label: Any) -> int:
    """Mean silhouette (Rousseeuw 1987) of a labelling, Q16.16: per node
    ``(b - a) / max(a, b)`` with ``a`` its mean distance to the rest of its group and ``b``
    the smallest mean distance to another group (means in Q16.16, rounded by the rule); 0
    for a node alone in its group."""
    import numpy as np

    label = np.asarray(label)
    k = int(label.max()) + 1
    onehot = (label[:, None] == np.arange(k)[None, :]).astype(np.int64)
    sums = np.asarray(dist, dtype=np.int64) @ onehot  # node x group: summed distances
    sizes = onehot.sum(axis=0)
    own = sizes[label]
    a = div_round(sums[np.arange(len(label)), label] * ONE, np.maximum(own - 1, 1))
    other = div_round(sums * ONE, sizes[None, :])
    other[np.arange(len(label)), label] = np.iinfo(np.int64).max
    b = other.min(axis=1)
    top = np.maximum(a, b)
    s = np.where((own > 1) & (top > 0), div_round((b - a) * ONE, np.maximum(top, 1)), 0)
    return div_round(int(s.sum()), len(label))


def discover(signatures: list[list[int]]) -> list[int]:
    """Each node's domain (0, 1, ... in order of each domain's lowest node) from the nodes'
    signatures: complete-linkage clustering on L1 distances (ties to the lowest pair), the
    partition of at most :data:`MAX_DOMAINS` groups along the tree with the highest mean
    silhouette, one domain when even that shows no substantial structure (below
    :data:`STRUCTURE`). Integers throughout: every node computes the same domains."""
    import numpy as np

    sig = np.asarray(signatures, dtype=np.int64)
    n = len(sig)
    if n <= 2:
        return [0] * n
    dist = np.abs(sig[:, None, :] - sig[None, :, :]).sum(axis=2)
    label = np.arange(n)  # node -> cluster index (clusters kept in order of lowest node)
    d = dist.copy()
    big = np.iinfo(np.int64).max
    np.fill_diagonal(d, big)
    best_score, best = STRUCTURE, np.zeros(n, dtype=np.int64)
    for k in range(n, 2, -1):  # k clusters now; merge to k - 1
        flat = int(np.argmin(np.where(np.triu(np.ones((k, k), bool), 1), d, big)))
        i, j = divmod(flat, k)  # i < j: the first closest pair
        d[i, :] = np.maximum(d[i, :], d[j, :])  # complete linkage
        d[:, i] = d[i, :]
        d[i, i] = big
        d = np.delete(np.delete(d, j, axis=0), j, axis=1)
        label = np.where(label == j, i, label)
        label = np.where(label > j, label - 1, label)
        if k - 1 <= MAX_DOMAINS:
            score = silhouette(dist, label)
            if score >= best_score:  # ties: fewer domains (later in the merging)
                best_score, best = score, label.copy()
    # number the domains by their lowest node
    order = {int(c): g for g, c in enumerate(dict.fromkeys(best.tolist()))}
    return [order[int(c)] for c in best.tolist()]


def _distance(u: Any, v: Any) -> int:
    """L1 distance of two signatures (integers)."""
    return sum(abs(int(a) - int(b)) for a, b in zip(u, v, strict=True))


#: A node's running signature follows its newest window with weight ``2**-RUNNING_SHIFT``
#: (the weight the depth scores follow windows with): about four windows' worth, so one odd
#: window does not draw a node away (at weight 1/2 nodes in loose domains went back and forth).
RUNNING_SHIFT = 2


class Regrouping:
    """Domains that follow the streams: discovered once from the nodes' first windows
    (:func:`discover`), then each node moves to the domain its stream now resembles.

    Every round each node publishes the signature of its newest window and keeps a running
    signature (weight ``2**-shift``). Each domain has a *prototype*: the integer mean of its
    members' *anchors*, the running signature a member had when it joined (its discovery
    signature at the start). A node is drawn to the domain whose prototype is nearest its
    running signature (L1; ties to the lowest domain) when that is nearer than its own
    domain's prototype by the ``margin`` (``d_other < (1 - margin) * d_own``); it moves
    when the same domain has drawn it ``patience`` rounds in a row, and its anchor becomes
    its running signature (``patience`` 0: nobody moves). Hysteresis twice over: the margin,
    and the patience; and the prototypes rest on anchors, so they do not drift with one
    node's passing windows.

    All nodes decide on the prototypes at the start of the round (the result does not depend
    on the nodes' order); integers throughout, so every node that holds every node's
    signatures computes the same moves. The number of domains is the discovered one: a
    domain whose members have all left stays empty (and draws nobody)."""

    def __init__(
        self, signatures: list[list[int]], margin_q: int, patience: int, shift: int = RUNNING_SHIFT
    ):
        self.label = discover(signatures)
        self.first = list(self.label)  # the domains as discovered
        self.anchor = [list(s) for s in signatures]
        self.running = [list(s) for s in signatures]
        self.margin_q, self.patience, self.shift = margin_q, patience, shift
        self.drawn: list[tuple[int, int] | None] = [None] * len(signatures)  # (domain, rounds)
        self.moves: list[tuple[int, int, int, int]] = []  # (round, node, from, to)
        self.round = 0

    def groups(self) -> dict[int, list[int]]:
        """Domain -> its members in node order (empty domains left out)."""
        out: dict[int, list[int]] = {}
        for i, g in enumerate(self.label):
            out.setdefault(g, []).append(i)
        return dict(sorted(out.items()))

    def prototypes(self) -> dict[int, list[int]]:
        """Each non-empty domain's prototype: its members' anchors averaged (rounded)."""
        out = {}
        for g, members in self.groups().items():
            sums = [sum(self.anchor[i][k] for i in members) for k in range(len(self.anchor[0]))]
            out[g] = [div_round(s, len(members)) for s in sums]
        return out

    def observe(self, signatures: list[list[int]], changed: Any = ()) -> list[tuple[int, int, int]]:
        """One round: every node's newest signature, and the nodes whose own change test
        (:class:`qres.lora.personal.Personal`) found their stream changed this round: their
        running signature restarts at the newest one (the old regime's windows no longer
        describe the stream). Returns the moves (node, from, to)."""
        self.round += 1
        step = 1 << self.shift
        for i, sig in enumerate(signatures):
            if i in changed:
                self.running[i] = list(sig)
                continue
            run = self.running[i]
            self.running[i] = [r + div_round(s - r, step) for r, s in zip(run, sig, strict=True)]
        if self.patience == 0:
            return []
        proto = self.prototypes()
        moves = []
        for i, own in enumerate(self.label):
            near = {g: _distance(self.running[i], p) for g, p in proto.items()}
            other = min((d, g) for g, d in near.items() if g != own) if len(near) > 1 else None
            if other is None or other[0] * ONE >= (ONE - self.margin_q) * near[own]:
                self.drawn[i] = None
                continue
            g = other[1]
            rounds = self.drawn[i][1] + 1 if self.drawn[i] and self.drawn[i][0] == g else 1
            self.drawn[i] = (g, rounds)
            if rounds >= self.patience:
                moves.append((i, own, g))
        for i, old, new in moves:
            self.label[i], self.anchor[i], self.drawn[i] = new, list(self.running[i]), None
            self.moves.append((self.round, i, old, new))
        return moves
