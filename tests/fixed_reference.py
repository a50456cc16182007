"""Pure-Python reference of the Q16.16 fixed-point core, written from docs/fixed-point.md.

Plain Python ints (unbounded, floor semantics for ``//`` and ``>>``) and exact fractions: no
numpy, no call into qres.fixed. Where the core needs int64 tricks to avoid overflow, this file
states the mathematical definition directly, so the two implementations agree only if the
tricks are right. Constants (ln 2, the exp coefficients) are derived here from exact arithmetic
rather than copied.
"""

from __future__ import annotations

import math
from decimal import Decimal, localcontext
from fractions import Fraction

ONE = 1 << 16
Q_MIN = -(1 << 31)
Q_MAX = (1 << 31) - 1
I64_MIN = -(1 << 63)
I64_MAX = (1 << 63) - 1


def clamp(v: int, lo: int, hi: int) -> int:
    """v limited to [lo, hi]."""
    return max(lo, min(hi, v))


def sat32(v: int) -> int:
    """Saturate to the int32 range."""
    return clamp(v, Q_MIN, Q_MAX)


def round_rule(num: int | Fraction, den: int = 1) -> int:
    """The project's rounding rule: nearest, ties toward +infinity = floor(num / den + 1/2)."""
    assert den > 0
    if isinstance(num, int):
        return (2 * num + den) // (2 * den)  # the same value, faster than a Fraction
    return math.floor(Fraction(num) / den + Fraction(1, 2))


def add(a: int, b: int) -> int:
    """Saturating Q16.16 addition."""
    return sat32(a + b)


def sub(a: int, b: int) -> int:
    """Saturating Q16.16 subtraction."""
    return sat32(a - b)


def mul(a: int, b: int) -> int:
    """Q16.16 product, rounded and saturated."""
    return sat32(round_rule(a * b, ONE))


def div(a: int, b: int) -> int:
    """Q16.16 quotient, rounded and saturated; b == 0 gives MAX/MIN/0 by a's sign (array form)."""
    if b == 0:
        return Q_MAX if a > 0 else Q_MIN if a < 0 else 0
    return sat32(round_rule(Fraction(a * ONE, b)))


