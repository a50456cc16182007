"""The inference mesh with real worker processes: exact answers, failover, spot checks that
catch a lying worker, refusal of bad requests, and the message format."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mesh_helpers import InProcessWorker, WorkerProcess, key_file, worker_profile

from qres.kernel import plugins
from qres.mesh import messages as m
from qres.mesh.backend import open_client
from qres.mesh.queue import Queued, StandingQueue
from qres.mesh.settings import MeshSettings
from qres.mesh.worker import Worker
from qres.trust.identity import Identity, load_identity

DETERMINISTIC = 'use = "deterministic"\nseed = {seed}\nmax_tokens = 64'


def deterministic(seed=0):
    return plugins.create(
        "llm_backend", {"use": "deterministic", "seed": seed, "max_tokens": 64}, None
    )


@pytest.fixture
def workers(tmp_path):
    started = []

    def start(n, seeds=None, **mesh):
        for i in range(n):
            seed = 0 if seeds is None else seeds[i]
            profile = worker_profile(
                tmp_path, f"w{len(started)}", DETERMINISTIC.format(seed=seed), **mesh
            )
            started.append(WorkerProcess(profile))
        return started[-n:]

    yield start
    for w in started:
        w.stop()


def client_settings(tmp_path, procs, **extra):
    key = key_file(tmp_path, "client")
    return MeshSettings(key=str(key), workers=[p.entry() for p in procs],
                        state=str(tmp_path / "stats.sqlite"), **extra)  # fmt: skip


async def with_client(s, body, referee=None, connected=None):
    client = open_client(s, referee)
    await client.start()
    try:
        await client.wait_connected(connected or len(s.workers), 20)
        await asyncio.sleep(0.5)  # the workers' first announcements
        return await body(client)
    finally:
        await client.aclose()


# -- messages -------------------------------------------------------------------------------


def test_messages_round_trip_and_refuse_tampering():
    me = Identity.generate()
    data = m.encode(m.REQUEST, {"id": "abcdef0123", "prompt": "hi"}, me)
    env = m.decode(data)
    assert (env.type, env.did, env.body["prompt"]) == (m.REQUEST, me.did, "hi")
    assert data[:4] == b"QMSH" and data[4] == 1 and data[5] == m.REQUEST
    assert int.from_bytes(data[40:44], "little") == len(m.canonical(env.body))
    for i in (0, 5, 20, 50, len(data) - 1):
        bad = bytearray(data)
        bad[i] ^= 1
        with pytest.raises(m.MeshError):
            m.decode(bytes(bad))
    with pytest.raises(m.MeshError, match="shorter"):
        m.decode(data[:50])
    with pytest.raises(m.MeshError):
        m.decode(data + b"x")
    deep = m.encode(m.REQUEST, {"a": [[[[[[[[[[1]]]]]]]]]]}, me)
    with pytest.raises(m.MeshError, match="depth"):
        m.decode(deep)
    with pytest.raises(m.MeshError, match="body of"):
        m.encode(m.REQUEST, {"prompt": "x" * (m.MAX_BODY + 1)}, me)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_decoding_random_bytes_only_ever_refuses(data):
    try:
        m.decode(data)
    except m.MeshError:
        pass


def test_queue_orders_by_standing_and_age_and_is_bounded():
    now = [0.0]
    q = StandingQueue(3, aging_s=10.0, clock=lambda: now[0])
    assert q.push(Queued("a", "low", {}, 0.2, 0.0, "p"))
    assert q.push(Queued("b", "high", {}, 0.9, 0.0, "p"))
    assert q.push(Queued("c", "mid", {}, 0.5, 0.0, "p"))
    assert not q.push(Queued("d", "x", {}, 1.0, 0.0, "p")) and len(q) == 3
    assert q.pop().id == "b"
    now[0] = 100.0  # an old low-standing request outranks a fresh one from the best client
    q.push(Queued("e", "best", {}, 1.0, 99.0, "p"))
    assert q.pop().id == "c" and q.pop().id == "a" and q.pop().id == "e"


# -- real workers ---------------------------------------------------------------------------


def test_ask_gives_the_backends_exact_answer_and_records_stats(tmp_path, workers):
    procs = workers(2)
    s = client_settings(tmp_path, procs, spot_check_rate=0.0)
    expected = deterministic().complete("the sensor says", max_tokens=12).text
    pieces = []

    async def body(client):
        answers = []
        for _ in range(4):
            answers.append(await client.ask(
                {"prompt": "the sensor says", "max_tokens": 12, "temperature": 0.0},
                on_text=pieces.append,
            ))  # fmt: skip
        await asyncio.sleep(0.5)  # announcements arrive
        return answers, {d: v.announced for d, v in client.workers.items()}, client.stats.rows()

    answers, announced, rows = asyncio.run(with_client(s, body))
    assert all(a.text == expected for a in answers)
    assert "".join(pieces) == expected * 4
    assert all(
        a["models"] == ["deterministic"] and 0 <= a["health"] <= 1 for a in announced.values()
    )
    assert sum(r["ok"] for r in rows) == 4 and sum(r["requests"] for r in rows) == 4


def test_a_lying_worker_is_caught_and_banned_and_no_honest_one_is(tmp_path, workers):
    procs = workers(3, seeds=[0, 0, 7])  # the third serves "the same model" with other output
    liar = procs[2].did
    s = client_settings(tmp_path, procs, spot_check_rate=1.0)

    async def body(client):
        for i in range(12):
            await client.ask({"prompt": f"reading {i}", "max_tokens": 8, "temperature": 0.0})
            if client.banned(liar):
                return i + 1, {d: client.banned(d) for d in client.workers}
        return None, {d: client.banned(d) for d in client.workers}

    requests, banned = asyncio.run(with_client(s, body, referee=deterministic()))
    assert requests is not None and requests <= 6, "the liar must be caught within 6 requests"
    assert banned == {procs[0].did: False, procs[1].did: False, liar: True}


def test_failover_when_a_worker_dies(tmp_path, workers):
    procs = workers(2)
    # a long first-token timeout: the answer must come from noticing the disconnect, not from
    # the timeout, and the margin between the two survives a busy machine
    s = client_settings(tmp_path, procs, spot_check_rate=0.0, first_token_timeout_s=60.0)
    expected = deterministic().complete("after the crash", max_tokens=10).text

    async def body(client):
        first = client.ranked()[0].did
        victim = next(p for p in procs if p.did == first)
        victim.kill()  # kill -9: the client notices the disconnect and asks the other worker
        start = time.perf_counter()
        answer = await client.ask({"prompt": "after the crash", "max_tokens": 10, "temperature": 0})
        return answer, victim.did, time.perf_counter() - start

    answer, dead, seconds = asyncio.run(with_client(s, body))
    assert answer.text == expected and answer.worker != dead
    assert seconds < 30.0


def test_bad_requests_get_one_error_each_and_the_worker_keeps_serving(tmp_path, workers):
    (proc,) = workers(1)
    s = client_settings(tmp_path, [proc], spot_check_rate=0.0)
    me = load_identity(s.key)
    stranger = Identity.generate()

    async def body(client):
        t = client.t
        now = int(time.time() * 1000)
        good = {"id": "abcdef012345", "ts_ms": now, "prompt": "x", "max_tokens": 2}
        cases = {
            "garbage": b"\x00" * 10,
            "bad-field": m.encode(m.REQUEST, {**good, "id": "bad id!"}, me),
            "stale": m.encode(m.REQUEST, {**good, "id": "stale0001", "ts_ms": now - 10**7}, me),
            "huge-max": m.encode(m.REQUEST, {**good, "id": "huge00001", "max_tokens": 10**9}, me),
            "forged": bytearray(m.encode(m.REQUEST, {**good, "id": "forged001"}, stranger)),
        }
        cases["forged"][-1] ^= 1
        replies = {}
        for data in cases.values():
            await t.asend(proc.did, bytes(data))
        ok = m.encode(m.REQUEST, good, me)
        await t.asend(proc.did, ok)
        await t.asend(proc.did, ok)  # the replay
        errors, done = [], 0
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (len(errors) < 6 or not done):
            message = await t.recv(0.5)
            if message is None:
                continue
            env = m.decode(message.payload)
            if env.type == m.ERROR:
                errors.append(env.body["message"])
            done += env.type == m.DONE
        replies["errors"], replies["done"] = errors, done
        return replies

    client_settings_obj = s

    async def raw():
        client = open_client(client_settings_obj)
        await client.t.start()  # no dispatcher: this test reads the replies itself
        try:
            deadline = time.monotonic() + 20
            while proc.did not in client.t.connected():
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            return await body(client)
        finally:
            await client.t.aclose()

    replies = asyncio.run(raw())
    text = "\n".join(replies["errors"])
    assert len(replies["errors"]) == 6, text
    for needle in ("shorter than its header", "id must be", "replay window", "max_tokens",
                   "signature does not verify", "replayed"):  # fmt: skip
        assert needle in text
    assert replies["done"] == 1
    assert proc.proc.poll() is None  # still serving


def test_worker_and_ask_command_line(tmp_path, workers):
    from conftest import run_qres

    (proc,) = workers(1)
    key = key_file(tmp_path, "cli")
    profile = tmp_path / "client.toml"
    profile.write_text(
        f'[profile]\nname = "client"\n\n[mesh]\nkey = "{key}"\nspot_check_rate = 0.0\n'
        f'workers = [{{ address = "{proc.address}", did = "{proc.did}" }}]\n'
    )
    out = run_qres(
        "mesh", "ask", "hello mesh", "--profile", str(profile), "--max-tokens", "5", "--json"
    )
    assert out.returncode == 0, out.stderr.decode()
    body = json.loads(out.stdout)
    assert body["text"] == deterministic().complete("hello mesh", max_tokens=5).text
    assert body["worker"] == proc.did
    out = run_qres(
        "mesh", "ask", "hi", "--profile", str(tmp_path / "client.toml"), "--max-tokens", "0"
    )
    assert out.returncode == 1 and out.stderr.decode().startswith("qres: error:")


def test_gateway_serves_the_openai_api_over_the_mesh(tmp_path, workers):
    import socket
    import subprocess
    import sys
    import urllib.request
    from pathlib import Path

    (proc,) = workers(1)
    key = key_file(tmp_path, "gw")
    profile = tmp_path / "gw.toml"
    profile.write_text(
        f'[profile]\nname = "gw"\n\n[mesh]\nkey = "{key}"\nspot_check_rate = 0.0\n'
        f'workers = [{{ address = "{proc.address}", did = "{proc.did}" }}]\n'
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    exe = Path(sys.executable).with_name("qres")
    gw = subprocess.Popen(
        [str(exe), "mesh", "gateway", "--profile", str(profile), "--port", str(port)],
        stderr=subprocess.PIPE,
    )
    try:
        body = json.dumps({"prompt": "gateway test", "max_tokens": 6}).encode()
        deadline = time.monotonic() + 30
        while True:
            try:
                request = urllib.request.Request(
                    f"http://127.0.0.1:{port}/v1/completions",
                    body,
                    {"Content-Type": "application/json"},
                )
                with urllib.request.urlopen(request, timeout=10) as response:
                    reply = json.loads(response.read())
                break
            except OSError:
                assert gw.poll() is None and time.monotonic() < deadline, gw.stderr.read()
                time.sleep(0.2)
        expected = deterministic().complete("gateway test", max_tokens=6).text
        assert reply["choices"][0]["text"] == expected
    finally:
        gw.terminate()
        gw.wait(10)


LLAMA = 'use = "llama-cpp"\nn_threads = 1\nn_ctx = 1024\nmax_tokens = 128'


def test_real_model_answer_survives_kill_9_mid_stream(tmp_path, llama_backend):
    """Two SmolLM2 workers; the one streaming is killed after its first piece; the client's
    text equals the model's own greedy completion, the rest coming from the other worker."""
    procs = [WorkerProcess(worker_profile(tmp_path, f"llama{i}", LLAMA)) for i in range(2)]
    try:
        s = client_settings(tmp_path, procs, spot_check_rate=0.0, first_token_timeout_s=60.0)
        prompt = "The three primary colours are"
        expected = llama_backend.complete(prompt, max_tokens=24).text
        streamed = []

        async def body(client):
            def on_text(text):
                streamed.append(text)
                if len(streamed) == 1:
                    victim = next(p for p in procs if p.did == client.pending_worker())
                    victim.kill()

            return await client.ask(
                {"prompt": prompt, "max_tokens": 24, "temperature": 0.0}, on_text=on_text
            )

        answer = asyncio.run(with_client(s, body))
        assert answer.text == expected and "".join(streamed) == expected
        assert len(answer.tried) == 2 and answer.worker == answer.tried[1]
    finally:
        for p in procs:
            p.stop()


