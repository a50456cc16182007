"""``qres compress``, ``decompress``, ``info``, ``verify`` and ``demo``: the codec's commands."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import typer

from qres.cli.output import console, print_json, table

#: Inputs larger than this get a progress bar on a terminal.
PROGRESS_MIN_BYTES = 4 << 20

THREADS = typer.Option(
    1,
    "--threads",
    "-t",
    min=1,
    max=256,
    help="Worker threads; the output bytes do not depend on it.",
)
FORCE = typer.Option(False, "--force", "-f", help="Overwrite an existing output file.")
JSON = typer.Option(False, "--json", help="Print one JSON object for scripts.")
MAX_OUTPUT = typer.Option(
    None,
    "--max-output",
    metavar="SIZE",
    help="Stop before producing more than SIZE bytes (e.g. 20G; 'none': no limit). Default: "
    "the free space where the output goes; no limit for verify and pipes.",
)


def _max_output(text: str | None, target: str | None) -> int | None:
    from qres.codec import limits

    return limits.default_max_output(target) if text is None else limits.parse_size(text)


@contextmanager
def _no_space(given: str | None, target: str) -> Iterator[None]:
    """Without ``--max-output`` the limit is the free space where the output goes: name the
    target and say that it is full, as a write would, but before anything is written."""
    from qres.codec import limits
    from qres.kernel.outputs import is_stdout

    try:
        yield
    except limits.OutputLimit as exc:
        if given is not None or exc.limit is None:
            raise
        where = "stdout" if is_stdout(target) else target
        raise limits.OutputLimit(
            f"{where}: no space left on device: the output needs more than the "
            f"{limits.format_size(exc.limit)} free there; free some space, write elsewhere, "
            "or pass --max-output none to try anyway",
            limit=exc.limit,
        ) from None


def _size(path: str) -> int:
    try:
        return os.path.getsize(path) if path != "-" else 0
    except OSError:
        return 0


@contextmanager
def _progress(total: int, label: str, quiet: bool) -> Iterator[Callable[[int], None] | None]:
    """A rich progress bar on a terminal for large inputs; nothing in pipes or with --json."""
    if quiet or total < PROGRESS_MIN_BYTES or not sys.stderr.isatty():
        yield None
        return
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)


def _report(stats: Any, as_json: bool, extra: dict[str, Any], to_stderr: bool, verb: str) -> None:
    mb_s = stats.raw_bytes / 1e6 / stats.seconds if stats.seconds > 0 else 0.0
    record = {
        **extra,
        "ratio": round(stats.ratio, 6),
        "seconds": round(stats.seconds, 6),
        "mb_per_s": round(mb_s, 3),
        "frames": stats.frames,
        "blocks": stats.blocks,
        "methods": stats.methods,
    }
    if as_json:
        if to_stderr:
            import json

            print(json.dumps(record), file=sys.stderr)
        else:
            print_json(record)
        return
    line = (
        f"{verb} {extra['input']} -> {extra['output']}: {extra['input_bytes']:,} -> "
        f"{extra['output_bytes']:,} bytes, ratio {stats.ratio:.3f}, {mb_s:.1f} MB/s"
    )
    print(line, file=sys.stderr if to_stderr else sys.stdout)


def compress(
    file: str = typer.Argument(..., help="Input file, or - for stdin."),
    output: str = typer.Option(
        None, "-o", "--output", help="Output (default FILE.qres; - for stdout)."
    ),
    profile: str = typer.Option(
        None,
        "--profile",
        "-p",
        help="Profile name or .toml path (default: $QRES_PROFILE or server).",
    ),
    dtype: str = typer.Option(
        None,
        "--dtype",
        help="Sample type of raw input: int8/16/24/32/64 (int24: packed 3-byte), "
        "uint8/16/32, float32/64 (default: the profile's).",
    ),
    channels: int = typer.Option(None, "--channels", min=1, help="Channels (default 1)."),
    layout: str = typer.Option(None, "--layout", help="interleaved (default) or planar."),
    byte_order: str = typer.Option(None, "--byte-order", help="little (default) or big."),
    max_error: float = typer.Option(
        0.0, "--max-error", min=0.0, help="Bound on |x - x'| per sample; 0 is lossless."
    ),
    threads: int = THREADS,
    as_json: bool = JSON,
    force: bool = FORCE,
    raw: bool = typer.Option(
        False, "--raw", help="Read .npy and WAV files as plain samples (their headers too)."
    ),
) -> None:
    """Compress sensor samples into a .qres container (.npy and WAV files describe their own)."""
    from qres.codec import files as api
    from qres.kernel.outputs import is_stdout

    output = output or ("-" if file == "-" else f"{file}.qres")
    profile = profile or os.environ.get("QRES_PROFILE") or api.DEFAULT_PROFILE
    to_stdout = is_stdout(output)
    with _progress(_size(file), "compress", as_json) as progress:
        stats = api.compress_file(
            file,
            output,
            profile=profile,
            dtype=dtype,
            channels=channels,
            layout=layout,
            byte_order=byte_order,
            max_error=max_error,
            threads=threads,
            force=force,
            progress=progress,
            raw=raw,
        )
    _report(
        stats,
        as_json,
        {
            "input": file,
            "output": output,
            "input_bytes": stats.raw_bytes,
            "output_bytes": stats.packed_bytes,
            "profile": profile,
        },
        to_stdout,
        "compressed",
    )


def decompress(
    file: str = typer.Argument(..., help="A .qres file, or - for stdin."),
    output: str = typer.Option(
        None, "-o", "--output", help="Output (default FILE without .qres; - for stdout)."
    ),
    threads: int = THREADS,
    as_json: bool = JSON,
    force: bool = FORCE,
    max_output: str = MAX_OUTPUT,
) -> None:
    """Restore the exact original bytes from a .qres container."""
    from qres.codec import files as api
    from qres.kernel.errors import QresError
    from qres.kernel.outputs import is_stdout

    if output is None:
        if file == "-":
            output = "-"
        elif file.endswith(".qres") and len(file) > 5:
            output = file[:-5]
            if os.path.isfile(output) and not force:
                raise QresError(
                    f"{output}: already exists (kept beside {file}?); restore elsewhere with "
                    "-o FILE, or pass --force to overwrite it"
                )
        else:
            raise QresError(f"{file}: name does not end in .qres; give the output with -o")
    to_stdout = is_stdout(output)
    limit = _max_output(max_output, output)
    with _progress(_size(file), "decompress", as_json) as progress, _no_space(max_output, output):
        _, stats = api.decompress_file(
            file, output, force=force, threads=threads, progress=progress, max_output=limit
        )
    _report(
        stats,
        as_json,
        {
            "input": file,
            "output": output,
            "input_bytes": stats.packed_bytes,
            "output_bytes": stats.raw_bytes,
        },
        to_stdout,
        "decompressed",
    )


def verify(
    file: str = typer.Argument(..., help="A .qres file, or - for stdin."),
    threads: int = THREADS,
    as_json: bool = JSON,
    max_output: str = MAX_OUTPUT,
) -> None:
    """Decode and check every block and the stream checksum without writing anything."""
    from qres.codec import files as api

    limit = _max_output(max_output, None)
    with _progress(_size(file), "verify", as_json) as progress:
        _, stats = api.verify_file(file, threads=threads, progress=progress, max_output=limit)
    if as_json:
        print_json(
            {
                "file": file,
                "ok": True,
                "blocks": stats.blocks,
                "frames": stats.frames,
                "input_bytes": stats.packed_bytes,
                "output_bytes": stats.raw_bytes,
                "ratio": round(stats.ratio, 6),
                "seconds": round(stats.seconds, 6),
            }
        )
    else:
        print(
            f"{file}: OK, {stats.blocks} blocks, {stats.frames:,} frames, "
            f"{stats.raw_bytes:,} bytes restored and checked"
        )


def info(
    file: str = typer.Argument(..., help="A .qres file."),
    as_json: bool = JSON,
) -> None:
    """Show a container's header, settings and block table (reads the index at the end)."""
    from qres._api import summarize
    from qres.codec.samples import open_input

    with open_input(file) as stream:
        summary = summarize(stream)
    if as_json:
        print_json(summary)
        return
    out = console()
    head = summary["header"]
    out.print(
        f"[bold]{file}[/bold]: qres format {summary['format_version']}, "
        f"{summary['file_bytes']:,} bytes"
    )
    for key in ("dtype", "channels", "layout", "byte_order", "block_frames"):
        out.print(f"  {key}: {head[key]}")
    out.print(
        f"  frames: {summary['frames']:,}   raw bytes: {summary['raw_bytes']:,}   "
        f"ratio: {summary['ratio']:.3f}"
    )
    out.print(f"  codec: {head['codec']}", markup=False)
    out.print(f"  sha256: {summary['sha256']}")
    rows = [
        [
            b["number"],
            b["offset"],
            b["frames"],
            b["method"],
            b["predictor"]
            + (" + polynomial channels" if b["polynomial_channels"] else "")
            + (" + channel pairs" if b.get("channel_pairs") else "")
            + (" + repeats" if b.get("repeats") else ""),
            b["payload_bytes"],
        ]
        for b in summary["blocks"]
    ]
    out.print(
        table("Blocks", ["block", "offset", "frames", "method", "predictor", "payload bytes"], rows)
    )


