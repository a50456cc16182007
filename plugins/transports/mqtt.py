"""The MQTT transport: a swarm's nodes publish signed envelopes through a broker they do not
trust, on ``qres/<swarm>/updates``, ``qres/<swarm>/bans`` and ``qres/<swarm>/hello``, and
receive what is meant for them alone on ``qres/<swarm>/to/<public key in hex>``.

Built on paho-mqtt, the Eclipse reference client that aiomqtt itself wraps: its network thread
serves both the synchronous :class:`~qres.kinds.transport.Transport` methods and the node's
asyncio loop (messages are handed over with ``call_soon_threadsafe``), it reconnects with
exponential backoff by itself, and it keeps the dependency to one small pure-Python package.

Every message is an envelope signed by its sender's Ed25519 key (docs/transport.md, section 2):
a broker, or anyone who can publish to it, can drop or delay messages but not forge, alter,
redirect (the swarm and topic kind are signed) or replay them (a timestamp window and a cache of
seen signatures); refusals are counted by the trust layer's reasons. A second copy of an
envelope within the window is what at-least-once delivery produces (a QoS 1 redelivery, a
retained copy): it is dropped and counted in ``duplicates``, never as a refusal.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import ssl
import struct
import threading
import time
from collections import Counter, OrderedDict, deque

import attrs

from qres.kernel.config import InvalidSetting, boolean, integer, number, text
from qres.kernel.errors import QresError
from qres.kernel.hookspecs import hookimpl
from qres.kinds.transport import Message, Transport, TransportStats, check_payload
from qres.trust.identity import PUBLIC_KEY_BYTES, SIGNATURE_BYTES, did_of, public_key_of
from qres.trust.identity import verify_signature as verify_ed25519
from qres.trust.packet import MAX_PACKET_BYTES, Reason

MAGIC = b"QRMQ"
VERSION = 1
KIND_UPDATE, KIND_BAN, KIND_HELLO = 1, 2, 3
TOPICS = {KIND_UPDATE: "updates", KIND_BAN: "bans", KIND_HELLO: "hello"}
#: QoS and retain per kind: updates and bans must arrive (at least once; the cache of seen
#: envelopes drops and counts the duplicates), hellos are periodic presence and may be lost.
QOS = {KIND_UPDATE: 1, KIND_BAN: 1, KIND_HELLO: 0}
RETAIN = {KIND_UPDATE: False, KIND_BAN: False, KIND_HELLO: False}
_HEAD = struct.Struct(f"<4sBBH{PUBLIC_KEY_BYTES}s{PUBLIC_KEY_BYTES}sQI")
HEADER_BYTES = _HEAD.size
BROADCAST = bytes(PUBLIC_KEY_BYTES)
#: Seconds between hellos; a peer unheard for three periods is no longer listed as connected.
HELLO_SECONDS = 2.0


class EnvelopeError(Exception):
    """An envelope was refused; ``reason`` says why."""

    def __init__(self, reason: Reason, message: str):
        super().__init__(message)
        self.reason = reason


@attrs.frozen
class Envelope:
    """One signed MQTT message."""

    kind: int
    sender: bytes
    dst: bytes
    time_ms: int
    payload: bytes
    signature: bytes = b""


def _signed_bytes(swarm: str, head_and_payload: bytes) -> bytes:
    return swarm.encode("utf-8") + b"\x00" + head_and_payload


def encode_envelope(identity, swarm: str, kind: int, dst: bytes, time_ms: int, payload: bytes):
    """The envelope bytes, signed by ``identity`` (the swarm name is signed, not sent)."""
    body = (
        _HEAD.pack(MAGIC, VERSION, kind, 0, identity.public_key, dst, time_ms, len(payload))
        + payload
    )
    return body + identity.sign(_signed_bytes(swarm, body))


def decode_envelope(data: bytes, swarm: str, max_payload: int) -> Envelope:
    """Parse and verify an envelope's layout and signature; EnvelopeError on any fault."""
    if len(data) > HEADER_BYTES + max_payload + SIGNATURE_BYTES:
        raise EnvelopeError(Reason.OVERSIZE, f"envelope of {len(data)} bytes")
    if len(data) < HEADER_BYTES + SIGNATURE_BYTES:
        raise EnvelopeError(Reason.MALFORMED, f"envelope of {len(data)} bytes: too short")
    magic, version, kind, reserved, sender, dst, time_ms, size = _HEAD.unpack_from(data)
    if magic != MAGIC:
        raise EnvelopeError(Reason.MALFORMED, "envelope: bad magic")
    if version != VERSION:
        raise EnvelopeError(Reason.BAD_VERSION, f"envelope: version {version}")
    if kind not in TOPICS or reserved or HEADER_BYTES + size + SIGNATURE_BYTES != len(data):
        raise EnvelopeError(Reason.MALFORMED, "envelope: bad kind, reserved bits or length")
    body, signature = data[:-SIGNATURE_BYTES], data[-SIGNATURE_BYTES:]
    if not verify_ed25519(sender, signature, _signed_bytes(swarm, body)):
        raise EnvelopeError(Reason.BAD_SIGNATURE, f"envelope from {did_of(sender)}: bad signature")
    return Envelope(kind, sender, dst, time_ms, data[HEADER_BYTES:-SIGNATURE_BYTES], signature)


