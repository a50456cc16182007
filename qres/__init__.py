"""qres: deterministic, learned compression of sensor streams and swarm learning of its models.

The Python API (``docs/api.md``)::

    import qres
    packed = qres.compress(samples, "server", max_error=0)   # numpy array or bytes -> bytes
    restored = qres.decompress(packed)                         # same dtype and shape
    with qres.open("readings.qres") as c:                     # random access by block
        first = c.block(0)

Names are loaded on first use, so ``import qres`` (and ``qres --help``) stays fast and loading
plugins does not import numpy.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "Aggregator",
    "Attack",
    "Coder",
    "Completion",
    "Container",
    "Error",
    "Hardware",
    "IntegrityError",
    "LLMBackend",
    "LoRALayer",
    "Plugin",
    "PluginError",
    "Predictor",
    "ProfileError",
    "Transport",
    "UsageError",
    "__version__",
    "compress",
    "decompress",
    "hookimpl",
    "info",
    "open",
]

#: Where each public name lives: (module, attribute).
_EXPORTS: dict[str, tuple[str, str]] = {
    "compress": ("qres._api", "compress"),
    "decompress": ("qres._api", "decompress"),
    "open": ("qres._api", "open"),
    "info": ("qres._api", "info"),
    "Container": ("qres._api", "Container"),
    "Error": ("qres.kernel.errors", "QresError"),
    "UsageError": ("qres.kernel.errors", "UsageError"),
    "ProfileError": ("qres.kernel.errors", "ProfileError"),
    "PluginError": ("qres.kernel.errors", "PluginError"),
    "IntegrityError": ("qres.kernel.errors", "IntegrityError"),
    "hookimpl": ("qres.kernel.hookspecs", "hookimpl"),
    "Plugin": ("qres.kernel.plugins", "Plugin"),
    "Predictor": ("qres.kinds.predictor", "Predictor"),
    "Coder": ("qres.kinds.coder", "Coder"),
    "Aggregator": ("qres.kinds.aggregator", "Aggregator"),
    "Attack": ("qres.kinds.attack", "Attack"),
    "Transport": ("qres.kinds.transport", "Transport"),
    "Hardware": ("qres.kinds.hardware", "Hardware"),
    "LLMBackend": ("qres.kinds.llm", "LLMBackend"),
    "Completion": ("qres.kinds.llm", "Completion"),
    "LoRALayer": ("qres.kinds.lora", "LoRALayer"),
}

if TYPE_CHECKING:  # pragma: no cover - for type checkers and editors only
    from qres._api import Container, compress, decompress, info, open
    from qres.kernel.errors import IntegrityError, PluginError, ProfileError, UsageError
    from qres.kernel.errors import QresError as Error
    from qres.kernel.hookspecs import hookimpl
    from qres.kernel.plugins import Plugin
    from qres.kinds.aggregator import Aggregator
    from qres.kinds.attack import Attack
    from qres.kinds.coder import Coder
    from qres.kinds.hardware import Hardware
    from qres.kinds.llm import Completion, LLMBackend
    from qres.kinds.lora import LoRALayer
    from qres.kinds.predictor import Predictor
    from qres.kinds.transport import Transport


def __getattr__(name: str) -> Any:
    try:
        module, attr = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'qres' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
