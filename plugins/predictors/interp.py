"""The multilevel interpolation predictor (``use = "interp"``): neighbours on both sides.

Instead of extrapolating from the past, each sample is predicted from already-coded samples on
both sides of it: first an anchor every ``anchor`` samples (each predicted by the previous
anchor), then the midpoints of the anchors, then the midpoints of those, down to stride 1. Each
level is linear (mean of the two neighbours) or cubic (four neighbours, weights -1, 9, 9, -1
over 16): ``kind`` sets all levels, ``cubic_levels`` (bit k: the level of stride 2**k) each
one. Residuals come out in that coding order, coarse levels first.

In bounded-error mode the neighbours are reconstructions, so the quantisation noise of a coarse
level averages out in the finer ones instead of feeding an adaptive filter: at coarse bounds this
predicts far better than an extrapolating cascade (the codec tries it per block, see
docs/format.md). No weights, no state but the block itself. docs/predictors.md specifies it.
"""

from __future__ import annotations

from typing import ClassVar

import attrs

from qres.kernel.config import InvalidSetting, integer, one_of
from qres.kernel.hookspecs import hookimpl
from qres.kinds.predictor import Predictor, _encode_args

#: Largest anchor stride (the largest block the container allows).
MAX_ANCHOR = 1 << 24
#: ``cubic_levels`` with every level cubic.
ALL_CUBIC = MAX_ANCHOR - 1


def _power_of_two(_inst, attribute, value):
    ok = isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_ANCHOR
    if not ok or value & (value - 1):
        raise InvalidSetting(attribute.name, value, f"a power of two in [1, {MAX_ANCHOR}]")


@attrs.frozen
class InterpConfig:
    """Settings of the interpolation predictor: the kind of each level and the anchor stride."""

    kind: str = attrs.field(default="cubic", validator=one_of("linear", "cubic"))
    anchor: int = attrs.field(default=1024, validator=_power_of_two)
    cubic_levels: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(integer(0, ALL_CUBIC))
    )

    def mask(self) -> int:
        """The bitmask of cubic levels these settings give."""
        if self.cubic_levels is not None:
            return self.cubic_levels
        return ALL_CUBIC if self.kind == "cubic" else 0


class InterpPredictor(Predictor):
    """Anchors, then linear or cubic interpolation at halving strides, from both sides."""

    name: ClassVar[str] = "interp"
    Config: ClassVar[type] = InterpConfig
    channels_independent: ClassVar[bool] = True

    @classmethod
    def memory_bytes(cls, config: InterpConfig) -> int:
        """A few words of loop state: the predictor works in place in the block's buffer."""
        return 64

    def segments(self, n: int) -> tuple[int, ...]:
        """The anchors, then each level from the coarsest stride to stride 1."""
        stride = self.config.anchor
        runs = [(n + stride - 1) // stride]
        s = stride >> 1
        while s >= 1:
            runs.append((n - s + 2 * s - 1) // (2 * s) if n > s else 0)
            s >>= 1
        return tuple(runs)

    def encode_choosing(
        self, block, max_error: int = 0, *, bounds: tuple[int, int] | None = None
    ) -> tuple[object, int]:
        """Encode with each level's kind chosen from the data: the kind whose residuals (summed
        over the channels) have the smaller cost estimate, cubic on a tie. Returns the residuals
        and the ``cubic_levels`` mask that :meth:`decode` needs (set it in the settings)."""
        import numpy as np
        from qres.builtin_plugins.predictors import _kernels

        what = f"predictor {self.name!r} encode"
        arr, flat, e, lo, hi = _encode_args(block, max_error, bounds, what)
        out = np.empty_like(arr)
        shift = self.config.anchor.bit_length() - 1
        mask = _kernels.interpolate(arr, out, 0, shift, False, e, lo, hi, True)
        return (out.reshape(-1) if flat else out), int(mask)

    def _run(self, block, decode, max_error, lo, hi):
        import numpy as np
        from qres.builtin_plugins.predictors import _kernels

        cfg = self.config
        out = np.empty_like(block)
        shift = cfg.anchor.bit_length() - 1
        _kernels.interpolate(block, out, cfg.mask(), shift, decode, max_error, lo, hi)
        return out


@hookimpl
def register_predictors(register):
    """Register the interpolation predictor."""
    register(InterpPredictor)
