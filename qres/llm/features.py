"""The router's complexity features: cheap, rule-based measurements of a prompt.

Every feature is a float, computed in one pass of regular expressions (microseconds), so the
routing decision stays far below a millisecond. The same vector feeds the rule-based
estimator (thresholds in the profile) and the learned one (logistic regression).
"""

from __future__ import annotations

import re

from qres.llm import tools

#: Feature names, in the order of the vector.
FEATURES = (
    "chars",
    "words",
    "questions",
    "code",
    "math",
    "multi_step",
    "format",
    "tool",
)

_CODE = re.compile(
    r"```|\bdef \w+\(|\bclass \w+|\bimport \w+|[{};]\s*$|\breturn\b|=>|\bfunction\b", re.M
)
_CODE_WORDS = re.compile(r"\b(?:code|python|function|script|program|regex|sql|implement)\b", re.I)
_MATH = re.compile(
    r"\d\s*[-+*/^%=]\s*\d|\b(?:sum|product|integral|derivative|equation|solve)\b", re.I
)
_MULTI = re.compile(
    r"\b(?:then|after that|step|steps|first|second|finally|explain|why|compare|because|"
    r"prove|derive|analy[sz]e|summari[sz]e|plan|reason)\b",
    re.I,
)
_FORMAT = re.compile(r"\b(?:json|yaml|csv|table|list|bullet|markdown|xml|schema)\b", re.I)


def extract(prompt: str, facts_path: str = "") -> dict[str, float]:
    """The features of ``prompt`` by name (see :data:`FEATURES`)."""
    head = prompt[: tools.MAX_TOOL_PROMPT * 8]
    return {
        "chars": float(len(prompt)),
        "words": float(len(head.split())),
        "questions": float(head.count("?")),
        "code": float(len(_CODE.findall(head)) + len(_CODE_WORDS.findall(head))),
        "math": float(len(_MATH.findall(head))),
        "multi_step": float(len(_MULTI.findall(head))),
        "format": float(len(_FORMAT.findall(head))),
        "tool": 1.0 if tools.answer(prompt, facts_path) is not None else 0.0,
    }


def vector(features: dict[str, float]) -> list[float]:
    """The features as a list in :data:`FEATURES` order."""
    return [float(features[name]) for name in FEATURES]
