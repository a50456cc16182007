"""The multichannel linear predictor (``use = "mclinear"``): a weight matrix across channels.

Every channel's next sample is predicted from every channel's last ``order`` samples::

    h_t = (x[0, t-1], ..., x[0, t-p], x[1, t-1], ..., x[C-1, t-p])   # C*p inputs
    p_t = W @ h_t                                                    # W: C x C*p, Q16.16

(by default on first differences: ``h`` holds the channels' last differences and
``p_t = x[t-1] + W @ h_t``)
so correlated channels (the axes of an accelerometer, the leads of an ECG, the sensors of one
station) predict each other. ``W`` starts from the initial weights (learned by a swarm and
stored in the container, or the default: each channel repeats its own last sample) and, with
``adapt`` on, follows the block by normalised LMS, one integer step per sample::

    W[c, j] += div_round(e_c * h_j * 2**(16 - shift), 1 + |h|**2)

The weight matrix is what a LoRA hierarchy adapts (see docs/lora.md): unlike the order-k
vectors of the single-channel predictors it has a row and a column space. All arithmetic is
integer and exact; docs/predictors.md specifies it bit for bit.

The training functions below (:func:`history`, :func:`predict_q16`, :func:`batch_step`) fit
``W`` to a window of samples outside the codec, vectorised over the window, for swarms and
adapters that learn ``W`` between blocks.
"""

from __future__ import annotations

from typing import Any, ClassVar

import attrs

from qres.fixed.q16 import ONE
from qres.kernel.config import InvalidSetting, boolean, integer
from qres.kernel.errors import QresError
from qres.kernel.hookspecs import hookimpl
from qres.kinds.predictor import Predictor

#: Largest order (history samples per channel).
MAX_ORDER = 32
#: Largest channel count of a learned weight matrix.
MAX_CHANNELS = 256
#: Largest ``channels * order``: keeps every dot product exact in int64 (see the kernel).
MAX_INPUTS = 1024
#: Weights are clamped to +-128.0 (Q16.16).
WEIGHT_LIMIT = 1 << 23
#: Samples entering the model are clamped to +-2**24.
SAMPLE_LIMIT = 1 << 24
#: Batch training takes samples of at most this magnitude (the learning task's range).
TRAIN_LIMIT = 1 << 12
#: Batch training clips predictions to this magnitude (Q16.16), as the learning task does.
PRED_LIMIT = 1 << 28


@attrs.frozen
class McLinearConfig:
    """Settings of the multichannel linear predictor.

    * ``order``: history samples per channel, p (1..32).
    * ``channels``: channel count C of learned weights (``weight_count = C * C * p``); unset
      (the default), the predictor has no stored weights and starts every block from
      persistence (each channel repeats its last sample) for any channel count.
    * ``shift``: the NLMS step is ``2**-shift`` (2..16; bigger is slower and steadier).
    * ``adapt``: follow the block by NLMS (true) or keep the initial weights fixed (false).
    * ``fixed``: 1 (the default) models first differences, ``x[t] = x[t-1] + W @ dh_t`` with
      ``dh`` the channels' last ``order`` differences, which removes each channel's level so
      NLMS converges on the dynamics; 0 models the samples themselves.
    """

    order: int = attrs.field(default=2, validator=integer(1, MAX_ORDER))
    channels: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(integer(1, MAX_CHANNELS))
    )
    shift: int = attrs.field(default=5, validator=integer(2, 16))
    adapt: bool = attrs.field(default=True, validator=boolean())
    fixed: int = attrs.field(default=1, validator=integer(0, 1))

    def __attrs_post_init__(self):
        if self.channels is not None and self.channels * self.order > MAX_INPUTS:
            raise InvalidSetting(
                "order",
                self.order,
                f"at most {MAX_INPUTS // self.channels} for {self.channels} "
                f"channels (channels * order <= {MAX_INPUTS})",
            )


def persistence(channels: int, order: int, fixed: int = 0):
    """The default W (C x C*p int32): each channel predicts its own last sample. On first
    differences (``fixed = 1``) that is the zero matrix."""
    import numpy as np

    w = np.zeros((channels, channels * order), dtype=np.int32)
    if not fixed:
        for c in range(channels):
            w[c, c * order] = ONE
    return w


