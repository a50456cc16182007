"""The multichannel TAAF predictor (``use = "taaf"``): attention-weighted fusion of channels.

Each channel runs its own NLMS cascade (see nlms.py). Channels are coded in order at every time
step, so channel c knows the innovations (what its own cascade could not predict) of channels
< c at time t and of every channel at t-1. Per channel, exponentially weighted Welford trackers
follow the innovation's short- and long-term variance; channels whose short/long ratio exceeds
``spike_ratio`` are "spiking". A fixed-point base-2 softmax over the spiking channels' ratios
gives attention weights, the fused signal is the attention-weighted sum of their latest
innovations (rescaled to channel c's level), and a final sign-error NLMS stage predicts channel
c's innovation from the ``cross`` previous channels' current innovations and the fused signal.
"""

from __future__ import annotations

from typing import Any, ClassVar

import attrs
from qres.builtin_plugins.predictors.nlms import NlmsConfig, NlmsPredictor

from qres.kernel.config import integer, number
from qres.kernel.errors import QresError
from qres.kernel.hookspecs import hookimpl


@attrs.frozen
class TaafConfig(NlmsConfig):
    """Settings of TAAF: the NLMS cascade's, plus the cross-channel stage and its trackers."""

    cross: int = attrs.field(default=8, validator=integer(0, 32))
    taaf_shift: int = attrs.field(default=8, validator=integer(1, 16))
    short_shift: int = attrs.field(default=3, validator=integer(1, 16))
    long_shift: int = attrs.field(default=9, validator=integer(1, 24))
    spike_ratio: float = attrs.field(default=2.0, validator=number(1.0, 16.0))
    max_channels: int = attrs.field(default=64, validator=integer(1, 4096))


class TaafPredictor(NlmsPredictor):
    """Per-channel NLMS cascades plus a cross-channel stage fed by attention-weighted fusion."""

    name: ClassVar[str] = "taaf"
    Config: ClassVar[type] = TaafConfig
    channels_independent: ClassVar[bool] = False  # channel c sees channels < c

    @classmethod
    def memory_bytes(cls, config: TaafConfig) -> int:
        """``max_channels`` channels of cascade, cross-stage and tracker state."""
        per_channel = NlmsPredictor.memory_bytes(config) + 16 * (config.cross + 1) + 64 + 8
        return config.max_channels * per_channel

    def weight_count(self) -> int:
        """The cascade's weights, then ``cross`` cross-channel weights and the fused weight."""
        return super().weight_count() + self.config.cross + 1

    def _cascade_settings(self) -> dict[str, Any]:
        cfg = self.config
        return {
            **super()._cascade_settings(),
            "taaf": True,
            "cross": cfg.cross,
            "taaf_shift": cfg.taaf_shift,
            "short_shift": cfg.short_shift,
            "long_shift": cfg.long_shift,
            "spike_q8": int(round(cfg.spike_ratio * 256)),
        }

    def _run(self, block, decode, max_error, lo, hi):
        if block.shape[0] > self.config.max_channels:
            raise QresError(
                f"predictor 'taaf': block has {block.shape[0]} channels, more than "
                f"max_channels={self.config.max_channels}; raise max_channels in the profile"
            )
        return super()._run(block, decode, max_error, lo, hi)


@hookimpl
def register_predictors(register):
    """Register the TAAF multichannel predictor."""
    register(TaafPredictor)
