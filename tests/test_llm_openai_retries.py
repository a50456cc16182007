"""The openai backend's HTTP behaviour against a tiny scripted aiohttp server: retries with
backoff on 429/5xx honouring Retry-After, error mapping, the API key from the environment,
event streams. No model is loaded here."""

from __future__ import annotations

import json
import re

import pytest
from aiohttp import web
from conftest import REPO
from llm_server import ServerThread

from qres.kernel import plugins
from qres.kernel.config import Location
from qres.kernel.errors import QresError
from qres.llm.engine import BackendFailure
from qres.llm.limits import TooManyRequests

SECRET = "sk-test-0123456789abcdef"


def _ok(prompt: str) -> web.Response:
    return web.json_response(
        {
            "choices": [{"index": 0, "text": f"echo:{prompt}", "finish_reason": "length"}],
            "usage": {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5},
        }
    )


class Script:
    """Answers each request with the next scripted reply: a status (with optional headers)
    or ``"ok"``; records what it was sent."""

    def __init__(self):
        self.replies: list = []
        self.seen: list = []

    async def completions(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.seen.append((request.headers.get("Authorization"), body))
        reply = self.replies.pop(0) if self.replies else "ok"
        if reply == "ok":
            return _ok(body["prompt"])
        if reply == "stream":
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            for piece, reason in [("a", None), ("b", None), ("", "stop")]:
                event = {"choices": [{"index": 0, "text": piece, "finish_reason": reason}]}
                await response.write(b"data: " + json.dumps(event).encode() + b"\n\n")
            usage = {"choices": [], "usage": {"completion_tokens": 4}}
            await response.write(b"data: " + json.dumps(usage).encode() + b"\n\ndata: [DONE]\n\n")
            return response
        status, headers = reply if isinstance(reply, tuple) else (reply, {})
        error = {"error": {"message": f"scripted {status}", "type": "x"}}
        return web.json_response(error, status=status, headers=headers)


@pytest.fixture(scope="module")
def scripted():
    script = Script()
    app = web.Application()
    app.router.add_post("/v1/completions", script.completions)
    server = ServerThread(app=app).start()
    yield script, server
    server.stop()


def make_backend(url: str, **settings):
    table = {"use": "openai", "base_url": url + "/v1", "model": "m", **settings}
    backend = plugins.create("llm_backend", table, Location("tests"))
    backend.sleeps = []
    backend.sleep = backend.sleeps.append  # record the waits instead of waiting
    backend.random = lambda: 1.0  # the top of the jitter range: waits become exact
    return backend


@pytest.fixture
def backend(scripted):
    script, server = scripted
    script.replies.clear()
    script.seen.clear()
    with make_backend(server.url, backoff_s=0.5, max_backoff_s=4.0) as b:
        yield b


def test_429_and_503_are_retried_with_backoff_then_answered(scripted, backend):
    script, _ = scripted
    script.replies[:] = [(429, {"Retry-After": "0"}), 503, 502, "ok"]
    done = backend.complete("hi", max_tokens=3)
    assert done.text == "echo:hi" and done.tokens == 3 and done.finish_reason == "length"
    assert len(script.seen) == 4
    assert backend.sleeps == [0.5, 1.0, 2.0]  # doubling, full jitter at its top


def test_retry_after_is_honoured_when_longer_than_the_backoff(scripted, backend):
    script, _ = scripted
    script.replies[:] = [(429, {"Retry-After": "3"}), "ok"]
    assert backend.complete("x", max_tokens=3).text == "echo:x"
    assert backend.sleeps == [3.0]


def test_retry_after_beyond_the_cap_fails_at_once_as_a_429(scripted, backend):
    script, _ = scripted
    script.replies[:] = [(429, {"Retry-After": "120"})]
    with pytest.raises(TooManyRequests) as info:
        backend.complete("x", max_tokens=3)
    assert info.value.retry_after_s == 120 and len(script.seen) == 1
    assert backend.sleeps == []


def test_retries_are_bounded(scripted, backend):
    script, _ = scripted
    script.replies[:] = [503] * 10
    with pytest.raises(BackendFailure, match="answered 503: scripted 503"):
        backend.complete("x", max_tokens=3)
    assert len(script.seen) == 4  # one try and max_retries=3 more
    assert backend.sleeps == [0.5, 1.0, 2.0]


def test_jitter_spreads_the_waits(scripted):
    script, server = scripted
    script.replies[:] = [503, 503, "ok"]
    with make_backend(server.url, backoff_s=1.0, max_backoff_s=1.5) as b:
        b.random = iter([0.25, 0.5]).__next__
        b.complete("x", max_tokens=1)
    assert b.sleeps == [0.25, 0.75]  # uniform in [0, min(cap, base * 2**attempt)]


def test_client_errors_are_not_retried(scripted, backend):
    script, _ = scripted
    script.replies[:] = [400]
    with pytest.raises(QresError, match="answered 400: scripted 400") as info:
        backend.complete("x", max_tokens=3)
    assert not isinstance(info.value, BackendFailure)
    assert len(script.seen) == 1 and backend.sleeps == []


def test_the_key_comes_from_the_named_variable_and_is_never_shown(scripted, monkeypatch):
    script, server = scripted
    script.replies[:] = ["ok", 401]
    script.seen.clear()
    monkeypatch.setenv("QRES_TEST_LLM_KEY", SECRET)
    with make_backend(server.url, api_key_env="QRES_TEST_LLM_KEY") as b:
        b.complete("x", max_tokens=1)
        with pytest.raises(QresError) as info:
            b.complete("y", max_tokens=1)
    assert script.seen[0][0] == f"Bearer {SECRET}"
    message = str(info.value)
    assert "not authorised" in message and "$QRES_TEST_LLM_KEY" in message
    assert SECRET not in message


def test_a_missing_key_variable_is_one_clear_error(scripted, monkeypatch):
    _, server = scripted
    monkeypatch.delenv("QRES_TEST_LLM_KEY", raising=False)
    with make_backend(server.url, api_key_env="QRES_TEST_LLM_KEY") as b:
        with pytest.raises(QresError, match=r"\$QRES_TEST_LLM_KEY is not set"):
            b.complete("x", max_tokens=1)


def test_an_unreachable_server_is_retried_then_one_error():
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with make_backend(f"http://127.0.0.1:{port}", max_retries=2, backoff_s=0.1) as b:
        with pytest.raises(BackendFailure, match="cannot reach the server"):
            b.complete("x", max_tokens=1)
    assert b.sleeps == [0.1, 0.2]


def test_a_stream_is_retried_before_it_starts_and_usage_corrects_the_count(scripted, backend):
    script, _ = scripted
    script.replies[:] = [503, "stream"]
    chunks = list(backend.stream("x", max_tokens=4))
    assert "".join(c.text for c in chunks) == "ab"
    assert chunks[-1].finish_reason == "stop" and [c.finish_reason for c in chunks[:-1]] == [
        None,
        None,
    ]
    assert sum(c.tokens for c in chunks) == 4  # the server's usage, not the event count
    assert backend.sleeps == [0.5]


def test_settings_are_checked():
    from qres.kernel.errors import ProfileError

    with pytest.raises(ProfileError, match="base_url"):
        plugins.create("llm_backend", {"use": "openai", "base_url": "ftp://x"}, Location("t"))
    with pytest.raises(ProfileError, match="max_retries"):
        plugins.create("llm_backend", {"use": "openai", "max_retries": -1}, Location("t"))


@pytest.mark.parametrize(
    ("header", "seconds"),
    [("3", 3.0), ("0.5", 0.5), ("-4", 0.0), ("soon", None), ("", None), ("nan", None)],
)
def test_retry_after_parsing(header, seconds):
    from qres.builtin_plugins.llm.openai_compat import retry_after_s

    assert retry_after_s(header) == seconds


def test_retry_after_as_an_http_date():
    from qres.builtin_plugins.llm.openai_compat import retry_after_s

    assert retry_after_s("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0


def test_the_documented_settings_build():
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib

    doc = (REPO / "docs" / "llm.md").read_text()
    section = doc[doc.index("## The `openai` backend") :]
    block = re.search(r"```toml\n(.*?)```", section, re.S).group(1)
    table = tomllib.loads(block)["llm"]["backend"]
    with plugins.create("llm_backend", table, Location("docs/llm.md")) as backend:
        assert backend.config.api_key_env == "OPENAI_API_KEY"
        assert backend.config.extra_body == {"repeat_penalty": 1.0}
