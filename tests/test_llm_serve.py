"""`qres llm serve` with the official openai client, unchanged, against the real model."""

from __future__ import annotations

import json
import socket

import pytest

openai = pytest.importorskip("openai")

from llm_server import ServerThread  # noqa: E402

from qres.llm.engine import Engine  # noqa: E402
from qres.llm.settings import EngineSettings  # noqa: E402

CHAT = [{"role": "user", "content": "Name a colour."}]


class Borrowed:
    """The session's backend, lent to an engine that must not close it."""

    def __init__(self, backend):
        self._backend = backend

    def __getattr__(self, name):
        return getattr(self._backend, name)

    def close(self):
        pass


@pytest.fixture(scope="module")
def server(llama_backend, tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache") / "llm.sqlite"
    engine = Engine(Borrowed(llama_backend), EngineSettings(cache_path=str(cache)))
    running = ServerThread(engine).start()
    yield running
    running.stop()
    engine.cache.close()


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="test-key", max_retries=0)


def test_models_lists_the_backends_model(client, llama_backend):
    ids = [m.id for m in client.models.list()]
    assert ids == [llama_backend.model_id()]


def test_chat_completion_and_usage(client, llama_backend):
    reply = client.chat.completions.create(model="any", messages=CHAT, max_tokens=8)
    direct = llama_backend.chat(CHAT, max_tokens=8)
    assert reply.choices[0].message.content == direct.text
    assert reply.choices[0].finish_reason == direct.finish_reason
    assert reply.usage.completion_tokens == direct.tokens
    assert reply.usage.prompt_tokens == direct.prompt_tokens


def test_completion_stop_and_streaming_agree(client):
    whole = client.completions.create(model="m", prompt="The sky is", max_tokens=10)
    pieces = client.completions.create(model="m", prompt="The sky is", max_tokens=10,
                                       stream=True)  # fmt: skip
    streamed = [p.choices[0] for p in pieces]
    assert "".join(c.text for c in streamed) == whole.choices[0].text
    assert streamed[-1].finish_reason == whole.choices[0].finish_reason


def test_chat_streaming_matches_the_whole_answer(client):
    whole = client.chat.completions.create(model="m", messages=CHAT, max_tokens=6, seed=3)
    stream = client.chat.completions.create(model="m", messages=CHAT, max_tokens=6, stream=True)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream)
    assert text == whole.choices[0].message.content


def test_embeddings(client):
    out = client.embeddings.create(model="m", input=["warm sensor", "cold stream"])
    assert [d.index for d in out.data] == [0, 1]
    assert len(out.data[0].embedding) == len(out.data[1].embedding) > 100
    assert out.usage.prompt_tokens > 0


def test_deterministic_answers_come_from_the_cache(client, server):
    raw = client.completions.with_raw_response.create(model="m", prompt="Cache me", max_tokens=5)
    again = client.completions.with_raw_response.create(model="m", prompt="Cache me", max_tokens=5)
    assert raw.headers["X-Cache"] == "miss" and again.headers["X-Cache"] == "hit"
    assert again.parse().choices[0].text == raw.parse().choices[0].text
    sampled = client.completions.with_raw_response.create(
        model="m", prompt="Cache me", max_tokens=5, temperature=1.0, seed=1
    )
    assert sampled.headers["X-Cache"] == "miss"  # sampled answers are never cached


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_tokens": 0},
        {"temperature": 5},
        {"stop": ["a", "b", "c", "d", "e"]},
        {"max_tokens": 100000},
    ],
)
def test_bad_requests_get_openai_shaped_400s(client, kwargs):
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model="m", prompt="x", **kwargs)
    error = info.value.body
    assert error["type"] == "invalid_request_error" and error["message"]


def test_client_disconnect_mid_stream_leaves_the_server_serving(server, client):
    body = json.dumps({"prompt": "Tell a long story:", "max_tokens": 120, "stream": True})
    request = (
        f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n{body}"
    )
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(request.encode())
        received = b""
        while b"data:" not in received:  # headers and events may come in separate packets
            piece = s.recv(4096)
            assert piece, received
            received += piece
    # The abandoned generation stops at its next token; the next request is answered.
    reply = client.completions.create(model="m", prompt="Still there?", max_tokens=3)
    assert reply.choices[0].text is not None
    assert client.with_options(max_retries=0).models.list().data
