"""One integer LoRA layer of the hierarchy: A and B in Q16.16 and the layer's bookkeeping.

The adapter of a d_out x d_in weight is ``delta = round(B @ A / 2**16)`` (Q16.16), with A
(rank x d_in) drawn as the numpy LoRA layer draws it (:func:`initial_a_q16`, the same on every
machine) and B (d_out x rank) starting at zero, so a new layer changes nothing. Parameters are
clamped to +-128.0 so every product sum stays exact in int64.

A layer whose rank would give it at least as many parameters as the weight itself
(``rank * (d_in + d_out) >= d_in * d_out``, e.g. any rank on a 2 x 4 weight) is *dense*: A is
the identity, frozen, and B is a full d_out x d_in delta. A low-rank factorisation only pays
when it is smaller than the matrix; below that it costs more and learns worse (A's rows must
first turn toward the directions the data needs, which they do only through ``B^T G``).
"""

from __future__ import annotations

from collections import deque
from typing import Any

import attrs

from qres.fixed.q16 import ONE

#: Parameters and gradients are clamped to +-128.0 (Q16.16): sums of rank products stay < 2**63.
PARAM_LIMIT = 1 << 23
#: Largest model width the hierarchy adapts.
MAX_WIDTH = 1 << 12


def clamp(values: Any):
    """int64 ``values`` clamped to +-PARAM_LIMIT, as int32."""
    import numpy as np

    return np.clip(values, -PARAM_LIMIT, PARAM_LIMIT).astype(np.int32)


def qmatmul(x: Any, y: Any):
    """``round(x @ y / 2**16)`` of Q16.16 matrices, int64 (exact: both clamped to PARAM_LIMIT)."""
    import numpy as np

    from qres.robust.aggregate import div_round

    return div_round(np.asarray(x, dtype=np.int64) @ np.asarray(y, dtype=np.int64), ONE)


def is_dense(rank: int, d_out: int, d_in: int) -> bool:
    """True when a rank-``rank`` factorisation has no fewer parameters than the weight."""
    return 2 * rank * (d_in + d_out) >= d_in * d_out


@attrs.define(eq=False)
class Transfer:
    """A pattern moving from a source component to a destination slot, a share per tick."""

    src_role: str
    src_slot: int
    dst_role: str
    dst_slot: int | None  # None: a dense destination takes the outer product into B
    remaining: Any  # the part of B's column still in the source (int64, d_out)


@attrs.define(eq=False)
class Layer:
    """The state of one role's adapter; the hierarchy drives it (see qres.lora.hierarchy)."""

    role: str
    rank: int
    d_out: int
    d_in: int
    a: Any
    b: Any
    a0: Any
    b0: Any
    trace_a: Any
    trace_b: Any
    history: deque
    threshold_q: int = 0
    density_q: int = 0
    contributions: int = 0
    updates: int = 0
    moves: int = 0  # updates that moved at least one parameter
    amplified: int = 0
    damped: int = 0
    spread_q: int = 0
    last_dense: Any = None
    busy: set = attrs.field(factory=set)  # components queued or moving: not offered again
    dense: bool = False  # A is the frozen identity (see the module docstring)

    @classmethod
    def new(cls, role: str, rank: int, d_out: int, d_in: int, seed: int, window: int) -> Layer:
        """A fresh layer: A from the seeded draw (the identity when dense), B zero."""
        import numpy as np

        from qres.builtin_plugins.lora.numpy_lora import NumpyLoRAConfig, initial_a_q16

        dense = is_dense(rank, d_out, d_in)
        if dense:
            rank = d_in
            a = (np.eye(d_in, dtype=np.int64) * ONE).astype(np.int32)
        else:
            cfg = NumpyLoRAConfig(d_in=d_in, d_out=d_out, rank=rank, role=role, seed=seed)
            a = initial_a_q16(cfg)
        b = np.zeros((d_out, rank), dtype=np.int32)
        return cls(
            role=role,
            rank=rank,
            d_out=d_out,
            d_in=d_in,
            a=a,
            b=b,
            a0=a.copy(),
            b0=b.copy(),
            trace_a=np.zeros_like(a),
            trace_b=np.zeros_like(b),
            history=deque(maxlen=window),
            dense=dense,
        )

    @property
    def params(self) -> int:
        """Parameters of the layer: ``rank * (d_in + d_out)``."""
        return self.rank * (self.d_in + self.d_out)

    def delta(self):
        """The dense adapter ``round(B @ A / 2**16)`` (d_out x d_in int64)."""
        return qmatmul(self.b, self.a)

    def grads(self, grad_w: Any):
        """LoRA gradients of a dense Q16.16 gradient G: ``(round(B^T G), round(G A^T))``."""
        g = clamp(grad_w)
        return qmatmul(self.b.T, g), qmatmul(g, self.a.T)

    def drift(self) -> int:
        """Sum of |parameter - initial value| over A and B (Q16.16 units)."""
        import numpy as np

        da = np.abs(self.a.astype(np.int64) - self.a0).sum()
        db = np.abs(self.b.astype(np.int64) - self.b0).sum()
        return int(da + db)

    def component_norm(self, k: int) -> int:
        """``|B[:, k]|_1 * |A[k, :]|_1 / 2**16``: how much component k contributes."""
        import numpy as np

        nb = int(np.abs(self.b[:, k].astype(np.int64)).sum())
        na = int(np.abs(self.a[k].astype(np.int64)).sum())
        return nb * na // ONE
