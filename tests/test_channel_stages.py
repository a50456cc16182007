"""The block stages of format 6: channel pairs (qres.codec.channels) and repeats
(qres.codec.repeats). The compiled parse and rebuild equal their plain-Python references; the
codec chooses each stage on streams where it pays (repeated gestures, channels sharing their
innovations) and the result is smaller than without it; every stream round-trips exactly
(lossless) or within its bound; and hostile tables in a block fail with IntegrityError only,
without allocating more than the block's frames allow."""

from __future__ import annotations

import io

import attrs
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import qres
from qres.codec import _repeats, channels, container, repeats
from qres.codec import files as api
from qres.codec import pipeline as codec
from qres.codec.samples import StreamSpec
from qres.kernel import plugins
from qres.kernel.config import Location
from qres.kernel.errors import IntegrityError

# -- the compiled kernels against their references ---------------------------------------------

_rows = st.lists(st.integers(-3, 3), min_size=0, max_size=300).map(
    lambda v: np.cumsum(np.array(v, dtype=np.int64)) // 2  # plateaus and repeats are common
)


@settings(max_examples=200, deadline=None)
@given(_rows, st.sampled_from([4, 5, 8, 16]))
def test_parse_equals_the_reference_and_rebuilds_the_row(row, min_length):
    lits, found = repeats.parse(row, min_length)
    ref_lits, ref_matches = repeats.reference_parse(row.tolist(), min_length)
    assert lits.tolist() == ref_lits
    got = list(
        zip(found.runs.tolist(), found.lengths.tolist(), found.distances.tolist(), strict=True)
    )
    assert got == ref_matches
    assert all(length >= min_length for _, length, _ in got)
    back = repeats.rebuild(lits, found, len(row))
    assert back.tolist() == row.tolist()
    assert repeats.reference_rebuild(ref_lits, ref_matches, len(row)) == row.tolist()


@settings(max_examples=200, deadline=None)
@given(_rows, _rows, st.sampled_from([4, 8]))
def test_parse_with_history_equals_the_reference_and_rebuilds_the_row(history, row, min_length):
    """Copies may start in the history (earlier channels); literals and matches cover the row
    only, and the rebuild given the same history gives the row back."""
    lits, found = repeats.parse(row, min_length, history)
    ref_lits, ref_matches = repeats.reference_parse(
        row.tolist(), min_length, history=history.tolist()
    )
    assert lits.tolist() == ref_lits
    got = list(
        zip(found.runs.tolist(), found.lengths.tolist(), found.distances.tolist(), strict=True)
    )
    assert got == ref_matches
    assert repeats.rebuild(lits, found, len(row), history).tolist() == row.tolist()
    rebuilt = repeats.reference_rebuild(ref_lits, ref_matches, len(row), history.tolist())
    assert rebuilt == row.tolist()


@settings(max_examples=150, deadline=None)
@given(
    st.integers(1, 5).flatmap(
        lambda count: st.lists(_rows, min_size=count, max_size=count).map(
            lambda rows: np.stack(
                [np.resize(r, 40) if len(r) else np.zeros(40, np.int64) for r in rows]
            )
        )
    ),
    st.sampled_from([4, 8]),
    st.integers(0, 4),
    st.sampled_from([None, 5, 17]),
)
def test_a_block_hashed_once_parses_every_channel_as_the_reference(block, min_length, back, head):
    """The parse of channel c of a block whose samples were hashed once (every channel, every
    window of history, the channels' first ``head`` samples) equals the reference parse of the
    channel after its ``back`` earlier channels."""
    samples = repeats.Samples(block.T.copy().T)  # channels x frames, not contiguous
    cut = block.shape[1] if head is None else head
    for c in range(block.shape[0]):
        lits, found = samples.parse(c, min_length, back, head)
        history = block[max(0, c - back) : c, :cut].ravel().tolist()
        ref_lits, ref_matches = repeats.reference_parse(
            block[c, :cut].tolist(), min_length, history=history
        )
        assert lits.tolist() == ref_lits
        got = zip(
            found.runs.tolist(), found.lengths.tolist(), found.distances.tolist(), strict=True
        )
        assert list(got) == ref_matches


