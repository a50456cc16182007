"""The verifiable round step: what a node aggregated between two of its packets.

Between its packet of round ``m`` and its next packet (round ``n``), a node applies one
aggregate per round it was awake: its own update and the signed packets it received,
combined by the swarm's robust rule. Aggregation is bit-exact and order-free, so the step can
be recomputed by anyone holding the same packets: the node commits to a :class:`RoundStep`
record (the opening of its previous base, and per round its own update and the hashes of the
packets it aggregated) by putting the record's :meth:`RoundStep.digest` into the signed
packet of round ``n`` (``UpdatePacket.step``). An auditor (:func:`check_step`) fetches the
record, the previous packet and the input packets (each signed by its own sender), replays
the aggregates (:func:`replay`) and compares the result with the opened base of round ``n``.
A mismatch is attributable: the node signed both packets and the digest of the record.

Layout (docs/trust.md section 14), little-endian::

    "QRST" u8 version u8 flags u16 reserved u32 total
    sender (32) u64 round previous (32) blinding (32) u32 d  start weights (d x i32)
    u16 k, then k sub-steps:
        u64 round  u8 flags (bit 0: weights passed to the rule)  u16 m
        u32 own weight  own update (d x i32)  m x (packet hash (32) u32 weight)

A record whose ``previous`` is 32 zero bytes starts from the node's genesis model (no earlier
packet): its blinding is zero and its start weights are the genesis model.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Sequence
from typing import Any

import attrs

from qres.trust import commitment as cm
from qres.trust import packet as pk
from qres.trust.identity import PUBLIC_KEY_BYTES, SIGNATURE_BYTES, verify_signature

MAGIC = b"QRST"
VERSION = 1
#: Most rounds one record may cover (a node sends at least this often, or starts again from
#: a fresh packet) and most packets one round's aggregate may take.
MAX_SUBSTEPS = 64
MAX_INPUTS = 1024
#: Largest record a reader accepts by default (checked before anything is parsed).
MAX_STEP_BYTES = 1 << 24
#: ``previous`` of a record that starts from the genesis model.
NO_PREVIOUS = bytes(32)
FLAG_WEIGHTED = 0x01
_HEAD = struct.Struct("<4sBBHI32sQ32s32sI")
_SUB = struct.Struct("<QBHI")
_INPUT = struct.Struct("<32sI")
_DOMAIN = b"qres/round-step/v1"


class StepError(pk.PacketError):
    """A round-step record could not be decoded (always ``Reason.MALFORMED`` or a size)."""


def _ints(values: Any) -> tuple[int, ...]:
    if hasattr(values, "tolist"):
        values = values.tolist()
    return tuple(int(v) for v in values)


@attrs.frozen
class SubStep:
    """One round's aggregate: the node's own update (row 0) and the packets it took, each
    with the Q16.16 weight (reputation) the rule received when ``weighted``."""

    round: int
    own: tuple[int, ...] = attrs.field(converter=_ints)
    inputs: tuple[bytes, ...] = attrs.field(converter=tuple, default=())
    weights: tuple[int, ...] = attrs.field(converter=_ints, default=())
    own_weight: int = 0
    weighted: bool = False


@attrs.frozen
class RoundStep:
    """The record a node's packet of ``round`` commits to (see the module docstring)."""

    sender: bytes
    round: int
    previous: bytes
    blinding: bytes
    start: tuple[int, ...] = attrs.field(converter=_ints)
    substeps: tuple[SubStep, ...] = attrs.field(converter=tuple)

    def encode(self) -> bytes:
        """The canonical bytes (what the digest covers)."""
        d = len(self.start)
        if not 1 <= d <= pk.MAX_WEIGHTS or not 1 <= len(self.substeps) <= MAX_SUBSTEPS:
            raise StepError(pk.Reason.MALFORMED, "round step: 1..65536 weights, 1..64 rounds")
        if len(self.sender) != PUBLIC_KEY_BYTES or len(self.previous) != 32:
            raise StepError(pk.Reason.MALFORMED, "round step: sender and previous are 32 bytes")
        parts = [encode_substep(sub, d) for sub in self.substeps]
        try:
            body = struct.pack(f"<{d}i", *self.start) + struct.pack("<H", len(self.substeps))
        except struct.error as exc:
            raise StepError(pk.Reason.MALFORMED, f"round step: field out of range ({exc})") from exc
        tail = body + b"".join(parts)
        total = _HEAD.size + len(tail)
        head = _HEAD.pack(
            MAGIC, VERSION, 0, 0, total, self.sender, self.round, self.previous, self.blinding, d
        )
        return head + tail

    def digest(self) -> bytes:
        """What the packet of :attr:`round` carries as its ``step``."""
        return step_digest(self.encode())


