#!/usr/bin/env python3
"""Which float-to-integer mapping codes the float files of the corpus smallest?

For every float file of the MANIFEST (default ``../shared/data``), each block of the profile's
size (server by default) is mapped by several candidate mappings, the integer streams go
through the profile's real predictor and coder (extra streams through the coder alone, as the
codec does), and the script prints bits/sample per file and mapping, the mapping time, and the
anchors' bits/sample (best of FLAC -8, pcodec, xz -9 from ``tools/anchor_results.tsv``):

* ``bits``: the order-preserving integers of the IEEE-754 bits (the fallback view);
* ``xor``: each sample's bits XOR the previous sample's (Gorilla/Chimp style), coded without a
  predictor (it is not a signal a linear predictor can follow);
* ``split``: sign+exponent and mantissa as two streams, each through predictor and coder;
* ``decimal``: ``round(x * 10**d)`` with the fewest decimals that make 99 % of the samples
  exact, the others stored verbatim (64 bits + a 32-bit index each): the original mapping;
* ``decimal+ulp``: the same ``d`` chosen by cost, with an ulp correction stream instead of
  verbatim exceptions;
* ``lattice``: what ``qres.codec.mapping.to_integers`` does (piecewise decimal lattices with decimal
  and ulp correction streams, or the bit view when that is cheaper), side record included.

Usage: python benchmarks/float_mapping_study.py [DATA_DIR] [--profile server] [--only NAME,...]
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np

from qres.codec import files as api
from qres.codec import mapping
from qres.codec.samples import StreamSpec
from qres.kernel.config import Location
from qres.kernel.plugins import create

MAPPINGS = ("bits", "xor", "split", "decimal", "decimal+ulp", "lattice")
ANCHORS = ("flac-8", "pcodec-8", "pcodec-12", "xz-9")


class Pipeline:
    """The profile's predictor and coder, measuring coded bytes."""

    def __init__(self, profile: str):
        settings, _ = api.codec_settings(profile)
        where = Location("<study>", "codec")
        self.predictor = create("predictor", settings.predictor, where.child("predictor"))
        self.coder = create("coder", settings.coder, where.child("coder"))
        self.block = settings.block_frames

    def predicted(self, ints: np.ndarray) -> int:
        """Bytes of (channels, frames) int64 streams through predictor and coder."""
        residuals = self.predictor.encode(np.ascontiguousarray(ints, dtype=np.int64))
        return sum(len(self.coder.encode(r)) + 4 for r in residuals)

    def coded(self, stream: np.ndarray) -> int:
        """Bytes of one stream through the coder alone."""
        return len(self.coder.encode(np.ascontiguousarray(stream, dtype=np.int64))) + 4


def _signed(x: np.ndarray) -> np.ndarray:
    return x.view(np.int32 if x.dtype.itemsize == 4 else np.int64).astype(np.int64)


def _xor_prev(x: np.ndarray) -> np.ndarray:
    bits = _signed(x)
    return bits ^ np.concatenate([[0], bits[:-1]])


def _split(x: np.ndarray) -> np.ndarray:
    bits = _signed(x)
    mant = 23 if x.dtype.itemsize == 4 else 52
    return np.stack([bits >> mant, bits & ((1 << mant) - 1)])


def _old_decimal(x: np.ndarray, dtype: str) -> tuple[np.ndarray, int] | None:
    """The original mapping: fewest decimals with <= 1 % exceptions, exceptions verbatim."""
    for d in range(mapping.MAX_DECIMALS[dtype] + 1):
        k, fits, exact = mapping._decimal_view(x, dtype, d)
        if np.mean(exact) >= 0.99:
            bad = ~exact
            k = mapping._forward_fill(np.where(fits, k, 0.0), bad).astype(np.int64)
            return k, int(np.count_nonzero(bad)) * (4 + x.dtype.itemsize)
    return None


def _decimal_ulp(x: np.ndarray, dtype: str) -> tuple[np.ndarray, np.ndarray] | None:
    candidates = mapping._choose_decimals(x, dtype)
    if not candidates:
        return None
    d = min(candidates)
    k, fits, _ = mapping._decimal_view(x, dtype, d)
    k = mapping._forward_fill(np.where(fits, k, 0.0), ~fits)
    back = (k / 10.0**d).astype(dtype)
    ulps = mapping._monotonic_bits(x, dtype) - mapping._monotonic_bits(back, dtype)
    return k.astype(np.int64), ulps


