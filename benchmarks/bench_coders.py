"""Residual coder benchmarks.

As pytest-benchmark cases (encode/decode speed on 1M Laplacian residuals)::

    .venv/bin/pytest benchmarks/bench_coders.py --benchmark-only

As a script, bits per sample of both coders on the residuals of a second-order difference
(or of a predictor plugin) over every file of a corpus with a MANIFEST.tsv, next to the
order-0 entropy of those residuals and the anchor codecs' figures::

    .venv/bin/python benchmarks/bench_coders.py [--data ../shared/data] [--block 4096]
        [--predictor diff2|<predictor plugin, e.g. nlms>]
"""

from __future__ import annotations

import argparse
import csv
import math
import time
from pathlib import Path

import numpy as np
import pytest

from qres.kernel import plugins
from qres.kernel.config import Location

N = 1_000_000
SCALE = 30.0  # about 6.5 bits per residual, typical of predicted sensor streams


def coder(name: str, **settings):
    """A coder plugin with the default settings, without the integrity trailer."""
    return plugins.create("coder", {"use": name, "checksum": False, **settings}, Location("bench"))


@pytest.fixture(scope="module")
def laplacian() -> np.ndarray:
    return np.random.default_rng(42).laplace(0.0, SCALE, N).round().astype(np.int64)


@pytest.mark.parametrize("name", ["rice", "arith"])
def test_encode(benchmark, laplacian, name):
    c = coder(name)
    data = benchmark.pedantic(c.encode, args=(laplacian,), rounds=5, iterations=1)
    benchmark.extra_info["bits_per_sample"] = len(data) * 8 / N
    benchmark.extra_info["M_residuals_per_s"] = N / benchmark.stats.stats.mean / 1e6


@pytest.mark.parametrize("name", ["rice", "arith"])
def test_decode(benchmark, laplacian, name):
    c = coder(name)
    data = c.encode(laplacian)
    out = benchmark.pedantic(c.decode, args=(data, N), rounds=5, iterations=1)
    assert np.array_equal(out, laplacian)
    benchmark.extra_info["M_residuals_per_s"] = N / benchmark.stats.stats.mean / 1e6


# ---------------------------------------------------------------------------------------------
# Corpus report.

DTYPES = {"int16": "<i2", "int32": "<i4", "int64": "<i8", "float32": "<f4", "float64": "<f8"}


def load_channels(folder: Path, row: dict[str, str]) -> list[np.ndarray]:
    """The file's channels as int64 arrays (floats as the integer view of their bits)."""
    x = np.fromfile(folder / row["file"], dtype=DTYPES[row["dtype"]])
    if x.dtype.kind == "f":
        x = x.view(np.int32 if x.itemsize == 4 else np.int64)
    channels = int(row["channels"])
    return list(x.astype(np.int64).reshape(channels, -1))


def diff2(channel: np.ndarray) -> np.ndarray:
    """Second-order difference with wrap-around, the first two samples against zero."""
    with np.errstate(over="ignore"):
        return np.diff(channel, 2, prepend=[0, 0])


def file_residuals(channels: list[np.ndarray], predictor: str) -> list[np.ndarray]:
    """Per-channel residuals of the whole file: ``diff2`` or a predictor plugin by name."""
    if predictor == "diff2":
        return [diff2(c) for c in channels]
    plugin = plugins.create("predictor", {"use": predictor}, Location("bench"))
    return list(plugin.encode(np.stack(channels)))


def entropy_bits(values: np.ndarray) -> float:
    """Order-0 empirical entropy of ``values`` in bits (the table itself not counted)."""
    _, counts = np.unique(values, return_counts=True)
    return float(-(counts * np.log2(counts / counts.sum())).sum())


def anchors(folder: Path) -> dict[tuple[str, str], float]:
    """bits per sample of the anchor codecs, by (file, codec), if the results table exists."""
    path = folder.parent / "tools" / "anchor_results.tsv"
    if not path.exists():
        return {}
    out = {}
    with path.open() as f:
        for row in csv.DictReader(f, delimiter="\t"):
            if row.get("bits_per_sample"):
                out[(row["file"], row["codec"])] = float(row["bits_per_sample"])
    return out


def report(folder: Path, block: int, predictor: str = "diff2", floats: bool = True) -> None:
    """Print bits per sample and speed of both coders for every file of the corpus."""
    with (folder / "MANIFEST.tsv").open() as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    known = anchors(folder)
    coders = {"rice": coder("rice"), "arith": coder("arith")}
    print(f"block = {block} samples per channel; residuals of {predictor}; bits per sample")
    head = f"{'file':34s} {'samples':>8s} {'H0':>7s} {'rice':>7s} {'arith':>7s}"
    print(head + f" {'arith/H0':>8s} {'flac-8':>7s} {'pcodec8':>7s}")
    logs = {"H0": 0.0, "rice": 0.0, "arith": 0.0}
    speed = {name: [0, 0.0, 0.0] for name in coders}  # samples, encode s, decode s
    if not floats:
        rows = [row for row in rows if not row["dtype"].startswith("float")]
    for row in rows:
        res = file_residuals(load_channels(folder, row), predictor)
        blocks = [
            np.ascontiguousarray(r[i : i + block]) for r in res for i in range(0, r.size, block)
        ]
        n = sum(b.size for b in blocks)
        h0 = sum(entropy_bits(r) for r in res) / n
        bits = {"H0": h0}
        for name, c in coders.items():
            t0 = time.perf_counter()
            coded = [c.encode(b) for b in blocks]
            t1 = time.perf_counter()
            for b, data in zip(blocks, coded, strict=True):
                if not np.array_equal(c.decode(data, b.size), b):
                    raise SystemExit(f"{name}: round trip failed on {row['file']}")
            t2 = time.perf_counter()
            bits[name] = sum(len(d) for d in coded) * 8 / n
            speed[name][0] += n
            speed[name][1] += t1 - t0
            speed[name][2] += t2 - t1
        for key in logs:
            logs[key] += math.log(bits[key])
        flac = known.get((row["file"], "flac-8"))
        pco = known.get((row["file"], "pcodec-8"))
        print(
            f"{row['name'][:34]:34s} {n:8d} {bits['H0']:7.3f} {bits['rice']:7.3f} "
            f"{bits['arith']:7.3f} {bits['arith'] / bits['H0']:8.3f} "
            f"{flac if flac is not None else float('nan'):7.3f} "
            f"{pco if pco is not None else float('nan'):7.3f}"
        )
    k = len(rows)
    geo = {key: math.exp(v / k) for key, v in logs.items()}
    print(
        f"{'geometric mean':34s} {'':8s} {geo['H0']:7.3f} {geo['rice']:7.3f} {geo['arith']:7.3f} "
        f"{geo['arith'] / geo['H0']:8.3f}"
    )
    for name, (n, enc, dec) in speed.items():
        print(f"{name}: encode {n / enc / 1e6:6.1f} M residuals/s, decode {n / dec / 1e6:6.1f} M/s")


def main() -> None:
    """Command-line entry point of the corpus report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default = Path(__file__).resolve().parents[2] / "shared" / "data"
    parser.add_argument("--data", type=Path, default=default, help="folder with MANIFEST.tsv")
    parser.add_argument("--block", type=int, default=4096, help="samples per channel block")
    parser.add_argument(
        "--predictor", default="diff2", help="diff2 (default) or a predictor plugin name"
    )
    parser.add_argument(
        "--no-floats", action="store_true", help="skip float files (coded as raw bit patterns)"
    )
    args = parser.parse_args()
    report(args.data, args.block, args.predictor, not args.no_floats)


if __name__ == "__main__":
    main()
