"""The learning task: MANIFEST folders, shards, integer training, prediction error."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from corpus import needs_corpus

from qres.kernel.errors import QresError
from qres.learning import corpus
from qres.learning import task as learning


def write_folder(tmp_path, series: dict[str, np.ndarray], synthetic=()):
    """A MANIFEST folder with one int16 file per series (2-D arrays are planar channels)."""
    lines = ["name\tfile\tdtype\tbyteorder\tchannels"]
    for name, values in series.items():
        values = np.atleast_2d(values).astype("<i2")
        (tmp_path / f"{name}.bin").write_bytes(values.tobytes())
        lines.append(f"{name}\t{name}.bin\tint16\tlittle\t{values.shape[0]}")
    (tmp_path / "MANIFEST.tsv").write_text("\n".join(lines) + "\n")
    return tmp_path


def sines(length=4000):
    t = np.arange(length)
    return {
        "slow": np.round(3000 * np.sin(2 * np.pi * t / 200)),
        "fast": np.round(800 * np.sin(2 * np.pi * t / 31) + 50 * np.sin(t / 7.0)),
        "SYNTHETIC_x": np.round(100 * np.sin(t / 3.0)),
        "two": np.stack([np.round(500 * np.cos(t / 20.0)), np.round(t % 97 * 10.0)]),
    }


def test_manifest_and_entries(tmp_path):
    folder = write_folder(tmp_path, sines())
    entries = corpus.read_manifest(folder)
    assert [e.name for e in entries] == ["slow", "fast", "SYNTHETIC_x", "two"]
    assert entries[2].synthetic and not entries[0].synthetic
    data = corpus.read_entry(folder, entries[3])
    assert data.shape == (2, 4000) and data.dtype == np.int16
    assert data[1, 5] == 50


def test_manifest_errors(tmp_path):
    with pytest.raises(QresError, match="no MANIFEST.tsv"):
        corpus.read_manifest(tmp_path)
    (tmp_path / "MANIFEST.tsv").write_text("name\tfile\tdtype\nx\tx.bin\tint16\n")
    with pytest.raises(QresError, match="missing column"):
        corpus.read_manifest(tmp_path)
    folder = write_folder(tmp_path, {"a": np.arange(10)})
    (folder / "a.bin").write_bytes(b"\x00" * 5)
    with pytest.raises(QresError, match="whole number"):
        corpus.read_entry(folder, corpus.read_manifest(folder)[0])


def test_load_streams_normalises_and_skips_synthetic(tmp_path):
    folder = write_folder(tmp_path, sines())
    streams = learning.load_streams(folder)
    assert [s.name for s in streams] == ["slow", "fast", "two[0]", "two[1]"]
    for s in streams:
        assert s.values.dtype == np.int32
        assert s.values.min() >= -2048 and s.values.max() <= 2047
        assert s.values.max() - s.values.min() >= 4000  # the range is used
    assert len(learning.load_streams(folder, synthetic=True)) == 5
    with pytest.raises(QresError, match="no usable channel"):
        learning.load_streams(folder, min_length=10**6)


def test_shards_deterministic_and_non_iid_sources(tmp_path):
    streams = learning.load_streams(write_folder(tmp_path, sines()))
    a, src = learning.make_shards(streams, 10, 512, iid=False, rng=np.random.default_rng(3))
    b, _ = learning.make_shards(streams, 10, 512, iid=False, rng=np.random.default_rng(3))
    assert a.shape == (10, 512) and a.dtype == np.int32
    assert np.array_equal(a, b)
    # files slow, fast, two (2 channels): nodes in blocks of files, a channel of 'two' each
    files = [streams[s].group for s in src]
    assert files == ["slow"] * 4 + ["fast"] * 3 + ["two"] * 3
    for row, s in zip(a, src, strict=True):
        hay = streams[s].values
        off = np.flatnonzero(hay == row[0])
        assert any(np.array_equal(hay[o : o + 512], row) for o in off)
    iid, _ = learning.make_shards(streams, 10, 512, iid=True, rng=np.random.default_rng(3))
    assert iid.shape == (10, 512)


def random_windows(n, settings, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(settings.span)
    phase = rng.uniform(0, 6.28, size=(n, 1))
    period = rng.uniform(20, 80, size=(n, 1))
    x = 1500 * np.sin(2 * np.pi * t / period + phase) + rng.normal(0, 30, size=(n, settings.span))
    return np.clip(np.round(x), -2048, 2047).astype(np.int32)


def test_vectorised_equals_per_node_loop():
    s = learning.TrainSettings(order=8, window=64, lr=0.8, steps=3)
    x = random_windows(12, s)
    w = np.random.default_rng(1).integers(-30000, 30000, size=(12, 8)).astype(np.int32)
    all_at_once = learning.local_update(w, x, s)
    one_by_one = np.concatenate(
        [learning.local_update(w[i : i + 1], x[i : i + 1], s) for i in range(12)]
    )
    assert np.array_equal(all_at_once, one_by_one)
    err = learning.prediction_error(w, x, 8)
    assert np.array_equal(
        err,
        np.concatenate(
            [learning.prediction_error(w[i : i + 1], x[i : i + 1], 8) for i in range(12)]
        ),
    )
    # a shared (k,) weight vector is the same as that vector on every row
    shared = learning.local_update(w[0], x, s)
    assert np.array_equal(shared, learning.local_update(np.repeat(w[:1], 12, axis=0), x, s))


def walk_windows(n, settings, seed):
    """Random-walk windows from integer draws only (same on every machine)."""
    steps = np.random.default_rng(seed).integers(-40, 41, size=(n, settings.span))
    return np.clip(np.cumsum(steps, axis=1), -2048, 2047).astype(np.int32)


def test_training_is_pure_and_pinned():
    s = learning.TrainSettings(order=16, window=128, lr=1.0, steps=2)
    x = walk_windows(5, s, seed=7)
    w = learning.zero_weights(16, 5)
    x_before, w_before = x.copy(), w.copy()
    first = learning.train(w, x, s)
    assert np.array_equal(first, learning.train(w, x, s))
    assert np.array_equal(x, x_before) and np.array_equal(w, w_before)
    assert first.dtype == np.int32
    assert np.array_equal(learning.local_update(w, x, s), first - w)
    # integer arithmetic only: these bytes are the same on every machine
    assert hashlib.sha256(x.tobytes()).hexdigest()[:16] == "22fca1207df81282"
    assert hashlib.sha256(first.tobytes()).hexdigest()[:16] == "1ea75651a30a6aa6"


def test_training_reduces_error():
    s = learning.TrainSettings(order=16, window=256, lr=1.0, steps=1)
    x = random_windows(20, s, seed=2)
    w = learning.zero_weights(16, 20)
    before = learning.prediction_error(w, x, 16)
    for _ in range(20):
        w = learning.train(w, x, s)
    after = learning.prediction_error(w, x, 16)
    assert (after < before).all()
    assert after.mean() < 0.3 * before.mean()


def test_windows_and_nonce():
    s = learning.TrainSettings(order=4, window=10)
    shards = np.arange(60, dtype=np.int32).reshape(2, 30)
    win = learning.windows_at(shards, [0, 16], s)
    assert win.tolist() == [list(range(14)), list(range(46, 60))]
    with pytest.raises(QresError, match="start offsets"):
        learning.windows_at(shards, [0, 17], s)
    starts = {learning.nonce_start(bytes([i]), 30, s) for i in range(50)}
    assert starts <= set(range(17)) and len(starts) > 5
    assert learning.nonce_start(b"abc", 30, s) == learning.nonce_start(b"abc", 30, s)
    with pytest.raises(QresError, match="shorter than a window"):
        learning.nonce_start(b"x", 10, s)


def test_rejects_bad_input():
    s = learning.TrainSettings(order=4, window=8)
    x = np.zeros((3, 12), np.int32)
    with pytest.raises(QresError, match="weights must be int32"):
        learning.train(np.zeros((3, 4), np.float64), x, s)
    with pytest.raises(QresError, match="must lie in"):
        learning.train(learning.zero_weights(4), x + 5000, s)
    with pytest.raises(QresError, match="2-D integer"):
        learning.train(learning.zero_weights(4), x.astype(float), s)


@needs_corpus
def test_shared_corpus_streams():
    streams = learning.load_streams(min_length=2048)
    assert len(streams) >= 5
    assert not any(s.name.startswith("SYNTHETIC") for s in streams)
