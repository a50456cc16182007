"""Decompression bombs: small files with valid checksums and in-range fields that declare far
more output than their payload can hold, or than the machine can. Each stops with one line
before it allocates or writes what it declares."""

from __future__ import annotations

import io
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from bombs import ARITH, RICE, SHAPES, bomb
from conftest import run_qres
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qres.codec import files as api
from qres.codec import limits
from qres.kernel.errors import IntegrityError, QresError

#: Address space the bomb's decoder gets: enough for Python, numpy and the CLI, and far less
#: than any bomb's block.
MEMORY_LIMIT = 1 << 30


def _limited():
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def _verify_under_limit(path: Path) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("qres")
    return subprocess.run(
        [str(exe), "verify", str(path)],
        capture_output=True,
        preexec_fn=_limited,
        timeout=120,
        env={k: v for k, v in os.environ.items() if k != "QRES_DEBUG"},
    )


@pytest.mark.parametrize(
    ("shape", "code", "says"),
    [
        ("arith zeros", 1, "decoding it needs about"),
        ("rice", 5, "block 0: stream 0 declares 16777216 samples"),
        ("deflate", 5, "block 0: declares 549755813888 bytes but 84 deflate bytes"),
        ("stored", 5, "block 0: declares 549755813888 bytes but stores 64"),
        ("quantised rice", 5, "block 0: stream 0 declares 16777216 samples"),
        ("lattice rice", 5, "block 0: stream 0 declares 16777216 samples"),
    ],
)
def test_verify_of_a_bomb_under_a_memory_limit_is_one_line(tmp_path, shape, code, says):
    path = tmp_path / "bomb.qres"
    path.write_bytes(SHAPES[shape]())
    assert path.stat().st_size < 32 << 10  # about 20 KB at most
    result = _verify_under_limit(path)
    err = result.stderr.decode()
    assert result.returncode == code, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("qres: error: ") and says in err


def test_a_block_too_large_for_the_memory_left_is_refused_not_attempted(tmp_path):
    # 64 channels x 2**20 frames of int64 zeros: 512 MiB that an empty arith stream honestly
    # holds, more than the limit leaves once Python is loaded.
    path = tmp_path / "medium.qres"
    path.write_bytes(bomb(ARITH, channels=64, frames=1 << 20))
    result = _verify_under_limit(path)
    err = result.stderr.decode()
    assert result.returncode == 1 and "block 0 declares 512.0 MiB" in err, err
    assert len(err.strip().splitlines()) == 1


def test_max_output_stops_before_writing(tmp_path):
    path = tmp_path / "zeros.qres"
    path.write_bytes(bomb(ARITH, channels=4, frames=1 << 16, blocks=8))
    out = tmp_path / "out.bin"
    result = run_qres("decompress", str(path), "-o", str(out), "--max-output", "3M")
    err = result.stderr.decode()
    assert result.returncode == 1, err
    assert "block 1 would take the output to 4.0 MiB, past --max-output 3.0 MiB" in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists() and os.listdir(tmp_path) == ["zeros.qres"]
    # Declared up front by the header: refused before the first block is read.
    path.write_bytes(bomb(ARITH, channels=4, frames=1 << 16, blocks=8, declare_frames=True))
    result = run_qres("verify", str(path), "--max-output", "1M")
    assert result.returncode == 1 and b"the file declares 16.0 MiB of output" in result.stderr
    assert run_qres("verify", str(path), "--max-output", "lots").returncode == 2


def test_max_output_lets_real_files_through(tmp_path):
    raw = tmp_path / "r.bin"
    raw.write_bytes(bytes(range(256)) * 64)
    assert run_qres("compress", str(raw), "--dtype", "uint8").returncode == 0
    packed = f"{raw}.qres"
    ok = run_qres("decompress", packed, "-o", str(tmp_path / "same.bin"), "--max-output", "16K")
    assert ok.returncode == 0 and (tmp_path / "same.bin").read_bytes() == raw.read_bytes()
    small = run_qres("verify", packed, "--max-output", "16383")
    assert small.returncode == 1 and b"--max-output" in small.stderr


def test_the_default_limit_is_the_free_space_where_the_output_goes(tmp_path):
    free = shutil.disk_usage(tmp_path).free
    assert abs(limits.default_max_output(str(tmp_path / "x.bin")) - free) < 1 << 30
    assert limits.default_max_output(None) is None  # verify writes nothing


