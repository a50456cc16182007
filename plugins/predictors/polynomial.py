"""The fixed polynomial predictor (``use = "polynomial"``): FLAC's fixed predictors of order 0..4.

No state but the last ``order`` samples, no weights: the cheapest predictor, for
microcontrollers. Sample t of a block uses order ``min(order, t)``, so a block starts with the
raw first sample, then a first difference, and so on.
"""

from __future__ import annotations

from typing import ClassVar

import attrs

from qres.kernel.config import integer
from qres.kernel.hookspecs import hookimpl
from qres.kinds.predictor import Predictor


@attrs.frozen
class PolynomialConfig:
    """Settings of the polynomial predictor."""

    order: int = attrs.field(default=2, validator=integer(0, 4))


class PolynomialPredictor(Predictor):
    """Fixed polynomial prediction: order 1 repeats x[t-1], 2 extrapolates a line, and so on."""

    name: ClassVar[str] = "polynomial"
    Config: ClassVar[type] = PolynomialConfig
    channels_independent: ClassVar[bool] = True

    @classmethod
    def memory_bytes(cls, config: PolynomialConfig) -> int:
        """The last ``order`` samples, as 64-bit integers."""
        return 8 * config.order

    def _run(self, block, decode, max_error, lo, hi):
        import numpy as np
        from qres.builtin_plugins.predictors import _kernels

        out = np.empty_like(block)
        _kernels.polynomial(block, out, self.config.order, decode, max_error, lo, hi)
        return out


@hookimpl
def register_predictors(register):
    """Register the polynomial predictor."""
    register(PolynomialPredictor)
