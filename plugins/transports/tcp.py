"""The TCP transport: asyncio connections, each mutually authenticated and encrypted with a
Noise XX handshake whose static keys are signed by the nodes' Ed25519 DIDs.

The asynchronous interface (:meth:`TcpTransport.start`, :meth:`~TcpTransport.asend`,
:meth:`~TcpTransport.abroadcast`, :meth:`~TcpTransport.recv`, :meth:`~TcpTransport.aclose`) is
what ``qres node run`` uses. The synchronous :class:`~qres.kinds.transport.Transport` methods
(``send``, ``receive``, ``advance``) run the same machinery on a private event loop thread, with
one tick per millisecond of wall-clock time. Wire formats: docs/transport.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import Counter, deque

import attrs

from qres.kernel.config import InvalidSetting, boolean, integer, number, text
from qres.kernel.errors import QresError
from qres.kernel.hookspecs import hookimpl
from qres.kinds.transport import Message, Transport, TransportStats, check_payload
from qres.node import wire
from qres.node.noise import HandshakeState, KeyPair, NoiseError
from qres.trust.identity import did_of, public_key_of
from qres.trust.packet import MAX_PACKET_BYTES, Reason

#: Seconds between peer exchanges on every connection, and between dial sweeps.
EXCHANGE_SECONDS = 5.0
DIAL_SWEEP_SECONDS = 0.1


def parse_address(address: str, where: str = "address") -> tuple[str, int]:
    """``host:port`` (IPv6 hosts in brackets) as ``(host, port)``; QresError if malformed."""
    host, sep, port = address.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise QresError(f"{where}: {address!r} is not host:port; e.g. 127.0.0.1:7400")
    return host, int(port)


def _listen(_inst, attribute, value):
    try:
        parse_address(value)
    except (QresError, AttributeError, TypeError) as exc:
        raise InvalidSetting(attribute.name, value, "host:port, e.g. 127.0.0.1:7400") from exc


def _peers(_inst, attribute, value):
    allowed = 'a list of { address = "host:port", did = "did:qres:..." } tables'
    if not isinstance(value, (list, tuple)) or len(value) > 4096:
        raise InvalidSetting(attribute.name, value, allowed)
    for item in value:
        try:
            if set(item) != {"address", "did"}:
                raise QresError("keys")
            parse_address(item["address"])
            public_key_of(item["did"])
        except Exception as exc:
            raise InvalidSetting(attribute.name, item, allowed) from exc


@attrs.frozen
class TcpConfig:
    """Settings of the TCP transport.

    * ``listen``: ``host:port`` to accept connections on (port 0: any free port);
      127.0.0.1 by default, so nothing is exposed unless asked.
    * ``peers``: the static peer list, ``{ address = "host:port", did = "did:qres:..." }``;
      a dialled peer must prove it holds that DID's key.
    * ``swarm``: the swarm's name, bound into every handshake (other swarms fail it).
    * ``key``: the node's key file ("" for the default key of ``qres keys``).
    * ``accept_unknown``: accept connections from DIDs not in ``peers`` and learn peers from
      peer exchange (every update packet is still signed and verified by the node).
    * ``max_message``: largest message in bytes (a full update packet by default).
    * ``rate_frames``, ``rate_burst``: a connection may send ``rate_frames`` frames per second
      on average with bursts of ``rate_burst``; beyond that it is closed (``RATE_LIMITED``).
    * ``handshake_timeout``: seconds a handshake may take.
    * ``queue_limit``: received messages held for the node; arrivals beyond are dropped.
    * ``backoff_min``, ``backoff_max``: seconds between dial attempts, doubling per failure.
    * ``max_peers``: size of the address book (static and learned peers).
    * ``idle_timeout``: seconds a connection may deliver nothing before it is closed (a peer
      that connected and went silent holds a slot and hears every update while giving
      nothing; closing is not a ban: it may dial again). Every connection is sent a record at
      least every third of this (the peer list, empty if need be), so a live peer never idles.
    """

    listen: str = attrs.field(default="127.0.0.1:0", validator=_listen)
    peers: list = attrs.field(factory=list, validator=_peers)
    swarm: str = attrs.field(default="qres", validator=text(128))
    key: str = attrs.field(default="", validator=text(4096))
    accept_unknown: bool = attrs.field(default=True, validator=boolean())
    max_message: int = attrs.field(default=MAX_PACKET_BYTES, validator=integer(64, 1 << 24))
    rate_frames: float = attrs.field(default=500.0, validator=number(1.0, 1e6))
    rate_burst: int = attrs.field(default=1000, validator=integer(1, 1 << 20))
    handshake_timeout: float = attrs.field(default=5.0, validator=number(0.05, 600.0))
    queue_limit: int = attrs.field(default=4096, validator=integer(1, 1 << 20))
    backoff_min: float = attrs.field(default=0.1, validator=number(0.01, 60.0))
    backoff_max: float = attrs.field(default=5.0, validator=number(0.01, 3600.0))
    max_peers: int = attrs.field(default=256, validator=integer(1, 65536))
    idle_timeout: float = attrs.field(default=30.0, validator=number(0.1, 86400.0))


class _Bucket:
    """A token bucket: ``rate`` tokens per second up to ``burst``."""

    def __init__(self, rate: float, burst: int):
        self.rate, self.burst = rate, burst
        self.tokens = float(burst)
        self.last = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class Connection:
    """One authenticated, encrypted connection (after :meth:`handshake`)."""

    def __init__(self, transport: TcpTransport, reader, writer, initiator: bool):
        self.t = transport
        self.reader, self.writer = reader, writer
        self.initiator = initiator
        self.peer_key: bytes | None = None
        self.listen_port = 0
        self.host = (writer.get_extra_info("peername") or ("?", 0))[0]
        self._decoder = wire.FrameDecoder()
        self._frames: deque[bytes] = deque()
        self._bucket = _Bucket(transport.config.rate_frames, transport.config.rate_burst)
        self._assembler = wire.RecordAssembler(transport.config.max_message)
        self._send = self._recv = None
        self.closed = False

    async def _read_frame(self) -> bytes:
        while not self._frames:
            data = await self.reader.read(1 << 16)
            if not data:
                raise EOFError
            self.t.wire_bytes_received += len(data)
            self._frames.extend(self._decoder.feed(data))
        if not self._bucket.take():
            raise wire.WireError(Reason.RATE_LIMITED, "frames over the rate limit")
        return self._frames.popleft()

    def _write(self, body: bytes) -> None:
        data = wire.frame(body)
        self.t.wire_bytes_sent += len(data)
        self.writer.write(data)

    async def handshake(self) -> None:
        """Run XX; on return ``peer_key`` is the peer's authenticated Ed25519 key."""
        t = self.t
        started = time.perf_counter()
        hs = HandshakeState(self.initiator, t.static, wire.prologue(t.config.swarm))
        hello = wire.make_hello(t.identity, t.static.public, t.port).encode()
        try:
            if self.initiator:
                self._write(hs.write_message())
                theirs = hs.read_message(await self._read_frame())
                self._write(hs.write_message(hello))
            else:
                hs.read_message(await self._read_frame())
                self._write(hs.write_message(hello))
                theirs = hs.read_message(await self._read_frame())
        except (NoiseError, EOFError, ConnectionError) as exc:
            raise wire.WireError(Reason.HANDSHAKE_FAILED, f"handshake: {exc}") from exc
        await self.writer.drain()
        peer = wire.decode_hello(theirs, hs.remote_static)
        self.peer_key, self.listen_port = peer.public_key, peer.listen_port
        self._send, self._recv = hs.split()
        t.handshake_seconds.append(time.perf_counter() - started)

    def send(self, kind: int, data: bytes) -> None:
        """Encrypt and queue one message (chunked into records)."""
        for plaintext in wire.records(kind, data):
            nonce = self._send.n
            self._write(wire.NONCE.pack(nonce) + self._send.encrypt_with_ad(b"", plaintext))

    async def receive(self) -> tuple[int, bytes]:
        """The next whole message ``(record type, data)``; WireError on any fault."""
        while True:
            nonce, ciphertext = wire.split_nonce(await self._read_frame())
            if nonce < self._recv.n:
                raise wire.WireError(Reason.REPLAY, f"frame nonce {nonce} already used")
            if nonce > self._recv.n:
                raise wire.WireError(Reason.MALFORMED, f"frame nonce {nonce} skips ahead")
            try:
                plaintext = self._recv.decrypt_with_ad(b"", ciphertext)
            except NoiseError as exc:
                raise wire.WireError(Reason.MALFORMED, f"frame: {exc}") from exc
            message = self._assembler.add(plaintext)
            if message is not None:
                return message

    def close(self) -> None:
        """Close the socket (idempotent)."""
        if not self.closed:
            self.closed = True
            self.writer.close()


