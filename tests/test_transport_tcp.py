"""The TCP transport over loopback: authenticated delivery, peer exchange, and refusals
counted with the trust layer's reasons."""

from __future__ import annotations

import asyncio
import socket
import struct
import time

import pytest
from qres.builtin_plugins.transports.tcp import TcpConfig, TcpTransport

from qres.kernel.config import Location, build_config
from qres.kernel.errors import ProfileError
from qres.node import wire
from qres.trust.identity import Identity
from qres.trust.packet import Reason


def _node(*peers, **settings) -> TcpTransport:
    table = [{"address": f"127.0.0.1:{p.port}", "did": p.did} for p in peers]
    return TcpTransport(TcpConfig(peers=table, **settings), identity=Identity.generate())


async def _until(condition, timeout=5.0):
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


def _run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


def test_send_both_ways_and_peer_exchange():
    async def main():
        a = _node()
        await a.start()
        b = _node(a)
        await b.start()
        await _until(lambda: a.connected() == [b.did] and b.connected() == [a.did])
        assert await b.asend(a.did, b"from b")
        assert await a.asend(b.did, b"x" * 200_000)  # chunked over several Noise messages
        got_a, got_b = await a.recv(5), await b.recv(5)
        assert (got_a.src, got_a.payload) == (b.did, b"from b")
        assert (got_b.src, got_b.payload) == (a.did, b"x" * 200_000)
        # c knows only b; peer exchange tells it where a is, and it connects to a too.
        c = _node(b)
        await c.start()
        await _until(lambda: set(c.connected()) == {a.did, b.did}, 10)
        assert await c.abroadcast(b"hi all") == 2
        assert (await a.recv(5)).payload == b"hi all"
        assert a.stats.delivered_messages == 2 and not a.disconnects
        for t in (a, b, c):
            await t.aclose()

    _run(main())


def test_wrong_did_and_wrong_swarm_fail_the_handshake():
    async def main():
        a = _node(swarm="one")
        await a.start()
        impostor = Identity.generate()
        b = TcpTransport(
            TcpConfig(peers=[{"address": f"127.0.0.1:{a.port}", "did": impostor.did}]),
            identity=Identity.generate(),
        )
        await b.start()
        await _until(lambda: b.disconnects[Reason.HANDSHAKE_FAILED] >= 1)
        assert not b.connected()
        c = _node(a, swarm="two")
        await c.start()
        await _until(lambda: a.disconnects[Reason.HANDSHAKE_FAILED] >= 1)
        assert not c.connected() and not a.connected()
        for t in (a, b, c):
            await t.aclose()

    _run(main())


def test_garbage_and_oversize_frames_are_refused_with_reasons():
    async def main():
        a = _node()
        await a.start()
        for data, reason in (
            (struct.pack("<I", 1 << 30), Reason.OVERSIZE),
            (wire.frame(b"\x00" * 10), Reason.HANDSHAKE_FAILED),
        ):
            reader, writer = await asyncio.open_connection("127.0.0.1", a.port)
            writer.write(data)
            await writer.drain()
            assert await reader.read(100) == b""  # closed by a
            writer.close()
            await _until(lambda r=reason: a.disconnects[r] >= 1)
        await a.aclose()

    _run(main())


def test_replayed_corrupted_and_flooding_frames_disconnect():
    async def main():
        a = _node(rate_frames=1.0, rate_burst=20)
        await a.start()
        results = {}
        for attack in ("replay", "corrupt", "flood"):
            results[attack] = {}
            b = _node(a)
            await b.start()
            await _until(lambda b=b: b.connected() == [a.did])
            conn = b.conns[a.identity.public_key]
            sent = []
            original = conn._write
            conn._write = lambda body, o=original, s=sent: (s.append(body), o(body))[1]
            await b.asend(a.did, b"first")
            await _until(lambda: a._inbox)
            a._inbox.clear()
            a.disconnects.clear()
            if attack == "replay":
                original(sent[-1])
            elif attack == "corrupt":
                nonce = struct.pack("<Q", conn._send.n)
                original(nonce + bytes(len(sent[-1]) - 8))
            else:
                for i in range(40):
                    conn.send(wire.RECORD_DATA, b"%d" % i)
            await _until(lambda: sum(a.disconnects.values()) > 0)
            results[attack] = dict(a.disconnects)
            await b.aclose()
        assert results["replay"].get(Reason.REPLAY) == 1
        assert results["corrupt"].get(Reason.MALFORMED) == 1
        assert results["flood"].get(Reason.RATE_LIMITED) == 1
        await a.aclose()

    _run(main())


def test_banned_peer_is_dropped_and_refused():
    async def main():
        a = _node()
        await a.start()
        b = _node(a)
        await b.start()
        await _until(lambda: a.connected() == [b.did])
        a.ban(b.did)
        await _until(lambda: a.disconnects[Reason.BANNED_SENDER] >= 1)
        assert not a.connected()
        for t in (a, b):
            await t.aclose()

    _run(main())


def test_synchronous_transport_contract():
    a, b = _node(), None
    a.open()
    try:
        b = _node(a).open()
        end = time.monotonic() + 5
        while a.did not in b._sync(asyncio.sleep(0, b.connected())) and time.monotonic() < end:
            b.advance(10)
        assert b.send(b.did, a.did, b"sync")
        messages = []
        while not messages and time.monotonic() < end:
            a.advance(10)
            messages = a.receive(a.did)
        assert [m.payload for m in messages] == [b"sync"]
        assert b.stats.sent_messages == 1 and a.now > 0
        with pytest.raises(Exception, match="can only send as"):
            b.send(a.did, b.did, b"spoof")
    finally:
        a.close()
        if b is not None:
            b.close()


def test_settings_are_validated():
    with pytest.raises(ProfileError, match="peers"):
        build_config(TcpConfig, {"peers": [{"address": "nohost", "did": "x"}]}, Location("p"))
    with pytest.raises(ProfileError, match="listen"):
        build_config(TcpConfig, {"listen": "127.0.0.1"}, Location("p"))


def test_listens_on_loopback_by_default():
    async def main():
        a = _node()
        await a.start()
        assert a._server.sockets[0].getsockname()[0] == "127.0.0.1"
        with socket.create_connection(("127.0.0.1", a.port)):
            pass
        await a.aclose()

    _run(main())


def test_documented_settings_build():
    import re
    from pathlib import Path

    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib

    doc = (Path(__file__).parent.parent / "docs" / "transport.md").read_text()
    block = re.search(r"```toml\n(\[node\.transport\].*?)```", doc, re.S).group(1)
    table = tomllib.loads(block)["node"]["transport"]
    config = build_config(TcpConfig, {k: v for k, v in table.items() if k != "use"}, Location("d"))
    assert table["use"] == TcpTransport.name and config.listen.startswith("127.0.0.1")
