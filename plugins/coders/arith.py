"""The context-modelling binary range coder (``use = "arith"``): the coder for ratio.

Each residual is binarised (zero flag, sign, magnitude class coded in unary steps away from the
class the running mean expects, two modelled mantissa bits, the rest sent as equiprobable
bits). Every binary decision is coded with an adaptive 16-bit probability chosen by a context
built from the running mean of recent magnitudes and the previous residual, so the coder
follows the local variance and a run of zeros costs a small fraction of a bit per sample.
The bitstream and the model are specified in ``docs/coders.md``.
"""

from __future__ import annotations

from typing import Any

import attrs

from qres.kernel.config import boolean, integer
from qres.kernel.errors import IntegrityError
from qres.kernel.hookspecs import hookimpl
from qres.kinds.coder import Coder, as_residuals, as_segments, check_count, seal, unseal


@attrs.frozen
class ArithConfig:
    """Settings of the range coder."""

    #: Speed of the running mean of |residual| that selects contexts (1 / 2**adapt_shift).
    adapt_shift: int = attrs.field(default=3, validator=integer(1, 16))
    #: Slowest adaptation rate of the probabilities, 2**-rate_shift; faster while they learn.
    rate_shift: int = attrs.field(default=8, validator=integer(4, 8))
    #: Append a CRC-32 of the sample count and payload, so any damage is detected on decode.
    checksum: bool = attrs.field(default=True, validator=boolean())


class ArithCoder(Coder):
    """Adaptive binary range coder with contexts from the local residual magnitude."""

    name = "arith"
    Config = ArithConfig
    #: Segments give the zero flag its own contexts per segment (docs/coders.md).
    uses_segments = True
    #: Every binary decision adapts its context's probability.
    models_context = True

    def encode(self, residuals: Any, segments: Any = None) -> bytes:
        """Code int64 residuals into bytes (fresh model every call)."""
        from qres.builtin_plugins.coders import _arith

        res = as_residuals(residuals, self.name)
        seg = as_segments(segments, res.size, self.name)
        cfg = self.config
        payload = _arith.encode(res, cfg.adapt_shift, cfg.rate_shift, seg)
        return seal(payload, res.size) if cfg.checksum else payload

    def encode_open(self, residuals: Any) -> tuple[bytes, Any]:
        """:meth:`encode`'s bytes of ``residuals`` (no segments) and the stream kept open."""
        from qres.builtin_plugins.coders import _arith

        res = as_residuals(residuals, self.name)
        cfg = self.config
        stream = _arith.Resumable(cfg.adapt_shift, cfg.rate_shift)
        stream.extend(res)
        return self._sealed(stream), stream

    def resume(self, stream: Any, more: Any) -> bytes:
        """The bytes of the open ``stream``'s residuals followed by ``more`` (coded once)."""
        stream.extend(as_residuals(more, self.name))
        return self._sealed(stream)

    def fork(self, stream: Any) -> Any:
        """A copy of the open ``stream`` that goes on apart from it."""
        return stream.copy()

    def _sealed(self, stream: Any) -> bytes:
        payload = stream.finished()
        return seal(payload, stream.count) if self.config.checksum else payload

    def decode(self, data: bytes, n: int, segments: Any = None) -> Any:
        """Decode ``n`` int64 residuals; IntegrityError if ``data`` is not a valid stream."""
        import numpy as np
        from qres.builtin_plugins.coders import _arith

        cfg = self.config
        n = check_count(n, self.name)
        seg = as_segments(segments, n, self.name)
        view = unseal(data, n, self.name) if cfg.checksum else memoryview(data).cast("B")
        out, reason = _arith.decode(
            np.frombuffer(view, dtype=np.uint8), n, cfg.adapt_shift, cfg.rate_shift, seg
        )
        if out is None:
            raise IntegrityError(
                f"coder 'arith': {reason} ({len(view)} bytes, {n} samples); the block is corrupt"
            )
        return out

    def max_samples(self, nbytes: int) -> None:
        """No bound exists: past its last byte the decoder reads zeros, and once its code is 0
        every decision decodes a zero residual, so any payload (the empty one too) is also the
        code of itself followed by any number of zeros (docs/coders.md). A count a file lies
        about decodes to zeros or garbage that the decoder or the block's CRC refuses, and
        the container checks each block against the output limit and the memory left."""
        return None

    @classmethod
    def memory_bytes(cls, config: Any) -> int:
        """Device RAM: the context model's counters plus the coder and model state."""
        from qres.builtin_plugins.coders import _arith

        return _arith.MODEL_BYTES + _arith.STATE_BYTES


@hookimpl
def register_coders(register):
    """Register the range coder."""
    register(ArithCoder)
