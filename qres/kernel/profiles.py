"""TOML profiles: find them, resolve ``extends`` inheritance, and validate every plugin table.

A profile names, for each part of a pipeline, the plugin to use and its settings::

    [profile]
    name = "esp32"
    extends = "edge"
    [hardware]
    use = "esp32-c6"

Resolution merges a child over its parent table by table; a plugin table whose ``use`` differs
from the parent's replaces it whole (the parent's settings belong to another plugin). Every
resolved value remembers the file that set it, so an error names the file that must change.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from qres.codec.container import DEFAULT_BLOCK_FRAMES, MAX_BLOCK_FRAMES, SAMPLE_DTYPES
from qres.kernel.config import Location, build_config, integer, one_of, text
from qres.kernel.errors import ProfileError
from qres.llm.route_settings import RouterSettings
from qres.llm.settings import EngineSettings
from qres.lora.settings import HierarchySettings
from qres.mesh.settings import MeshSettings
from qres.node.settings import NodeSettings
from qres.swarm.settings import SwarmSettings

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

#: Profiles larger than this are refused unread: a profile is a short hand-written file.
MAX_PROFILE_BYTES = 1 << 20
#: Deepest nesting of tables and arrays accepted in a profile.
MAX_NESTING = 32
#: Longest ``extends`` chain accepted.
MAX_EXTENDS_DEPTH = 16


@attrs.frozen
class ProfileMeta:
    """The ``[profile]`` table: the profile's name, its parent and a description."""

    name: str = attrs.field(default="", validator=text(200))
    extends: str = attrs.field(default="", validator=text(4096))
    description: str = attrs.field(default="", validator=text(2000))


@attrs.frozen
class CodecTable:
    """The ``[codec]`` table's own settings (its plugin tables are slots, below).

    ``block_samples`` is the key profiles write; the codec and the container call the same
    number ``block_frames`` (a frame is one sample of every channel).
    """

    block_samples: int = attrs.field(
        default=DEFAULT_BLOCK_FRAMES, validator=integer(16, MAX_BLOCK_FRAMES)
    )
    dtype: str = attrs.field(default="int16", validator=one_of(*SAMPLE_DTYPES))

    @property
    def block_frames(self) -> int:
        """Frames per block: the codec's name for ``block_samples``."""
        return self.block_samples


@attrs.frozen
class Section:
    """How one top-level table of a profile is validated.

    ``settings`` is an attrs class for the table's plain keys; ``slots`` maps the keys that
    hold plugin tables to their plugin kind; ``many`` slots hold an array of plugin tables;
    ``is_plugin`` marks a table that is itself a plugin table (``[hardware]``).
    """

    settings: type | None = None
    slots: Mapping[str, str] = attrs.field(factory=dict)
    many: frozenset = frozenset()
    is_plugin: str | None = None
    #: Unknown keys are reported with every allowed key, plugin slots first (``[swarm]``).
    list_all_keys: bool = False


SECTIONS: dict[str, Section] = {
    "profile": Section(settings=ProfileMeta),
    "hardware": Section(is_plugin="hardware"),
    "codec": Section(settings=CodecTable, slots={"predictor": "predictor", "coder": "coder"}),
    "swarm": Section(
        settings=SwarmSettings,
        slots={"aggregator": "aggregator", "transport": "transport", "attack": "attack"},
        list_all_keys=True,
    ),
    "llm": Section(settings=EngineSettings, slots={"backend": "llm_backend"}),
    "node": Section(settings=NodeSettings, slots={"transport": "transport"}),
    "lora": Section(
        settings=HierarchySettings, slots={"layers": "lora_layer"}, many=frozenset({"layers"})
    ),
    "router": Section(
        settings=RouterSettings, slots={"validators": "validator"}, many=frozenset({"validators"})
    ),
    "mesh": Section(settings=MeshSettings),
}


def bundled_dir() -> Path:
    """The folder of profiles shipped with qres."""
    import qres.bundled_profiles as bundled

    return Path(next(iter(bundled.__path__)))


