"""The MQTT transport against a real broker: signed envelopes, refusals by reason, login by
environment variable, TLS, and reconnection after a broker restart."""

from __future__ import annotations

import asyncio
import datetime
import time

import paho.mqtt.client as paho
import pytest
from mqtt_broker import Broker
from qres.builtin_plugins.transports import mqtt
from qres.builtin_plugins.transports.mqtt import MqttConfig, MqttTransport

from qres.kernel.errors import QresError
from qres.trust.identity import Identity
from qres.trust.packet import Reason


@pytest.fixture
def broker(tmp_path):
    b = Broker(tmp_path).start()
    yield b
    b.stop()


def _node(broker, **settings) -> MqttTransport:
    config = MqttConfig(port=broker.port, swarm="t", **settings)
    t = MqttTransport(config, identity=Identity.generate())
    t.connect()
    return t


def _wait(condition, timeout=10.0):
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "condition not reached in time"
        time.sleep(0.01)


def _raw_client(broker):
    client = paho.Client(callback_api_version=paho.CallbackAPIVersion.VERSION2)
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    return client


def test_updates_reach_peers_signed(broker):
    a, b, c = (_node(broker) for _ in range(3))
    try:
        assert a.send(a.did, b.did, b"for b only")
        assert a.publish(mqtt.KIND_UPDATE, b"for all")
        _wait(lambda: len(b._inbox) == 2 and len(c._inbox) == 1)
        assert [m.payload for m in b.receive(b.did)] == [b"for b only", b"for all"]
        message = c.receive(c.did)[0]
        assert (message.src, message.payload) == (a.did, b"for all")
        assert a.receive(a.did) == []  # our own messages are not delivered back
        a.publish(mqtt.KIND_BAN, b"ban notice")
        _wait(lambda: b._bans)
        assert b.bans_received()[0].payload == b"ban notice" and not b._inbox
    finally:
        for t in (a, b, c):
            t.close()


def test_a_message_for_one_peer_reaches_only_that_peers_radio(broker):
    """A directed message goes to its destination's own topic: a third node's radio never
    receives it; one published the old way, on the shared updates topic, is still taken, and
    one for another node on a node's own topic is refused."""
    a, b, c = (_node(broker) for _ in range(3))
    raw = _raw_client(broker)
    try:
        before = c.wire_bytes_received
        assert a.send(a.did, b.did, b"x" * 2000)
        _wait(lambda: len(b._inbox) == 1)
        assert b.receive(b.did)[0].payload == b"x" * 2000
        assert a.publish(mqtt.KIND_UPDATE, b"for all")  # broadcasts still reach everyone
        _wait(lambda: len(c._inbox) == 1)
        assert c.wire_bytes_received - before < 2000  # the 2,000 bytes never reached C
        me = Identity.generate()
        now = int(time.time() * 1000)
        old_way = mqtt.encode_envelope(me, "t", mqtt.KIND_UPDATE, b.identity.public_key, now, b"o")
        raw.publish("qres/t/updates", old_way, qos=1).wait_for_publish(5)
        _wait(lambda: len(b._inbox) == 2)
        for_c = mqtt.encode_envelope(me, "t", mqtt.KIND_UPDATE, c.identity.public_key, now, b"m")
        raw.publish(b.inbox_topic(b.identity.public_key), for_c, qos=1).wait_for_publish(5)
        _wait(lambda: b.disconnects.get(Reason.MALFORMED, 0) == 1)
        assert [m.payload for m in b.receive(b.did)] == [b"for all", b"o"]
    finally:
        raw.loop_stop()
        for t in (a, b, c):
            t.close()


def test_forged_replayed_and_misrouted_envelopes_are_refused(broker):
    b = _node(broker)
    raw = _raw_client(broker)
    try:
        me = Identity.generate()
        now = int(time.time() * 1000)
        good = mqtt.encode_envelope(me, "t", mqtt.KIND_UPDATE, mqtt.BROADCAST, now, b"x")
        forged = good[:-70] + bytes([good[-70] ^ 1]) + good[-69:]
        other_swarm = mqtt.encode_envelope(me, "u", mqtt.KIND_UPDATE, mqtt.BROADCAST, now, b"x")
        old = mqtt.encode_envelope(me, "t", mqtt.KIND_UPDATE, mqtt.BROADCAST, now - 10**7, b"x")
        as_ban = mqtt.encode_envelope(me, "t", mqtt.KIND_BAN, mqtt.BROADCAST, now, b"x")
        for data, topic in (
            (good, "updates"),
            (good, "updates"),  # a second copy: a duplicate, not a refusal
            (forged, "updates"),
            (other_swarm, "updates"),
            (old, "updates"),
            (as_ban, "updates"),  # a ban published on the updates topic
            (b"\x00" * 10, "hello"),
        ):
            raw.publish(f"qres/t/{topic}", data, qos=1).wait_for_publish(5)
        _wait(lambda: sum(b.disconnects.values()) == 5)
        assert b.duplicates == 1
        assert b.disconnects == {
            Reason.BAD_SIGNATURE: 2,
            Reason.STALE_ROUND: 1,
            Reason.MALFORMED: 2,
        }
        assert [m.payload for m in b.receive(b.did)] == [b"x"]
    finally:
        raw.loop_stop()
        b.close()


