"""The device's battery charge, for energy-aware limits (Linux power-supply class)."""

from __future__ import annotations

from pathlib import Path

POWER_SUPPLY = Path("/sys/class/power_supply")


def battery_percent(root: Path = POWER_SUPPLY) -> float | None:
    """The lowest charge (0..100) among the device's batteries, or None on mains power only."""
    levels = []
    for supply in sorted(root.glob("*")) if root.is_dir() else ():
        try:
            if (supply / "type").read_text().strip() != "Battery":
                continue
            levels.append(float((supply / "capacity").read_text().strip()))
        except (OSError, ValueError):
            continue
    return min(levels) if levels else None
