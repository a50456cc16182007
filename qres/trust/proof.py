"""Non-interactive proofs that a weight commitment moved by exactly the published update.

A node holds a committed model ``C = r*H + sum w_i*G_i``. Publishing an update ``u`` and a new
commitment ``C'`` to ``w + u`` with fresh blinding ``r'``, it proves that
``P = C' - C - sum u_i*G_i`` equals ``x*H`` for an ``x`` it knows (``x = r' - r``): a Schnorr
proof of knowledge of a discrete log on H, made non-interactive by Fiat-Shamir over a
transcript that binds the sender's DID, the round, the hash of the previous commitment, the
update and the new commitment. Because no discrete log between H and the G_i is known, a node
that can answer for ``P`` must have ``C' - C = commit(u)`` plus blinding, i.e. the committed
weights moved by exactly ``u``. The byte layout and the verifier's steps are in docs/trust.md.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Sequence

import attrs

from qres.kernel.errors import IntegrityError
from qres.trust import commitment as cm

#: Bytes of a proof: the nonce point R and the response scalar s.
PROOF_BYTES = 64
DOMAIN_CHALLENGE = b"qres/transition-proof/v1"
DOMAIN_NONCE = b"qres/transition-nonce/v1"


def update_digest(update: Sequence[int]) -> bytes:
    """SHA-256 of the update as int32 little-endian (the bytes the packet carries)."""
    if len(update) > cm.MAX_WEIGHTS:
        raise IntegrityError(f"update of {len(update)} weights: at most {cm.MAX_WEIGHTS}")
    return hashlib.sha256(struct.pack(f"<{len(update)}i", *update)).digest()


def transcript(
    did: str, round_: int, prev_hash: bytes, update: Sequence[int], new_commitment: bytes
) -> bytes:
    """The statement's bytes hashed into the challenge (everything the proof is bound to)."""
    did_bytes = did.encode("utf-8")
    if len(did_bytes) > 255:
        raise IntegrityError(f"DID of {len(did_bytes)} bytes: at most 255")
    if not 0 <= round_ < 1 << 64:
        raise IntegrityError(f"round {round_}: must be in [0, 2^64)")
    return b"".join(
        [
            DOMAIN_CHALLENGE,
            bytes([len(did_bytes)]),
            did_bytes,
            struct.pack("<Q", round_),
            prev_hash,
            struct.pack("<I", len(update)),
            update_digest(update),
            new_commitment,
        ]
    )


def _challenge(prefix: bytes, nonce_point: bytes) -> int:
    return int.from_bytes(hashlib.sha512(prefix + nonce_point).digest(), "little") % cm.L


def statement_point(base: bytes, update: Sequence[int], new_commitment: bytes) -> bytes:
    """P = new - base - commit_vector(update): equals x*H exactly when the transition is honest."""
    return cm.sub(cm.sub(new_commitment, base), cm.commit_vector(update))


def prove(
    did: str,
    round_: int,
    base: bytes,
    update: Sequence[int],
    new_commitment: bytes,
    blinding_difference: int,
) -> bytes:
    """The 64-byte proof ``R || s`` for the transition ``base -> new_commitment`` by ``update``.

    The nonce k is derived from the secret and the transcript (as in RFC 6979), so the proof is
    deterministic and a nonce is never reused across different statements.
    """
    x = blinding_difference % cm.L
    prefix = transcript(did, round_, cm.commitment_hash(base), update, new_commitment)
    k_seed = hashlib.sha512(DOMAIN_NONCE + cm.scalar_bytes(x) + prefix).digest()
    k = int.from_bytes(k_seed, "little") % cm.L or 1
    nonce_point = cm.mul(k, cm.generator_h())
    e = _challenge(prefix, nonce_point)
    s = (k + e * x) % cm.L
    return nonce_point + cm.scalar_bytes(s)


def parse_proof(raw: bytes) -> tuple[bytes, int]:
    """(R, s) from a proof's bytes; IntegrityError when the length, point or scalar is bad."""
    if not isinstance(raw, bytes) or len(raw) != PROOF_BYTES:
        size = len(raw) if isinstance(raw, (bytes, bytearray)) else "?"
        raise IntegrityError(f"proof: {size} bytes, a proof has {PROOF_BYTES}")
    nonce_point = cm.check_point(raw[:32], "proof: R")
    return nonce_point, cm.parse_scalar(raw[32:], "proof: s")


