"""Every first-party plugin and every one of its settings is documented in docs/.

A plugin is documented by a heading that names it (``## `nlms`: ...``), a table row that
starts with it (``| `median` | ...``) or a list item that does (``* `llama-cpp`: ...``). A
setting is documented by its name in backticks there, in a ``Settings`` section of the same
page (hardware's shared table), or, for a setting a Config inherits, where the plugin that
defines it is documented.
"""

from __future__ import annotations

import re

import attrs
import pytest
from conftest import REPO

from qres.kernel import plugins

DOCS = {path.name: path.read_text() for path in sorted((REPO / "docs").glob("*.md"))}
HEADING = re.compile(r"^(#+)\s")


def _sections(match, pages=None) -> list[str]:
    """The text under every heading for which ``match(heading)`` holds, to the next heading
    of the same or a higher level (in ``pages``, default every page)."""
    found = []
    for page, text in DOCS.items():
        if pages is not None and page not in pages:
            continue
        lines = text.splitlines()
        for i, line in enumerate(lines):
            head = HEADING.match(line)
            if not head or not match(line):
                continue
            body = []
            for later in lines[i + 1 :]:
                other = HEADING.match(later)
                if other and len(other.group(1)) <= len(head.group(1)):
                    break
                body.append(later)
            found.append("\n".join(body))
    return found


def plugin_docs(name: str) -> str:
    """Everything the docs say about plugin ``name`` in particular."""
    rows = [
        line
        for text in DOCS.values()
        for line in text.splitlines()
        if line.startswith(f"| `{name}` |")
    ]
    return "\n".join(_sections(lambda line: f"`{name}`" in line) + rows + _bullets(name))


def _bullets(name: str) -> list[str]:
    """List items that start with the plugin's name (``* `llama-cpp`: ...``), with the
    indented lines that continue them."""
    found = []
    for text in DOCS.values():
        lines = text.splitlines()
        for i, line in enumerate(lines):
            if re.match(rf"^[*-] `{re.escape(name)}`", line):
                item = [line]
                for later in lines[i + 1 :]:
                    if not later.startswith("  "):
                        break
                    item.append(later)
                found.append("\n".join(item))
    return found


def pages_of(name: str) -> set[str]:
    """The pages that document plugin ``name``."""
    return {
        page
        for page, text in DOCS.items()
        if f"| `{name}` |" in text
        or re.search(rf"^[*-] `{re.escape(name)}`", text, re.M)
        or any(HEADING.match(line) and f"`{name}`" in line for line in text.splitlines())
    }


def shared_settings(name: str) -> str:
    """The sections on plugin ``name``'s pages that document the settings every plugin of its
    kind shares (``## Settings``)."""
    is_settings = re.compile(r"^#+ Settings\s*$")
    return "\n".join(_sections(is_settings.match, pages_of(name)))


def first_party() -> list[plugins.PluginInfo]:
    plugins.load_plugins()
    return [
        info
        for info in plugins.list_plugins()
        if info.cls.__module__.startswith(plugins.BUILTIN_PACKAGE + ".")
    ]


def _owner(info: plugins.PluginInfo, field: attrs.Attribute) -> str:
    """The plugin whose own Config defines ``field`` (a subclass's Config inherits it)."""
    if not field.inherited:
        return info.name
    for other in first_party():
        if other.kind == info.kind and other.cls.Config is not info.cls.Config:
            fields = attrs.fields_dict(other.cls.Config) if attrs.has(other.cls.Config) else {}
            if field.name in fields and not fields[field.name].inherited:
                if issubclass(info.cls.Config, other.cls.Config):
                    return other.name
    return info.name


@pytest.mark.parametrize("info", first_party(), ids=lambda i: f"{i.kind}-{i.name}")
def test_every_plugin_setting_is_documented(info):
    own = plugin_docs(info.name)
    assert own, f"{info.kind} plugin {info.name!r} is documented nowhere in docs/"
    if not attrs.has(info.cls.Config):
        return
    shared = shared_settings(info.name)
    missing = [
        field.name
        for field in attrs.fields(info.cls.Config)
        if f"`{field.name}`" not in own + shared + plugin_docs(_owner(info, field))
    ]
    assert not missing, f"{info.kind} plugin {info.name!r}: settings not in docs/: {missing}"


def test_the_check_sees_a_missing_setting():
    assert "`order`" in plugin_docs("nlms")
    assert "`eeprom_bytes`" in shared_settings("rpi4")
    assert "`eeprom_bytes`" not in shared_settings("nlms")
    assert "`no_such_setting`" not in plugin_docs("nlms") + shared_settings("nlms")
    assert plugin_docs("no-such-plugin") == ""


JARGON = re.compile(r"\b(issues?|tickets?)\b", re.IGNORECASE)


def _help_texts(command, path=("qres",)):
    """(command path, help text) of every command and option of the CLI, recursively."""
    yield " ".join(path), command.help or ""
    for param in command.params:
        yield " ".join(path) + f" {param.name}", getattr(param, "help", None) or ""
    for name, sub in getattr(command, "commands", {}).items():
        yield from _help_texts(sub, (*path, name))


def test_user_facing_text_speaks_of_the_product_not_of_tickets():
    import typer.main

    from qres.cli import make_app

    found = [
        f"{page}: {line.strip()}"
        for page, text in {**DOCS, "README.md": (REPO / "README.md").read_text()}.items()
        for line in text.splitlines()
        if JARGON.search(re.sub(r"\S*github\.com/\S*", "", line))  # a cited URL may say issues
    ]
    found += [
        f"{where}: {text}"
        for where, text in _help_texts(typer.main.get_command(make_app()))
        if JARGON.search(text)
    ]
    assert not found, "\n".join(found)