def test_the_router_escalates_to_the_mesh_tier(tmp_path, workers):
    from qres.llm.route_settings import RouterSettings
    from qres.llm.router import Router

    (proc,) = workers(1)
    key = key_file(tmp_path, "router")
    mesh_profile = tmp_path / "mesh-client.toml"
    mesh_profile.write_text(
        f'[profile]\nname = "mesh-client"\n\n[mesh]\nkey = "{key}"\nspot_check_rate = 0.0\n'
        f'workers = [{{ address = "{proc.address}", did = "{proc.did}" }}]\n'
    )
    tiers = [
        {"name": "t0", "kind": "tools"},
        {"name": "t1", "kind": "mesh", "profile": str(mesh_profile), "max_tokens": 6},
    ]
    router = Router(RouterSettings(tiers=tiers))
    try:
        assert router.route("What is 2 + 2?").tier == "t0"
        out = router.route("Tell me about the swarm")
        chat = [{"role": "user", "content": "Tell me about the swarm"}]
        assert out.ok and out.tier == "t1"
        assert out.answer == deterministic().chat(chat, max_tokens=6).text
    finally:
        router.close()


def test_a_worker_sending_garbage_is_failed_over_and_loses_reputation(tmp_path, workers):
    """An in-process rogue worker on a real TCP transport answers every request with garbage
    bytes and a chunk whose signed digest does not match; the client fails over to the honest
    worker process, keeps the evidence and lowers the rogue's reputation."""
    from qres.builtin_plugins.transports.tcp import TcpConfig, TcpTransport

    (honest,) = workers(1)
    rogue_id = Identity.generate()

    async def run():
        rogue = TcpTransport(TcpConfig(swarm="qres-mesh"), identity=rogue_id)
        await rogue.start()

        async def misbehave():
            while True:
                message = await rogue.recv()
                rid = m.decode(message.payload).body.get("id")
                if rid is None:
                    continue
                await rogue.asend(message.src, b"\xff" * 64)
                chunk = {"id": rid, "n": 0, "text": "forged", "tokens": 1}
                await rogue.asend(message.src, m.encode(m.CHUNK, chunk, rogue_id))
                done = {"id": rid, "text_sha256": "0" * 64, "tokens": 1, "ms": 1.0}
                await rogue.asend(message.src, m.encode(m.DONE, done, rogue_id))

        task = asyncio.ensure_future(misbehave())
        rogue_entry = {"address": f"127.0.0.1:{rogue.port}", "did": rogue_id.did}
        s = MeshSettings(
            key=str(key_file(tmp_path, "c")),
            workers=[rogue_entry, honest.entry()],
            spot_check_rate=0.0,
        )

        async def body(client):
            client.workers[honest.did].own_ms.append(10_000.0)  # the rogue looks faster
            answer = await client.ask({"prompt": "p", "max_tokens": 4, "temperature": 0.0})
            return answer, client.garbage, client.reputation(rogue_id.did)

        try:
            answer, garbage, rep = await with_client(s, body)
        finally:
            task.cancel()
            await rogue.aclose()
        return answer, garbage, rep

    answer, garbage, rep = asyncio.run(run())
    assert answer.worker == honest.did and answer.tried[0] == rogue_id.did
    assert answer.text == deterministic().complete("p", max_tokens=4).text
    assert garbage >= 1 and rep < 1.0


