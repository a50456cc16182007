"""What each simulated node streams: a generated multi-regime data set, or shards of a
MANIFEST folder of real recordings.

Both sources hand out, for a round ``r`` and a set of nodes, the ``(len(nodes), order +
window)`` int32 window each node trains on that round (``order`` samples of history, then
``window`` targets), in the integer range of :mod:`qres.learning.task` ([-2048, 2047]). A window
is a pure function of (seed, node, round): an auditor can rebuild it.

The generated set (:class:`GeneratedData`) is the project's own: every node watches one of
a few sources (two integer sine tones of a source-specific period and amplitude, with a
node-specific phase) plus small noise. A scripted storm hits a seeded subset of the nodes
for a stretch of rounds: wide noise that makes the stream unpredictable. Non-IID: node
``i`` always watches source ``i * S // n``; IID: every node draws a source per round. All
arithmetic is integer (a 4096-entry sine table and integer noise), so every machine makes
the same samples.
"""

from __future__ import annotations

import math
from typing import Any

#: Sources of the generated set: (period in samples, amplitude, overtone ratio).
SOURCES: tuple[tuple[int, int, int], ...] = (
    (24, 520, 3),
    (32, 610, 2),
    (40, 450, 3),
    (50, 570, 2),
    (64, 510, 5),
    (80, 670, 3),
    (100, 480, 2),
    (128, 580, 4),
)

_TABLE_BITS = 12
_TABLE = 1 << _TABLE_BITS
_SIN: Any = None


def sine_table() -> Any:
    """``round(2047 * sin(2 pi k / 4096))`` for k in 0..4095, int64 (built once)."""
    global _SIN
    if _SIN is None:
        import numpy as np

        # Rounding to integers hides any last-bit difference between libm implementations.
        _SIN = np.array(
            [math.floor(2047 * math.sin(2 * math.pi * k / _TABLE) + 0.5) for k in range(_TABLE)],
            dtype=np.int64,
        )
    return _SIN


class GeneratedData:
    """The generated multi-regime data set (see the module docstring).

    ``storm_start``, ``storm_rounds`` and ``storm_fraction`` script the storm; ``storm_noise``
    and ``calm_noise`` are the noise half-widths in sample units.
    """

    kind = "generated"

    def __init__(self, settings: Any, seed: int):
        import numpy as np

        self.s = settings
        self.seed = seed
        n = settings.nodes
        rng = np.random.default_rng([seed, 0x0DA7A])
        self.phase = rng.integers(0, _TABLE, n)
        self.phase2 = rng.integers(0, _TABLE, n)
        self.span = settings.order + settings.window
        n_src = len(SOURCES)
        self.source = (np.arange(n, dtype=np.int64) * n_src) // n
        stormed = int(math.ceil(settings.storm_fraction * n))
        self.stormed = np.zeros(n, bool)
        self.stormed[rng.permutation(n)[:stormed]] = True
        self.period = np.array([p for p, _, _ in SOURCES], np.int64)
        self.amp = np.array([a for _, a, _ in SOURCES], np.int64)
        self.over = np.array([o for _, _, o in SOURCES], np.int64)

    def storm_truth(self, r: int) -> Any:
        """Which nodes the scripted storm hits in round ``r`` (bool ``(n,)``)."""
        s = self.s
        if s.storm_start <= r < s.storm_start + s.storm_rounds:
            return self.stormed.copy()
        import numpy as np

        return np.zeros(s.nodes, bool)

    def windows(self, r: int, nodes: Any) -> Any:
        """The int32 training windows ``(len(nodes), order + window)`` of round ``r``."""
        import numpy as np

        s = self.s
        n = s.nodes
        rng = np.random.default_rng([self.seed, 0x5A3B1E, r])
        # Every draw is made for all n nodes, so a node's window does not depend on which
        # other nodes are asked for.
        if s.partition == "iid":
            src_all = rng.integers(0, len(SOURCES), n)
        else:
            src_all = self.source
        c = s.calm_noise
        noise = rng.integers(-c, c + 1, (n, self.span)) + rng.integers(-c, c + 1, (n, self.span))
        w = s.storm_noise
        storm_noise = rng.integers(-w, w + 1, (n, self.span))
        nodes = np.asarray(nodes, dtype=np.int64)
        src = src_all[nodes]
        t = r * s.window + np.arange(self.span, dtype=np.int64)[None, :]
        period = self.period[src][:, None]
        amp = self.amp[src][:, None]
        idx = (self.phase[nodes][:, None] + (t * _TABLE) // period) & (_TABLE - 1)
        idx2 = (self.phase2[nodes][:, None] + (t * _TABLE * self.over[src][:, None]) // period) & (
            _TABLE - 1
        )
        table = sine_table()
        x = (amp * table[idx]) // 2048 + (amp * table[idx2]) // 6144 + noise[nodes]
        storm = self.storm_truth(r)[nodes]
        if storm.any():
            x[storm] += storm_noise[nodes][storm]
        return np.clip(x, -2048, 2047).astype(np.int32)


class ShardData:
    """Shards of a MANIFEST folder (via :mod:`qres.learning.task`): each node streams its shard
    window after window, wrapping around at its end."""

    kind = "manifest"

    def __init__(self, settings: Any, seed: int, folder: str):
        import numpy as np

        from qres.kernel.errors import QresError
        from qres.learning import task as learning

        self.s = settings
        self.span = settings.order + settings.window
        if settings.shard_samples < self.span:
            raise QresError(
                f"swarm.shard_samples={settings.shard_samples} is shorter than one window "
                f"(order + window = {self.span}); raise shard_samples"
            )
        streams = learning.load_streams(folder, min_length=self.span)
        rng = np.random.default_rng([seed, 0x5AAD])
        self.shards, self.source = learning.make_shards(
            streams,
            settings.nodes,
            settings.shard_samples,
            iid=settings.partition == "iid",
            rng=rng,
        )
        self.names = [s.name for s in streams]
        self.settings = learning.TrainSettings(order=settings.order, window=settings.window)

    def storm_truth(self, r: int) -> Any:
        """Recordings carry no scripted storm: all False."""
        import numpy as np

        return np.zeros(self.s.nodes, bool)

    def windows(self, r: int, nodes: Any) -> Any:
        """Each node's window of round ``r``: offset ``r * window`` wrapped into its shard."""
        import numpy as np

        from qres.learning import task as learning

        nodes = np.asarray(nodes, dtype=np.int64)
        positions = self.shards.shape[1] - self.span + 1
        starts = np.full(nodes.shape[0], (r * self.s.window) % positions, np.int64)
        return learning.windows_at(self.shards[nodes], starts, self.settings)


def open_data(settings: Any, seed: int) -> GeneratedData | ShardData:
    """The data source a ``[swarm]`` table names (``data = "generated"`` or a folder)."""
    if settings.data == "generated":
        return GeneratedData(settings, seed)
    return ShardData(settings, seed, settings.data)
