"""The codec's output bytes, pinned: sha256 of every corpus file's container under each
profile, and of the bytes it decodes back to, written to a JSON file or checked against one.

A change meant to make the codec faster (its native kernels) must not change one output byte.
Record the digests before the change, make it, and check after::

    .venv/bin/python benchmarks/codec_digests.py [DATA] --write before.json
    .venv/bin/python benchmarks/codec_digests.py [DATA] --check before.json

``DATA`` is any folder with a MANIFEST.tsv (default ``$QRES_DATA``, else ../shared/data), read
as ``compare_codecs.py`` reads it. Lossless runs use every profile of ``--profiles`` (default
``server,fast,esp32``); ``--max-error`` adds bounded-error runs of the same profiles at those
absolute bounds on the integer files. Every round trip is checked too (lossless: bit-exact).
The exit status is 0 when every digest matches (or was written), 1 when any differs or a round
trip failed, 2 on bad usage.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
from rich.console import Console

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare_codecs import DEFAULT_DATA, _qres_spec, read_corpus  # noqa: E402


def digests(items, profiles: list[str], bounds: list[float], console: Console) -> dict:
    """``{"<file> <profile>[ E=<b>]": {"qres": sha, "decoded": sha, "bytes": n}}``; a lossless
    round trip that is not exact is recorded with ``"exact": false``."""
    from qres.codec.files import compress_bytes, decompress_bytes

    out: dict[str, dict] = {}
    for item in items:
        spec = _qres_spec(item)
        runs = [(p, 0.0) for p in profiles]
        if item.is_int:
            runs += [(p, b) for b in bounds for p in profiles]
        for profile, bound in runs:
            blob = compress_bytes(item.raw, spec, profile, max_error=bound)
            decoded = decompress_bytes(blob)
            key = f"{item.file} {profile}" + (f" E={bound:g}" if bound else "")
            rec = {
                "qres": hashlib.sha256(blob).hexdigest(),
                "decoded": hashlib.sha256(decoded).hexdigest(),
                "bytes": len(blob),
            }
            if not bound:
                rec["exact"] = decoded == item.raw
            else:
                err = np.abs(
                    np.frombuffer(decoded, item.array.dtype).astype(np.float64)
                    - item.array.astype(np.float64)
                )
                rec["exact"] = bool(err.size == 0 or err.max() <= bound)
            out[key] = rec
            console.print(f"{key:72s} {rec['qres'][:16]} {len(blob):>9d}")
    return out


def compare(now: dict, before: dict, console: Console) -> int:
    """The number of differences (and failed round trips), each printed."""
    bad = 0
    for key in sorted(set(now) | set(before)):
        a, b = before.get(key), now.get(key)
        if a is None or b is None:
            console.print(f"[red]{key}: only in {'the check file' if b is None else 'this run'}")
            bad += 1
        elif (a["qres"], a["decoded"]) != (b["qres"], b["decoded"]):
            console.print(f"[red]{key}: digest differs ({a['bytes']} -> {b['bytes']} bytes)")
            bad += 1
    bad += sum(1 for key, rec in now.items() if not rec["exact"])
    return bad


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data", nargs="?", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--profiles", default="server,fast,esp32")
    ap.add_argument("--max-error", default="", help="comma-separated absolute bounds")
    ap.add_argument("--files", default="", help="comma-separated glob patterns")
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", type=Path, help="record the digests in this JSON file")
    mode.add_argument("--check", type=Path, help="compare with the digests in this JSON file")
    args = ap.parse_args(argv)
    console = Console(highlight=False, width=120)
    patterns = [p for p in args.files.split(",") if p]
    items = read_corpus(args.data, patterns, "all", console)
    profiles = [p for p in args.profiles.split(",") if p]
    bounds = [float(b) for b in args.max_error.split(",") if b]
    now = digests(items, profiles, bounds, console)
    failed = [k for k, rec in now.items() if not rec["exact"]]
    for key in failed:
        console.print(f"[red]{key}: round trip failed")
    if args.write:
        args.write.write_text(json.dumps(now, indent=1, sort_keys=True) + "\n")
        console.print(f"{len(now)} digests written to {args.write}")
        return 1 if failed else 0
    bad = compare(now, json.loads(args.check.read_text()), console)
    console.print(
        f"[red]{bad} difference(s)" if bad else f"[green]all {len(now)} digests identical"
    )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
