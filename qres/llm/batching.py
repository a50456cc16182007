"""Does llama.cpp's multi-sequence batch make greedy generation faster here, and stay exact?

:func:`compare` generates greedily for ``k`` prompts twice with the same low-level loop on a
fresh llama.cpp context: once one sequence after another, once as ``k`` sequences decoded
together (one ``llama_decode`` per step carrying one token of every live sequence). It reports
tokens/s of both and whether every batched token equals the sequential one, with the backend's
own settings and with flash attention. The engine generates one sequence at a time because
the batch is not exact with the backend's settings (docs/llm.md has the figures).
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

    def __init__(self, llm: Any, n_seq: int, n_ctx_per_seq: int, flash_attn: bool = False):
        import llama_cpp

        self.lib = llama_cpp
        # ``llm``'s own settings (attention kind, cache types, threads, batch sizes), with room
        # for ``n_seq`` sequences.
        params = llama_cpp.llama_context_params.from_buffer_copy(llm.context_params)
        params.n_ctx = n_seq * n_ctx_per_seq
        params.n_seq_max = n_seq
        if flash_attn:
            params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED
        self.ctx = llama_cpp.llama_init_from_model(llm.model, params)
        if not self.ctx:
            raise RuntimeError("llama.cpp could not create a multi-sequence context")
        self.vocab = llama_cpp.llama_model_get_vocab(llm.model)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self.vocab)
        self.batch = llama_cpp.llama_batch_init(max(params.n_batch, n_seq), 0, n_seq)

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


def generate_greedy(
    llm: Any, prompts: list[str], max_tokens: int, batched: bool, flash_attn: bool = False
) -> tuple:
    """Greedy tokens for each prompt, and the seconds spent generating: one multi-sequence
    batch (``batched``) or one fresh context per prompt, one after another."""
    tokens = [list(llm.tokenize(p.encode("utf-8"), add_bos=True)) for p in prompts]
    # Each sequence gets the context size of ``llm``'s own: llama.cpp's attention sums over
    # the (padded) cache, so another size can round differently and flip a near-tie.
    per_seq = max(llm.n_ctx(), max(len(t) for t in tokens) + max_tokens)
    groups = [tokens] if batched else [[t] for t in tokens]
    out, seconds = [], 0.0
    for group in groups:
        ctx = _Context(llm, len(group), per_seq, flash_attn)
        try:
            start = time.perf_counter()
            out += _generate(ctx, group, max_tokens)
            seconds += time.perf_counter() - start
        finally:
            ctx.close()
    return out, seconds


def compare(llm: Any, k: int, max_tokens: int, flash_attn: bool = False) -> dict[str, Any]:
    """Sequential vs batched greedy generation of ``k`` prompts with ``llm``'s model and
    settings (``flash_attn``: with llama.cpp's flash attention instead)."""
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(k)]
    sequential, seq_time = generate_greedy(llm, prompts, max_tokens, False, flash_attn)
    batched, batch_time = generate_greedy(llm, prompts, max_tokens, True, flash_attn)
    seq_rate = sum(map(len, sequential)) / seq_time
    batch_rate = sum(map(len, batched)) / batch_time
    same = sum(a == b for a, b in zip(sequential, batched, strict=True))
    return {
        "sequences": k,
        "max_tokens": max_tokens,
        "flash_attn": flash_attn,
        "sequential_tokens_per_s": seq_rate,
        "batched_tokens_per_s": batch_rate,
        "speedup": batch_rate / seq_rate,
        "identical_sequences": same,
        "exact": same == k,
    }
