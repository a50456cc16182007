"""Mesh announcements over MQTT, through a real mosquitto started here: a worker process
announces only through the broker, the client ranks on what arrives; the broker (or anyone who
can publish to it) cannot forge, replay or relabel an announcement (a copy published again is
dropped as a duplicate)."""

from __future__ import annotations

import asyncio
import time

import paho.mqtt.client as paho
import pytest
from mesh_helpers import WorkerProcess, key_file
from mqtt_broker import Broker
from qres.builtin_plugins.transports.mqtt import KIND_UPDATE, MqttConfig, MqttTransport

from qres.kernel import plugins
from qres.kernel.config import InvalidSetting
from qres.mesh import messages as m
from qres.mesh.backend import open_client
from qres.mesh.settings import MeshSettings
from qres.trust.identity import Identity, load_identity
from qres.trust.packet import Reason


@pytest.fixture
def broker(tmp_path):
    b = Broker(tmp_path).start()
    yield b
    b.stop()


def mqtt_worker(tmp_path, broker, name="w0") -> WorkerProcess:
    key = key_file(tmp_path, name)
    profile = tmp_path / f"{name}.toml"
    profile.write_text(
        f'[profile]\nname = "{name}"\n\n[llm.backend]\nuse = "deterministic"\n\n'
        f'[mesh]\nkey = "{key}"\nannounce_s = 0.2\nannounce_via = ["mqtt"]\n'
        f"mqtt = {{ port = {broker.port} }}\n"
    )
    return WorkerProcess(profile)


def until(condition, timeout=60.0):
    async def wait():
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, "condition not reached in time"
            await asyncio.sleep(0.05)

    return wait()


def test_announcements_arrive_over_mqtt_and_refuse_forgery_and_replay(tmp_path, broker):
    worker = mqtt_worker(tmp_path, broker)
    impostor = load_identity(key_file(tmp_path, "impostor"))  # listed, but relays others'
    workers = [worker.entry(), {"address": "127.0.0.1:9", "did": impostor.did}]
    s = MeshSettings(key=str(key_file(tmp_path, "client")), workers=workers,
                     spot_check_rate=0.0, announce_via=["mqtt"],
                     mqtt={"port": broker.port})  # fmt: skip
    captured = []
    spy = paho.Client(callback_api_version=paho.CallbackAPIVersion.VERSION2)
    spy.on_message = lambda _c, _u, msg: captured.append((msg.topic, msg.payload))
    spy.connect("127.0.0.1", broker.port)
    spy.subscribe("qres/qres-mesh/#")
    spy.loop_start()

    async def body():
        client = open_client(s)
        await client.start()
        try:
            view = client.workers[worker.did]
            await until(lambda: view.announced is not None)
            first_seq = view.seq
            assert view.announced["models"] == ["deterministic"]
            # requests still travel over TCP+Noise
            await client.wait_connected(1, 60)
            answer = await client.ask({"prompt": "over tcp", "max_tokens": 5, "temperature": 0})
            # the worker's later announcements count the request it served
            await until(lambda: (view.announced or {}).get("requests") == 1)
            assert view.seq > first_seq
            # A captured envelope published again is dropped as a duplicate (what a QoS 1
            # redelivery looks like), not taken twice and not counted against its sender.
            mqtt = client.announcements
            topic, raw = next((t, p) for t, p in captured if t.endswith("/updates"))
            spy.publish(topic, raw, qos=1)
            await until(lambda: mqtt.duplicates >= 1)
            assert not mqtt.disconnects
            # An altered envelope fails its signature.
            bad = bytearray(raw)
            bad[-100] ^= 1
            spy.publish(topic, bytes(bad), qos=1)
            await until(lambda: mqtt.disconnects[Reason.BAD_SIGNATURE] >= 1)
            # A stranger's well-signed envelope is refused: only the listed workers count.
            stranger = MqttTransport(MqttConfig(port=broker.port, swarm=s.swarm),
                                     identity=Identity.generate())  # fmt: skip
            stranger.connect()
            body = {**view.announced, "seq": 10**9, "ts_ms": int(time.time() * 1000)}
            stranger.publish(KIND_UPDATE, m.encode(m.ANNOUNCE, body, stranger.identity))
            await until(lambda: mqtt.disconnects[Reason.UNKNOWN_SENDER] >= 1)
            # A listed worker publishing an announcement signed by someone else is garbage.
            relay = MqttTransport(MqttConfig(port=broker.port, swarm=s.swarm), identity=impostor)
            relay.connect()
            relay.publish(KIND_UPDATE, m.encode(m.ANNOUNCE, body, Identity.generate()))
            await until(lambda: client.garbage >= 1)
            own = {**body, "seq": 1, "p50_ms": 3.0}
            relay.publish(KIND_UPDATE, m.encode(m.ANNOUNCE, own, impostor))
            await until(lambda: client.workers[impostor.did].announced is not None)
            stranger.close()
            relay.close()
            return answer, view.seq, client.workers[impostor.did].announced
        finally:
            await client.aclose()

    try:
        answer, seq, impostor_view = asyncio.run(body())
    finally:
        spy.loop_stop()
        spy.disconnect()
        worker.stop()
    expected = plugins.create("llm_backend", {"use": "deterministic"}, None)
    assert answer.text == expected.complete("over tcp", max_tokens=5).text
    assert seq < 10**9 and impostor_view["p50_ms"] == 3.0


def test_mqtt_settings_are_checked():
    with pytest.raises(InvalidSetting, match="announce_via"):
        MeshSettings(announce_via=["pigeon"])
    with pytest.raises(InvalidSetting, match="mqtt.port"):
        MeshSettings(mqtt={"port": 0})
    with pytest.raises(InvalidSetting, match="mqtt.colour"):
        MeshSettings(mqtt={"colour": "blue"})
