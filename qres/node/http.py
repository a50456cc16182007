"""The node's HTTP API (aiohttp): the codec over HTTP, status, Prometheus metrics, a status page.

* ``POST /v1/compress?dtype=int16&channels=1&layout=interleaved&byte_order=little&max_error=0``
  raw samples in, a ``.qres`` container out; ``POST /v1/decompress`` the reverse. Bodies are
  read in chunks and refused past ``MAX_BODY`` (413) before more is buffered.
* ``GET /v1/status``: the node's status JSON (``qres node status`` plus live counters).
* ``GET /metrics``: Prometheus text.  ``GET /``: a live status page.

While the node sleeps between wakes the codec endpoints answer 503 with ``Retry-After`` (its
CPU does no work for others then); the read endpoints keep answering (they read what the node
holds and change nothing), so monitoring sees a sleeping node, not a dead one.

Errors are the CLI's, as JSON ``{"error": ..., "exit_code": ...}`` with an HTTP status for the
exit code. The server binds 127.0.0.1 unless told otherwise; bound anywhere else it requires
``Authorization: Bearer $QRES_NODE_TOKEN`` on the write endpoints and refuses to start without
that variable.
"""

from __future__ import annotations

import asyncio
import hmac
import os
from importlib import resources

from qres.kernel.errors import QresError

#: Largest request body accepted by the codec endpoints.
MAX_BODY = 64 << 20
TOKEN_ENV = "QRES_NODE_TOKEN"
LOOPBACK = {"127.0.0.1", "::1", "localhost"}
#: HTTP status per exit code: bad input 400, bad setting 422, integrity failure 422.
STATUS_OF_EXIT = {1: 400, 2: 400, 3: 422, 4: 500, 5: 422}


class _TooLarge(Exception):
    pass


async def _read_body(request, limit: int = MAX_BODY) -> bytes:
    if request.content_length is not None and request.content_length > limit:
        raise _TooLarge
    parts, size = [], 0
    async for chunk in request.content.iter_chunked(1 << 16):
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        parts.append(chunk)
    return b"".join(parts)


def _error(web, exc: BaseException, status: int | None = None):
    code = getattr(exc, "exit_code", 1)
    return web.json_response(
        {"error": str(exc), "exit_code": code}, status=status or STATUS_OF_EXIT.get(code, 400)
    )


def make_app(node, token: str | None = None):
    """The aiohttp application of ``node`` (``token``: required on write endpoints)."""
    from aiohttp import web

    from qres.node.metrics import NodeMetrics

    metrics = NodeMetrics(node)

    def authorised(request) -> bool:
        if token is None:
            return True
        given = request.headers.get("Authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {token}".encode())

    async def codec(request, work):
        if not authorised(request):
            return web.json_response(
                {"error": f"missing or wrong bearer token (see {TOKEN_ENV})", "exit_code": 1},
                status=401,
            )
        if node.asleep:
            # the CPU sleeps between wakes (qres.swarm.energy): it codes nothing for others
            wait = node.seconds_to_wake()
            return web.json_response(
                {
                    "error": f"the node is asleep until its next wake in {wait} s; retry then",
                    "exit_code": 1,
                },
                status=503,
                headers={"Retry-After": str(wait)},
            )
        try:
            body = await _read_body(request)
        except _TooLarge:
            return web.json_response(
                {"error": f"body over {MAX_BODY} bytes; split the input", "exit_code": 1},
                status=413,
            )
        try:
            out = await asyncio.get_running_loop().run_in_executor(None, work, request, body)
        except QresError as exc:
            return _error(web, exc)
        return web.Response(body=out, content_type="application/octet-stream")

    def compress(request, body: bytes) -> bytes:
        from qres.codec.files import compress_bytes
        from qres.codec.samples import StreamSpec, parse_dtype

        q = request.query
        try:
            max_error = float(q.get("max_error", "0"))
            channels = int(q.get("channels", "1"))
        except ValueError as exc:
            raise QresError(f"query: {exc}; max_error is a number, channels an integer") from exc
        spec = StreamSpec(
            parse_dtype(q.get("dtype", node.spec.dtype)),
            channels,
            q.get("layout", "interleaved"),
            q.get("byte_order", "little"),
        )
        if len(body) % (spec.itemsize * spec.channels):
            raise QresError(
                f"body of {len(body)} bytes is not a whole number of {spec.dtype} x "
                f"{spec.channels} samples; check dtype and channels"
            )
        data = compress_bytes(body, spec, profile=str(node.profile.path), max_error=max_error)
        metrics.http_bytes(len(body), len(data))
        return data

    def decompress(request, body: bytes) -> bytes:
        from qres.codec.files import decompress_bytes

        return decompress_bytes(body)

    async def status(_request):
        return web.json_response(node.status())

    async def prometheus(_request):
        body, content_type = metrics.render()
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def page(_request):
        html = resources.files("qres.node").joinpath("status.html").read_text()
        return web.Response(text=html, content_type="text/html")

    app = web.Application(client_max_size=MAX_BODY)
    app.router.add_post("/v1/compress", lambda r: codec(r, compress))
    app.router.add_post("/v1/decompress", lambda r: codec(r, decompress))
    app.router.add_get("/v1/status", status)
    app.router.add_get("/metrics", prometheus)
    app.router.add_get("/", page)
    return app


async def start_http(node, address: str):
    """Serve ``node``'s API on ``host:port``; returns the runner (``await runner.cleanup()``)."""
    from aiohttp import web

    from qres.builtin_plugins.transports.tcp import parse_address

    host, port = parse_address(address, "--http")
    token = None
    if host not in LOOPBACK:
        token = os.environ.get(TOKEN_ENV)
        if not token:
            raise QresError(
                f"--http {address}: serving beyond loopback needs a bearer token; "
                f"export {TOKEN_ENV}=<a long random secret>"
            )
    runner = web.AppRunner(make_app(node, token), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    node.http_port = runner.addresses[0][1]
    return runner
