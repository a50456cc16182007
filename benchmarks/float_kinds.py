"""Float data the shared corpus does not hold, side by side: scattered NaN dropouts and floats
of a narrower type stored wide, generated here (seeded), through qres profiles, pcodec -8,
xz -9 and zstd -19. Each input is a kind that the container's format-11 mappings are for
(docs/mapping.md: run tables, kind 9; shifted bit views, kind 10; narrow entries, kind 11),
with its plain neighbour beside it (the same readings without dropouts, float32 natively).

    .venv/bin/python benchmarks/float_kinds.py                   # 40,000 samples a case
    .venv/bin/python benchmarks/float_kinds.py --samples 4000 --json out.json

Every qres result is decoded and compared with its input before it is reported. Ratios are
the input's bytes over the compressed bytes; the last column is qres ``server`` over the best
of the others.
"""

from __future__ import annotations

import argparse
import json
import lzma
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from qres.codec.files import compress_bytes, decompress_bytes
from qres.codec.samples import StreamSpec

PROFILES = ("server", "fast")


def cases(n: int, seed: int = 13) -> Iterator[tuple[str, np.ndarray]]:
    """``(name, samples)`` of every case, ``n`` samples each (one channel)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    readings = np.round(20 + 3 * np.sin(t / 800) + np.cumsum(rng.normal(0, 0.02, n)), 2)
    yield "2-decimal readings (float64)", readings.astype("<f8")
    for share in (0.001, 0.01, 0.05):
        x = readings.copy()
        x[rng.random(n) < share] = np.nan
        yield f"  with single NaN dropouts, {share:.1%}", x.astype("<f8")
    x = readings.copy()
    for start in rng.integers(0, n - 20, max(1, int(0.01 * n / 20))):
        x[start : start + 20] = np.nan
    yield "  with NaN gaps of 20, 1%", x.astype("<f8")
    noisy = np.sin(t / 50) * 3 + rng.normal(0, 0.01, n)
    yield "noisy float32 readings (float32)", noisy.astype("<f4")
    yield "  the same float32 stored as float64", noisy.astype(np.float32).astype("<f8")
    two = np.round(readings * 10 + rng.normal(0, 0.3, n), 2).astype(np.float32)
    yield "2-decimal float32 readings (float32)", two.astype("<f4")
    yield "  the same 2-decimal float32 as float64", two.astype("<f8")
    yield "float16 values stored as float64", noisy.astype(np.float16).astype("<f8")
    bf16 = (noisy.astype(np.float32).view(np.uint32) & 0xFFFF0000).view(np.float32)
    yield "bfloat16 values stored as float32", bf16.astype("<f4")
    cut = (noisy.view(np.uint64) & ~np.uint64((1 << 22) - 1)).view(np.float64)
    yield "float64 mantissas cut to 30 bits", cut.astype("<f8")


def others() -> dict[str, Callable[[np.ndarray], int]]:
    """The other codecs, by name: their compressed size of an array (pcodec when installed:
    the bench extra)."""
    import zstandard

    found: dict[str, Callable[[np.ndarray], int]] = {}
    try:
        from pcodec import ChunkConfig, standalone

        config = ChunkConfig(compression_level=8)
        found["pcodec-8"] = lambda x: len(
            standalone.simple_compress(x.astype(x.dtype.newbyteorder("=")), config)
        )
    except ImportError:
        pass
    found["xz-9"] = lambda x: len(lzma.compress(x.tobytes(), preset=9 | lzma.PRESET_EXTREME))
    zstd = zstandard.ZstdCompressor(level=19)
    found["zstd-19"] = lambda x: len(zstd.compress(x.tobytes()))
    return found


def measure(name: str, x: np.ndarray, rivals: dict[str, Callable]) -> dict:
    """One case: every qres profile (checked by decoding) and every rival, as ratios."""
    raw = x.tobytes()
    spec = StreamSpec("float64" if x.dtype.itemsize == 8 else "float32", 1)
    row: dict = {"case": name, "bytes": len(raw)}
    for profile in PROFILES:
        packed = compress_bytes(raw, spec, profile)
        if decompress_bytes(packed) != raw:
            raise SystemExit(f"float_kinds: {name}: qres {profile} did not restore the input")
        row[f"qres-{profile}"] = len(raw) / len(packed)
    for rival, size in rivals.items():
        row[rival] = len(raw) / size(x)
    best = max(row[r] for r in rivals)
    row["server / best other"] = row["qres-server"] / best
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", type=int, default=40_000, help="samples a case")
    ap.add_argument("--json", help="write the rows as JSON")
    args = ap.parse_args(argv)
    rivals = others()
    rows = [measure(name, x, rivals) for name, x in cases(args.samples)]
    columns = [f"qres-{p}" for p in PROFILES] + list(rivals) + ["server / best other"]
    print(f"{'case':40s}" + "".join(f"{c:>22s}" for c in columns))
    for row in rows:
        print(f"{row['case']:40s}" + "".join(f"{row[c]:22.3f}" for c in columns))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