def search_dirs() -> list[Path]:
    """Folders searched for a profile by name: ``$QRES_PROFILE_PATH`` entries, then bundled."""
    extra = os.environ.get("QRES_PROFILE_PATH", "")
    return [Path(p) for p in extra.split(os.pathsep) if p] + [bundled_dir()]


def available() -> dict[str, Path]:
    """Every profile found by name, first folder wins."""
    return {name: found[0] for name, found in candidates().items()}


def candidates() -> dict[str, list[Path]]:
    """Every file found for each profile name, in search order: the first one is used and
    shadows the others."""
    found: dict[str, list[Path]] = {}
    for folder in search_dirs():
        if folder.is_dir():
            for path in sorted(folder.glob("*.toml")):
                found.setdefault(path.stem, []).append(path)
    return found


def is_bundled(path: Path) -> bool:
    """True for a profile shipped with qres."""
    return path.parent.resolve() == bundled_dir().resolve()


def shadowed_bundled(found: list[Path]) -> Path | None:
    """The bundled file a name's first match hides (``$QRES_PROFILE_PATH`` wins), if any."""
    if found and not is_bundled(found[0]):
        return next((p for p in found[1:] if is_bundled(p)), None)
    return None


_warned: set[str] = set()


def warn_shadowed(name: str, found: list[Path]) -> None:
    """Say once per run, on stderr, that ``name`` is not the bundled profile of that name."""
    hidden = shadowed_bundled(found)
    if hidden is None or name in _warned:
        return
    _warned.add(name)
    print(
        f"qres: warning: profile {name!r} comes from {found[0]} ($QRES_PROFILE_PATH) and "
        "shadows the bundled one; rename the file to use both",
        file=sys.stderr,
    )


def locate(name: str, relative_to: Path | None = None) -> Path:
    """The file of profile ``name``: a path if it looks like one, else a search by name.

    With ``relative_to`` (the file that names ``name`` in ``extends``), relative paths and bare
    names are first resolved in that file's folder.
    """
    if name.endswith(".toml") or os.sep in name or "/" in name:
        path = Path(name)
        if not path.is_absolute() and relative_to is not None:
            path = relative_to.parent / path
        if not path.is_file():
            raise ProfileError(f"{name}: profile file not found; check the path")
        return path
    # A parent named in ``extends`` is looked for beside the child first, so a folder of
    # profiles that extend each other works wherever it is.
    sibling = relative_to.parent / f"{name}.toml" if relative_to is not None else None
    if sibling is not None and sibling.is_file():
        found = sibling
    else:
        matches = candidates().get(name, [])
        warn_shadowed(name, matches)
        found = matches[0] if matches else None
    if found is None:
        names = ", ".join(sorted(available())) or "none"
        raise ProfileError(
            f"unknown profile {name!r}; available: {names} (or give a path to a .toml file)"
        )
    return found


def read_toml(path: Path) -> dict[str, Any]:
    """Parse one TOML file, refusing oversize, non-UTF-8 or malformed input with one line."""
    try:
        size = path.stat().st_size
        if size > MAX_PROFILE_BYTES:
            raise ProfileError(f"{path}: {size} bytes is too large for a profile (max 1 MiB)")
        raw = path.read_bytes()
    except OSError as exc:
        raise ProfileError(f"{path}: cannot read profile: {exc.strerror or exc}") from exc
    return parse_toml(raw, str(path))


def parse_toml(raw: bytes, source: str) -> dict[str, Any]:
    """Parse TOML bytes from ``source`` into a dict, or raise :class:`ProfileError`."""
    if len(raw) > MAX_PROFILE_BYTES:
        raise ProfileError(f"{source}: {len(raw)} bytes is too large for a profile (max 1 MiB)")
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ProfileError(f"{source}: not UTF-8 text at byte {exc.start}; save as UTF-8") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"{source}: invalid TOML: {exc}; fix the syntax") from exc
    except RecursionError as exc:
        raise ProfileError(f"{source}: TOML nested too deeply; flatten it") from exc
    _check_depth(data, source)
    return data


