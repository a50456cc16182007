"""The openai backend: any OpenAI-compatible HTTP server (llama.cpp's server, llama-cpp-python's
server, vLLM, Ollama, LocalAI, a hosted API) through httpx.

The API key is read from the environment variable the profile names (``api_key_env``), never
from the profile itself, and never appears in an error or a log line. Requests that meet a
``429`` or a ``5xx`` (or cannot connect) are retried with exponential backoff and full jitter,
waiting what ``Retry-After`` asks when the server says.
"""

from __future__ import annotations

import email.utils
import json
import math
import os
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import attrs

from qres.kernel.config import integer, number, text
from qres.kernel.errors import QresError
from qres.kernel.hookspecs import hookimpl
from qres.kinds.llm import Chunk, Completion, LLMBackend, check_messages, check_request
from qres.llm.engine import BackendFailure
from qres.llm.limits import TooManyRequests

NAME = "openai"
#: Statuses worth another try: the server is overloaded or failed transiently.
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
#: Longest error text quoted from a server's answer (it is untrusted and may be a whole page).
MAX_QUOTED_CHARS = 300
#: Largest JSON answer or single event-stream line read, in bytes (memory stays bounded).
MAX_RESPONSE_BYTES = 64 << 20
#: Most fields ``extra_body`` may add to a request.
MAX_EXTRA_FIELDS = 32


@attrs.frozen
class OpenAIConfig:
    """Settings of the openai backend.

    * ``base_url``: the API root, ending before ``/chat/completions`` (e.g. ``.../v1``).
    * ``model``: the model name sent with each request; empty asks ``/models`` for the first.
    * ``api_key_env``: the environment variable holding the API key; empty sends no key.
    * ``connect_timeout_s`` / ``read_timeout_s``: seconds to connect, and to wait for each
      piece of an answer (a streamed answer may take longer in total).
    * ``max_retries``: further tries after a ``429``, a ``5xx`` or a refused connection.
    * ``backoff_s`` / ``max_backoff_s``: the first retry waits up to ``backoff_s``, doubling each
      time up to ``max_backoff_s`` (full jitter); a ``Retry-After`` above ``max_backoff_s``
      is not waited for: the request fails at once with that advice.
    * ``max_tokens``: completion length when a request gives none, and the most it may ask.
    * ``extra_body``: fields added to every generation request, for a server's own sampling
      settings (e.g. ``{repeat_penalty = 1.0}`` for llama.cpp's servers, whose default 1.1
      differs from in-process llama-cpp-python); the request's own fields win.
    """

    base_url: str = attrs.field(default="http://127.0.0.1:8080/v1", validator=text(2048))
    model: str = attrs.field(default="", validator=text(256))
    api_key_env: str = attrs.field(default="", validator=text(256))
    connect_timeout_s: float = attrs.field(default=5.0, validator=number(0.01, 600))
    read_timeout_s: float = attrs.field(default=120.0, validator=number(0.01, 3600))
    max_retries: int = attrs.field(default=3, validator=integer(0, 20))
    backoff_s: float = attrs.field(default=0.5, validator=number(0, 60))
    max_backoff_s: float = attrs.field(default=8.0, validator=number(0, 600))
    max_tokens: int = attrs.field(default=256, validator=integer(1, 1 << 20))
    extra_body: dict = attrs.field(factory=dict)

    @extra_body.validator
    def _scalars(self, attribute, value):
        from qres.kernel.config import InvalidSetting

        ok = isinstance(value, dict) and len(value) <= MAX_EXTRA_FIELDS
        ok = ok and all(
            isinstance(k, str) and isinstance(v, (str, int, float, bool)) for k, v in value.items()
        )
        if not ok:
            allowed = f"a table of at most {MAX_EXTRA_FIELDS} string, number or boolean values"
            raise InvalidSetting(attribute.name, value, allowed)

    @base_url.validator
    def _http(self, attribute, value):
        from qres.kernel.config import InvalidSetting

        if not value.startswith(("http://", "https://")):
            raise InvalidSetting(attribute.name, value, "an http:// or https:// URL")


