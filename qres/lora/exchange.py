"""One shared layer's turn on the wire, the step the simulator and the real node both run.

:mod:`qres.lora.swarm` (``qres swarm simulate --profile swarm-lora``) and :mod:`qres.node.lora`
(``qres node run`` with a ``[lora]`` profile) call these functions and nothing else to move
a shared layer, so the same inputs give the same adapter bits in both:

1. the layer of round ``r`` is :func:`role_of_round` (foundation, domain, swarm, foundation,
   ...: a public schedule every node follows without talking);
2. each node sends :func:`change`: its layer's parameters (B, and A when the layer is not
   dense, in :func:`layer_keys` order) minus the *base*, the last aggregate of that layer it
   formed (the layer's initial values, :func:`initial`, before any), as Q16.16 int32 rows;
3. :func:`combine` aggregates the group's rows with the profile's aggregator, tolerating
   ``assumed_byzantine`` of them (at most what the aggregator accepts for that many rows), and
   adds the aggregate to the base: the new base;
4. :func:`split` shapes the new base back into the layer's matrices, which each node screens on
   its newest window and takes (:meth:`qres.lora.personal.Personal.absorb`).

Every number is an integer and every aggregator of the kind is order-free, so a node's view
of a group's rows gives the same bits as the simulator's whatever order they arrived in.
"""

from __future__ import annotations

from typing import Any

from qres.kernel.errors import QresError
from qres.lora.hierarchy import SHARED_ROLES

#: Bytes of one parameter on the wire (Q16.16 int32).
PARAM_BYTES = 4


def role_of_round(r: int) -> str:
    """The shared layer whose turn round ``r`` is."""
    return SHARED_ROLES[r % len(SHARED_ROLES)]


def layer_keys(node: Any, role: str) -> list[str]:
    """The matrices of shared ``role`` that travel, in wire order (``"a"`` before ``"b"``)."""
    return sorted(node.shared(role))


def flat(node: Any, role: str, keys: list[str] | None = None):
    """The node's current parameters of ``role`` in wire order (int64)."""
    import numpy as np

    parts = node.shared(role)
    keys = sorted(parts) if keys is None else keys
    return np.concatenate([parts[k].reshape(-1) for k in keys]).astype(np.int64)


def initial(node: Any, role: str, keys: list[str] | None = None):
    """The layer's initial parameters (A from the seed, B zero) in wire order (int64): the
    base before the layer's first aggregate."""
    import numpy as np

    keys = layer_keys(node, role) if keys is None else keys
    layer = node.h.layers[role]
    init = {"a": layer.a0, "b": layer.b0}
    return np.concatenate([init[k].reshape(-1) for k in keys]).astype(np.int64)


def size(node: Any, role: str) -> int:
    """Parameters one row of ``role`` carries."""
    return int(sum(v.size for v in node.shared(role).values()))


def change(node: Any, role: str, base: Any):
    """What the node sends for ``role``: its parameters minus ``base``, saturated to int32."""
    import numpy as np

    row = flat(node, role) - np.asarray(base, np.int64)
    return np.clip(row, -(1 << 31), (1 << 31) - 1).astype(np.int32)


def tolerable(aggregator: Any, m: int, f: int) -> int:
    """The largest f' <= f the aggregator accepts for m rows."""
    while f > 0:
        try:
            aggregator.check_f(m, f)
            return f
        except QresError:
            f -= 1
    return 0


def combine(aggregator: Any, rows: Any, base: Any, assumed_byzantine: float, rng: Any):
    """The new base: ``base`` plus the robust aggregate of ``rows`` (m x n int32), tolerating
    ``assumed_byzantine * m`` of them (at most ``(m - 1) // 2`` and what the rule accepts)."""
    import numpy as np

    m = len(rows)
    f = min(int(assumed_byzantine * m), (m - 1) // 2)
    f = tolerable(aggregator, m, f)
    agg = np.asarray(aggregator.aggregate(rows, f=f, rng=rng), np.int64)
    return np.asarray(base, np.int64) + agg


def split(node: Any, role: str, new: Any) -> dict:
    """``new`` (a base in wire order) as the layer's matrices, for
    :meth:`~qres.lora.personal.Personal.absorb`."""
    import numpy as np

    parts = node.shared(role)
    out, at = {}, 0
    for k in sorted(parts):
        shape = parts[k].shape
        count = int(np.prod(shape))
        out[k] = new[at : at + count].reshape(shape)
        at += count
    return out
