"""The entropy coders' speed against an earlier version of their source, side by side.

A change to the compiled coders (``plugins/coders/_arith.pyx``, ``_rice.pyx``) is judged by
how much faster it codes the same residuals, and whether it keeps every byte. Whole-codec runs
on this shared machine swing by 15% with the load; this script builds the coders as they were
(at a git revision, or from a folder of sources) into a temporary folder, imports them next
to the installed ones and times both on the same arrays, one right after the other, so the
load hits both alike::

    .venv/bin/python benchmarks/coder_ab.py [DATA] [--rev HEAD] [--coders arith,rice]

``--rev`` (default ``HEAD``: uncommitted changes against the last commit) or ``--from DIR``
(a folder holding ``_arith.pyx``, ``_rice.pyx`` and ``_bits.pxi``) gives the "before".
Residuals: each integer corpus channel's first ``--samples`` samples, as second differences
(``--residuals diff2``, default) or the ``nlms`` predictor's. Times are CPU time per sample,
best of ``--repeats``, with the coders' default settings. ``--require-same`` exits 1 when any
stream's bytes differ between the two builds (for changes meant to keep the format).
"""

from __future__ import annotations

import argparse
import importlib
import math
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare_codecs import DEFAULT_DATA, read_corpus  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SOURCES = ("_arith.pyx", "_rice.pyx", "_bits.pxi")
SHIFT, RATE_SHIFT = 3, 8  # the coders' default adapt_shift and rate_shift
_SETUP = """
from setuptools import Extension, setup
from Cython.Build import cythonize
names = {names!r}
setup(ext_modules=cythonize([Extension(n, [n + ".pyx"], extra_compile_args=["-O3"])
                             for n in names], quiet=True))
"""