@pytest.mark.parametrize(
    ("text", "size"),
    [("4096", 4096), ("512M", 512 << 20), ("1.5G", 3 << 29), ("10GiB", 10 << 30), ("none", None)],
)
def test_sizes(text, size):
    assert limits.parse_size(text) == size


def test_rice_streams_are_bounded_by_their_bytes():
    import numpy as np

    from qres.kernel import plugins
    from qres.kernel.config import Location

    coder = plugins.create("coder", RICE, Location("<test>", "coder"))
    for n in (1, 1000, 1 << 20, 3 << 20):
        data = coder.encode(np.zeros(n, dtype=np.int64))
        assert coder.max_samples(len(data)) >= n  # the bound never refuses a real stream
    assert coder.max_samples(1) < 1 << 24


def test_bombs_in_python_raise_project_errors():
    for make in SHAPES.values():
        with pytest.raises(QresError):
            api.decompress_stream(io.BytesIO(make()), None, max_output=1 << 30)
    with pytest.raises(IntegrityError, match="block 0: stream 0"):
        api.decompress_stream(io.BytesIO(SHAPES["rice"]()), None)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 1 << 18))
def test_no_count_is_too_large_for_an_arith_payload(n):
    """Why ``arith`` states no bytes-to-samples bound: the empty payload is the code of a run
    of zeros of any length, so any bound would refuse real blocks."""
    import numpy as np

    from qres.kernel import plugins
    from qres.kernel.config import Location

    coder = plugins.create("coder", ARITH, Location("<test>", "coder"))
    assert coder.max_samples(0) is None
    assert coder.encode(np.zeros(n, dtype=np.int64)) == b""
    assert not coder.decode(b"", n).any()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_an_arith_block_claiming_more_frames_than_it_holds_is_damage(data):
    """A real ``arith`` block (server profile: no coder checksum) whose record is rewritten to
    declare more frames, with valid record checksums: damage naming the block (exit 5),
    decoded within memory of the order of the declared block."""
    import tracemalloc

    import attrs
    import numpy as np

    from qres.codec import container
    from qres.codec import pipeline as codec
    from qres.codec.samples import SampleSource, StreamSpec

    frames = data.draw(st.integers(16, 3000))
    kind = data.draw(st.sampled_from(["smooth", "noise", "steps"]))
    t = np.arange(frames)[:, None]
    seed = data.draw(st.integers(0, 2**16))
    values = {
        "smooth": 3000 * np.sin(t / 23 + np.arange(2)),
        "noise": np.random.default_rng(seed).normal(0, 300, (frames, 2)),
        "steps": 500 * ((t // 97) % 5) + np.zeros((1, 2)),
    }[kind]
    raw = np.rint(values).astype("<i2").tobytes()
    settings_, _ = api.codec_settings("server")
    small = codec.CodecSettings(settings_.predictor, settings_.coder, 4096)
    out = io.BytesIO()
    codec.compress(SampleSource(io.BytesIO(raw), StreamSpec("int16", 2)), out, small)
    reader = container.Reader(io.BytesIO(out.getvalue()))
    ((_, block),) = list(reader.blocks())
    claimed = data.draw(st.integers(frames + 1, 4096))
    header = attrs.evolve(reader.header, frames=None)
    forged = io.BytesIO()
    writer = container.Writer(forged, header)
    writer.add(attrs.evolve(block, frames=claimed), b"")
    writer.finish()
    tracemalloc.start()
    try:
        with pytest.raises(IntegrityError, match="block 0"):
            api.decompress_bytes(forged.getvalue())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, peak


def test_the_memory_check_counts_every_block_in_flight(monkeypatch):
    """With N threads up to 2N blocks are held at once: a block whose estimate fits the
    memory twice but not four times decodes with one thread and is refused with two."""
    import numpy as np

    from qres.codec.samples import StreamSpec

    raw = np.rint(np.sin(np.arange(40_000) / 30) * 9000).astype("<i2").tobytes()
    packed = api.compress_bytes(raw, StreamSpec("int16"), "fast")
    frames = len(raw) // 2
    block = limits.block_memory(frames, 1, 2, len(packed))
    monkeypatch.setattr(limits, "memory_available", lambda: int(3 * block / limits.MEMORY_SHARE))
    assert api.decompress_bytes(packed, threads=1) == raw
    with pytest.raises(limits.OutputLimit, match="block 0 declares"):
        api.decompress_bytes(packed, threads=2)
