#!/usr/bin/env python3
"""Time the Q16.16 array ops of qres.fixed side by side with the same operations in numpy.

Each case builds seeded random Q16.16 data once, checks that the qres op and its numpy
expression agree on it, then times both (best of ``--repeats`` runs with time.perf_counter, in
one process, one thread) and prints a table with the speed ratio numpy time / qres time
(above 1: qres is faster). The numpy expressions are what a careful numpy user would write
for the same integer result: widen to int64, multiply, add half, shift, clip back to int32.
They do not reproduce every edge of the qres contract (np.dot wraps where qres saturates), so
the data stays in a range where both agree. The float softmax and Welford rows compare against
numpy's float64 versions, which answer the same question but not bit for bit.

Usage: python benchmarks/compare_fixed_numpy.py [--size N] [--repeats R] [--json]

The cases are shared with benchmarks/bench_fixed.py (pytest-benchmark).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from qres import fixed

ONE = fixed.ONE
Q_MIN, Q_MAX = fixed.Q_MIN, fixed.Q_MAX


@dataclass
class Case:
    """One op: a qres call and the numpy expression computing the same thing."""

    name: str
    size: int
    qres: Callable[[], object]
    numpy: Callable[[], object]
    check: Callable[[object, object], bool]


def _q(rng: np.random.Generator, n: int, scale: float) -> np.ndarray:
    """Seeded Q16.16 values uniform in [-scale, scale]."""
    return rng.integers(-int(scale * ONE), int(scale * ONE), size=n, dtype=np.int32)


def _equal(a, b) -> bool:
    return bool(np.array_equal(np.asarray(a), np.asarray(b)))


def _near(tol: float) -> Callable[[object, object], bool]:
    def check(a, b) -> bool:
        return bool(np.allclose(np.asarray(a, dtype=np.float64), np.asarray(b), atol=tol, rtol=0))

    return check


def make_cases(size: int = 1_000_000, seed: int = 7) -> list[Case]:
    """The benchmark cases over arrays of ``size`` elements (softmax: attention sizes)."""
    rng = np.random.default_rng(seed)
    x = _q(rng, size, 8.0)
    w = _q(rng, size, 1.0)
    b = _q(rng, size, 8.0)
    f = rng.uniform(-1000.0, 1000.0, size)
    cases: list[Case] = []

    def np_dot():
        acc = int(np.dot(x.astype(np.int64), w.astype(np.int64)))
        return min(max((acc + 32768) >> 16, Q_MIN), Q_MAX)

    cases.append(Case("dot", size, lambda: fixed.dot(x, w), np_dot, _equal))

    mu, err = ONE // 1024, 3 * ONE
    g = fixed.q_mul(mu, err)
    w_q, w_np = w.copy(), w.copy()

    def qres_lms():
        fixed.lms_update(w_q, x, mu, err)
        return w_q

    def np_lms():
        step = (g * x.astype(np.int64) + 32768) >> 16
        np.clip(w_np + step, Q_MIN, Q_MAX, out=step)
        w_np[:] = step
        return w_np

    # both run the same number of times before the check, so they stay in step
    cases.append(Case("lms_update", size, qres_lms, np_lms, _equal))

    ss_q, ss_np = w.copy(), w.copy()

    def qres_sign_sign():
        fixed.sign_sign_lms_update(ss_q, x, 5, -1)
        return ss_q

    def np_sign_sign():
        ss_np[:] = np.clip(ss_np.astype(np.int64) - 5 * np.sign(x), Q_MIN, Q_MAX)
        return ss_np

    cases.append(Case("sign_sign_lms", size, qres_sign_sign, np_sign_sign, _equal))

    cases.append(
        Case(
            "array_add",
            size,
            lambda: fixed.array_add(x, b),
            lambda: np.clip(x.astype(np.int64) + b, Q_MIN, Q_MAX).astype(np.int32),
            _equal,
        )
    )
    cases.append(
        Case(
            "array_mul",
            size,
            lambda: fixed.array_mul(x, b),
            lambda: np.clip((x.astype(np.int64) * b + 32768) >> 16, Q_MIN, Q_MAX).astype(np.int32),
            _equal,
        )
    )

    def np_to_fixed():
        y = f * 65536.0
        if not ((y >= -2147483648.5) & (y < 2147483647.5)).all():
            raise ValueError("out of range")
        return np.floor(y + 0.5).astype(np.int32)

    cases.append(Case("to_fixed", size, lambda: fixed.to_fixed(f), np_to_fixed, _equal))
    cases.append(Case("to_float", size, lambda: fixed.to_float(x), lambda: x / 65536.0, _equal))

    def np_welford():
        v = x / 65536.0
        return v.mean(), v.var()

    def qres_welford():
        s = fixed.welford(x)
        return s.mean / ONE, s.variance / ONE

    cases.append(Case("welford", size, qres_welford, np_welford, _near(1e-3)))

    for n in (8, 4096):
        logits = _q(rng, n, 6.0)

        def np_softmax(v=logits):
            e = np.exp(v / 65536.0 - v.max() / 65536.0)
            return e / e.sum()

        cases.append(
            Case(
                "softmax",
                n,
                lambda v=logits: fixed.softmax(v) / 65536.0,
                np_softmax,
                _near(4 / 65536),
            )
        )
    return cases


def best_time(fn: Callable[[], object], repeats: int) -> float:
    """Best wall time of ``repeats`` calls, in seconds (small ops are looped to ~1 ms)."""
    loops = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(loops):
            fn()
        if time.perf_counter() - t0 >= 1e-3 or loops >= 1 << 16:
            break
        loops *= 4
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(loops):
            fn()
        best = min(best, (time.perf_counter() - t0) / loops)
    return best


def main(argv: list[str] | None = None) -> int:
    """Run every case and print the table (or JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=1_000_000, help="array length (default 1e6)")
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per op (best counts)")
    parser.add_argument("--json", action="store_true", help="print JSON rows instead of a table")
    args = parser.parse_args(argv)

    rows = []
    for case in make_cases(args.size):
        if not case.check(case.qres(), case.numpy()):
            print(f"compare_fixed_numpy: {case.name}: qres and numpy disagree", file=sys.stderr)
            return 1
        t_q = best_time(case.qres, args.repeats)
        t_np = best_time(case.numpy, args.repeats)
        rows.append(
            {
                "op": case.name,
                "n": case.size,
                "qres_us": t_q * 1e6,
                "numpy_us": t_np * 1e6,
                "ratio": t_np / t_q,
            }
        )
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(f"{'op':<15}{'n':>9}{'qres µs':>12}{'numpy µs':>12}{'numpy/qres':>12}")
    for r in rows:
        print(
            f"{r['op']:<15}{r['n']:>9}{r['qres_us']:>12.1f}{r['numpy_us']:>12.1f}"
            f"{r['ratio']:>11.2f}x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
