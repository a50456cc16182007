"""The deterministic test LLM backend: a documented hash function of the prompt and seed."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence

import attrs

from qres.kernel.config import integer
from qres.kernel.errors import QresError
from qres.kernel.hookspecs import hookimpl
from qres.kinds.llm import Completion, LLMBackend, check_request

#: The 64 words the backend speaks, indexed 0..63 (the order is part of the documented output).
VOCABULARY: tuple[str, ...] = (
    "signal", "sample", "sensor", "stream", "node", "swarm", "model", "weight",
    "residual", "predict", "encode", "decode", "block", "frame", "window", "drift",
    "noise", "bias", "gain", "phase", "pulse", "wave", "peak", "trough",
    "rise", "fall", "steady", "spike", "quiet", "burst", "level", "trend",
    "north", "south", "east", "west", "cold", "warm", "damp", "dry",
    "fast", "slow", "near", "far", "early", "late", "high", "low",
    "red", "green", "blue", "amber", "one", "two", "three", "four",
    "and", "or", "then", "so", "the", "a", "of", "to",
)  # fmt: skip

#: Bytes a device spends on one token id in a token buffer (int32).
TOKEN_ID_BYTES = 4


@attrs.frozen
class DeterministicConfig:
    """Settings of the deterministic backend.

    * ``seed``: mixed into the hash, so different seeds give different completions.
    * ``max_tokens``: completion length when a request gives none, and the most it may ask.
    * ``context_tokens``: longest prompt accepted, in tokens (see ``count_tokens``).
    """

    seed: int = attrs.field(default=0, validator=integer(0, (1 << 64) - 1))
    max_tokens: int = attrs.field(default=64, validator=integer(1, 1 << 16))
    context_tokens: int = attrs.field(default=4096, validator=integer(1, 1 << 20))


def _word_indices(prompt: str, seed: int) -> Iterator[int]:
    """The endless stream of vocabulary indices for ``prompt`` and ``seed``."""
    key = hashlib.sha256(seed.to_bytes(8, "big") + prompt.encode("utf-8")).digest()
    block = 0
    while True:
        for byte in hashlib.sha256(key + block.to_bytes(4, "big")).digest():
            yield byte % len(VOCABULARY)
        block += 1


class DeterministicBackend(LLMBackend):
    """A test backend whose completion is an exact, documented function of prompt and seed.

    The words: ``key = SHA-256(seed as 8 bytes big-endian || prompt as UTF-8)``; the byte
    stream is ``SHA-256(key || 0 as 4 bytes big-endian) || SHA-256(key || 1 as 4 bytes) || ...``;
    word k is ``VOCABULARY[stream[k] % 64]``. Each word is one token; the text after k tokens is
    the first k words joined by single spaces.

    Generation: for k = 1, 2, ..., max_tokens, if any stop sequence occurs in the text after k
    tokens, the completion is that text cut before the earliest occurrence, with ``tokens = k``
    and ``finish_reason = "stop"``. Otherwise it is the text after ``max_tokens`` tokens with
    ``finish_reason = "length"``. ``temperature`` is validated but changes nothing: the
    backend always answers as if greedy.

    ``count_tokens(text)`` is ``len(text.split())``; a prompt longer than ``context_tokens`` is
    refused. ``memory_bytes`` counts the vocabulary, int32 token buffers for a full context and
    a full completion, and the completion's text.
    """

    name = "deterministic"
    Config = DeterministicConfig

    @classmethod
    def memory_bytes(cls, config: DeterministicConfig) -> int:
        """Vocabulary, prompt and completion token buffers, and the completion text."""
        vocabulary = sum(len(word) + 1 for word in VOCABULARY)
        longest = max(len(word) for word in VOCABULARY)
        token_buffers = TOKEN_ID_BYTES * (config.context_tokens + config.max_tokens)
        return vocabulary + token_buffers + config.max_tokens * (longest + 1)

    def count_tokens(self, text: str) -> int:
        """Whitespace-separated pieces of ``text``: ``len(text.split())``."""
        if not isinstance(text, str):
            raise QresError(
                f"llm backend 'deterministic': cannot count tokens of {type(text).__name__}; "
                "pass text"
            )
        return len(text.split())

    def complete(
        self,
        prompt: str,
        *,
        max_tokens: int | None = None,
        temperature: float = 0.0,
        stop: Sequence[str] | str | None = None,
        seed: int | None = None,
    ) -> Completion:
        """The documented completion of ``prompt`` (see the class docstring); ``seed``, when
        given, replaces the configured seed for this request."""
        limit = self.config.max_tokens if max_tokens is None else max_tokens
        stops = check_request(self.name, prompt, limit, temperature, stop)
        if seed is None:
            seed = self.config.seed
        elif isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 1 << 64:
            raise QresError(
                f"llm backend 'deterministic': seed={seed!r}; give an int in [0, 2**64)"
            )
        if limit > self.config.max_tokens:
            raise QresError(
                f"llm backend 'deterministic': max_tokens={limit} is above the configured "
                f"max_tokens={self.config.max_tokens}; ask for less or raise the setting"
            )
        used = self.count_tokens(prompt)
        if used > self.config.context_tokens:
            raise QresError(
                f"llm backend 'deterministic': prompt has {used} tokens, more than "
                f"context_tokens={self.config.context_tokens}; shorten it or raise the setting"
            )
        text = ""
        indices = _word_indices(prompt, seed)
        for k in range(1, limit + 1):
            before = len(text)
            text = VOCABULARY[next(indices)] if k == 1 else f"{text} {VOCABULARY[next(indices)]}"
            # Earlier texts held no stop sequence, so a match must end in the new part: only
            # search from where such a match could start, which keeps this linear.
            found = [
                p for p in (text.find(s, max(0, before - len(s) + 1)) for s in stops) if p >= 0
            ]
            if found:
                return Completion(text[: min(found)], k, "stop", prompt_tokens=used)
        return Completion(text, limit, "length", prompt_tokens=used)


@hookimpl
def register_llm_backends(register):
    """Register the deterministic test backend."""
    register(DeterministicBackend)
