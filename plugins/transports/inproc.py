"""The in-process transport: seeded, lossy, delayed message queues between simulated nodes."""

from __future__ import annotations

import heapq
import math
import random
from collections import deque

import attrs

from qres.kernel.config import InvalidSetting, integer
from qres.kernel.errors import QresError
from qres.kernel.hookspecs import hookimpl
from qres.kinds.transport import (
    Message,
    NodeId,
    Transport,
    TransportStats,
    check_node,
    check_payload,
)

#: Device bytes of one queued message's header besides its payload: src and dst (u32 each),
#: sent_at and deliver_at (u64 each), sequence number and payload length (u32 each).
MESSAGE_OVERHEAD_BYTES = 32

#: Largest delay accepted, in ticks (about 11.6 days of 1 ms ticks).
MAX_DELAY_TICKS = 1 << 30


def _loss_probability(_inst, attribute, value):
    # A loss of exactly 1 would drop everything: the interval is half-open.
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not (ok and math.isfinite(value) and 0 <= value < 1):
        raise InvalidSetting(attribute.name, value, "a number in [0, 1)")


def _not_below_delay_min(inst, attribute, value):
    integer(0, MAX_DELAY_TICKS)(inst, attribute, value)
    if value < inst.delay_min:
        raise InvalidSetting(attribute.name, value, f"an integer >= delay_min ({inst.delay_min})")


@attrs.frozen
class InProcessConfig:
    """Settings of the in-process transport.

    * ``loss``: probability in [0, 1) that a message is lost in transit.
    * ``delay_min``, ``delay_max``: a message sent at tick t becomes receivable at tick
      t + d, d drawn uniformly from the integers in [delay_min, delay_max] (ticks).
    * ``seed``: seeds the one random stream that decides losses and delays.
    * ``queue_limit``: messages a node's receive queue holds; an arrival at a full queue is
      dropped (tail drop) and counted in ``dropped_queue_full``.
    * ``max_payload``: largest payload in bytes; larger sends raise an error.
    """

    loss: float = attrs.field(default=0.0, validator=_loss_probability)
    delay_min: int = attrs.field(default=0, validator=integer(0, MAX_DELAY_TICKS))
    delay_max: int = attrs.field(default=0, validator=_not_below_delay_min)
    seed: int = attrs.field(default=0, validator=integer(0, (1 << 64) - 1))
    queue_limit: int = attrs.field(default=32, validator=integer(1, 1 << 20))
    max_payload: int = attrs.field(default=1024, validator=integer(1, 1 << 26))


