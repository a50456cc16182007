"""The Noise protocol framework's XX handshake, written from the Noise specification (rev. 34).

Suite: ``Noise_XX_25519_ChaChaPoly_SHA256``. The primitives come from ``cryptography``
(X25519, ChaCha20-Poly1305) and the standard library (SHA-256, HMAC); this module is the
protocol's state machine: :class:`CipherState`, :class:`SymmetricState` and
:class:`HandshakeState` with the spec's names, so a reader can check it line by line.

XX::

    -> e
    <- e, ee, s, es
    -> s, se

Failures raise :class:`NoiseError`; a handshake that raised must be thrown away (its state is
not rolled back). docs/transport.md says how qres binds the static key to a node's DID.
"""

from __future__ import annotations

import hashlib
import hmac

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

PROTOCOL_NAME = b"Noise_XX_25519_ChaChaPoly_SHA256"
DHLEN = 32
HASHLEN = 32
TAGLEN = 16
#: Largest Noise message (handshake or transport), from the specification.
MAX_MESSAGE = 65535
#: Nonce 2**64 - 1 is reserved by the specification; a cipher state refuses to reach it.
MAX_NONCE = (1 << 64) - 1

#: The XX pattern: the tokens of each message, initiator first.
XX = (("e",), ("e", "ee", "s", "es"), ("s", "se"))


class NoiseError(Exception):
    """A Noise handshake or transport message failed (bad length, bad tag, bad order)."""