def demo(
    folder: str = typer.Option(
        None,
        "--dir",
        help="Where to write the demo files (default: a temporary folder, removed after).",
    ),
    profile: str = typer.Option(
        None,
        "--profile",
        "-p",
        help="Profile to compress with (default: server, plus esp32 and fast side by side).",
    ),
    sample: str = typer.Option(
        None,
        "--sample",
        help="Only write the demo recording (4 channels of int16, interleaved) here, to try "
        "the commands on; nothing else runs.",
    ),
    force: bool = FORCE,
    as_json: bool = JSON,
) -> None:
    """Compress, decompress and verify a sample the project generates itself; show the result."""
    from qres.codec import demo as demo_mod
    from qres.kernel.outputs import is_stdout

    if sample is not None:
        written = demo_mod.write_sample(sample, force)
        if as_json:
            print_json({"sample": sample, "bytes": written, **demo_mod.SAMPLE_SPEC})
        elif not is_stdout(sample):
            print(
                f"wrote {sample}: {written:,} bytes, {demo_mod.DEMO_FRAMES:,} frames x "
                f"{demo_mod.DEMO_CHANNELS} channels of int16 (--dtype int16 --channels 4)"
            )
        return
    results = demo_mod.run(folder, [profile] if profile else None)
    if as_json:
        print_json(results)
        return
    demo_mod.show(results, console())


def register(app: typer.Typer) -> None:
    """Add the codec commands to the app."""
    for command in (compress, decompress, info, verify, demo):
        app.command()(command)