def encode_substep(sub: SubStep, d: int) -> bytes:
    """One sub-step in the record's layout (``d`` weights)."""
    m = len(sub.inputs)
    if len(sub.own) != d or m > MAX_INPUTS or len(sub.weights) != m:
        raise StepError(pk.Reason.MALFORMED, "round step: sub-step shape")
    if not sub.weighted and (sub.own_weight or any(sub.weights)):
        raise StepError(pk.Reason.MALFORMED, "round step: weights when unweighted")
    if any(len(h) != 32 for h in sub.inputs):
        raise StepError(pk.Reason.MALFORMED, "round step: a packet hash is not 32 bytes")
    flags = FLAG_WEIGHTED if sub.weighted else 0
    try:
        return (
            _SUB.pack(sub.round, flags, m, sub.own_weight)
            + struct.pack(f"<{d}i", *sub.own)
            + b"".join(_INPUT.pack(h, w) for h, w in zip(sub.inputs, sub.weights, strict=True))
        )
    except struct.error as exc:
        raise StepError(pk.Reason.MALFORMED, f"round step: field out of range ({exc})") from exc


def decode_substep(data: bytes, d: int) -> SubStep:
    """Parse exactly one sub-step of ``d`` weights (:func:`encode_substep`'s bytes)."""
    cursor = _Cursor(bytes(data), 0)
    step = _substep_at(cursor, d)
    if cursor.at != len(data):
        raise StepError(pk.Reason.MALFORMED, "round step: bytes after the sub-step")
    return step


class _Cursor:
    """A read offset into a record: each span is checked against the record's length before
    it is read, so a lying count fails as truncated instead of reading past the end."""

    def __init__(self, data: bytes, at: int):
        self.data, self.at = data, at

    def need(self, size: int) -> int:
        """The offset of the next ``size`` bytes, which must lie inside the record."""
        if self.at + size > len(self.data):
            raise StepError(pk.Reason.MALFORMED, "round step: truncated")
        self.at += size
        return self.at - size


def _substep_at(cursor: _Cursor, d: int) -> SubStep:
    """The sub-step at the cursor, which moves past it; every count checked first."""
    data, need = cursor.data, cursor.need
    r, sub_flags, m, own_weight = _SUB.unpack_from(data, need(_SUB.size))
    if sub_flags & ~FLAG_WEIGHTED or m > MAX_INPUTS:
        raise StepError(pk.Reason.MALFORMED, "round step: bad sub-step flags or inputs")
    own = struct.unpack_from(f"<{d}i", data, need(4 * d))
    pairs = [_INPUT.unpack_from(data, need(_INPUT.size)) for _ in range(m)]
    weighted = bool(sub_flags & FLAG_WEIGHTED)
    if not weighted and (own_weight or any(w for _, w in pairs)):
        raise StepError(pk.Reason.MALFORMED, "round step: weights when unweighted")
    return SubStep(r, own, [h for h, _ in pairs], [w for _, w in pairs], own_weight, weighted)


def record_bytes(d: int, inputs: Sequence[int]) -> int:
    """Bytes of a record of ``d`` weights whose sub-steps took ``inputs[k]`` packets each."""
    return _HEAD.size + 4 * d + 2 + sum(_SUB.size + 4 * d + _INPUT.size * m for m in inputs)


def step_digest(data: bytes) -> bytes:
    """SHA-256 of an encoded record with its domain tag."""
    return hashlib.sha256(_DOMAIN + bytes(data)).digest()


