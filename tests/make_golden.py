"""Regenerate the golden files in tests/golden (run only when the format changes on purpose).

python tests/make_golden.py

``format-v1.sensors-4ch-int16.esp32.qres``, ``format-v2.sensors-4ch-int16.server.qres`` and
``format-v3.sensors-4ch-int16.server.qres`` are not made here: they are the last files of
versions 1 (JSON header settings), 2 (no per-channel predictor codes) and 3 (no
significant-digit mapping), kept so a test checks that old files get the "unsupported format
version" error. Nor are ``format-v4.*`` (int16 and float64), ``format-v5.*`` (int24),
``format-v6.*`` (repeats and channel pairs; float64 readings), ``format-v7.*`` (float32 on
scaled lattices), ``format-v8.*`` (int16 dictionary), ``format-v9.*`` (bounded error, int16
and float64) and ``format-v10.*`` (bounded-error float64 with quantised blocks): the last files
of those versions, which this qres still reads, kept so a test checks that they decode to their
inputs.

Every integer golden made here is format 9 (lossless) or 10 (bounded error), every float one
format 11. ``adc-2ch-float32`` at bound 0.01 pins a quantised block on the channels' own
lattices (format 11: its converter codes' scaled lattices).
``format-v9.hourly-3ch-float64.server.qres`` and
``format-v10.hourly-3ch-float64.server.e0.02.qres`` are the last float files of those versions
(runs of non-finite samples verbatim, kind 5), kept the same way.
``hourly-3ch-float64`` (rain mostly 0.0, a flat water level with a NaN gap, a walk with -0.0
and an infinity) and ``gestures-3ch-int16`` pin quantised blocks (method 3) in their
bounded-error goldens; ``counts-2ch-int16`` at bound 2 pins a bounded block coded lossless.

``gestures-3ch-int16`` holds recurring gestures and two
channels that share their motion, so its lossless goldens pin the repeats and channel-pair
fields (block flag bits 4-5); ``adc-2ch-float32`` holds converter codes times scales that are
no power of ten, so its lossless goldens pin the scaled-lattice mapping (side-record kind 7);
``dropouts-2ch-float32`` holds decimal readings with scattered NaN and -inf dropouts, so
its lossless goldens pin run tables (side-record kind 9, format 11); ``wide-2ch-float64``
holds float32 and float16 values stored as float64, so they pin the shifted bit view (kind
10, format 11); ``counts-2ch-int16``
holds activity counts (few distinct values, bursts) and calibrated
readings (steps of 9 and 10), so they pin the dictionary (kind 8) and the integer scaled
lattice (kind 7); ``irradiance-3ch-int16`` holds global, direct and diffuse irradiance
(global equals diffuse whenever the direct beam is 0), so it pins repeats that copy from an
earlier channel (format 9).
"""

from __future__ import annotations

import math
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


def _audio_int24(frames: int = 6000) -> bytes:
    """Two channels of 24-bit audio-like samples from integer arithmetic only (the same bytes
    on every machine): two integer resonator tones of different pitch, plus noise from a 64-bit
    LCG, with a few samples at the type's limits."""
    lcg, out = 0x2545F4914F6CDD1D, []
    x = [[0, 500_000], [0, 300_000]]
    coeff = (63_000, 64_500)  # Q15: 2 cos(w), two pitches
    for _ in range(frames):
        frame = []
        for c in range(2):
            y = (coeff[c] * x[c][1] >> 15) - x[c][0]
            x[c] = [x[c][1], y]
            lcg = (lcg * 6364136223846793005 + 1442695040888963407) % (1 << 64)
            noise = (lcg >> 54) - 512
            frame.append(max(-(1 << 23), min((1 << 23) - 1, y + noise)))
        out.append(frame)
    out[100] = [-(1 << 23), (1 << 23) - 1]
    raw = bytearray()
    for frame in out:
        for v in frame:
            raw += v.to_bytes(3, "little", signed=True)
    return bytes(raw)


