"""The adapter hierarchy (DynamicLoRA): a frozen shared weight plus one low-rank adapter per
role, from slow and shared (foundation, domain, swarm) to fast and local (agent, context).

* :mod:`qres.lora.settings` -- the ``[lora]`` profile table, typed and validated;
* :mod:`qres.lora.mechanisms` -- the integer formulas: effective inertia, decay, update
  spread and homeostasis, autocorrelation, resonance;
* :mod:`qres.lora.queues` -- migration queues with bandwidth and an emergency bypass;
* :mod:`qres.lora.health` -- HEALTHY / DEGRADED with reasons;
* :mod:`qres.lora.layer`, :mod:`qres.lora.hierarchy` -- the layers and the hierarchy that
  drives them, with frozen snapshots for deterministic inference.

docs/lora.md explains each mechanism.
"""

from __future__ import annotations

import importlib
from typing import Any

#: Public names and the submodule each lives in; loaded on first use, so reading a profile
#: (which validates ``[lora]`` with :mod:`qres.lora.settings`) loads nothing else.
_EXPORTS = {
    "CHANNELS": "settings",
    "HierarchySettings": "settings",
    "DEGRADED": "health",
    "HEALTHY": "health",
    "HealthReport": "health",
    "SHARED_ROLES": "hierarchy",
    "Hierarchy": "hierarchy",
    "Snapshot": "hierarchy",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'qres.lora' has no attribute {name!r}")
    return getattr(importlib.import_module(f"qres.lora.{module}"), name)