def decode(data: bytes, max_bytes: int = MAX_STEP_BYTES) -> RoundStep:
    """Parse a record, every count and length checked before use; StepError on any fault."""
    if len(data) > max_bytes:  # before any copy is made
        raise StepError(pk.Reason.OVERSIZE, f"round step of {len(data)} bytes: limit {max_bytes}")
    data = bytes(data)
    if len(data) < _HEAD.size + 4 + 2:
        raise StepError(pk.Reason.MALFORMED, f"round step of {len(data)} bytes: too short")
    magic, version, flags, reserved, total, sender, round_, previous, blinding, d = (
        _HEAD.unpack_from(data)
    )
    if magic != MAGIC:
        raise StepError(pk.Reason.MALFORMED, "round step: bad magic")
    if version != VERSION:
        raise StepError(pk.Reason.BAD_VERSION, f"round step: version {version}, expected 1")
    if flags or reserved or total != len(data) or not 1 <= d <= pk.MAX_WEIGHTS:
        raise StepError(pk.Reason.MALFORMED, "round step: bad flags, length or weight count")
    cursor = _Cursor(data, _HEAD.size)
    start = struct.unpack_from(f"<{d}i", data, cursor.need(4 * d))
    (k,) = struct.unpack_from("<H", data, cursor.need(2))
    if not 1 <= k <= MAX_SUBSTEPS:
        raise StepError(pk.Reason.MALFORMED, f"round step: {k} rounds, must be 1..64")
    subs = [_substep_at(cursor, d) for _ in range(k)]
    if cursor.at != len(data):
        raise StepError(pk.Reason.MALFORMED, "round step: bytes after the last sub-step")
    return RoundStep(sender, round_, previous, blinding, start, subs)


def replay(start: Any, steps: Any, aggregate: Callable[[Any, Any], Any]) -> Any:
    """The weights a node holds after ``steps`` from ``start`` (int32 ``(d,)``).

    ``steps`` yields ``(own, inputs, weights)`` per sub-step: the node's own update
    (``(d,)``), the ``(m, d)`` updates of the packets it took, and the Q16.16 weights the rule
    received (own first) or None. With no inputs the node applies its own update; else
    ``aggregate(rows, weights)`` combines them (own update as row 0). Each aggregate is added
    with Q16.16 saturation, as the node applied it. The simulator and :func:`check_step`
    share this one rule.
    """
    import numpy as np

    from qres.fixed.q16 import sat_add

    w = np.asarray(start, np.int32).copy()
    for own, inputs, weights in steps:
        own = np.asarray(own, np.int32)
        inputs = np.asarray(inputs, np.int32).reshape(-1, own.shape[0])
        if inputs.shape[0] == 0:
            step = own
        else:
            rows = np.concatenate([own[None, :], inputs])
            step = np.asarray(aggregate(rows, weights), np.int32)
        w = sat_add(w, step)
    return w


def _triples(step: RoundStep, packets: dict) -> Any:
    """The record's sub-steps as :func:`replay` takes them."""
    import numpy as np

    for sub in step.substeps:
        rows = np.asarray([packets[h].update for h in sub.inputs], np.int32)
        weights = np.asarray((sub.own_weight, *sub.weights), np.int64) if sub.weighted else None
        yield sub.own, rows, weights


@attrs.frozen
class StepEvidence:
    """What an audited node hands over with its audit response for the round step: the
    record, its previous packet (None from genesis) and every input packet (encoded).

    Encoded (:meth:`encode`, :func:`decode_evidence`; docs/trust.md section 14)::

        u32 record length || record || u32 previous length (0: none) || previous
        || u32 count || count x (u32 length || input packet)
    """

    record: bytes
    previous: bytes | None = None
    inputs: Sequence[bytes] = attrs.field(converter=tuple, default=())

    def encode(self) -> bytes:
        """The canonical bytes (what an audit answer or a recording carries)."""
        previous = b"" if self.previous is None else bytes(self.previous)
        if len(self.record) > MAX_STEP_BYTES or len(previous) > pk.MAX_PACKET_BYTES:
            raise StepError(pk.Reason.OVERSIZE, "step evidence: record or packet too large")
        if len(self.inputs) > MAX_EVIDENCE_INPUTS:
            raise StepError(pk.Reason.OVERSIZE, "step evidence: too many input packets")
        parts = [_LEN.pack(len(self.record)), bytes(self.record), _LEN.pack(len(previous))]
        parts += [previous, _LEN.pack(len(self.inputs))]
        for data in self.inputs:
            if not 0 < len(data) <= pk.MAX_PACKET_BYTES:
                raise StepError(pk.Reason.OVERSIZE, "step evidence: input packet size")
            parts += [_LEN.pack(len(data)), bytes(data)]
        out = b"".join(parts)
        if len(out) > MAX_EVIDENCE_BYTES:
            raise StepError(pk.Reason.OVERSIZE, f"step evidence of {len(out)} bytes: too large")
        return out


#: Most input packets one piece of step evidence may carry, and its largest size.
MAX_EVIDENCE_INPUTS = MAX_SUBSTEPS * MAX_INPUTS
MAX_EVIDENCE_BYTES = pk.MAX_STEP_EVIDENCE_BYTES
_LEN = struct.Struct("<I")


