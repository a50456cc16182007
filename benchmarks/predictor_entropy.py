#!/usr/bin/env python3
"""Residual entropy and speed of the qres predictors on a folder of sensor files.

For every file of the MANIFEST (default ``../shared/data``), read with its dtype, channel count
and planar layout, each predictor encodes the data in blocks of ``--block`` samples per channel
(independent blocks, as the codec will), decodes them back (checked bit-exact) and reports:

* ``H0``: the empirical order-0 entropy of the residuals in bits/sample, computed per block of
  64K samples and averaged weighted by size (an ideal static coder per block);
* ``Hb``: a bucketed cost closer to what an adaptive coder pays on wide alphabets: the order-0
  entropy of each residual's bit-length class, plus the bits below the leading one, sent raw;
* encode and decode speed in MSamples/s (median of ``--repeats`` runs, one thread);

next to the anchors' bits/sample (FLAC -8, pcodec-12, xz -9) from anchor_results.tsv.

Float files are turned into integers first: decimal scaling ``round(x * 10**k)`` with the
smallest k that makes at least 95 % of the samples exact (the others would be stored as
exceptions by the container; their share is printed), else the order-preserving integer view
of the IEEE bits (sign-magnitude folded into two's complement).

Usage: python benchmarks/predictor_entropy.py [DATA_DIR] [--only NAME,...] [--predictors ...]
"""

from __future__ import annotations

import argparse
import csv
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from qres.kernel.config import Location
from qres.kernel.plugins import create

DTYPES = {
    "int16": "<i2",
    "int32": "<i4",
    "int64": "<i8",
    "uint16": "<u2",
    "uint32": "<u4",
    "float32": "<f4",
    "float64": "<f8",
}

#: Predictor tables measured by default: name -> profile table.
PREDICTORS = {
    "poly2": {"use": "polynomial", "order": 2},
    "nlms8": {"use": "nlms", "order": 8},
    "nlms": {"use": "nlms"},
    "nlms256+32+16": {"use": "nlms", "stages": [256, 32, 16]},
    "taaf": {"use": "taaf"},
}


def float_to_int(x: np.ndarray) -> tuple[np.ndarray, str]:
    """Integers for a float array, and a note saying how they were made."""
    for k in range(0, 10):
        scaled = np.round(x * 10.0**k)
        exact = (scaled / 10.0**k == x) & (np.abs(scaled) < 2**53)
        if exact.mean() >= 0.95:
            return scaled.astype(np.int64), f"decimal x1e{k}, {100 * (1 - exact.mean()):.2f}% exc"
    bits = x.view(np.int64 if x.dtype.itemsize == 8 else np.int32).astype(np.int64)
    top = np.int64(2**63 - 1) if x.dtype.itemsize == 8 else np.int64(2**31 - 1)
    # IEEE sign-magnitude -> an integer order that matches the float order
    return np.where(bits < 0, -(bits & top) - 1, bits), "IEEE bits (ordered)"


def load(data_dir: Path, row: dict) -> tuple[np.ndarray, str]:
    """The file as int64 (channels, n) and a note on the conversion."""
    raw = np.fromfile(data_dir / row["file"], dtype=DTYPES[row["dtype"]])
    note = "int"
    if raw.dtype.kind == "f":
        raw, note = float_to_int(raw)
    channels = int(row["channels"])
    return raw.astype(np.int64).reshape(channels, -1), note


def h0(r: np.ndarray) -> float:
    """Order-0 empirical entropy in bits of all values of r."""
    if r.size == 0:
        return 0.0
    _, counts = np.unique(r, return_counts=True)
    p = counts / r.size
    return float(-(p * np.log2(p)).sum() * r.size)


def hbucket(r: np.ndarray) -> float:
    """Bits to code r as (bit-length class, order-0) + raw bits under the leading one."""
    z = np.where(
        r >= 0,
        r.astype(np.uint64) << np.uint64(1),
        ((-(r + 1)).astype(np.uint64) << np.uint64(1)) | np.uint64(1),
    )
    lengths = np.zeros(z.shape, dtype=np.int64)
    nz = z > 0
    lengths[nz] = np.floor(np.log2(z[nz].astype(np.float64))).astype(np.int64) + 1
    # float log2 can be off by one at 2**k - 1 for huge values; fix by comparing exactly
    lengths[nz & (z < (np.uint64(1) << (lengths.clip(1, 63) - 1).astype(np.uint64)))] -= 1
    raw = np.clip(lengths - 1, 0, None).sum()
    return h0(lengths) + float(raw)


