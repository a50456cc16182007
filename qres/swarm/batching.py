"""Batch mode for any transport: the simulator's array interface on top of send/receive.

The simulator moves whole arrays of ``(src, dst, size, tag)`` messages per step. The in-process
transport does that natively (``send_batch``/``receive_batch``); any other transport plugin is
wrapped in :class:`BatchAdapter`, which sends one real message per row (a payload of ``size``
bytes whose first 8 carry the tag) and drains the destinations' queues on receive. Slower, but
every transport that keeps the transport contract runs in ``qres swarm simulate``.
"""

from __future__ import annotations

from typing import Any

#: Bytes of a payload that carry the message's tag (a signed 64-bit little-endian integer).
TAG_BYTES = 8


def with_batch_mode(transport: Any) -> Any:
    """``transport`` itself if it has a batch mode, else a :class:`BatchAdapter` around it."""
    if hasattr(transport, "send_batch") and hasattr(transport, "receive_batch"):
        return transport
    return BatchAdapter(transport)


class BatchAdapter:
    """The simulator's batch interface over a transport's single-message methods."""

    def __init__(self, transport: Any):
        self.transport = transport
        self.name = transport.name
        self._destinations: set[int] = set()

    @property
    def stats(self) -> Any:
        """The wrapped transport's counters."""
        return self.transport.stats

    @property
    def now(self) -> int:
        """The wrapped transport's clock."""
        return self.transport.now

    def advance(self, dt: int) -> None:
        """Let ``dt`` ticks pass on the wrapped transport."""
        self.transport.advance(dt)

    def send_batch(self, src: Any, dst: Any, sizes: Any, tags: Any) -> Any:
        """Send message ``i`` from ``src[i]`` to ``dst[i]``: ``sizes[i]`` bytes (at least the
        tag's 8) carrying ``tags[i]``; the mask of messages the transport accepted."""
        import numpy as np

        columns = (np.asarray(a, dtype=np.int64).reshape(-1) for a in (src, dst, sizes, tags))
        src, dst, sizes, tags = columns
        kept = np.zeros(src.shape[0], dtype=bool)
        for i in range(src.shape[0]):
            payload = int(tags[i]).to_bytes(TAG_BYTES, "little", signed=True)
            payload += bytes(max(0, int(sizes[i]) - TAG_BYTES))
            kept[i] = bool(self.transport.send(int(src[i]), int(dst[i]), payload))
            self._destinations.add(int(dst[i]))
        return kept

    def receive_batch(self) -> tuple[Any, Any, Any, Any, Any]:
        """Every message waiting at any destination, as arrays ``(src, dst, sizes, tags, seq)``
        in delivery order (due tick, then send order)."""
        import numpy as np

        messages = []
        for node in sorted(self._destinations):
            messages += self.transport.receive(node)
        messages.sort(key=lambda m: (m.deliver_at, m.seq))
        rows = [
            (
                int(m.src),
                int(m.dst),
                len(m.payload),
                int.from_bytes(m.payload[:TAG_BYTES], "little", signed=True),
                int(m.seq),
            )
            for m in messages
        ]
        columns = np.asarray(rows, dtype=np.int64).reshape(-1, 5)
        return tuple(columns[:, k].copy() for k in range(5))

    def close(self) -> None:
        """Close the wrapped transport."""
        self.transport.close()
