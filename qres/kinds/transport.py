"""The transport kind: what every carrier of messages between swarm nodes provides.

A transport moves ``bytes`` payloads from one node to another. Nodes are named by small
integers or short strings. Time is counted in integer *ticks* on the transport's own clock, so a
simulated swarm is reproducible to the bit; what a tick means in wall-clock terms is the
caller's choice (the swarm simulator documents its own). Real network transports (TCP, MQTT)
implement the same methods: their ``advance`` polls the network for that long.

Every transport keeps the counters of :class:`TransportStats` so the swarm can account for the
bytes its gossip costs, whichever transport carries it.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import attrs

from qres.kernel.errors import QresError
from qres.kernel.plugins import Plugin

#: What may name a node: a small int or a short string.
NodeId = int | str

#: Longest node name accepted, in characters.
MAX_NODE_NAME = 256


def check_node(node: Any, role: str, where: str) -> NodeId:
    """Return ``node`` if it can name a node (an int or a short str), else raise QresError."""
    if isinstance(node, bool) or not isinstance(node, (int, str)):
        raise QresError(
            f"{where}: {role} node {node!r} is not an int or str; name nodes by int or string"
        )
    if isinstance(node, str) and not 0 < len(node) <= MAX_NODE_NAME:
        raise QresError(
            f"{where}: {role} node name has {len(node)} characters; use 1 to {MAX_NODE_NAME}"
        )
    return node


def check_payload(payload: Any, max_payload: int, where: str) -> bytes:
    """Return ``payload`` as immutable bytes, or raise QresError if it is not bytes or too big."""
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise QresError(
            f"{where}: payload is {type(payload).__name__}, not bytes; serialise it first"
        )
    data = bytes(payload)
    if len(data) > max_payload:
        raise QresError(
            f"{where}: payload of {len(data)} bytes exceeds max_payload={max_payload}; "
            "split the message or raise max_payload in the transport settings"
        )
    return data


@attrs.frozen
class Message:
    """One message: who sent it to whom, its bytes, and when it was sent and became receivable.

    ``seq`` is the transport-wide sequence number given at send time; messages that become
    receivable at the same tick are handed out in ``seq`` order.
    """

    seq: int
    src: NodeId
    dst: NodeId
    payload: bytes
    sent_at: int
    deliver_at: int


@attrs.frozen
class TransportStats:
    """Counters for the swarm's accounting (messages and payload bytes).

    ``sent_*`` counts every message accepted by ``send`` (including those later dropped);
    ``delivered_*`` counts messages that reached their destination's queue; ``dropped_*`` counts
    messages lost on the way (``dropped_loss``) or refused by a full queue
    (``dropped_queue_full``). For a simulated transport, sent = delivered + dropped + in flight.
    """

    sent_messages: int = 0
    sent_bytes: int = 0
    delivered_messages: int = 0
    delivered_bytes: int = 0
    dropped_messages: int = 0
    dropped_bytes: int = 0
    dropped_loss: int = 0
    dropped_queue_full: int = 0

    def to_dict(self) -> dict[str, int]:
        """Plain data for ``--json`` output and logs."""
        return attrs.asdict(self)


class Transport(Plugin):
    """Base of transport plugins: send, broadcast and receive bytes between nodes on a clock.

    Subclasses implement :meth:`send`, :meth:`receive`, :meth:`advance`, :attr:`now` and
    :attr:`stats`; :meth:`broadcast` and :meth:`tick` are built on them. A transport is a
    context manager; :meth:`close` releases sockets or other resources (a no-op here).
    """

    @property
    @abstractmethod
    def now(self) -> int:
        """The current time, in ticks."""
        raise NotImplementedError(f"transport {self.name!r} does not implement now")

    @property
    @abstractmethod
    def stats(self) -> TransportStats:
        """A snapshot of the counters."""
        raise NotImplementedError(f"transport {self.name!r} does not implement stats")

    @abstractmethod
    def send(self, src: NodeId, dst: NodeId, payload: bytes) -> bool:
        """Send ``payload`` from ``src`` to ``dst``.

        Returns True if the message is on its way, False if the transport knows at once that it
        was lost. Raises :class:`QresError` for a payload that is not bytes or is too large.
        """
        raise NotImplementedError(f"transport {self.name!r} does not implement send")

    def broadcast(self, src: NodeId, payload: bytes, peers: Any) -> int:
        """Send ``payload`` from ``src`` to every node in ``peers`` (in their order), skipping
        ``src`` itself; returns how many of those sends were accepted."""
        accepted = 0
        for peer in peers:
            if peer == src:
                continue
            accepted += bool(self.send(src, peer, payload))
        return accepted

    @abstractmethod
    def receive(self, node: NodeId, limit: int | None = None) -> list[Message]:
        """Take up to ``limit`` (default all) messages waiting for ``node``, oldest first."""
        raise NotImplementedError(f"transport {self.name!r} does not implement receive")

    @abstractmethod
    def advance(self, dt: int) -> None:
        """Let ``dt`` ticks pass, delivering what falls due in that time."""
        raise NotImplementedError(f"transport {self.name!r} does not implement advance")

    def tick(self) -> None:
        """Let one tick pass."""
        self.advance(1)

    def close(self) -> None:
        """Release resources held by the transport."""

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