def decode_evidence(data: bytes, max_bytes: int = MAX_EVIDENCE_BYTES) -> StepEvidence:
    """Parse :meth:`StepEvidence.encode`'s bytes; every length is checked against its limit
    and what remains before anything is copied; StepError on any fault. The record and the
    packets are not decoded here (:func:`check_step` does, and says which one fails)."""
    if len(data) > min(max_bytes, MAX_EVIDENCE_BYTES):  # before any copy is made
        raise StepError(pk.Reason.OVERSIZE, f"step evidence of {len(data)} bytes: too large")
    view = memoryview(data)
    at = 0

    def take(limit: int, what: str) -> bytes:
        nonlocal at
        if at + _LEN.size > len(view):
            raise StepError(pk.Reason.MALFORMED, f"step evidence: truncated before {what}")
        (size,) = _LEN.unpack_from(view, at)
        at += _LEN.size
        if size > limit or at + size > len(view):
            raise StepError(pk.Reason.MALFORMED, f"step evidence: bad {what} length {size}")
        at += size
        return bytes(view[at - size : at])

    record = take(MAX_STEP_BYTES, "record")
    previous = take(pk.MAX_PACKET_BYTES, "previous packet")
    if at + _LEN.size > len(view):
        raise StepError(pk.Reason.MALFORMED, "step evidence: truncated before the input count")
    (count,) = _LEN.unpack_from(view, at)
    at += _LEN.size
    # each input takes at least its length field and one byte: a count the bytes cannot hold
    # is refused before any list is built
    if count > MAX_EVIDENCE_INPUTS or count * (_LEN.size + 1) > len(view) - at:
        raise StepError(pk.Reason.MALFORMED, f"step evidence: {count} input packets")
    inputs = []
    for _ in range(count):
        packet = take(pk.MAX_PACKET_BYTES, "input packet")
        if not packet:
            raise StepError(pk.Reason.MALFORMED, "step evidence: an empty input packet")
        inputs.append(packet)
    if at != len(view):
        raise StepError(pk.Reason.MALFORMED, "step evidence: bytes after the last input packet")
    return StepEvidence(record, previous or None, inputs)


def check_step(
    packet: pk.UpdatePacket,
    opened: Sequence[int],
    evidence: StepEvidence | None,
    aggregate: Callable[[Any, Any], Any],
    *,
    genesis: Sequence[int] | None = None,
    earlier: pk.UpdatePacket | None = None,
) -> Any:
    """Audit the step that produced ``packet``'s base; returns an
    :class:`qres.trust.audit.AuditResult` (``bad-step``, ``wrong-step`` or ``ok``).

    ``packet`` is signed and ``opened`` opens its base (run
    :func:`qres.trust.audit.check_response` first). ``aggregate(rows, weights)`` is the
    swarm's rule (e.g. :func:`qres.robust.combine.robust_aggregate` with the profile's
    aggregator). ``genesis``: the public starting model, when the auditor knows it;
    ``earlier``: any signed packet of the same sender from an earlier round, which makes a
    claim of genesis a fault. Own updates after the first sub-step were never sent: an
    auditor holding the node's data re-runs them (:attr:`SubStep.own`).
    """
    from qres.trust.audit import AuditResult, Finding

    did, r = packet.did, packet.round

    def fail(detail: str, finding=Finding.BAD_STEP):
        return AuditResult(finding, did, r, detail)

    if packet.step == pk.GENESIS_STEP:
        return _check_genesis(packet, opened, genesis, earlier, fail)
    if evidence is None:
        return fail("the node did not hand over its round step", Finding.NO_RESPONSE)
    if step_digest(evidence.record) != packet.step:
        return fail("the round step record does not match the packet's digest")
    try:
        step = decode(evidence.record)
    except pk.PacketError as exc:
        return fail(str(exc))
    problem = _check_start(packet, step, evidence.previous, genesis, earlier)
    if problem:
        return fail(problem)
    inputs, problem = _check_inputs(packet, step, evidence.inputs)
    if problem:
        return fail(problem)
    import numpy as np

    try:
        final = replay(step.start, _triples(step, inputs), aggregate)
    except Exception as exc:  # the rule refused the rows the node claims it aggregated
        return fail(f"the swarm's rule refuses the step's rows ({exc})")
    if final.tolist() != list(opened):
        wrong = int(np.count_nonzero(final != np.asarray(opened, np.int32)))
        return fail(
            f"the base is not the replayed aggregate: {wrong} of {final.shape[0]} weights differ",
            Finding.WRONG_STEP,
        )
    return AuditResult(Finding.OK, did, r)


