"""Write and read a 100 MB int16 array through zarr: the qres codec beside zarr's default codec
(zstd after the bytes serializer) and pcodec's numcodecs codec, side by side in one run.

The array is the shared corpus's int16 mono recordings (respiration belt, ECG, PPG; the
synthetic file left out) laid end to end and repeated to the size asked; chunks are
``--chunk`` samples, so no codec sees a repeat inside a chunk unless the chunk is longer
than the recordings. Every read is checked equal to the data. Ratio is raw bytes over the
bytes stored; MB/s is raw megabytes (10**6) per second of ``z[:] = data`` and ``z[:]``, on
an in-memory store (the codec, not a disk, is measured).

    .venv/bin/python benchmarks/zarr_throughput.py [--mb 100] [--chunk 262144] [--repeat 1]
        [--data /work/shared/data]

Needs ``qres[zarr]`` and ``pcodec`` (in ``qres[bench]``).
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import numpy as np

RECORDINGS = ("resp_systole_belt_1khz_int16", "ecg_mitdb208_360hz_int16", "ppg_heartpy_data3_int16")


def corpus(folder: Path, megabytes: float) -> np.ndarray:
    """The int16 recordings end to end, repeated to ``megabytes`` MB."""
    rows = {r["name"]: r for r in csv.DictReader(open(folder / "MANIFEST.tsv"), delimiter="\t")}
    parts = [np.fromfile(folder / rows[name]["file"], dtype="<i2") for name in RECORDINGS]
    one = np.concatenate(parts)
    want = int(megabytes * 1e6) // 2
    return np.resize(one, want)


def codecs() -> dict[str, dict]:
    """name -> (serializer, compressors) keyword arguments of ``zarr.create_array``."""
    from zarr.codecs import BytesCodec, ZstdCodec
    from zarr.codecs.numcodecs import PCodec

    from qres.integrations.zarr import QresCodec

    return {
        "zarr default (bytes + zstd 0)": {"serializer": BytesCodec(), "compressors": ZstdCodec()},
        "pcodec level 8": {"serializer": PCodec(level=8), "compressors": None},
        "qres server": {"serializer": QresCodec(profile="server"), "compressors": None},
        "qres fast": {"serializer": QresCodec(profile="fast"), "compressors": None},
    }


def measure(data: np.ndarray, chunk: int, kwargs: dict, repeat: int) -> dict:
    """Best-of-``repeat`` write and read times and the stored size of one codec."""
    import zarr
    from zarr.storage import MemoryStore

    best_w = best_r = float("inf")
    stored = 0
    for _ in range(repeat):
        z = zarr.create_array(
            MemoryStore(), shape=data.shape, chunks=(chunk,), dtype=data.dtype, **kwargs
        )
        start = time.perf_counter()
        z[:] = data
        best_w = min(best_w, time.perf_counter() - start)
        stored = z.nbytes_stored()
        start = time.perf_counter()
        back = z[:]
        best_r = min(best_r, time.perf_counter() - start)
        if not np.array_equal(back, data):
            raise SystemExit("a codec did not restore the data exactly")
    mb = data.nbytes / 1e6
    return {
        "ratio": data.nbytes / stored,
        "write_mb_s": mb / best_w,
        "read_mb_s": mb / best_r,
        "stored_bytes": stored,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, default=100.0)
    ap.add_argument("--chunk", type=int, default=262_144)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--data", type=Path, default=Path("/work/shared/data"))
    a = ap.parse_args()
    data = corpus(a.data, a.mb)
    print(f"{data.nbytes / 1e6:.1f} MB int16, chunks of {a.chunk} samples")
    print(f"{'codec':<32} {'ratio':>7} {'write MB/s':>11} {'read MB/s':>10}")
    for name, kwargs in codecs().items():
        m = measure(data, a.chunk, kwargs, a.repeat)
        print(f"{name:<32} {m['ratio']:>7.3f} {m['write_mb_s']:>11.1f} {m['read_mb_s']:>10.1f}")


if __name__ == "__main__":
    main()
