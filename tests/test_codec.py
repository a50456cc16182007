"""The codec end to end: lossless round trips on the real corpus, bounded error, threads,
every dtype and shape, and determinism."""

from __future__ import annotations

import io

import attrs
import numpy as np
import pytest
from corpus import DATA, FILES, spec_of
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from qres.codec import container
from qres.codec import files as api
from qres.codec import pipeline as codec
from qres.codec.samples import SampleSource, StreamSpec
from qres.kernel.errors import IntegrityError

PROFILES = ("server", "fast", "esp32", "arduino-mega")


@pytest.mark.parametrize("row", FILES)
@pytest.mark.parametrize("profile", PROFILES)
def test_corpus_round_trip_is_exact(row, profile):
    raw = (DATA / row["file"]).read_bytes()
    packed = api.compress_bytes(raw, spec_of(row), profile=profile)
    assert api.decompress_bytes(packed) == raw
    assert len(packed) < len(raw)


def _bound_checked(raw: bytes, spec: StreamSpec, bound: float, profile: str = "server"):
    packed = api.compress_bytes(raw, spec, profile=profile, max_error=bound)
    back = api.decompress_bytes(packed)
    dtype = spec.numpy_dtype()
    x = np.frombuffer(raw, dtype=dtype).astype(np.float64)
    y = np.frombuffer(back, dtype=dtype).astype(np.float64)
    finite = np.isfinite(x)
    assert np.array_equal(np.isfinite(y), finite)
    err = np.abs(x[finite] - y[finite])
    assert err.max(initial=0) <= bound, (bound, err.max())
    return len(packed)


@pytest.mark.parametrize("row", FILES)
def test_corpus_bounded_error_holds(row):
    """Every bound holds, no bound costs more than lossless coding (each block's candidates
    include it) and a larger bound never costs more. Format 11 made that hold again on data
    with a lattice of its own: a quantised block's grid of step 2E could fall between the
    lattice's steps and break what a finer grid kept (soil moisture, 3 decimals, cost more at
    1e-3 of its range than at 1e-5); grids on the channels' lattices coarsen with the bound."""
    raw = (DATA / row["file"]).read_bytes()
    spec = spec_of(row)
    x = np.frombuffer(raw, dtype=spec.numpy_dtype()).astype(np.float64)
    spread = float(np.nanmax(x) - np.nanmin(x))
    sizes = []
    if spec.dtype.startswith("float"):
        bounds = [spread * 1e-5, spread * 1e-3, spread * 1e-2]
    else:
        bounds = [1, 4, 32, 256]
    for bound in bounds:
        sizes.append(_bound_checked(raw, spec, bound))
    lossless = len(api.compress_bytes(raw, spec, profile="server"))
    # a bounded stream's header also carries the bound: a few bytes more than a lossless one
    assert max(sizes) <= lossless + 16, (sizes, lossless)
    assert sizes == sorted(sizes, reverse=True), "a larger bound must not cost more"


def test_threads_do_not_change_the_bytes():
    from qres.codec.demo import make_sample

    raw = make_sample(frames=40_000)
    spec = StreamSpec("int16", 4)
    settings_, _ = api.codec_settings("server")
    settings_ = codec.CodecSettings(settings_.predictor, settings_.coder, 4096)
    outputs = []
    for threads in (1, 2, 3):
        out = io.BytesIO()
        codec.compress(SampleSource(io.BytesIO(raw), spec), out, settings_, threads=threads)
        outputs.append(out.getvalue())
    assert outputs[0] == outputs[1] == outputs[2]
    assert api.decompress_bytes(outputs[0], threads=2) == raw
    # bounded error: each block's predictor choice is the same whichever thread makes it
    bounded = codec.CodecSettings(settings_.predictor, settings_.coder, 4096, 20)
    outputs = []
    for threads in (1, 2):
        out = io.BytesIO()
        codec.compress(SampleSource(io.BytesIO(raw), spec), out, bounded, threads=threads)
        outputs.append(out.getvalue())
    assert outputs[0] == outputs[1]
    assert api.decompress_bytes(outputs[0], threads=2) == api.decompress_bytes(outputs[0])