class McLinearPredictor(Predictor):
    """All channels' next samples from all channels' last ``order`` samples, W adapted by NLMS.

    Learned weights (``channels`` set) apply to blocks of exactly ``channels`` channels; a
    block with another channel count (the codec codes a subset of channels when some choose a
    polynomial predictor) starts from persistence, on both sides, so it still round-trips.
    """

    name: ClassVar[str] = "mclinear"
    Config: ClassVar[type] = McLinearConfig
    channels_independent: ClassVar[bool] = False

    @classmethod
    def memory_bytes(cls, config: McLinearConfig) -> int:
        """W as int64 plus the history and one sample per channel (for ``channels``, or 8)."""
        c = config.channels or 8
        d = c * config.order
        return 8 * (c * d + d + c) + 4 * (c * d if config.channels else 0)

    def weight_count(self) -> int:
        """``channels * channels * order`` when ``channels`` is set, else 0."""
        c = self.config.channels
        return 0 if c is None else c * c * self.config.order

    def default_weights(self):
        """Persistence for ``channels`` channels, flattened row by row (none when unset)."""
        import numpy as np

        c = self.config.channels
        if c is None:
            return np.zeros(0, dtype=np.int32)
        return persistence(c, self.config.order, self.config.fixed).reshape(-1)

    def weight_matrix(self, channels: int):
        """The initial W (C x C*p int32) used for a block of ``channels`` channels."""
        if channels == self.config.channels:
            return self._weights.reshape(channels, channels * self.config.order).copy()
        return persistence(channels, self.config.order, self.config.fixed)

    def _run(self, block, decode, max_error, lo, hi):
        import numpy as np
        from qres.builtin_plugins.predictors import _mclinear

        channels = block.shape[0]
        if channels * self.config.order > MAX_INPUTS:
            raise QresError(
                f"predictor 'mclinear': {channels} channels x order {self.config.order} exceeds "
                f"{MAX_INPUTS} inputs; lower the order to {max(1, MAX_INPUTS // channels)} "
                "or use a per-channel predictor"
            )
        out = np.empty_like(block)
        w0 = np.ascontiguousarray(self.weight_matrix(channels), dtype=np.int32)
        cfg = self.config
        _mclinear.run(
            block,
            out,
            w0,
            cfg.order,
            cfg.shift,
            cfg.adapt,
            bool(cfg.fixed),
            decode,
            max_error,
            lo,
            hi,
        )
        return out


# -- batch training, vectorised over a window -------------------------------------------------


def history(x: Any, order: int):
    """The inputs of every target of a (C, n) window: H of shape (C*order, n - order), column
    ``t`` holding ``x[k, order + t - 1 - j]`` at row ``k*order + j``; int64."""
    import numpy as np

    x = np.asarray(x, dtype=np.int64)
    channels, n = x.shape
    if n <= order:
        raise QresError(f"mclinear history: {n} samples leave no target after order {order}")
    rows = [x[k, order - 1 - j : n - 1 - j] for k in range(channels) for j in range(order)]
    return np.stack(rows)


def predict_q16(w: Any, h: Any):
    """Q16.16 predictions ``clip(W @ H, +-PRED_LIMIT)`` (C x T int64), exact in int64."""
    import numpy as np

    acc = np.asarray(w, dtype=np.int64) @ np.asarray(h, dtype=np.int64)
    return np.clip(acc, -PRED_LIMIT, PRED_LIMIT)


def model_input(x: Any, fixed: int):
    """What the model sees of a (C, n) window: the samples, or their first differences
    (C, n - 1) when ``fixed`` is 1, as int64."""
    import numpy as np

    x = np.asarray(x, dtype=np.int64)
    return np.diff(x, axis=1) if fixed else x


def batch_step(w: Any, x: Any, order: int, lr_q: int, fixed: int = 1):
    """The delta (C x C*p int32) of one normalised gradient step on a (C, n) window.

    With ``fixed = 1`` (the predictor's default) the model is fitted to the first differences
    of the window, as the predictor applies it.

    As the learning task's step (qres.learning.task), for a matrix: with ``E = (X << 16) - P``
    the Q16.16 errors and ``tr = 1 + sum(H**2)`` (which bounds the largest eigenvalue of
    ``H H^T``), ``delta = round(round(E @ H^T / tr) * lr_q / 2**16)``, divisions by the one
    rounding rule. The model's inputs must lie in +-2**12 (samples normalised by
    qres.learning.task.normalise qualify, and so do their differences), so every sum stays
    inside int64 for windows of up to 2**16 samples.
    """
    import numpy as np

    from qres.robust.aggregate import div_round

    x = model_input(x, fixed)
    if x.size and np.abs(x).max() > TRAIN_LIMIT:
        raise QresError(
            f"mclinear batch_step: inputs beyond +-{TRAIN_LIMIT}; normalise the samples first "
            "(qres.learning.task.normalise)"
        )
    h = history(x, order)
    err = (x[:, order:] << 16) - predict_q16(w, h)
    grad = err @ h.T
    trace = 1 + int((h * h).sum())
    step = div_round(grad, trace)
    return np.clip(div_round(step * int(lr_q), ONE), -WEIGHT_LIMIT, WEIGHT_LIMIT).astype(np.int32)


@hookimpl
def register_predictors(register):
    """Register the multichannel linear predictor."""
    register(McLinearPredictor)