def fetch_sources(rev: str | None, folder: Path | None, dest: Path) -> None:
    """The "before" sources into ``dest``, renamed ``<name>_before.pyx``."""
    for name in SOURCES:
        if folder is not None:
            text = (folder / name).read_text()
        else:
            text = subprocess.run(
                ["git", "-C", str(REPO), "show", f"{rev}:plugins/coders/{name}"],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
        target = name if name.endswith(".pxi") else name.replace(".pyx", "_before.pyx")
        (dest / target).write_text(text)


def build_before(coders: list[str], rev: str | None, folder: Path | None, dest: Path) -> dict:
    """Compile the "before" coders in ``dest`` and import them: ``{coder: module}``."""
    fetch_sources(rev, folder, dest)
    names = [f"_{c}_before" for c in coders]
    (dest / "setup.py").write_text(_SETUP.format(names=names))
    # Built in the temporary folder, never in the checkout (whose qres/ would shadow the
    # installed package for the child).
    subprocess.run(
        [sys.executable, "-I", "setup.py", "build_ext", "--inplace", "-q"],
        cwd=dest,
        check=True,
        capture_output=True,
    )
    sys.path.insert(0, str(dest))
    try:
        for c in coders:  # a build of an earlier call, from another folder
            sys.modules.pop(f"_{c}_before", None)
        return {c: importlib.import_module(f"_{c}_before") for c in coders}
    finally:
        sys.path.remove(str(dest))


def after_modules(coders: list[str]) -> dict:
    """The installed coders' compiled modules."""
    return {c: importlib.import_module(f"qres.builtin_plugins.coders._{c}") for c in coders}


def residual_rows(items, samples: int, kind: str) -> list[tuple[str, np.ndarray]]:
    """``(name, int64 residuals)`` per integer channel (the first ``samples`` of each)."""
    rows = []
    predictor = None
    if kind == "nlms":
        from qres.kernel import plugins
        from qres.kernel.config import Location

        predictor = plugins.create("predictor", {"use": "nlms"}, Location("coder_ab"))
    for item in items:
        if not item.is_int:
            continue
        a = item.array.astype(np.int64)
        chans = a.reshape(item.channels, -1) if item.planar else a.reshape(-1, item.channels).T
        for c, x in enumerate(chans):
            x = np.ascontiguousarray(x[:samples])
            if predictor is None:
                r = np.diff(x, 2, prepend=[0, 0])
            else:
                r = predictor.encode(x[None, :])[0]
            name = item.name + (f"[{c}]" if item.channels > 1 else "")
            rows.append((name, np.ascontiguousarray(r, dtype=np.int64)))
    return rows


def calls(coder: str, module, r: np.ndarray):
    """(encode, decode-of-blob) callables of one compiled coder module on ``r``."""
    if coder == "arith":
        seg = np.zeros(0, np.int64)
        return (
            lambda: module.encode(r, SHIFT, RATE_SHIFT, seg),
            lambda blob: module.decode(blob, r.size, SHIFT, RATE_SHIFT, seg),
        )
    return (lambda: module.encode(r, SHIFT), lambda blob: module.decode(blob, r.size, SHIFT))


def best_cpu(fn, repeats: int) -> float:
    """The fastest of ``repeats`` runs of ``fn``, in CPU seconds."""
    best = math.inf
    for _ in range(repeats):
        start = time.process_time()
        fn()
        best = min(best, time.process_time() - start)
    return best


def compare(coder: str, before, after, name: str, r: np.ndarray, repeats: int) -> dict:
    """One stream under both builds: times in ns per sample, sizes, and whether bytes match."""
    enc_b, dec_b = calls(coder, before, r)
    enc_a, dec_a = calls(coder, after, r)
    blob_b, blob_a = enc_b(), enc_a()
    view_b = np.frombuffer(blob_b, np.uint8)
    view_a = np.frombuffer(blob_a, np.uint8)
    out, reason = dec_a(view_a)
    if out is None or not np.array_equal(out, r):
        raise SystemExit(f"{coder} on {name}: the new build does not round-trip ({reason})")
    per = 1e9 / max(r.size, 1)
    return {
        "coder": coder,
        "stream": name,
        "samples": r.size,
        "same": blob_a == blob_b,
        "bytes": (len(blob_b), len(blob_a)),
        "encode": (best_cpu(enc_b, repeats) * per, best_cpu(enc_a, repeats) * per),
        "decode": (
            best_cpu(lambda: dec_b(view_b), repeats) * per,
            best_cpu(lambda: dec_a(view_a), repeats) * per,
        ),
    }


def summary(rows: list[dict]) -> dict:
    """Per coder: geometric mean of after/before time, encode and decode, and size."""
    out = {}
    for coder in sorted({row["coder"] for row in rows}):
        mine = [row for row in rows if row["coder"] == coder]
        out[coder] = {
            key: math.exp(
                sum(math.log(row[key][1] / row[key][0]) for row in mine if row[key][0] > 0)
                / len(mine)
            )
            for key in ("encode", "decode", "bytes")
        }
        out[coder]["same"] = all(row["same"] for row in mine)
    return out


def main(argv: list[str] | None = None) -> int:
    """Build the "before" coders, time both builds, print the table; see the module docstring."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data", nargs="?", default=str(DEFAULT_DATA))
    source = ap.add_mutually_exclusive_group()
    source.add_argument("--rev", default="HEAD", help="git revision of the before sources")
    source.add_argument("--from", dest="folder", help="folder of the before sources")
    ap.add_argument("--coders", default="arith,rice")
    ap.add_argument("--residuals", choices=("diff2", "nlms"), default="diff2")
    ap.add_argument("--samples", type=int, default=262144)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--files", default="", help="comma-separated name patterns")
    ap.add_argument("--require-same", action="store_true")
    args = ap.parse_args(argv)
    coders = [c for c in args.coders.split(",") if c]
    if not coders or set(coders) - {"arith", "rice"}:
        ap.error("--coders takes arith and/or rice")
    console = Console(width=max(Console().width, 120))
    patterns = [p for p in args.files.split(",") if p]
    items = read_corpus(Path(args.data), patterns, "int", console)
    streams = residual_rows(items, args.samples, args.residuals)
    tmp = Path(tempfile.mkdtemp(prefix="coder_ab_"))
    try:
        folder = Path(args.folder) if args.folder else None
        before = build_before(coders, None if folder else args.rev, folder, tmp)
        after = after_modules(coders)
        rows = [
            compare(c, before[c], after[c], name, r, args.repeats)
            for c in coders
            for name, r in streams
        ]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    table = Table(title=f"coders: before ({args.folder or args.rev}) / after, ns per sample")
    for head in ("coder", "stream", "samples", "bytes", "encode", "decode"):
        table.add_column(head, justify="left" if head in ("coder", "stream") else "right")
    for row in rows:
        size = "same" if row["same"] else "{} / {}".format(*row["bytes"])
        table.add_row(
            row["coder"],
            row["stream"],
            str(row["samples"]),
            size,
            "{:.1f} / {:.1f}".format(*row["encode"]),
            "{:.1f} / {:.1f}".format(*row["decode"]),
        )
    console.print(table)
    for coder, s in summary(rows).items():
        console.print(
            f"{coder}: time after/before (geomean) encode {s['encode']:.3f}x, decode "
            f"{s['decode']:.3f}x; bytes " + ("identical" if s["same"] else f"{s['bytes']:.4f}x")
        )
    if args.require_same and not all(row["same"] for row in rows):
        console.print("[red]bytes differ between the builds")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
