"""The deterministic LLM backend: its output is exactly the documented function of the prompt."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qres.kernel import plugins
from qres.kernel.config import Location
from qres.kernel.errors import ProfileError, QresError
from qres.kinds.llm import Completion, LLMBackend, check_request, cut_at_stop


def make(**settings) -> LLMBackend:
    return plugins.create("llm_backend", {"use": "deterministic", **settings}, Location("t.toml"))


def vocabulary() -> tuple[str, ...]:
    from qres.builtin_plugins.llm.deterministic import VOCABULARY

    return VOCABULARY


def reference(prompt: str, seed: int, max_tokens: int, stops=()) -> Completion:
    """The class docstring's function, written out naively (quadratic, no shortcuts)."""
    words = vocabulary()
    key = hashlib.sha256(seed.to_bytes(8, "big") + prompt.encode("utf-8")).digest()
    stream = b"".join(
        hashlib.sha256(key + j.to_bytes(4, "big")).digest() for j in range(max_tokens // 32 + 1)
    )
    chosen = [words[stream[k] % 64] for k in range(max_tokens)]
    for k in range(1, max_tokens + 1):
        text = " ".join(chosen[:k])
        hits = [text.find(s) for s in stops if s in text]
        if hits:
            return Completion(text[: min(hits)], k, "stop")
    return Completion(" ".join(chosen), max_tokens, "length")


def test_registered_through_the_hook():
    cls = plugins.get_plugin("llm_backend", "deterministic")
    assert issubclass(cls, LLMBackend)
    assert plugins.registry()["llm_backend"]["deterministic"].source.endswith("llm.deterministic")


def test_vocabulary_is_64_distinct_words():
    words = vocabulary()
    assert len(words) == 64 == len(set(words))
    assert all(w and w.isalpha() and w.islower() for w in words)


def test_known_answer_pins_the_function():
    # Pinned bytes: the first word indices are SHA-256 bytes mod 64, worked out by hand below.
    key = hashlib.sha256(b"\x00" * 8 + b"hello").digest()
    first = hashlib.sha256(key + b"\x00\x00\x00\x00").digest()[:3]
    words = vocabulary()
    expected = " ".join(words[b % 64] for b in first)
    got = make().complete("hello", max_tokens=3)
    assert got == Completion(expected, 3, "length")


def test_golden_completions():
    # Literal answers: any change to the hash, vocabulary or joining breaks these.
    backend = make()
    assert backend.complete("hello", max_tokens=8) == Completion(
        "north dry fast blue signal frame gain two", 8, "length"
    )
    got = backend.complete("The sensor on node 7 reads", max_tokens=12, stop=["green"])
    assert got == Completion("to the residual block rise ", 6, "stop")


@settings(max_examples=60, deadline=None)
@given(
    prompt=st.text(max_size=40),
    seed=st.integers(0, (1 << 64) - 1),
    max_tokens=st.integers(1, 80),
)
def test_matches_reference_without_stop(prompt, seed, max_tokens):
    backend = make(seed=seed, max_tokens=128)
    assert backend.complete(prompt, max_tokens=max_tokens) == reference(prompt, seed, max_tokens)


@settings(max_examples=60, deadline=None)
@given(
    prompt=st.text(alphabet="abc xyz", max_size=12),
    seed=st.integers(0, 50),
    stops=st.lists(
        st.sampled_from(["e", "al", "a s", "ss", " t", "wave", "zz", "n", "o t", "ea"]),
        max_size=4,
    ),
)
def test_matches_reference_with_stops(prompt, seed, stops):
    got = make(seed=seed).complete(prompt, max_tokens=40, stop=stops)
    assert got == reference(prompt, seed, 40, stops)
    for s in stops:
        assert s not in got.text


def test_stop_cuts_before_sequence_and_counts_tokens():
    backend = make(seed=3)
    full = backend.complete("weather?", max_tokens=30)
    words = full.text.split(" ")
    target = words[5]
    got = backend.complete("weather?", max_tokens=30, stop=[target])
    first = full.text.find(target)
    assert got.text == full.text[:first]
    assert got.finish_reason == "stop"
    # The stop word was generated, so it counts: tokens reach the word holding the match.
    assert got.tokens == len(full.text[: first + len(target)].split(" "))
    assert got.tokens <= 6


def test_stop_spanning_a_word_boundary():
    backend = make(seed=1)
    full = backend.complete("x", max_tokens=10)
    words = full.text.split(" ")
    span = words[2][-1] + " " + words[3][0]
    got = backend.complete("x", max_tokens=10, stop=span)
    assert got.finish_reason == "stop"
    assert got.text == full.text[: full.text.find(span)]


def test_max_tokens_honoured_and_default_from_settings():
    backend = make(max_tokens=12)
    got = backend.complete("p")
    assert (got.tokens, got.finish_reason) == (12, "length")
    assert backend.count_tokens(got.text) == 12
    short = backend.complete("p", max_tokens=5)
    assert short.text == " ".join(got.text.split(" ")[:5])
    with pytest.raises(QresError, match="above the configured max_tokens=12"):
        backend.complete("p", max_tokens=13)


def test_same_prompt_same_answer_seed_and_prompt_matter():
    a, b = make(seed=9), make(seed=9)
    assert a.complete("abc") == b.complete("abc")
    assert a.complete("abc") != make(seed=10).complete("abc")
    assert a.complete("abc") != a.complete("abd")


def test_temperature_is_checked_but_does_not_change_output():
    backend = make()
    assert backend.complete("t", temperature=1.5) == backend.complete("t", temperature=0)
    with pytest.raises(QresError, match="temperature"):
        backend.complete("t", temperature=2.5)
    with pytest.raises(QresError, match="temperature"):
        backend.complete("t", temperature=True)


def test_count_tokens_is_whitespace_split():
    backend = make()
    assert backend.count_tokens("") == 0
    assert backend.count_tokens("  a\tbb\n c  ") == 3
    with pytest.raises(QresError, match="count tokens"):
        backend.count_tokens(b"bytes")


def test_context_limit_refuses_long_prompt():
    backend = make(context_tokens=3)
    backend.complete("one two three")
    with pytest.raises(QresError, match="prompt has 4 tokens"):
        backend.complete("one two three four")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_tokens": 0}, "max_tokens=0"),
        ({"max_tokens": 2.0}, "max_tokens=2.0"),
        ({"stop": [""]}, "not a non-empty string"),
        ({"stop": ["a", 3]}, "not a non-empty string"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "at most 4"),
        ({"stop": 7}, "list of strings"),
    ],
)
def test_bad_requests_rejected(kwargs, match):
    with pytest.raises(QresError, match=match):
        make().complete("p", **kwargs)


