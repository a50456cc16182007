"""Memory budgets: does a profile's pipeline fit the RAM its hardware leaves to qres?

Every plugin declares the RAM it needs from its settings (``Plugin.memory_bytes``); the codec
adds its block buffers. The hardware plugin gives the budget (RAM minus what the OS, radio stack
and runtime reserve). A profile without ``[hardware]`` has no budget to check against.
"""

from __future__ import annotations

from typing import Any

import attrs

from qres.kernel.profiles import Profile

#: Bytes per sample of each codec buffer on a device: samples and residuals are held as int32
#: on microcontrollers (int64 only on hosts), and a block keeps both at once.
DEVICE_SAMPLE_BYTES = 4
CODEC_BUFFERS_PER_BLOCK = 2


@attrs.frozen
class BudgetItem:
    """One consumer of memory: where it is configured, its kind, plugin and bytes."""

    path: str
    kind: str
    plugin: str
    bytes: int


@attrs.frozen
class BudgetReport:
    """The sum of a profile's memory needs against its hardware's budget."""

    profile: str
    hardware: str | None
    items: tuple[BudgetItem, ...]
    budget_bytes: int | None

    @property
    def total_bytes(self) -> int:
        """Bytes the whole pipeline needs."""
        return sum(item.bytes for item in self.items)

    @property
    def fits(self) -> bool:
        """True when the pipeline fits the budget (or there is no hardware to check against)."""
        return self.budget_bytes is None or self.total_bytes <= self.budget_bytes

    def summary(self) -> str:
        """One line for people."""
        total = f"{self.total_bytes:,} bytes"
        if self.budget_bytes is None:
            return f"{self.profile}: needs {total}; no [hardware] table, so no budget to check"
        verdict = "fits" if self.fits else "DOES NOT FIT"
        share = 100.0 * self.total_bytes / self.budget_bytes if self.budget_bytes else float("inf")
        return (
            f"{self.profile}: needs {total} of {self.budget_bytes:,} available on "
            f"{self.hardware} ({share:.1f}%): {verdict}"
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain data for ``--json``."""
        return {
            "profile": self.profile,
            "hardware": self.hardware,
            "budget_bytes": self.budget_bytes,
            "total_bytes": self.total_bytes,
            "fits": self.fits,
            "items": [attrs.asdict(item) for item in self.items],
        }


def check(profile: Profile) -> BudgetReport:
    """Sum the memory every part of ``profile`` needs and compare it with its hardware."""
    items: list[BudgetItem] = []
    hardware_name: str | None = None
    budget: int | None = None
    codec = profile.data.get("codec")
    if isinstance(codec, dict):
        block = profile.settings("codec").block_frames
        items.append(
            BudgetItem(
                "codec.block_samples",
                "buffers",
                "codec",
                block * DEVICE_SAMPLE_BYTES * CODEC_BUFFERS_PER_BLOCK,
            )
        )
    if isinstance(profile.data.get("lora"), dict) and isinstance(profile.data.get("swarm"), dict):
        from qres.lora.personal import PersonalSettings, node_memory_bytes

        model = PersonalSettings(order=min(profile.settings("swarm").order, 32))
        need = node_memory_bytes(profile.settings("lora"), model)
        items.append(BudgetItem("lora", "adapters", "hierarchy", need))
    for keys, kind, _table in profile.plugin_tables():
        plugin = profile.build(*keys)
        path = ".".join(str(k) for k in keys)
        if kind == "hardware":
            hardware_name = plugin.name
            budget = int(plugin.memory_budget_bytes())
            continue
        items.append(BudgetItem(path, kind, plugin.name, int(plugin.memory_bytes(plugin.config))))
    return BudgetReport(profile.name, hardware_name, tuple(items), budget)
