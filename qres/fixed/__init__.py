"""Q16.16 fixed-point arithmetic: the compiled core and its thin Python face.

A Q16.16 number is an int32 ``v`` standing for ``v / 65536`` (``ONE = 65536``), so the range
is [-32768, 32768 - 2**-16] in steps of 2**-16. Every model computation in qres uses it, so the
same input gives the same bits on every machine.

The rules (docs/fixed-point.md has the full contract):

* **One rounding rule**: round to nearest, ties toward +infinity, i.e. ``floor(v / d + 1/2)``
  (for a power of two: add half, then arithmetic shift right).
* **Saturation**: every result is clamped to [Q_MIN, Q_MAX] = [-2**31, 2**31 - 1]; nothing wraps.
* **int64 accumulation**: products are exact in int64 (Q32.32) and rounded once.
* **Errors**: a bad argument (not an int, outside int32, wrong array dtype or shape), a float
  that is out of range or not finite, or a division by zero raises
  :class:`qres.kernel.errors.FixedPointError`. The element-wise :func:`array_div` and the
  Cython-level primitives in ``_core.pxd`` never raise: a zero divisor gives Q_MAX, Q_MIN or 0
  by the sign of the dividend.

Array functions take 1-D numpy int32 arrays (element-wise ones and conversions take any shape)
and release the GIL in their loops. Cython modules can ``cimport`` the inline primitives
(``fx_add``, ``fx_mul``, ``fx_dot``, ``fx_lms_update``, ``fx_exp``, ``fx_welford_push``, ...)
from ``qres.fixed._core``.

The constants (``ONE``, ``FRAC_BITS``, ``Q_MIN``, ``Q_MAX``) and the numpy helpers every module
shares (``sat_add``, ``saturate``, ...) live in the pure-Python :mod:`qres.fixed.q16`, which
loads neither numpy nor the compiled extension: import that anywhere. The functions here load
numpy and the compiled extension on first use, so reach for them inside plugin methods, never
at a plugin module's top level.
"""

from __future__ import annotations

import importlib
from typing import Any

from qres.fixed.q16 import FRAC_BITS, ONE, Q_MAX, Q_MIN

#: Names served by the compiled core, loaded on first access (PEP 562).
_CORE = (
    "Welford",
    "array_add",
    "array_div",
    "array_mul",
    "array_sub",
    "dot",
    "dot_acc",
    "isqrt_u64",
    "lms_update",
    "q_add",
    "q_div",
    "q_exp",
    "q_from_float",
    "q_mul",
    "q_sqrt",
    "q_sub",
    "q_to_float",
    "sign_sign_lms_update",
    "softmax",
    "to_fixed",
    "to_float",
    "welford",
)

__all__ = ["FRAC_BITS", "ONE", "Q_MAX", "Q_MIN", *_CORE]


def __getattr__(name: str) -> Any:
    if name in _CORE:
        value = getattr(importlib.import_module("qres.fixed._core"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'qres.fixed' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_CORE))
