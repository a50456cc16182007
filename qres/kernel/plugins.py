"""The plugin manager: loads built-in plugins and the ``qres`` entry-point group once.

Every plugin kind has a registry by name. Built-in plugins (the modules of the ``plugins/`` folder,
installed as ``qres.builtin_plugins``) are registered through the same hooks as third-party
packages. ``QRES_PLUGINS=a,b`` limits which
external plugins load (matched against the entry-point name or the distribution name); set but
empty, it loads none. A plugin that fails to import is recorded and reported by name; the others
keep working. ``QRES_TRACE_PLUGINS=1`` prints every hook call, its arguments and its results to
stderr (pluggy's tracing).
"""

from __future__ import annotations

import abc
import importlib
import importlib.metadata
import os
import pkgutil
import sys
import threading
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import attrs
import pluggy

from qres import __version__
from qres.kernel import hookspecs
from qres.kernel.config import Location, NoSettings, build_config, config_to_dict
from qres.kernel.errors import PluginError, ProfileError

#: Plugin kinds, each with the hook that registers it.
KINDS: dict[str, str] = {
    "predictor": "register_predictors",
    "coder": "register_coders",
    "aggregator": "register_aggregators",
    "attack": "register_attacks",
    "transport": "register_transports",
    "hardware": "register_hardware",
    "llm_backend": "register_llm_backends",
    "lora_layer": "register_lora_layers",
    "validator": "register_validators",
}

#: The base class every plugin of a kind subclasses (module, class), imported on first check.
KIND_BASES: dict[str, tuple[str, str]] = {
    "predictor": ("qres.kinds.predictor", "Predictor"),
    "coder": ("qres.kinds.coder", "Coder"),
    "aggregator": ("qres.kinds.aggregator", "Aggregator"),
    "attack": ("qres.kinds.attack", "Attack"),
    "transport": ("qres.kinds.transport", "Transport"),
    "hardware": ("qres.kinds.hardware", "Hardware"),
    "llm_backend": ("qres.kinds.llm", "LLMBackend"),
    "lora_layer": ("qres.kinds.lora", "LoRALayer"),
    "validator": ("qres.kinds.validator", "Validator"),
}

ENTRY_POINT_GROUP = "qres"
BUILTIN_PACKAGE = "qres.builtin_plugins"


class _Manager(pluggy.PluginManager):
    """pluggy's manager, counting registrations so the registry knows when to rebuild."""

    generation = 0

    def register(self, plugin, name=None):
        self.generation += 1
        return super().register(plugin, name)

    def unregister(self, plugin=None, name=None):
        self.generation += 1
        return super().unregister(plugin, name)


pm = _Manager("qres")
pm.add_hookspecs(hookspecs)

#: Set to anything but "" or "0" to trace hook calls on stderr.
TRACE_ENV = "QRES_TRACE_PLUGINS"

_lock = threading.Lock()
_loaded = False
#: Plugins that failed to load: (name, "ExceptionType: message").
load_failures: list[tuple[str, str]] = []
#: Where each registered pluggy plugin came from: pluggy name -> (package, version).
_origins: dict[str, tuple[str, str]] = {}


class Plugin(metaclass=abc.ABCMeta):  # noqa: B024 - kinds declare the abstract methods
    """Base for plugin classes: a ``name``, an attrs ``Config`` and a memory declaration.

    Like a numcodecs codec, a plugin is built from plain data (a profile table minus ``use``)
    and gives it back with :meth:`get_config`, so configs round-trip through TOML and JSON.
    """

    name: ClassVar[str] = ""
    Config: ClassVar[type] = NoSettings

    def __init__(self, config: Any = None):
        self.config = self.Config() if config is None else config

    @classmethod
    def from_config(cls, table: Mapping[str, Any], where: Location | None = None) -> Plugin:
        """Build the plugin from a profile table; ``use`` is ignored, other keys are settings."""
        where = where or Location(f"<{cls.name}>")
        settings = {k: v for k, v in table.items() if k != "use"}
        return cls(build_config(cls.Config, settings, where))

    def get_config(self) -> dict[str, Any]:
        """The plain-data settings, with ``use`` naming this plugin."""
        return {"use": self.name, **config_to_dict(self.config)}

    @classmethod
    def memory_bytes(cls, config: Any) -> int:
        """Bytes of RAM this plugin needs on the device with these settings."""
        return 0


