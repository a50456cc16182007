"""The adaptive Rice/Golomb coder (``use = "rice"``): cheap enough for microcontrollers.

Each residual is zigzag-mapped and Rice-coded with a parameter taken from an integer running
mean of the recent values; quotients too large for unary are escaped, and after a zero the
coder switches to a JPEG-LS style run mode where a long run of zeros costs a few bits in all.
The bitstream is specified in ``docs/coders.md``.
"""

from __future__ import annotations

from typing import Any

import attrs

from qres.kernel.config import boolean, integer
from qres.kernel.errors import IntegrityError
from qres.kernel.hookspecs import hookimpl
from qres.kinds.coder import Coder, as_residuals, check_count, seal, unseal


@attrs.frozen
class RiceConfig:
    """Settings of the Rice coder."""

    #: Speed of the running mean: each sample moves it by 1 / 2**adapt_shift of the difference.
    adapt_shift: int = attrs.field(default=3, validator=integer(1, 16))
    #: Append a CRC-32 of the sample count and payload, so any damage is detected on decode.
    checksum: bool = attrs.field(default=True, validator=boolean())


class RiceCoder(Coder):
    """Adaptive Rice coder with escape codes and a run mode for zeros."""

    name = "rice"
    Config = RiceConfig

    def encode(self, residuals: Any) -> bytes:
        """Code int64 residuals into bytes (fresh state every call)."""
        from qres.builtin_plugins.coders import _rice

        res = as_residuals(residuals, self.name)
        payload = _rice.encode(res, self.config.adapt_shift)
        return seal(payload, res.size) if self.config.checksum else payload

    def decode(self, data: bytes, n: int) -> Any:
        """Decode ``n`` int64 residuals; IntegrityError if ``data`` is not a valid stream."""
        import numpy as np
        from qres.builtin_plugins.coders import _rice

        n = check_count(n, self.name)
        view = unseal(data, n, self.name) if self.config.checksum else memoryview(data).cast("B")
        out, reason = _rice.decode(np.frombuffer(view, dtype=np.uint8), n, self.config.adapt_shift)
        if out is None:
            raise IntegrityError(
                f"coder 'rice': {reason} ({len(view)} bytes, {n} samples); the block is corrupt"
            )
        return out

    def max_samples(self, nbytes: int) -> int:
        """Every step of the decoder reads at least one bit and yields at most 2**15 samples
        (the longest run segment), so ``nbytes`` hold at most ``8 * nbytes * 2**15``."""
        return 8 * nbytes << 15

    @classmethod
    def memory_bytes(cls, config: Any) -> int:
        """Device RAM: the running mean (8), run index (1), bit accumulator (8) and count (1),
        plus the 32-entry run-order table (32), rounded up to 8-byte words."""
        return 8 + 8 + 8 + 8 + 32


@hookimpl
def register_coders(register):
    """Register the Rice coder."""
    register(RiceCoder)