def test_non_text_prompt_rejected():
    with pytest.raises(QresError, match="not str"):
        make().complete(b"bytes")


def test_shared_helpers():
    assert check_request("x", "p", 1, 0, "s") == ("s",)
    assert check_request("x", "p", 1, 0, None) == ()
    assert cut_at_stop("abcabc", ["c", "bc"]) == "a"
    assert cut_at_stop("abc", ["z"]) is None
    with pytest.raises(ValueError):
        Completion("t", 1, "finished")


def test_context_manager_and_config_round_trip():
    with make(seed=5, max_tokens=7, context_tokens=100) as backend:
        again = plugins.create("llm_backend", backend.get_config(), Location("x"))
        assert again.config == backend.config
        assert again.complete("q") == backend.complete("q")


def test_memory_bytes_grows_with_settings():
    cls = plugins.get_plugin("llm_backend", "deterministic")
    small = cls.memory_bytes(make(max_tokens=10, context_tokens=100).config)
    large = cls.memory_bytes(make(max_tokens=10, context_tokens=1100).config)
    assert large - small == 4 * 1000
    assert small > 4 * 110


@pytest.mark.parametrize(
    ("settings", "key"),
    [
        ({"seed": -1}, "seed"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"context_tokens": "big"}, "context_tokens"),
        ({"temperature": 0.5}, "temperature"),
    ],
)
def test_bad_settings_give_profile_error(settings, key):
    with pytest.raises(ProfileError, match=rf"^t\.toml: {key}") as info:
        make(**settings)
    assert info.value.exit_code == 3
