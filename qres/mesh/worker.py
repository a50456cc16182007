"""``qres mesh worker``: serves one LLM backend to the mesh over TCP+Noise (docs/mesh.md)."""

from __future__ import annotations

import asyncio
import hashlib
import time

from qres.kernel.errors import QresError
from qres.mesh import messages as m
from qres.mesh.health import ServiceStats, health
from qres.mesh.queue import Queued, StandingQueue
from qres.mesh.settings import MeshSettings
from qres.robust.reputation import REP_ONE, Ledger

#: Requesters whose standing a worker tracks; others get :data:`UNTRACKED_STANDING`.
MAX_CLIENTS = 1024
UNTRACKED_STANDING = 0.5
#: Request ids remembered at most (beyond, new requests are answered busy).
MAX_SEEN = 1 << 16
#: Shortest time between two chunk messages of one answer (at most 250 a second, half the
#: TCP transport's default frame rate limit).
CHUNK_INTERVAL_S = 0.004


def _int_in(value: object, lo: int, hi: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi


def parse_request(body: dict) -> dict:
    """The checked fields of a request body (docs/mesh.md, "request"); MeshError if bad."""
    rid = m.field(body, "id", str, "request")
    if not 8 <= len(rid) <= 64 or not rid.isalnum():
        raise m.MeshError("mesh request: id must be 8 to 64 letters and digits")
    out = {"id": rid, "ts_ms": m.field(body, "ts_ms", int, "request")}
    prompt, messages = body.get("prompt"), body.get("messages")
    if (prompt is None) == (messages is None):
        raise m.MeshError("mesh request: give exactly one of prompt and messages")
    if prompt is not None and not isinstance(prompt, str):
        raise m.MeshError("mesh request: prompt is not a string")
    if messages is not None:
        from qres.kinds.llm import check_messages

        messages = list(check_messages("mesh", messages))
    max_tokens = body.get("max_tokens")
    if max_tokens is not None and not _int_in(max_tokens, 1, 1 << 16):
        raise m.MeshError("mesh request: max_tokens must be an integer in [1, 65536]")
    temperature = body.get("temperature", 0.0)
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
        raise m.MeshError("mesh request: temperature must be a number")
    if not 0 <= temperature <= 2:
        raise m.MeshError("mesh request: temperature must lie in [0, 2]")
    stop = body.get("stop") or []
    if (
        not isinstance(stop, list)
        or len(stop) > 4
        or not all(isinstance(x, str) and x for x in stop)
    ):
        raise m.MeshError("mesh request: stop must be up to 4 non-empty strings")
    seed = body.get("seed")
    if seed is not None and not _int_in(seed, 0, (1 << 32) - 1):
        raise m.MeshError("mesh request: seed must be an integer in [0, 2**32)")
    out.update(
        prompt=prompt,
        messages=messages,
        max_tokens=max_tokens,
        temperature=float(temperature),
        stop=stop,
        seed=seed,
    )
    return out


async def _coalesced(pieces: asyncio.Queue):
    """The backend's chunks from ``pieces`` (ended by None, an exception raises), merged so
    that at most one goes out per :data:`CHUNK_INTERVAL_S`: pieces made while the previous
    chunk was sent, or sooner than that after it, travel together. A fast backend then
    neither floods the client's connection (whose frame rate is limited) nor pays a signed
    message per token; a slow one streams every piece as it comes."""
    from qres.kinds.llm import Chunk

    sent = -CHUNK_INTERVAL_S
    while (item := await pieces.get()) is not None:
        if isinstance(item, BaseException):
            raise item
        wait = sent + CHUNK_INTERVAL_S - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        batch, failure, ended = [item], None, False
        while not pieces.empty():
            more = pieces.get_nowait()
            if more is None or isinstance(more, BaseException):
                failure, ended = more, True
                break
            batch.append(more)
        reason = next((c.finish_reason for c in reversed(batch) if c.finish_reason), None)
        yield Chunk("".join(c.text for c in batch), sum(c.tokens for c in batch), reason)
        sent = time.monotonic()
        if failure is not None:
            raise failure
        if ended:
            return


class Worker:
    """A mesh worker: ``transport`` (a started-on-run TcpTransport), ``backend``, ``identity``."""

    def __init__(self, settings: MeshSettings, backend, transport, identity, clock=time.time,
                 mqtt=None):  # fmt: skip
        self.s, self.backend, self.t, self.identity = settings, backend, transport, identity
        #: The MQTT transport announcements are also published on (None: TCP only).
        self.mqtt = mqtt
        self.clock = clock
        self.queue = StandingQueue(settings.queue_size, settings.aging_s)
        self.ready = asyncio.Event()
        self.stats = ServiceStats()
        self.clients = Ledger(MAX_CLIENTS)
        self.client_index: dict[str, int] = {}
        self.seen: dict[tuple[str, str], float] = {}
        self.refused: dict[str, int] = {}
        self.seq = 0

    # -- standing and replay ---------------------------------------------------------------

    def standing(self, did: str) -> float:
        """The requester's reputation at this worker, in [0, 1]."""
        i = self.client_index.get(did)
        if i is None and len(self.client_index) < MAX_CLIENTS:
            i = self.client_index[did] = len(self.client_index)
        return UNTRACKED_STANDING if i is None else int(self.clients.rep[i]) / REP_ONE

    def _penalise(self, did: str | None) -> None:
        i = self.client_index.get(did) if did else None
        if i is not None:
            self.clients.adjust([i], -self.clients.pen_outlier)

    def _fresh(self, did: str, request: dict) -> None:
        now = self.clock()
        window = self.s.replay_window_s
        if abs(now - request["ts_ms"] / 1000) > window:
            raise m.MeshError("mesh request: timestamp outside the replay window; check clocks")
        for key in [k for k, t in self.seen.items() if t < now]:
            del self.seen[key]
        key = (did, request["id"])
        if key in self.seen:
            raise m.MeshError("mesh request: replayed (this id was already received)")
        if len(self.seen) >= MAX_SEEN:
            raise m.MeshError("mesh request: too many requests in the replay window; retry")
        self.seen[key] = now + window

    # -- receiving -------------------------------------------------------------------------

    async def _send(self, peer: str, kind: int, body: dict) -> None:
        await self.t.asend(peer, m.encode(kind, body, self.identity))

    async def receive_loop(self) -> None:
        """Take messages from the transport; queue requests, refuse bad ones."""
        while True:
            message = await self.t.recv()
            if message is not None:
                await self._on_message(message.src, message.payload)

    async def _on_message(self, peer: str, data: bytes) -> None:
        signer = rid = None
        try:
            envelope = m.decode(data)
            signer = envelope.did
            if envelope.type != m.REQUEST:
                return  # workers only take requests; announcements of others are ignored
            rid = envelope.body.get("id") if isinstance(envelope.body.get("id"), str) else None
            request = parse_request(envelope.body)
            self._fresh(signer, request)
        except QresError as exc:
            self.refused[str(exc)[:60]] = self.refused.get(str(exc)[:60], 0) + 1
            self._penalise(signer)
            await self._send(peer, m.ERROR, {"id": rid or "", "message": str(exc)[:500]})
            return
        item = Queued(request["id"], signer, request, self.standing(signer), time.monotonic(), peer)
        if not self.queue.push(item):
            body = {
                "id": item.id,
                "retry_after_ms": self.s.retry_after_ms,
                "queue": len(self.queue),
            }
            await self._send(peer, m.BUSY, body)
            return
        self.ready.set()

    # -- serving ---------------------------------------------------------------------------

    async def serve_loop(self) -> None:
        """Answer queued requests one at a time, highest priority first."""
        while True:
            item = self.queue.pop()
            if item is None:
                self.ready.clear()
                await self.ready.wait()
                continue
            await self._serve(item)

    async def _serve(self, item: Queued) -> None:
        r = item.body
        started = time.perf_counter()
        texts, tokens, reason, n = [], 0, "stop", 0
        try:
            async for chunk in self._generate(r):
                texts.append(chunk.text)
                tokens += chunk.tokens
                reason = chunk.finish_reason or reason
                body = {"id": item.id, "n": n, "text": chunk.text, "tokens": chunk.tokens}
                await self._send(item.peer, m.CHUNK, body)
                n += 1
        except Exception as exc:  # a backend failure is one error answer; the worker serves on
            self.stats.record((time.perf_counter() - started) * 1000, False, tokens)
            await self._send(item.peer, m.ERROR, {"id": item.id, "message": str(exc)[:500]})
            return
        text = "".join(texts)
        ms = (time.perf_counter() - started) * 1000
        self.stats.record(ms, True, tokens)
        i = self.client_index.get(item.did)
        if i is not None:
            self.clients.adjust([i], self.clients.reward)
        done = {
            "id": item.id,
            "text_sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
            "tokens": tokens,
            "chunks": n,
            "finish_reason": reason,
            "model": self.backend.model_id(),
            "ms": round(ms, 3),
        }
        await self._send(item.peer, m.DONE, done)

    async def _generate(self, r: dict):
        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue = asyncio.Queue()
        kwargs = {"max_tokens": r["max_tokens"], "temperature": r["temperature"], "stop": r["stop"]}
        if r["seed"] is not None:
            kwargs["seed"] = r["seed"]

        def produce() -> None:
            try:
                if r["messages"] is not None:
                    gen = self.backend.stream_chat(r["messages"], **kwargs)
                else:
                    gen = self.backend.stream(r["prompt"], **kwargs)
                for chunk in gen:
                    loop.call_soon_threadsafe(pieces.put_nowait, chunk)
            except Exception as exc:
                loop.call_soon_threadsafe(pieces.put_nowait, exc)
            finally:
                loop.call_soon_threadsafe(pieces.put_nowait, None)

        worker = loop.run_in_executor(None, produce)
        try:
            async for chunk in _coalesced(pieces):
                yield chunk
        finally:
            await asyncio.shield(worker)

    # -- announcing ------------------------------------------------------------------------

    def announcement(self) -> dict:
        """The body of the next signed score/health announcement."""
        self.seq += 1
        return {
            "seq": self.seq,
            "ts_ms": int(self.clock() * 1000),
            "models": [self.backend.model_id()],
            "queue": len(self.queue),
            "queue_size": self.s.queue_size,
            "tokens_served": self.stats.tokens,
            "requests": self.stats.requests,
            "p50_ms": self.stats.p50_ms(),
            "success_rate": self.stats.success_rate(),
            "health": health(len(self.queue), self.s.queue_size),
        }

    async def announce_loop(self) -> None:
        """Every ``announce_s``, one signed announcement on each channel of ``announce_via``:
        to every connected TCP peer, and published through the MQTT broker."""
        while True:
            data = m.encode(m.ANNOUNCE, self.announcement(), self.identity)
            if "tcp" in self.s.announce_via:
                await self.t.abroadcast(data)
            if self.mqtt is not None:
                await self.mqtt.abroadcast(data)
            await asyncio.sleep(self.s.announce_s)

    async def run(self) -> None:
        """Serve until cancelled."""
        tasks = [
            asyncio.ensure_future(self.receive_loop()),
            asyncio.ensure_future(self.serve_loop()),
            asyncio.ensure_future(self.announce_loop()),
        ]
        if self.mqtt is not None:
            from qres.mesh.announce import drain

            tasks.append(asyncio.ensure_future(drain(self.mqtt)))
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