@settings(max_examples=100, deadline=None)
@given(_rows, st.sampled_from([4, 8]))
def test_the_copied_samples_are_those_the_mask_selects(row, min_length):
    _, found = repeats.parse(row, min_length)
    values = row * 3 - 1
    expected = values[repeats.copied_mask(found, len(row))]
    assert repeats.copied(values, found).tolist() == expected.tolist()


def test_copied_refuses_matches_past_the_values():
    found = repeats.Parse(*(np.array([v], dtype=np.int64) for v in (2, 5, 1)))
    with pytest.raises(ValueError):
        repeats.copied(np.zeros(6, dtype=np.int64), found)


@given(st.lists(st.integers(-(2**63), 2**63 - 1), min_size=4, max_size=4))
def test_hash_takes_any_samples(values):
    assert 0 <= _repeats.hash4(values) < 1 << 16


@given(
    st.lists(st.integers(-(2**40), 2**40), min_size=1, max_size=50),
    st.integers(-64, 64).filter(bool),
)
def test_pairs_undo_exactly(values, weight):
    row = np.array(values, dtype=np.int64)
    ref = row[::-1].copy()
    assert channels.undo(channels.apply(row, ref, weight), ref, weight).tolist() == values


def _coder():
    return plugins.create("coder", {"use": "arith"}, Location("<test>", "coder"))


@settings(max_examples=100, deadline=None)
@given(_rows.filter(lambda r: len(r) >= 8), st.sampled_from(["arith", "rice"]))
def test_match_tables_round_trip(row, coder_name):
    coder = plugins.create("coder", {"use": coder_name}, Location("<test>", "coder"))
    _, found = repeats.parse(row, 4)
    table = repeats.encode_table(found, coder)
    read, end = repeats.read_table(memoryview(table), 0, len(row), coder)
    assert end == len(table)
    if not len(found.runs):
        assert read is None
    else:
        assert read.runs.tolist() == found.runs.tolist()
        assert read.lengths.tolist() == found.lengths.tolist()
        assert read.distances.tolist() == found.distances.tolist()


# -- the codec chooses them where they pay -------------------------------------------------------


def gestures(frames: int = 40_000, channels_: int = 3, seed: int = 7) -> np.ndarray:
    """A low-rate multichannel accelerometer-like stream: plateaus, and three gestures (random
    walks) that recur exactly, between stretches of noise (frames x channels, int16)."""
    rng = np.random.default_rng(seed)
    templates = [np.cumsum(rng.integers(-40, 41, (n, channels_)), 0) for n in (180, 260, 400)]
    parts, total = [], 0
    while total < frames:
        kind = rng.integers(3)
        if kind == 0:
            part = templates[rng.integers(3)]
        elif kind == 1:
            part = np.repeat(rng.integers(-50, 50, (1, channels_)), rng.integers(20, 200), 0)
        else:
            part = rng.integers(-300, 300, (int(rng.integers(50, 150)), channels_))
        parts.append(part)
        total += len(part)
    return np.clip(np.concatenate(parts)[:frames], -32768, 32767).astype("<i2")


def shared_motion(frames: int = 30_000, seed: int = 11) -> np.ndarray:
    """Three channels of 24-bit-range motion that share their innovations (a common ground
    motion seen with different gains and sign, plus each sensor's own noise)."""
    rng = np.random.default_rng(seed)
    ground = rng.normal(0, 4000, frames)
    out = []
    for gain in (1.0, 0.8, -0.6):
        innov = gain * ground + rng.normal(0, 300, frames)
        out.append(np.cumsum(innov) * 0.02 + np.cumsum(np.cumsum(innov)) * 1e-4)
    return np.rint(np.stack(out, 1) / 50).astype("<i4")


def _sizes_with_and_without(raw: bytes, spec: StreamSpec, profile: str, monkeypatch, stage):
    packed = api.compress_bytes(raw, spec, profile=profile)
    with monkeypatch.context() as m:
        m.setattr(stage, "choose", lambda *a, **k: None)
        plain = api.compress_bytes(raw, spec, profile=profile)
    return packed, plain


def _flags(packed: bytes) -> set[int]:
    return {b.flags for _, b in container.Reader(io.BytesIO(packed)).blocks()}


