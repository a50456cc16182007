"""The small learning task: nodes fit linear predictors on their own shards of sensor data.

Every node owns a *shard*, a 1-D run of real sensor samples, and fits a linear predictor of
order ``k`` (16 in the robustness grid, 64 in the swarm): the next sample is predicted as
``sum_j w[j] * x[t - 1 - j]``. Weights are Q16.16 int32; training is integer arithmetic only,
so a given (weights, window, settings) gives the same bytes on every machine. Every function
works on all nodes at once: arrays have one row per node.

Data (:func:`load_streams`, :func:`make_shards`):

* :func:`load_streams(folder)` reads every channel of every file of a MANIFEST folder
  (:mod:`qres.learning.corpus`; the shared corpus by default, generated files skipped unless
  asked) and maps each onto integers in ``[-2048, 2047]`` (:data:`SPAN` = 4096 levels between
  its 0.1 and 99.9 percentiles, outliers clipped): streams of different scale become comparable, and
  errors are reported relative to that range.
* :func:`make_shards(streams, n_nodes, shard_len, iid=..., rng=...)` gives an
  ``(n_nodes, shard_len)`` int32 array. Non-IID: each node reads one contiguous piece of one
  channel of one file, nodes spread over the files in blocks (neighbouring node ids share a
  recording).
  IID: each node's shard is :data:`IID_PIECES` pieces from streams drawn uniformly.

Training (pure functions of their arguments; no hidden state, no global randomness):

* :class:`TrainSettings` -- order ``k``, window length, learning rate (held as Q16.16
  ``lr_q``) and gradient steps per update.
* :func:`windows_at(shards, starts, settings)` -- the ``(n, window + k)`` training windows
  (``k`` samples of history, then ``window`` targets) at the given start offsets;
  :func:`random_starts` draws offsets from a seeded generator and :func:`nonce_start` derives
  one from a nonce (the auditor's choice of window).
* :func:`local_update(weights, windows, settings)` -- the weight deltas ``(n, k)`` int32 that
  ``settings.steps`` steps of normalised batch gradient descent on the squared prediction
  error produce from ``weights`` (``(n, k)`` or one ``(k,)`` vector shared by all nodes).
  :func:`train` is the same and returns the new weights.
* :func:`persistence_weights` / :func:`zero_weights` -- starting models.
* :func:`prediction_error(weights, windows, order)` -- each node's mean absolute prediction
  error divided by :data:`SPAN` (float64, ``(n,)``).

One gradient step, for each node (integers; ``>> 16`` rounds by the rule of
:func:`qres.robust.aggregate.div_round`)::

    p_t  = clip(sum_j w_j x_{t-1-j}, +-2**28)        # Q16.16 prediction
    e_t  = (x_t << 16) - p_t                         # Q16.16 error
    g_j  = sum_t e_t x_{t-1-j}                       # exact in int64
    tr   = 1 + sum_t sum_j x_{t-1-j}**2              # trace of X^T X: a stable step size
    w_j += round(round(g_j / tr) * lr_q / 2**16)

Dividing by the trace of ``X^T X`` (which bounds its largest eigenvalue) keeps the step stable
for any ``lr < 2`` whatever the data, as NLMS does per sample. Bounds: ``|x| <= 2**11``,
``|e| < 2**29``, so ``|g_j| < 2**40 * window`` stays inside int64 for ``window <=``
:data:`MAX_WINDOW`.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any

import attrs

from qres.fixed.q16 import FRAC_BITS, ONE, Q_MAX, Q_MIN, from_float, saturate
from qres.fixed.q16 import HALF as Q_HALF
from qres.kernel.config import integer, number
from qres.kernel.errors import QresError

#: Samples are mapped onto this many integer levels, centred on zero: [-2048, 2047].
SPAN = 4096
HALF = SPAN // 2
#: Predictions are clipped to this magnitude (Q16.16), 64x the data range: bounds the error.
PRED_LIMIT = 1 << 28
#: Longest training window: keeps every gradient sum below 2**63.
MAX_WINDOW = 1 << 16
#: Largest model order.
MAX_ORDER = 256
#: Pieces in an IID shard.
IID_PIECES = 8
#: Percentiles (per mille) of a stream mapped onto the ends of the integer range.
_LOW_PERMILLE, _HIGH_PERMILLE = 1, 999


@attrs.frozen
class TrainSettings:
    """How a node trains: predictor order, window length, learning rate and steps per update."""

    #: Predictor order k (weights per model).
    order: int = attrs.field(default=16, validator=integer(1, MAX_ORDER))
    #: Targets per training window (each window also carries ``order`` samples of history).
    window: int = attrs.field(default=256, validator=integer(1, MAX_WINDOW))
    #: Learning rate in (0, 2): the normalised step is stable below 2.
    lr: float = attrs.field(default=1.0, validator=number(2.0**-16, 1.99))
    #: Gradient steps per local update, each on the same window.
    steps: int = attrs.field(default=1, validator=integer(1, 1000))

    @property
    def lr_q(self) -> int:
        """The learning rate in Q16.16, rounded by the rule (to nearest, ties up)."""
        return from_float(self.lr)

    @property
    def span(self) -> int:
        """Samples one window covers: ``order`` of history plus ``window`` targets."""
        return self.order + self.window


@attrs.frozen
class Stream:
    """One channel of one data file, mapped onto integers in [-2048, 2047]."""

    name: str
    values: Any = attrs.field(eq=False, repr=False)
    #: The file (manifest entry) the channel comes from: non-IID shards are split by file.
    group: str = ""

    def __len__(self) -> int:
        return int(self.values.shape[0])


@attrs.frozen
class Scale:
    """How one stream's samples become the task's integers: ``[lo, hi]`` onto the
    :data:`SPAN` levels ``[-2048, 2047]``, outliers clipped (non-finite samples read as
    ``lo``). One rule for every learner: :func:`load_streams` fits it on a whole recording, a
    real node (:mod:`qres.node.runtime`) on its first samples or from its profile, and both keep
    it for the stream's life (a scale that moved with every window would move the offset a
    predictor without bias cannot follow, and the unit errors are reported in).

    Only correctly rounded IEEE operations are used (sorting, subtraction, multiplication,
    division, floor), so every machine produces the same integers.
    """

    lo: float
    hi: float = attrs.field()

    @hi.validator
    def _above_lo(self, attribute, value):
        if not (math.isfinite(self.lo) and math.isfinite(value) and value > self.lo):
            raise QresError(f"sample range [{self.lo}, {value}]: need finite lo < hi")

    @classmethod
    def fit(cls, values: Any) -> Scale | None:
        """The scale mapping the 0.1..99.9 percentile range of ``values`` onto the levels;
        None for fewer than two finite samples or a (nearly) constant stream."""
        import numpy as np

        v = np.asarray(values, dtype=np.float64)
        v = v[np.isfinite(v)]
        if v.size < 2:
            return None
        s = np.sort(v)
        lo = float(s[(s.size - 1) * _LOW_PERMILLE // 1000])
        hi = float(s[(s.size - 1) * _HIGH_PERMILLE // 1000])
        return cls(lo, hi) if hi > lo else None

    def apply(self, values: Any) -> Any:
        """``values`` as int32 in ``[-2048, 2047]``."""
        import numpy as np

        full = np.asarray(values, dtype=np.float64)
        full = np.where(np.isfinite(full), full, self.lo)
        q = np.floor((full - self.lo) * ((SPAN - 1) / (self.hi - self.lo)) + 0.5) - HALF
        return np.clip(q, -HALF, HALF - 1).astype(np.int32)


#: The scale of samples already in the task's integers (the simulator's generated data and
#: any recording written in those units): every sample maps onto itself.
TASK_UNITS = Scale(float(-HALF), float(HALF - 1))


def normalise(values: Any) -> Any:
    """Real samples as int32 in [-2048, 2047] by the :class:`Scale` fitted on them (their
    0.1..99.9 percentile range onto 4096 levels, outliers clipped). Returns None for a
    (nearly) constant channel."""
    scale = Scale.fit(values)
    return None if scale is None else scale.apply(values)


def load_streams(
    folder: str | Path | None = None, *, synthetic: bool = False, min_length: int = 0
) -> list[Stream]:
    """Every usable channel of the files in a MANIFEST folder, normalised (see
    :func:`normalise`), in manifest then channel order; channels shorter than ``min_length``
    and constant ones are left out, and generated files unless ``synthetic``."""
    from qres.learning.corpus import read_entry, read_manifest

    streams = []
    for entry in read_manifest(folder):
        if entry.synthetic and not synthetic:
            continue
        data = read_entry(folder, entry)
        for c in range(data.shape[0]):
            q = normalise(data[c])
            if q is None or q.shape[0] < max(min_length, 2):
                continue
            name = entry.name if data.shape[0] == 1 else f"{entry.name}[{c}]"
            streams.append(Stream(name, q, entry.name))
    if not streams:
        raise QresError(
            f"{folder or 'the shared corpus'}: no usable channel of at least {min_length} "
            "samples; pass a data folder with longer recordings or a shorter shard"
        )
    return streams


def make_shards(
    streams: list[Stream], n_nodes: int, shard_len: int, *, iid: bool, rng: Any
) -> tuple[Any, Any]:
    """Shards ``(n_nodes, shard_len)`` int32 and each node's source stream index ``(n_nodes,)``.

    Non-IID: node ``i`` reads a contiguous piece of one channel of file ``i * F // n_nodes``
    (F files with a usable channel, in manifest order; the channel and the offset are drawn
    from ``rng``), so every recording gets about the same number of nodes whatever its
    channel count. IID: a shard is :data:`IID_PIECES` pieces from streams drawn uniformly,
    and the source index is the first piece's. Streams shorter than a piece are not used.
    """
    import numpy as np

    if n_nodes < 1 or shard_len < 2:
        raise QresError(
            f"make_shards: need n_nodes >= 1 and shard_len >= 2, got {n_nodes}, {shard_len}"
        )
    pieces = IID_PIECES if iid else 1
    piece = -(-shard_len // pieces)
    usable = [i for i, s in enumerate(streams) if len(s) >= piece]
    if not usable:
        raise QresError(f"make_shards: no stream holds {piece} samples; use a shorter shard_len")
    groups: dict[str, list[int]] = {}
    for i in usable:
        groups.setdefault(streams[i].group or streams[i].name, []).append(i)
    members = list(groups.values())
    shards = np.empty((n_nodes, shard_len), np.int32)
    source = np.empty(n_nodes, np.int64)
    for node in range(n_nodes):
        if iid:
            picks = [usable[int(p)] for p in rng.integers(0, len(usable), size=pieces)]
        else:
            group = members[node * len(members) // n_nodes]
            picks = [group[int(rng.integers(0, len(group)))]]
        parts = []
        for p in picks:
            values = streams[p].values
            off = int(rng.integers(0, len(values) - piece + 1))
            parts.append(values[off : off + piece])
        shards[node] = np.concatenate(parts)[:shard_len]
        source[node] = picks[0]
    return shards, source


def random_starts(shard_len: int, n_nodes: int, settings: TrainSettings, rng: Any) -> Any:
    """Window start offsets ``(n_nodes,)`` drawn uniformly from the seeded ``rng``."""
    last = _last_start(shard_len, settings)
    return rng.integers(0, last + 1, size=n_nodes)


def nonce_start(nonce: bytes, shard_len: int, settings: TrainSettings) -> int:
    """The window offset a nonce selects: BLAKE2b of the nonce, modulo the offsets possible.

    Lets an auditor and the audited node agree on the window without sharing a generator.
    """
    last = _last_start(shard_len, settings)
    digest = hashlib.blake2b(bytes(nonce), digest_size=16).digest()
    return int.from_bytes(digest, "little") % (last + 1)


def _last_start(shard_len: int, settings: TrainSettings) -> int:
    last = shard_len - settings.span
    if last < 0:
        raise QresError(
            f"shard of {shard_len} samples is shorter than a window of {settings.span} "
            f"(order {settings.order} + window {settings.window}); use longer shards"
        )
    return last


def windows_at(shards: Any, starts: Any, settings: TrainSettings) -> Any:
    """The ``(n, order + window)`` int32 windows of each shard row at its start offset."""
    import numpy as np

    shards = _check_int_rows(shards, "shards")
    starts = np.asarray(starts, dtype=np.int64).reshape(-1)
    if starts.shape[0] != shards.shape[0]:
        raise QresError(
            f"windows_at: {starts.shape[0]} start offsets for {shards.shape[0]} shards; "
            "pass one offset per node"
        )
    last = _last_start(shards.shape[1], settings)
    if starts.size and (starts.min() < 0 or starts.max() > last):
        raise QresError(f"windows_at: start offsets must lie in [0, {last}]")
    idx = starts[:, None] + np.arange(settings.span, dtype=np.int64)[None, :]
    return np.take_along_axis(shards, idx, axis=1).astype(np.int32)


def _check_int_rows(a: Any, what: str) -> Any:
    import numpy as np

    if not isinstance(a, np.ndarray) or a.ndim != 2 or a.dtype.kind not in "iu":
        raise QresError(
            f"learning: {what} must be a 2-D integer array (one row per node), got "
            f"{getattr(a, 'shape', type(a).__name__)} {getattr(a, 'dtype', '')}"
        )
    return a


def _prepare(weights: Any, windows: Any, order: int) -> tuple[Any, Any]:
    """Weights as int64 ``(n, k)`` and windows as int64 ``(n, k + T)``, checked."""
    import numpy as np

    windows = _check_int_rows(windows, "windows")
    n, span = windows.shape
    if span <= order or span - order > MAX_WINDOW:
        raise QresError(
            f"learning: windows of {span} samples do not fit order {order} with 1.."
            f"{MAX_WINDOW} targets; build them with windows_at"
        )
    if windows.size and (windows.min() < -HALF or windows.max() > HALF - 1):
        raise QresError(
            f"learning: window samples must lie in [{-HALF}, {HALF - 1}]; normalise them"
        )
    w = np.asarray(weights)
    if w.dtype != np.int32 or w.shape not in ((order,), (n, order)):
        raise QresError(
            f"learning: weights must be int32 Q16.16 of shape ({order},) or ({n}, {order}), "
            f"got {w.shape} {w.dtype}"
        )
    w64 = np.broadcast_to(w.astype(np.int64), (n, order))
    return w64, windows.astype(np.int64)


def _predict(w: Any, x: Any, order: int) -> Any:
    """Q16.16 predictions ``(n, T)`` (int64, clipped) of the targets ``x[:, order:]``."""
    import numpy as np

    t = x.shape[1] - order
    p = np.zeros((x.shape[0], t), np.int64)
    for j in range(order):
        # weight j multiplies the sample j + 1 steps back
        p += w[:, j, None] * x[:, order - 1 - j : order - 1 - j + t]
    np.clip(p, -PRED_LIMIT, PRED_LIMIT, out=p)
    return p


def _step(w: Any, x: Any, order: int, lr_q: int, trace: Any) -> Any:
    """One normalised gradient step: the int64 weight change ``(n, k)``."""
    import numpy as np

    t = x.shape[1] - order
    e = (x[:, order:] << FRAC_BITS) - _predict(w, x, order)
    g = np.empty_like(w)
    for j in range(order):
        g[:, j] = np.einsum("nt,nt->n", e, x[:, order - 1 - j : order - 1 - j + t])
    q = (2 * g + trace[:, None]) // (2 * trace[:, None])
    return (q * lr_q * 2 + ONE) // (2 * ONE)


def _trace(x: Any, order: int) -> Any:
    """``1 + sum_t sum_j x[t-1-j]**2`` per node: the trace of X^T X, plus one."""
    import numpy as np

    sq = x * x
    c = np.concatenate([np.zeros((x.shape[0], 1), np.int64), np.cumsum(sq, axis=1)], axis=1)
    t = x.shape[1] - order
    # sum over j of sum_{t} sq[t + order - 1 - j] = sum over lag windows of the prefix sums
    total = np.zeros(x.shape[0], np.int64)
    for j in range(order):
        a = order - 1 - j
        total += c[:, a + t] - c[:, a]
    return total + 1


def train(weights: Any, windows: Any, settings: TrainSettings) -> Any:
    """New weights ``(n, k)`` int32 after ``settings.steps`` gradient steps on each window.

    A pure function of its arguments: the auditor re-runs it on the window a nonce picks and
    compares bytes. ``weights`` is ``(n, k)`` or one ``(k,)`` vector for all nodes.
    """
    import numpy as np

    order = settings.order
    w, x = _prepare(weights, windows, order)
    trace = _trace(x, order)
    w = w.copy()
    for _ in range(settings.steps):
        w += _step(w, x, order, settings.lr_q, trace)
        np.clip(w, Q_MIN, Q_MAX, out=w)
    return w.astype(np.int32)


def local_update(weights: Any, windows: Any, settings: TrainSettings) -> Any:
    """The weight deltas ``(n, k)`` int32 Q16.16 of :func:`train`: new weights minus old,
    saturated to the Q16.16 range."""
    import numpy as np

    w0, _ = _prepare(weights, windows, settings.order)
    new = train(weights, windows, settings).astype(np.int64)
    return saturate(new - w0)


def prediction_error(weights: Any, windows: Any, order: int) -> Any:
    """Each node's mean absolute prediction error over its window, relative to the data range
    (:data:`SPAN`): float64 ``(n,)``, 0 is perfect, about 0.25 predicts zero on uniform data."""
    import numpy as np

    w, x = _prepare(weights, windows, order)
    e = np.abs((x[:, order:] << FRAC_BITS) - _predict(w, x, order))
    total = e.sum(axis=1)  # below 2**29 * MAX_WINDOW
    return total.astype(np.float64) / (float(e.shape[1]) * SPAN * ONE)


def residuals(weights: Any, windows: Any, order: int) -> Any:
    """Integer residuals ``(n, T)`` (int64) of each window's targets: the sample minus the
    Q16.16 prediction rounded to nearest, ties up (the codec's predictors' rule)."""
    w, x = _prepare(weights, windows, order)
    return x[:, order:] - ((_predict(w, x, order) + Q_HALF) >> FRAC_BITS)


def genesis_weights(order: int, n: int | None = None) -> Any:
    """The model every swarm node starts from, simulated (:mod:`qres.swarm.engine`) or real
    (:mod:`qres.node.runtime`), so the simulator predicts what nodes learn: all zeros (the
    genesis model of a round-step chain, docs/trust.md section 14)."""
    return zero_weights(order, n)


def persistence_weights(order: int, n: int | None = None) -> Any:
    """Weights that predict the previous sample (``w[0] = 1.0``): the usual starting model,
    already a fair predictor of smooth sensor data."""
    w = zero_weights(order, n)
    w[..., 0] = ONE
    return w


def zero_weights(order: int, n: int | None = None) -> Any:
    """All-zero Q16.16 weights: one ``(order,)`` vector, or ``(n, order)`` for n nodes."""
    import numpy as np

    return np.zeros((order,) if n is None else (n, order), np.int32)
