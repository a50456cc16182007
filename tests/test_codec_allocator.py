"""The codec keeps freed memory for the next block's arrays (glibc's trim and mmap
thresholds, set once per process), unless the user tuned glibc's allocator."""

from __future__ import annotations

import ctypes
import platform

import pytest

from qres.codec import pipeline


class _Libc:
    def __init__(self):
        self.calls: list[tuple[int, int]] = []

        def mallopt(param, value):
            self.calls.append((param, value))
            return 1

        self.mallopt = mallopt


@pytest.fixture
def libc(monkeypatch):
    fake = _Libc()
    monkeypatch.setattr(pipeline, "_allocator_set", False)
    monkeypatch.setattr(ctypes, "CDLL", lambda name: fake)
    monkeypatch.setattr(platform, "system", lambda: "Linux")
    monkeypatch.setattr(platform, "libc_ver", lambda: ("glibc", "2.36"))
    for name in pipeline._ALLOCATOR_ENV:
        monkeypatch.delenv(name, raising=False)
    return fake


def test_thresholds_are_set_once_per_process(libc):
    pipeline._keep_freed_memory()
    pipeline._keep_freed_memory()
    assert libc.calls == [
        (pipeline._M_MMAP_THRESHOLD, pipeline._MMAP_THRESHOLD),
        (pipeline._M_TRIM_THRESHOLD, pipeline._TRIM_THRESHOLD),
    ]


@pytest.mark.parametrize("name", pipeline._ALLOCATOR_ENV)
def test_a_user_tuned_allocator_is_left_alone(libc, monkeypatch, name):
    monkeypatch.setenv(name, "131072")
    pipeline._keep_freed_memory()
    assert libc.calls == []


def test_other_c_libraries_are_left_alone(libc, monkeypatch):
    monkeypatch.setattr(platform, "libc_ver", lambda: ("", ""))
    pipeline._keep_freed_memory()
    assert libc.calls == []


def test_compressing_sets_them(libc):
    import numpy as np

    from qres.codec import files as api
    from qres.codec.samples import StreamSpec

    raw = np.arange(5000, dtype="<i2").tobytes()
    assert api.decompress_bytes(api.compress_bytes(raw, StreamSpec("int16", 1), "server")) == raw
    assert len(libc.calls) == 2