def _gestures_int16(frames: int = 6000) -> bytes:
    """Three channels of a low-rate accelerometer-like stream from integer arithmetic only:
    plateaus, three gestures (random walks from a 64-bit LCG) that recur exactly, noisy
    stretches between them; channel 2 follows channel 0 at twice its gain plus its own walk."""
    lcg = 0x9E3779B97F4A7C15

    def draw(n: int) -> int:
        nonlocal lcg
        lcg = (lcg * 6364136223846793005 + 1442695040888963407) % (1 << 64)
        return (lcg >> 33) % n

    templates = []
    for length in (150, 230, 310):
        walk, level = [], [0, 0, 0]
        for _ in range(length):
            level = [v + draw(81) - 40 for v in level]
            walk.append(list(level))
        templates.append(walk)
    rows: list[list[int]] = []
    while len(rows) < frames:
        kind = draw(3)
        if kind == 0:
            rows += templates[draw(3)]
        elif kind == 1:
            rows += [[draw(100) - 50] * 3] * (20 + draw(180))
        else:
            rows += [[draw(600) - 300 for _ in range(3)] for _ in range(50 + draw(100))]
    raw = bytearray()
    for a, b, c in rows[:frames]:
        for v in (a, b, max(-32768, min(32767, 2 * a + c // 4))):
            raw += v.to_bytes(2, "little", signed=True)
    return bytes(raw)


def _adc_float32(frames: int = 5000) -> bytes:
    """Two channels of converter codes stored as float32 volts: a 12-bit code times 10/4095
    centred on half a code, and a 10-bit code times 3.3/1023, from a 64-bit LCG random walk
    (binary64 products rounded to float32: the same bytes on every machine)."""
    lcg, codes, out = 0x853C49E6748FEA9B, [2048, 512], []
    for _ in range(frames):
        lcg = (lcg * 6364136223846793005 + 1442695040888963407) % (1 << 64)
        codes = [
            max(0, min(4095, codes[0] + (lcg >> 60) - 7)),
            max(0, min(1023, codes[1] + ((lcg >> 40) & 3) - 1)),
        ]
        out.append([(codes[0] - 2047.5) * (10 / 4095), codes[1] * (3.3 / 1023)])
    out[1000] = [0.1234567, -0.0]  # off the lattices: the ulp stream
    return np.array(out).astype("<f4").tobytes()


INPUTS["audio-2ch-int24"] = (_audio_int24, StreamSpec("int24", 2))
INPUTS["adc-2ch-float32"] = (_adc_float32, StreamSpec("float32", 2))


def _counts_int16(frames: int = 6000) -> bytes:
    """Two int16 channels from a 64-bit LCG: activity counts (zeros, then bursts of values
    from a small uneven set) and calibrated readings rint(code * 9.2593 - 0.49) of a
    random-walk code (steps of 9 and 10, no common divisor)."""
    levels = [0, 3, 7, 12, 20, 35, 61, 104, 180, 310, 540, 930, 1600]
    lcg, code, burst, out = 0x2545F4914F6CDD1D, 300, 0, []
    for _ in range(frames):
        lcg = (lcg * 6364136223846793005 + 1442695040888963407) % (1 << 64)
        if burst == 0 and (lcg >> 58) == 0:
            burst = 20 + (lcg >> 40) % 60
        count = levels[(lcg >> 20) % len(levels)] if burst else 0
        burst = max(0, burst - 1)
        code = max(0, min(3000, code + (lcg >> 61) - 3))
        out += [count, round(code * 9.2593 - 0.49)]
    return np.array(out, dtype="<i2").tobytes()


INPUTS["counts-2ch-int16"] = (_counts_int16, StreamSpec("int16", 2))


def _irradiance_int16(days: int = 120) -> bytes:
    """Hourly global, direct and diffuse irradiance (int16, from a 64-bit LCG): zero at night;
    in four-hour spells that are cloudy half the time the direct beam is 0 and global equals
    diffuse, else global is diffuse plus the beam times the sun's height (in 64ths)."""
    height = [0] * 6 + [8, 20, 32, 43, 52, 58, 62, 62, 58, 52, 43, 32, 20, 8] + [0] * 4
    lcg, out, cloudy = 0xDA942042E4DD58B5, [], False
    for hour in range(days * 24):
        lcg = (lcg * 6364136223846793005 + 1442695040888963407) % (1 << 64)
        if hour % 4 == 0:
            cloudy = (lcg >> 63) == 1
        sun = height[hour % 24]
        direct = 0 if cloudy or not sun else 300 + (lcg >> 20) % 600
        diffuse = sun * (20 + (lcg >> 40) % 280) // 64
        out += [diffuse + direct * sun // 64, direct, diffuse]
    return np.array(out, dtype="<i2").tobytes()


INPUTS["irradiance-3ch-int16"] = (_irradiance_int16, StreamSpec("int16", 3))


def _hourly_float64(hours: int = 3000) -> bytes:
    """Three hourly float64 channels from a 64-bit LCG, read from decimal text: rain (0.0 most
    hours, showers of 0.1 mm steps), a water level with long flat stretches and a gap of
    NaNs, and a temperature-like random walk of 0.01 steps with a -0.0 and an infinity."""
    lcg, rain, level, temp, out = 0x5851F42D4C957F2D, 0, 812, 1500, []
    for hour in range(hours):
        lcg = (lcg * 6364136223846793005 + 1442695040888963407) % (1 << 64)
        rain = max(0, rain + (lcg >> 61) - 4) if rain or (lcg >> 56) == 0 else 0
        rain = rain or (7 if (lcg >> 56) == 0 else 0)
        level += 1 if (lcg >> 50) % 97 == 0 else (-1 if (lcg >> 44) % 89 == 0 else 0)
        temp += (lcg >> 30) % 7 - 3
        gap = 1200 <= hour < 1260
        out.append([float(f"{rain / 10:.1f}"), math.nan if gap else level / 100, temp / 100])
    out[700][2], out[701][2] = -0.0, math.inf
    return np.array(out, dtype="<f8").tobytes()


INPUTS["hourly-3ch-float64"] = (_hourly_float64, StreamSpec("float64", 3))


def _dropouts_float32(frames: int = 3000) -> bytes:
    """Two float32 channels of decimal readings (a 0.1-step walk and a 0.05-step walk, from a
    64-bit LCG) with scattered dropouts: single NaNs in about 1 sample of 40, a NaN with
    another payload now and then, and short runs of -inf on the second channel."""
    lcg, a, b, out = 0x14057B7EF767814F, 200, 400, []
    quiet, other = np.float32(np.nan), np.array(0x7FC00123, "<u4").view("<f4")[()]
    for _ in range(frames):
        lcg = (lcg * 6364136223846793005 + 1442695040888963407) % (1 << 64)
        a += (lcg >> 61) % 3 - 1
        b += (lcg >> 50) % 5 - 2
        row = [np.float32(float(f"{a / 10:.1f}")), np.float32(float(f"{b / 20:.2f}"))]
        if (lcg >> 20) % 40 == 0:
            row[0] = other if (lcg >> 30) % 5 == 0 else quiet
        if (lcg >> 10) % 97 == 0:
            row[1] = np.float32(-np.inf)
        out.append(row)
    return np.array(out, dtype="<f4").tobytes()


INPUTS["dropouts-2ch-float32"] = (_dropouts_float32, StreamSpec("float32", 2))


def _wide_float64(frames: int = 3000) -> bytes:
    """Two float64 channels holding narrower floats (from a 64-bit LCG random walk): float32
    readings (a code divided by 37, rounded to float32) and float16 values of a walk that
    crosses zero (negative values, zeros), each widened exactly to float64."""
    lcg, a, b, out = 0x6C8E9CF570932BD5, 5000, 0, []
    for _ in range(frames):
        lcg = (lcg * 6364136223846793005 + 1442695040888963407) % (1 << 64)
        a += (lcg >> 60) % 7 - 3
        b = max(-900, min(900, b + (lcg >> 40) % 41 - 20))
        out.append([float(np.float32(a / 37.0)), float(np.float16(b / 37.0))])
    return np.array(out, dtype="<f8").tobytes()


INPUTS["wide-2ch-float64"] = (_wide_float64, StreamSpec("float64", 2))
INPUTS["gestures-3ch-int16"] = (_gestures_int16, StreamSpec("int16", 3))
PROFILES = ("server", "fast", "esp32", "arduino-mega")
#: Bounded-error goldens: (input, profile, max_error). They pin the block predictor choice
#: (flag bits 1-2: the int16 block keeps the profile's predictor, the float blocks pick the
#: per-level interpolation, code 3) and the arith coder's segments.
BOUNDED = (
    ("sensors-4ch-int16", "server", 16),
    ("readings-2ch-float64", "server", 0.05),
    ("readings-2ch-float64", "esp32", 0.05),
    ("audio-2ch-int24", "server", 64),
    ("hourly-3ch-float64", "server", 0.02),
    ("gestures-3ch-int16", "server", 4),
    ("counts-2ch-int16", "server", 2),
    ("adc-2ch-float32", "server", 0.01),
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