def _port(_inst, attribute, value):
    integer(1, 65535)(_inst, attribute, value)


def _env_name(_inst, attribute, value):
    if not isinstance(value, str) or (value and not value.replace("_", "a").isalnum()):
        raise InvalidSetting(attribute.name, value, "the NAME of an environment variable")


def _dids(_inst, attribute, value):
    try:
        if not isinstance(value, (list, tuple)):
            raise TypeError
        for did in value:
            public_key_of(did)
    except Exception as exc:
        raise InvalidSetting(attribute.name, value, 'a list of "did:qres:..." strings') from exc


@attrs.frozen
class MqttConfig:
    """Settings of the MQTT transport.

    * ``host``, ``port``: the broker (127.0.0.1:1883 by default).
    * ``swarm``: the swarm's name: topics ``qres/<swarm>/...``; signed into every envelope.
    * ``key``: the node's key file ("" for the default key of ``qres keys``).
    * ``username``, ``password_env``: broker login; the password is read from the environment
      variable NAMED here, never written in a profile.
    * ``tls``, ``ca_file``, ``cert_file``, ``key_file``: TLS to the broker (CA to trust, and a
      client certificate if the broker asks for one).
    * ``keepalive``: seconds between MQTT pings.
    * ``backoff_min``, ``backoff_max``: reconnect delays in seconds, doubling per failure.
    * ``max_message``: largest payload; ``max_skew``: seconds an envelope's timestamp may differ
      from this node's clock (older ones are stale, and the replay cache covers this window).
    * ``queue_limit``: received messages held for the node.
    * ``allowed``: if non-empty, only these DIDs are accepted (others: UNKNOWN_SENDER).
    * ``session``: names this connection among others made with the same key (a node and a
      mesh worker on one device): the broker session's client id is derived from swarm,
      session and key, and a broker drops the older of two connections with one client id.
    """

    host: str = attrs.field(default="127.0.0.1", validator=text(253))
    port: int = attrs.field(default=1883, validator=_port)
    swarm: str = attrs.field(default="qres", validator=text(128))
    key: str = attrs.field(default="", validator=text(4096))
    username: str = attrs.field(default="", validator=text(256))
    password_env: str = attrs.field(default="", validator=_env_name)
    tls: bool = attrs.field(default=False, validator=boolean())
    ca_file: str = attrs.field(default="", validator=text(4096))
    cert_file: str = attrs.field(default="", validator=text(4096))
    key_file: str = attrs.field(default="", validator=text(4096))
    keepalive: int = attrs.field(default=30, validator=integer(5, 3600))
    backoff_min: int = attrs.field(default=1, validator=integer(1, 60))
    backoff_max: int = attrs.field(default=30, validator=integer(1, 3600))
    max_message: int = attrs.field(default=MAX_PACKET_BYTES, validator=integer(64, 1 << 24))
    max_skew: float = attrs.field(default=300.0, validator=number(1.0, 86400.0))
    queue_limit: int = attrs.field(default=4096, validator=integer(1, 1 << 20))
    allowed: list = attrs.field(factory=list, validator=_dids)
    session: str = attrs.field(default="", validator=text(64))


