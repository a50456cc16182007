"""The built-in validators (docs/router.md, "Validators")."""

from __future__ import annotations

import ast
import json
import re
from typing import Any

import attrs

from qres.kernel.config import InvalidSetting, boolean, integer, number, text
from qres.kernel.hookspecs import hookimpl
from qres.kinds.validator import Context, Validator, Verdict
from qres.kinds.validator import pattern as regex_setting

#: Longest answer a validator parses (longer answers fail rather than cost unbounded time).
MAX_ANSWER = 1 << 20
_NUMBER = re.compile(r"[-+]?(?:\d+(?:[.,]\d+)*(?:\.\d+)?|\.\d+)(?:[eE][-+]?\d+)?")


def first_json(answer: str) -> Any:
    """The first JSON object or array in ``answer`` (code fences and prose around it allowed);
    ValueError if there is none."""
    decoder = json.JSONDecoder()
    for i, ch in enumerate(answer):
        if ch in "{[":
            try:
                return decoder.raw_decode(answer, i)[0]
            except ValueError:
                continue
    raise ValueError("no JSON object or array in the answer")


def numbers_in(answer: str) -> list[float]:
    """Every number written in ``answer`` (thousands commas allowed), in order."""
    out = []
    for m in _NUMBER.finditer(answer):
        raw = m.group(0)
        if re.fullmatch(r"[-+]?\d{1,3}(,\d{3})+(\.\d+)?", raw):
            raw = raw.replace(",", "")
        try:
            out.append(float(raw.replace(",", ".")) if raw.count(",") == 1 else float(raw))
        except ValueError:
            continue
    return out


def _schema(_inst, attribute, value) -> None:
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    if isinstance(value, str):
        try:
            value = json.loads(value) if value else {}
        except ValueError as exc:
            raise InvalidSetting(attribute.name, value, f"a JSON Schema ({exc})") from exc
    if not isinstance(value, dict):
        raise InvalidSetting(attribute.name, value, "a JSON Schema (a table or JSON text)")
    try:
        Draft202012Validator.check_schema(value)
    except SchemaError as exc:
        raise InvalidSetting(attribute.name, value, f"a valid JSON Schema ({exc.message})") from exc


def _too_long(answer: str) -> Verdict | None:
    if len(answer) > MAX_ANSWER:
        return Verdict(False, f"answer of {len(answer)} characters is too long to check")
    return None


@attrs.frozen
class JsonSchemaConfig:
    """``schema``: a JSON Schema (a TOML table or JSON text; empty: any JSON value);
    ``when``: regex selecting the prompts this validator judges."""

    schema: Any = attrs.field(default="", validator=_schema)
    when: str = attrs.field(default="", validator=regex_setting)


class JsonSchemaValidator(Validator):
    """The answer holds a JSON value (the first object or array in it) valid under ``schema``."""

    name = "json-schema"
    Config = JsonSchemaConfig

    def check(self, prompt: str, answer: str, context: Context) -> Verdict:
        from jsonschema import Draft202012Validator

        if (long := _too_long(answer)) is not None:
            return long
        try:
            value = first_json(answer)
        except ValueError as exc:
            return Verdict(False, str(exc))
        schema = self.config.schema
        schema = json.loads(schema) if isinstance(schema, str) and schema else schema or {}
        error = next(iter(Draft202012Validator(schema).iter_errors(value)), None)
        if error is not None:
            return Verdict(False, f"JSON does not match the schema: {error.message}")
        return Verdict(True)


@attrs.frozen
class PythonSyntaxConfig:
    """``when``: regex selecting the prompts this validator judges."""

    when: str = attrs.field(default="", validator=regex_setting)


class PythonSyntaxValidator(Validator):
    """The answer's code (a fenced block if there is one, else the whole answer) parses as
    Python (``ast.parse``; nothing is run)."""

    name = "python-syntax"
    Config = PythonSyntaxConfig

    def check(self, prompt: str, answer: str, context: Context) -> Verdict:
        if (long := _too_long(answer)) is not None:
            return long
        fenced = re.search(r"```(?:python|py)?\n(.*?)```", answer, re.S)
        code = fenced.group(1) if fenced else answer
        try:
            ast.parse(code)
        except (SyntaxError, ValueError) as exc:
            return Verdict(False, f"not valid Python: {exc}")
        except RecursionError:
            return Verdict(False, "not valid Python: nested too deeply")
        return Verdict(True)


@attrs.frozen
class RegexConfig:
    """``pattern``: regex the answer must contain (``fullmatch = true``: match whole);
    ``when``: regex selecting the prompts this validator judges."""

    pattern: str = attrs.field(default=".", validator=regex_setting)
    fullmatch: bool = attrs.field(default=False, validator=boolean())
    when: str = attrs.field(default="", validator=regex_setting)


