"""The LoRA layer kind: low-rank adapters with a role and an inertia, stacked into a hierarchy.

A LoRA layer (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models",
arXiv:2106.09685) adapts a frozen weight ``W`` (d_out x d_in) by a low-rank product: the
adapted weight is ``W + (alpha / rank) * B @ A`` with ``A`` (rank x d_in) and ``B``
(d_out x rank). qres gives every layer a *role* in a hierarchy, from slow and shared to fast
and local: foundation -> domain -> swarm -> agent -> context, and an *inertia* in [0, 1): the
share of every update the layer resists (``delta_applied = (1 - inertia) * delta``), so
foundation layers move slowly and context layers quickly.

Layers exchange their matrices as Q16.16 int32 arrays (:func:`to_q16`, :func:`from_q16`), the
swarm's deterministic wire format; the float arithmetic inside a layer is numpy's.

This module imports numpy only inside functions, so loading plugins stays fast.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from qres.fixed.q16 import ONE, Q_MAX, Q_MIN
from qres.kernel.config import Location
from qres.kernel.errors import FixedPointError, ProfileError, QresError
from qres.kernel.plugins import Plugin

if TYPE_CHECKING:
    import numpy as np

#: The hierarchy's roles, in the order their deltas are summed (slowest and most shared first).
ROLES = ("foundation", "domain", "swarm", "agent", "context")


def _first_index(mask: np.ndarray) -> tuple[int, ...]:
    import numpy as np

    return tuple(int(i) for i in np.argwhere(mask)[0])


def to_q16(values: Any, what: str) -> np.ndarray:
    """``values`` as Q16.16 int32: ``np.round(values * 65536)`` (ties to even).

    Raises :class:`FixedPointError` naming ``what`` and the first offending index when a value
    is not finite or does not fit in [-32768, 32768).
    """
    import numpy as np

    array = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(array)
    if not finite.all():
        index = _first_index(~finite)
        raise FixedPointError(
            f"{what}{list(index)} is {array[index]}; Q16.16 holds finite values only, "
            "check the training for a divergence"
        )
    scaled = np.round(array * ONE)
    outside = (scaled < Q_MIN) | (scaled > Q_MAX)
    if outside.any():
        index = _first_index(outside)
        raise FixedPointError(
            f"{what}{list(index)} = {array[index]} does not fit Q16.16 [-32768, 32768); "
            "lower the learning rate or raise the inertia"
        )
    return scaled.astype(np.int32)


def from_q16(values: Any, shape: tuple[int, ...], what: str) -> np.ndarray:
    """Q16.16 integers of ``shape`` as float32 (exact for values of magnitude below 256).

    Raises :class:`QresError` if ``values`` is not an integer array of that shape, or
    :class:`FixedPointError` if a value is outside int32.
    """
    import numpy as np

    array = np.asarray(values)
    if not np.issubdtype(array.dtype, np.integer):
        raise QresError(f"{what}: Q16.16 data has dtype {array.dtype}; give an int32 array")
    if array.shape != tuple(shape):
        raise QresError(f"{what}: Q16.16 data has shape {array.shape}; expected {tuple(shape)}")
    if array.size and (array.min() < Q_MIN or array.max() > Q_MAX):
        raise FixedPointError(f"{what}: a Q16.16 value is outside int32; the data is corrupt")
    return (array.astype(np.float64) / ONE).astype(np.float32)


class LoRALayer(Plugin):
    """Base of LoRA layer plugins.

    A layer's ``Config`` has at least ``d_in``, ``d_out``, ``rank``, ``alpha``, ``inertia`` and
    ``role`` (one of :data:`ROLES`); the properties below read them. Subclasses implement
    :meth:`forward`, :meth:`delta_weight`, :meth:`update`, :meth:`export_q16` and
    :meth:`import_q16`; :meth:`merge_into` is built on :meth:`delta_weight`.
    """

    @property
    def role(self) -> str:
        """The layer's place in the hierarchy, one of :data:`ROLES`."""
        return self.config.role

    @property
    def d_in(self) -> int:
        """Input width: columns of the adapted weight."""
        return self.config.d_in

    @property
    def d_out(self) -> int:
        """Output width: rows of the adapted weight."""
        return self.config.d_out

    @property
    def rank(self) -> int:
        """Rank of the adapter: rows of A, columns of B."""
        return self.config.rank

    @property
    def inertia(self) -> float:
        """Share of each update the layer resists, in [0, 1)."""
        return self.config.inertia

    @property
    def scaling(self) -> float:
        """The LoRA scaling ``alpha / rank`` applied to ``B @ A``."""
        return self.config.alpha / self.config.rank

    @abstractmethod
    def forward(self, x: Any, base: Any = None) -> np.ndarray:
        """The layer's delta for inputs ``x`` (..., d_in): ``scaling * x @ A.T @ B.T``
        (..., d_out), added to ``base`` (the frozen layer's output) when one is given."""
        raise NotImplementedError(f"lora layer {self.name!r} does not implement forward")

    @abstractmethod
    def delta_weight(self) -> np.ndarray:
        """The dense delta ``scaling * B @ A`` (d_out x d_in)."""
        raise NotImplementedError(f"lora layer {self.name!r} does not implement delta_weight")

    @abstractmethod
    def update(self, grad_A: Any, grad_B: Any, lr: float) -> None:
        """One gradient step resisted by the inertia: ``A -= (1 - inertia) * lr * grad_A``
        and likewise for B."""
        raise NotImplementedError(f"lora layer {self.name!r} does not implement update")

    @abstractmethod
    def export_q16(self) -> tuple[np.ndarray, np.ndarray]:
        """A and B as Q16.16 int32 arrays (see :func:`to_q16`)."""
        raise NotImplementedError(f"lora layer {self.name!r} does not implement export_q16")

    @abstractmethod
    def import_q16(self, a_q16: Any, b_q16: Any) -> None:
        """Replace A and B by Q16.16 int32 arrays of their shapes (see :func:`from_q16`)."""
        raise NotImplementedError(f"lora layer {self.name!r} does not implement import_q16")

    def merge_into(self, weight: Any) -> np.ndarray:
        """A new array ``weight + delta_weight()``; ``weight`` (d_out x d_in) is not modified,
        so one shared frozen matrix can be merged with many nodes' adapters."""
        import numpy as np

        w = np.asarray(weight, dtype=np.float64)
        if w.shape != (self.d_out, self.d_in):
            raise QresError(
                f"lora layer {self.role}: weight has shape {w.shape}; "
                f"expected ({self.d_out}, {self.d_in})"
            )
        return w + self.delta_weight()