class MqttTransport(Transport):
    """Signed envelopes through an MQTT broker (see the module docstring)."""

    name = "mqtt"
    Config = MqttConfig

    def __init__(self, config: MqttConfig | None = None, identity=None):
        super().__init__(config)
        self._identity = identity
        self.disconnects: Counter[Reason] = Counter()  # refused envelopes, by reason
        # second copies of an envelope already taken: QoS 1 redeliveries and retained copies
        # (at-least-once delivery, not an attack), dropped and counted apart from refusals
        self.duplicates = 0
        self.connects = 0
        self.wire_bytes_sent = self.wire_bytes_received = 0
        self._counts = dict.fromkeys(attrs.fields_dict(TransportStats), 0)
        self._inbox: deque[Message] = deque()
        self._bans: deque[Message] = deque()
        self._seen: OrderedDict[bytes, float] = OrderedDict()  # signature -> expiry
        self._heard: dict[bytes, float] = {}  # sender -> last time heard
        self.banned: set[bytes] = set()
        self._allowed = {public_key_of(d) for d in self.config.allowed}
        self._lock = threading.Lock()
        self._client = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._arrived: asyncio.Event | None = None
        self._connected = threading.Event()
        self._hello_task = None
        self._seq = 0
        self._t0 = time.monotonic()
        self.last_error = ""

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

    @property
    def client_id(self) -> str:
        """The broker session's client id: stable across reconnects and restarts (the broker
        keeps QoS 1 messages for it), distinct per swarm and session for one key."""
        cfg = self.config
        label = f"qres/mqtt-session\0{cfg.swarm}\0{cfg.session}\0".encode()
        return "qres-" + hashlib.sha256(label + self.identity.public_key).hexdigest()[:20]

    def topic(self, kind: int) -> str:
        """The topic of a message kind in this swarm."""
        return f"qres/{self.config.swarm}/{TOPICS[kind]}"

    def inbox_topic(self, key: bytes) -> str:
        """The topic of updates for one node only (its public key in hex): a message for one
        peer (an audit request, an answer) reaches that peer's radio, not every node's."""
        return f"qres/{self.config.swarm}/to/{bytes(key).hex()}"

    # --- connection ----------------------------------------------------------------------

    def _make_client(self):
        import paho.mqtt.client as mqtt

        cfg = self.config
        client = mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            clean_session=False,  # the broker keeps our QoS 1 messages while we reconnect
        )
        if cfg.username:
            password = None
            if cfg.password_env:
                password = os.environ.get(cfg.password_env)
                if password is None:
                    raise QresError(
                        f"transport mqtt: environment variable {cfg.password_env} is not set; "
                        "export the broker password in it"
                    )
            client.username_pw_set(cfg.username, password)
        if cfg.tls:
            context = ssl.create_default_context(cafile=cfg.ca_file or None)
            if cfg.cert_file:
                context.load_cert_chain(cfg.cert_file, cfg.key_file or None)
            client.tls_set_context(context)
        client.reconnect_delay_set(cfg.backoff_min, max(cfg.backoff_min, cfg.backoff_max))
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        return client

    def _on_connect(self, client, _userdata, _flags, reason_code, _properties):
        if reason_code.is_failure:
            self.last_error = str(reason_code)
            return
        self.connects += 1
        # Ready once the broker has acknowledged the subscriptions (_on_subscribe): a message
        # published before that would not reach us.
        topics = [(self.topic(kind), QOS[kind]) for kind in TOPICS]
        topics.append((self.inbox_topic(self.identity.public_key), QOS[KIND_UPDATE]))
        client.subscribe(topics)

    def _on_subscribe(self, _client, _userdata, _mid, reason_codes, _properties):
        if any(code.is_failure for code in reason_codes):
            self.last_error = "subscription refused by the broker"
            return
        self._connected.set()

    def _on_disconnect(self, _client, _userdata, _flags, reason_code, _properties):
        self._connected.clear()
        if reason_code.is_failure:
            self.last_error = str(reason_code)

    def connect(self, timeout: float = 10.0) -> None:
        """Connect to the broker (paho's thread keeps reconnecting from then on)."""
        if self._client is None:
            self._client = self._make_client()
            self._client.connect_async(self.config.host, self.config.port, self.config.keepalive)
            self._client.loop_start()
        if not self._connected.wait(timeout):
            detail = f" ({self.last_error})" if self.last_error else ""
            raise QresError(
                f"transport mqtt: no connection to {self.config.host}:{self.config.port} in "
                f"{timeout:g} s{detail}; check the broker address, login and TLS settings"
            )

    @property
    def is_connected(self) -> bool:
        """True while the broker connection is up."""
        return self._connected.is_set()

    async def start(self, timeout: float = 10.0) -> None:
        """Connect, and publish a hello every few seconds (asyncio interface)."""
        self._loop = asyncio.get_running_loop()
        self._arrived = asyncio.Event()
        await self._loop.run_in_executor(None, self.connect, timeout)
        self._hello_task = asyncio.ensure_future(self._hellos())

    async def _hellos(self) -> None:
        while True:
            self.publish(KIND_HELLO, b"")
            await asyncio.sleep(HELLO_SECONDS)

    async def aclose(self) -> None:
        """Disconnect (asyncio interface)."""
        if self._hello_task is not None:
            self._hello_task.cancel()
        self.close()

    def close(self) -> None:
        """Disconnect and stop paho's thread."""
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()
            self._client = None
        self._connected.clear()

    # --- sending -------------------------------------------------------------------------

    def publish(self, kind: int, payload: bytes, dst: bytes = BROADCAST) -> bool:
        """Sign and publish one message of ``kind``; False when not connected."""
        data = check_payload(payload, self.config.max_message, "transport mqtt, send")
        envelope = encode_envelope(
            self.identity, self.config.swarm, kind, dst, int(time.time() * 1000), data
        )
        if kind != KIND_HELLO:
            self._counts["sent_messages"] += 1
            self._counts["sent_bytes"] += len(data)
        if self._client is None or (not self.is_connected and QOS[kind] == 0):
            if kind != KIND_HELLO:
                self._drop(len(data), "dropped_loss")
            return False
        # QoS 1 while disconnected: paho queues it and sends it on reconnection. An update for
        # one peer goes to that peer's own topic.
        direct = kind == KIND_UPDATE and dst != BROADCAST
        topic = self.inbox_topic(dst) if direct else self.topic(kind)
        self._client.publish(topic, envelope, qos=QOS[kind], retain=RETAIN[kind])
        self.wire_bytes_sent += len(envelope)
        return True

    def send(self, src, dst, payload: bytes) -> bool:
        """Publish ``payload`` for ``dst`` (a DID) on the updates topic; ``src`` is this node."""
        if src != self.did:
            raise QresError(f"transport mqtt: can only send as {self.did}, not {src!r}")
        if self._client is None:
            self.connect()
        return self.publish(KIND_UPDATE, payload, public_key_of(dst))

    async def asend(self, dst: str, payload: bytes) -> bool:
        """Publish for one peer (asyncio interface)."""
        return self.publish(KIND_UPDATE, payload, public_key_of(dst))

    async def abroadcast(self, payload: bytes) -> int:
        """Publish for every peer; returns the number of peers heard from recently."""
        return len(self.connected()) if self.publish(KIND_UPDATE, payload) else 0

    async def abroadcast_ban(self, payload: bytes) -> bool:
        """Publish on the bans topic."""
        return self.publish(KIND_BAN, payload)

    # --- receiving -----------------------------------------------------------------------

    def _on_message(self, _client, _userdata, msg) -> None:
        self.wire_bytes_received += len(msg.payload)
        try:
            envelope = self._check(msg.topic, msg.payload)
        except EnvelopeError as exc:
            with self._lock:
                self.disconnects[exc.reason] += 1
            return
        if envelope is None:
            return
        self._heard[envelope.sender] = time.monotonic()
        if envelope.kind == KIND_HELLO:
            return
        if envelope.dst not in (BROADCAST, self.identity.public_key):
            return
        queue = self._bans if envelope.kind == KIND_BAN else self._inbox
        if len(queue) >= self.config.queue_limit:
            self._drop(len(envelope.payload), "dropped_queue_full")
            return
        self._seq += 1
        now = self.now
        queue.append(
            Message(self._seq, did_of(envelope.sender), self.did, envelope.payload, now, now)
        )
        self._counts["delivered_messages"] += 1
        self._counts["delivered_bytes"] += len(envelope.payload)
        if self._loop is not None and self._arrived is not None:
            self._loop.call_soon_threadsafe(self._arrived.set)

    def _check(self, topic: str, data: bytes) -> Envelope | None:
        """Verify one received envelope; None for our own messages and for a second copy of
        an envelope already taken (counted in ``duplicates``, never refused: the sender signs
        each envelope once, so an identical copy is the broker delivering at least once, and
        handing it on would only repeat what was taken)."""
        envelope = decode_envelope(data, self.config.swarm, self.config.max_message)
        if envelope.sender == self.identity.public_key:
            return None
        mine = self.identity.public_key
        direct = envelope.kind == KIND_UPDATE and envelope.dst == mine
        if topic != self.topic(envelope.kind) and not (direct and topic == self.inbox_topic(mine)):
            raise EnvelopeError(Reason.MALFORMED, "envelope kind does not match its topic")
        if envelope.sender in self.banned:
            raise EnvelopeError(Reason.BANNED_SENDER, "banned sender")
        if self._allowed and envelope.sender not in self._allowed:
            raise EnvelopeError(Reason.UNKNOWN_SENDER, "sender not allowed")
        now = time.time()
        age = now - envelope.time_ms / 1000
        if age > self.config.max_skew:
            raise EnvelopeError(Reason.STALE_ROUND, f"envelope {age:.0f} s old")
        if age < -self.config.max_skew:
            raise EnvelopeError(Reason.FUTURE_ROUND, f"envelope {-age:.0f} s in the future")
        with self._lock:
            while self._seen and next(iter(self._seen.values())) < now:
                self._seen.popitem(last=False)
            if envelope.signature in self._seen:
                self.duplicates += 1
                return None
            self._seen[envelope.signature] = now + 2 * self.config.max_skew
        return envelope

    def _drop(self, size: int, reason: str) -> None:
        self._counts["dropped_messages"] += 1
        self._counts["dropped_bytes"] += size
        self._counts[reason] += 1

    async def recv(self, timeout: float | None = None) -> Message | None:
        """The next received update message (asyncio interface)."""
        while not self._inbox:
            self._arrived.clear()
            if self._inbox:
                break
            try:
                await asyncio.wait_for(self._arrived.wait(), timeout)
            except asyncio.TimeoutError:
                return None
        return self._inbox.popleft()

    def bans_received(self) -> list[Message]:
        """Take the messages received on the bans topic."""
        return [self._bans.popleft() for _ in range(len(self._bans))]

    def receive(self, node, limit: int | None = None) -> list[Message]:
        """Take up to ``limit`` received update messages, oldest first."""
        count = len(self._inbox) if limit is None else min(limit, len(self._inbox))
        return [self._inbox.popleft() for _ in range(count)]

    def connected(self) -> list[str]:
        """DIDs heard from (any kind) in the last three hello periods."""
        horizon = time.monotonic() - 3 * HELLO_SECONDS
        return sorted(did_of(k) for k, t in self._heard.items() if t >= horizon)

    def ban(self, did: str) -> None:
        """Refuse every later envelope from ``did``."""
        self.banned.add(public_key_of(did))

    @property
    def now(self) -> int:
        """Milliseconds since the transport was made."""
        return int((time.monotonic() - self._t0) * 1000)

    @property
    def stats(self) -> TransportStats:
        """A snapshot of the counters."""
        return TransportStats(**self._counts)

    def advance(self, dt: int) -> None:
        """Let paho's thread run for ``dt`` milliseconds."""
        if self._client is None:
            self.connect()
        time.sleep(max(0, dt) / 1000)


@hookimpl
def register_transports(register):
    """Register the MQTT transport."""
    register(MqttTransport)
