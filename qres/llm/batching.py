"""Does llama.cpp's multi-sequence batch make greedy generation faster here, and stay exact?

:func:`compare` generates greedily for ``k`` prompts twice with the same low-level loop on a
fresh llama.cpp context: once one sequence after another, once as ``k`` sequences decoded
together (one ``llama_decode`` per step carrying one token of every live sequence). It reports
tokens/s of both and whether every batched token equals the sequential one. The engine uses
batching for generation only if this shows a gain and exactness (docs/llm.md has the figures).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

PROMPTS = (
    "The lighthouse keeper climbed the stairs and",
    "A list of three rivers in Europe:",
    "The recipe for bread starts with",
    "In the year 2050, sensors on every street",
    "Once upon a time, a small robot",
    "The weather station reported",
    "def fibonacci(n):",
    "Dear team, the results of the test",
)


class _Context:
    """A fresh llama.cpp context for ``n_seq`` sequences on ``llm``'s model."""

    def __init__(self, llm: Any, n_seq: int, n_ctx_per_seq: int):
        import llama_cpp

        self.lib = llama_cpp
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = n_seq * n_ctx_per_seq
        params.n_batch = params.n_ubatch = max(512, n_seq * n_ctx_per_seq)
        params.n_seq_max = n_seq
        params.n_threads = params.n_threads_batch = llm.context_params.n_threads
        self.ctx = llama_cpp.llama_init_from_model(llm.model, params)
        if not self.ctx:
            raise RuntimeError("llama.cpp could not create a multi-sequence context")
        self.vocab = llama_cpp.llama_model_get_vocab(llm.model)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self.vocab)
        self.batch = llama_cpp.llama_batch_init(params.n_batch, 0, n_seq)

    def decode(self, entries: list[tuple[int, int, int, bool]]) -> None:
        """Decode ``(token, position, sequence, wants_logits)`` entries as one batch."""
        b = self.batch
        b.n_tokens = len(entries)
        for i, (token, pos, seq, logits) in enumerate(entries):
            b.token[i], b.pos[i], b.n_seq_id[i] = token, pos, 1
            b.seq_id[i][0] = seq
            b.logits[i] = logits
        if self.lib.llama_decode(self.ctx, b) != 0:
            raise RuntimeError("llama_decode failed")

    def argmax(self, i: int) -> int:
        """The greedy token after batch entry ``i``."""
        row = self.lib.llama_get_logits_ith(self.ctx, i)
        return int(np.argmax(np.ctypeslib.as_array(row, shape=(self.n_vocab,))))

    def close(self) -> None:
        self.lib.llama_batch_free(self.batch)
        self.lib.llama_free(self.ctx)


def _generate(ctx: _Context, prompts: list[list[int]], max_tokens: int) -> list[list[int]]:
    """Greedy tokens for ``prompts`` decoded together (sequence ``s`` for prompt ``s``)."""
    entries, last = [], []
    for s, tokens in enumerate(prompts):
        for p, t in enumerate(tokens):
            entries.append((t, p, s, p == len(tokens) - 1))
        last.append(len(entries) - 1)
    ctx.decode(entries)
    out: list[list[int]] = [[] for _ in prompts]
    live = list(range(len(prompts)))
    nexts = {s: ctx.argmax(last[s]) for s in live}
    while live:
        step = []
        for s in list(live):
            token = nexts[s]
            out[s].append(token)
            if ctx.lib.llama_vocab_is_eog(ctx.vocab, token) or len(out[s]) >= max_tokens:
                live.remove(s)
                continue
            step.append((token, len(prompts[s]) + len(out[s]) - 1, s, True))
        if not step:
            break
        ctx.decode(step)
        nexts = {entry[2]: ctx.argmax(i) for i, entry in enumerate(step)}
    return out


def compare(llm: Any, k: int, max_tokens: int) -> dict[str, Any]:
    """Sequential vs batched greedy generation of ``k`` prompts with ``llm``'s model."""
    prompts = [
        list(llm.tokenize(PROMPTS[i % len(PROMPTS)].encode(), add_bos=True)) for i in range(k)
    ]
    per_seq = max(len(p) for p in prompts) + max_tokens + 8
    sequential, seq_time = [], 0.0
    for prompt in prompts:
        ctx = _Context(llm, 1, per_seq)
        try:
            start = time.perf_counter()
            sequential += _generate(ctx, [prompt], max_tokens)
            seq_time += time.perf_counter() - start
        finally:
            ctx.close()
    ctx = _Context(llm, k, per_seq)
    try:
        start = time.perf_counter()
        batched = _generate(ctx, prompts, max_tokens)
        batch_time = time.perf_counter() - start
    finally:
        ctx.close()
    tokens = sum(map(len, sequential))
    same = sum(a == b for a, b in zip(sequential, batched, strict=True))
    return {
        "sequences": k,
        "max_tokens": max_tokens,
        "sequential_tokens_per_s": tokens / seq_time,
        "batched_tokens_per_s": sum(map(len, batched)) / batch_time,
        "speedup": (sum(map(len, batched)) / batch_time) / (tokens / seq_time),
        "identical_sequences": same,
        "exact": same == k,
    }
