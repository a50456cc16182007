"""The multi-sequence batching measurement (`qres llm bench`): its greedy loop reproduces the
backend's answers, and a batch of sequences gives the same tokens as one after another."""

from __future__ import annotations

import pytest

pytest.importorskip("llama_cpp")

from qres.llm import batching  # noqa: E402


def test_the_greedy_loop_reproduces_the_backend(llama_backend):
    llm = llama_backend.load()
    prompts = list(batching.PROMPTS[:2])
    tokens, _ = batching.generate_greedy(llm, prompts, 6, batched=False)
    for prompt, out in zip(prompts, tokens, strict=True):
        done = llama_backend.complete(prompt, max_tokens=6)
        assert llm.detokenize(out).decode("utf-8", "replace") == done.text
        assert len(out) == done.tokens


def test_the_comparison_reports_speed_and_exactness(llama_backend):
    # Whether a batch is exact depends on llama.cpp's reductions (it is not, for some prompts,
    # with the backend's settings): the report must say so truthfully, not be exact.
    llm = llama_backend.load()
    report = batching.compare(llm, 3, 6)
    prompts = list(batching.PROMPTS[:3])
    sequential, _ = batching.generate_greedy(llm, prompts, 6, batched=False)
    batched, _ = batching.generate_greedy(llm, prompts, 6, batched=True)
    same = sum(a == b for a, b in zip(sequential, batched, strict=True))
    assert report["identical_sequences"] == same  # greedy: the same on every run
    assert report["exact"] == (same == 3)
    assert report["sequential_tokens_per_s"] > 0 and report["batched_tokens_per_s"] > 0
