"""``qres llm serve``: an OpenAI-compatible HTTP API (aiohttp) in front of the engine.

Endpoints: ``POST /v1/chat/completions`` and ``POST /v1/completions`` (JSON, or server-sent
events with ``"stream": true``), ``POST /v1/embeddings``, ``GET /v1/models``, ``GET /health``
and ``GET /metrics`` (Prometheus text). Errors are OpenAI-shaped:
``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
import time
import uuid
from typing import Any

from aiohttp import web

from qres.kernel.errors import QresError
from qres.llm.engine import BackendFailure, Engine, TooManyRequests, Unavailable, parse_request

#: Largest request body accepted, in bytes.
MAX_BODY_BYTES = 1 << 20
ENGINE = web.AppKey("engine", Engine)


def error_response(status: int, message: str, kind: str, code: str | None = None, headers=None):
    """An OpenAI-shaped JSON error."""
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return web.json_response(body, status=status, headers=headers)


def _client(request: web.Request) -> str:
    # A client is its API key when it sends one (hashed: the key itself is never kept), else
    # its address.
    auth = request.headers.get("Authorization", "")
    if auth.startswith("Bearer ") and len(auth) > 7:
        return "key:" + hashlib.sha256(auth[7:].encode()).hexdigest()[:16]
    return f"addr:{request.remote}"


def _priority(request: web.Request) -> int:
    raw = request.headers.get("X-Priority", "5")
    try:
        return min(9, max(0, int(raw)))
    except ValueError:
        raise QresError(f"X-Priority={raw!r}: give an integer 0 (first) to 9 (last)") from None


@web.middleware
async def errors(request: web.Request, handler):
    """Turn every failure into one OpenAI-shaped error; the server keeps serving."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(exc.status, exc.reason, "invalid_request_error")
    except TooManyRequests as exc:
        headers = {"Retry-After": str(exc.retry_after_s)}
        return error_response(429, str(exc), "rate_limit_error", "rate_limit_exceeded", headers)
    except BackendFailure as exc:
        return error_response(500, str(exc), "server_error", "backend_error")
    except Unavailable as exc:
        return error_response(503, str(exc), "server_error", "unavailable")
    except QresError as exc:
        return error_response(400, str(exc), "invalid_request_error")


async def _body(request: web.Request) -> Any:
    try:
        return json.loads(await request.read())
    except ValueError as exc:
        raise QresError(f"the request body is not JSON: {exc}") from None


def _usage(prompt_tokens: int | None, tokens: int) -> dict[str, int]:
    prompt = prompt_tokens or 0
    return {"prompt_tokens": prompt, "completion_tokens": tokens, "total_tokens": prompt + tokens}


async def generate(request: web.Request, chat: bool) -> web.StreamResponse:
    """``/v1/chat/completions`` (``chat``) and ``/v1/completions``."""
    engine = request.app[ENGINE]
    body = await _body(request)
    parsed = parse_request(body, engine.settings, chat)
    client, priority = _client(request), _priority(request)
    model = engine.backend.model_id()
    ident = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
    created = int(time.time())
    if body.get("stream"):
        return await _stream(request, engine, parsed, client, priority, chat, ident, model)
    done, hit = await engine.complete(parsed, client, priority)
    if chat:
        choice = {
            "index": 0,
            "message": {"role": "assistant", "content": done.text},
            "finish_reason": done.finish_reason,
            "logprobs": None,
        }
    else:
        choice = {
            "index": 0,
            "text": done.text,
            "finish_reason": done.finish_reason,
            "logprobs": None,
        }
    return web.json_response(
        {
            "id": ident,
            "object": "chat.completion" if chat else "text_completion",
            "created": created,
            "model": model,
            "choices": [choice],
            "usage": _usage(done.prompt_tokens, done.tokens),
        },
        headers={"X-Cache": "hit" if hit else "miss"},
    )


