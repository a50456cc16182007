"""WAV input: the header is kept verbatim in the container's prefix and the samples are coded
with their real type and channel count, so the round trip is byte-exact and stereo is stereo."""

from __future__ import annotations

import json
import struct
import wave

import numpy as np
import pytest
from conftest import run_qres

import qres
from qres.codec.samples import StreamSpec


def _tone(frames: int, channels: int) -> np.ndarray:
    t = np.arange(frames)[:, None]
    return np.sin(t / (20 + 7 * np.arange(channels))) * (0.5 + 0.1 * np.arange(channels))


def _pcm(path, width: int, channels: int, frames: int = 30_000) -> np.ndarray:
    """A PCM WAV written by the standard library (format tag 1)."""
    scale = {1: 100, 2: 12_000, 3: 4_000_000, 4: 1_500_000_000}[width]
    samples = np.rint(_tone(frames, channels) * scale)
    if width == 1:
        samples = (samples + 128).astype(np.uint8)
    else:
        samples = samples.astype(f"<i{width}" if width != 3 else "<i4")
    data = StreamSpec("int24").to_bytes(samples) if width == 3 else samples.tobytes()
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(8000)
        w.writeframes(data)
    return samples


def _extensible(path, tag: int, width: int, channels: int, samples: bytes) -> None:
    """A WAVE_FORMAT_EXTENSIBLE file naming ``tag`` in its sub-format, with a LIST chunk."""
    guid = struct.pack("<H", tag) + b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
    fmt = struct.pack(
        "<HHIIHHHHI", 0xFFFE, channels, 48000, 48000 * width * channels, width * channels,
        8 * width, 22, 8 * width, 0,
    ) + guid  # fmt: skip
    info = b"INFOISFT\x06\x00\x00\x00qres\x00\x00"
    chunks = b"fmt " + struct.pack("<I", len(fmt)) + fmt
    chunks += b"LIST" + struct.pack("<I", len(info)) + info
    chunks += b"data" + struct.pack("<I", len(samples)) + samples
    path.write_bytes(b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks)


