"""The validator kind: checks an answer before the router accepts it.

A validator sees the prompt and a tier's answer and returns a :class:`Verdict`. The router
applies every validator of its profile whose ``when`` pattern matches the prompt (an empty
pattern matches every prompt); one failed verdict escalates the request to the next tier. A
validator that raises counts as a failed verdict with the exception as its reason, so a buggy
validator can cost money (an escalation) but never crash a request.

Validators that need a second opinion (``agreement``) get a :class:`Context` whose ``ask``
runs the prompt on another tier.
"""

from __future__ import annotations

import re
from abc import abstractmethod
from collections.abc import Callable

import attrs

from qres.kernel.config import InvalidSetting
from qres.kernel.plugins import Plugin

#: Longest ``when`` pattern accepted (a profile setting, compiled once).
MAX_PATTERN = 1024


@attrs.frozen
class Verdict:
    """A validator's judgement: ``ok`` and, when not, a one-line ``reason``."""

    ok: bool
    reason: str = ""


@attrs.frozen
class Context:
    """What a validator may use besides the answer: ``tier`` is the tier that answered;
    ``ask(tier_name, prompt)`` returns another tier's answer text (None: no such tier)."""

    tier: str = ""
    ask: Callable[[str, str], str | None] = attrs.field(default=lambda _tier, _prompt: None)


def pattern(_inst, attribute, value) -> None:
    """attrs validator: a regular expression that compiles, at most MAX_PATTERN characters."""
    if not isinstance(value, str) or len(value) > MAX_PATTERN:
        raise InvalidSetting(attribute.name, value, f"a regex of at most {MAX_PATTERN} chars")
    try:
        re.compile(value)
    except re.error as exc:
        raise InvalidSetting(attribute.name, value, f"a valid regex ({exc})") from exc


class Validator(Plugin):
    """Base of validator plugins (kind ``validator``): subclasses implement :meth:`check`.

    A subclass's ``Config`` should have a ``when`` setting (a regex searched in the prompt,
    empty: every prompt); :meth:`applies` reads it.
    """

    @abstractmethod
    def check(self, prompt: str, answer: str, context: Context) -> Verdict:
        """Judge ``answer`` to ``prompt``; never modify either."""
        raise NotImplementedError(f"validator {self.name!r} does not implement check")

    def applies(self, prompt: str) -> bool:
        """Whether this validator judges answers to ``prompt`` (its ``when`` pattern)."""
        when = getattr(self.config, "when", "")
        return not when or re.search(when, prompt) is not None

    def safe_check(self, prompt: str, answer: str, context: Context | None = None) -> Verdict:
        """:meth:`check`, with a raising validator turned into a failed verdict."""
        try:
            verdict = self.check(prompt, answer, context or Context())
        except Exception as exc:  # a validator bug fails the answer, it never kills the request
            return Verdict(False, f"validator {self.name!r} raised {type(exc).__name__}: {exc}")
        if not isinstance(verdict, Verdict):
            return Verdict(False, f"validator {self.name!r} returned {type(verdict).__name__}")
        return verdict
