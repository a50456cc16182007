"""The llama-cpp backend on the real bundled model: properties, never a model's exact words."""

from __future__ import annotations

import math
import os

import pytest

from qres.kernel import plugins
from qres.kernel.config import Location
from qres.kernel.errors import QresError
from qres.kinds.llm import Completion

llamacpp = pytest.importorskip("qres.builtin_plugins.llm.llamacpp")

PROMPT = "The three primary colours are"
CHAT = [{"role": "user", "content": "Name a colour."}]


def make(**settings):
    return plugins.create(
        "llm_backend", {"use": "llama-cpp", "n_threads": 1, **settings}, Location("t.toml")
    )


def test_bundled_model_is_found_through_the_package_files():
    path = llamacpp.bundled_model_path()
    assert path.suffix == ".gguf" and path.stat().st_size > 10_000_000
    assert make().model_id() == path.stem


def test_temperature_zero_is_deterministic(llama_backend):
    first = llama_backend.complete(PROMPT, max_tokens=16)
    # Another request in between must not change the next answer (each starts from a clean KV).
    llama_backend.complete("Something else entirely:", max_tokens=5)
    assert llama_backend.complete(PROMPT, max_tokens=16) == first
    assert first.text and first.prompt_tokens == llama_backend.count_tokens(PROMPT)


def test_max_tokens_bounds_the_completion(llama_backend):
    for limit in (1, 4, 9):
        done = llama_backend.complete(PROMPT, max_tokens=limit)
        assert 1 <= done.tokens <= limit
        assert done.finish_reason == ("length" if done.tokens == limit else "stop")


def test_stop_sequence_cuts_before_its_first_occurrence(llama_backend):
    free = llama_backend.complete(PROMPT, max_tokens=24)
    assert len(free.text) > 3
    stop = free.text[len(free.text) // 2 :][:2]  # a piece of the text the model will produce
    cut = llama_backend.complete(PROMPT, max_tokens=24, stop=[stop])
    assert cut.finish_reason == "stop"
    assert stop not in cut.text
    assert cut.text == free.text[: free.text.find(stop)]
    assert cut.tokens <= free.tokens


def test_seed_fixes_a_sampled_answer(llama_backend):
    a = llama_backend.complete(PROMPT, max_tokens=12, temperature=1.5, seed=7)
    b = llama_backend.complete(PROMPT, max_tokens=12, temperature=1.5, seed=7)
    assert a == b
    others = {llama_backend.complete(PROMPT, max_tokens=12, temperature=1.5, seed=s).text
              for s in range(8, 12)}  # fmt: skip
    assert len(others | {a.text}) > 1


def test_stream_gives_the_same_text_as_complete(llama_backend):
    whole = llama_backend.complete(PROMPT, max_tokens=12)
    chunks = list(llama_backend.stream(PROMPT, max_tokens=12))
    assert "".join(c.text for c in chunks) == whole.text
    assert chunks[-1].finish_reason == whole.finish_reason
    assert all(c.finish_reason is None for c in chunks[:-1])


def test_chat_uses_the_models_template_and_streams_alike(llama_backend):
    reply = llama_backend.chat(CHAT, max_tokens=10)
    assert reply == llama_backend.chat(CHAT, max_tokens=10)
    # The template wraps the message in role markers, so the prompt is longer than the words.
    assert reply.prompt_tokens > llama_backend.count_tokens(CHAT[0]["content"]) + 2
    assert "<|im_start|>" not in reply.text
    streamed = list(llama_backend.stream_chat(CHAT, max_tokens=10))
    assert "".join(c.text for c in streamed) == reply.text


def test_embeddings_are_unit_vectors_batched_exactly(llama_backend):
    texts = ["a warm sensor", "a cold stream", "a warm sensor"]
    vectors = llama_backend.embed(texts)
    assert len(vectors) == 3 and len({len(v) for v in vectors}) == 1
    for v in vectors:
        assert math.isclose(math.fsum(x * x for x in v), 1.0, rel_tol=1e-5)
    # Batched evaluation is exact up to float rounding: the same text anywhere in a batch, or
    # alone, gives the same vector to ~1e-6; the same batch again gives the same bits.
    assert llama_backend.embed(texts) == vectors

    def distance(a, b):
        return max(abs(x - y) for x, y in zip(a, b, strict=True))

    assert distance(vectors[0], vectors[2]) < 1e-5 < distance(vectors[0], vectors[1])
    assert distance(llama_backend.embed([texts[1]])[0], vectors[1]) < 1e-5


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"max_tokens": 129}, "above the configured max_tokens"),
        ({"max_tokens": 0}, "max_tokens=0"),
        ({"temperature": 3.0}, "temperature"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop sequences"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_requests_are_refused_with_one_line(llama_backend, kwargs, match):
    with pytest.raises(QresError, match=match) as info:
        llama_backend.complete(PROMPT, **kwargs)
    assert "\n" not in str(info.value)


def test_prompt_longer_than_the_context_is_refused(llama_backend):
    with pytest.raises(QresError, match="n_ctx=1024"):
        llama_backend.complete("word " * 1100, max_tokens=4)


def test_missing_and_corrupt_models_give_one_clear_error(tmp_path):
    with pytest.raises(QresError, match="is not a file"):
        make(model_path=str(tmp_path / "absent.gguf")).complete("x", max_tokens=1)
    corrupt = tmp_path / "corrupt.gguf"
    corrupt.write_bytes(b"GGUF" + os.urandom(4096))
    with pytest.raises(QresError, match="cannot load model") as info:
        make(model_path=str(corrupt)).complete("x", max_tokens=1)
    assert "\n" not in str(info.value)


def test_memory_accounts_model_file_and_kv_cache():
    config = make(n_ctx=2048).config
    parts = llamacpp.memory_estimate(config)
    assert parts["model"] == llamacpp.bundled_model_path().stat().st_size
    arch = llamacpp.architecture(llamacpp.bundled_model_path())
    kv = 2048 * arch["n_layer"] * arch["n_head_kv"] * arch["head_dim"] * 2 * 2
    assert parts["kv_cache"] == kv
    bigger = make(n_ctx=4096).config
    assert llamacpp.LlamaCppBackend.memory_bytes(bigger) - sum(parts.values()) == kv


def test_threads_never_exceed_the_idle_cores():
    assert llamacpp.pick_threads(3) == 3  # an explicit setting is kept
    chosen = llamacpp.pick_threads(0, hardware_cores=64)
    assert 1 <= chosen <= llamacpp.idle_cores() <= (os.cpu_count() or 1)
    assert llamacpp.pick_threads(0, hardware_cores=1) == 1


def test_completion_shape_is_the_kinds(llama_backend):
    done = llama_backend.complete(PROMPT, max_tokens=2)
    assert isinstance(done, Completion)
    assert set(done.to_dict()) == {"text", "tokens", "finish_reason", "prompt_tokens"}
