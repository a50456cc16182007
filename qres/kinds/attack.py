"""The attack kind: forgers of Byzantine model updates, for testing aggregators.

An attack takes the honest ``(h, d)`` int32 Q16.16 updates, the number ``f`` of Byzantine rows
to forge and a seeded ``numpy.random.Generator``, and returns ``(f, d)`` int32 Q16.16 rows
(saturated into the Q16.16 range). Attacks see every honest update (the omniscient threat
model of the papers they come from). All randomness comes from the generator passed in, so a
seed reproduces a run; statistics of the honest rows are computed in float64.

A simulator also passes an :class:`AttackContext` (the round, the Byzantine nodes' own honest
updates, their reputations, the audit rate): attacks that adapt to the defence override
:meth:`Attack._forge_in` to read it; the others implement :meth:`Attack._forge` only. Before
the nodes train, the simulator offers :meth:`Attack.choose_base`: an attack may pick the
models its nodes train from (base poisoning).
"""

from __future__ import annotations

import operator
from abc import abstractmethod
from typing import TYPE_CHECKING, Any

import attrs

from qres.fixed.q16 import round_units
from qres.kernel.errors import QresError
from qres.kernel.plugins import Plugin

if TYPE_CHECKING:
    import numpy as np


@attrs.frozen
class AttackContext:
    """What a simulator tells an attack about the round (rows in the order of the forged
    ones). Every field is optional to an attack: ignore what you do not use."""

    #: The round number (from 0).
    round: int = 0
    #: The Byzantine nodes' ids, one per forged row.
    nodes: Any = None
    #: Their own honest updates this round (``(f, d)`` int32): what behaving would send.
    own: Any = None
    #: Their reputations (floats in [0, 1]), public knowledge in a swarm.
    reputations: Any = None
    #: The base chance that an update is audited.
    audit_rate: float = 0.0
    #: The chance that a receiver checks a packet in full (its update and its round step,
    #: the base it publishes), besides the audits.
    check_rate: float = 0.0
    #: How many peers each packet is sent to (the swarm's ``fanout``, public): every one of
    #: them checks it with chance ``check_rate``; forwards add more.
    receivers: int = 1

    def select(self, rows: Any) -> AttackContext:
        """The context of a subset of the forged rows (for attacks that split the nodes)."""

        def pick(v):
            return None if v is None else v[rows]

        return attrs.evolve(
            self, nodes=pick(self.nodes), own=pick(self.own), reputations=pick(self.reputations)
        )


class Attack(Plugin):
    """Base class of attacks (plugin kind ``attack``): subclasses implement :meth:`_forge`."""

    def forge(self, honest: Any, f: int, *, rng: Any, context: Any = None) -> np.ndarray:
        """Forge ``f`` Byzantine rows (``(f, d)`` int32 Q16.16) from the honest updates.

        ``honest`` is an ``(h, d)`` int32 array with ``h, d >= 1``; ``rng`` a
        ``numpy.random.Generator``; ``context`` an optional :class:`AttackContext`. Raises
        :class:`QresError` on malformed input; never modifies ``honest``.
        """
        import numpy as np

        if not isinstance(honest, np.ndarray) or honest.ndim != 2 or honest.dtype != np.int32:
            raise QresError(
                f"attack {self.name!r}: honest updates must be a 2-D int32 Q16.16 array, got "
                f"{getattr(honest, 'shape', type(honest).__name__)}; stack one row per node"
            )
        if honest.shape[0] < 1 or honest.shape[1] < 1:
            raise QresError(
                f"attack {self.name!r}: need at least one honest row and column, got shape "
                f"{honest.shape}; pass the honest updates"
            )
        try:
            if isinstance(f, bool):
                raise TypeError
            f = operator.index(f)
        except TypeError:
            raise QresError(
                f"attack {self.name!r}: f must be an integer, got {f!r}; pass the Byzantine count"
            ) from None
        if f < 0:
            raise QresError(f"attack {self.name!r}: f={f} is negative; pass f >= 0")
        if not isinstance(rng, np.random.Generator):
            raise QresError(
                f"attack {self.name!r}: rng must be a numpy.random.Generator, got "
                f"{type(rng).__name__}; pass numpy.random.default_rng(seed)"
            )
        view = honest.view()
        view.flags.writeable = False
        if f == 0:
            return np.zeros((0, honest.shape[1]), np.int32)
        if context is not None and not isinstance(context, AttackContext):
            raise QresError(
                f"attack {self.name!r}: context must be an AttackContext, got "
                f"{type(context).__name__}"
            )
        out = self._forge_in(view, f, rng, context)
        return np.ascontiguousarray(out, dtype=np.int32)

    def choose_base(self, weights: Any, *, rng: Any, context: Any = None) -> Any:
        """The simulator's hook before the Byzantine nodes train: ``weights`` are their
        models (``(f, d)`` int32, read-only, rows in the order of ``context.nodes``); return
        the ``(f, d)`` int32 models they train from and commit to instead, or None to keep
        them (the default). A base that is not the node's committed round step is base
        poisoning, which the round-step audit catches (docs/defence.md)."""
        return None

    def choose_inputs(self, origins: Any, weights: Any, *, rng: Any, context: Any = None) -> Any:
        """The simulator's hook when one Byzantine node aggregates: ``origins`` are the
        senders of the rows it received and would take (``(m,)`` int64, highest priority
        first), ``weights`` the Q16.16 reputations the rule gives its own row and theirs
        (``(m + 1,)`` int64, own first), or None when the rule takes no weights;
        ``context.nodes`` are every Byzantine node. Return None to aggregate as the rules
        say (the default), or ``(keep, weights)``: a bool mask of the rows to take and the
        weights to give the rule (own first, one per kept row; None when it takes none).
        Weights other than the public reputations make a wrong round step, which a check
        catches; which received rows a node leaves out does not (it looks like loss)."""
        return None

    def _forge_in(self, honest: np.ndarray, f: int, rng: Any, context: Any) -> np.ndarray:
        """Forge with the simulator's context (None outside a simulation); by default the
        context is ignored and :meth:`_forge` runs."""
        return self._forge(honest, f, rng)

    @abstractmethod
    def _forge(self, honest: np.ndarray, f: int, rng: Any) -> np.ndarray:
        raise NotImplementedError(f"attack {self.name!r} does not implement _forge")


def from_real(values: Any) -> np.ndarray:
    """Float64 Q16.16 *units* (not real values) rounded by the rule and saturated to int32."""
    return round_units(values)


def honest_stats(honest: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Coordinate-wise mean and (population) standard deviation, in Q16.16 units, float64."""
    import numpy as np

    h = honest.astype(np.float64)
    return h.mean(axis=0), h.std(axis=0)
