"""Announcements over MQTT: a worker publishes its signed score/health messages through a
broker, clients subscribe (docs/mesh.md, "Announcements over MQTT").

The MQTT transport (plugins/transports/mqtt) carries each announcement as the payload of a
signed envelope on ``qres/<swarm>/updates``: the broker, which nobody trusts, can drop or delay
an announcement but not forge, alter or replay it. Inside is the mesh message itself, signed
again by the worker, so the same bytes are evidence whichever channel brought them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

from qres.kernel.config import Location, build_config
from qres.mesh import messages as m
from qres.mesh.settings import MeshSettings


def mqtt_transport(
    settings: MeshSettings, identity, allowed: Iterable[str] = (), *, session: str = "worker"
):
    """The MQTT transport of ``settings`` (None when ``announce_via`` leaves MQTT out).

    ``allowed``: the only DIDs whose envelopes are accepted (a client's workers); empty
    accepts every signer. ``session`` keeps a worker's and a client's broker sessions apart
    when they share a key (``[mesh.mqtt] session`` overrides it).
    """
    if "mqtt" not in settings.announce_via:
        return None
    from qres.builtin_plugins.transports.mqtt import MqttConfig, MqttTransport

    table = {"swarm": settings.swarm, "key": settings.key, "session": session, **settings.mqtt}
    if allowed:
        table["allowed"] = sorted(allowed)
    config = build_config(MqttConfig, table, Location("[mesh]", "mqtt"))
    return MqttTransport(config, identity=identity)


async def listen(transport, on_announce: Callable[[str, m.Envelope, bytes], None],
                 on_garbage: Callable[[str, str], None]) -> None:  # fmt: skip
    """Hand every verified announcement received on ``transport`` to ``on_announce(did,
    envelope, raw)``; a payload that is not a mesh announcement signed by the envelope's own
    signer goes to ``on_garbage(did, reason)``. Runs until cancelled."""
    while True:
        message = await transport.recv()
        if message is None:
            continue
        try:
            envelope = m.decode(message.payload)
        except m.MeshError as exc:
            on_garbage(message.src, str(exc))
            continue
        if envelope.type != m.ANNOUNCE or envelope.did != message.src:
            on_garbage(message.src, "not an announcement signed by its publisher")
            continue
        on_announce(message.src, envelope, message.payload)


async def drain(transport) -> None:
    """Take and drop what a worker's MQTT transport receives (other workers' announcements),
    so its bounded inbox never fills. Runs until cancelled."""
    while True:
        await transport.recv()
        await asyncio.sleep(0)