@attrs.frozen
class PluginInfo:
    """One registered plugin class: its name, kind, class and where it came from."""

    name: str
    kind: str
    cls: type
    package: str
    version: str
    source: str


def _builtin_modules() -> Iterator[str]:
    """Every module under ``qres.builtin_plugins``, in a stable order."""
    package = importlib.import_module(BUILTIN_PACKAGE)
    for info in sorted(
        pkgutil.walk_packages(package.__path__, BUILTIN_PACKAGE + "."), key=lambda i: i.name
    ):
        if not info.ispkg and not info.name.rsplit(".", 1)[-1].startswith("_"):
            yield info.name


def _has_hooks(module: Any) -> bool:
    return any(hasattr(getattr(module, attr, None), "qres_impl") for attr in dir(module))


def _allowed_external() -> set[str] | None:
    raw = os.environ.get("QRES_PLUGINS")
    if raw is None:
        return None
    return {part.strip() for part in raw.split(",") if part.strip()}


def trace_hooks() -> None:
    """Print every hook call from now on to stderr: the hook, its arguments, its results."""
    pm.trace.root.setwriter(_write_trace)
    pm.enable_tracing()


def _trace(*message: Any) -> None:
    pm.trace.root.get("hook")(*message)


def _write_trace(text: str) -> None:
    sys.stderr.write("".join(f"qres: trace: {line}" for line in text.splitlines(keepends=True)))


def load_plugins() -> None:
    """Register built-ins and entry points, once per process."""
    global _loaded
    with _lock:
        if _loaded:
            return
        _loaded = True
        if os.environ.get(TRACE_ENV, "") not in ("", "0"):
            trace_hooks()
        for module_name in _builtin_modules():
            try:
                module = importlib.import_module(module_name)
            except Exception as exc:  # a broken plugin must not take the others down
                load_failures.append((module_name, f"{type(exc).__name__}: {exc}"))
                continue
            if _has_hooks(module) and pm.get_plugin(module_name) is None:
                pm.register(module, name=module_name)
                _origins[module_name] = ("qres", __version__)
        allowed = _allowed_external()
        for ep in sorted(
            importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name
        ):
            dist = ep.dist.name if ep.dist else "?"
            if allowed is not None and ep.name not in allowed and dist not in allowed:
                continue
            if pm.get_plugin(ep.name) is not None:
                continue
            try:
                plugin = ep.load()
                pm.register(plugin, name=ep.name)
            except Exception as exc:
                load_failures.append((ep.name, f"{type(exc).__name__}: {exc}"))
                continue
            _origins[ep.name] = (dist, ep.dist.version if ep.dist else "?")
        _drop_unknown_hooks()


def _drop_unknown_hooks() -> None:
    """Unregister, and report, every plugin that implements a hook qres does not define.

    A misspelled hook (``register_predictor``) would otherwise be ignored in silence and the
    plugin's classes would just be missing.
    """
    known = ", ".join(sorted(n for n in dir(hookspecs) if n.startswith("register_")))
    while True:
        try:
            pm.check_pending()
            return
        except pluggy.PluginValidationError as exc:
            name = pm.get_name(exc.plugin) or repr(exc.plugin)
            hooks = sorted(h.name for h in pm.get_hookcallers(exc.plugin) or () if not h.has_spec())
            pm.unregister(exc.plugin)
            load_failures.append(
                (name, f"implements unknown hook {', '.join(hooks)}; the hooks are: {known}")
            )


def _origin(plugin_name: str) -> tuple[str, str]:
    # Plugins registered by hand (tests, embedding applications) have no recorded origin.
    return _origins.get(plugin_name, (plugin_name, "?"))


_registry_cache: tuple[int, dict[str, dict[str, PluginInfo]]] | None = None
#: Classes refused at registration, by kind and name: the one-line reason.
_rejected: dict[str, dict[str, str]] = {}


def kind_base(kind: str) -> type:
    """The base class every plugin of ``kind`` subclasses (``qres.kinds.<module>``)."""
    module, cls = KIND_BASES[kind]
    return getattr(importlib.import_module(module), cls)


