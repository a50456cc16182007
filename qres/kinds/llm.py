"""The LLM backend kind: what every backend that turns a prompt into a completion provides.

A backend answers :meth:`LLMBackend.complete` with a :class:`Completion` and counts tokens with
:meth:`LLMBackend.count_tokens` (so the mesh can budget prompts before sending them). The
deterministic test backend, a llama.cpp backend (GGUF on CPU) and an OpenAI-compatible HTTP
backend all implement this one interface; :func:`check_request` and :func:`cut_at_stop` are the
shared rules they apply to a request and to generated text.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterator, Mapping, Sequence

import attrs

from qres.kernel.errors import QresError
from qres.kernel.plugins import Plugin

#: Why a completion ended: a stop sequence was produced, or ``max_tokens`` was reached.
FINISH_REASONS = ("stop", "length")

#: Most stop sequences a request may carry (the OpenAI API's limit, so requests stay portable).
MAX_STOP_SEQUENCES = 4

#: Highest sampling temperature accepted (the OpenAI API's range is [0, 2]).
MAX_TEMPERATURE = 2.0


@attrs.frozen
class Completion:
    """A backend's answer: the generated ``text`` (stop sequence excluded), how many ``tokens``
    were generated to produce it, and ``finish_reason``, one of :data:`FINISH_REASONS`."""

    text: str
    tokens: int
    finish_reason: str = attrs.field(validator=attrs.validators.in_(FINISH_REASONS))
    #: Tokens of the prompt as the backend saw it (None: the backend did not say).
    prompt_tokens: int | None = attrs.field(default=None, eq=False, kw_only=True)

    def to_dict(self) -> dict[str, object]:
        """Plain data for ``--json`` output."""
        return attrs.asdict(self)


@attrs.frozen
class Chunk:
    """One piece of a streamed completion: new ``text``, the ``tokens`` it took, and on the
    last piece only, the ``finish_reason`` (None before)."""

    text: str
    tokens: int
    finish_reason: str | None = None


#: Roles a chat message may have.
CHAT_ROLES = ("system", "user", "assistant")


def check_messages(backend: str, messages: object) -> tuple[dict[str, str], ...]:
    """Validate chat ``messages`` (a non-empty list of ``{"role", "content"}``); return them."""
    where = f"llm backend {backend!r}"
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence) or not messages:
        raise QresError(f"{where}: messages must be a non-empty list of {{role, content}}")
    out = []
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise QresError(f"{where}: messages[{i}] is not an object with role and content")
        role, content = message.get("role"), message.get("content")
        if role not in CHAT_ROLES:
            raise QresError(f"{where}: messages[{i}].role={role!r}; give one of {CHAT_ROLES}")
        if not isinstance(content, str):
            raise QresError(f"{where}: messages[{i}].content is not a string")
        out.append({"role": role, "content": content})
    return tuple(out)


def render_plain_chat(messages: Sequence[Mapping[str, str]]) -> str:
    """A model-neutral transcript for backends without a chat template of their own:
    ``role: content`` lines, then ``assistant:`` for the reply."""
    lines = [f"{m['role']}: {m['content']}" for m in messages]
    return "\n".join([*lines, "assistant:"])


def check_request(
    backend: str, prompt: object, max_tokens: object, temperature: object, stop: object
) -> tuple[str, ...]:
    """Validate a completion request; return the stop sequences as a tuple.

    Raises :class:`QresError` naming ``backend`` and the bad argument.
    """
    where = f"llm backend {backend!r}"
    if not isinstance(prompt, str):
        raise QresError(f"{where}: prompt is {type(prompt).__name__}, not str; pass text")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise QresError(f"{where}: max_tokens={max_tokens!r}; give an int >= 1")
    ok = isinstance(temperature, (int, float)) and not isinstance(temperature, bool)
    if not ok or not 0.0 <= temperature <= MAX_TEMPERATURE:
        raise QresError(f"{where}: temperature={temperature!r}; give a number in [0, 2]")
    if isinstance(stop, str):
        stops: tuple = (stop,)
    elif stop is None:
        stops = ()
    elif isinstance(stop, Sequence):
        stops = tuple(stop)
    else:
        raise QresError(f"{where}: stop={stop!r}; give a string or a list of strings")
    if len(stops) > MAX_STOP_SEQUENCES:
        raise QresError(f"{where}: {len(stops)} stop sequences; give at most {MAX_STOP_SEQUENCES}")
    for s in stops:
        if not isinstance(s, str) or not s:
            raise QresError(f"{where}: stop sequence {s!r} is not a non-empty string")
    return stops


def cut_at_stop(text: str, stops: Sequence[str]) -> str | None:
    """``text`` up to the earliest occurrence of any stop sequence, or None if none occurs."""
    positions = [p for p in (text.find(s) for s in stops) if p >= 0]
    return text[: min(positions)] if positions else None


def _seed(seed: int | None) -> dict[str, int]:
    # Backends written before seeds existed take no seed argument: pass one only when given.
    return {} if seed is None else {"seed": seed}


class LLMBackend(Plugin):
    """Base of LLM backend plugins.

    Subclasses implement :meth:`complete` and :meth:`count_tokens`, and should call
    :func:`check_request` first so every backend rejects the same bad requests the same way.
    A backend is a context manager; :meth:`close` releases a model or connection.
    """

    @abstractmethod
    def complete(
        self,
        prompt: str,
        *,
        max_tokens: int | None = None,
        temperature: float = 0.0,
        stop: Sequence[str] | str | None = None,
    ) -> Completion:
        """Complete ``prompt`` with at most ``max_tokens`` tokens (None: the backend's default).

        Generation ends at the first stop sequence (excluded from the text, finish_reason
        ``"stop"``) or after ``max_tokens`` tokens (finish_reason ``"length"``).
        """
        raise NotImplementedError(f"llm backend {self.name!r} does not implement complete")

    @abstractmethod
    def count_tokens(self, text: str) -> int:
        """How many tokens this backend's tokenizer makes of ``text``."""
        raise NotImplementedError(f"llm backend {self.name!r} does not implement count_tokens")

    def stream(
        self,
        prompt: str,
        *,
        max_tokens: int | None = None,
        temperature: float = 0.0,
        stop: Sequence[str] | str | None = None,
        seed: int | None = None,
    ) -> Iterator[Chunk]:
        """The completion of ``prompt`` piece by piece; the default yields it whole."""
        done = self.complete(
            prompt, max_tokens=max_tokens, temperature=temperature, stop=stop, **_seed(seed)
        )
        yield Chunk(done.text, done.tokens, done.finish_reason)

    def chat(
        self,
        messages: Sequence[Mapping[str, str]],
        *,
        max_tokens: int | None = None,
        temperature: float = 0.0,
        stop: Sequence[str] | str | None = None,
        seed: int | None = None,
    ) -> Completion:
        """The assistant's reply to ``messages``; the default completes a plain transcript
        (:func:`render_plain_chat`), backends with a chat template use their own."""
        prompt = render_plain_chat(check_messages(self.name, messages))
        return self.complete(
            prompt, max_tokens=max_tokens, temperature=temperature, stop=stop, **_seed(seed)
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
        """The reply to ``messages`` piece by piece; the default yields :meth:`chat` whole."""
        done = self.chat(
            messages, max_tokens=max_tokens, temperature=temperature, stop=stop, seed=seed
        )
        yield Chunk(done.text, done.tokens, done.finish_reason)

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One embedding vector per text (unit length), computed as one batch where possible."""
        raise NotImplementedError(f"llm backend {self.name!r} does not compute embeddings")

    def model_id(self) -> str:
        """The name clients use for this backend's model (``/v1/models``)."""
        return self.name

    def close(self) -> None:
        """Release the model, connection or other resources."""

    def __enter__(self) -> LLMBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
