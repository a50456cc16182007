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