def _parse_statement(
    did: str, round_: int, base: bytes, update: Sequence[int], new: bytes, proof: bytes
) -> tuple[bytes, int, int] | None:
    """``(R, s, e)`` of a proof with its points checked and its challenge computed, or None
    when anything in it is malformed (which verifies as False)."""
    try:
        nonce_point, s = parse_proof(proof)
        cm.check_point(base, "base commitment")
        cm.check_point(new, "new commitment")
        prefix = transcript(did, round_, cm.commitment_hash(base), update, new)
    except IntegrityError:
        return None
    return nonce_point, s, _challenge(prefix, nonce_point)


def verify(
    did: str,
    round_: int,
    base: bytes,
    update: Sequence[int],
    new_commitment: bytes,
    proof: bytes,
) -> bool:
    """True when ``proof`` shows ``new_commitment = base + commit(update)`` (up to blinding on
    H) for this DID and round. Invalid points, scalars or lengths verify as False."""
    parsed = _parse_statement(did, round_, base, update, new_commitment, proof)
    if parsed is None:
        return False
    nonce_point, s, e = parsed
    target = statement_point(base, update, new_commitment)
    return cm.mul(s, cm.generator_h()) == cm.add(nonce_point, cm.mul(e, target))


@attrs.frozen
class CommittedModel:
    """A node's committed weights: the Q16.16 integers, the blinding and the commitment.

    The weights are exact integers (not saturated), so that commitments add like vectors.
    """

    weights: tuple[int, ...]
    blinding: int
    commitment: bytes

    @classmethod
    def create(cls, weights: Sequence[int], randbytes=os.urandom) -> CommittedModel:
        """Commit to ``weights`` with fresh random blinding."""
        w = tuple(int(v) for v in weights)
        r = cm.random_scalar(randbytes)
        return cls(w, r, cm.commit(w, r))

    def advance(
        self, did: str, round_: int, update: Sequence[int], randbytes=os.urandom
    ) -> tuple[CommittedModel, bytes]:
        """The model moved by ``update`` (fresh blinding) and the proof of the transition."""
        u = tuple(int(v) for v in update)
        if len(u) != len(self.weights):
            raise IntegrityError(f"update of {len(u)} weights for a model of {len(self.weights)}")
        weights = tuple(a + b for a, b in zip(self.weights, u, strict=True))
        r = cm.random_scalar(randbytes)
        # C' = C + commit_vector(u) + (r' - r)H: one pass over u instead of a full re-commit.
        delta = (r - self.blinding) % cm.L
        new = cm.add(cm.add(self.commitment, cm.commit_vector(u)), cm.mul(delta, cm.generator_h()))
        proof = prove(did, round_, self.commitment, u, new, delta)
        return CommittedModel(weights, r, new), proof


def verify_many(
    statements: Sequence[tuple[str, int, bytes, Sequence[int], bytes, bytes]],
    randbytes=os.urandom,
) -> list[bool]:
    """Verify many proofs ``(did, round, base, update, new_commitment, proof)`` at once.

    Each proof says ``s*H = R + e*(C' - C - sum u_i G_i)``; a random linear combination with
    128-bit multipliers ``rho`` checks all of them with one sum over the weights:
    ``(sum rho s) H = sum rho R + sum rho e (C' - C) - sum_i (sum rho e u_i) G_i``, i.e.
    ``d + 2k + 1`` scalar multiplications instead of ``k(d + 3)``. A batch that fails is
    verified proof by proof, so the result names exactly the bad ones.
    """
    parsed = [_parse_statement(*statement) for statement in statements]
    result = [p is not None for p in parsed]
    live = [i for i, p in enumerate(parsed) if p is not None]
    if not live:
        return result
    rhos = cm._batch_weights(len(live), randbytes)
    d = max(len(statements[i][3]) for i in live)
    coeffs = [0] * d
    s_total = 0
    right = cm.IDENTITY
    for rho, i in zip(rhos, live, strict=True):
        nonce_point, s, e = parsed[i]
        _, _, base, update, new, _ = statements[i]
        s_total += rho * s
        re = rho * e % cm.L
        for j, u in enumerate(update):
            coeffs[j] += re * int(u)
        right = cm.add(right, cm.mul(rho, nonce_point))
        right = cm.add(right, cm.mul(re, cm.sub(new, base)))
    right = cm.sub(right, cm.commit_vector([c % cm.L for c in coeffs]))
    if cm.mul(s_total, cm.generator_h()) == right:
        return result
    return [result[i] and verify(*statements[i]) for i in range(len(statements))]
