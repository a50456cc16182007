"""Plugin settings: attrs config classes built from plain profile tables, with one-line errors.

A plugin's ``Config`` is an attrs class whose fields are its settings. The helpers here build
validators whose failures say what is allowed, and :func:`build_config` turns a profile table
into a config instance, reporting the file, the key path, the bad value and the allowed values.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import attrs

from qres.kernel.errors import ProfileError


@attrs.frozen
class Location:
    """Where a setting comes from: a file (or other source) and a dotted key path.

    With ``origins`` (key path tuple -> file, as recorded by profile resolution), a child
    location names the file that set that very key, which may be a parent profile's or the
    child's.
    """

    source: str = "<settings>"
    key: str = ""
    path: tuple = ()
    origins: Any = attrs.field(default=None, eq=False, repr=False)

    def child(self, key: str | int) -> Location:
        """The location of ``key`` inside this table (or index inside this array)."""
        path = (*self.path, key)
        source = self.source
        if self.origins is not None:
            source = self.origins.get(path, self.source)
        name = (
            f"{self.key}[{key}]"
            if isinstance(key, int)
            else (f"{self.key}.{key}" if self.key else key)
        )
        return Location(source, name, path, self.origins)

    def __str__(self) -> str:
        return f"{self.source}: {self.key}" if self.key else self.source


class InvalidSetting(ValueError):
    """Raised by the validators below; carries the allowed values for the error message."""

    def __init__(self, name: str, value: Any, allowed: str):
        super().__init__(f"{name}={value!r}: allowed {allowed}")
        self.name, self.value, self.allowed = name, value, allowed


def _describe_range(kind: str, lo: Any, hi: Any) -> str:
    if lo is not None and hi is not None:
        return f"{kind} in [{lo}, {hi}]"
    if lo is not None:
        return f"{kind} >= {lo}"
    if hi is not None:
        return f"{kind} <= {hi}"
    return kind


def integer(lo: int | None = None, hi: int | None = None) -> Callable:
    """Validator: an int (not a bool) within ``[lo, hi]``."""
    allowed = _describe_range("an integer", lo, hi)

    def check(_inst, attribute, value):
        ok = isinstance(value, int) and not isinstance(value, bool)
        if not ok or (lo is not None and value < lo) or (hi is not None and value > hi):
            raise InvalidSetting(attribute.name, value, allowed)

    return check


def number(lo: float | None = None, hi: float | None = None) -> Callable:
    """Validator: an int or float (not a bool, finite) within ``[lo, hi]``."""
    allowed = _describe_range("a number", lo, hi)

    def check(_inst, attribute, value):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        ok = ok and value == value and value not in (float("inf"), float("-inf"))
        if not ok or (lo is not None and value < lo) or (hi is not None and value > hi):
            raise InvalidSetting(attribute.name, value, allowed)

    return check


def one_of(*choices: Any) -> Callable:
    """Validator: exactly one of ``choices``."""
    allowed = "one of " + ", ".join(repr(c) for c in choices)

    def check(_inst, attribute, value):
        if isinstance(value, bool) or value not in choices:
            raise InvalidSetting(attribute.name, value, allowed)

    return check


def boolean() -> Callable:
    """Validator: true or false."""

    def check(_inst, attribute, value):
        if not isinstance(value, bool):
            raise InvalidSetting(attribute.name, value, "true or false")

    return check


def text(max_len: int = 4096) -> Callable:
    """Validator: a string of at most ``max_len`` characters."""

    def check(_inst, attribute, value):
        if not isinstance(value, str) or len(value) > max_len:
            raise InvalidSetting(attribute.name, value, f"a string of at most {max_len} characters")

    return check


@attrs.frozen
class NoSettings:
    """The config of a plugin that takes no settings."""


def build_config(config_cls: type, table: Mapping[str, Any], where: Location) -> Any:
    """Build ``config_cls`` from a plain table, or raise :class:`ProfileError` naming the key."""
    if not attrs.has(config_cls):
        raise ProfileError(f"{where}: the plugin's Config is not an attrs class; fix the plugin")
    fields = {f.name: f for f in attrs.fields(config_cls)}
    allowed_keys = ", ".join(["use", *fields]) or "use"
    for key in table:
        if key not in fields:
            raise ProfileError(
                f"{where.child(key)}: unknown setting {key!r}; allowed keys: {allowed_keys}"
            )
    for name, field in fields.items():
        if field.default is attrs.NOTHING and name not in table:
            raise ProfileError(
                f"{where.child(name)}: required setting is missing; add {name} = <value>"
            )
    try:
        return config_cls(**table)
    except InvalidSetting as exc:
        raise ProfileError(
            f"{where.child(exc.name)}: bad value {exc.value!r}; allowed: {exc.allowed}"
        ) from exc
    except (TypeError, ValueError) as exc:
        raise ProfileError(f"{where}: {exc}") from exc


def config_to_dict(config: Any) -> dict[str, Any]:
    """The plain-data form of a config instance (round-trips through :func:`build_config`)."""
    return attrs.asdict(config, recurse=True)
