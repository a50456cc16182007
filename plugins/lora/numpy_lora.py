"""The numpy LoRA layer: float32 A and B matrices with inertia, exported as Q16.16."""

from __future__ import annotations

import hashlib
import math
from typing import Any

import attrs

from qres.fixed.q16 import ONE
from qres.kernel.config import InvalidSetting, integer, one_of
from qres.kernel.errors import QresError
from qres.kernel.hookspecs import hookimpl
from qres.kinds.lora import ROLES, LoRALayer, from_q16, to_q16

#: Bytes of one float32 parameter.
FLOAT32_BYTES = 4
#: Largest alpha accepted.
MAX_ALPHA = 65536.0


def _rank_fits(inst, attribute, value):
    integer(1, 4096)(inst, attribute, value)
    if value > min(inst.d_in, inst.d_out):
        raise InvalidSetting(
            attribute.name,
            value,
            f"an integer in [1, min(d_in, d_out) = {min(inst.d_in, inst.d_out)}]",
        )


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _positive_alpha(inst, attribute, value):
    if not (_is_number(value) and 0 < value <= MAX_ALPHA):
        raise InvalidSetting(attribute.name, value, f"a number in (0, {MAX_ALPHA:g}]")


def _inertia(inst, attribute, value):
    if not (_is_number(value) and 0 <= value < 1):
        raise InvalidSetting(attribute.name, value, "a number in [0, 1)")


@attrs.frozen
class NumpyLoRAConfig:
    """Settings of a numpy LoRA layer.

    * ``d_in``, ``d_out``: shape of the adapted weight (d_out x d_in).
    * ``rank``: rank r of the adapter, at most min(d_in, d_out).
    * ``alpha``: the delta is scaled by alpha / rank.
    * ``inertia``: share of each update resisted, in [0, 1).
    * ``role``: place in the hierarchy, one of foundation, domain, swarm, agent, context.
    * ``seed``: seeds A's initial values.
    """

    d_in: int = attrs.field(default=16, validator=integer(1, 1 << 16))
    d_out: int = attrs.field(default=16, validator=integer(1, 1 << 16))
    rank: int = attrs.field(default=4, validator=_rank_fits)
    alpha: float = attrs.field(default=4.0, validator=_positive_alpha)
    inertia: float = attrs.field(default=0.0, validator=_inertia)
    role: str = attrs.field(default="agent", validator=one_of(*ROLES))
    seed: int = attrs.field(default=0, validator=integer(0, (1 << 64) - 1))


def initial_a_q16(config: NumpyLoRAConfig):
    """A's initial values as Q16.16 int32 (rank x d_in), the same on every machine.

    Uniform in [-b, b] with ``b = int(65536 / sqrt(d_in))``, i.e. in +-1/sqrt(d_in) (the bound
    of the Kaiming-uniform init of the LoRA reference code). The randomness is the SHAKE-256 of
    ``b"qres-lora-A" || seed (8 bytes big-endian) || role (UTF-8) || d_in, d_out, rank (4 bytes
    big-endian each)``, read as little-endian uint32 words u, mapped by ``(u * (2b+1)) >> 32``.
    """
    import numpy as np

    count = config.rank * config.d_in
    material = (
        b"qres-lora-A"
        + config.seed.to_bytes(8, "big")
        + config.role.encode("utf-8")
        + b"".join(n.to_bytes(4, "big") for n in (config.d_in, config.d_out, config.rank))
    )
    words = np.frombuffer(hashlib.shake_256(material).digest(4 * count), dtype="<u4")
    bound = int(ONE / math.sqrt(config.d_in))
    drawn = (words.astype(np.uint64) * np.uint64(2 * bound + 1)) >> np.uint64(32)
    return (drawn.astype(np.int64) - bound).astype(np.int32).reshape(config.rank, config.d_in)


