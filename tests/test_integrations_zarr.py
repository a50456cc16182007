"""qres as a numcodecs codec and a zarr v3 codec: numcodecs' own codec checks, real zarr
arrays on disk (chunk shapes, fill values, partial chunks, every sample type), lossless and
bounded, found by name through the installed entry points."""

from __future__ import annotations

import numpy as np
import pytest

numcodecs = pytest.importorskip("numcodecs")
zarr = pytest.importorskip("zarr")

from numcodecs.tests.common import (  # noqa: E402
    check_config,
    check_encode_decode,
    check_encode_decode_array,
    check_err_decode_object_buffer,
    check_err_encode_object_buffer,
)

from qres.integrations.numcodecs import Qres  # noqa: E402
from qres.integrations.zarr import QresCodec  # noqa: E402

RNG = np.random.default_rng(7)
ARRAYS = [
    (np.sin(np.arange(4000) / 40) * 3000).astype("<i2"),
    (np.cumsum(RNG.integers(-9, 10, size=(60, 50)), axis=0)).astype("<i4"),
    np.arange(1000, dtype=">u2"),
    RNG.integers(-(2**40), 2**40, size=300).astype("<i8"),
    np.round(RNG.normal(size=2000), 3).astype("<f8"),
    np.linspace(-1, 1, 777, dtype="<f4"),
    RNG.integers(0, 255, size=513).astype("u1"),
    RNG.integers(0, 2**64 - 1, size=99, dtype="<u8"),
    RNG.normal(size=64).astype("<f2"),
    np.array([True, False, False] * 20),
    (RNG.normal(size=40) + 1j * RNG.normal(size=40)).astype("<c8"),
    np.zeros(0, dtype="<i2"),
]


@pytest.mark.parametrize("arr", ARRAYS, ids=lambda a: f"{a.dtype.str}-{a.size}")
def test_numcodecs_round_trips(arr):
    check_encode_decode(arr, Qres(dtype=arr.dtype.str))
    check_encode_decode_array(arr, Qres(dtype=arr.dtype.str))


def test_numcodecs_config_repr_and_object_buffers():
    check_config(Qres())
    check_config(Qres(profile="fast", max_error=2.5, channels=3, dtype="<f4"))
    text = "Qres(profile='esp32', max_error=0.0, channels=1)"
    assert repr(eval(text)) == text
    check_err_encode_object_buffer(Qres())
    check_err_decode_object_buffer(Qres())


def test_numcodecs_finds_qres_by_id_through_the_entry_point():
    codec = numcodecs.get_codec({"id": "qres", "profile": "server", "max_error": 0})
    assert isinstance(codec, Qres)
    assert Qres.from_config(codec.get_config()) == codec


def test_numcodecs_bounded_error_holds():
    x = np.cumsum(RNG.normal(size=5000)).astype("<f8")
    codec = Qres(max_error=0.01)
    got = codec.decode(codec.encode(x)).view("<f8")
    assert np.max(np.abs(got - x)) <= 0.01
    assert len(codec.encode(x)) < len(Qres().encode(x))


@pytest.mark.parametrize(
    "config, error",
    [
        ({"max_error": -1}, ValueError),
        ({"max_error": float("inf")}, ValueError),
        ({"channels": 0}, ValueError),
        ({"dtype": "<u8", "max_error": 1}, ValueError),
        ({"dtype": "U4"}, TypeError),
    ],
)
def test_numcodecs_bad_settings_fail_at_once(config, error):
    with pytest.raises(error):
        Qres(**config)


def test_channels_must_match_the_last_axis():
    with pytest.raises(ValueError, match="last axis"):
        Qres(channels=3).encode(np.zeros((10, 4), dtype="<i2"))


CHUNKS = [(100,), (64, 7), (33, 50), (1000, 100)]


@pytest.mark.parametrize("chunks", CHUNKS, ids=str)
def test_zarr_array_round_trips_with_partial_chunks(tmp_path, chunks):
    shape = (250, 90) if len(chunks) == 2 else (1000,)
    data = (np.sin(np.arange(np.prod(shape)) / 30) * 2000).astype("<i2").reshape(shape)
    path = tmp_path / "a.zarr"
    z = zarr.create_array(
        path,
        shape=shape,
        chunks=chunks,
        dtype=data.dtype,
        serializer=QresCodec(),
        compressors=None,
        fill_value=-5,
    )
    z[:] = data
    again = zarr.open_array(path)
    assert isinstance(again.metadata.codecs[0], QresCodec)
    np.testing.assert_array_equal(again[:], data)
    region = tuple(slice(3, 77) for _ in shape)
    np.testing.assert_array_equal(again[region], data[region])


def test_zarr_fill_value_and_unwritten_chunks(tmp_path):
    z = zarr.create_array(
        tmp_path / "f.zarr",
        shape=(500,),
        chunks=(128,),
        dtype="<f8",
        serializer=QresCodec(profile="fast"),
        compressors=None,
        fill_value=np.nan,
    )
    z[130:140] = np.arange(10.0)
    got = zarr.open_array(tmp_path / "f.zarr")[:]
    assert np.isnan(got[:130]).all() and np.isnan(got[140:]).all()
    np.testing.assert_array_equal(got[130:140], np.arange(10.0))


@pytest.mark.parametrize("arr", ARRAYS[:-1], ids=lambda a: f"{a.dtype.str}-{a.size}")
def test_zarr_every_sample_type_is_exact(tmp_path, arr):
    z = zarr.create_array(
        tmp_path / "t.zarr",
        shape=arr.shape,
        chunks=arr.shape,
        dtype=arr.dtype,
        serializer=QresCodec(),
        compressors=None,
    )
    z[...] = arr
    got = zarr.open_array(tmp_path / "t.zarr")[...]
    assert got.tobytes() == arr.tobytes() or np.array_equal(got, arr, equal_nan=True)


def test_zarr_bounded_error_multichannel(tmp_path):
    data = np.cumsum(RNG.normal(size=(3000, 3)), axis=0).astype("<f4")
    codec = QresCodec(max_error=0.05, channels=3)
    z = zarr.create_array(
        tmp_path / "b.zarr",
        shape=data.shape,
        chunks=(1024, 3),
        dtype=data.dtype,
        serializer=codec,
        compressors=None,
    )
    z[:] = data
    got = zarr.open_array(tmp_path / "b.zarr")[:]
    assert np.max(np.abs(got - data)) <= 0.05


def test_zarr_refuses_a_bound_on_bit_views(tmp_path):
    with pytest.raises(ValueError, match="max_error"):
        zarr.create_array(
            tmp_path / "u.zarr",
            shape=(10,),
            chunks=(10,),
            dtype="<u8",
            serializer=QresCodec(max_error=1),
            compressors=None,
        )


def test_zarr_codec_metadata_round_trips():
    codec = QresCodec(profile="esp32", max_error=0.5, channels=2)
    assert QresCodec.from_dict(codec.to_dict()) == codec
    assert codec.to_dict() == {
        "name": "qres",
        "configuration": {"profile": "esp32", "max_error": 0.5, "channels": 2},
    }