def measure(pred, x: np.ndarray, block: int, repeats: int) -> dict:
    """Entropy figures and speeds of one predictor on one file."""
    blocks = [x[:, i : i + block] for i in range(0, x.shape[1], block)]
    res = [pred.encode(b) for b in blocks]
    back = [pred.decode(r) for r in res]
    ok = all(np.array_equal(a, b) for a, b in zip(blocks, back, strict=True))
    allres = np.concatenate(res, axis=1).reshape(-1) if res else np.zeros(0, np.int64)
    n = allres.size
    chunk = 65536
    bits0 = sum(h0(allres[i : i + chunk]) for i in range(0, n, chunk))
    bitsb = sum(hbucket(allres[i : i + chunk]) for i in range(0, n, chunk))
    enc, dec = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for b in blocks:
            pred.encode(b)
        enc.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        for r in res:
            pred.decode(r)
        dec.append(time.perf_counter() - t0)
    return {
        "H0": bits0 / n,
        "Hb": bitsb / n,
        "ok": ok,
        "enc": n / statistics.median(enc) / 1e6,
        "dec": n / statistics.median(dec) / 1e6,
    }


def anchors(path: Path) -> dict[str, dict[str, float]]:
    """file -> codec -> bits/sample from anchor_results.tsv."""
    out: dict[str, dict[str, float]] = {}
    if not path.exists():
        return out
    with path.open() as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            if row["bits_per_sample"]:
                out.setdefault(row["file"], {})[row["codec"]] = float(row["bits_per_sample"])
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the measurement and print one table row per file and predictor."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", nargs="?", default=str(Path(__file__).parents[1] / "../shared/data"))
    ap.add_argument("--only", default="", help="comma-separated substrings of file names")
    ap.add_argument("--predictors", default=",".join(PREDICTORS))
    ap.add_argument("--block", type=int, default=65536, help="samples per channel per block")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        help="extra predictor NAME=python-dict, e.g. x={'use':'nlms','order':16}",
    )
    args = ap.parse_args(argv)
    data = Path(args.data)
    tables = dict(PREDICTORS)
    for item in args.set:
        key, _, table = item.partition("=")
        tables[key] = eval(table, {})  # a benchmark knob typed by the person running it
    names = [p for p in args.predictors.split(",") if p] + [s.partition("=")[0] for s in args.set]
    ref = anchors(data.parent / "tools" / "anchor_results.tsv")
    with (data / "MANIFEST.tsv").open() as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    only = [s for s in args.only.split(",") if s]
    print(
        f"{'file':34} {'predictor':16} {'H0':>6} {'Hb':>6} {'enc':>6} {'dec':>6} "
        f"{'flac8':>6} {'pco12':>6} {'xz9':>6}  note"
    )
    best_ratio: dict[str, list[float]] = {}
    for row in rows:
        if only and not any(s in row["name"] for s in only):
            continue
        x, note = load(data, row)
        a = ref.get(row["file"], {})
        anchor_best = min(
            [a[c] for c in ("flac-8", "pcodec-12", "pcodec-8", "xz-9") if c in a] or [math.nan]
        )
        for name in names:
            pred = create("predictor", tables[name], Location("bench", name))
            m = measure(pred, x, args.block, args.repeats)
            best_ratio.setdefault(name, []).append(anchor_best / m["Hb"])
            print(
                f"{row['name'][:34]:34} {name:16} {m['H0']:6.3f} {m['Hb']:6.3f} "
                f"{m['enc']:6.2f} {m['dec']:6.2f} {a.get('flac-8', math.nan):6.3f} "
                f"{a.get('pcodec-12', math.nan):6.3f} {a.get('xz-9', math.nan):6.3f}  "
                f"{note}{'' if m['ok'] else '  ROUND TRIP FAILED'}",
                flush=True,
            )
    print("\ngeometric mean of (best anchor bits / Hb) per predictor (> 1 beats the anchors):")
    for name, vals in best_ratio.items():
        print(
            f"  {name:16} {math.exp(sum(math.log(v) for v in vals) / len(vals)):.4f}"
            f"  (min {min(vals):.3f})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
