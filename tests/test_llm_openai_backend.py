"""The openai backend against real OpenAI-compatible servers on 127.0.0.1: llama-cpp-python's
own server (``python -m llama_cpp.server``, started here with the bundled SmolLM2 model and one
thread) and ``qres llm serve``. Greedy answers must equal the in-process llama-cpp backend's:
same build, same model, same settings."""

from __future__ import annotations

import math
import socket
import subprocess
import sys
import time

import pytest

pytest.importorskip("llama_cpp.server")
httpx = pytest.importorskip("httpx")

from llm_server import ServerThread  # noqa: E402

from qres.kernel import plugins  # noqa: E402
from qres.kernel.config import Location  # noqa: E402
from qres.llm.engine import Engine  # noqa: E402
from qres.llm.settings import EngineSettings  # noqa: E402

CHAT = [{"role": "user", "content": "Name a colour."}]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def llama_server(llama_backend, tmp_path_factory):
    """llama-cpp-python's server on the bundled model (embeddings on: it then also sends
    per-token vectors, which the backend mean-pools)."""
    from qres.builtin_plugins.llm.llamacpp import bundled_model_path

    port = _free_port()
    args = [sys.executable, "-m", "llama_cpp.server", "--model", str(bundled_model_path()),
            "--host", "127.0.0.1", "--port", str(port), "--n_threads", "1",
            "--n_threads_batch", "1", "--n_ctx", "1024", "--embedding", "true"]  # fmt: skip
    log_path = tmp_path_factory.mktemp("llama-server") / "log"
    log = open(log_path, "wb")  # a file, not a pipe: a full pipe would block the server
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            if httpx.get(url + "/v1/models", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            log.close()
            pytest.fail(f"llama_cpp.server did not start: {log_path.read_text()[-2000:]}")
        time.sleep(0.2)
    yield url
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    log.close()


@pytest.fixture(scope="module")
def remote(llama_server):
    table = {"use": "openai", "base_url": llama_server + "/v1", "max_tokens": 128,
             # the server's default repeat penalty is 1.1, in-process llama-cpp-python's 1.0
             "extra_body": {"repeat_penalty": 1.0}}  # fmt: skip
    with plugins.create("llm_backend", table, Location("tests")) as backend:
        yield backend


def test_the_model_is_discovered_from_the_server(remote):
    assert remote.model_id().endswith("SmolLM2-135M-Instruct.Q4_1.gguf")


def test_greedy_completion_equals_the_in_process_backend(remote, llama_backend):
    here = llama_backend.complete("The sky is", max_tokens=12)
    there = remote.complete("The sky is", max_tokens=12)
    assert there.text == here.text and there.tokens == here.tokens == 12
    assert there.finish_reason == "length" and there.prompt_tokens == here.prompt_tokens


def test_chat_goes_through_the_servers_chat_template(remote, llama_backend):
    here = llama_backend.chat(CHAT, max_tokens=10)
    there = remote.chat(CHAT, max_tokens=10)
    assert (there.text, there.tokens, there.finish_reason) == (
        here.text,
        here.tokens,
        here.finish_reason,
    )


def test_streams_equal_the_whole_answers(remote):
    whole = remote.complete("Once upon a time", max_tokens=10)
    chunks = list(remote.stream("Once upon a time", max_tokens=10))
    assert "".join(c.text for c in chunks) == whole.text
    assert sum(c.tokens for c in chunks) == whole.tokens
    assert chunks[-1].finish_reason == whole.finish_reason
    reply = remote.chat(CHAT, max_tokens=6)
    pieces = list(remote.stream_chat(CHAT, max_tokens=6))
    assert "".join(c.text for c in pieces) == reply.text


def test_stop_sequences_end_the_answer(remote):
    whole = remote.complete("1, 2, 3, 4,", max_tokens=20)
    cut = whole.text.strip()[:2]  # something the greedy answer does produce
    stopped = remote.complete("1, 2, 3, 4,", max_tokens=20, stop=[cut])
    assert stopped.finish_reason == "stop" and cut not in stopped.text
    assert whole.text.startswith(stopped.text)


def test_tokens_are_counted_by_the_servers_tokenizer(remote, llama_backend):
    for text in ["The sky is", "héllo wörld, 12345", ""]:
        assert remote.count_tokens(text) == llama_backend.count_tokens(text)


def test_per_token_embeddings_are_pooled_to_unit_vectors(remote, llama_backend):
    # This server (no pooling setting) sends one vector per token; the backend mean-pools
    # them. Its vectors are not llama-cpp's pooled ones (the server's context also generates),
    # so this checks shape and determinism; test_against_qres_serve checks the values.
    texts = ["warm sensor", "cold stream"]
    first, again = remote.embed(texts), remote.embed(texts)
    assert first == again and first[0] != first[1]
    width = len(llama_backend.embed(["x"])[0])
    for vector in first:
        assert len(vector) == width
        assert math.isclose(math.fsum(x * x for x in vector), 1.0, rel_tol=1e-9)


def test_a_bad_request_is_the_servers_one_clear_error(remote):
    from qres.kernel.errors import QresError
    from qres.llm.engine import BackendFailure

    with pytest.raises(QresError, match=r"answered \d{3}") as info:
        remote.complete("x" * 20000, max_tokens=4)  # more tokens than the server's context
    assert "\n" not in str(info.value)
    # The server is still serving.
    assert remote.complete("Hi", max_tokens=2).tokens == 2
    assert not isinstance(info.value, BackendFailure) or "500" in str(info.value)


def test_qres_serve_in_front_of_a_remote_server(remote):
    """A gateway: the engine (cache, limits) in front of the openai backend."""
    engine = Engine(_Borrowed(remote), EngineSettings())
    server = ServerThread(engine).start()
    try:
        body = {"prompt": "The sky is", "max_tokens": 6}
        first = httpx.post(server.url + "/v1/completions", json=body, timeout=60)
        again = httpx.post(server.url + "/v1/completions", json=body, timeout=60)
        assert first.status_code == again.status_code == 200
        assert first.headers["X-Cache"] == "miss" and again.headers["X-Cache"] == "hit"
        assert first.json()["choices"][0]["text"] == remote.complete(**body).text
    finally:
        server.stop()
        engine.cache.close()


def test_against_qres_serve(llama_backend):
    """The openai backend against `qres llm serve`: completion, chat, stream, embeddings."""
    engine = Engine(_Borrowed(llama_backend), EngineSettings())
    server = ServerThread(engine).start()
    try:
        table = {"use": "openai", "base_url": server.url + "/v1", "max_tokens": 64}
        with plugins.create("llm_backend", table, Location("tests")) as backend:
            assert backend.model_id() == llama_backend.model_id()
            here = llama_backend.complete("The sky is", max_tokens=8)
            assert backend.complete("The sky is", max_tokens=8).text == here.text
            streamed = list(backend.stream_chat(CHAT, max_tokens=6))
            assert "".join(c.text for c in streamed) == llama_backend.chat(CHAT, max_tokens=6).text
            [vector] = backend.embed(["warm sensor"])
            [direct] = llama_backend.embed(["warm sensor"])
            assert max(abs(a - b) for a, b in zip(vector, direct, strict=True)) < 1e-6
    finally:
        server.stop()
        engine.cache.close()


class _Borrowed:
    """A backend lent to an engine that must not close it."""

    def __init__(self, backend):
        self._backend = backend

    def __getattr__(self, name):
        return getattr(self._backend, name)

    def close(self):
        pass
