"""The mesh client: picks workers, streams answers, fails over, spot-checks (docs/mesh.md)."""

from __future__ import annotations

import asyncio
import hashlib
import random
import secrets
import statistics
import time
from collections import deque
from collections.abc import Callable

import attrs

from qres.kernel.errors import QresError
from qres.mesh import messages as m
from qres.mesh.settings import MeshSettings
from qres.mesh.stats import WorkerStats
from qres.robust.reputation import REP_ONE, Ledger, ReputationRules

#: Expected latency of a worker nobody has measured and that announced nothing yet.
UNKNOWN_MS = 1000.0
#: An announced p50 this many times below the service times a worker signed for us is a lie.
INFLATION_FACTOR = 4.0
POLL_S = 0.05
#: Lowest reputation used in ranking (a worker at 0 would otherwise never be compared).
MIN_STANDING = 0.05


@attrs.define
class WorkerView:
    """What the client knows of one worker."""

    did: str
    index: int
    announced: dict | None = None
    seq: int = 0
    own_ms: deque = attrs.field(factory=lambda: deque(maxlen=64))
    signed_ms: deque = attrs.field(factory=lambda: deque(maxlen=64))
    answered: int = 0
    busy_until: float = 0.0


@attrs.frozen
class Answer:
    """A completed request: text, tokens, finish reason, the worker that answered it, the
    workers tried (in order) and the signed DONE message."""

    id: str
    text: str
    tokens: int
    finish_reason: str
    worker: str
    tried: tuple[str, ...]
    done: bytes = b""


class Inbox:
    """The messages of one request, oldest first. Waiting on it costs a future and a timer,
    not a task per message (a stream of a thousand pieces waits a thousand times)."""

    def __init__(self):
        self.items: deque = deque()
        self._waiter: asyncio.Future | None = None

    def put_nowait(self, item) -> None:
        """Add a message and wake the waiter."""
        self.items.append(item)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(True)

    async def wait(self, seconds: float) -> bool:
        """Wait until a message is in, at most ``seconds``; whether one is."""
        if self.items:
            return True
        loop = asyncio.get_running_loop()
        self._waiter = waiter = loop.create_future()
        timer = loop.call_later(seconds, lambda: waiter.done() or waiter.set_result(False))
        try:
            return await waiter
        finally:
            timer.cancel()
            self._waiter = None


class Failover(Exception):
    """This worker will not answer this request (timeout, disconnect, error, bad answer)."""


