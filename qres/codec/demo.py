"""The bundled demo: a sensor recording qres generates itself, compressed, restored, checked.

The sample is four channels of int16 readings from a simulated weather-and-vibration node, made
by a seeded generator so it is the same bytes everywhere: air temperature in centi-degrees (a
daily cycle plus weather fronts), relative humidity in per-mille, barometric pressure in
decapascals, and a vibration sensor that idles near zero and rings during events.
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from pathlib import Path
from typing import Any

#: Frames (one reading of each channel) in the demo sample: 48 h at one reading per second.
DEMO_FRAMES = 172_800
DEMO_CHANNELS = 4
DEMO_SEED = 20261124
DEMO_PROFILES = ("server", "fast", "esp32")
#: How the demo recording is described to ``qres compress``.
SAMPLE_SPEC = {"dtype": "int16", "channels": DEMO_CHANNELS, "layout": "interleaved"}


def make_sample(frames: int = DEMO_FRAMES, seed: int = DEMO_SEED) -> bytes:
    """The demo recording: ``frames`` x 4 int16 channels, interleaved, little-endian."""
    import numpy as np

    rng = np.random.default_rng(seed)
    t = np.arange(frames, dtype=np.float64)
    day = 86_400.0
    fronts = np.cumsum(rng.normal(0, 0.002, frames))
    temperature = 1500 + 600 * np.sin(2 * np.pi * (t / day - 0.3)) + 300 * fronts
    temperature += rng.normal(0, 2.0, frames)
    humidity = 650 - 0.4 * (temperature - 1500) + rng.normal(0, 3.0, frames)
    pressure = 10130 + 40 * np.sin(2 * np.pi * t / (3 * day)) + 200 * fronts / 3
    pressure += rng.normal(0, 0.6, frames)
    vibration = rng.normal(0, 1.5, frames)
    for start in rng.integers(0, frames - 4000, 24):
        ring = np.arange(4000)
        vibration[start : start + 4000] += (
            3000 * np.exp(-ring / 600) * np.sin(2 * np.pi * ring / rng.uniform(8, 40))
        )
    block = np.stack([temperature, humidity, pressure, vibration], axis=1)
    return np.clip(np.rint(block), -32768, 32767).astype("<i2").tobytes()


def write_sample(target: str, force: bool = False) -> int:
    """Write the demo recording to ``target`` (``-``: stdout); return its size in bytes."""
    from qres.kernel.outputs import atomic_output

    raw = make_sample()
    with atomic_output(target, force) as out:
        out.write(raw)
    return len(raw)


def run(folder: str | None = None, profiles: list[str] | None = None) -> dict[str, Any]:
    """Write the sample, compress it with each profile, decompress, compare; return results."""
    from qres.codec import files as api
    from qres.kernel.outputs import atomic_output

    with tempfile.TemporaryDirectory(prefix="qres-demo-") as tmp:
        where = Path(folder) if folder else Path(tmp)
        where.mkdir(parents=True, exist_ok=True)
        sample = where / "demo-4ch-int16.bin"
        raw = make_sample()
        with atomic_output(str(sample), True) as out:
            out.write(raw)
        digest = hashlib.sha256(raw).hexdigest()
        rows = []
        for name in profiles or DEMO_PROFILES:
            packed = where / f"demo-4ch-int16.{name}.qres"
            restored = where / f"demo-4ch-int16.{name}.restored"
            stats = api.compress_file(
                str(sample),
                str(packed),
                profile=name,
                dtype="int16",
                channels=DEMO_CHANNELS,
                force=True,
            )
            started = time.perf_counter()
            api.decompress_file(str(packed), str(restored), force=True)
            seconds = time.perf_counter() - started
            same = hashlib.sha256(restored.read_bytes()).hexdigest() == digest
            rows.append(
                {
                    "profile": name,
                    "input_bytes": stats.raw_bytes,
                    "output_bytes": stats.packed_bytes,
                    "ratio": round(stats.ratio, 4),
                    "compress_mb_s": round(stats.raw_bytes / 1e6 / max(stats.seconds, 1e-9), 2),
                    "decompress_mb_s": round(stats.raw_bytes / 1e6 / max(seconds, 1e-9), 2),
                    "identical": same,
                }
            )
        return {
            "sample": str(sample) if folder else "demo-4ch-int16.bin (temporary)",
            "frames": DEMO_FRAMES,
            "channels": DEMO_CHANNELS,
            "dtype": "int16",
            "sha256": digest,
            "results": rows,
            "ok": all(r["identical"] for r in rows),
        }


def show(results: dict[str, Any], console) -> None:
    """Print the demo's results as a table."""
    from rich.table import Table

    console.print(
        f"[bold]qres demo[/bold]: {results['frames']:,} frames x {results['channels']} channels "
        f"of {results['dtype']} sensor readings ({results['sample']})"
    )
    out = Table(title_justify="left")
    for column in (
        "profile",
        "bytes in",
        "bytes out",
        "ratio",
        "compress MB/s",
        "decompress MB/s",
        "restored",
    ):
        out.add_column(column, justify="left" if column == "profile" else "right")
    for r in results["results"]:
        out.add_row(
            r["profile"],
            f"{r['input_bytes']:,}",
            f"{r['output_bytes']:,}",
            f"{r['ratio']:.3f}",
            f"{r['compress_mb_s']:.1f}",
            f"{r['decompress_mb_s']:.1f}",
            "[green]identical[/green]" if r["identical"] else "[red]DIFFERENT[/red]",
        )
    console.print(out)
    if results["ok"]:
        console.print("Every profile restored the exact original bytes (SHA-256 checked).")
