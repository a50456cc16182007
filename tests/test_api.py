"""The public Python API (``import qres``): docs/api.md's examples, shapes and dtypes, random
access by block, errors for Python callers, and lazy loading."""

from __future__ import annotations

import doctest
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import run_qres

import qres

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_docs_api_examples_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = doctest.testfile(
        str(DOCS / "api.md"), module_relative=False, optionflags=doctest.ELLIPSIS, verbose=False
    )
    assert result.attempted > 20
    assert result.failed == 0


def test_every_public_name_resolves_and_is_documented():
    text = (DOCS / "api.md").read_text()
    for name in qres.__all__:
        assert getattr(qres, name) is not None
        assert f"`{name}" in text or name == "__version__", name
    assert set(qres.__all__) <= set(dir(qres))
    with pytest.raises(AttributeError):
        qres.no_such_name  # noqa: B018


def test_import_is_lazy(tmp_path):
    code = (
        "import sys, qres; qres.hookimpl; qres.Predictor; qres.Transport; qres.Error; "
        "print(sorted(m for m in ('numpy', 'qres.codec.pipeline', 'qres._api') "
        "if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path
    )
    assert out.stdout.strip() == "[]", out.stderr


ARRAYS = {
    "1d-int16": np.arange(-3000, 3000, dtype=np.int16),
    "2d-C": (np.arange(6000).reshape(2000, 3) % 77).astype(np.int32),
    "2d-F": np.asfortranarray((np.arange(6000).reshape(2000, 3) % 77).astype(np.uint16)),
    "3d-C": (np.arange(24_000).reshape(1000, 4, 6) % 301).astype(np.int64),
    "3d-F": np.asfortranarray((np.arange(24_000).reshape(1000, 4, 6) % 301).astype(np.int8)),
    "big-endian": np.arange(5000, dtype=">i4") * 3,
    "float32": np.round(np.sin(np.arange(4000) / 9) * 100, 2).astype(np.float32),
    "float64": np.random.default_rng(1).normal(size=(700, 2)),
    "one-frame": np.array([[1, 2, 3]], dtype=np.uint8),
    "empty": np.zeros(0, dtype=np.int16),
}


@pytest.mark.parametrize("name", list(ARRAYS))
def test_arrays_round_trip_with_dtype_and_shape(name):
    array = ARRAYS[name]
    out = qres.decompress(qres.compress(array, "esp32"))
    assert out.dtype == array.dtype and out.shape == array.shape
    flags = ("c_contiguous", "f_contiguous")
    assert [getattr(out.flags, f) for f in flags] == [getattr(array.flags, f) for f in flags]
    assert np.array_equal(out, array)
    assert out.flags.writeable


@pytest.mark.parametrize("name", ["2d-C", "2d-F", "3d-C", "3d-F", "big-endian"])
def test_blocks_read_at_random_match_the_array(tmp_path, name):
    array = ARRAYS[name]
    path = tmp_path / "a.qres"
    path.write_bytes(qres.compress(array, "arduino-mega"))  # 256-frame blocks
    with qres.open(path) as c:
        assert c.shape == array.shape and c.dtype == array.dtype
        assert len(c) == -(-array.shape[0] // 256)
        for number in (len(c) - 1, 0, 2, -2):
            rows = c.block_frames(number)
            assert np.array_equal(c.block(number), array[rows.start : rows.stop])
        assert np.array_equal(np.concatenate(list(c)), array)
        assert np.array_equal(c.read(), array)
        with pytest.raises(IndexError, match="out of range"):
            c.block(len(c))


def test_array_container_is_the_cli_container_of_the_npy_file(tmp_path):
    array = ARRAYS["2d-F"]
    np.save(tmp_path / "a.npy", array)
    out = run_qres("compress", "a.npy", "--profile", "esp32", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "a.npy.qres").read_bytes() == qres.compress(array, "esp32")
    npy_bytes = (tmp_path / "a.npy").read_bytes()
    assert qres.compress(npy_bytes, "esp32") == qres.compress(array, "esp32")
    assert qres.decompress(qres.compress(array, "esp32"), as_bytes=True) == npy_bytes


def test_raw_bytes_with_options():
    samples = np.arange(3000, dtype=">i2")
    packed = qres.compress(samples.tobytes(), "esp32", dtype="s16", byte_order="big")
    assert np.array_equal(qres.decompress(packed), samples)
    planar = np.arange(4000, dtype="<u2").reshape(2, 2000)  # channel after channel
    packed = qres.compress(planar.tobytes(), dtype="uint16", channels=2, layout="planar")
    assert np.array_equal(qres.decompress(packed), planar.T)
    assert qres.decompress(packed, as_bytes=True) == planar.tobytes()


def test_a_partial_frame_is_never_dropped_silently():
    data = np.arange(100, dtype="<i2").tobytes() + b"\x07"
    packed = qres.compress(data, dtype="int16")
    with pytest.raises(qres.Error, match="as_bytes=True"):
        qres.decompress(packed)
    assert qres.decompress(packed, as_bytes=True) == data


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: qres.compress([1, 2, 3]), "give a numpy array or bytes"),
        (lambda: qres.compress(b"ab", dtype="int12"), "dtype='int12' is not a sample type"),
        (lambda: qres.compress(b"ab", channels=0), "channels=0"),
        (lambda: qres.compress(b"ab", layout="diagonal"), "layout='diagonal'"),
        (lambda: qres.compress(ARRAYS["1d-int16"], threads=0), "threads=0"),
        (lambda: qres.compress(ARRAYS["1d-int16"], max_error=float("inf")), "max_error=inf"),
        (lambda: qres.compress(ARRAYS["1d-int16"], max_error=1e300), "below 2\\*\\*62"),
        (lambda: qres.compress(ARRAYS["1d-int16"], dtype="int16"), "drop dtype="),
        (lambda: qres.compress(np.zeros(3, complex)), "dtype complex128 are not supported"),
        (lambda: qres.compress(np.int16(3)), "give a numpy array or bytes"),
        (lambda: qres.compress(np.array(3, np.int16)), "0-d array"),
        (lambda: qres.decompress("x.qres"), "give the container as bytes"),
    ],
)
def test_errors_speak_of_python_arguments(call, message):
    with pytest.raises(qres.Error, match=message) as info:
        call()
    assert info.value.exit_code == 1
    assert "--" not in str(info.value)


def test_integrity_errors_carry_the_block():
    array = (np.arange(2000) % 50).astype(np.int16)
    packed = qres.compress(array, "arduino-mega")
    blocks = qres.info(packed)["blocks"]
    hit = blocks[3]["offset"] + 5
    damaged = bytearray(packed)
    damaged[hit] ^= 0x40
    with pytest.raises(qres.IntegrityError) as info:
        qres.decompress(bytes(damaged))
    assert (info.value.exit_code, info.value.block) == (5, 3)
    with pytest.raises(qres.IntegrityError) as info:
        qres.decompress(packed[:-3])
    assert info.value.block is None
    assert qres.IntegrityError("block 12: bad").block == 12
    assert qres.IntegrityError("index: bad", block=4).block == 4
    assert issubclass(qres.IntegrityError, qres.Error)


def test_info_of_a_path_matches_the_cli(tmp_path):
    import json

    path = tmp_path / "x.qres"
    path.write_bytes(qres.compress(ARRAYS["3d-C"], "esp32"))
    out = run_qres("info", str(path), "--json")
    assert qres.info(path) == json.loads(out.stdout)
    with pytest.raises(qres.Error, match="no such file"):
        qres.info(tmp_path / "missing.qres")