def isqrt_u64(n: int) -> int:
    """floor(sqrt(n)) by Newton's method on Python ints (independent of math.isqrt)."""
    if n < 2:
        return n
    x = 1 << ((n.bit_length() + 1) // 2)  # an overestimate of the root
    while True:
        y = (x + n // x) // 2
        if y >= x:
            return x
        x = y


def sqrt(a: int) -> int:
    """Q16.16 square root rounded to nearest (0 for a <= 0)."""
    if a <= 0:
        return 0
    m = a * ONE
    r = isqrt_u64(m)
    # nearest integer to sqrt(m): compare m with (r + 1/2)**2 = r*r + r + 1/4
    return r + 1 if 4 * m > 4 * r * r + 4 * r + 1 else r


def from_float(x: float) -> int:
    """Q16.16 nearest to x by the rule; ValueError when out of range or not finite."""
    if not math.isfinite(x):
        raise ValueError(f"{x!r} is not finite")
    q = round_rule(Fraction(x) * ONE)
    if not Q_MIN <= q <= Q_MAX:
        raise ValueError(f"{x!r} is out of range")
    return q


def to_float(q: int) -> float:
    """The exact value of a Q16.16 int as a float."""
    return q / ONE


def dot_acc(x: list[int], w: list[int]) -> int:
    """Exact sum of the products (Q32.32), clamped to int64."""
    return clamp(sum(a * b for a, b in zip(x, w, strict=True)), I64_MIN, I64_MAX)


def dot(x: list[int], w: list[int]) -> int:
    """Q16.16 dot product: the clamped Q32.32 sum, rounded and saturated."""
    return sat32(round_rule(dot_acc(x, w), ONE))


def lms_update(w: list[int], x: list[int], mu: int, err: int) -> list[int]:
    """New weights after w[i] += mu * err * x[i] (gain rounded first)."""
    g = mul(mu, err)
    return [add(wi, mul(g, xi)) for wi, xi in zip(w, x, strict=True)]


def _sign(v: int) -> int:
    return (v > 0) - (v < 0)


def sign_sign_lms_update(w: list[int], x: list[int], mu: int, err: int) -> list[int]:
    """New weights after w[i] += mu * sign(err) * sign(x[i]), saturating."""
    return [sat32(wi + mu * _sign(err) * _sign(xi)) for wi, xi in zip(w, x, strict=True)]


def _exact_constants() -> tuple[int, list[int]]:
    with localcontext() as ctx:
        ctx.prec = 60
        ln2_32 = round_rule(Fraction(Decimal(2).ln()) * (1 << 43))  # ln2 / 32 in Q48
        table = [
            round_rule(Fraction(Decimal(2) ** (Decimal(j) / 32)) * (1 << 32)) for j in range(32)
        ]
    return ln2_32, table


#: ln 2 / 32 in Q48 and the table round(2**(j/32) * 2**32), from 60-digit decimal arithmetic.
LN2_32_Q48, EXP2_TABLE = _exact_constants()
#: exp coefficients round(2**33 / i!) for i = 0..4.
EXP_COEFFS = [round_rule(Fraction(1 << 33, math.factorial(i))) for i in range(5)]


def exp(x: int) -> int:
    """Q16.16 exp as the documented integer algorithm (reduction by ln2/32, table, Horner)."""
    if x >= 16 * ONE:
        return Q_MAX
    if x <= -12 * ONE:
        return 0
    big_x = x << 32
    k32 = big_x // LN2_32_Q48
    k, j = divmod(k32, 32)
    if k >= 15:
        return Q_MAX
    r = round_rule(big_x - k32 * LN2_32_Q48, 1 << 15)
    p = EXP_COEFFS[4]
    for c in reversed(EXP_COEFFS[:4]):
        p = c + round_rule(p * r, 1 << 33)
    # table * exp(r) in Q62: the Q65 product rounded once to Q62
    e = EXP2_TABLE[j] * (1 << 30) + round_rule(EXP2_TABLE[j] * (p - (1 << 33)), 1 << 3)
    return sat32(round_rule(e, 1 << (46 - k)))


def softmax(x: list[int]) -> list[int]:
    """Q16.16 softmax by largest remainders; the weights sum to exactly ONE."""
    m = max(x)
    e = [exp(sat32(v - m)) for v in x]
    s = sum(e)
    out = [v * ONE // s for v in e]
    left = ONE - sum(out)
    order = sorted(range(len(x)), key=lambda i: (-(e[i] * ONE % s), i))
    for i in order[:left]:
        out[i] += 1
    return out


class Welford:
    """Reference Welford tracker with the documented rounding (mean kept in Q16.40)."""

    def __init__(self) -> None:
        self.count = 0
        self.mean_fine = 0  # Q16.40
        self.m2 = 0

    @property
    def mean(self) -> int:
        """Running mean rounded to Q16.16."""
        return round_rule(self.mean_fine, 1 << 24)

    def update(self, x: int) -> None:
        """Add one Q16.16 sample."""
        self.count += 1
        d1 = x - self.mean
        self.mean_fine += round_rule(x * (1 << 24) - self.mean_fine, self.count)
        d2 = x - self.mean
        self.m2 = min(I64_MAX, self.m2 + round_rule(abs(d1 * d2), ONE))

    @property
    def variance(self) -> int:
        """round(m2 / n), 0 when empty."""
        return round_rule(self.m2, self.count) if self.count else 0

    @property
    def sample_variance(self) -> int:
        """round(m2 / (n - 1)), 0 with fewer than two samples."""
        return round_rule(self.m2, self.count - 1) if self.count > 1 else 0