class TcpTransport(Transport):
    """Noise-encrypted TCP between nodes named by their DIDs (see the module docstring)."""

    name = "tcp"
    Config = TcpConfig

    def __init__(self, config: TcpConfig | None = None, identity=None):
        super().__init__(config)
        self._identity = identity
        self.static = KeyPair()  # per process; bound to the DID by the signed hello
        self.port = 0
        self.book: dict[bytes, tuple[str, int]] = {}  # address book: key -> (host, port)
        self.static_keys: set[bytes] = set()
        self.banned: set[bytes] = set()
        self.conns: dict[bytes, Connection] = {}
        self.disconnects: Counter[Reason] = Counter()
        self.idle_closed = 0  # connections closed for delivering nothing in idle_timeout
        self.handshake_seconds: deque[float] = deque(maxlen=1024)
        self.wire_bytes_sent = self.wire_bytes_received = 0
        self._counts = dict.fromkeys(attrs.fields_dict(TransportStats), 0)
        self._inbox: deque[Message] = deque()
        self._bans: deque[Message] = deque()
        self._arrived: asyncio.Event | None = None
        self._seq = 0
        self._t0 = time.monotonic()
        self._server = None
        self._tasks: set[asyncio.Task] = set()
        self._dialing: set[bytes] = set()
        self._retry: dict[bytes, tuple[float, float]] = {}  # key -> (next try, backoff)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        for peer in self.config.peers:
            key = public_key_of(peer["did"])
            self.book[key] = parse_address(peer["address"])
            self.static_keys.add(key)

    # --- identity and lifecycle -------------------------------------------------------------

    @property
    def identity(self):
        """The node's identity (the key file's, loaded on first use)."""
        if self._identity is None:
            from qres.trust.identity import default_key_path, load_identity

            self._identity = load_identity(self.config.key or default_key_path())
        return self._identity

    @property
    def did(self) -> str:
        """This node's DID."""
        return self.identity.did

    async def start(self) -> None:
        """Listen, and start dialling the address book."""
        self._arrived = asyncio.Event()
        host, port = parse_address(self.config.listen)
        self._server = await asyncio.start_server(self._inbound, host, port)
        self.port = self._server.sockets[0].getsockname()[1]
        self._spawn(self._dial_loop())
        self._spawn(self._exchange_loop())

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def aclose(self) -> None:
        """Close the listener, every connection and background task."""
        if self._server is not None:
            self._server.close()
        for conn in list(self.conns.values()):
            conn.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
            self._server = None

    # --- connections ------------------------------------------------------------------------

    async def _inbound(self, reader, writer) -> None:
        await self._run(Connection(self, reader, writer, initiator=False), None)

    async def _dial(self, key: bytes, host: str, port: int) -> None:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port), self.config.handshake_timeout
            )
        except (OSError, asyncio.TimeoutError):
            self._backoff(key)
            return
        finally:
            self._dialing.discard(key)
        await self._run(Connection(self, reader, writer, initiator=True), key)

    def _backoff(self, key: bytes) -> None:
        _, wait = self._retry.get(key, (0.0, self.config.backoff_min / 2))
        wait = min(self.config.backoff_max, wait * 2)
        self._retry[key] = (time.monotonic() + wait, wait)

    async def _run(self, conn: Connection, expected: bytes | None) -> None:
        try:
            await asyncio.wait_for(conn.handshake(), self.config.handshake_timeout)
            key = self._admit(conn, expected)
            if key is None:
                return
            self._retry.pop(key, None)
            self._send_peers(conn)
            while True:
                try:
                    kind, data = await asyncio.wait_for(conn.receive(), self.config.idle_timeout)
                except asyncio.TimeoutError:
                    self.idle_closed += 1  # silent, not faulty: no reason counted against it
                    return
                if kind == wire.RECORD_DATA:
                    self._deliver(key, data)
                elif kind == wire.RECORD_BAN:
                    self._deliver(key, data, self._bans)
                else:
                    self._learn(wire.decode_peers(data))
        except wire.WireError as exc:
            self.disconnects[exc.reason] += 1
        except asyncio.TimeoutError:
            self.disconnects[Reason.HANDSHAKE_FAILED] += 1
        except (EOFError, ConnectionError, OSError):
            pass
        finally:
            conn.close()
            if conn.peer_key is not None and self.conns.get(conn.peer_key) is conn:
                del self.conns[conn.peer_key]
            if expected is not None:
                self._backoff(expected)

    def _admit(self, conn: Connection, expected: bytes | None) -> bytes | None:
        """Register an authenticated connection, or refuse it with a reason."""
        key, me = conn.peer_key, self.identity.public_key
        if expected is not None and key != expected:
            raise wire.WireError(Reason.HANDSHAKE_FAILED, "peer is not the DID dialled")
        if key == me:
            return None
        if key in self.banned:
            raise wire.WireError(Reason.BANNED_SENDER, "banned peer")
        if not self.config.accept_unknown and key not in self.static_keys:
            raise wire.WireError(Reason.UNKNOWN_SENDER, "peer not in the static list")
        old = self.conns.get(key)
        if old is not None and not old.closed:
            # Both sides dialled: keep the connection the smaller key initiated, on both sides.
            initiator_key = me if conn.initiator else key
            if initiator_key != min(me, key):
                conn.close()
                return None
            old.close()
        self.conns[key] = conn
        if conn.listen_port and key not in self.book and len(self.book) < self.config.max_peers:
            self.book[key] = (conn.host, conn.listen_port)
        return key

    def _send_peers(self, conn: Connection, keepalive: bool = False) -> None:
        """Tell ``conn``'s peer the addresses of our other peers; with ``keepalive``, an
        empty list when there are none (the record that keeps the connection from idling)."""
        entries = [
            wire.PeerEntry(key, *self.book[key])
            for key in sorted(self.conns)
            if key in self.book and key != conn.peer_key
        ]
        if entries or keepalive:
            conn.send(wire.RECORD_PEERS, wire.encode_peers(entries))

    def _learn(self, entries: list[wire.PeerEntry]) -> None:
        if not self.config.accept_unknown:
            return
        me = self.identity.public_key
        for entry in entries:
            key = entry.public_key
            if key == me or key in self.book or key in self.banned:
                continue
            if len(self.book) >= self.config.max_peers:
                return
            self.book[key] = (entry.host, entry.port)

    def _deliver(self, key: bytes, data: bytes, queue: deque | None = None) -> None:
        queue = self._inbox if queue is None else queue
        if len(queue) >= self.config.queue_limit:
            self._counts["dropped_messages"] += 1
            self._counts["dropped_bytes"] += len(data)
            self._counts["dropped_queue_full"] += 1
            return
        self._seq += 1
        now = self.now
        queue.append(Message(self._seq, did_of(key), self.did, data, now, now))
        self._counts["delivered_messages"] += 1
        self._counts["delivered_bytes"] += len(data)
        if self._arrived is not None:
            self._arrived.set()

    async def _dial_loop(self) -> None:
        while True:
            now = time.monotonic()
            for key, (host, port) in list(self.book.items()):
                busy = key in self.conns or key in self._dialing or key in self.banned
                if busy or key == self.identity.public_key:
                    continue
                if self._retry.get(key, (0.0, 0.0))[0] > now:
                    continue
                self._dialing.add(key)
                self._retry[key] = (now + self.config.backoff_max, self._retry.get(key, (0, 0))[1])
                self._spawn(self._dial(key, host, port))
            await asyncio.sleep(DIAL_SWEEP_SECONDS)

    async def _exchange_loop(self) -> None:
        while True:
            await asyncio.sleep(min(EXCHANGE_SECONDS, self.config.idle_timeout / 3))
            for conn in list(self.conns.values()):
                if conn.peer_key is not None and not conn.closed:
                    self._send_peers(conn, keepalive=True)

    # --- the node's asynchronous interface --------------------------------------------------

    def connected(self) -> list[str]:
        """DIDs of the peers connected now, sorted."""
        return sorted(did_of(k) for k, c in self.conns.items() if not c.closed)

    async def asend(self, dst: str, payload: bytes) -> bool:
        """Send ``payload`` to the peer ``dst`` (a DID); False if it is not connected."""
        data = check_payload(payload, self.config.max_message, "transport tcp, send")
        self._counts["sent_messages"] += 1
        self._counts["sent_bytes"] += len(data)
        conn = self.conns.get(public_key_of(dst))
        if conn is None or conn.closed:
            self._counts["dropped_messages"] += 1
            self._counts["dropped_bytes"] += len(data)
            self._counts["dropped_loss"] += 1
            return False
        conn.send(wire.RECORD_DATA, data)
        with contextlib.suppress(ConnectionError, OSError):
            await conn.writer.drain()
        return True

    async def abroadcast(self, payload: bytes) -> int:
        """Send ``payload`` to every connected peer; returns how many were sent."""
        sent = 0
        for did in self.connected():
            sent += await self.asend(did, payload)
        return sent

    async def abroadcast_ban(self, payload: bytes) -> bool:
        """Send a ban notice to every connected peer (a record of its own kind)."""
        data = check_payload(payload, self.config.max_message, "transport tcp, ban")
        conns = [c for c in self.conns.values() if not c.closed]
        for conn in conns:
            conn.send(wire.RECORD_BAN, data)
            with contextlib.suppress(ConnectionError, OSError):
                await conn.writer.drain()
        return bool(conns)

    def bans_received(self) -> list[Message]:
        """Take the ban notices received."""
        return [self._bans.popleft() for _ in range(len(self._bans))]

    async def recv(self, timeout: float | None = None) -> Message | None:
        """The next received message, waiting up to ``timeout`` seconds (None: forever)."""
        while not self._inbox:
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), timeout)
            except asyncio.TimeoutError:
                return None
        return self._inbox.popleft()

    def ban(self, did: str) -> None:
        """Refuse and drop the peer ``did`` from now on."""
        key = public_key_of(did)
        self.banned.add(key)
        conn = self.conns.pop(key, None)
        if conn is not None:
            conn.close()

    # --- the synchronous Transport contract -------------------------------------------------

    @property
    def now(self) -> int:
        """Milliseconds since the transport was made."""
        return int((time.monotonic() - self._t0) * 1000)

    @property
    def stats(self) -> TransportStats:
        """A snapshot of the message and byte counters."""
        return TransportStats(**self._counts)

    def _sync(self, coro, timeout: float = 30.0):
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
            self._thread = threading.Thread(
                target=self._loop.run_forever, name="qres-tcp", daemon=True
            )
            self._thread.start()
            asyncio.run_coroutine_threadsafe(self.start(), self._loop).result(timeout)
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def open(self) -> TcpTransport:
        """Start listening and dialling on a private event loop thread (synchronous use)."""
        self._sync(asyncio.sleep(0))
        return self

    def send(self, src, dst, payload: bytes) -> bool:
        """Send from this node (``src`` must be its DID) to the peer ``dst``."""
        if src != self.did:
            raise QresError(f"transport tcp: can only send as {self.did}, not {src!r}")
        return self._sync(self.asend(dst, payload))

    def receive(self, node, limit: int | None = None) -> list[Message]:
        """Take up to ``limit`` received messages, oldest first (``node`` is this node)."""
        self._sync(asyncio.sleep(0))
        count = len(self._inbox) if limit is None else min(limit, len(self._inbox))
        return [self._inbox.popleft() for _ in range(count)]

    def advance(self, dt: int) -> None:
        """Let the network run for ``dt`` milliseconds."""
        self._sync(asyncio.sleep(0))
        time.sleep(max(0, dt) / 1000)

    def close(self) -> None:
        """Stop everything and the private loop, if one was started."""
        if self._loop is None:
            return
        asyncio.run_coroutine_threadsafe(self.aclose(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
        self._loop = None


@hookimpl
def register_transports(register):
    """Register the TCP transport."""
    register(TcpTransport)