async def _stream(request, engine, parsed, client, priority, chat, ident, model):
    pieces = engine.stream(parsed, client, priority)
    try:
        # Admission errors (429, 503, 400) must be plain HTTP errors, so wait for the first
        # piece before committing to a 200 event stream.
        first = await pieces.__anext__()
    except StopAsyncIteration:
        first = None
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    kind = "chat.completion.chunk" if chat else "text_completion"

    def event(text: str | None, reason: str | None, role: bool = False) -> bytes:
        if chat:
            delta = {"role": "assistant"} if role else {}
            if text:
                delta["content"] = text
            choice = {"index": 0, "delta": delta, "finish_reason": reason, "logprobs": None}
        else:
            choice = {"index": 0, "text": text or "", "finish_reason": reason, "logprobs": None}
        data = {"id": ident, "object": kind, "created": int(time.time()), "model": model,
                "choices": [choice]}  # fmt: skip
        return b"data: " + json.dumps(data).encode() + b"\n\n"

    try:
        if chat:
            await response.write(event(None, None, role=True))
        piece = first
        while piece is not None:
            await response.write(event(piece.text, piece.finish_reason))
            piece = await anext(pieces, None)
        await response.write(b"data: [DONE]\n\n")
    except QresError as exc:
        # Headers are gone: report the failure in-band, as OpenAI's streams do.
        payload = {
            "error": {"message": str(exc), "type": "server_error", "param": None, "code": None}
        }
        await response.write(b"data: " + json.dumps(payload).encode() + b"\n\n")
    finally:
        await pieces.aclose()  # a client gone mid-stream stops generation at the next token
    await response.write_eof()
    return response


async def chat_completions(request: web.Request) -> web.StreamResponse:
    """``POST /v1/chat/completions``."""
    return await generate(request, chat=True)


async def completions(request: web.Request) -> web.StreamResponse:
    """``POST /v1/completions``."""
    return await generate(request, chat=False)


async def embeddings(request: web.Request) -> web.Response:
    """``POST /v1/embeddings``: ``input`` is a string or a list of strings."""
    engine = request.app[ENGINE]
    body = await _body(request)
    if not isinstance(body, dict):
        raise QresError("the request body must be a JSON object")
    encoding = body.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise QresError(f"encoding_format={encoding!r}: give 'float' or 'base64'")
    vectors = await engine.embed(body.get("input"), _client(request), _priority(request))
    if encoding == "base64":  # little-endian float32, as OpenAI's API sends them
        vectors = [base64.b64encode(struct.pack(f"<{len(v)}f", *v)).decode() for v in vectors]
    data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)]
    texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
    tokens = sum(engine.backend.count_tokens(t) for t in texts)
    return web.json_response(
        {
            "object": "list",
            "data": data,
            "model": engine.backend.model_id(),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
    )


async def models(request: web.Request) -> web.Response:
    """``GET /v1/models``: the one model this server runs."""
    engine = request.app[ENGINE]
    entry = {"id": engine.backend.model_id(), "object": "model", "created": 0, "owned_by": "qres"}
    return web.json_response({"object": "list", "data": [entry]})


async def health(request: web.Request) -> web.Response:
    """``GET /health``: ``{"status": "ok"}`` and the queue depth."""
    engine = request.app[ENGINE]
    return web.json_response({"status": "ok", "queue_depth": engine.queue.depth})


async def metrics(request: web.Request) -> web.Response:
    """``GET /metrics``: Prometheus text format."""
    body = request.app[ENGINE].metrics.prometheus()
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4"})


def make_app(engine: Engine) -> web.Application:
    """The aiohttp application serving ``engine``."""
    app = web.Application(middlewares=[errors], client_max_size=MAX_BODY_BYTES)
    app[ENGINE] = engine
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/v1/completions", completions)
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)
    return app


def serve(engine: Engine, host: str, port: int) -> None:
    """Serve ``engine`` on ``host:port`` until interrupted, then close it; a port that cannot
    be bound is one error line."""
    try:
        web.run_app(make_app(engine), host=host, port=port, print=None)
    except OSError as exc:
        raise QresError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    finally:
        engine.close()