DTYPES = ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "float32", "float64"]


@st.composite
def streams(draw):
    dtype = draw(st.sampled_from(DTYPES))
    channels = draw(st.integers(1, 4))
    frames = draw(st.integers(0, 300))
    layout = draw(st.sampled_from(["interleaved", "planar"]))
    order = draw(st.sampled_from(["little", "big"]))
    spec = StreamSpec(dtype, channels, layout, order)
    smooth = draw(st.booleans())
    if smooth and not dtype.startswith("float"):
        info = np.iinfo(dtype)
        seed = draw(st.integers(0, 2**32 - 1))
        walk = np.cumsum(np.random.default_rng(seed).integers(-3, 4, frames * channels))
        values = np.clip(walk + (int(info.min) + int(info.max)) // 2, info.min, info.max)
        data = values.astype(spec.numpy_dtype()).tobytes()
    else:
        arr = draw(hnp.arrays(spec.numpy_dtype(), frames * channels))
        data = arr.tobytes()
    tail = draw(st.binary(max_size=spec.frame_bytes - 1)) if spec.frame_bytes > 1 else b""
    return spec, data + tail


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams(), st.sampled_from(PROFILES))
def test_any_stream_round_trips(stream, profile):
    spec, data = stream
    packed = api.compress_bytes(data, spec, profile=profile)
    assert api.decompress_bytes(packed) == data
    # Never grows by more than the header, the index and trailer (at most 60 bytes with a short
    # tail) and a block record's 20-byte head and checksum plus an index entry per block.
    header = len(container.encode_header(container.read_header(io.BytesIO(packed))[0]))
    assert len(packed) <= len(data) + header + 60 + 30 * (len(data) // 256 + 1)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams(), st.integers(1, 1000))
def test_any_integer_stream_respects_the_bound(stream, bound):
    spec, data = stream
    usable = len(data) - len(data) % spec.frame_bytes
    if spec.dtype.startswith("float") or spec.layout == "planar":
        return
    _bound_checked(data[:usable], spec, bound)


def test_empty_and_single_sample():
    for raw in (b"", b"\x01\x02"):
        packed = api.compress_bytes(raw, StreamSpec("int16"))
        assert api.decompress_bytes(packed) == raw


def test_incompressible_bytes_are_stored_with_small_overhead():
    raw = np.random.default_rng(7).bytes(1 << 18)
    packed = api.compress_bytes(raw, StreamSpec("uint8"), profile="server")
    assert api.decompress_bytes(packed) == raw
    assert len(packed) <= len(raw) + 700 + 40 * 4


def _assert_server_blocks_no_larger_than_fast(raw: bytes, spec: StreamSpec) -> None:
    sizes = {}
    for profile in ("server", "fast"):
        packed = api.compress_bytes(raw, spec, profile=profile)
        reader = container.Reader(io.BytesIO(packed))
        sizes[profile] = [(b.frames, len(b.payload)) for _, b in reader.blocks()]
    assert [f for f, _ in sizes["server"]] == [f for f, _ in sizes["fast"]]
    for (_, server), (_, fast) in zip(sizes["server"], sizes["fast"], strict=True):
        assert server <= fast


@pytest.mark.parametrize("row", FILES)
def test_server_never_codes_a_corpus_block_larger_than_fast(row):
    """The server profile tries what the cheaper fast profile codes (its polynomial, among
    the per-channel candidates) and keeps the smallest: no block of a corpus file comes out
    larger under server than under fast (the blocks cover the same frames)."""
    _assert_server_blocks_no_larger_than_fast((DATA / row["file"]).read_bytes(), spec_of(row))


def _sine_noise(frames: int = 300_000):
    rng = np.random.default_rng(2)
    t = np.arange(frames)
    return np.round(8000 * np.sin(t / 90) + rng.normal(0, 40, frames)).astype("<i2")


def _hourly_decimals(frames: int = 30_000):
    rng = np.random.default_rng(4)
    level = np.cumsum(rng.normal(0, 0.05, frames)) + 12
    rain = np.where(rng.random(frames) < 0.05, np.round(rng.exponential(2, frames), 1), 0.0)
    return np.round(np.stack([level, rain], 1), 2).astype("<f8")


@pytest.mark.parametrize(
    "make, spec",
    [
        (lambda: _mixed_channels(), StreamSpec("int16", 3)),
        (_sine_noise, StreamSpec("int16", 1)),
        (_hourly_decimals, StreamSpec("float64", 2)),
    ],
    ids=["mixed-3ch", "sine-noise", "hourly-decimals"],
)
def test_server_never_codes_a_block_larger_than_fast(make, spec):
    """The same on generated streams of each kind (smooth, sparse, noisy, decimal floats;
    one long stream of two blocks)."""
    _assert_server_blocks_no_larger_than_fast(make().tobytes(), spec)


def _block_flags(packed: bytes) -> list[int]:
    reader = container.Reader(io.BytesIO(packed))
    return [block.flags for _, block in reader.blocks()]


def test_bounded_blocks_choose_their_predictor_from_the_data():
    """Coarse bounds on a smooth signal pick an interpolation predictor (flag bits 1-2); a
    lossless stream never sets them; every choice decodes within the bound."""
    rng = np.random.default_rng(3)
    walk = np.cumsum(np.convolve(rng.integers(-50, 51, 40000), np.ones(16, int), "same")) // 8
    raw = np.clip(walk, -32768, 32767).astype("<i2").tobytes()
    spec = StreamSpec("int16")
    codes = set()
    for bound in (2, 64, 500):
        packed = api.compress_bytes(raw, spec, profile="server", max_error=bound)
        _bound_checked(raw, spec, bound)
        codes |= {(f & codec.PREDICTOR_MASK) >> codec.PREDICTOR_SHIFT for f in _block_flags(packed)}
        # the chosen block is never bigger than the header's predictor alone would give
        alone = codec.BlockCoder(api.codec_settings("server", bound)[0], spec)._predicted(
            np.frombuffer(raw, "<i2").reshape(-1, 1), None, bound, (0,)
        )
        assert len(packed) < len(alone[0]) + 400
    assert codes & set(codec.BLOCK_PREDICTORS)
    lossless = _block_flags(api.compress_bytes(raw, spec, profile="server"))
    assert all(f & (codec.PREDICTOR_MASK | codec.FLAG_LOSSLESS) == 0 for f in lossless)


def test_unknown_block_flags_are_refused():
    spec = StreamSpec("int16")
    raw = np.arange(1000, dtype="<i2").tobytes()
    packed = api.compress_bytes(raw, spec, profile="fast", max_error=3)
    reader = container.Reader(io.BytesIO(packed))
    (_, block), *_ = list(reader.blocks())
    decoder = codec.open_decoder(reader.header)()
    for flags in (1 << 6, 1 << 7):
        bad = container.Block(block.frames, block.method, flags, block.raw_crc, block.payload)
        with pytest.raises(IntegrityError, match="block 4: unknown flags"):
            decoder.decode(4, bad)
    # format 5 had no channel pairs or repeats: a file of that version carrying them is damage
    old = codec.open_decoder(attrs.evolve(reader.header, version=5))()
    for flags in (codec.FLAG_CHANNEL_PAIRS, codec.FLAG_REPEATS):
        bad = container.Block(block.frames, block.method, flags, block.raw_crc, block.payload)
        with pytest.raises(IntegrityError, match="block 4: unknown flags"):
            old.decode(4, bad)
    # code 3 carries its level mask first; bits above the 10 levels are refused
    levels = codec.LEVELS << codec.PREDICTOR_SHIFT
    for head in (b"\x00\x04", b"\x01"):
        bad = container.Block(block.frames, block.method, levels, block.raw_crc, head)
        with pytest.raises(IntegrityError, match="block 4: .*interpolation levels"):
            decoder.decode(4, bad)


def _mixed_channels(frames: int = 20000):
    """Three channels that want different predictors: a smooth wave, a sparse burst series
    (zeros with rare spikes) and memoryless counts."""
    rng = np.random.default_rng(11)
    t = np.arange(frames)
    wave = np.round(9000 * np.sin(t / 40) + rng.normal(0, 3, frames))
    bursts = np.where(rng.random(frames) < 0.03, rng.integers(50, 3000, frames), 0)
    counts = np.where(rng.random(frames) < 0.5, 0, rng.integers(0, 900, frames))
    return np.stack([wave, bursts, counts], 1).astype("<i2")


def _channel_codes(packed: bytes, channels: int) -> list[bytes]:
    reader = container.Reader(io.BytesIO(packed))
    return [
        b.payload[:channels] if b.flags & codec.FLAG_CHANNEL_PREDICTORS else bytes(channels)
        for _, b in reader.blocks()
    ]


@pytest.mark.parametrize(
    "predictor", [{"use": "nlms"}, {"use": "taaf", "cross": 2}, {"use": "polynomial"}]
)
@pytest.mark.parametrize("coder", [{"use": "arith", "checksum": False}, {"use": "rice"}])
def test_channels_choose_a_polynomial_when_it_codes_smaller(monkeypatch, predictor, coder):
    """A lossless block's channels keep the block predictor or take a fixed polynomial, each
    by the coded size; the codes are in the payload (flag bit 3) and every mix decodes,
    cross-channel predictors included (they then see only the channels that keep them)."""
    block = _mixed_channels()
    spec = StreamSpec("int16", 3)
    settings = codec.CodecSettings(predictor, coder, block_frames=8192)

    def pack() -> bytes:
        out = io.BytesIO()
        codec.compress(SampleSource(io.BytesIO(block.tobytes()), spec), out, settings)
        return out.getvalue()

    packed = pack()
    assert api.decompress_bytes(packed) == block.tobytes()
    codes = _channel_codes(packed, 3)
    assert any(any(c) for c in codes)
    assert all(max(c) <= codec.CHANNEL_POLYNOMIALS for c in codes)
    if predictor["use"] != "polynomial":
        assert all(c[0] == 0 for c in codes), "the smooth wave keeps the adaptive predictor"
        assert all(c[2] != 0 for c in codes), "memoryless counts take a polynomial"
    monkeypatch.setattr(codec, "_TRIED_ORDERS", ())
    alone = pack()
    assert all(f & codec.FLAG_CHANNEL_PREDICTORS == 0 for f in _block_flags(alone))
    assert len(packed) < len(alone)


def test_bad_channel_predictor_codes_are_refused():
    spec = StreamSpec("int16", 3)
    packed = api.compress_bytes(_mixed_channels(3000).tobytes(), spec, profile="server")
    reader = container.Reader(io.BytesIO(packed))
    (_, block), *_ = list(reader.blocks())
    assert block.flags & codec.FLAG_CHANNEL_PREDICTORS
    decoder = codec.open_decoder(reader.header)()
    for codes, match in (
        (b"\x00\x00\x00", "bad channel predictor codes"),
        (b"\x00\x06\x01", "bad channel predictor codes"),
    ):
        bad = container.Block(
            block.frames, block.method, block.flags, block.raw_crc, codes + block.payload[3:]
        )
        with pytest.raises(IntegrityError, match=f"block 2: {match}"):
            decoder.decode(2, bad)
    short = container.Block(block.frames, block.method, block.flags, block.raw_crc, b"\x01")
    with pytest.raises(IntegrityError, match="block 2: channel predictor codes truncated"):
        decoder.decode(2, short)