def _check_depth(data: dict[str, Any], source: str) -> None:
    """Refuse tables and arrays nested deeper than :data:`MAX_NESTING` (a dotted header of a
    thousand keys parses fine but would exhaust the recursion of every later step)."""
    stack: list[tuple[Any, int]] = [(data, 0)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_NESTING:
            raise ProfileError(
                f"{source}: tables or arrays nest more than {MAX_NESTING} levels deep; flatten them"
            )
        children = value.values() if isinstance(value, dict) else value
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))


@attrs.frozen
class Profile:
    """A resolved profile: merged data, the files it came from, and the file of each value."""

    name: str
    path: Path
    chain: tuple[Path, ...]
    data: dict[str, Any]
    origins: dict[tuple, str]
    #: Each section's plain settings as its typed object, built once by :func:`load`.
    typed: dict[str, Any] = attrs.field(factory=dict, eq=False)

    def where(self, *keys: str | int) -> Location:
        """The location (file and key path) of a value, for error messages."""
        loc = Location(str(self.path), origins=self.origins)
        for key in keys:
            loc = loc.child(key)
        return loc

    @property
    def description(self) -> str:
        """The description from the ``[profile]`` table (inherited if not set)."""
        return self.data.get("profile", {}).get("description", "")

    def settings(self, section: str) -> Any:
        """The typed settings of one section (``"codec"``, ``"swarm"``, ...): the object
        :func:`load` built from its plain keys, or the section's defaults when it is absent."""
        if section not in self.typed:
            cls = SECTIONS[section].settings
            if cls is None:
                raise KeyError(f"section {section!r} has no plain settings")
            self.typed[section] = cls()
        return self.typed[section]

    def plugin_tables(self) -> list[tuple[tuple, str, dict[str, Any]]]:
        """Every plugin table in the profile: (key path, plugin kind, table)."""
        out: list[tuple[tuple, str, dict[str, Any]]] = []
        for section_name, section in SECTIONS.items():
            table = self.data.get(section_name)
            if not isinstance(table, dict):
                continue
            if section.is_plugin:
                out.append(((section_name,), section.is_plugin, table))
            for slot, kind in section.slots.items():
                value = table.get(slot)
                if value is None:
                    continue
                if slot in section.many:
                    for i, item in enumerate(value):
                        out.append(((section_name, slot, i), kind, item))
                else:
                    out.append(((section_name, slot), kind, value))
        return out

    def build(self, *keys: str | int) -> Any:
        """Instantiate the plugin configured at a key path (e.g. ``"codec", "predictor"``)."""
        from qres.kernel import plugins

        table: Any = self.data
        for key in keys:
            table = table[key]
        kind = next(k for path, k, _ in self.plugin_tables() if path == tuple(keys))
        return plugins.create(kind, table, self.where(*keys))


def _merge(parent: dict, child: dict, origins: dict, child_source: str, prefix: tuple) -> dict:
    merged = dict(parent)
    for key, value in child.items():
        old = merged.get(key)
        if isinstance(value, dict) and isinstance(old, dict) and old.get("use") == value.get("use"):
            merged[key] = _merge(old, value, origins, child_source, prefix + (key,))
        else:
            merged[key] = value
            _drop_origins(origins, prefix + (key,))
            _set_origins(origins, value, child_source, prefix + (key,))
    return merged


def _drop_origins(origins: dict, prefix: tuple) -> None:
    for path in [p for p in origins if p[: len(prefix)] == prefix]:
        del origins[path]


def _set_origins(origins: dict, value: Any, source: str, path: tuple) -> None:
    origins[path] = source
    if isinstance(value, dict):
        for key, item in value.items():
            _set_origins(origins, item, source, path + (key,))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _set_origins(origins, item, source, path + (i,))