class MeshClient:
    """Sends requests to the workers of ``settings`` over ``transport`` as ``identity``.

    ``referee`` (optional) is a local backend that settles disagreeing spot checks; ``rng``
    draws which temperature-0 answers are spot-checked.
    """

    def __init__(self, settings: MeshSettings, transport, identity, referee=None, rng=None,
                 announcements=None):  # fmt: skip
        self.s, self.t, self.identity = settings, transport, identity
        #: The MQTT transport announcements arrive on too (None: TCP only).
        self.announcements = announcements
        self.referee = referee
        self.rng = rng or random.Random()
        self.workers = {w["did"]: WorkerView(w["did"], i) for i, w in enumerate(settings.workers)}
        rules = ReputationRules(ban_threshold=settings.ban_threshold)
        self.ledger = Ledger(max(1, len(self.workers)), rules)
        self.stats = WorkerStats(settings.state)
        self.pending: dict[str, tuple[str, Inbox]] = {}
        self.garbage = 0
        self._tasks: list[asyncio.Task] = []

    async def start(self) -> None:
        """Start the transports and the dispatchers."""
        await self.t.start()
        self._tasks.append(asyncio.ensure_future(self._dispatch()))
        if self.announcements is not None:
            from qres.mesh.announce import listen

            await self.announcements.start()
            self._tasks.append(
                asyncio.ensure_future(listen(self.announcements, self._announced, self._garbage))
            )

    async def aclose(self) -> None:
        """Stop everything."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.t.aclose()
        if self.announcements is not None:
            await self.announcements.aclose()
        self.stats.close()

    async def wait_connected(self, count: int, timeout: float) -> None:
        """Wait until ``count`` workers are connected (QresError after ``timeout``)."""
        deadline = time.monotonic() + timeout
        while len([d for d in self.t.connected() if d in self.workers]) < count:
            if time.monotonic() > deadline:
                raise QresError(f"mesh: fewer than {count} workers reachable; are they running?")
            await asyncio.sleep(POLL_S)

    def pending_worker(self) -> str | None:
        """The worker asked for the most recent request still waiting (None: none waits)."""
        return next(reversed(self.pending.values()))[0] if self.pending else None

    # -- reputations -------------------------------------------------------------------------

    def banned(self, did: str) -> bool:
        """Whether the client has banned ``did``."""
        return bool(self.ledger.banned()[self.workers[did].index])

    def reputation(self, did: str) -> float:
        """The worker's reputation in [0, 1]."""
        return int(self.ledger.rep[self.workers[did].index]) / REP_ONE

    def _punish(self, did: str, penalty: int, kind: str, detail: str, rid: str, proof=b"") -> None:
        view = self.workers[did]
        if kind == "altered":  # a signed answer proven wrong: attributable, bannable
            self.ledger.record_fault([view.index])
        else:  # suspicion lowers the reputation; only a recorded fault bans
            self.ledger.adjust([view.index], -penalty)
        newly = self.ledger.ban_low(0)
        self.stats.evidence(did, rid, kind, detail, proof)
        self.stats.set_standing(did, self.reputation(did), self.banned(did))
        if len(newly):
            self.t.ban(did)

    def _reward(self, did: str) -> None:
        self.ledger.adjust([self.workers[did].index], self.ledger.reward)
        self.stats.set_standing(did, self.reputation(did), self.banned(did))

    # -- receiving ---------------------------------------------------------------------------

    async def _dispatch(self) -> None:
        while True:
            message = await self.t.recv()
            if message is None or message.src not in self.workers:
                continue
            try:
                envelope = m.decode(message.payload)
            except m.MeshError as exc:
                self._garbage(message.src, str(exc))
                continue
            if envelope.did != message.src:
                continue  # workers sign their own messages; anything else is relayed noise
            if envelope.type == m.ANNOUNCE:
                self._announced(envelope.did, envelope, message.payload)
                continue
            rid = envelope.body.get("id")
            waiting = self.pending.get(rid) if isinstance(rid, str) else None
            if waiting is not None and waiting[0] == envelope.did:
                waiting[1].put_nowait((envelope, message.payload))

    def _garbage(self, did: str, reason: str) -> None:
        self.garbage += 1
        self.stats.evidence(did, "", "garbage", reason)

    def _announced(self, did: str, envelope: m.Envelope, raw: bytes) -> None:
        """A verified announcement signed by ``did`` (from either channel)."""
        if did in self.workers:
            self._on_announce(self.workers[did], envelope.body, raw)

    def _on_announce(self, view: WorkerView, body: dict, raw: bytes) -> None:
        seq, ts = body.get("seq"), body.get("ts_ms")
        if not isinstance(seq, int) or not isinstance(ts, int) or seq <= view.seq:
            return  # replayed or reordered: the newer announcement stands
        if abs(time.time() - ts / 1000) > self.s.replay_window_s:
            return
        view.seq, view.announced = seq, body
        claimed, served = body.get("p50_ms"), body.get("requests")
        # Judged only once the worker has signed 3 answers for us, and only an announcement
        # that counts them (one sent before them may arrive later over another channel).
        counts_ours = isinstance(served, int) and served >= view.answered
        if isinstance(claimed, (int, float)) and len(view.signed_ms) >= 3 and counts_ours:
            measured = statistics.median(view.signed_ms)
            if claimed * INFLATION_FACTOR < measured:
                detail = f"announced p50 {claimed} ms, signed service times median {measured} ms"
                self._punish(view.did, self.ledger.pen_outlier, "inflated", detail, "", raw)

    # -- choosing ----------------------------------------------------------------------------

    def expected_ms(self, view: WorkerView) -> float:
        """Own measurements first (median); else the announced p50 times (1 + queue), so a
        newly announced worker (p50 0) is tried early; else :data:`UNKNOWN_MS`."""
        if view.own_ms:
            return statistics.median(view.own_ms)
        if view.announced and isinstance(view.announced.get("p50_ms"), (int, float)):
            queue = view.announced.get("queue", 0)
            queue = queue if isinstance(queue, int) and queue >= 0 else 0
            return float(view.announced["p50_ms"]) * (1 + queue)
        return UNKNOWN_MS

    def ranked(self, exclude=()) -> list[WorkerView]:
        """Connected, unbanned, not-busy workers, fastest expected first."""
        now, live = time.monotonic(), set(self.t.connected())
        views = [
            v for v in self.workers.values()
            if v.did in live and v.did not in exclude and not self.banned(v.did)
            and v.busy_until <= now
        ]  # fmt: skip
        return sorted(views, key=lambda v: (self._rank_ms(v), v.did))

    def _rank_ms(self, view: WorkerView) -> float:
        """Expected latency divided by reputation: at half the reputation a worker must be
        twice as fast to be picked, so inflating a score or sending garbage does not pay."""
        return self.expected_ms(view) / max(self.reputation(view.did), MIN_STANDING)

    # -- asking ------------------------------------------------------------------------------

    async def ask(self, request: dict, on_text: Callable[[str], None] | None = None) -> Answer:
        """Answer ``request`` (prompt or messages, max_tokens, temperature, stop, seed),
        streaming new text to ``on_text``; fails over with the same request id."""
        rid = secrets.token_hex(16)
        tried: list[str] = []
        emitted = [""]
        for _ in range(self.s.attempts * 4):
            if len(tried) >= self.s.attempts:
                break
            choices = self.ranked(exclude=tried)
            if not choices:
                if not await self._wait_for_worker(tried):
                    break
                continue
            view = choices[0]
            tried.append(view.did)
            try:
                answer = await self._attempt(view, rid, request, emitted, on_text, tuple(tried))
            except Failover:
                continue
            if request.get("temperature", 0) == 0 and self.rng.random() < self.s.spot_check_rate:
                await self.spot_check(request, answer)
            return answer
        raise QresError(f"mesh: no worker answered request {rid} (tried {len(tried)})")

    async def _wait_for_worker(self, tried: list[str]) -> bool:
        now = time.monotonic()
        hints = [v.busy_until - now for v in self.workers.values() if v.did not in tried]
        hints = [h for h in hints if h > 0]
        if not hints:
            return False
        await asyncio.sleep(min(hints))
        return True

    async def _attempt(self, view, rid, request, emitted, on_text, tried) -> Answer:
        body = {**request, "id": rid, "ts_ms": int(time.time() * 1000)}
        queue = Inbox()
        self.pending[rid] = (view.did, queue)
        started = time.perf_counter()
        self.stats.add(view.did, requests=1)
        try:
            if not await self.t.asend(view.did, m.encode(m.REQUEST, body, self.identity)):
                raise Failover
            return await self._collect(view, rid, queue, started, emitted, on_text, tried)
        except Failover:
            self.stats.add(view.did, failures=1)
            view.own_ms.append((time.perf_counter() - started) * 1000 * 4)
            raise
        finally:
            self.pending.pop(rid, None)

    async def _next(self, view, inbox: Inbox, timeout: float):
        """The next message for a request; Failover if the worker disconnects or ``timeout``
        passes first (checked every :data:`POLL_S`)."""
        deadline = time.monotonic() + timeout
        while not inbox.items:
            if not await inbox.wait(POLL_S):
                if view.did not in self.t.connected() or time.monotonic() > deadline:
                    raise Failover
        return inbox.items.popleft()

    async def _collect(self, view, rid, queue, started, emitted, on_text, tried) -> Answer:
        parts: list[str] = []
        timeout = self.s.first_token_timeout_s
        while True:
            envelope, raw = await self._next(view, queue, timeout)
            b = envelope.body
            if envelope.type == m.BUSY:
                hint = b.get("retry_after_ms")
                hint = hint if isinstance(hint, int) and 0 < hint < 3_600_000 else 1000
                view.busy_until = time.monotonic() + hint / 1000
                self.stats.add(view.did, busy=1)
                raise Failover
            if envelope.type == m.ERROR:
                raise Failover
            if envelope.type == m.CHUNK:
                if b.get("n") != len(parts) or not isinstance(b.get("text"), str):
                    self._punish(view.did, self.ledger.pen_outlier, "garbage", "bad chunk", rid)
                    raise Failover
                parts.append(b["text"])
                self._emit("".join(parts), emitted, on_text)
                timeout = self.s.chunk_timeout_s
            elif envelope.type == m.DONE:
                return self._finish(view, rid, parts, b, raw, started, tried)

    @staticmethod
    def _emit(text: str, emitted: list[str], on_text) -> None:
        # After a failover the new worker repeats the text already shown (same model, same
        # request): only what goes beyond it is passed on.
        if on_text is not None and len(text) > len(emitted[0]) and text.startswith(emitted[0]):
            on_text(text[len(emitted[0]) :])
            emitted[0] = text

    def _finish(self, view, rid, parts, b, raw, started, tried) -> Answer:
        text = "".join(parts)
        if b.get("text_sha256") != hashlib.sha256(text.encode("utf-8")).hexdigest():
            self._punish(view.did, self.ledger.pen_outlier, "garbage", "digest mismatch", rid, raw)
            raise Failover
        tokens = b.get("tokens") if isinstance(b.get("tokens"), int) else 0
        ms = (time.perf_counter() - started) * 1000
        view.own_ms.append(ms)
        if isinstance(b.get("ms"), (int, float)):
            view.signed_ms.append(float(b["ms"]))
            view.answered += 1
        self.stats.add(view.did, ok=1, tokens=tokens, ms_total=ms)
        reason = b.get("finish_reason") if b.get("finish_reason") in ("stop", "length") else "stop"
        return Answer(rid, text, tokens, reason, view.did, tried, raw)

    # -- spot checks -------------------------------------------------------------------------

    async def spot_check(self, request: dict, answer: Answer) -> str:
        """Ask a second worker the same temperature-0 request; if the answers differ, the
        referee (the local backend, else a third worker) decides, and the worker that
        disagrees with it loses ``penalty_audit`` (a signed false answer). Returns
        ``"agree"``, ``"caught <did>"``, or ``"unresolved"``."""
        witness = await self._second_opinion(request, exclude=[answer.worker])
        if witness is None:
            return "unresolved"
        self.stats.add(answer.worker, spot_checks=1)
        if witness.text == answer.text:
            self._reward(answer.worker)
            self._reward(witness.worker)
            return "agree"
        truth = await self._referee(request, exclude=[answer.worker, witness.worker])
        if truth is None:
            return "unresolved"
        liars = [a for a in (answer, witness) if a.text != truth]
        for liar in liars:
            self.stats.add(liar.worker, spot_failures=1)
            detail = "answer differs from the referee's at temperature 0"
            self._punish(liar.worker, self.ledger.pen_audit, "altered", detail, liar.id, liar.done)
        return "caught " + ",".join(a.worker for a in liars) if liars else "agree"

    async def _second_opinion(self, request: dict, exclude: list[str]) -> Answer | None:
        choices = self.ranked(exclude=exclude)
        if not choices:
            return None
        # A random witness, not the fastest: every worker gets audited, including one the
        # ranking would never pick to answer.
        witness = self.rng.choice(choices)
        rid = secrets.token_hex(16)
        try:
            return await self._attempt(witness, rid, request, [""], None, ())
        except Failover:
            return None

    async def _referee(self, request: dict, exclude: list[str]) -> str | None:
        if self.referee is not None:
            kwargs = {"max_tokens": request.get("max_tokens"), "temperature": 0.0,
                      "stop": request.get("stop") or None}  # fmt: skip
            if request.get("messages") is not None:
                done = await asyncio.to_thread(self.referee.chat, request["messages"], **kwargs)
            else:
                done = await asyncio.to_thread(self.referee.complete, request["prompt"], **kwargs)
            return done.text
        third = await self._second_opinion(request, exclude)
        return None if third is None else third.text
