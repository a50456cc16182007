"""Update packets: canonical encoding, bounds-checked decoding, the verifier's reasons, and
recorded streams."""

from __future__ import annotations

import io
import struct

import pytest

from qres.kernel.errors import IntegrityError
from qres.trust import commitment as cm
from qres.trust import packet as pk
from qres.trust.identity import Identity
from qres.trust.proof import CommittedModel

ALICE = Identity.from_seed(bytes(range(32)))
BOB = Identity.from_seed(bytes(range(1, 33)))


def _rand(seed: int):
    import random

    rng = random.Random(seed)
    return lambda n: rng.randbytes(n)


@pytest.fixture(scope="module")
def transition():
    model = CommittedModel.create([3 << 16, -(1 << 15), 7, 0], _rand(1))
    update = [12, -5, 0, 1 << 16]
    new, proof = model.advance(ALICE.did, 5, update, _rand(2))
    return model, new, update, proof


def _packet(transition, round_=5, nonce=b"n" * 16, proof=False, identity=ALICE):
    model, new, update, p = transition
    return pk.make_packet(
        identity,
        round_,
        nonce,
        update,
        base=model.commitment,
        commitment=new.commitment,
        residual_error=3 << 14,
        accuracy_delta=-(1 << 10),
        proof=p if proof else None,
    )


def test_roundtrip_is_canonical(transition):
    for with_proof in (False, True):
        packet = _packet(transition, proof=with_proof)
        data = packet.encode()
        assert len(data) == pk.HEADER_BYTES + 4 * 4 + 64 * with_proof + 64
        back = pk.decode(data)
        assert back == packet
        assert back.encode() == data
        assert back.did == ALICE.did


def test_layout_matches_docs(transition):
    data = _packet(transition).encode()
    assert data[:4] == b"QRUP" and data[4] == 2 and data[5] == 0
    assert struct.unpack_from("<I", data, 8)[0] == len(data)
    assert data[12:44] == ALICE.public_key
    assert struct.unpack_from("<Q", data, 44)[0] == 5
    assert struct.unpack_from("<i", data, 68)[0] == 3 << 14
    assert struct.unpack_from("<I", data, 76)[0] == 4
    assert data[144:176] == pk.GENESIS_STEP  # the round-step digest of a first base
    assert struct.unpack_from("<4i", data, 176) == (12, -5, 0, 1 << 16)


def test_every_truncation_and_extension_is_malformed(transition):
    data = _packet(transition, proof=True).encode()
    for cut in range(len(data)):
        with pytest.raises(pk.PacketError):
            pk.decode(data[:cut])
    with pytest.raises(pk.PacketError) as info:
        pk.decode(data + b"\0")
    assert info.value.reason is pk.Reason.MALFORMED


def test_bad_fields_are_refused(transition):
    data = bytearray(_packet(transition).encode())
    bad_version = bytearray(data)
    bad_version[4] = 3
    with pytest.raises(pk.PacketError) as info:
        pk.decode(bytes(bad_version))
    assert info.value.reason is pk.Reason.BAD_VERSION
    for offset, value in [(5, 0x80), (6, 1), (0, ord("X"))]:
        bad = bytearray(data)
        bad[offset] = value
        with pytest.raises(pk.PacketError) as info:
            pk.decode(bytes(bad))
        assert info.value.reason is pk.Reason.MALFORMED
    huge_d = bytearray(data)
    struct.pack_into("<I", huge_d, 76, pk.MAX_WEIGHTS + 1)
    with pytest.raises(pk.PacketError):
        pk.decode(bytes(huge_d))
    negative = bytearray(data)
    struct.pack_into("<i", negative, 68, -1)
    with pytest.raises(pk.PacketError):
        pk.decode(bytes(negative))