def _resolve_raw(path: Path, stack: tuple[Path, ...]) -> tuple[dict, dict, tuple[Path, ...]]:
    real = path.resolve()
    if real in stack:
        cycle = " -> ".join(p.name for p in (*stack, real))
        raise ProfileError(f"{path}: profile.extends forms a cycle ({cycle}); break the cycle")
    if len(stack) >= MAX_EXTENDS_DEPTH:
        raise ProfileError(f"{path}: profile.extends chain deeper than {MAX_EXTENDS_DEPTH}")
    data = read_toml(path)
    meta = data.get("profile", {})
    if not isinstance(meta, dict):
        raise ProfileError(f"{path}: profile: expected a table [profile]")
    parent_name = meta.get("extends")
    origins: dict[tuple, str] = {}
    if parent_name:
        if not isinstance(parent_name, str):
            raise ProfileError(
                f"{path}: profile.extends: bad value {parent_name!r}; allowed: a profile name"
            )
        try:
            parent_path = locate(parent_name, relative_to=path)
        except ProfileError as exc:
            raise ProfileError(f"{path}: profile.extends: {exc}") from exc
        parent, origins, chain = _resolve_raw(parent_path, (*stack, real))
    else:
        parent, chain = {}, ()
    merged = _merge(parent, data, origins, str(path), ())
    # The child's own name and description are not inherited as its identity.
    merged.setdefault("profile", {})
    merged["profile"] = {**merged["profile"], "extends": parent_name or ""}
    merged["profile"]["name"] = meta.get("name") or path.stem
    if "description" in meta:
        merged["profile"]["description"] = meta["description"]
    return merged, origins, (*chain, path)


def load(name: str) -> Profile:
    """Find, resolve and validate the profile ``name`` (a name or a path to a .toml file)."""
    path = locate(name)
    data, origins, chain = _resolve_raw(path, ())
    profile = Profile(data["profile"]["name"], path, chain, data, origins)
    profile.typed.update(validate(profile))
    return profile


def validate(profile: Profile) -> dict[str, Any]:
    """Check every section, setting and plugin table; raise :class:`ProfileError` on the first.

    Returns each present section's plain settings as its typed object.
    """
    from qres.kernel import plugins

    typed: dict[str, Any] = {}

    for section_name, table in profile.data.items():
        section = SECTIONS.get(section_name)
        where = profile.where(section_name)
        if section is None:
            allowed = ", ".join(SECTIONS)
            raise ProfileError(f"{where}: unknown section; allowed sections: {allowed}")
        if not isinstance(table, dict):
            raise ProfileError(f"{where}: expected a table [{section_name}]")
        if section.is_plugin:
            continue
        plain = {k: v for k, v in table.items() if k not in section.slots}
        if section.list_all_keys:
            known = [*section.slots, *attrs.fields_dict(section.settings)]
            for key in plain:
                if key not in known:
                    raise ProfileError(
                        f"{profile.where(section_name, key)}: unknown key; "
                        f"allowed keys: {', '.join(known)}"
                    )
        if section.settings is not None:
            for key in plain:  # key by key, so the first bad key is the one reported
                build_config(section.settings, {key: plain[key]}, profile.where(section_name))
            typed[section_name] = build_config(section.settings, plain, profile.where(section_name))
        elif plain:
            key = next(iter(plain))
            allowed = ", ".join(section.slots) or "none"
            raise ProfileError(
                f"{profile.where(section_name, key)}: unknown key; allowed keys: {allowed}"
            )
        for slot in section.many:
            value = table.get(slot)
            if value is not None and not isinstance(value, list):
                raise ProfileError(
                    f"{profile.where(section_name, slot)}: expected an array of tables "
                    f"[[{section_name}.{slot}]]"
                )
    for keys, kind, table in profile.plugin_tables():
        plugins.create(kind, table, profile.where(*keys))
    return typed


def standalone(data: dict[str, Any]) -> dict[str, Any]:
    """Resolved profile data that stands alone: the same tables without ``extends`` (every
    inherited value is already in them), so it loads back to the same data from anywhere."""
    meta = {k: v for k, v in data.get("profile", {}).items() if k != "extends"}
    return {**data, "profile": meta}


def to_toml(data: dict[str, Any]) -> str:
    """Render resolved profile data as TOML text."""
    import tomli_w

    return tomli_w.dumps(data)
