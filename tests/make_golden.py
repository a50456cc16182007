"""Regenerate the golden files in tests/golden (run only when the format changes on purpose).

python tests/make_golden.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from qres import api
from qres.demo import make_sample
from qres.samples import StreamSpec

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


def main() -> None:
    GOLDEN.mkdir(exist_ok=True)
    for name, (make, spec) in INPUTS.items():
        raw = make()
        (GOLDEN / f"{name}.bin").write_bytes(raw)
        for profile in PROFILES:
            (GOLDEN / f"{name}.{profile}.qres").write_bytes(
                api.compress_bytes(raw, spec, profile=profile)
            )


if __name__ == "__main__":
    main()
