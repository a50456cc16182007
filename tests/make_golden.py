"""Regenerate the golden files in tests/golden (run only when the format changes on purpose).

python tests/make_golden.py

``format-v1.sensors-4ch-int16.esp32.qres``, ``format-v2.sensors-4ch-int16.server.qres`` and
``format-v3.sensors-4ch-int16.server.qres`` are not made here: they are the last files of
versions 1 (JSON header settings), 2 (no per-channel predictor codes) and 3 (no
significant-digit mapping), kept so a test checks that old files get the "unsupported format
version" error.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from qres.codec import files as api
from qres.codec.demo import make_sample
from qres.codec.samples import StreamSpec

GOLDEN = Path(__file__).resolve().parent / "golden"

#: name -> (input bytes maker, spec)
INPUTS = {
    "sensors-4ch-int16": (lambda: make_sample(frames=4096), StreamSpec("int16", 4)),
    "readings-2ch-float64": (
        lambda: (
            np.round(
                np.stack(
                    [20 + np.sin(np.arange(3000) / 50), 1013 + np.cos(np.arange(3000) / 70)], 1
                ),
                2,
            )
            .astype("<f8")
            .tobytes()
        ),
        StreamSpec("float64", 2),
    ),
}
PROFILES = ("server", "fast", "esp32", "arduino-mega")
#: Bounded-error goldens: (input, profile, max_error). They pin the block predictor choice
#: (flag bits 1-2: the int16 block keeps the profile's predictor, the float blocks pick the
#: per-level interpolation, code 3) and the arith coder's segments.
BOUNDED = (
    ("sensors-4ch-int16", "server", 16),
    ("readings-2ch-float64", "server", 0.05),
    ("readings-2ch-float64", "esp32", 0.05),
)


def bounded_name(name: str, profile: str, bound: float) -> str:
    """File name of a bounded-error golden."""
    return f"{name}.{profile}.e{bound}.qres"


def main() -> None:
    GOLDEN.mkdir(exist_ok=True)
    for name, (make, spec) in INPUTS.items():
        raw = make()
        (GOLDEN / f"{name}.bin").write_bytes(raw)
        for profile in PROFILES:
            (GOLDEN / f"{name}.{profile}.qres").write_bytes(
                api.compress_bytes(raw, spec, profile=profile)
            )
    for name, profile, bound in BOUNDED:
        raw = INPUTS[name][0]()
        packed = api.compress_bytes(raw, INPUTS[name][1], profile=profile, max_error=bound)
        (GOLDEN / bounded_name(name, profile, bound)).write_bytes(packed)


if __name__ == "__main__":
    main()