class NumpyLoRALayer(LoRALayer):
    """A LoRA layer (Hu et al. 2021, arXiv:2106.09685) held as float32 numpy arrays.

    ``A`` (rank x d_in) starts small and random (see :func:`initial_a_q16`: Q16.16 values, so it
    exports exactly) and ``B`` (d_out x rank) starts at zero, so a new layer's delta is zero, as
    in the paper. ``forward(x, base)`` returns ``scaling * x @ A.T @ B.T`` (plus ``base`` if
    given) in float64; ``backward`` gives the gradients of A and B for an upstream gradient;
    ``update(grad_A, grad_B, lr)`` applies ``delta = -(1 - inertia) * lr * grad`` in float32 and
    keeps the applied deltas in update buffers (``last_update``) for gossip to share.

    ``memory_bytes`` is the float32 bytes of A, B and their two update buffers:
    ``2 * 4 * rank * (d_in + d_out)``.
    """

    name = "numpy-lora"
    Config = NumpyLoRAConfig

    def __init__(self, config: NumpyLoRAConfig | None = None):
        super().__init__(config)
        import numpy as np

        cfg = self.config
        self._a = from_q16(initial_a_q16(cfg), (cfg.rank, cfg.d_in), self._where("A"))
        self._b = np.zeros((cfg.d_out, cfg.rank), dtype=np.float32)
        self._last_a = np.zeros_like(self._a)
        self._last_b = np.zeros_like(self._b)

    @classmethod
    def memory_bytes(cls, config: NumpyLoRAConfig) -> int:
        """float32 A and B plus an update buffer of each: ``8 * rank * (d_in + d_out)``."""
        return 2 * FLOAT32_BYTES * config.rank * (config.d_in + config.d_out)

    def _where(self, what: str) -> str:
        return f"lora layer {self.config.role} ({self.name}) {what}"

    @staticmethod
    def _readonly(array):
        view = array.view()
        view.flags.writeable = False
        return view

    @property
    def A(self):
        """A (rank x d_in), float32, read-only: change it through update or import_q16."""
        return self._readonly(self._a)

    @property
    def B(self):
        """B (d_out x rank), float32, read-only: change it through update or import_q16."""
        return self._readonly(self._b)

    def last_update(self):
        """The deltas the last :meth:`update` applied to A and B (zeros before any update)."""
        return self._readonly(self._last_a), self._readonly(self._last_b)

    def _matrix_input(self, x: Any, width: int, what: str):
        import numpy as np

        array = np.asarray(x, dtype=np.float64)
        if array.ndim == 0 or array.shape[-1] != width:
            raise QresError(
                f"{self._where(what)}: shape {array.shape} does not end in {width}; "
                f"give an array of shape (..., {width})"
            )
        return array

    def forward(self, x: Any, base: Any = None):
        """``scaling * x @ A.T @ B.T`` for x of shape (..., d_in), plus ``base`` if given."""
        import numpy as np

        xs = self._matrix_input(x, self.d_in, "forward input")
        delta = self.scaling * ((xs @ self._a.T.astype(np.float64)) @ self._b.T.astype(np.float64))
        if base is None:
            return delta
        b = np.asarray(base, dtype=np.float64)
        if b.shape != delta.shape:
            raise QresError(
                f"{self._where('forward base')}: shape {b.shape}; expected {delta.shape}"
            )
        return b + delta

    def backward(self, x: Any, grad_out: Any):
        """Gradients (grad_A, grad_B) of a loss, given inputs ``x`` (..., d_in) and the loss's
        gradient ``grad_out`` (..., d_out) with respect to this layer's delta output."""
        import numpy as np

        xs = self._matrix_input(x, self.d_in, "backward input").reshape(-1, self.d_in)
        gs = self._matrix_input(grad_out, self.d_out, "backward grad_out").reshape(-1, self.d_out)
        if xs.shape[0] != gs.shape[0]:
            raise QresError(
                f"{self._where('backward')}: {xs.shape[0]} inputs but {gs.shape[0]} gradients; "
                "give one gradient row per input row"
            )
        a = self._a.astype(np.float64)
        b = self._b.astype(np.float64)
        grad_b = self.scaling * (gs.T @ (xs @ a.T))
        grad_a = self.scaling * ((gs @ b).T @ xs)
        return grad_a, grad_b

    def delta_weight(self):
        """The dense delta ``scaling * B @ A`` (d_out x d_in), float64."""
        import numpy as np

        return self.scaling * (self._b.astype(np.float64) @ self._a.astype(np.float64))

    def update(self, grad_A: Any, grad_B: Any, lr: float) -> None:
        """Step A and B by ``-(1 - inertia) * lr * grad`` (computed in float64, applied in
        float32); the applied deltas are kept in :meth:`last_update`."""
        import numpy as np

        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr):
            raise QresError(f"{self._where('update')}: lr={lr!r}; give a finite number >= 0")
        if lr < 0:
            raise QresError(f"{self._where('update')}: lr={lr!r}; give a finite number >= 0")
        grads = []
        for what, grad, target in (("grad_A", grad_A, self._a), ("grad_B", grad_B, self._b)):
            g = np.asarray(grad, dtype=np.float64)
            if g.shape != target.shape:
                raise QresError(
                    f"{self._where('update')}: {what} has shape {g.shape}; expected {target.shape}"
                )
            if not np.isfinite(g).all():
                raise QresError(
                    f"{self._where('update')}: {what} holds NaN or infinity; skip this step"
                )
            grads.append(g)
        step = -(1.0 - self.inertia) * float(lr)
        # Both deltas are formed before either matrix moves: the gradients belong to the
        # current A and B together.
        self._last_a = (step * grads[0]).astype(np.float32)
        self._last_b = (step * grads[1]).astype(np.float32)
        self._a += self._last_a
        self._b += self._last_b

    def export_q16(self):
        """A and B as Q16.16 int32 arrays: ``np.round(x * 65536)``; FixedPointError if a value
        is outside [-32768, 32768) or not finite."""
        return to_q16(self._a, self._where("A")), to_q16(self._b, self._where("B"))

    def import_q16(self, a_q16: Any, b_q16: Any) -> None:
        """Replace A and B by Q16.16 integer arrays of shapes (rank, d_in) and (d_out, rank)."""
        a = from_q16(a_q16, self._a.shape, self._where("A"))
        b = from_q16(b_q16, self._b.shape, self._where("B"))
        self._a, self._b = a, b


@hookimpl
def register_lora_layers(register):
    """Register the numpy LoRA layer."""
    register(NumpyLoRALayer)