def _round_trip(path, tmp_path, *extra):
    out = run_qres("compress", str(path), "-p", "esp32", "--json", *extra, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    back = tmp_path / "back.wav"
    done = run_qres("decompress", f"{path}.qres", "-o", str(back), "--force", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert back.read_bytes() == path.read_bytes()
    info = run_qres("info", f"{path}.qres", "--json", cwd=tmp_path)
    return json.loads(out.stdout), json.loads(info.stdout)


@pytest.mark.parametrize(
    ("width", "dtype"), [(1, "uint8"), (2, "int16"), (3, "int24"), (4, "int32")]
)
@pytest.mark.parametrize("channels", [1, 2, 6])
def test_pcm_wav_round_trips_with_its_type_and_channels(tmp_path, width, dtype, channels):
    path = tmp_path / "tone.wav"
    samples = _pcm(path, width, channels)
    _, info = _round_trip(path, tmp_path)
    head = info["header"]
    assert (head["dtype"], head["channels"], head["prefix_bytes"]) == (dtype, channels, 44)
    assert info["format_version"] == 9
    array = qres.decompress((tmp_path / "tone.wav.qres").read_bytes())
    expected = samples if channels > 1 else samples[:, 0]
    assert array.dtype == np.dtype(dtype if width != 3 else "int32")
    assert np.array_equal(array, expected)


def test_stereo_is_coded_as_stereo_and_beats_raw_reading(tmp_path):
    path = tmp_path / "stereo.wav"
    _pcm(path, 2, 2, frames=100_000)
    as_wav, _ = _round_trip(path, tmp_path)
    as_raw, info = _round_trip(path, tmp_path, "--raw", "--force")
    assert info["header"]["channels"] == 1 and info["header"]["prefix_bytes"] == 0
    assert as_wav["output_bytes"] < 0.8 * as_raw["output_bytes"]


@pytest.mark.parametrize(
    ("tag", "width", "dtype"), [(1, 2, "int16"), (1, 3, "int24"), (3, 4, "float32")]
)
def test_extensible_wav_with_metadata_chunks(tmp_path, tag, width, dtype):
    values = _tone(5000, 4) * ({2: 10_000, 3: 3_000_000}[width] if tag == 1 else 1.0)
    if width == 3:
        samples = np.rint(values).astype("<i4")
        data = StreamSpec("int24").to_bytes(samples)
    else:
        samples = values.astype(f"<i{width}" if tag == 1 else "<f4")
        data = samples.tobytes()
    path = tmp_path / "ext.wav"
    _extensible(path, tag, width, 4, data)
    _, info = _round_trip(path, tmp_path)
    assert (info["header"]["dtype"], info["header"]["channels"]) == (dtype, 4)
    assert np.array_equal(qres.decompress(qres.compress(path.read_bytes())), samples)


def test_24_bit_wav_with_an_odd_data_chunk_and_a_bound(tmp_path):
    """A 24-bit mono file has an odd data size, padded by one byte and followed by a
    chunk; both are kept verbatim. With --max-error the header is exact and the samples are
    within the bound."""
    samples = np.rint(_tone(3001, 1) * 5_000_000).astype("<i4")
    data = StreamSpec("int24").to_bytes(samples)
    path = tmp_path / "odd.wav"
    _extensible(path, 1, 3, 1, data)
    wav = path.read_bytes()
    path.write_bytes(wav + b"\x00" + b"junk" + struct.pack("<I", 4) + b"tail")
    _round_trip(path, tmp_path)
    lossy = tmp_path / "lossy.wav"
    out = run_qres("compress", str(path), "--max-error", "40", "-o", f"{lossy}.qres")
    assert out.returncode == 0, out.stderr
    assert run_qres("decompress", f"{lossy}.qres", "-o", str(lossy)).returncode == 0
    back = lossy.read_bytes()
    start = len(wav) - len(data)
    assert len(back) == len(path.read_bytes()) and back[:start] == wav[:start]
    assert back[start + len(data) :] == path.read_bytes()[start + len(data) :]
    decoded = StreamSpec("int24").to_array(back[start : start + len(data)])
    assert np.abs(decoded.astype(np.int64) - samples[:, 0]).max() <= 40


def test_unsupported_wav_is_one_line_and_raw_still_works(tmp_path):
    path = tmp_path / "alaw.wav"
    _extensible(path, 6, 1, 2, bytes(range(256)) * 30)  # A-law: not linear samples
    out = run_qres("compress", str(path), cwd=tmp_path)
    assert out.returncode == 1
    lines = out.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "format 0x6" in lines[0] and "--raw" in lines[0]
    assert not (tmp_path / "alaw.wav.qres").exists()
    _round_trip(path, tmp_path, "--raw", "--dtype", "u8")


def test_truncated_wav_header_is_one_line(tmp_path):
    path = tmp_path / "cut.wav"
    _pcm(path, 2, 1, frames=100)
    path.write_bytes(path.read_bytes()[:30])
    out = run_qres("compress", str(path), cwd=tmp_path)
    assert out.returncode == 1 and b"truncated" in out.stderr and b"Traceback" not in out.stderr


def test_trailing_chunks_too_large_for_the_tail_refuse_a_bound(tmp_path):
    """Chunks after the data that exceed the container's verbatim tail are coded as samples:
    exact in lossless mode, refused with one line under --max-error (it would alter them)."""
    path = tmp_path / "meta.wav"
    _pcm(path, 2, 2, frames=5000)
    path.write_bytes(path.read_bytes() + b"LIST" + struct.pack("<I", 40_000) + bytes(40_000))
    _round_trip(path, tmp_path)
    out = run_qres("compress", str(path), "--max-error", "4", "-o", str(tmp_path / "b.qres"))
    lines = out.stderr.decode().strip().splitlines()
    assert out.returncode == 1 and len(lines) == 1 and "after the WAV's samples" in lines[0]
    assert not (tmp_path / "b.qres").exists()