class InflatingWorker(Worker):
    """Serves honestly but announces a p50 latency far below what it really takes."""

    def announcement(self) -> dict:
        return {**super().announcement(), "p50_ms": 0.0001, "success_rate": 1.0, "health": 1.0}


def test_a_worker_inflating_its_score_is_penalised_and_an_honest_one_is_not(tmp_path, workers):
    """The inflating worker's signed announcements contradict the service times it signed for
    this client: each such announcement costs reputation (kept as evidence), which ranks it
    behind an honest worker as fast; a statistical penalty alone bans nobody."""
    (honest,) = workers(1)
    liar = InProcessWorker(tmp_path, "liar", deterministic(), InflatingWorker)
    try:
        s = client_settings(tmp_path, [honest, liar], spot_check_rate=0.0)

        async def body(client):
            for i in range(8):  # each in turn, picked by its announced p50
                for did, view in client.workers.items():
                    view.own_ms.clear()
                    view.own_ms.extend([] if (did == liar.did) != bool(i % 2) else [1e9])
                answer = await client.ask({"prompt": f"reading {i}", "max_tokens": 6,
                                           "temperature": 0})  # fmt: skip
                assert answer.worker == (honest.did if i % 2 else liar.did)
            deadline = time.monotonic() + 20
            while client.reputation(liar.did) >= 0.5 and time.monotonic() < deadline:
                await asyncio.sleep(0.1)  # the liar's next announcements
            for view in client.workers.values():  # equally fast by own measurement
                view.own_ms.clear()
                view.own_ms.append(5.0)
            rows = client.stats.db.execute(
                "SELECT did, kind, message FROM evidence WHERE kind = 'inflated'"
            ).fetchall()
            return (
                {d: (client.reputation(d), client.banned(d)) for d in client.workers},
                [v.did for v in client.ranked()],
                rows,
            )

        standing, ranked, rows = asyncio.run(with_client(s, body))
    finally:
        liar.stop()
    assert standing[liar.did][0] < 0.5 and not standing[liar.did][1]
    assert standing[honest.did] == (1.0, False)
    assert ranked == [honest.did, liar.did]
    assert rows and {r[0] for r in rows} == {liar.did}
    evidence = m.decode(rows[0][2])  # the liar's own signed claim
    assert (evidence.type, evidence.did, evidence.body["p50_ms"]) == (m.ANNOUNCE, liar.did, 0.0001)


