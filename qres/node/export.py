"""Restoring a time range of a node's stream from its segments."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from qres.kernel.errors import QresError


def sample_times(segment) -> tuple[float, float]:
    """Start time and seconds per sample of a segment (its samples spread evenly over it)."""
    step = (segment.end_time - segment.start_time) / max(1, segment.samples)
    return segment.start_time, step


def export_range(profile, folder: Path, t0: float, t1: float) -> Iterator:
    """Yield numpy arrays of the samples taken in ``[t0, t1]``, in order, segment by segment.

    A sample's time is interpolated evenly across its segment's start and end times.
    """
    from qres.codec.samples import StreamSpec
    from qres.kernel.config import build_config
    from qres.node.segments import SegmentStore
    from qres.node.settings import NodeSettings
    from qres.node.state import State

    path = folder / "state.sqlite"
    if not path.exists():
        raise QresError(f"{path}: no node state; give the node's --data-dir")
    table = {k: v for k, v in profile.data.get("node", {}).items() if k != "transport"}
    settings = build_config(NodeSettings, table, profile.where("node"))
    dtype = settings.dtype or profile.data.get("codec", {}).get("dtype", "int16")
    state = State(path)
    try:
        store = SegmentStore(folder / "segments", state, StreamSpec(dtype, settings.channels), "")
        chosen = [s for s in state.segments() if s.end_time >= t0 and s.start_time <= t1]
        for segment in chosen:
            samples = store.read(segment)
            start, step = sample_times(segment)
            lo = 0 if step == 0 else max(0, int(-(-(t0 - start) // step)))
            hi = (
                segment.samples
                if step == 0
                else min(segment.samples, int((t1 - start) // step) + 1)
            )
            if lo < hi:
                yield samples[lo:hi]
    finally:
        state.close()
