"""Training one node's hierarchy from a recording (``qres lora train``).

A node alone: every layer trains at its depth on the file's windows as a swarm node's would,
the shared layers without aggregation (there is nobody to share with), the depths scored by
the profile's coder. The state it leaves is what :meth:`qres.lora.personal.Personal.to_state`
writes and ``qres lora show`` reads.
"""

from __future__ import annotations

from typing import Any

import attrs

from qres.kernel.errors import QresError


@attrs.frozen
class TrainPlan:
    """What to read and how much: two channels from ``first_channel``, ``rounds`` windows of
    ``window`` samples (0: as many as the file holds, at most ``max_rounds``)."""

    window: int
    order: int
    lr: float
    first_channel: int = 0
    rounds: int = 0
    max_rounds: int = 4096

    def frames(self) -> int:
        """Frames to read at most."""
        rounds = self.rounds or self.max_rounds
        return rounds * self.window + self.order + 1


def read_frames(source: Any, limit: int, where: str) -> Any:
    """Up to ``limit`` frames of a sample source as an int64/float (channels, n) array,
    reading no further than needed."""
    import numpy as np

    spec = source.spec
    parts, have = [], 0
    for raw in source.blocks(4096):
        values = spec.to_array(raw).reshape(-1, spec.channels)
        parts.append(values[: limit - have])
        have += parts[-1].shape[0]
        if have >= limit:
            break
    if not parts:
        raise QresError(f"{where}: no samples; give a recording with at least two channels")
    return np.concatenate(parts).T


def streams(samples: Any, plan: TrainPlan, where: str) -> Any:
    """The two channels the node models, normalised onto the model's 4096 levels (int64)."""
    import numpy as np

    from qres.learning.task import normalise

    channels, n = samples.shape
    first = plan.first_channel
    if first + 2 > channels:
        raise QresError(
            f"{where}: {channels} channel(s); the model reads channels {first} and "
            f"{first + 1}: give a file of two or more channels (--channels) or a lower "
            "--first-channel"
        )
    need = plan.window + plan.order + 1
    if n < need:
        raise QresError(
            f"{where}: {n} frames, fewer than one window ({need}); lower --window or give "
            "a longer recording"
        )
    rows = []
    for c in (first, first + 1):
        row = normalise(samples[c].astype(np.float64))
        if row is None:
            raise QresError(f"{where}: channel {c} is constant; pick other channels")
        rows.append(row)
    return np.stack(rows).astype(np.int64)


def train(hierarchy: Any, plan: TrainPlan, x: Any, coder: Any, seed: int = 0):
    """A :class:`~qres.lora.personal.Personal` trained on the windows of ``x`` (2, n)."""
    from qres.lora.personal import Personal, PersonalSettings

    node = Personal(
        hierarchy, PersonalSettings(channels=2, order=plan.order, lr=plan.lr), seed, coder
    )
    step = plan.window
    rounds = (x.shape[1] - plan.order - 1) // step
    if plan.rounds:
        rounds = min(rounds, plan.rounds)
    for r in range(rounds):
        node.learn(x[:, r * step : r * step + step + plan.order + 1])
    return node
