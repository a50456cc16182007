"""Where a node's samples come from: a raw file replayed at its sample rate, stdin, or an MQTT
topic (``mqtt://host:port/some/topic``: each message's payload is raw samples).

A source is an async iterator of numpy arrays of the stream's sample type. A file source
starts at sample ``start`` (a restarted node resumes after the samples its segments hold);
``--speed 0`` replays as fast as the node can take it.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator

from qres.kernel.errors import QresError

#: Seconds of samples handed over at a time when replaying at the sample rate.
TICK_SECONDS = 0.05
#: Samples per chunk when replaying without pacing, and bytes per stdin read.
FAST_CHUNK = 4096
STDIN_READ = 1 << 16


def open_source(path: str, spec, settings, options, start: int) -> AsyncIterator:
    """The source named by ``path`` ("-" for stdin)."""
    if path == "-":
        return _stdin(spec)
    if path.startswith("mqtt://"):
        return _mqtt(path, spec)
    return _file(path, spec, settings.sample_rate * options.speed, start)


async def _file(path: str, spec, rate: float, start: int) -> AsyncIterator:
    import numpy as np

    try:
        data = np.memmap(path, dtype=spec.numpy_dtype(), mode="r")
    except (OSError, ValueError) as exc:
        raise QresError(f"{path}: cannot read the source ({exc}); give a raw sample file") from exc
    per_tick = FAST_CHUNK if rate <= 0 else max(1, round(rate * TICK_SECONDS))
    loop = asyncio.get_running_loop()
    t0, sent = loop.time(), 0
    pos = min(start, data.shape[0])
    while pos < data.shape[0]:
        chunk = np.array(data[pos : pos + per_tick])
        pos += chunk.shape[0]
        sent += chunk.shape[0]
        yield chunk
        if rate > 0:
            await asyncio.sleep(max(0.0, t0 + sent / rate - loop.time()))
        else:
            await asyncio.sleep(0)


async def _stdin(spec) -> AsyncIterator:
    import numpy as np

    loop = asyncio.get_running_loop()
    size = spec.itemsize
    rest = b""
    reader = getattr(sys.stdin.buffer, "read1", sys.stdin.buffer.read)
    while True:
        data = await loop.run_in_executor(None, reader, STDIN_READ)
        if not data:
            return
        data = rest + data
        whole = len(data) - len(data) % size
        rest = data[whole:]
        if whole:
            yield np.frombuffer(data[:whole], dtype=spec.numpy_dtype()).copy()


def parse_mqtt_url(url: str) -> tuple[str, int, str]:
    """``mqtt://host[:port]/topic`` as ``(host, port, topic)``."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    topic = parts.path.lstrip("/")
    try:
        port = parts.port or 1883
    except ValueError:
        port = None
    if not parts.hostname or not topic or port is None or "#" in topic or "+" in topic:
        raise QresError(
            f"--source {url!r}: give mqtt://host[:port]/topic (one topic, no wildcards)"
        )
    return parts.hostname, port, topic


async def _mqtt(url: str, spec) -> AsyncIterator:
    """Samples from the payloads published on one MQTT topic (QoS 1), in arrival order. A
    payload that is not a whole number of samples is refused (counted, not stored)."""
    import numpy as np
    import paho.mqtt.client as paho

    host, port, topic = parse_mqtt_url(url)
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue(maxsize=1024)
    size = spec.itemsize
    client = paho.Client(callback_api_version=paho.CallbackAPIVersion.VERSION2)

    def on_connect(c, _userdata, _flags, reason_code, _properties):
        if not reason_code.is_failure:
            c.subscribe(topic, qos=1)

    def on_message(_c, _userdata, msg):
        if len(msg.payload) % size == 0 and msg.payload:
            loop.call_soon_threadsafe(queue.put_nowait, bytes(msg.payload))

    client.on_connect = on_connect
    client.on_message = on_message
    client.reconnect_delay_set(1, 30)
    client.connect_async(host, port)
    client.loop_start()
    try:
        while True:
            data = await queue.get()
            yield np.frombuffer(data, dtype=spec.numpy_dtype()).copy()
    finally:
        client.disconnect()
        client.loop_stop()