class RegexValidator(Validator):
    """The answer matches ``pattern`` (searched, or matched whole with ``fullmatch``)."""

    name = "regex"
    Config = RegexConfig

    def check(self, prompt: str, answer: str, context: Context) -> Verdict:
        if (long := _too_long(answer)) is not None:
            return long
        find = re.fullmatch if self.config.fullmatch else re.search
        if find(self.config.pattern, answer.strip()) is None:
            return Verdict(False, f"answer does not match /{self.config.pattern}/")
        return Verdict(True)


@attrs.frozen
class LengthConfig:
    """``min_chars``/``max_chars``: bounds on the stripped answer's length;
    ``when``: regex selecting the prompts this validator judges."""

    min_chars: int = attrs.field(default=1, validator=integer(0, 1 << 30))
    max_chars: int = attrs.field(default=4096, validator=integer(0, 1 << 30))
    when: str = attrs.field(default="", validator=regex_setting)


class LengthValidator(Validator):
    """The stripped answer has between ``min_chars`` and ``max_chars`` characters."""

    name = "length"
    Config = LengthConfig

    def check(self, prompt: str, answer: str, context: Context) -> Verdict:
        size = len(answer.strip())
        lo, hi = self.config.min_chars, self.config.max_chars
        if not lo <= size <= hi:
            return Verdict(False, f"answer of {size} characters, outside [{lo}, {hi}]")
        return Verdict(True)


@attrs.frozen
class NumericConfig:
    """``tolerance``: relative error allowed against the computed value; ``compute``: when
    the prompt is arithmetic or a unit conversion the tools can do, the answer's last number
    must equal their result; ``when``: regex selecting the prompts this validator judges."""

    tolerance: float = attrs.field(default=1e-3, validator=number(0.0, 1.0))
    compute: bool = attrs.field(default=True, validator=boolean())
    when: str = attrs.field(default="", validator=regex_setting)


class NumericValidator(Validator):
    """The answer holds a number; with ``compute``, its last number (where answers conclude)
    is the one the T0 tools compute, within ``tolerance``."""

    name = "numeric"
    Config = NumericConfig

    def check(self, prompt: str, answer: str, context: Context) -> Verdict:
        from qres.llm.tools import solve_numeric

        if (long := _too_long(answer)) is not None:
            return long
        found = numbers_in(answer)
        if not found:
            return Verdict(False, "answer holds no number")
        if not self.config.compute:
            return Verdict(True)
        expected = solve_numeric(prompt)
        if expected is None:
            return Verdict(True)
        if not close(found[-1], expected, self.config.tolerance):
            return Verdict(False, f"answer {found[-1]:.10g} is not the computed {expected:.10g}")
        return Verdict(True)


def close(a: float, b: float, tolerance: float) -> bool:
    """``a`` equals ``b`` within a relative ``tolerance`` (absolute near zero)."""
    return abs(a - b) <= tolerance * max(1.0, abs(b))


def normalize(answer: str) -> str:
    """Lower case, words only, single spaces: what two agreeing answers share."""
    return " ".join(re.findall(r"[a-z0-9.]+", answer.lower())).strip(" .")


@attrs.frozen
class AgreementConfig:
    """``tier``: the tier asked for a second answer; ``when``: regex selecting the prompts."""

    tier: str = attrs.field(default="", validator=text(64))
    when: str = attrs.field(default="", validator=regex_setting)


class AgreementValidator(Validator):
    """A second tier answers the same prompt; the answers agree when their normalized texts
    are equal, or their first numbers are equal within 1e-6. The answering tier itself is
    never its own witness (the verdict is then ok)."""

    name = "agreement"
    Config = AgreementConfig

    def check(self, prompt: str, answer: str, context: Context) -> Verdict:
        if not self.config.tier or context.tier == self.config.tier:
            return Verdict(True)
        other = context.ask(self.config.tier, prompt)
        if other is None:
            return Verdict(False, f"tier {self.config.tier!r} gave no second answer")
        if normalize(answer) == normalize(other):
            return Verdict(True)
        a, b = numbers_in(answer), numbers_in(other)
        if a and b and close(a[0], b[0], 1e-6):
            return Verdict(True)
        return Verdict(False, f"tier {self.config.tier!r} disagrees")


@hookimpl
def register_validators(register):
    """Register the built-in validators."""
    for cls in (
        JsonSchemaValidator,
        PythonSyntaxValidator,
        RegexValidator,
        LengthValidator,
        NumericValidator,
        AgreementValidator,
    ):
        register(cls)
