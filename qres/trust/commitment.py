"""Pedersen vector commitments to Q16.16 weight vectors on the Ed25519 group (libsodium).

``commit(w, r) = r*H + sum_i w_i*G_i`` where every generator is derived by hash-to-curve
(``crypto_core_ed25519_from_uniform`` of a domain-separated SHA-512 digest), so no discrete log
between any two of them is known and the commitment is binding; ``r`` (a uniformly random
scalar) makes it hiding. Q16.16 integers map to scalars mod L, a negative ``w`` as ``L - |w|``,
so commitments add like the integer vectors they commit to. Every point that arrives from
outside is checked with :func:`check_point` (canonical, on the curve, in the prime-order
subgroup, not the identity) before any arithmetic touches it.

The group operations are libsodium's, reached through PyNaCl (imported on first use so that
importing this module stays light).
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Sequence

from qres.kernel.errors import IntegrityError, QresError

#: Order of the prime-order subgroup of Ed25519.
L = 2**252 + 27742317777372353535851937790883648493
#: Bytes of an encoded point and of an encoded scalar.
POINT_BYTES = 32
SCALAR_BYTES = 32
#: Most weights one commitment covers (the update packet's bound too).
MAX_WEIGHTS = 1 << 16
#: Domain-separation tags of the generators: changing them changes every commitment.
DOMAIN_G = b"qres/pedersen/v1/G"
DOMAIN_H = b"qres/pedersen/v1/H"
#: The encoding of the identity element (the neutral point), never a valid commitment.
IDENTITY = bytes([1]) + bytes(31)

_GENERATORS: list[bytes] = []
_H: list[bytes] = []


def _nacl():
    import nacl.bindings as bindings

    return bindings


def hash_to_point(tag: bytes) -> bytes:
    """A point of the prime-order subgroup from ``tag`` by Elligator 2 (libsodium's
    ``from_uniform``, which clears the cofactor); nobody knows its discrete log."""
    digest = hashlib.sha512(tag).digest()[:32]
    return _nacl().crypto_core_ed25519_from_uniform(digest)


def generator_h() -> bytes:
    """The blinding generator H."""
    if not _H:
        _H.append(hash_to_point(DOMAIN_H))
    return _H[0]


def generators(d: int) -> list[bytes]:
    """The first ``d`` weight generators G_0..G_{d-1} (derived once, then cached)."""
    if not 0 <= d <= MAX_WEIGHTS:
        raise QresError(f"{d} weights: a commitment covers 0..{MAX_WEIGHTS}; use a smaller model")
    while len(_GENERATORS) < d:
        i = len(_GENERATORS)
        _GENERATORS.append(hash_to_point(DOMAIN_G + struct.pack("<I", i)))
    return _GENERATORS[:d]


def scalar_of(value: int) -> int:
    """The scalar mod L of a (possibly negative) integer: negatives become ``L - |value|``."""
    return value % L


def scalar_bytes(value: int) -> bytes:
    """The canonical 32-byte little-endian encoding of ``value mod L``."""
    return (value % L).to_bytes(SCALAR_BYTES, "little")


def parse_scalar(raw: bytes, where: str = "scalar") -> int:
    """A canonical scalar (< L) from 32 bytes, or :class:`IntegrityError`."""
    if len(raw) != SCALAR_BYTES:
        raise IntegrityError(f"{where}: {len(raw)} bytes, a scalar has {SCALAR_BYTES}")
    value = int.from_bytes(raw, "little")
    if value >= L:
        raise IntegrityError(f"{where}: not a canonical scalar (>= L); the sender must reduce it")
    return value


def random_scalar(randbytes=os.urandom) -> int:
    """A uniformly random non-zero scalar (64 random bytes reduced mod L: bias below 2^-250)."""
    while True:
        value = int.from_bytes(randbytes(64), "little") % L
        if value:
            return value


def is_valid_point(point: bytes) -> bool:
    """True when ``point`` is a canonical encoding of a non-identity point of the prime-order
    subgroup (libsodium's check rejects small-order points and the other cosets)."""
    return (
        isinstance(point, bytes)
        and len(point) == POINT_BYTES
        and bool(_nacl().crypto_core_ed25519_is_valid_point(point))
    )


def check_point(point: bytes, where: str = "point") -> bytes:
    """Return ``point`` if valid (see :func:`is_valid_point`), else raise IntegrityError."""
    if not is_valid_point(point):
        raise IntegrityError(
            f"{where}: not a point of the Ed25519 prime-order subgroup; reject the message"
        )
    return point


def add(p: bytes, q: bytes) -> bytes:
    """p + q (either may be the identity)."""
    if p == IDENTITY:
        return q
    if q == IDENTITY:
        return p
    return _nacl().crypto_core_ed25519_add(p, q)


def sub(p: bytes, q: bytes) -> bytes:
    """p - q (either may be the identity)."""
    if q == IDENTITY:
        return p
    return _nacl().crypto_core_ed25519_sub(p, q)


def mul(scalar: int, point: bytes) -> bytes:
    """scalar * point for a point of the prime-order subgroup (a zero scalar gives the
    identity, which libsodium's multiplication refuses to return)."""
    s = scalar % L
    if s == 0 or point == IDENTITY:
        return IDENTITY
    return _nacl().crypto_scalarmult_ed25519_noclamp(s.to_bytes(SCALAR_BYTES, "little"), point)


def weighted_sum(values: Sequence[int], points: Sequence[bytes]) -> bytes:
    """sum_i values[i] * points[i]; negative values are subtracted as ``|v| * P`` (the same
    point as ``(L - |v|) * P``), zeros skipped."""
    total = IDENTITY
    for value, point in zip(values, points, strict=True):
        v = int(value)
        if v > 0:
            total = add(total, mul(v, point))
        elif v < 0:
            total = sub(total, mul(-v, point))
    return total


def commit_vector(values: Sequence[int]) -> bytes:
    """sum_i values[i] * G_i: the unblinded part of a commitment (may be the identity)."""
    return weighted_sum(values, generators(len(values)))


def commit(weights: Sequence[int], blinding: int) -> bytes:
    """The Pedersen commitment ``blinding*H + sum_i weights[i]*G_i``."""
    return add(mul(blinding, generator_h()), commit_vector(weights))


def verify_opening(commitment: bytes, weights: Sequence[int], blinding: int) -> bool:
    """True when ``(weights, blinding)`` opens ``commitment`` (a valid point)."""
    if not is_valid_point(commitment) or len(weights) > MAX_WEIGHTS:
        return False
    return commit(weights, blinding) == commitment


def commitment_hash(point: bytes) -> bytes:
    """SHA-256 of a commitment with a domain tag: what transcripts bind as "previous"."""
    return hashlib.sha256(b"qres/commitment-hash/v1" + point).digest()


def _batch_weights(count: int, randbytes) -> list[int]:
    """Random non-zero 128-bit multipliers for a batch check (a cheat survives with
    probability 2^-128 per check)."""
    out = []
    for _ in range(count):
        rho = int.from_bytes(randbytes(16), "little")
        out.append(rho or 1)
    return out


def verify_openings(
    items: Sequence[tuple[bytes, Sequence[int], int]], randbytes=os.urandom
) -> list[bool]:
    """Check many openings ``(commitment, weights, blinding)`` at once.

    One random linear combination of all of them costs ``d + k + 1`` scalar multiplications
    instead of ``k(d + 1)``; when it fails, each opening is checked alone to name the bad ones.
    """
    result = [is_valid_point(c) and len(w) <= MAX_WEIGHTS for c, w, _ in items]
    live = [i for i, ok in enumerate(result) if ok]
    if not live:
        return result
    rhos = _batch_weights(len(live), randbytes)
    d = max(len(items[i][1]) for i in live)
    coeffs = [0] * d
    blinding = 0
    commitments = IDENTITY
    for rho, i in zip(rhos, live, strict=True):
        c, w, r = items[i]
        for j, v in enumerate(w):
            coeffs[j] += rho * int(v)
        blinding += rho * r
        commitments = add(commitments, mul(rho, c))
    combined = add(mul(blinding, generator_h()), commit_vector([v % L for v in coeffs]))
    if combined == commitments:
        return result
    for i in live:
        c, w, r = items[i]
        result[i] = verify_opening(c, w, r)
    return result