def _hash(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _hmac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


def hkdf(chaining_key: bytes, ikm: bytes, outputs: int) -> tuple[bytes, ...]:
    """The specification's HKDF: two or three 32-byte outputs from a chaining key and input."""
    temp = _hmac(chaining_key, ikm)
    out1 = _hmac(temp, b"\x01")
    out2 = _hmac(temp, out1 + b"\x02")
    if outputs == 2:
        return out1, out2
    return out1, out2, _hmac(temp, out2 + b"\x03")


class KeyPair:
    """An X25519 key pair; ``public`` is the raw 32 bytes."""

    __slots__ = ("private", "public")

    def __init__(self, private: X25519PrivateKey | None = None):
        self.private = private or X25519PrivateKey.generate()
        self.public = self.private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    @classmethod
    def from_bytes(cls, raw: bytes) -> KeyPair:
        """The key pair of a raw 32-byte private key."""
        return cls(X25519PrivateKey.from_private_bytes(raw))

    def dh(self, public: bytes) -> bytes:
        """X25519 with a peer's raw public key; refuses the all-zero (low-order) result."""
        try:
            shared = self.private.exchange(X25519PublicKey.from_public_bytes(public))
        except ValueError as exc:  # cryptography refuses low-order points
            raise NoiseError("X25519 with a low-order public key") from exc
        return shared

    def __repr__(self) -> str:
        return f"KeyPair(public={self.public.hex()})"


class CipherState:
    """A key (or none) and a 64-bit nonce counter; ChaCha20-Poly1305 with a 96-bit nonce of
    four zero bytes and the counter little-endian, as the specification's ChaChaPoly says."""

    __slots__ = ("_aead", "n")

    def __init__(self, key: bytes | None = None):
        self._aead = ChaCha20Poly1305(key) if key is not None else None
        self.n = 0

    @property
    def has_key(self) -> bool:
        """True once a key is set."""
        return self._aead is not None

    @staticmethod
    def _nonce(n: int) -> bytes:
        return b"\x00\x00\x00\x00" + n.to_bytes(8, "little")

    def encrypt_with_ad(self, ad: bytes, plaintext: bytes) -> bytes:
        """Encrypt with the next nonce (plaintext unchanged while there is no key)."""
        if self._aead is None:
            return plaintext
        if self.n >= MAX_NONCE:
            raise NoiseError("nonce space exhausted; rekey by reconnecting")
        out = self._aead.encrypt(self._nonce(self.n), plaintext, ad)
        self.n += 1
        return out

    def decrypt_with_ad(self, ad: bytes, ciphertext: bytes) -> bytes:
        """Decrypt with the next nonce; NoiseError (nonce unchanged) on a bad tag."""
        if self._aead is None:
            return ciphertext
        if self.n >= MAX_NONCE:
            raise NoiseError("nonce space exhausted; rekey by reconnecting")
        try:
            out = self._aead.decrypt(self._nonce(self.n), ciphertext, ad)
        except InvalidTag as exc:
            raise NoiseError("authentication tag mismatch") from exc
        self.n += 1
        return out


class SymmetricState:
    """The chaining key ``ck``, the handshake hash ``h`` and a cipher state."""

    def __init__(self, protocol_name: bytes = PROTOCOL_NAME):
        if len(protocol_name) <= HASHLEN:
            self.h = protocol_name.ljust(HASHLEN, b"\x00")
        else:
            self.h = _hash(protocol_name)
        self.ck = self.h
        self.cipher = CipherState()

    def mix_key(self, ikm: bytes) -> None:
        """Fold DH output into the chaining key and take a new cipher key."""
        self.ck, temp_k = hkdf(self.ck, ikm, 2)
        self.cipher = CipherState(temp_k)

    def mix_hash(self, data: bytes) -> None:
        """h = HASH(h || data)."""
        self.h = _hash(self.h + data)

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        """Encrypt with h as associated data, then hash the ciphertext in."""
        ciphertext = self.cipher.encrypt_with_ad(self.h, plaintext)
        self.mix_hash(ciphertext)
        return ciphertext

    def decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        """Decrypt with h as associated data, then hash the ciphertext in."""
        plaintext = self.cipher.decrypt_with_ad(self.h, ciphertext)
        self.mix_hash(ciphertext)
        return plaintext

    def split(self) -> tuple[CipherState, CipherState]:
        """The two transport cipher states: (initiator to responder, responder to initiator)."""
        k1, k2 = hkdf(self.ck, b"", 2)
        return CipherState(k1), CipherState(k2)


class HandshakeState:
    """One side of an XX handshake.

    Call :meth:`write_message` and :meth:`read_message` alternately (the initiator writes
    first); after the third message :attr:`complete` is True, :attr:`remote_static` holds the
    peer's static public key and :meth:`split` gives ``(send, receive)`` cipher states for this
    side. ``prologue`` must be equal on both sides or the handshake fails.
    """

    def __init__(
        self,
        initiator: bool,
        static: KeyPair,
        prologue: bytes = b"",
        *,
        ephemeral: KeyPair | None = None,
    ):
        self.initiator = initiator
        self.s = static
        self.e: KeyPair | None = None
        self._fixed_e = ephemeral  # tests pin the ephemeral key for known-answer checks
        self.rs: bytes | None = None
        self.re: bytes | None = None
        self.sym = SymmetricState()
        self.sym.mix_hash(prologue)
        self._step = 0

    @property
    def complete(self) -> bool:
        """True after all three messages."""
        return self._step == len(XX)

    @property
    def remote_static(self) -> bytes | None:
        """The peer's static X25519 public key, once received."""
        return self.rs

    @property
    def handshake_hash(self) -> bytes:
        """The handshake hash h (a channel binding once complete)."""
        return self.sym.h

    def _my_turn(self) -> bool:
        return (self._step % 2 == 0) == self.initiator

    def _dh(self, token: str) -> bytes:
        # ee: e with re; es: initiator's e with responder's s; se: initiator's s with re.
        if token == "ee":
            return self.e.dh(self.re)
        if token == "es":
            return self.e.dh(self.rs) if self.initiator else self.s.dh(self.re)
        return self.s.dh(self.re) if self.initiator else self.e.dh(self.rs)

    def write_message(self, payload: bytes = b"") -> bytes:
        """The next handshake message carrying ``payload`` (encrypted once a key exists)."""
        if self.complete or not self._my_turn():
            raise NoiseError("handshake: not this side's turn to write")
        out = bytearray()
        for token in XX[self._step]:
            if token == "e":
                self.e = self._fixed_e or KeyPair()
                out += self.e.public
                self.sym.mix_hash(self.e.public)
            elif token == "s":
                out += self.sym.encrypt_and_hash(self.s.public)
            else:
                self.sym.mix_key(self._dh(token))
        out += self.sym.encrypt_and_hash(payload)
        if len(out) > MAX_MESSAGE:
            raise NoiseError(f"handshake message of {len(out)} bytes exceeds {MAX_MESSAGE}")
        self._step += 1
        return bytes(out)

    def read_message(self, message: bytes) -> bytes:
        """Consume the peer's next handshake message; returns its payload."""
        if self.complete or self._my_turn():
            raise NoiseError("handshake: not this side's turn to read")
        if len(message) > MAX_MESSAGE:
            raise NoiseError(f"handshake message of {len(message)} bytes exceeds {MAX_MESSAGE}")
        message = bytes(message)
        pos = 0
        for token in XX[self._step]:
            if token == "e":
                if len(message) - pos < DHLEN:
                    raise NoiseError("handshake message too short for an ephemeral key")
                self.re = message[pos : pos + DHLEN]
                pos += DHLEN
                self.sym.mix_hash(self.re)
            elif token == "s":
                size = DHLEN + (TAGLEN if self.sym.cipher.has_key else 0)
                if len(message) - pos < size:
                    raise NoiseError("handshake message too short for a static key")
                self.rs = self.sym.decrypt_and_hash(message[pos : pos + size])
                pos += size
            else:
                self.sym.mix_key(self._dh(token))
        rest = message[pos:]
        if self.sym.cipher.has_key and len(rest) < TAGLEN:
            raise NoiseError("handshake message too short for its payload tag")
        payload = self.sym.decrypt_and_hash(rest)
        self._step += 1
        return payload

    def split(self) -> tuple[CipherState, CipherState]:
        """``(send, receive)`` cipher states for this side, after the handshake."""
        if not self.complete:
            raise NoiseError("handshake: not complete")
        c1, c2 = self.sym.split()
        return (c1, c2) if self.initiator else (c2, c1)