def test_oversize_refused_before_parsing():
    with pytest.raises(pk.PacketError) as info:
        pk.decode(b"QRUP" + bytes(pk.MAX_PACKET_BYTES))
    assert info.value.reason is pk.Reason.OVERSIZE
    with pytest.raises(pk.PacketError) as info:
        pk.decode(bytes(1000), max_bytes=500)
    assert info.value.reason is pk.Reason.OVERSIZE
    assert isinstance(info.value, IntegrityError)


def _verifier(**kw):
    return pk.Verifier(known=[ALICE.public_key, BOB.did], current_round=5, **kw)


def test_verifier_accepts_then_rejects_replay(transition):
    v = _verifier()
    data = _packet(transition).encode()
    assert v.check(data).reason is pk.Reason.OK
    assert v.check(data).reason is pk.Reason.REPLAY
    assert v.check(_packet(transition, nonce=b"m" * 16).encode()).ok


def test_verifier_reasons_are_distinct(transition):
    v = _verifier()
    good = _packet(transition).encode()
    tampered = bytearray(good)
    tampered[150] ^= 1  # inside the update: the signature no longer matches
    assert v.check(bytes(tampered)).reason is pk.Reason.BAD_SIGNATURE
    stranger = Identity.from_seed(bytes(32))
    assert v.check(_packet(transition, identity=stranger).encode()).reason is (
        pk.Reason.UNKNOWN_SENDER
    )
    assert v.check(_packet(transition, round_=20).encode()).reason is pk.Reason.FUTURE_ROUND
    v.advance(30)
    assert v.check(good).reason is pk.Reason.STALE_ROUND
    v.advance(5)
    v.ban(ALICE.did)
    assert v.check(good).reason is pk.Reason.BANNED_SENDER
    assert v.check(b"junk").reason is pk.Reason.MALFORMED
    assert v.check(bytes(pk.MAX_PACKET_BYTES + 1)).reason is pk.Reason.OVERSIZE
    assert _verifier(dimension=8).check(good).reason is pk.Reason.BAD_DIMENSION


def test_verifier_checks_points_and_proofs(transition):
    model, new, update, proof = transition
    v = _verifier()
    not_a_point = b"\xff" * 32
    bad = pk.make_packet(ALICE, 5, b"a" * 16, update, base=not_a_point, commitment=new.commitment)
    assert v.check(bad.encode()).reason is pk.Reason.BAD_POINT
    small_order = cm.IDENTITY
    bad = pk.make_packet(ALICE, 5, b"b" * 16, update, base=model.commitment, commitment=small_order)
    assert v.check(bad.encode()).reason is pk.Reason.BAD_POINT
    assert v.check(_packet(transition, proof=True).encode()).ok
    lying = pk.make_packet(
        ALICE,
        5,
        b"c" * 16,
        [u + 1 for u in update],
        base=model.commitment,
        commitment=new.commitment,
        proof=proof,
    )
    verdict = v.check(lying.encode())
    assert verdict.reason is pk.Reason.BAD_PROOF and verdict.reason.attributable
    assert not pk.Reason.BAD_SIGNATURE.attributable


def test_replay_cache_is_bounded_and_never_forgets_unsafely(transition):
    v = _verifier(replay_capacity=3, window=100, future=100)
    packets = [_packet(transition, round_=r, nonce=bytes([r]) * 16).encode() for r in (1, 2, 3, 4)]
    for data in packets:
        assert v.check(data).ok
    assert v._seen_count <= 3
    # Round 1 was dropped from the cache: replaying it is refused as stale, not accepted.
    assert v.check(packets[0]).reason is pk.Reason.STALE_ROUND
    assert v.check(packets[3]).reason is pk.Reason.REPLAY


def test_unknown_senders_allowed_when_asked(transition):
    v = pk.Verifier(allow_unknown=True, current_round=5)
    assert v.check(_packet(transition).encode()).ok


