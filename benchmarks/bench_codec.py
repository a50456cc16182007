"""pytest-benchmark cases of the whole qres pipeline (container, blocks, predictor, coder):
compress and decompress a 4 MB int16 stream through ``qres.codec.files`` with the server and fast
profiles, on one thread and on two.

Run: .venv/bin/pytest benchmarks/bench_codec.py --benchmark-only -q
(``--benchmark-columns=mean,min,rounds`` keeps the table short). Each case records MB/s of
original bytes and the ratio in ``extra_info`` (``--benchmark-json out.json`` keeps them).
benchmarks/compare_codecs.py measures the same API against other codecs on real files.
"""

from __future__ import annotations

import numpy as np
import pytest

from qres.codec.files import compress_bytes, decompress_bytes
from qres.codec.samples import StreamSpec

N = 2 * 1024 * 1024  # int16 samples: 4 MB
SPEC = StreamSpec("int16")


@pytest.fixture(scope="module")
def stream() -> bytes:
    """A sensor-like int16 stream: a slow drift, two tones and sensor noise, with short
    saturated bursts, the same bytes on every run."""
    rng = np.random.default_rng(20240601)
    t = np.arange(N)
    drift = np.cumsum(rng.normal(0.0, 0.5, N))
    x = 6000 * np.sin(2 * np.pi * t / 900) + 1500 * np.sin(2 * np.pi * t / 53) + drift
    x += rng.normal(0.0, 25.0, N)
    bursts = rng.integers(0, N - 200, 40)
    for start in bursts:  # clipping events: flat runs at full scale, as real front ends give
        x[start : start + 200] = 32767
    return np.clip(np.rint(x), -32768, 32767).astype("<i2").tobytes()


def _record(benchmark, raw: bytes, packed: bytes) -> None:
    mean = benchmark.stats.stats.mean
    benchmark.extra_info["MB_per_s"] = round(len(raw) / mean / 1e6, 2)
    benchmark.extra_info["ratio"] = round(len(raw) / len(packed), 4)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("profile", ["server", "fast"])
def test_compress(benchmark, stream, profile, threads):
    packed = benchmark.pedantic(
        compress_bytes, args=(stream, SPEC, profile), kwargs={"threads": threads}, rounds=3
    )
    assert decompress_bytes(packed) == stream
    _record(benchmark, stream, packed)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("profile", ["server", "fast"])
def test_decompress(benchmark, stream, profile, threads):
    packed = compress_bytes(stream, SPEC, profile, threads=threads)
    out = benchmark.pedantic(
        decompress_bytes, args=(packed,), kwargs={"threads": threads}, rounds=3
    )
    assert out == stream
    _record(benchmark, stream, packed)