class InProcessTransport(Transport):
    """Message queues between simulated nodes in one process, with seeded loss and delay.

    Time is an integer tick counter starting at 0, moved by :meth:`advance` / :meth:`tick`.
    Each :meth:`send` draws, from a ``random.Random(seed)`` stream, first one ``random()``
    (the message is lost if it is below ``loss``) and then, for a kept message, one delay
    ``delay_min + randrange(delay_max - delay_min + 1)``. So the same seed and the same calls
    give the same deliveries in the same order on every machine.

    A message is *delivered* when its tick comes: it moves into the destination's receive
    queue, in order of (deliver tick, send sequence number). A message with delay 0 arrives
    during the ``send`` call. If the destination already holds ``queue_limit`` messages, the
    arrival is dropped and counted. :meth:`receive` empties a queue, oldest first.

    ``memory_bytes`` is one node's receive queue on a device:
    ``queue_limit * (max_payload + 32)`` bytes (32 bytes of header per message).
    """

    name = "inproc"
    Config = InProcessConfig

    def __init__(self, config: InProcessConfig | None = None):
        super().__init__(config)
        self._rng = random.Random(self.config.seed)
        self._now = 0
        self._seq = 0
        self._in_flight: list[tuple[int, int, Message]] = []  # heap by (deliver_at, seq)
        self._queues: dict[NodeId, deque[Message]] = {}
        self._counts = dict.fromkeys(attrs.fields_dict(TransportStats), 0)
        self._batch_rng = None  # numpy stream of batch sends, made on first use
        self._batches: list[tuple] = []  # in-flight batch messages, arrays per send_batch

    @classmethod
    def memory_bytes(cls, config: InProcessConfig) -> int:
        """One node's receive queue: ``queue_limit`` messages of ``max_payload`` plus headers."""
        return config.queue_limit * (config.max_payload + MESSAGE_OVERHEAD_BYTES)

    @property
    def now(self) -> int:
        """The current tick."""
        return self._now

    @property
    def stats(self) -> TransportStats:
        """A snapshot of the message and byte counters."""
        return TransportStats(**self._counts)

    @property
    def in_flight(self) -> int:
        """Messages sent but not yet delivered or dropped."""
        return len(self._in_flight)

    @property
    def in_flight_bytes(self) -> int:
        """Payload bytes of the messages in flight."""
        return sum(len(message.payload) for _, _, message in self._in_flight)

    @property
    def next_delivery_at(self) -> int | None:
        """The tick of the next pending arrival, or None: lets a simulator skip idle ticks."""
        return self._in_flight[0][0] if self._in_flight else None

    def pending(self, node: NodeId) -> int:
        """Messages waiting in ``node``'s receive queue."""
        queue = self._queues.get(node)
        return len(queue) if queue else 0

    def send(self, src: NodeId, dst: NodeId, payload: bytes) -> bool:
        """Send ``payload`` from ``src`` to ``dst``; False if the simulated link lost it."""
        where = f"transport inproc, send {src!r} -> {dst!r}"
        check_node(src, "source", where)
        check_node(dst, "destination", where)
        data = check_payload(payload, self.config.max_payload, where)
        seq = self._seq
        self._seq += 1
        self._counts["sent_messages"] += 1
        self._counts["sent_bytes"] += len(data)
        cfg = self.config
        # Both draws are made for every send (the delay only for kept messages), in this order;
        # changing that would change every seeded simulation's history.
        if self._rng.random() < cfg.loss:
            self._drop(data, "dropped_loss")
            return False
        delay = cfg.delay_min + self._rng.randrange(cfg.delay_max - cfg.delay_min + 1)
        message = Message(seq, src, dst, data, self._now, self._now + delay)
        if delay == 0:
            # Everything due earlier has already arrived, so arriving now keeps the order.
            self._arrive(message)
        else:
            heapq.heappush(self._in_flight, (message.deliver_at, seq, message))
        return True

    def receive(self, node: NodeId, limit: int | None = None) -> list[Message]:
        """Take up to ``limit`` (default all) messages from ``node``'s queue, oldest first."""
        check_node(node, "receiving", "transport inproc, receive")
        if limit is not None and (
            isinstance(limit, bool) or not isinstance(limit, int) or limit < 0
        ):
            raise QresError(
                f"transport inproc, receive at {node!r}: limit={limit!r}; "
                "give a non-negative int or None"
            )
        queue = self._queues.get(node)
        if not queue:
            return []
        count = len(queue) if limit is None else min(limit, len(queue))
        return [queue.popleft() for _ in range(count)]

    def advance(self, dt: int) -> None:
        """Move the clock ``dt`` ticks on, delivering every message due by then in order."""
        if isinstance(dt, bool) or not isinstance(dt, int) or dt < 0:
            raise QresError(
                f"transport inproc, advance: dt={dt!r}; give a non-negative int of ticks"
            )
        self._now += dt
        while self._in_flight and self._in_flight[0][0] <= self._now:
            _, _, message = heapq.heappop(self._in_flight)
            self._arrive(message)

    # --- batch mode: the swarm simulator's vectorised gossip --------------------------------
    #
    # At thousands of nodes one Python object per message is too slow, so the simulator sends
    # whole arrays of (src, dst, size, tag) at once. Batch messages carry no payload bytes (the
    # caller keeps what ``tag`` refers to); they share the counters with single sends, have
    # their own seeded numpy stream (so batch and single sends do not disturb each other's
    # draws) and their own in-flight store. Loss and delay follow the same settings.

    def send_batch(self, src, dst, sizes, tags):
        """Send a batch of messages ``src[i] -> dst[i]`` of ``sizes[i]`` bytes with ``tags[i]``.

        For every message, in order, one uniform draw decides loss and one integer draw its
        delay (both drawn for all messages, from the batch stream seeded by ``seed``). Returns
        the boolean mask of messages not lost in transit. Sizes above ``max_payload`` raise.
        """
        import numpy as np

        src = np.asarray(src, dtype=np.int64).reshape(-1)
        dst = np.asarray(dst, dtype=np.int64).reshape(-1)
        sizes = np.asarray(sizes, dtype=np.int64).reshape(-1)
        tags = np.asarray(tags, dtype=np.int64).reshape(-1)
        m = src.shape[0]
        if not dst.shape[0] == sizes.shape[0] == tags.shape[0] == m:
            raise QresError(
                "transport inproc, send_batch: src, dst, sizes and tags differ in length; "
                "pass one entry per message"
            )
        if m and (sizes.min() < 0 or sizes.max() > self.config.max_payload):
            raise QresError(
                f"transport inproc, send_batch: a message of {int(sizes.max())} bytes exceeds "
                f"max_payload={self.config.max_payload}; raise max_payload in the settings"
            )
        if self._batch_rng is None:
            self._batch_rng = np.random.default_rng([self.config.seed, 0xBA7C4])
        cfg = self.config
        u = self._batch_rng.random(m)
        delay = cfg.delay_min + self._batch_rng.integers(0, cfg.delay_max - cfg.delay_min + 1, m)
        kept = u >= cfg.loss
        total = int(sizes.sum())
        lost = ~kept
        self._counts["sent_messages"] += m
        self._counts["sent_bytes"] += total
        n_lost = int(np.count_nonzero(lost))
        self._counts["dropped_messages"] += n_lost
        self._counts["dropped_bytes"] += int(sizes[lost].sum())
        self._counts["dropped_loss"] += n_lost
        seq = self._seq + np.arange(m, dtype=np.int64)
        self._seq += m
        self._batches.append(
            (self._now + delay[kept], seq[kept], src[kept], dst[kept], sizes[kept], tags[kept])
        )
        return kept

    def receive_batch(self):
        """Deliver every batch message due by now; returns arrays ``(src, dst, sizes, tags,
        sent_seq)`` in delivery order (due tick, then send order).

        Each destination takes at most ``queue_limit`` messages per call; the rest are dropped
        (tail drop, counted in ``dropped_queue_full``), as a full receive queue would.
        """
        import numpy as np

        if not self._batches:
            empty = np.zeros(0, np.int64)
            return empty, empty, empty, empty, empty
        columns = zip(*self._batches, strict=True)
        due, seq, src, dst, sizes, tags = (np.concatenate(a) for a in columns)
        ready = due <= self._now
        self._batches = (
            [tuple(a[~ready] for a in (due, seq, src, dst, sizes, tags))] if (~ready).any() else []
        )
        order = np.lexsort((seq[ready], due[ready]))
        seq, src, dst, sizes, tags = (a[ready][order] for a in (seq, src, dst, sizes, tags))
        # rank of each message among those for the same destination, in delivery order
        by_dst = np.argsort(dst, kind="stable")
        d_sorted = dst[by_dst]
        first = np.searchsorted(d_sorted, d_sorted, side="left")
        rank = np.empty_like(by_dst)
        rank[by_dst] = np.arange(d_sorted.shape[0]) - first
        fits = rank < self.config.queue_limit
        n_drop = int(np.count_nonzero(~fits))
        self._counts["dropped_messages"] += n_drop
        self._counts["dropped_bytes"] += int(sizes[~fits].sum())
        self._counts["dropped_queue_full"] += n_drop
        self._counts["delivered_messages"] += int(np.count_nonzero(fits))
        self._counts["delivered_bytes"] += int(sizes[fits].sum())
        return src[fits], dst[fits], sizes[fits], tags[fits], seq[fits]

    @property
    def batch_in_flight(self) -> int:
        """Batch messages sent but not yet delivered or dropped."""
        return sum(int(b[0].shape[0]) for b in self._batches)

    def _arrive(self, message: Message) -> None:
        queue = self._queues.setdefault(message.dst, deque())
        if len(queue) >= self.config.queue_limit:
            self._drop(message.payload, "dropped_queue_full")
            return
        queue.append(message)
        self._counts["delivered_messages"] += 1
        self._counts["delivered_bytes"] += len(message.payload)

    def _drop(self, data: bytes, reason: str) -> None:
        self._counts["dropped_messages"] += 1
        self._counts["dropped_bytes"] += len(data)
        self._counts[reason] += 1


@hookimpl
def register_transports(register):
    """Register the in-process transport."""
    register(InProcessTransport)
