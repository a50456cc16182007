"""The engine in front of a backend: validation, rate limits, the bounded queue, the response
cache, energy-aware limits and metrics. Backend calls run in a worker thread, one at a time."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

import attrs

from qres.kernel.config import config_to_dict
from qres.kernel.errors import QresError
from qres.kinds.llm import (
    MAX_STOP_SEQUENCES,
    MAX_TEMPERATURE,
    Chunk,
    Completion,
    LLMBackend,
    check_messages,
)
from qres.llm.cache import ResponseCache, cache_key
from qres.llm.energy import battery_percent
from qres.llm.limits import BackendQueue, RateLimiter, TooManyRequests
from qres.llm.metrics import Metrics, RequestRecord
from qres.llm.settings import EngineSettings


class BackendFailure(QresError):
    """The backend raised while answering: HTTP ``500``; the engine keeps serving."""


class Unavailable(QresError):
    """The engine will not run the backend now (low battery, cache-only): HTTP ``503``."""


@attrs.frozen
class Request:
    """A validated generation request: ``prompt`` (completion) or ``messages`` (chat)."""

    prompt: str | None = None
    messages: tuple | None = None
    max_tokens: int | None = None
    temperature: float = 0.0
    stop: tuple[str, ...] = ()
    seed: int | None = None

    @property
    def deterministic(self) -> bool:
        """Greedy decoding: the same request always gives the same answer, so it is cached."""
        return self.temperature == 0


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _number(body: Mapping, key: str, default: Any, lo: float, hi: float, kind=float) -> Any:
    value = body.get(key, default)
    if value is None:
        return default
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        ok = ok and float(value).is_integer()
    if not ok or not lo <= value <= hi:
        what = "an integer" if kind is int else "a number"
        raise QresError(f"{key}={value!r}: give {what} in [{_num(lo)}, {_num(hi)}]")
    return kind(value)


def parse_request(body: object, settings: EngineSettings, chat: bool) -> Request:
    """Validate an OpenAI-style request body (chat or completion) into a :class:`Request`."""
    if not isinstance(body, Mapping):
        raise QresError("the request body must be a JSON object")
    prompt = messages = None
    if chat:
        messages = check_messages("engine", body.get("messages"))
        if len(messages) > settings.max_messages:
            raise QresError(f"{len(messages)} messages; send at most {settings.max_messages}")
        size = sum(len(m["content"]) for m in messages)
    else:
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1:
            prompt = prompt[0]
        if not isinstance(prompt, str):
            raise QresError("prompt must be one string")
        size = len(prompt)
    if size > settings.max_prompt_chars:
        raise QresError(f"prompt of {size} characters; send at most {settings.max_prompt_chars}")
    if body.get("n", 1) != 1:
        raise QresError("n must be 1: one choice per request")
    stop = body.get("stop")
    if stop is None:
        stops = ()
    elif isinstance(stop, str):
        stops = (stop,)
    elif isinstance(stop, list):
        stops = tuple(stop)
    else:  # a number, a bool or an object is no list of stop strings
        stops = (None,)
    if len(stops) > MAX_STOP_SEQUENCES or not all(isinstance(s, str) and s for s in stops):
        raise QresError(f"stop: give up to {MAX_STOP_SEQUENCES} non-empty strings")
    key = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    return Request(
        prompt=prompt,
        messages=messages,
        max_tokens=_number(body, key, None, 1, 1 << 20, int),
        temperature=_number(body, "temperature", 0.0, 0.0, MAX_TEMPERATURE),
        stop=stops,
        seed=_number(body, "seed", None, 0, (1 << 32) - 1, int),
    )


class Engine:
    """Serves requests from one backend under a profile's :class:`EngineSettings`.

    ``battery`` returns the charge in percent (None: mains power); the default reads the
    device's power supplies.
    """

    def __init__(
        self,
        backend: LLMBackend,
        settings: EngineSettings | None = None,
        battery: Callable[[], float | None] = battery_percent,
    ):
        self.backend = backend
        self.settings = settings or EngineSettings()
        self.battery = battery
        s = self.settings
        self.limiter = RateLimiter(s.rate_per_s, s.burst)
        self.queue = BackendQueue(s.queue_size, s.retry_after_s)
        self.cache = ResponseCache(s.cache_entries, s.cache_ttl_s, s.cache_path or None)
        self.metrics = Metrics()
        self._identity = {"backend": backend.name, "config": config_to_dict(backend.config)}

    def close(self) -> None:
        """Close the cache file and the backend."""
        self.cache.close()
        self.backend.close()

    # -- policy ----------------------------------------------------------------------------

    def _low_battery(self) -> bool:
        threshold = self.settings.low_battery_percent
        if not threshold:
            return False
        level = self.battery()
        return level is not None and level < threshold

    def _effective(self, request: Request) -> tuple[Request, bool]:
        """The request as the energy policy allows it, and whether only the cache may answer."""
        if not self._low_battery():
            return request, False
        if self.settings.low_battery == "cache-only":
            return request, True
        cap = self.settings.low_battery_max_tokens
        limit = request.max_tokens
        if limit is None or limit > cap:
            request = attrs.evolve(request, max_tokens=cap)
        return request, False

    def _key(self, request: Request) -> str:
        return cache_key(
            {
                **self._identity,
                "prompt": request.prompt,
                "messages": [dict(m) for m in request.messages or ()],
                "max_tokens": request.max_tokens,
                "stop": list(request.stop),
            }
        )

    def _call_kwargs(self, request: Request) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "stop": list(request.stop),
        }
        if request.seed is not None:
            kwargs["seed"] = request.seed
        return kwargs

    # -- serving ---------------------------------------------------------------------------

    async def complete(self, request: Request, client: str = "", priority: int = 5) -> tuple:
        """``(Completion, cache_hit)`` for ``request``; raises :class:`TooManyRequests`,
        :class:`Unavailable` or :class:`QresError` (bad request, backend failure)."""
        start = time.perf_counter()
        request, cache_only = self._effective(request)
        key = self._key(request) if request.deterministic else None
        try:
            self.limiter.admit(client)
            if key is not None and (hit := self.cache.get(key)) is not None:
                done = Completion(**hit)
                self._record(start, start, done.tokens, True, "ok")
                return done, True
            if cache_only:
                raise Unavailable("battery low: serving cached answers only; retry on power")
            await self.queue.acquire(priority)
        except QresError:
            self._record(start, start, 0, False, "rejected")
            raise
        queued = time.perf_counter()
        self.metrics.depth.set(self.queue.depth)
        try:
            done = await asyncio.to_thread(self._run, request)
        except QresError:
            self._record(start, queued, 0, False, "error")
            raise
        except Exception as exc:  # a backend bug is one error for this request, not a crash
            self._record(start, queued, 0, False, "error")
            raise BackendFailure(f"llm backend {self.backend.name!r} failed: {exc}") from exc
        finally:
            self.queue.release()
        if key is not None:
            self.cache.put(key, done.to_dict())
        self._record(start, queued, done.tokens, False, "ok")
        return done, False

    def _run(self, request: Request) -> Completion:
        kwargs = self._call_kwargs(request)
        if request.messages is not None:
            return self.backend.chat(list(request.messages), **kwargs)
        return self.backend.complete(request.prompt, **kwargs)

    async def stream(
        self, request: Request, client: str = "", priority: int = 5
    ) -> AsyncIterator[Chunk]:
        """The completion piece by piece. A cached answer comes as one piece; closing the
        iterator early (a client gone) stops generation at the next token."""
        start = time.perf_counter()
        request, cache_only = self._effective(request)
        key = self._key(request) if request.deterministic else None
        try:
            self.limiter.admit(client)
            if key is not None and (hit := self.cache.get(key)) is not None:
                self._record(start, start, hit["tokens"], True, "ok")
                yield Chunk(hit["text"], hit["tokens"], hit["finish_reason"])
                return
            if cache_only:
                raise Unavailable("battery low: serving cached answers only; retry on power")
            await self.queue.acquire(priority)
        except QresError:
            self._record(start, start, 0, False, "rejected")
            raise
        queued = time.perf_counter()
        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue = asyncio.Queue()
        stop = threading.Event()
        worker = loop.run_in_executor(None, self._produce, request, pieces, loop, stop)
        texts, tokens, outcome, reason = [], 0, "disconnected", None
        try:
            while True:
                item = await pieces.get()
                if item is None:
                    break
                if isinstance(item, BaseException):
                    outcome = "error"
                    if isinstance(item, QresError):
                        raise item
                    raise BackendFailure(f"llm backend {self.backend.name!r} failed: {item}")
                texts.append(item.text)
                tokens += item.tokens
                reason = item.finish_reason or reason
                yield item
            outcome = "ok"
        finally:
            stop.set()
            await asyncio.shield(worker)
            self.queue.release()
            self._record(start, queued, tokens, False, outcome)
        if key is not None and reason is not None:
            self.cache.put(key, Completion("".join(texts), tokens, reason).to_dict())

    def _produce(self, request, pieces: asyncio.Queue, loop, stop: threading.Event) -> None:
        kwargs = self._call_kwargs(request)
        if request.messages is not None:
            generator = self.backend.stream_chat(list(request.messages), **kwargs)
        else:
            generator = self.backend.stream(request.prompt, **kwargs)
        try:
            for chunk in generator:
                if stop.is_set():
                    break
                loop.call_soon_threadsafe(pieces.put_nowait, chunk)
        except Exception as exc:
            loop.call_soon_threadsafe(pieces.put_nowait, exc)
        finally:
            generator.close()
            loop.call_soon_threadsafe(pieces.put_nowait, None)

    async def embed(self, texts: Sequence[str], client: str = "", priority: int = 5) -> list:
        """Embedding vectors of ``texts`` (one backend batch)."""
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            raise QresError("input must be a string or a non-empty list of strings")
        if len(texts) > self.settings.max_embedding_inputs:
            raise QresError(
                f"{len(texts)} inputs; send at most {self.settings.max_embedding_inputs}"
            )
        if sum(map(len, texts)) > self.settings.max_prompt_chars:
            raise QresError(f"input longer than {self.settings.max_prompt_chars} characters")
        start = time.perf_counter()
        try:
            self.limiter.admit(client)
            if self._low_battery() and self.settings.low_battery == "cache-only":
                raise Unavailable("battery low: serving cached answers only; retry on power")
            await self.queue.acquire(priority)
        except QresError:
            self._record(start, start, 0, False, "rejected")
            raise
        queued = time.perf_counter()
        try:
            vectors = await asyncio.to_thread(self.backend.embed, texts)
        except QresError:
            self._record(start, queued, 0, False, "error")
            raise
        except Exception as exc:
            self._record(start, queued, 0, False, "error")
            raise BackendFailure(f"llm backend {self.backend.name!r} failed: {exc}") from exc
        finally:
            self.queue.release()
        self._record(start, queued, 0, False, "ok")
        return vectors

    def _record(self, start, queued, tokens, hit, outcome) -> None:
        now = time.perf_counter()
        self.metrics.record(RequestRecord(queued - start, now - start, tokens, hit, outcome))
        self.metrics.depth.set(self.queue.depth)


__all__ = ["BackendFailure", "Engine", "Request", "TooManyRequests", "Unavailable", "parse_request"]