def test_stream_roundtrip_and_damage(transition):
    model, new, update, proof = transition
    out = io.BytesIO()
    writer = pk.StreamWriter(out)
    packets = [_packet(transition, nonce=bytes([i]) * 16) for i in range(3)]
    for p in packets:
        writer.write_packet(p)
    response = pk.AuditResponse(
        ALICE.public_key, 5, b"n" * 16, cm.scalar_bytes(model.blinding), model.weights, proof
    ).signed(ALICE)
    writer.write_audit(response)
    writer.finish()
    data = out.getvalue()
    assert writer.bytes_written == len(data)
    records = list(pk.read_stream(io.BytesIO(data)))
    assert [k for k, _ in records] == [1, 1, 1, 2]
    assert [pk.decode(b) for _, b in records[:3]] == packets
    back = pk.decode_audit(records[3][1])
    assert back == response and back.verify_signature()
    # Every cut fails, at a record boundary too (the end record is missing or short).
    boundaries, pos = [], len(pk.STREAM_HEADER)
    for _, body in records:
        pos += 5 + len(body)
        boundaries.append(pos)
    with pytest.raises(pk.PacketError, match="bad magic"):
        list(pk.read_stream(io.BytesIO(data[:3])))
    for cut in (9, *boundaries, len(data) - 1):
        with pytest.raises(pk.PacketError, match="truncated"):
            list(pk.read_stream(io.BytesIO(data[:cut])))
    with pytest.raises(pk.PacketError, match="bytes after the end record"):
        list(pk.read_stream(io.BytesIO(data + b"\0")))
    # A record dropped from the middle, with the end record kept, is caught by the count.
    first = len(pk.STREAM_HEADER) + 5 + len(records[0][1])
    with pytest.raises(pk.PacketError, match="lists 4 records, the stream has 3"):
        list(pk.read_stream(io.BytesIO(data[: len(pk.STREAM_HEADER)] + data[first:])))
    # Version 1 streams (no end record) are refused with a clear line.
    old = pk.STREAM_MAGIC + bytes([1, 0, 0, 0]) + data[len(pk.STREAM_HEADER) : boundaries[-1]]
    with pytest.raises(pk.PacketError, match="version 1 has no end record") as info:
        list(pk.read_stream(io.BytesIO(old)))
    assert info.value.reason is pk.Reason.BAD_VERSION
    # Version 2 streams hold version-1 packets (no round-step digest): refused as a whole.
    older = pk.STREAM_MAGIC + bytes([2, 0, 0, 0]) + data[len(pk.STREAM_HEADER) :]
    with pytest.raises(pk.PacketError, match="version 2 holds version-1 update packets"):
        list(pk.read_stream(io.BytesIO(older)))
    # Version 3 streams carry no round-step evidence after their audit responses.
    v3 = pk.STREAM_MAGIC + bytes([3, 0, 0, 0]) + data[len(pk.STREAM_HEADER) :]
    with pytest.raises(pk.PacketError, match="version 3 holds no round-step evidence") as info:
        list(pk.read_stream(io.BytesIO(v3)))
    assert info.value.reason is pk.Reason.BAD_VERSION
    # Round-step evidence is a record of its own kind, with its own limit.
    out = io.BytesIO()
    writer = pk.StreamWriter(out)
    writer.write(b"step evidence", pk.RECORD_STEP)
    writer.finish()
    assert list(pk.read_stream(io.BytesIO(out.getvalue()))) == [(4, b"step evidence")]
    too_long = pk.STREAM_HEADER + struct.pack("<BI", 4, pk.MAX_STEP_EVIDENCE_BYTES + 1)
    with pytest.raises(pk.PacketError) as info:
        list(pk.read_stream(io.BytesIO(too_long)))
    assert info.value.reason is pk.Reason.OVERSIZE
    oversize = pk.STREAM_HEADER + struct.pack("<BI", 1, pk.MAX_PACKET_BYTES + 1)
    with pytest.raises(pk.PacketError) as info:
        list(pk.read_stream(io.BytesIO(oversize)))
    assert info.value.reason is pk.Reason.OVERSIZE