def retry_after_s(header: str | None, now: float | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks for (delay-seconds or an HTTP date), or None."""
    if not header:
        return None
    header = header.strip()
    try:
        seconds = float(header)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(header).timestamp()
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        seconds = when - (time.time() if now is None else now)
    return max(0.0, seconds) if math.isfinite(seconds) else None


def backoff_delay(attempt: int, base: float, cap: float, rand: Callable[[], float]) -> float:
    """Full-jitter exponential backoff: uniform in ``[0, min(cap, base * 2**attempt)]``."""
    return rand() * min(cap, base * (2.0**attempt))


def _quote(text_: str) -> str:
    text_ = " ".join(text_.split())
    return text_[:MAX_QUOTED_CHARS] + ("..." if len(text_) > MAX_QUOTED_CHARS else "")


def _server_message(body: bytes) -> str:
    """The ``error.message`` of an OpenAI-shaped error, else the body's start."""
    try:
        data = json.loads(body)
    except ValueError:
        return _quote(body.decode("utf-8", "replace"))
    if isinstance(data, Mapping):
        err = data.get("error", data.get("detail"))
        if isinstance(err, Mapping) and isinstance(err.get("message"), str):
            return _quote(err["message"])
        if err is not None:
            return _quote(json.dumps(err) if not isinstance(err, str) else err)
    return _quote(json.dumps(data))


def _finish(reason: object) -> str:
    # Servers say "stop", "length", "eos", "tool_calls", "content_filter"...: only "length"
    # means the token limit cut the answer.
    return "length" if reason == "length" else "stop"


class OpenAIBackend(LLMBackend):
    """Completion, chat, streaming and embeddings from an OpenAI-compatible server.

    The HTTP client is synchronous (the engine runs backend calls in a worker thread) and
    keeps its connections open between requests; it is created on first use.
    """

    name = NAME
    Config = OpenAIConfig

    def __init__(self, config: Any = None):
        super().__init__(config)
        self._lock = threading.Lock()
        self._client: Any = None
        self._model: str | None = self.config.model or None
        self._tokenizer: str | None = None
        #: Where retries sleep, and their jitter; tests replace them to run without waiting.
        self.sleep: Callable[[float], None] = time.sleep
        self.random: Callable[[], float] = random.random

    # -- connection ------------------------------------------------------------------------

    def _where(self) -> str:
        return f"llm backend {NAME!r} at {self.config.base_url}"

    def _headers(self) -> dict[str, str]:
        env = self.config.api_key_env
        if not env:
            return {}
        key = os.environ.get(env)
        if not key:
            raise QresError(
                f"{self._where()}: the API key variable ${env} is not set; export it "
                "or clear api_key_env"
            )
        return {"Authorization": f"Bearer {key}"}

    def http(self) -> Any:
        """The shared ``httpx.Client`` (created on first use)."""
        with self._lock:
            if self._client is None:
                try:
                    import httpx
                except ImportError as exc:
                    raise QresError(
                        f"{self._where()}: httpx is not installed; run pip install 'qres[llm]'"
                    ) from exc
                c = self.config
                self._client = httpx.Client(
                    base_url=c.base_url.rstrip("/") + "/",
                    timeout=httpx.Timeout(c.read_timeout_s, connect=c.connect_timeout_s),
                    headers={"User-Agent": "qres"},
                )
            return self._client

    def close(self) -> None:
        """Close the connections."""
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def _send(self, method: str, path: str, body: Any = None) -> Any:
        """An open ``httpx.Response`` with status < 400, after retries; one clear error else.

        The caller reads the body (:meth:`_read_whole` or an event stream) and closes it.
        """
        import httpx

        client, headers = self.http(), self._headers()
        attempt = 0
        while True:
            wait: float | None = None
            try:
                request = client.build_request(method, path, json=body, headers=headers)
                response = client.send(request, stream=True)
            except httpx.TimeoutException as exc:
                raise BackendFailure(
                    f"{self._where()}: no answer to {path} within the timeout ({exc}); "
                    "check the server or raise read_timeout_s"
                ) from None
            except httpx.TransportError as exc:
                failure: QresError = BackendFailure(
                    f"{self._where()}: cannot reach the server ({exc}); check base_url "
                    "and that the server runs"
                )
            else:
                if response.status_code < 400:
                    return response
                failure, wait = self._failure(path, response)
                if response.status_code not in RETRY_STATUSES:
                    raise failure
            if attempt >= self.config.max_retries:
                raise failure
            if wait is not None and wait > self.config.max_backoff_s:
                raise failure  # the server asks for longer than this backend waits
            delay = backoff_delay(
                attempt, self.config.backoff_s, self.config.max_backoff_s, self.random
            )
            self.sleep(delay if wait is None else max(wait, delay))
            attempt += 1

    def _read_whole(self, response: Any) -> bytes:
        """Read a response body, at most :data:`MAX_RESPONSE_BYTES`."""
        import httpx

        try:
            data = bytearray()
            for piece in response.iter_bytes():
                data += piece
                if len(data) > MAX_RESPONSE_BYTES:
                    raise BackendFailure(
                        f"{self._where()}: answer larger than {MAX_RESPONSE_BYTES} bytes"
                    )
            return bytes(data)
        except httpx.HTTPError as exc:
            raise BackendFailure(f"{self._where()}: the answer broke off ({exc})") from None
        finally:
            response.close()

    def _failure(self, path: str, response: Any) -> tuple[QresError, float | None]:
        """The error an error response stands for, and the wait its ``Retry-After`` asks."""
        status = response.status_code
        try:
            message = _server_message(self._read_whole(response))
        except QresError:
            message = "(unreadable body)"
        wait = retry_after_s(response.headers.get("Retry-After"))
        where = f"{self._where()}: {path} answered {status}"
        if status == 429:
            seconds = max(1, math.ceil(wait if wait is not None else 1))
            return TooManyRequests(f"{where}: {message}; retry in {seconds} s", seconds), wait
        if status in (401, 403):
            env = self.config.api_key_env
            advice = f"check the key in ${env}" if env else "set api_key_env to the key's variable"
            return QresError(f"{where} (not authorised): {message}; {advice}"), wait
        if status >= 500:
            return BackendFailure(f"{where}: {message}"), wait
        return QresError(f"{where}: {message}"), wait

    def _json(self, path: str, body: Any = None) -> Any:
        response = self._send("POST" if body is not None else "GET", path, body)
        try:
            data = json.loads(self._read_whole(response))
        except ValueError:
            raise BackendFailure(f"{self._where()}: {path} answered with no JSON") from None
        if not isinstance(data, Mapping):
            raise BackendFailure(f"{self._where()}: {path} answered {type(data).__name__}")
        return data

    # -- model and tokens ------------------------------------------------------------------

    def model_id(self) -> str:
        """The configured model, or the first one the server lists."""
        if self._model is None:
            data = self._json("models").get("data")
            ids = [m.get("id") for m in data or () if isinstance(m, Mapping)]
            if not ids or not isinstance(ids[0], str):
                raise QresError(f"{self._where()}: /models lists no model; set model")
            self._model = ids[0]
        return self._model

    def count_tokens(self, text_: str) -> int:
        """Tokens of ``text_`` by the server's tokenizer when it has one (llama.cpp's
        ``/tokenize``, llama-cpp-python's ``/extras/tokenize``); else the UTF-8 byte count,
        an upper bound for byte-level tokenizers, so budgets stay safe."""
        if not isinstance(text_, str):
            raise QresError(f"{self._where()}: cannot count tokens of {type(text_).__name__}")
        root = self.config.base_url.rstrip("/")
        if root.endswith("/v1"):
            root = root[:-3]
        routes = {
            "extras": (root + "/extras/tokenize", {"input": text_, "model": self.config.model}),
            "llama.cpp": (root + "/tokenize", {"content": text_}),
        }
        for name in [self._tokenizer] if self._tokenizer else routes:
            if name == "bytes":
                break
            url, body = routes[name]
            try:
                data = self._json(url, body)
            except QresError:
                continue
            tokens = data.get("tokens")
            if isinstance(tokens, list):
                self._tokenizer = name
                return len(tokens)
        self._tokenizer = "bytes"
        return len(text_.encode("utf-8"))

    # -- generation ------------------------------------------------------------------------

    def _body(self, max_tokens, temperature, stop, seed, prompt="") -> dict[str, Any]:
        limit = self.config.max_tokens if max_tokens is None else max_tokens
        stops = check_request(NAME, prompt, limit, temperature, stop)
        if limit > self.config.max_tokens:
            raise QresError(
                f"{self._where()}: max_tokens={limit} is above the configured "
                f"max_tokens={self.config.max_tokens}; ask for less or raise the setting"
            )
        body: dict[str, Any] = {
            **self.config.extra_body,
            "model": self.model_id(),
            "max_tokens": limit,
            "temperature": float(temperature),
        }
        if stops:
            body["stop"] = list(stops)
        if seed is not None:
            if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 1 << 32:
                raise QresError(f"{self._where()}: seed={seed!r}; give an int in [0, 2**32)")
            body["seed"] = seed
        return body

    def _completion(self, path: str, body: dict, text_of) -> Completion:
        data = self._json(path, body)
        try:
            choice = data["choices"][0]
            usage = data.get("usage") or {}
            content = text_of(choice) or ""
            tokens = usage.get("completion_tokens")
            return Completion(
                content,
                tokens if isinstance(tokens, int) else 0,
                _finish(choice.get("finish_reason")),
                prompt_tokens=usage.get("prompt_tokens"),
            )
        except (KeyError, IndexError, TypeError, AttributeError) as exc:
            raise BackendFailure(
                f"{self._where()}: {path} answered an unexpected shape ({exc!r})"
            ) from None

    def complete(
        self,
        prompt: str,
        *,
        max_tokens: int | None = None,
        temperature: float = 0.0,
        stop: Sequence[str] | str | None = None,
        seed: int | None = None,
    ) -> Completion:
        """``POST /completions`` for ``prompt`` (raw text)."""
        body = self._body(max_tokens, temperature, stop, seed, prompt)
        return self._completion("completions", {**body, "prompt": prompt}, lambda c: c["text"])

    def chat(
        self,
        messages: Sequence[Mapping[str, str]],
        *,
        max_tokens: int | None = None,
        temperature: float = 0.0,
        stop: Sequence[str] | str | None = None,
        seed: int | None = None,
    ) -> Completion:
        """``POST /chat/completions``: the server applies the model's chat template."""
        checked = [dict(m) for m in check_messages(NAME, messages)]
        body = {**self._body(max_tokens, temperature, stop, seed), "messages": checked}
        return self._completion("chat/completions", body, lambda c: c["message"]["content"])

    def stream(
        self,
        prompt: str,
        *,
        max_tokens: int | None = None,
        temperature: float = 0.0,
        stop: Sequence[str] | str | None = None,
        seed: int | None = None,
    ) -> Iterator[Chunk]:
        """``POST /completions`` with server-sent events, piece by piece."""
        body = self._body(max_tokens, temperature, stop, seed, prompt)
        yield from self._events("completions", {**body, "prompt": prompt}, lambda c: c.get("text"))

    def stream_chat(
        self,
        messages: Sequence[Mapping[str, str]],
        *,
        max_tokens: int | None = None,
        temperature: float = 0.0,
        stop: Sequence[str] | str | None = None,
        seed: int | None = None,
    ) -> Iterator[Chunk]:
        """``POST /chat/completions`` with server-sent events, piece by piece."""
        checked = [dict(m) for m in check_messages(NAME, messages)]
        body = {**self._body(max_tokens, temperature, stop, seed), "messages": checked}
        yield from self._events(
            "chat/completions", body, lambda c: (c.get("delta") or {}).get("content")
        )

    def _events(self, path: str, body: dict, text_of) -> Iterator[Chunk]:
        """Chunks from an event stream: one token per event that carries text; the finishing
        chunk is held back until the stream ends so a reported ``usage`` can correct it."""
        body = {**body, "stream": True, "stream_options": {"include_usage": True}}
        response = self._send("POST", path, body)
        counted, reason, usage_tokens, tail = 0, None, None, ""
        try:
            for data in self._sse(response, path):
                if isinstance(data.get("usage"), Mapping):
                    value = data["usage"].get("completion_tokens")
                    usage_tokens = value if isinstance(value, int) else usage_tokens
                for choice in data.get("choices") or ():
                    piece = text_of(choice) or ""
                    done = choice.get("finish_reason")
                    if done is not None:
                        reason, tail = _finish(done), tail + piece
                        counted += 1 if piece else 0
                    elif piece:
                        counted += 1
                        yield Chunk(piece, 1)
        finally:
            response.close()
        if reason is None:
            raise BackendFailure(f"{self._where()}: the {path} stream ended without finishing")
        extra = usage_tokens - counted if usage_tokens is not None else 0
        yield Chunk(tail, max(0, extra) + (1 if tail else 0), reason)

    def _sse(self, response: Any, path: str) -> Iterator[dict]:
        """The JSON objects of ``data:`` lines up to ``[DONE]``; an in-band error raises."""
        import httpx

        try:
            for line in response.iter_lines():
                if len(line) > MAX_RESPONSE_BYTES:
                    raise BackendFailure(f"{self._where()}: an event of {path} is too large")
                if not line.startswith("data:"):
                    continue  # comments, event names, blank separators
                payload = line[5:].strip()
                if payload == "[DONE]":
                    return
                try:
                    data = json.loads(payload)
                except ValueError:
                    raise BackendFailure(f"{self._where()}: {path} sent a bad event") from None
                if not isinstance(data, Mapping):
                    continue
                if "error" in data:
                    message = _server_message(payload.encode())
                    raise BackendFailure(f"{self._where()}: {path} failed mid-stream: {message}")
                yield data
        except httpx.HTTPError as exc:
            raise BackendFailure(f"{self._where()}: the {path} stream broke off ({exc})") from None

    # -- embeddings ------------------------------------------------------------------------

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """``POST /embeddings`` for all ``texts`` at once; vectors scaled to unit length."""
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise QresError(f"{self._where()}: embed takes a list of strings")
        if not texts:
            return []
        data = self._json("embeddings", {"model": self.model_id(), "input": list(texts)})
        try:
            rows = sorted(data["data"], key=lambda d: d["index"])
            vectors = [_pooled(row["embedding"]) for row in rows]
        except (KeyError, TypeError, ValueError) as exc:
            raise BackendFailure(
                f"{self._where()}: embeddings answered an unexpected shape ({exc!r})"
            ) from None
        if len(vectors) != len(texts):
            raise BackendFailure(
                f"{self._where()}: {len(vectors)} embeddings for {len(texts)} inputs"
            )
        return [_unit(v) for v in vectors]


def _pooled(embedding: Sequence) -> list[float]:
    """One vector: as sent, or the mean of per-token vectors (servers run without pooling,
    such as llama-cpp-python's with ``--embedding``, send one vector per token)."""
    if embedding and all(isinstance(row, list) for row in embedding):
        width = len(embedding[0])
        if width == 0 or any(len(row) != width for row in embedding):
            raise ValueError("per-token vectors of different lengths")
        n = len(embedding)
        return [math.fsum(float(row[i]) for row in embedding) / n for i in range(width)]
    return [float(x) for x in embedding]


def _unit(vector: list[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in vector))
    return [x / norm for x in vector] if norm > 0 else vector


@hookimpl
def register_llm_backends(register):
    """Register the openai backend."""
    register(OpenAIBackend)