class GatedBackend:
    """The deterministic backend streaming word by word, holding after the first word until
    the test releases it (or 60 s pass): a reader that sees the first word while the gate is
    closed proves the pieces travel on as they are made."""

    def __init__(self):
        import threading

        self.inner = deterministic()
        self.gate = threading.Event()
        self.made = 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def stream_chat(self, messages, **kwargs):
        from qres.kinds.llm import Chunk

        done = self.inner.chat(messages, **kwargs)
        words = done.text.split(" ")
        for i, word in enumerate(words):
            self.made += 1
            last = i == len(words) - 1
            yield Chunk(word if i == 0 else " " + word, 1, done.finish_reason if last else None)
            if i == 0:
                self.gate.wait(60)


def test_the_gateway_streams_pieces_as_they_come_and_they_make_the_whole_answer(tmp_path):
    """`qres mesh gateway` (a real process) streams a worker's pieces as server-sent events as
    they are generated: the first arrives while the worker's backend is still held after its
    first word; the pieces concatenate to the non-streamed answer."""
    import socket
    import subprocess
    import sys
    from pathlib import Path

    import httpx

    backend = GatedBackend()
    worker = InProcessWorker(tmp_path, "gated", backend)
    key = key_file(tmp_path, "gw")
    profile = tmp_path / "gw.toml"
    profile.write_text(
        f'[profile]\nname = "gw"\n\n[mesh]\nkey = "{key}"\nspot_check_rate = 0.0\n'
        f'workers = [{{ address = "{worker.address}", did = "{worker.did}" }}]\n'
    )
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    exe = Path(sys.executable).with_name("qres")
    gw = subprocess.Popen(
        [str(exe), "mesh", "gateway", "--profile", str(profile), "--port", str(port)],
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    chat = [{"role": "user", "content": "stream to me"}]
    request = {"messages": chat, "max_tokens": 12, "temperature": 0}
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except httpx.HTTPError:
                assert gw.poll() is None and time.monotonic() < deadline, gw.stderr.read()
                time.sleep(0.2)
        pieces, made_at_first = [], None
        with httpx.stream("POST", url, json={**request, "stream": True}, timeout=90) as reply:
            assert reply.status_code == 200
            for line in reply.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                delta = json.loads(line[6:])["choices"][0]["delta"]
                if delta.get("content"):
                    if made_at_first is None:
                        made_at_first = backend.made
                        backend.gate.set()
                    pieces.append(delta["content"])
        whole = httpx.post(url, json=request, timeout=90).json()["choices"][0]["message"]
    finally:
        backend.gate.set()
        gw.terminate()
        gw.wait(10)
        worker.stop()
    expected = deterministic().chat(chat, max_tokens=12).text
    assert made_at_first == 1, "the first piece must arrive before the second is made"
    assert len(pieces) >= 2 and "".join(pieces) == whole["content"] == expected


class WordStream:
    """The deterministic backend streaming one word per chunk, as fast as it can."""

    def __init__(self):
        self.inner = plugins.create(
            "llm_backend", {"use": "deterministic", "max_tokens": 4096}, None
        )

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def stream(self, prompt, **kwargs):
        from qres.kinds.llm import Chunk

        done = self.inner.complete(prompt, **kwargs)
        words = done.text.split(" ")
        for i, word in enumerate(words):
            last = i == len(words) - 1
            yield Chunk(word if i == 0 else " " + word, 1, done.finish_reason if last else None)


def test_a_fast_backend_streams_in_merged_chunks_within_the_connections_frame_limit(tmp_path):
    """3000 tokens made at once: one signed chunk each would exceed the client's frame rate
    limit (1000 frames of burst) and cost the connection; merged, the answer arrives whole."""
    worker = InProcessWorker(tmp_path, "fast", WordStream())
    try:
        s = client_settings(tmp_path, [worker], spot_check_rate=0.0, attempts=1)

        async def body(client):
            return await client.ask({"prompt": "long", "max_tokens": 3000, "temperature": 0})

        answer = asyncio.run(with_client(s, body))
    finally:
        worker.stop()
    expected = WordStream().inner.complete("long", max_tokens=3000)
    done = m.decode(answer.done).body
    assert answer.text == expected.text and answer.tokens == done["tokens"] == 3000
    assert done["chunks"] < 1000