def study_block(pipe: Pipeline, block: np.ndarray, spec: StreamSpec) -> dict[str, list[float]]:
    """Bytes and mapping seconds of every mapping on one (frames, channels) block."""
    out: dict[str, list[float]] = {m: [0.0, 0.0] for m in MAPPINGS}
    for c in range(spec.channels):
        x = np.ascontiguousarray(block[:, c])
        out["bits"][0] += pipe.predicted(mapping._monotonic_bits(x, spec.dtype)[None])
        out["xor"][0] += pipe.coded(_xor_prev(x))
        out["split"][0] += pipe.predicted(_split(x))
        old = _old_decimal(x, spec.dtype)
        if old is None:
            old_cost = pipe.predicted(mapping._monotonic_bits(x, spec.dtype)[None])
        else:
            old_cost = pipe.predicted(old[0][None]) + old[1]
        out["decimal"][0] += old_cost
        found = _decimal_ulp(x, spec.dtype)
        if found is None:
            out["decimal+ulp"][0] += pipe.predicted(mapping._monotonic_bits(x, spec.dtype)[None])
        else:
            extra = pipe.coded(found[1]) if found[1].any() else 0
            out["decimal+ulp"][0] += pipe.predicted(found[0][None]) + extra
    started = time.perf_counter()
    mapped = mapping.to_integers(block, spec, None)
    out["lattice"][1] += time.perf_counter() - started
    out["lattice"][0] += pipe.predicted(mapped.ints) + len(mapped.side)
    out["lattice"][0] += sum(pipe.coded(e) for e in mapped.extras)
    return out


def anchors(data: Path) -> dict[tuple[str, str], float]:
    """Bits/sample of the anchor codecs by (file, codec)."""
    path = data.parent / "tools" / "anchor_results.tsv"
    found: dict[tuple[str, str], float] = {}
    if path.is_file():
        with path.open(newline="") as f:
            for row in csv.DictReader(f, delimiter="\t"):
                if row["codec"] in ANCHORS and row["bits_per_sample"]:
                    found[(row["file"], row["codec"])] = float(row["bits_per_sample"])
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "data", nargs="?", default=str(Path(__file__).resolve().parents[2] / "shared" / "data")
    )
    parser.add_argument("--profile", default="server")
    parser.add_argument("--only", default="", help="comma-separated MANIFEST names")
    args = parser.parse_args(argv)
    data = Path(args.data)
    with (data / "MANIFEST.tsv").open(newline="") as f:
        rows = [r for r in csv.DictReader(f, delimiter="\t") if r["dtype"].startswith("float")]
    if args.only:
        rows = [r for r in rows if r["name"] in args.only.split(",")]
    pipe = Pipeline(args.profile)
    known = anchors(data)
    print(f"profile {args.profile}, block {pipe.block} frames; bits/sample (lower is better)")
    print(
        f"{'file':36s}"
        + "".join(f"{m:>12s}" for m in MAPPINGS)
        + f"{'map MB/s':>10s}"
        + f"{'best anchor':>20s}"
    )
    for row in rows:
        channels = int(row["channels"])
        spec = StreamSpec(row["dtype"], channels)
        x = np.fromfile(data / row["file"], dtype=np.dtype(row["dtype"]).newbyteorder("<"))
        x = x.astype(x.dtype.newbyteorder("="))
        block = x.reshape(channels, -1).T if channels > 1 else x.reshape(-1, 1)
        totals = {m: [0.0, 0.0] for m in MAPPINGS}
        for start in range(0, block.shape[0], pipe.block):
            part = np.ascontiguousarray(block[start : start + pipe.block])
            for m, (size, secs) in study_block(pipe, part, spec).items():
                totals[m][0] += size
                totals[m][1] += secs
        samples = x.size
        best = min(
            ((known[(row["file"], a)], a) for a in ANCHORS if (row["file"], a) in known),
            default=(float("nan"), "-"),
        )
        speed = x.nbytes / totals["lattice"][1] / 1e6 if totals["lattice"][1] else float("inf")
        print(
            f"{row['name']:36s}"
            + "".join(f"{8 * totals[m][0] / samples:12.3f}" for m in MAPPINGS)
            + f"{speed:10.1f}"
            + f"{best[0]:10.3f} {best[1]:>9s}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