def _check_genesis(packet, opened, genesis, earlier, fail):
    from qres.trust.audit import AuditResult, Finding

    if earlier is not None and earlier.sender == packet.sender and earlier.round < packet.round:
        if verify_signature(earlier.sender, earlier.signature, earlier.body()):
            return fail(f"claims a genesis base after its own packet of round {earlier.round}")
    if genesis is not None and list(opened) != list(genesis):
        return fail("claims a genesis base that is not the genesis model", Finding.WRONG_STEP)
    return AuditResult(Finding.OK, packet.did, packet.round)


def _check_start(packet, step: RoundStep, previous: bytes | None, genesis, earlier) -> str:
    """Where the chain starts: the record names this packet, and its start opens the previous
    packet's base (or is the genesis model). Returns the problem, '' if none."""
    if step.sender != packet.sender or step.round != packet.round:
        return "the round step names another sender or round"
    if len(step.start) != len(packet.update):
        return "the round step's weights differ in number"
    rounds = [s.round for s in step.substeps]
    if any(b <= a for a, b in zip(rounds, rounds[1:], strict=False)) or rounds[-1] >= step.round:
        return "the round step's rounds are not increasing and before the packet's"
    if step.previous == NO_PREVIOUS:
        return _genesis_start(packet, step, genesis, earlier)
    if previous is None or pk.packet_hash(previous) != step.previous:
        return "the previous packet was not handed over or has another hash"
    try:
        prev = pk.decode(previous)
    except pk.PacketError as exc:
        return f"the previous packet: {exc}"
    if prev.sender != packet.sender or not verify_signature(
        prev.sender, prev.signature, bytes(previous)[:-SIGNATURE_BYTES]
    ):
        return "the previous packet is not the node's own"
    if prev.round != rounds[0] or prev.round >= packet.round:
        return "the first sub-step is not the previous packet's round"
    if step.substeps[0].own != prev.update:
        return "the first sub-step's own update is not the previous packet's update"
    try:
        blinding = cm.parse_scalar(step.blinding, "round step: blinding")
    except pk.IntegrityError as exc:
        return str(exc)
    if not cm.verify_opening(prev.base, step.start, blinding):
        return "the start weights do not open the previous packet's base"
    return ""


def _genesis_start(packet, step: RoundStep, genesis, earlier) -> str:
    """A chain from the genesis model: no blinding, no earlier packet of the node known, the
    genesis model as its start when the auditor knows it."""
    if any(step.blinding):
        return "a genesis round step carries a blinding"
    first = step.substeps[0].round
    if earlier is not None and earlier.sender == packet.sender and earlier.round < first:
        if verify_signature(earlier.sender, earlier.signature, earlier.body()):
            return f"starts from genesis after its own packet of round {earlier.round}"
    if genesis is not None and list(step.start) != list(genesis):
        return "starts from a model that is not the genesis model"
    return ""


def _check_inputs(packet, step: RoundStep, encoded: Sequence[bytes]):
    """Every input the record names, handed over, signed by its sender, no later than its
    sub-step and with the model's weight count. Returns ``(packets by hash, problem)``."""
    by_hash: dict[bytes, pk.UpdatePacket] = {}
    for data in encoded:
        if len(by_hash) >= MAX_SUBSTEPS * MAX_INPUTS:
            break
        try:
            by_hash[pk.packet_hash(data)] = (pk.decode(data), bytes(data))
        except pk.PacketError:
            continue
    out: dict[bytes, pk.UpdatePacket] = {}
    d = len(packet.update)
    for sub in step.substeps:
        if len(set(sub.inputs)) != len(sub.inputs):
            return out, f"round {sub.round}: a packet aggregated twice"
        for h in sub.inputs:
            if h in out:
                got = out[h]
            elif h in by_hash:
                got, data = by_hash[h]
                if not verify_signature(got.sender, got.signature, data[:-SIGNATURE_BYTES]):
                    return out, f"round {sub.round}: an input packet's signature fails"
                out[h] = got
            else:
                return out, f"round {sub.round}: input packet {h.hex()[:16]} not handed over"
            if got.round > sub.round or len(got.update) != d:
                return out, f"round {sub.round}: an input packet is from a later round or size"
    return out, ""
