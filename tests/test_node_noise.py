"""Our Noise XX against an independent implementation (noiseprotocol), both directions."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization

from qres.node.noise import PROTOCOL_NAME, HandshakeState, KeyPair, NoiseError, hkdf

noise_connection = pytest.importorskip("noise.connection")


def _raw_private(pair: KeyPair) -> bytes:
    return pair.private.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )


def _theirs(initiator: bool, static: KeyPair, prologue: bytes):
    conn = noise_connection.NoiseConnection.from_name(PROTOCOL_NAME)
    conn.set_as_initiator() if initiator else conn.set_as_responder()
    conn.set_keypair_from_private_bytes(noise_connection.Keypair.STATIC, _raw_private(static))
    conn.set_prologue(prologue)
    conn.start_handshake()
    return conn


@pytest.mark.parametrize("we_initiate", [True, False])
def test_handshake_and_transport_interoperate(we_initiate):
    prologue = b"qres-tcp/1\x00interop"
    ours_static, theirs_static = KeyPair(), KeyPair()
    ours = HandshakeState(we_initiate, ours_static, prologue)
    theirs = _theirs(not we_initiate, theirs_static, prologue)
    payloads = [b"", b"responder hello", b"initiator hello"]
    for step, payload in enumerate(payloads):
        if (step % 2 == 0) == we_initiate:
            assert theirs.read_message(ours.write_message(payload)) == payload
        else:
            assert ours.read_message(theirs.write_message(payload)) == payload
    assert ours.complete and theirs.handshake_finished
    assert ours.handshake_hash == theirs.get_handshake_hash()
    assert ours.remote_static == theirs_static.public
    send, receive = ours.split()
    for i in range(3):
        message = b"frame %d" % i
        assert theirs.decrypt(send.encrypt_with_ad(b"", message)) == message
        assert receive.decrypt_with_ad(b"", theirs.encrypt(message * 2)) == message * 2


def test_prologue_mismatch_fails():
    a = HandshakeState(True, KeyPair(), b"swarm-a")
    b = HandshakeState(False, KeyPair(), b"swarm-b")
    b.read_message(a.write_message())
    with pytest.raises(NoiseError):
        a.read_message(b.write_message(b"x"))


def test_tampered_message_fails_and_turns_are_enforced():
    a = HandshakeState(True, KeyPair())
    b = HandshakeState(False, KeyPair())
    with pytest.raises(NoiseError):
        b.write_message()
    b.read_message(a.write_message())
    msg2 = bytearray(b.write_message(b"payload"))
    msg2[40] ^= 1
    with pytest.raises(NoiseError):
        a.read_message(bytes(msg2))
    with pytest.raises(NoiseError):
        HandshakeState(False, KeyPair()).read_message(b"short")


def test_hkdf_matches_rfc5869_shape():
    # The spec's HKDF is RFC 5869 with an empty info: compare against cryptography's HKDF.
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    ck, ikm = bytes(range(32)), b"input key material"
    expected = HKDF(hashes.SHA256(), 96, salt=ck, info=b"").derive(ikm)
    assert b"".join(hkdf(ck, ikm, 3)) == expected
