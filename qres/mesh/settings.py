"""The ``[mesh]`` table: a worker's listening address and queue, a client's workers."""

from __future__ import annotations

import attrs

from qres.kernel.config import InvalidSetting, integer, number, text
from qres.kernel.errors import QresError


def parse_address(address: str) -> tuple[str, int]:
    """``host:port`` as ``(host, port)``; QresError if malformed."""
    host, sep, port = str(address).rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise QresError(f"{address!r} is not host:port; e.g. 127.0.0.1:7500")
    return host, int(port)


def _listen(_inst, attribute, value) -> None:
    try:
        parse_address(value)
    except QresError as exc:
        raise InvalidSetting(attribute.name, value, "host:port, e.g. 127.0.0.1:7500") from exc


def _workers(_inst, attribute, value) -> None:
    from qres.trust.identity import public_key_of

    allowed = 'a list of { address = "host:port", did = "did:qres:..." } tables'
    if not isinstance(value, (list, tuple)) or len(value) > 1024:
        raise InvalidSetting(attribute.name, value, allowed)
    for item in value:
        try:
            if not isinstance(item, dict) or set(item) != {"address", "did"}:
                raise QresError("keys")
            parse_address(item["address"])
            public_key_of(item["did"])
        except QresError as exc:
            raise InvalidSetting(attribute.name, item, allowed) from exc


#: Channels a worker announces on (and a client listens to announcements on).
ANNOUNCE_CHANNELS = ("tcp", "mqtt")


def _channels(_inst, attribute, value) -> None:
    ok = isinstance(value, (list, tuple)) and value and set(value) <= set(ANNOUNCE_CHANNELS)
    if not ok or len(set(value)) != len(value):
        raise InvalidSetting(attribute.name, value, '["tcp"], ["mqtt"] or ["tcp", "mqtt"]')


def _mqtt(_inst, attribute, value) -> None:
    from qres.builtin_plugins.transports.mqtt import MqttConfig

    allowed = "a table of MQTT transport settings (docs/transport.md): host, port, tls, ..."
    if not isinstance(value, dict):
        raise InvalidSetting(attribute.name, value, allowed)
    unknown = set(value) - set(attrs.fields_dict(MqttConfig)) | ({"allowed"} & set(value))
    if unknown:
        raise InvalidSetting(f"{attribute.name}.{sorted(unknown)[0]}", value, allowed)
    try:
        MqttConfig(**value)
    except InvalidSetting as exc:
        raise InvalidSetting(f"{attribute.name}.{exc.name}", exc.value, exc.allowed) from exc


@attrs.frozen
class MeshSettings:
    """Settings of mesh workers and clients (docs/mesh.md).

    * ``listen``: ``host:port`` the worker (or client) accepts connections on.
    * ``key``: the key file of this worker or client ("" for the default of ``qres keys``).
    * ``swarm``: the mesh's name, bound into every handshake.
    * ``workers``: the client's workers, ``{ address = "host:port", did = "did:qres:..." }``.
    * ``announce_s``: seconds between a worker's signed score/health announcements.
    * ``queue_size``: requests a worker holds at most; more get ``busy``.
    * ``retry_after_ms``: the retry hint of a ``busy`` answer.
    * ``aging_s``: a queued request's priority grows by 1 per ``aging_s`` seconds of waiting.
    * ``replay_window_s``: requests older or newer than this are refused; ids are remembered
      this long.
    * ``first_token_timeout_s``, ``chunk_timeout_s``: a client fails over to another worker
      when the first piece, or the next one, takes longer.
    * ``attempts``: workers a client tries for one request.
    * ``spot_check_rate``: fraction of temperature-0 answers a client checks with a second
      worker; ``ban_threshold``: reputation below which a worker is banned.
    * ``state``: the client's SQLite file of per-worker statistics ("" keeps them in memory).
    * ``announce_via``: where a worker announces, and a client listens for announcements:
      ``"tcp"`` (to connected peers), ``"mqtt"`` (the broker of ``mqtt``), or both.
    * ``mqtt``: the MQTT transport's settings (``host``, ``port``, ``username``,
      ``password_env``, ``tls``, ...); ``swarm`` and ``key`` default to the mesh's.
    """

    listen: str = attrs.field(default="127.0.0.1:0", validator=_listen)
    key: str = attrs.field(default="", validator=text(4096))
    swarm: str = attrs.field(default="qres-mesh", validator=text(128))
    workers: list = attrs.field(factory=list, validator=_workers)
    announce_s: float = attrs.field(default=2.0, validator=number(0.05, 3600.0))
    queue_size: int = attrs.field(default=16, validator=integer(1, 4096))
    retry_after_ms: int = attrs.field(default=500, validator=integer(1, 3_600_000))
    aging_s: float = attrs.field(default=10.0, validator=number(0.001, 1e6))
    replay_window_s: float = attrs.field(default=60.0, validator=number(1.0, 86400.0))
    first_token_timeout_s: float = attrs.field(default=30.0, validator=number(0.05, 3600.0))
    chunk_timeout_s: float = attrs.field(default=10.0, validator=number(0.05, 3600.0))
    attempts: int = attrs.field(default=3, validator=integer(1, 64))
    spot_check_rate: float = attrs.field(default=0.1, validator=number(0.0, 1.0))
    ban_threshold: float = attrs.field(default=0.5, validator=number(0.0, 1.0))
    state: str = attrs.field(default="", validator=text(4096))
    announce_via: list = attrs.field(factory=lambda: ["tcp"], validator=_channels)
    mqtt: dict = attrs.field(factory=dict, validator=_mqtt)
