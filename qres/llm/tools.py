"""Tier-0 tools: answers without a model, for prompts that rules can answer exactly.

* arithmetic: the first expression of numbers, ``+ - * / // % **`` (or the words plus,
  minus, times, multiplied by, divided by, modulo, to the power of) and parentheses, evaluated
  on the syntax tree (no ``eval``), with bounded sizes;
* unit conversion: ``<number> <unit> to|in|into <unit>`` or ``how many <unit> in <number>
  <unit>`` over the length, mass, volume, time, data and temperature units of :data:`UNITS`;
* lookups: the facts of a bundled tab-separated file (``qres/llm/facts.tsv``; the profile may
  name another), found by their key phrase in the prompt.

Each tool returns None when it cannot answer, so the router moves on to a model.
"""

from __future__ import annotations

import ast
import functools
import math
import operator
import re
from pathlib import Path

import attrs

from qres.kernel.errors import QresError

#: Longest prompt the tools look at (longer prompts are never tool questions).
MAX_TOOL_PROMPT = 2000
#: Largest exponent and operand magnitude the arithmetic evaluator accepts.
MAX_EXPONENT = 64
MAX_MAGNITUDE = 1e100

_WORDS = (
    (r"\bmultiplied by\b", "*"),
    (r"\btimes\b", "*"),
    (r"\bdivided by\b", "/"),
    (r"\bover\b", "/"),
    (r"\bplus\b", "+"),
    (r"\bminus\b", "-"),
    (r"\bmodulo\b|\bmod\b", "%"),
    (r"\bto the power of\b", "**"),
    (r"\bsquared\b", "**2"),
    (r"(?<=\d)\s*[x×]\s*(?=\d)", "*"),
    (r"÷", "/"),
    (r"\^", "**"),
)
_EXPR = re.compile(r"[-(]*\s*\d[\d\s.+\-*/%()]*")
_OPS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}

#: Units: name -> (dimension, factor to the dimension's base unit). Temperatures are special.
UNITS: dict[str, tuple[str, float]] = {
    "mm": ("length", 1e-3), "millimeter": ("length", 1e-3), "millimetre": ("length", 1e-3),
    "cm": ("length", 1e-2), "centimeter": ("length", 1e-2), "centimetre": ("length", 1e-2),
    "m": ("length", 1.0), "meter": ("length", 1.0), "metre": ("length", 1.0),
    "km": ("length", 1e3), "kilometer": ("length", 1e3), "kilometre": ("length", 1e3),
    "in": ("length", 0.0254), "inch": ("length", 0.0254), "inches": ("length", 0.0254),
    "ft": ("length", 0.3048), "foot": ("length", 0.3048), "feet": ("length", 0.3048),
    "yd": ("length", 0.9144), "yard": ("length", 0.9144),
    "mi": ("length", 1609.344), "mile": ("length", 1609.344),
    "mg": ("mass", 1e-6), "milligram": ("mass", 1e-6),
    "g": ("mass", 1e-3), "gram": ("mass", 1e-3),
    "kg": ("mass", 1.0), "kilogram": ("mass", 1.0),
    "t": ("mass", 1e3), "tonne": ("mass", 1e3),
    "oz": ("mass", 0.028349523125), "ounce": ("mass", 0.028349523125),
    "lb": ("mass", 0.45359237), "lbs": ("mass", 0.45359237), "pound": ("mass", 0.45359237),
    "ml": ("volume", 1e-3), "milliliter": ("volume", 1e-3), "millilitre": ("volume", 1e-3),
    "l": ("volume", 1.0), "liter": ("volume", 1.0), "litre": ("volume", 1.0),
    "gallon": ("volume", 3.785411784), "gal": ("volume", 3.785411784),
    "ms": ("time", 1e-3), "millisecond": ("time", 1e-3),
    "s": ("time", 1.0), "sec": ("time", 1.0), "second": ("time", 1.0),
    "min": ("time", 60.0), "minute": ("time", 60.0),
    "h": ("time", 3600.0), "hr": ("time", 3600.0), "hour": ("time", 3600.0),
    "day": ("time", 86400.0), "week": ("time", 604800.0),
    "b": ("data", 1.0), "byte": ("data", 1.0),
    "kb": ("data", 1e3), "kilobyte": ("data", 1e3), "mb": ("data", 1e6), "megabyte": ("data", 1e6),
    "gb": ("data", 1e9), "gigabyte": ("data", 1e9),
    "kib": ("data", 1024.0), "kibibyte": ("data", 1024.0),
    "mib": ("data", 1048576.0), "mebibyte": ("data", 1048576.0),
    "c": ("temperature", 0.0), "celsius": ("temperature", 0.0),
    "f": ("temperature", 0.0), "fahrenheit": ("temperature", 0.0),
    "k": ("temperature", 0.0), "kelvin": ("temperature", 0.0),
}  # fmt: skip
_UNIT = r"(?:degrees?\s+)?([a-zA-Z°]+)"
_NUM = r"([-+]?\d+(?:\.\d+)?)"
_CONVERT = re.compile(rf"{_NUM}\s*{_UNIT}\s+(?:to|in|into)\s+{_UNIT}", re.I)
_HOW_MANY = re.compile(rf"how many\s+{_UNIT}\s+(?:are\s+)?(?:in|is)\s+{_NUM}\s*{_UNIT}", re.I)


