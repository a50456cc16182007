"""The round's honest training, kept so a check of it is a lookup (:class:`TrainingMemo`).

A check or audit re-runs a sender's claimed training (:func:`qres.learning.task.local_update`)
and recomputes the residual and gain it claims. Training is a pure function of the base
weights, the window and the settings, computed row by row, and the simulator has already run
it for every awake node in the round's train phase. The memo keeps those results keyed by the
exact inputs (the integer values of the weights and the window, and the settings): a check
whose claimed inputs are the ones the sender trained from finds the same bytes the re-run
would give; any other claim (a moved base, another window, other settings) misses and is
re-run for real. Keys are whole byte strings, compared in full on a hit, so a lookup can never
answer for inputs other than its own.
"""

from __future__ import annotations

from typing import Any


class TrainingMemo:
    """Training results (update, residual, gain) by exact inputs, for one round."""

    def __init__(self) -> None:
        self._rows: dict[tuple[Any, bytes], tuple[Any, int, int]] = {}

    def __len__(self) -> int:
        return len(self._rows)

    def record(self, weights: Any, windows: Any, settings: Any, update, residual, gain) -> None:
        """Keep each row's update ``(k,)`` int32 and claims (Q16.16 ints) from ``weights``
        ``(m, k)`` int32 and ``windows`` ``(m, span)`` trained with ``settings``."""
        import numpy as np

        update = np.array(update, np.int32)  # a copy: later edits of the caller's rows
        for i, key in enumerate(_keys(weights, windows, settings)):
            self._rows[key] = (update[i], int(residual[i]), int(gain[i]))

    def lookup(self, weights: Any, windows: Any, settings: Any) -> tuple[Any, Any, Any, Any]:
        """``(hit, update, residual, gain)`` for the rows of ``weights`` and ``windows``
        trained with ``settings``: ``hit`` (bool) where the memo holds those exact inputs,
        the other arrays filled there only."""
        import numpy as np

        m, k = weights.shape[0], settings.order
        hit = np.zeros(m, bool)
        update = np.zeros((m, k), np.int32)
        residual = np.zeros(m, np.int64)
        gain = np.zeros(m, np.int64)
        if not self._rows or not m:
            return hit, update, residual, gain
        for i, key in enumerate(_keys(weights, windows, settings)):
            found = self._rows.get(key)
            if found is not None:
                hit[i] = True
                update[i], residual[i], gain[i] = found
        return hit, update, residual, gain


def _keys(weights: Any, windows: Any, settings: Any) -> list[tuple[Any, bytes]]:
    """Each row's exact inputs: the settings, and the weights' and the window's values as
    int64 (the training's own working type), with the row lengths and the dtypes so no two
    inputs of different shapes or types share a key."""
    import numpy as np

    w = np.asarray(weights)
    x = np.asarray(windows)
    both = np.ascontiguousarray(np.concatenate([w.astype(np.int64), x.astype(np.int64)], axis=1))
    shape = (settings, w.shape[1], x.shape[1], str(w.dtype), str(x.dtype))
    return [(shape, row.tobytes()) for row in both]
