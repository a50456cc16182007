"""The TCP wire format's parsers against hypothesis: arbitrary bytes and arbitrary splits."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qres.node import wire
from qres.trust.identity import Identity
from qres.trust.packet import Reason

bodies = st.lists(st.binary(min_size=1, max_size=300), max_size=8)


@given(bodies, st.lists(st.integers(1, 64), min_size=1, max_size=20))
def test_frames_survive_any_split(frames, cuts):
    stream = b"".join(wire.frame(b) for b in frames)
    decoder, out, pos, i = wire.FrameDecoder(), [], 0, 0
    while pos < len(stream):
        step = cuts[i % len(cuts)]
        out += decoder.feed(stream[pos : pos + step])
        pos, i = pos + step, i + 1
    assert out == frames and decoder.buffered == 0


@given(st.binary(max_size=2000))
@settings(max_examples=300)
def test_decoder_on_garbage_is_bounded(data):
    decoder = wire.FrameDecoder(max_body=512)
    try:
        for body in decoder.feed(data):
            assert 0 < len(body) <= 512
    except wire.WireError as exc:
        assert exc.reason in (Reason.OVERSIZE, Reason.MALFORMED)
    assert decoder.buffered <= 512 + 4


def test_oversize_refused_at_the_header():
    decoder = wire.FrameDecoder()
    with pytest.raises(wire.WireError) as info:
        decoder.feed(struct.pack("<I", wire.MAX_FRAME_BODY + 1))
    assert info.value.reason is Reason.OVERSIZE and decoder.buffered == 4  # the header only
    with pytest.raises(wire.WireError):
        wire.FrameDecoder().feed(b"\x00\x00\x00\x00")


@given(st.binary(max_size=200_000), st.sampled_from(wire.RECORD_TYPES))
@settings(max_examples=30)
def test_records_round_trip(data, kind):
    assembler = wire.RecordAssembler(max_message=200_000)
    parts = wire.records(kind, data)
    assert all(len(p) <= wire.MAX_CHUNK + wire.RECORD.size for p in parts)
    results = [assembler.add(p) for p in parts]
    assert results[:-1] == [None] * (len(parts) - 1) and results[-1] == (kind, data)


@given(st.lists(st.binary(max_size=100), max_size=6))
def test_assembler_on_garbage(chunks):
    assembler = wire.RecordAssembler(max_message=150)
    for chunk in chunks:
        try:
            result = assembler.add(chunk)
        except wire.WireError as exc:
            assert exc.reason in (Reason.MALFORMED, Reason.OVERSIZE)
            return
        if result is not None:
            assert result[0] in wire.RECORD_TYPES and len(result[1]) <= 150


hosts = st.text("abcdefghijklmnopqrstuvwxyz0123456789.-", min_size=1, max_size=40)


@given(st.lists(st.tuples(st.binary(min_size=32, max_size=32), hosts, st.integers(1, 65535))))
def test_peer_lists_round_trip(items):
    entries = [wire.PeerEntry(*item) for item in items]
    assert wire.decode_peers(wire.encode_peers(entries)) == entries[: wire.MAX_PEERS_PER_RECORD]


@given(st.binary(max_size=600))
@settings(max_examples=300)
def test_peer_list_garbage_is_refused_cleanly(data):
    try:
        entries = wire.decode_peers(data)
    except wire.WireError as exc:
        assert exc.reason is Reason.MALFORMED
    else:
        assert len(entries) <= wire.MAX_PEERS_PER_RECORD


def test_hello_binds_the_static_key():
    me = Identity.generate()
    static = bytes(range(32))
    hello = wire.make_hello(me, static, 7400).encode()
    assert wire.decode_hello(hello, static).public_key == me.public_key
    with pytest.raises(wire.WireError) as info:
        wire.decode_hello(hello, bytes(32))
    assert info.value.reason is Reason.BAD_SIGNATURE
    with pytest.raises(wire.WireError):
        wire.decode_hello(hello[:-1], static)