@pytest.mark.parametrize("profile", ["server", "fast"])
def test_repeated_gestures_choose_repeats_and_are_smaller(profile, monkeypatch):
    values = gestures()
    spec = StreamSpec("int16", 3)
    raw = values.tobytes()
    packed, plain = _sizes_with_and_without(raw, spec, profile, monkeypatch, repeats)
    assert any(f & codec.FLAG_REPEATS for f in _flags(packed))
    assert not any(f & codec.FLAG_REPEATS for f in _flags(plain))
    assert len(packed) < 0.8 * len(plain), (len(packed), len(plain))
    assert api.decompress_bytes(packed) == raw
    assert any(b["repeats"] for b in qres.info(packed)["blocks"])  # and `qres info` says so


@pytest.mark.parametrize("profile", ["server", "fast"])
def test_channels_sharing_motion_choose_pairs_and_are_smaller(profile, monkeypatch):
    spec = StreamSpec("int32", 3)
    raw = shared_motion().tobytes()
    packed, plain = _sizes_with_and_without(raw, spec, profile, monkeypatch, channels)
    assert any(f & codec.FLAG_CHANNEL_PAIRS for f in _flags(packed))
    assert not any(f & codec.FLAG_CHANNEL_PAIRS for f in _flags(plain))
    assert len(packed) < 0.95 * len(plain), (len(packed), len(plain))
    assert api.decompress_bytes(packed) == raw
    assert any(b["channel_pairs"] for b in qres.info(packed)["blocks"])


def test_independent_noise_chooses_neither_stage():
    rng = np.random.default_rng(5)
    raw = rng.integers(-2000, 2000, (20_000, 3)).astype("<i2").tobytes()
    packed = api.compress_bytes(raw, StreamSpec("int16", 3), profile="server")
    assert not any(f & (codec.FLAG_REPEATS | codec.FLAG_CHANNEL_PAIRS) for f in _flags(packed))


def test_bounded_error_blocks_may_pair_channels_and_keep_the_bound():
    spec = StreamSpec("int32", 3)
    values = shared_motion(12_000)
    for bound in (1, 16, 300):
        packed = api.compress_bytes(values.tobytes(), spec, profile="server", max_error=bound)
        back = spec.to_array(api.decompress_bytes(packed)).reshape(-1, 3).astype(np.int64)
        assert np.abs(back - values).max() <= bound
        assert not any(f & codec.FLAG_REPEATS for f in _flags(packed))  # lossless only


def irradiance(days: int = 365, seed: int = 3) -> np.ndarray:
    """Hourly global, direct and diffuse irradiance (frames x 3, int16): zero at night; on
    cloudy hours the direct beam is 0 and global equals diffuse exactly, else global is
    diffuse plus the beam's share. Each channel alone is noisy from day to day."""
    rng = np.random.default_rng(seed)
    hours = np.arange(days * 24)
    sun = np.clip(np.sin((hours % 24 - 6) / 12 * np.pi), 0, None)
    cloudy = np.repeat(rng.random(days * 6) < 0.5, 4)  # four-hour weather spells
    direct = np.where(cloudy, 0, np.rint(sun * rng.uniform(300, 900, len(hours))))
    diffuse = np.rint(sun * rng.uniform(20, 300, len(hours)))
    glob = diffuse + np.rint(direct * sun)
    return np.stack([glob, direct, diffuse], 1).astype("<i2")


def test_channels_equal_to_an_earlier_one_at_times_copy_from_it(monkeypatch):
    """Diffuse irradiance equals global whenever the sun is hidden: its repeats copy from
    the global channel (a distance past its own start), and the stream is smaller than with
    copies inside each channel only."""
    values = irradiance()
    spec = StreamSpec("int16", 3)
    raw = values.tobytes()
    packed = api.compress_bytes(raw, spec, profile="server")
    with monkeypatch.context() as m:
        m.setattr(repeats, "HISTORY_CHANNELS", 0)
        own = api.compress_bytes(raw, spec, profile="server")
    assert api.decompress_bytes(packed) == raw
    assert len(packed) < 0.97 * len(own), (len(packed), len(own))
    reader = container.Reader(io.BytesIO(packed))
    decoder = codec.open_decoder(reader.header)()
    reached = False
    for _, block in reader.blocks():
        layout = decoder._read_layout(memoryview(block.payload), block.frames, block.flags)
        table = layout.repeats[2]
        if table is not None:
            starts = np.cumsum(table.runs + table.lengths) - table.lengths
            reached |= bool(np.any(table.distances > starts))
    assert reached


