"""The Q16.16 vocabulary in pure Python: constants and the few numpy helpers every module needs.

A Q16.16 number is an int32 ``v`` standing for ``v / ONE``. This module is the one place the
constants are written down for Python code; the compiled core (:mod:`qres.fixed._core`) takes
the same values from its C header (``_core.pxd``), and the tests check the two agree.

Importing this module loads neither the compiled core nor numpy (the helpers import numpy when
called), so plugin modules and kind base classes may import it at their top level.

The helpers follow the core's rules (docs/fixed-point.md): results saturate to
[``Q_MIN``, ``Q_MAX``] instead of wrapping, and a real value converts by the one rounding rule,
``floor(x + 1/2)`` (nearest, ties toward +infinity).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

#: Number of fractional bits.
FRAC_BITS = 16
#: Q16.16 one (1.0) as a raw integer.
ONE = 1 << FRAC_BITS
#: Q16.16 one half: the rounding offset of a right shift by FRAC_BITS.
HALF = ONE >> 1
#: Smallest and largest Q16.16 values (as raw int32).
Q_MIN = -(1 << 31)
Q_MAX = (1 << 31) - 1


def sat(value: int) -> int:
    """A Python int limited to [Q_MIN, Q_MAX]."""
    return max(Q_MIN, min(Q_MAX, value))


def from_float(value: float) -> int:
    """A real number as Q16.16 by the rounding rule, ``floor(value * ONE + 1/2)``, saturated.

    For settings and metrics already checked to be finite; use ``qres.fixed.q_from_float``
    when an out-of-range or non-finite value must be an error instead.
    """
    return sat(math.floor(value * ONE + 0.5))


def saturate(values: Any) -> np.ndarray:
    """Integer (or float) ``values`` clamped to [Q_MIN, Q_MAX], as a new int32 array."""
    import numpy as np

    return np.clip(values, Q_MIN, Q_MAX).astype(np.int32)


def sat_add(a: Any, b: Any) -> np.ndarray:
    """``a + b`` element-wise, exact in int64 then saturated to int32 (never wraps)."""
    import numpy as np

    return saturate(np.asarray(a).astype(np.int64) + b)


def round_units(values: Any) -> np.ndarray:
    """Float Q16.16 *units* (already scaled by ONE) rounded by the rule and saturated to int32.

    NaN becomes 0 and infinities saturate, so a forged or diverged float never wraps.
    """
    import numpy as np

    v = np.floor(np.asarray(values, dtype=np.float64) + 0.5)
    return saturate(np.nan_to_num(v, nan=0.0))