def contract_problem(kind: str, cls: Any) -> str | None:
    """Why ``cls`` cannot be a plugin of ``kind`` (wrong base, abstract methods left, a Config
    that is not an attrs class), or None if it can."""
    base = kind_base(kind)
    label = getattr(cls, "__qualname__", repr(cls))
    if not isinstance(cls, type) or not issubclass(cls, base):
        where = f"{base.__module__}.{base.__name__}"
        return f"{label} is not a subclass of {where}; derive it from that"
    missing = sorted(getattr(cls, "__abstractmethods__", ()))
    if missing:
        return f"{label} does not implement {', '.join(missing)} (see docs/plugins.md)"
    if not attrs.has(cls.Config):
        return f"{label}.Config is not an attrs class; decorate it with @attrs.frozen"
    return None


def registry() -> dict[str, dict[str, PluginInfo]]:
    """Every registered plugin class, by kind and name; rebuilt when plugins change."""
    global _registry_cache
    load_plugins()
    # Registering or unregistering bumps the generation: comparing one integer instead of
    # the sorted registrations matters because this runs for every plugin a codec builds.
    key = pm.generation
    if _registry_cache is not None and _registry_cache[0] == key:
        return _registry_cache[1]
    result: dict[str, dict[str, PluginInfo]] = {kind: {} for kind in KINDS}
    _rejected.clear()
    for kind, hook_name in KINDS.items():
        hook = getattr(pm.hook, hook_name)
        for impl in hook.get_hookimpls():
            source = impl.plugin_name
            package, version = _origin(source)
            names: list[str] = []

            def register(
                cls, _kind=kind, _source=source, _package=package, _version=version, _names=names
            ):
                _names.append(str(getattr(cls, "name", cls)))
                _add(result, _kind, cls, _source, _package, _version)

            # Called one plugin at a time to know each class's source, so pluggy's own tracing
            # does not see these calls: trace them here (silent unless QRES_TRACE_PLUGINS).
            _trace(f"{hook_name} from {source}")
            impl.function(register=register)
            _trace(f"finish {hook_name} from {source} --> {', '.join(names) or 'nothing'}")
    _registry_cache = (key, result)
    return result


def _add(result, kind: str, cls: type, source: str, package: str, version: str) -> None:
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise PluginError(f"plugin {source!r} registered a {kind} class without a name; fix it")
    problem = contract_problem(kind, cls)
    if problem is not None:
        _rejected.setdefault(kind, {})[name] = f"plugin {source!r}: {kind} {name!r}: {problem}"
        return
    existing = result[kind].get(name)
    if existing is not None:
        raise PluginError(
            f"{kind} {name!r} is registered twice: by {existing.source!r} and by {source!r}; "
            "uninstall one or exclude it with QRES_PLUGINS"
        )
    result[kind][name] = PluginInfo(name, kind, cls, package, version, source)


def problems() -> list[tuple[str, str]]:
    """Plugins that failed to load and classes refused at registration: (name, reason)."""
    registry()
    refused = [(k, why) for kind in KINDS for k, why in sorted(_rejected.get(kind, {}).items())]
    return [*load_failures, *refused]


def list_plugins() -> list[PluginInfo]:
    """All registered plugin classes, sorted by kind then name."""
    return [info for kind in KINDS for _, info in sorted(registry()[kind].items())]


def get_plugin(kind: str, name: str) -> type:
    """The class registered as ``name`` in ``kind``, or a :class:`PluginError` listing choices."""
    if kind not in KINDS:
        raise PluginError(f"unknown plugin kind {kind!r}; kinds: {', '.join(KINDS)}")
    found = registry()[kind].get(name)
    if found is None and name in _rejected.get(kind, {}):
        raise PluginError(_rejected[kind][name])
    if found is None:
        available = ", ".join(sorted(registry()[kind])) or "none installed"
        raise PluginError(f"unknown {kind} {name!r}; available: {available}")
    return found.cls


def create(kind: str, table: Any, where: Location) -> Plugin:
    """Build a plugin from a profile table ``{use = "name", ...settings}``."""
    if not isinstance(table, Mapping):
        raise ProfileError(f'{where}: expected a table with use = "<{kind} plugin>"')
    use = table.get("use")
    if not isinstance(use, str):
        raise ProfileError(f"{where.child('use')}: missing or not a string; name a {kind} plugin")
    registry()
    if use in _rejected.get(kind, {}):  # installed but broken: a plugin problem, not a setting
        raise PluginError(f"{where.child('use')}: {_rejected[kind][use]}")
    try:
        cls = get_plugin(kind, use)
    except PluginError as exc:
        raise ProfileError(f"{where.child('use')}: {exc}") from exc
    return cls.from_config(table, where)