def test_copies_from_earlier_channels_are_refused_in_older_versions():
    """A format-8 reader's blocks may not copy from other channels: the same block read as
    version 8 fails as damage."""
    raw = irradiance(60).tobytes()
    packed = api.compress_bytes(raw, StreamSpec("int16", 3), profile="server")
    reader = container.Reader(io.BytesIO(packed))
    assert reader.header.version == container.LOSSLESS_VERSION == 9
    old = codec.open_decoder(attrs.evolve(reader.header, version=8))()
    with pytest.raises(IntegrityError, match="outside|out of range"):
        for number, (_, block) in enumerate(reader.blocks()):
            old.decode(number, block)


# -- round trips over the new paths ---------------------------------------------------------------


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.integers(0, 2**32 - 1),
    st.integers(1, 4),
    st.sampled_from(["int16", "int32", "float32", "float64"]),
    st.sampled_from(["server", "fast", "esp32"]),
    st.sampled_from([0, 0, 2]),
)
def test_streams_with_repeats_and_shared_channels_round_trip(seed, count, dtype, profile, bound):
    rng = np.random.default_rng(seed)
    values = gestures(int(rng.integers(300, 6000)), count, seed).astype(np.float64)
    if count > 1 and rng.integers(2):
        values[:, 1:] += values[:, :1] * rng.integers(-2, 3)  # shared channels
    if dtype.startswith("float"):
        values = values / 8  # exact in binary, repeats survive the float mapping
    spec = StreamSpec(dtype, count)
    raw = np.clip(values, -30000, 30000).astype(np.dtype(dtype).newbyteorder("<")).tobytes()
    settings_, _ = api.codec_settings(profile)
    small = codec.CodecSettings(settings_.predictor, settings_.coder, 2048, bound)
    out = io.BytesIO()
    from qres.codec.samples import SampleSource

    codec.compress(SampleSource(io.BytesIO(raw), spec), out, small)
    back = api.decompress_bytes(out.getvalue())
    if not bound:
        assert back == raw
    else:
        a = spec.to_array(raw).astype(np.float64)
        b = spec.to_array(back).astype(np.float64)
        assert np.abs(a - b).max(initial=0) <= bound


