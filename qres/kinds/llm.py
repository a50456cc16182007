"""The LLM backend kind: what every backend that turns a prompt into a completion provides.

A backend answers :meth:`LLMBackend.complete` with a :class:`Completion` and counts tokens with
:meth:`LLMBackend.count_tokens` (so the mesh can budget prompts before sending them). The
deterministic test backend, a llama.cpp backend (GGUF on CPU) and an OpenAI-compatible HTTP
backend all implement this one interface; :func:`check_request` and :func:`cut_at_stop` are the
shared rules they apply to a request and to generated text.
"""

from __future__ import annotations

from collections.abc import Sequence

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

    def to_dict(self) -> dict[str, object]:
        """Plain data for ``--json`` output."""
        return attrs.asdict(self)


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


class LLMBackend(Plugin):
    """Base of LLM backend plugins.

    Subclasses implement :meth:`complete` and :meth:`count_tokens`, and should call
    :func:`check_request` first so every backend rejects the same bad requests the same way.
    A backend is a context manager; :meth:`close` releases a model or connection.
    """

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

    def count_tokens(self, text: str) -> int:
        """How many tokens this backend's tokenizer makes of ``text``."""
        raise NotImplementedError(f"llm backend {self.name!r} does not implement count_tokens")

    def close(self) -> None:
        """Release the model, connection or other resources."""

    def __enter__(self) -> LLMBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
