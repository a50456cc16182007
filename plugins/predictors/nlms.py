"""The NLMS cascade predictor (``use = "nlms"``), after the strongest lossless audio coders.

Per channel: a fixed polynomial stage (order ``fixed``), then adaptive stages of the given
lengths, each a sign-error normalised LMS filter that predicts its input (the previous stage's
output) from that input's own past and passes on what it could not predict, then a
bias-cancelling stage (a running mean of what is left). All arithmetic is integer Q16.16;
docs/predictors.md specifies it bit for bit.
"""

from __future__ import annotations

import functools
from typing import Any, ClassVar

import attrs

from qres.kernel.config import InvalidSetting, integer, one_of
from qres.kernel.hookspecs import hookimpl
from qres.kinds.predictor import Predictor, int_list

#: Most taps one adaptive stage may have (keeps every dot product inside int64).
MAX_TAPS = 512
#: The stages used when neither ``order`` nor ``stages`` is set: chosen by measurement on the
#: shared corpus (benchmarks/predictor_entropy.py) for ratio at >= 20 MB/s per core.
DEFAULT_STAGES = (32, 16, 8)


def default_shift(taps: int) -> int:
    """Step shift of a stage of ``taps`` taps when ``shifts`` is not given: longer, slower.

    Measured on the shared corpus: 8 taps -> 8, 16 -> 9, 32 -> 11, 256 -> 12.
    """
    return min(12, taps.bit_length() + 4 + (1 if taps >= 32 else 0))


@attrs.frozen
class NlmsConfig:
    """Settings of the NLMS cascade.

    ``order`` is shorthand for one adaptive stage of that many taps; ``stages`` lists several.
    ``shifts`` gives each stage's step as a power of two (bigger is slower and steadier); by
    default it follows the stage length. ``fixed`` is the order of the polynomial first stage.
    ``bias_shift`` sets how fast the bias stage forgets (0 turns it off).
    """

    order: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(integer(1, MAX_TAPS))
    )
    stages: list[int] | None = attrs.field(default=None, validator=int_list(1, MAX_TAPS, 1, 8))
    shifts: list[int] | None = attrs.field(default=None, validator=int_list(1, 16, 1, 8))
    fixed: int = attrs.field(default=1, validator=integer(0, 4))
    bias_shift: int = attrs.field(default=0, validator=integer(0, 16))
    update: str = attrs.field(default="nlms", validator=one_of("sign", "nlms"))

    def __attrs_post_init__(self):
        if self.order is not None and self.stages is not None:
            raise InvalidSetting("order", self.order, "either order or stages, not both")
        if self.shifts is not None and len(self.shifts) != len(self.taps()):
            raise InvalidSetting(
                "shifts", self.shifts, f"one shift per stage ({len(self.taps())} values)"
            )

    def taps(self) -> tuple[int, ...]:
        """The adaptive stages' lengths in order."""
        if self.order is not None:
            return (self.order,)
        if self.stages is not None:
            return tuple(self.stages)
        return DEFAULT_STAGES

    def step_shifts(self) -> tuple[int, ...]:
        """Each stage's step shift."""
        if self.shifts is not None:
            return tuple(self.shifts)
        return tuple(default_shift(n) for n in self.taps())


def stage_bytes(taps: int) -> int:
    """RAM of one adaptive stage: weights, history and directions (sliding buffers), state."""
    cap = taps + max(taps, 16)
    return 4 * taps + 8 * cap + 32


class NlmsPredictor(Predictor):
    """Fixed stage, then sign-error NLMS stages of decreasing length, then bias cancelling."""

    name: ClassVar[str] = "nlms"
    Config: ClassVar[type] = NlmsConfig
    channels_independent: ClassVar[bool] = True

    @classmethod
    def memory_bytes(cls, config: NlmsConfig) -> int:
        """State of one channel: the stages plus the fixed stage's history and the bias."""
        return sum(stage_bytes(n) for n in config.taps()) + 8 * 4 + 16

    def weight_count(self) -> int:
        """One Q16.16 weight per tap of every adaptive stage, stage after stage."""
        return sum(self.config.taps())

    @functools.cached_property
    def cascade_params(self) -> Any:
        """The native loop's packed settings (``_kernels.CascadeParams``), built once."""
        from qres.builtin_plugins.predictors import _kernels

        return _kernels.CascadeParams(**self._cascade_settings())

    def _cascade_settings(self) -> dict[str, Any]:
        """The config as ``CascadeParams`` keywords; the TAAF stage stays off for plain NLMS."""
        cfg = self.config
        return {
            "taps": cfg.taps(),
            "shifts": cfg.step_shifts(),
            "fixed_order": cfg.fixed,
            "nlms": cfg.update == "nlms",
            "bias_shift": cfg.bias_shift,
        }

    def _run(self, block, decode, max_error, lo, hi):
        import numpy as np
        from qres.builtin_plugins.predictors import _kernels

        out = np.empty_like(block)
        _kernels.cascade(block, out, decode, self.cascade_params, self._weights, max_error, lo, hi)
        return out


@hookimpl
def register_predictors(register):
    """Register the NLMS cascade predictor."""
    register(NlmsPredictor)