# -- hostile tables ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def staged_block():
    """A block that uses both stages, its decoder, and its record."""
    values = gestures(6000, 3)
    values[:, 2] = np.clip(values[:, 0] * 2 + values[:, 2] // 4, -32768, 32767)
    spec = StreamSpec("int16", 3)
    settings_, _ = api.codec_settings("server")
    small = codec.CodecSettings(settings_.predictor, settings_.coder, 6000)
    out = io.BytesIO()
    from qres.codec.samples import SampleSource

    codec.compress(SampleSource(io.BytesIO(values.tobytes()), spec), out, small)
    reader = container.Reader(io.BytesIO(out.getvalue()))
    (_, block), *_ = list(reader.blocks())
    assert block.flags & codec.FLAG_REPEATS
    return codec.open_decoder(reader.header)(), block


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_damaged_stage_fields_fail_cleanly(staged_block, data):
    """Any change to a staged block's payload (flips, cuts, splices, either stage flag set or
    cleared) decodes to the original, or fails with IntegrityError."""
    decoder, block = staged_block
    payload = bytearray(block.payload)
    action = data.draw(st.sampled_from(["flip", "cut", "splice", "flags"]))
    flags = block.flags
    head = min(len(payload), 200)  # the tables sit at the front of the payload
    if action == "flip":
        for _ in range(data.draw(st.integers(1, 4))):
            at = data.draw(st.integers(0, head - 1))
            payload[at] ^= 1 << data.draw(st.integers(0, 7))
    elif action == "cut":
        payload = payload[: data.draw(st.integers(0, len(payload) - 1))]
    elif action == "splice":
        at = data.draw(st.integers(0, head))
        payload[at:at] = data.draw(st.binary(min_size=1, max_size=12))
    else:
        flags ^= data.draw(st.sampled_from([codec.FLAG_REPEATS, codec.FLAG_CHANNEL_PAIRS]))
    bad = container.Block(block.frames, block.method, flags, block.raw_crc, bytes(payload))
    try:
        decoder.decode(0, bad)
    except IntegrityError:
        pass


def test_lying_match_counts_are_refused_before_allocating():
    coder = _coder()
    big = bytearray()
    container.put_varint(big, 1 << 40)
    with pytest.raises(IntegrityError, match="repeats: value exceeds"):
        repeats.read_table(memoryview(bytes(big)), 0, 4096, coder)
    # within the frames' bound, but the coded arrays hold nonsense or too little
    table = bytearray()
    container.put_varint(table, 1000)
    for _ in range(3):
        table += b"\x01\x00"
    with pytest.raises(IntegrityError):
        repeats.read_table(memoryview(bytes(table)), 0, 4096, coder)


@pytest.mark.parametrize(
    ("runs", "lengths", "distances", "match"),
    [
        ([0], [4], [1], "outside"),  # copies before the first sample
        ([2], [4], [3], "outside"),  # reaches before the start
        ([10], [45], [1], "outside"),  # runs past the end
        ([-1], [4], [1], "out of range"),
    ],
)
def test_copies_outside_the_channel_are_refused(runs, lengths, distances, match):
    """(With no history; with one, a copy may reach back as far as the history goes.)"""
    coder = _coder()
    found = repeats.Parse(
        np.array(runs, dtype=np.int64),
        np.array(lengths, dtype=np.int64),
        np.array(distances, dtype=np.int64),
    )
    table = repeats.encode_table(found, coder)
    with pytest.raises(IntegrityError, match=match):
        repeats.read_table(memoryview(table), 0, 50, coder)
    if match == "outside" and lengths[0] <= 40:
        reach = distances[0] - runs[0]
        read, _ = repeats.read_table(memoryview(table), 0, 50, coder, reach)
        assert read.distances.tolist() == distances
        with pytest.raises(IntegrityError, match=match):
            repeats.read_table(memoryview(table), 0, 50, coder, reach - 1)


@pytest.mark.parametrize(
    ("table", "match"),
    [
        (b"\x01\x10\x00\x00", "bad channel pair for channel 0"),
        (b"\x00\x02\x10\x00", "bad channel pair for channel 1"),
        (b"\x00\x01\x00\x00", "bad channel pair"),  # weight 0
        (b"\x00\x01\x41\x00", "bad channel pair"),  # weight 65
        (b"\x00\x00\x00", "no channel has a pair"),
        (b"\x00\x01", "truncated"),
    ],
)
def test_bad_channel_pairs_are_refused(table, match):
    with pytest.raises(IntegrityError, match=match):
        channels.read_table(memoryview(table), 0, 3)


@pytest.fixture(scope="module", params=["gestures", "irradiance"])
def staged_stream(request):
    """A stream with repeats: within channels (gestures), or copying from an earlier channel
    (irradiance)."""
    if request.param == "gestures":
        raw = gestures(5000, 3).tobytes()
    else:
        raw = irradiance(120).tobytes()
    packed = api.compress_bytes(raw, StreamSpec("int16", 3), profile="server")
    assert any(f & codec.FLAG_REPEATS for f in _flags(packed))
    return raw, packed


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_damaged_staged_containers_fail_cleanly(staged_stream, data):
    """Bit flips, cuts and splices anywhere in a container with repeats are caught."""
    from qres.kernel.errors import QresError

    raw, packed = staged_stream
    damaged = bytearray(packed)
    action = data.draw(st.sampled_from(["flip", "cut", "splice"]))
    if action == "flip":
        damaged[data.draw(st.integers(0, len(packed) - 1))] ^= 1 << data.draw(st.integers(0, 7))
    elif action == "cut":
        damaged = damaged[: data.draw(st.integers(0, len(packed) - 1))]
    else:
        at = data.draw(st.integers(0, len(packed)))
        damaged[at:at] = data.draw(st.binary(min_size=1, max_size=32))
    try:
        out = api.decompress_bytes(bytes(damaged))
    except QresError:
        return
    assert out == raw


@settings(max_examples=60, deadline=None)
@given(_rows.filter(lambda r: len(r) >= 8), st.integers(0, 64))
def test_a_match_table_stops_once_too_large_and_is_else_the_same(row, most):
    """Coding a table with a size test gives None once the bytes coded so far pass it, else
    the same bytes as without the test."""
    coder = _coder()
    _, found = repeats.parse(row, 4)
    whole = repeats.encode_table(found, coder)
    bounded = repeats.encode_table(found, coder, lambda size: size > most)
    if len(whole) <= most:
        assert bounded == whole
    elif bounded is not None:
        pytest.fail("a table larger than the bound was coded to its end")