@attrs.frozen
class ToolAnswer:
    """A tool's answer: the ``text``, the ``tool`` that gave it, and the ``value`` when the
    answer is a number."""

    text: str
    tool: str
    value: float | None = None


def _unit(word: str) -> str | None:
    word = word.lower().strip("°.")
    if word in UNITS:
        return word
    if word.endswith("s") and word[:-1] in UNITS:
        return word[:-1]
    if word.endswith("es") and word[:-2] in UNITS:
        return word[:-2]
    return None


def _evaluate(node: ast.AST) -> float:
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _evaluate(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > MAX_EXPONENT:
            raise ValueError("exponent too large")
        value = _OPS[type(node.op)](left, right)
        if isinstance(value, complex) or abs(value) > MAX_MAGNITUDE:
            raise ValueError("result out of range")
        return value
    raise ValueError("not arithmetic")


def _format(value: float) -> str:
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.10g}"


def arithmetic(prompt: str) -> ToolAnswer | None:
    """The value of the first arithmetic expression in ``prompt`` with an operator."""
    text = prompt.lower()
    for pattern, symbol in _WORDS:
        text = re.sub(pattern, f" {symbol} ", text)
    text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text)
    for match in _EXPR.finditer(text):
        expr = match.group(0).strip().rstrip(".").strip()
        while expr.count("(") > expr.count(")") and expr.startswith("("):
            expr = expr[1:]
        if not re.search(r"[\d)]\s*[-+*/%]", expr) or len(expr) > 200:
            continue
        try:
            value = _evaluate(ast.parse(expr, mode="eval"))
        except (SyntaxError, ValueError, ZeroDivisionError, OverflowError, RecursionError):
            continue
        if isinstance(value, float) and not math.isfinite(value):
            continue
        return ToolAnswer(_format(value), "arithmetic", float(value))
    return None


def _temperature(value: float, src: str, dst: str) -> float:
    kelvin = {"c": value + 273.15, "f": (value - 32) * 5 / 9 + 273.15, "k": value}[src[0]]
    return {"c": kelvin - 273.15, "f": (kelvin - 273.15) * 9 / 5 + 32, "k": kelvin}[dst[0]]


def convert(value: float, src: str, dst: str) -> float | None:
    """``value`` in unit ``src`` expressed in ``dst`` (None: unknown or different kinds)."""
    a, b = _unit(src), _unit(dst)
    if a is None or b is None or UNITS[a][0] != UNITS[b][0]:
        return None
    if UNITS[a][0] == "temperature":
        return _temperature(value, a, b)
    return value * UNITS[a][1] / UNITS[b][1]


def units(prompt: str) -> ToolAnswer | None:
    """A unit conversion asked in ``prompt``."""
    match = _CONVERT.search(prompt)
    if match:
        value, src, dst = float(match.group(1)), match.group(2), match.group(3)
    else:
        match = _HOW_MANY.search(prompt)
        if not match:
            return None
        dst, value, src = match.group(1), float(match.group(2)), match.group(3)
    out = convert(value, src, dst)
    if out is None:
        return None
    return ToolAnswer(_format(out), "units", out)


@functools.lru_cache(maxsize=8)
def load_facts(path: str = "") -> tuple[tuple[str, str], ...]:
    """The facts of a tab-separated file (``key<TAB>answer``; ``#`` comments), longest key
    first so the most specific fact wins; the bundled file when ``path`` is empty."""
    file = Path(path) if path else Path(__file__).with_name("facts.tsv")
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise QresError(f"facts file {file}: {exc.strerror or exc}; fix the path") from exc
    facts = []
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.startswith("#"):
            continue
        key, sep, answer = line.partition("\t")
        if not sep or not key.strip() or not answer.strip():
            raise QresError(f"facts file {file}, line {number}: give key<TAB>answer")
        facts.append((" ".join(key.lower().split()), answer.strip()))
    return tuple(sorted(facts, key=lambda f: -len(f[0])))


@functools.lru_cache(maxsize=8)
def _fact_index(facts_path: str) -> tuple[dict[tuple[str, ...], str], int]:
    index = {tuple(key.split()): answer for key, answer in load_facts(facts_path)}
    return index, max((len(k) for k in index), default=0)


def lookup(prompt: str, facts_path: str = "") -> ToolAnswer | None:
    """The answer of the bundled fact whose key phrase appears in ``prompt`` (the longest
    key wins), by looking up the prompt's word n-grams: linear in the prompt's length."""
    index, longest = _fact_index(facts_path)
    words = re.findall(r"[a-z0-9/]+", prompt.lower())
    for n in range(min(longest, len(words)), 0, -1):
        for i in range(len(words) - n + 1):
            found = index.get(tuple(words[i : i + n]))
            if found is not None:
                return ToolAnswer(found, "lookup")
    return None


def solve_numeric(prompt: str) -> float | None:
    """The number the arithmetic or unit tools compute for ``prompt`` (None: neither can)."""
    if len(prompt) > MAX_TOOL_PROMPT:
        return None
    found = units(prompt) or arithmetic(prompt)
    return None if found is None else found.value


def answer(prompt: str, facts_path: str = "") -> ToolAnswer | None:
    """The first tool answer for ``prompt``: unit conversion, arithmetic, then lookup."""
    if len(prompt) > MAX_TOOL_PROMPT:
        return None
    return units(prompt) or arithmetic(prompt) or lookup(prompt, facts_path)
