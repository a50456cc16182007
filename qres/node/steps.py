"""A node's open round-step chain: what it aggregated since its last packet (docs/trust.md
section 14), kept in its state so that an audit can be answered after a restart.

The chain starts at the node's last packet (the opening of that packet's base: its blinding
and weights) or, before its first packet, at the genesis model. Each round the node closes
awake with an update of its own, it adds one sub-step: its own update (the one its packet of
that round carries), the signed packets it aggregated and the weights the rule received.
Signing the next packet closes the chain: the record (:class:`qres.trust.roundstep.RoundStep`)
goes into the packet as its digest, and the record, the previous packet and the input
packets go into the packet's audit answer (:class:`qres.trust.roundstep.StepEvidence`); the
next chain starts at the new packet. Every change of the node's weights is such a sub-step,
so replaying the chain gives exactly the weights it commits to next.
"""

from __future__ import annotations

import struct
from typing import Any

import attrs

from qres.trust import packet as pk
from qres.trust import roundstep as rs

_LEN = struct.Struct("<I")


def pack_packets(packets: list[bytes]) -> bytes:
    """Packets as stored with a sub-step: ``u32 count || count x (u32 length || packet)``."""
    return _LEN.pack(len(packets)) + b"".join(_LEN.pack(len(p)) + bytes(p) for p in packets)


def unpack_packets(data: bytes) -> list[bytes]:
    """The packets of :func:`pack_packets` (its own stored bytes; lengths still checked)."""
    if len(data) < _LEN.size:
        raise pk.PacketError(pk.Reason.MALFORMED, "stored step inputs: truncated")
    (count,) = _LEN.unpack_from(data)
    at, out = _LEN.size, []
    for _ in range(min(count, rs.MAX_INPUTS)):
        if at + _LEN.size > len(data):
            raise pk.PacketError(pk.Reason.MALFORMED, "stored step inputs: truncated")
        (size,) = _LEN.unpack_from(data, at)
        at += _LEN.size
        if size > pk.MAX_PACKET_BYTES or at + size > len(data):
            raise pk.PacketError(pk.Reason.MALFORMED, "stored step inputs: bad length")
        out.append(bytes(data[at : at + size]))
        at += size
    if len(out) != count or at != len(data):
        raise pk.PacketError(pk.Reason.MALFORMED, "stored step inputs: bad count")
    return out


@attrs.define
class Chain:
    """The open chain: where it starts and the sub-steps (with their input packets) since."""

    previous: bytes | None  # this node's last packet (None: the genesis model)
    blinding: bytes  # the blinding of that packet's base (zero for genesis)
    start: Any  # int32 (d,): the weights that base opens to (or the genesis model)
    steps: list = attrs.field(factory=list)  # [(SubStep, [input packet bytes])]

    @property
    def previous_round(self) -> int | None:
        """The round of the packet the chain starts at (None from genesis)."""
        return None if self.previous is None else pk.decode(self.previous).round

    @classmethod
    def genesis(cls, weights: Any) -> Chain:
        """A chain from the genesis model ``weights``."""
        import numpy as np

        return cls(None, bytes(32), np.asarray(weights, np.int32).copy())

    @classmethod
    def after(cls, packet: bytes, blinding: bytes, weights: Any) -> Chain:
        """A chain from ``packet``, whose base opens to ``weights`` with ``blinding``."""
        import numpy as np

        return cls(bytes(packet), bytes(blinding), np.asarray(weights, np.int32).copy())

    def stored(self) -> tuple[bytes, bytes, bytes]:
        """``(previous, blinding, start)`` as the state keeps them."""
        import numpy as np

        start = np.asarray(self.start, dtype="<i4").tobytes()
        return (self.previous or b""), self.blinding, start

    @classmethod
    def load(cls, row: dict, d: int) -> Chain | None:
        """The chain :meth:`qres.node.state.State.load_chain` returned (None when it does
        not hold ``d`` weights or does not decode)."""
        import numpy as np

        if len(row["start"]) != 4 * d:
            return None
        try:
            steps = [
                (rs.decode_substep(sub, d), unpack_packets(inputs))
                for _, sub, inputs in row["steps"]
            ]
        except pk.PacketError:
            return None
        start = np.frombuffer(row["start"], "<i4").astype(np.int32)
        return cls(row["previous"] or None, row["blinding"], start, steps)

    def add(self, round_: int, own: Any, inputs: list[bytes], weights: Any) -> tuple:
        """One aggregate: ``own`` update (row 0), the ``inputs`` packets (in the rule's row
        order) and the int64 weights the rule received (own first) or None. Returns
        ``(round, sub-step bytes, inputs bytes)`` for :meth:`State.add_chain_step`."""
        hashes = [pk.packet_hash(p) for p in inputs]
        if weights is None:
            sub = rs.SubStep(round_, own, hashes, [0] * len(inputs))
        else:
            w = [int(v) for v in weights]
            sub = rs.SubStep(round_, own, hashes, w[1:], w[0], True)
        self.steps.append((sub, [bytes(p) for p in inputs]))
        d = len(self.start)
        return round_, rs.encode_substep(sub, d), pack_packets(inputs)

    def close(self, sender: bytes, round_: int) -> tuple[bytes, bytes]:
        """The digest the packet of ``round_`` carries and the encoded evidence its audit
        answer carries: ``(GENESIS_STEP, b"")`` for a genesis base nothing has moved."""
        if self.previous is None and not self.steps:
            return pk.GENESIS_STEP, b""
        previous = rs.NO_PREVIOUS if self.previous is None else pk.packet_hash(self.previous)
        record = rs.RoundStep(
            sender, round_, previous, self.blinding, self.start, [s for s, _ in self.steps]
        ).encode()
        seen: dict[bytes, bytes] = {}
        for sub, packets in self.steps:
            for h, data in zip(sub.inputs, packets, strict=True):
                seen.setdefault(h, data)
        evidence = rs.StepEvidence(record, self.previous, list(seen.values()))
        return rs.step_digest(record), evidence.encode()