class LoRAStack:
    """Several LoRA layers over the same weight, one per role, applied in hierarchy order.

    The stack's delta is the sum of its layers' deltas taken in :data:`ROLES` order (foundation
    first), whatever order the layers were given in, so the float sum is always formed the same
    way. Roles may be missing; each role may appear once.
    """

    def __init__(self, layers: Iterable[LoRALayer]):
        given = list(layers)
        if not given:
            raise QresError("lora stack: no layers; give at least one LoRA layer")
        seen: dict[str, LoRALayer] = {}
        for layer in given:
            if not isinstance(layer, LoRALayer):
                raise QresError(f"lora stack: {layer!r} is not a LoRA layer plugin")
            if layer.role in seen:
                raise QresError(
                    f"lora stack: two layers have role {layer.role!r}; give each role once"
                )
            seen[layer.role] = layer
        first = given[0]
        for layer in given:
            if (layer.d_in, layer.d_out) != (first.d_in, first.d_out):
                raise QresError(
                    f"lora stack: layer {layer.role!r} is {layer.d_out}x{layer.d_in} but "
                    f"layer {first.role!r} is {first.d_out}x{first.d_in}; use one shape"
                )
        self.layers: tuple[LoRALayer, ...] = tuple(seen[r] for r in ROLES if r in seen)

    @classmethod
    def from_tables(cls, tables: Sequence[Mapping[str, Any]], where: Location) -> LoRAStack:
        """Build a stack from a profile's ``[[lora.layers]]`` tables; errors name the table."""
        from qres.kernel import plugins

        if isinstance(tables, (str, bytes)) or not isinstance(tables, Sequence):
            raise ProfileError(f"{where}: expected an array of LoRA layer tables")
        layers = [plugins.create("lora_layer", t, where.child(i)) for i, t in enumerate(tables)]
        try:
            return cls(layers)
        except ProfileError:
            raise
        except QresError as exc:
            raise ProfileError(f"{where}: {exc}") from exc

    @property
    def roles(self) -> tuple[str, ...]:
        """The roles present, in hierarchy order."""
        return tuple(layer.role for layer in self.layers)

    @property
    def d_in(self) -> int:
        """Input width shared by all layers."""
        return self.layers[0].d_in

    @property
    def d_out(self) -> int:
        """Output width shared by all layers."""
        return self.layers[0].d_out

    def layer(self, role: str) -> LoRALayer:
        """The layer with ``role``, or a QresError naming the roles present."""
        for layer in self.layers:
            if layer.role == role:
                return layer
        raise QresError(f"lora stack: no {role!r} layer; roles present: {', '.join(self.roles)}")

    def forward(self, x: Any, base: Any = None) -> np.ndarray:
        """The summed deltas of all layers for ``x``, added to ``base`` when one is given."""
        total = self.layers[0].forward(x, base)
        for layer in self.layers[1:]:
            total = total + layer.forward(x)
        return total

    def delta_weight(self) -> np.ndarray:
        """The sum of the layers' dense deltas, in hierarchy order."""
        total = self.layers[0].delta_weight()
        for layer in self.layers[1:]:
            total = total + layer.delta_weight()
        return total

    def merge_into(self, weight: Any) -> np.ndarray:
        """A new array: ``weight`` plus every layer's delta in hierarchy order."""
        merged = self.layers[0].merge_into(weight)
        for layer in self.layers[1:]:
            merged = merged + layer.delta_weight()
        return merged

    def memory_bytes(self) -> int:
        """The RAM all layers need, as each plugin declares it."""
        return sum(type(layer).memory_bytes(layer.config) for layer in self.layers)