def test_redelivered_and_retained_copies_are_duplicates_never_refusals(broker):
    b = _node(broker)
    raw = _raw_client(broker)
    try:
        me = Identity.generate()
        now = int(time.time() * 1000)
        good = mqtt.encode_envelope(me, "t", mqtt.KIND_UPDATE, mqtt.BROADCAST, now, b"once")
        raw.publish("qres/t/updates", good, qos=1, retain=True).wait_for_publish(5)
        _wait(lambda: b._inbox)
        # subscribing again makes the broker deliver its retained copy; a publisher whose
        # acknowledgement was lost sends the same envelope again (QoS 1)
        b._client.subscribe("qres/t/updates", qos=1)
        raw.publish("qres/t/updates", good, qos=1).wait_for_publish(5)
        _wait(lambda: b.duplicates == 2)
        assert not b.disconnects  # nothing refused, no reason counted against the sender
        assert [m.payload for m in b.receive(b.did)] == [b"once"]
    finally:
        b.close()
        raw.publish("qres/t/updates", b"", qos=1, retain=True).wait_for_publish(5)
        raw.loop_stop()


@pytest.mark.parametrize("password_ok", [True, False])
def test_login_reads_the_password_from_the_environment(tmp_path, monkeypatch, password_ok):
    broker = Broker(tmp_path, users={"node": "s3cret"}).start()
    try:
        monkeypatch.setenv("QRES_TEST_MQTT_PW", "s3cret" if password_ok else "wrong")
        config = MqttConfig(
            port=broker.port, username="node", password_env="QRES_TEST_MQTT_PW", backoff_max=1
        )
        t = MqttTransport(config, identity=Identity.generate())
        try:
            if password_ok:
                t.connect()
                assert t.is_connected
            else:
                with pytest.raises(QresError, match="no connection") as info:
                    t.connect(timeout=2)
                assert "s3cret" not in str(info.value) and "wrong" not in str(info.value)
        finally:
            t.close()
        monkeypatch.delenv("QRES_TEST_MQTT_PW")
        with pytest.raises(QresError, match="QRES_TEST_MQTT_PW is not set"):
            MqttTransport(config, identity=Identity.generate()).connect()
    finally:
        broker.stop()


def _certificates(folder):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def name(cn):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder(name("qres test CA"), name("qres test CA"), ca_key.public_key(), 1)
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    cert = (
        x509.CertificateBuilder(ca.subject, name("localhost"), key.public_key(), 2)
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = [folder / n for n in ("ca.pem", "cert.pem", "key.pem")]
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


def test_tls_to_the_broker(tmp_path):
    ca, cert, key = _certificates(tmp_path)
    broker = Broker(tmp_path, tls=(ca, cert, key)).start()
    try:
        a = _node(broker, tls=True, ca_file=str(ca))
        b = _node(broker, tls=True, ca_file=str(ca))
        a.publish(mqtt.KIND_UPDATE, b"over tls")
        _wait(lambda: b._inbox)
        assert b.receive(b.did)[0].payload == b"over tls"
        a.close()
        b.close()
        untrusting = MqttTransport(
            MqttConfig(port=broker.port, tls=True), identity=Identity.generate()
        )
        with pytest.raises(QresError, match="no connection"):
            untrusting.connect(timeout=1.5)
        untrusting.close()
    finally:
        broker.stop()


def test_reconnects_after_a_broker_restart(broker):
    async def main():
        a = MqttTransport(MqttConfig(port=broker.port, swarm="t"), identity=Identity.generate())
        b = MqttTransport(MqttConfig(port=broker.port, swarm="t"), identity=Identity.generate())
        await a.start()
        await b.start()
        broker.restart()
        for t in (a, b):
            while not (t.is_connected and t.connects >= 2):
                await asyncio.sleep(0.05)
        await a.asend(b.did, b"after restart")
        message = await b.recv(10)
        assert message is not None and message.payload == b"after restart"
        while a.did not in b.connected():
            await asyncio.sleep(0.05)
        await a.aclose()
        await b.aclose()

    asyncio.run(asyncio.wait_for(main(), 40))


def test_documented_settings_build():
    import re
    from pathlib import Path

    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib

    from qres.kernel.config import Location, build_config

    doc = (Path(__file__).parent.parent / "docs" / "transport.md").read_text()
    blocks = re.findall(r"```toml\n(\[node\.transport\].*?)```", doc, re.S)
    table = tomllib.loads(blocks[1])["node"]["transport"]
    settings = {k: v for k, v in table.items() if k != "use"}
    config = build_config(MqttConfig, settings, Location("docs/transport.md"))
    assert table["use"] == MqttTransport.name and config.tls and config.port == 8883


def test_one_key_holds_a_connection_per_swarm_and_session(broker):
    """A node and a mesh worker on one device share its key: their broker sessions differ, so
    neither takes the other's over, and each still receives what is sent to it."""
    shared, peer = Identity.generate(), Identity.generate()
    configs = [
        MqttConfig(port=broker.port, swarm="field"),
        MqttConfig(port=broker.port, swarm="qres-mesh", session="worker"),
        MqttConfig(port=broker.port, swarm="qres-mesh", session="client"),
    ]
    mine = [MqttTransport(config, identity=shared) for config in configs]
    assert len({t.client_id for t in mine}) == 3
    again = MqttTransport(MqttConfig(port=broker.port, swarm="field"), identity=shared)
    assert again.client_id == mine[0].client_id  # stable: the broker keeps the session
    senders = {
        swarm: MqttTransport(MqttConfig(port=broker.port, swarm=swarm), identity=peer)
        for swarm in ("field", "qres-mesh")
    }
    try:
        for t in [*mine, *senders.values()]:
            t.connect()
        for swarm, sender in senders.items():
            assert sender.publish(mqtt.KIND_UPDATE, swarm.encode())
        _wait(lambda: all(t._inbox for t in mine))
        assert all(t.is_connected and t.connects == 1 for t in mine)
        assert [m.payload for m in mine[0].receive(shared.did)] == [b"field"]
        assert [m.payload for m in mine[2].receive(shared.did)] == [b"qres-mesh"]
    finally:
        for t in [*mine, *senders.values()]:
            t.close()
