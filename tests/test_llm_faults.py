"""Faults around `qres llm serve`: a corrupt or truncated model file refuses to start with one
line (exit 5) before binding a port; the request-body validator, fuzzed, only ever accepts
well-formed requests or answers one 400, and the server keeps serving."""

from __future__ import annotations

import json
import os
import socket

import httpx
import pytest
from conftest import run_qres
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from llm_server import ServerThread

from qres.kernel import plugins
from qres.kernel.config import Location
from qres.kernel.errors import QresError
from qres.kinds.llm import MAX_STOP_SEQUENCES, MAX_TEMPERATURE
from qres.llm.engine import Engine, Request, parse_request
from qres.llm.settings import EngineSettings

PROFILE = """
[profile]
name = "t"
extends = "llm-edge"
[llm.backend]
use = "llama-cpp"
n_threads = 1
model_path = "{path}"
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(tmp_path, model: bytes | None):
    path = tmp_path / "model.gguf"
    if model is not None:
        path.write_bytes(model)
    profile = tmp_path / "t.toml"
    profile.write_text(PROFILE.format(path=path))
    port = _free_port()
    done = run_qres("llm", "serve", "--profile", str(profile), "--port", str(port))
    return done, port


@pytest.mark.parametrize("kind", ["garbage", "truncated"])
def test_a_corrupt_model_refuses_to_start_with_one_line(tmp_path, kind):
    pytest.importorskip("llama_cpp")
    from qres.builtin_plugins.llm.llamacpp import bundled_model_path

    if kind == "garbage":
        data = b"GGUF" + os.urandom(8192)
    else:
        whole = bundled_model_path().read_bytes()
        data = whole[: len(whole) // 2]
    done, port = _serve(tmp_path, data)
    lines = done.stderr.decode().strip().splitlines()
    assert done.returncode == 5, done.stderr
    assert len(lines) == 1 and lines[0].startswith("qres: error:"), lines
    assert "cannot load model" in lines[0] and "Traceback" not in lines[0]
    with pytest.raises(OSError):  # it never listened
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_a_missing_model_refuses_to_start_with_one_line(tmp_path):
    done, _ = _serve(tmp_path, None)
    lines = done.stderr.decode().strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1 and "is not a file" in lines[0], lines


# -- the request-body validator, fuzzed ------------------------------------------------------

SMALL = EngineSettings(max_prompt_chars=64, max_messages=4)
scalars = (
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)
keys = st.sampled_from(
    ["prompt", "messages", "max_tokens", "max_completion_tokens", "temperature", "stop",
     "seed", "n", "stream", "role", "content"]
)  # fmt: skip
message = st.fixed_dictionaries(
    {
        "role": st.sampled_from(["user", "system", "assistant", "tool", 3]),
        "content": st.text(max_size=40) | scalars,
    }  # fmt: skip
)
bodies = (
    st.dictionaries(
        keys,
        json_values | st.lists(message, max_size=6) | st.text(max_size=80),
        max_size=7,
    )
    | json_values
)


def _check_accepted(request: Request, chat: bool) -> None:
    if chat:
        assert request.prompt is None and 1 <= len(request.messages) <= SMALL.max_messages
        assert sum(len(m["content"]) for m in request.messages) <= SMALL.max_prompt_chars
    else:
        assert isinstance(request.prompt, str) and len(request.prompt) <= SMALL.max_prompt_chars
    assert request.max_tokens is None or (
        type(request.max_tokens) is int and request.max_tokens >= 1
    )
    assert type(request.temperature) is float and 0 <= request.temperature <= MAX_TEMPERATURE
    assert len(request.stop) <= MAX_STOP_SEQUENCES and all(
        isinstance(s, str) and s for s in request.stop
    )
    assert request.seed is None or (type(request.seed) is int and 0 <= request.seed < 2**32)


@settings(max_examples=400, deadline=None)
@given(body=bodies, chat=st.booleans())
def test_the_validator_accepts_only_well_formed_requests(body, chat):
    try:
        request = parse_request(body, SMALL, chat)
    except QresError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    _check_accepted(request, chat)


@pytest.mark.parametrize("stop", [True, False, 0, 5, 1.5, {"a": 1}, {}, [None], ["x", 3]])
def test_a_stop_that_is_no_string_or_list_of_strings_is_one_line(stop):
    with pytest.raises(QresError, match="stop: give up to"):
        parse_request({"prompt": "hi", "stop": stop}, SMALL, chat=False)


@pytest.fixture(scope="module")
def toy_server():
    backend = plugins.create("llm_backend", {"use": "deterministic"}, Location("tests"))
    engine = Engine(backend, SMALL)
    server = ServerThread(engine).start()
    yield server
    server.stop()
    engine.close()


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    raw=st.one_of(st.binary(max_size=200), bodies.map(lambda b: json.dumps(b).encode())),
    path=st.sampled_from(["/v1/completions", "/v1/chat/completions", "/v1/embeddings"]),
)
def test_fuzzed_bodies_get_200_or_one_openai_shaped_400(toy_server, raw, path):
    reply = httpx.post(toy_server.url + path, content=raw, timeout=30)
    assert reply.status_code in (200, 400), reply.text
    if reply.status_code == 400:
        error = reply.json()["error"]
        assert error["type"] == "invalid_request_error" and error["message"]
    assert httpx.get(toy_server.url + "/health", timeout=10).json()["status"] == "ok"
