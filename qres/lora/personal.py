"""A node's personalised predictor: the ``mclinear`` weight adapted by the hierarchy.

:class:`Personal` is what a node runs (the swarm simulator and the benchmark use the same
code). Each round it is given the node's newest window of samples and:

1. **scores** each *depth* of the hierarchy before learning from the window: the model made
   of the frozen weight plus the layers from the foundation down to one role (foundation;
   foundation + domain; ...; all five) predicts the window, and the depth's score follows its
   mean absolute error (Q16.16, a running mean of weight ``2**-score_shift``);
2. **trains** each layer against its own depth: the layer's gradient is taken at the model
   made of the layers above it and itself, so a shared layer learns what its group has in
   common whatever the node's local layers hold, and each local layer learns only what is
   left (the local layers would otherwise absorb everything, and the shared ones would
   learn nothing);
3. **ticks** the hierarchy (decay, homeostasis, circuits, migration).

The node then predicts with the depth of lowest score (:meth:`Personal.weights`; ties go to
the shallower depth, which carries fewer of the node's own parameters): a node whose data is
noisy keeps the group's model, a node with its own dynamics takes its own layers. The choice
is made on data the models had not yet learned from, so it measures how each depth
generalises, not how well it fits. With ``block_choice = "signalled"`` the encoder instead
codes each block with the candidate (a depth, or a banked local adapter) that spends the
fewest bits on that very block and signals its index (:meth:`Personal.choose`); the decoder
builds the same model from the index (:meth:`Personal.candidate`).

Shared layers travel as :meth:`Personal.shared` / :meth:`Personal.absorb` (B, and A when the
layer is not dense); every number is an integer, so the same windows give the same bits.
"""

from __future__ import annotations

from typing import Any

import attrs

from qres.fixed.q16 import ONE
from qres.kernel.config import integer, number
from qres.kernel.errors import QresError
from qres.kinds.lora import ROLES
from qres.lora.hierarchy import SHARED_ROLES, Hierarchy
from qres.lora.settings import HierarchySettings
from qres.robust.aggregate import div_round

#: Roles that never leave the node; a change of stream banks and restores them.
LOCAL_ROLES = tuple(role for role in ROLES if role not in SHARED_ROLES)

#: Smallest running mean a change test scales (Q16.16: 1/16, a relative error of 6 %), so a
#: node whose choice was always the best does not call every small difference a change.
CHANGE_FLOOR = ONE >> 4

#: Format tag of a saved state (:meth:`Personal.to_state`).
STATE_FORMAT = "qres-lora-state/1"


@attrs.frozen
class PersonalSettings:
    """How a node trains its personalised model.

    * ``channels``, ``order``: the mclinear model (W of channels x channels * order).
    * ``lr``: the normalised step of every layer before inertia (stable below 2).
    * ``score_shift``: depth scores follow the newest window with weight ``2**-score_shift``.
    """

    channels: int = attrs.field(default=2, validator=integer(1, 64))
    order: int = attrs.field(default=2, validator=integer(1, 32))
    lr: float = attrs.field(default=0.5, validator=number(2.0**-16, 1.99))
    score_shift: int = attrs.field(default=2, validator=integer(0, 8))

    @property
    def lr_q(self) -> int:
        """The learning rate in Q16.16."""
        from qres.fixed.q16 import from_float

        return from_float(self.lr)


def residuals(w: Any, window: Any, order: int):
    """The integer residuals (C x T int64) the first-difference model ``w`` leaves on a (C, n)
    window: each difference minus its Q16.16 prediction rounded by the rule."""
    from qres.builtin_plugins.predictors import mclinear

    x = mclinear.model_input(window, 1)
    h = mclinear.history(x, order)
    return x[:, order:] - div_round(mclinear.predict_q16(w, h), ONE)


def coded_bits(coder: Any, w: Any, window: Any, order: int) -> int:
    """Bits per sample (Q16.16) that ``coder`` spends on the residuals of ``w`` on
    ``window``: the measured cost of the model, as the codec measures its choices."""
    return residual_bits(coder, residuals(w, window, order))


def residual_bits(coder: Any, res: Any) -> int:
    """Bits per sample (Q16.16) that ``coder`` spends on the integer residuals ``res``."""
    res = res.reshape(-1)
    return div_round(len(coder.encode(res)) * 8 * ONE, max(1, res.size))


def mean_abs_error(w: Any, window: Any, order: int) -> int:
    """Mean |error| (Q16.16) of the first-difference model ``w`` over a (C, n) window."""
    import numpy as np

    from qres.builtin_plugins.predictors import mclinear

    x = mclinear.model_input(window, 1)
    h = mclinear.history(x, order)
    err = (x[:, order:] << 16) - mclinear.predict_q16(w, h)
    return div_round(int(np.abs(err).sum()), err.size)


class Personal:
    """One node's hierarchy over a zero mclinear weight, with depth scores and a trace of each
    layer's contribution per round (for ``qres lora show``)."""

    def __init__(
        self,
        hierarchy: HierarchySettings,
        settings: PersonalSettings,
        seed: int = 0,
        coder: Any = None,
    ):
        c, p = settings.channels, settings.order
        self.settings = settings
        self.coder = coder  # scores are its bits per sample; without one, mean |error|
        self.h = Hierarchy(hierarchy, c, c * p, seed)
        self.scores: list[int | None] = [None] * len(ROLES)
        self.peers = dict.fromkeys(SHARED_ROLES, 0)
        self.trace: list[list[int]] = []  # per round: |delta|_1 of each layer (Q16.16)
        self.depths: list[int] = []  # per round: the depth predicted with
        self.last_window: Any = None  # the newest window learned from (screens aggregates)
        self.rejected = 0  # aggregates the screen refused
        self.departure: tuple | None = None  # running means of the change tests (level, regret)
        self.steady = 0  # windows since the last change (or the start)
        self.changes: list[int] = []  # rounds at which the stream changed
        self.bank: list[dict] = []  # local adapters of earlier regimes, oldest use first
        self.recalled = 0  # changes at which a banked adapter was restored

    # -- prediction -----------------------------------------------------------------------
    def prefix(self, depth: int):
        """The adapter of the layers foundation..ROLES[depth] (int64, d_out x d_in)."""
        import numpy as np

        total = np.zeros((self.h.d_out, self.h.d_in), dtype=np.int64)
        for role in ROLES[: depth + 1]:
            total += self.h.layers[role].delta()
        return total

    def depth(self) -> int:
        """The depth of lowest score (ties: the shallower); the deepest before any score."""
        known = [(s, d) for d, s in enumerate(self.scores) if s is not None]
        return min(known)[1] if known else len(ROLES) - 1

    def weights(self):
        """The weight the node predicts with: the chosen depth's adapter (int64)."""
        return self.prefix(self.depth())

    # -- the encoder's choice per block ------------------------------------------------------
    def slots(self) -> int:
        """Indices a block may signal: each depth, then each bank slot at each local depth
        (fixed by the settings, so the decoder knows the field's width without the bank)."""
        return len(ROLES) + len(LOCAL_ROLES) * self.h.settings.bank_size

    def index_bits(self) -> int:
        """Bits of the signalled index per block: ``ceil(log2(slots))`` when the encoder
        chooses (``block_choice = "signalled"``), 0 when the score chooses."""
        if self.h.settings.block_choice != "signalled":
            return 0
        return (self.slots() - 1).bit_length()

    def candidate(self, index: int):
        """The weight of signalled ``index`` (int64): index ``d`` < 5 is depth ``d`` with the
        current layers; then bank entry ``e`` at local depth ``j`` is index
        ``5 + e * len(LOCAL_ROLES) + j`` (the entry's agent and context layers under the
        current shared ones). What the decoder calls with the index it reads."""
        if not 0 <= index < self.slots():
            raise QresError(f"lora: block index {index} outside 0..{self.slots() - 1}")
        if index < len(ROLES):
            return self.prefix(index)
        entry, j = divmod(index - len(ROLES), len(LOCAL_ROLES))
        if entry >= len(self.bank):
            raise QresError(f"lora: block index {index} names bank entry {entry}, which is empty")
        current = self._local()
        self._set_local(self.bank[entry]["local"])
        try:
            return self.prefix(ROLES.index(LOCAL_ROLES[j]))
        finally:
            self._set_local(current)

    def choose(self, block: Any) -> int:
        """The index the encoder signals for ``block`` (C x n samples it is about to code):
        with ``block_choice = "signalled"`` the candidate of lowest cost on the block itself
        (ties: the lowest index, a shallower depth before the bank), else the scored depth."""
        if self.h.settings.block_choice != "signalled":
            return self.depth()
        usable = len(ROLES) + len(LOCAL_ROLES) * len(self.bank)
        costs = [(self.cost(self.candidate(i), block), i) for i in range(usable)]
        return min(costs)[1]

    def signal(self, block: Any) -> tuple[int, Any, Any]:
        """What the encoder codes ``block`` with: ``(index, w, residuals)``, the index it
        signals (:meth:`choose`), that candidate's weight and the integer residuals (C x T)
        the coder then codes. The simulator and the real node both measure their bits here."""
        index = self.choose(block)
        w = self.candidate(index)
        return index, w, residuals(w, block, self.settings.order)

    # -- learning ---------------------------------------------------------------------------
    def learn(self, window: Any, direction: Any = None) -> None:
        """Score every depth on ``window`` (C x n samples in +-2**11), watch for a change of
        the stream, then train each layer at its depth and tick. ``direction``: the swarm's
        last mean step (resonance)."""
        from qres.builtin_plugins.predictors import mclinear

        s = self.settings
        self.depths.append(self.depth())
        costs = [self.cost(self.prefix(d), window) for d in range(len(ROLES))]
        changed = self._changed(costs)
        if changed or self._bank_wins(window, costs[-1]):
            self.changes.append(len(self.depths) - 1)
            costs = self._recall(window, costs)
            self.scores = list(costs)  # the old averages describe the old stream
            self.steady = 0
        else:
            for d, cost in enumerate(costs):
                self.scores[d] = self._follow(self.scores[d], cost)
            self.steady += 1
        for d, role in enumerate(ROLES):
            grad = -mclinear.batch_step(self.prefix(d), window, s.order, ONE).astype("int64")
            peers = self.peers.get(role, 0)
            self.h.update(role, grad, s.lr_q, direction=direction, contributions=peers)
        self.h.tick()
        self.last_window = window
        self.trace.append([int(abs(self.h.layers[r].delta()).sum()) for r in ROLES])

    def cost(self, w: Any, window: Any) -> int:
        """What the model ``w`` costs on ``window`` (Q16.16): the coder's bits per sample,
        or the mean absolute error when the node was given no coder."""
        if self.coder is None:
            return mean_abs_error(w, window, self.settings.order)
        return coded_bits(self.coder, w, window, self.settings.order)

    def _changed(self, costs: list[int]) -> bool:
        """Whether the stream changed, by two tests on the node's own residuals, each against
        ``change_k`` times its running mean over steady windows (at least
        :data:`CHANGE_FLOOR`):

        * the *level*: the chosen depth's error on the newest window relative to its score,
          ``|err - score| / score`` (the stream got harder or easier for the model in use);
        * the *regret*: the chosen depth's error relative to the best depth's, both on the
          newest window, ``(err - min err) / min err`` (another depth now fits better; what
          moves every depth alike, a burst or a quiet stretch, cancels).

        Relative errors make both scale-free. The running means are learned over
        ``2**score_shift`` steady windows first; a change does not enter them (they are the
        within-regime spread the tests compare against)."""
        chosen = self.depth()
        known = self.scores[chosen]
        if known is None:
            return False
        best = max(1, min(costs))
        gaps = (
            div_round(abs(costs[chosen] - known) * ONE, max(1, known)),
            div_round((costs[chosen] - best) * ONE, best),
        )
        hs, shift = self.h.settings, self.settings.score_shift
        k = hs.q(hs.change_k)
        if self.steady >= 1 << shift and self.departure is not None:
            means = self.departure
            if any(g * ONE > k * max(m, CHANGE_FLOOR) for g, m in zip(gaps, means, strict=True)):
                return True
        old = self.departure or gaps
        self.departure = tuple(
            m + div_round(g - m, 1 << shift) for g, m in zip(gaps, old, strict=True)
        )
        return False

    def _local(self) -> dict:
        """Copies of the local layers' parameters (agent, context)."""
        return {
            role: (self.h.layers[role].a.copy(), self.h.layers[role].b.copy())
            for role in LOCAL_ROLES
        }

    def _follow(self, score: int | None, cost: int) -> int:
        """A running score after one more window (weight ``2**-score_shift``)."""
        if score is None:
            return cost
        return score + div_round(cost - score, 1 << self.settings.score_shift)

    def _bank_cost(self, entry: dict, window: Any) -> int:
        """The full model's cost on ``window`` with a banked entry's local layers."""
        current = self._local()
        self._set_local(entry["local"])
        cost = self.cost(self.prefix(len(ROLES) - 1), window)
        self._set_local(current)
        return cost

    def _bank_wins(self, window: Any, full: int) -> bool:
        """Score every banked entry on ``window`` as the depths are scored; True when one now
        scores below the current full model (an earlier stream came back unannounced)."""
        for entry in self.bank:
            entry["score"] = self._follow(entry["score"], self._bank_cost(entry, window))
        mine = self._follow(self.scores[-1], full)
        return any(entry["score"] < mine for entry in self.bank)

    def _recall(self, window: Any, costs: list[int]) -> list[int]:
        """At a change: bank the local layers learned on the old stream and restore the
        banked ones that code the newest window best with the current shared layers, when
        they beat the current ones (each candidate is judged by its measured cost, as the
        depths are). Returns the depths' costs after any restore."""
        size = self.h.settings.bank_size
        if size == 0:
            return costs
        current = {"local": self._local(), "score": costs[-1]}
        best, best_cost = None, costs[-1]
        for k, entry in enumerate(self.bank):
            entry["score"] = self._bank_cost(entry, window)
            if entry["score"] < best_cost:
                best, best_cost = k, entry["score"]
        if best is not None:
            self._set_local(self.bank.pop(best)["local"])
            self.recalled += 1
            first = ROLES.index(LOCAL_ROLES[0])
            costs = costs[:first] + [
                self.cost(self.prefix(d), window) for d in range(first, len(ROLES))
            ]
        self.bank.append(current)
        del self.bank[:-size]  # the least recently used go first
        return costs

    def _set_local(self, entry: dict) -> None:
        for role, (a, b) in entry.items():
            layer = self.h.layers[role]
            layer.a, layer.b = a.copy(), b.copy()

    # -- exchange ---------------------------------------------------------------------------
    def shared(self, role: str) -> dict:
        """What the node sends for shared ``role``: B, and A unless the layer is dense."""
        layer = self._shared_layer(role)
        out = {"b": layer.b.copy()}
        if not layer.dense:
            out["a"] = layer.a.copy()
        return out

    def absorb(
        self, role: str, parts: dict, contributors: int, tolerance: float | None = None
    ) -> bool:
        """Take the aggregate of a shared layer (as :meth:`shared` gives it) that
        ``contributors`` nodes formed; the others count as this layer's interaction density.

        With ``tolerance``, the node first screens it on its own newest window: it keeps its
        own layer (and returns False) when the aggregate makes the error of the model it
        predicts with more than ``1 + tolerance`` times worse."""
        import numpy as np

        layer = self._shared_layer(role)
        keys = ("a", "b") if not layer.dense else ("b",)
        kept = {key: getattr(layer, key) for key in keys}
        before = None
        if tolerance is not None and self.last_window is not None:
            before = mean_abs_error(self.weights(), self.last_window, self.settings.order)
        for key in keys:
            value = np.asarray(parts[key])
            if value.shape != kept[key].shape:
                raise QresError(
                    f"lora {role}.{key}: shape {value.shape}, expected {kept[key].shape}"
                )
            setattr(layer, key, np.clip(value, -(1 << 23), 1 << 23).astype(np.int32))
        if before is not None:
            after = mean_abs_error(self.weights(), self.last_window, self.settings.order)
            if after > before * (1.0 + tolerance) + 1:
                for key in keys:
                    setattr(layer, key, kept[key])
                self.rejected += 1
                return False
        self.peers[role] = max(0, int(contributors) - 1)
        return True

    def shared_parameters(self) -> int:
        """Parameters the node sends per round (B, and A of the layers that are not dense)."""
        total = 0
        for role in SHARED_ROLES:
            layer = self.h.layers[role]
            total += layer.b.size + (0 if layer.dense else layer.a.size)
        return total

    def _shared_layer(self, role: str):
        if role not in SHARED_ROLES:
            raise QresError(f"lora: {role!r} stays on the node; shared: {', '.join(SHARED_ROLES)}")
        return self.h.layers[role]

    # -- state -------------------------------------------------------------------------------
    def to_state(self) -> dict:
        """JSON-ready state for ``qres lora show``: settings, summary, each layer's A and B,
        the per-round contributions and depths, the scores."""
        layers = {
            role: {"a": layer.a.tolist(), "b": layer.b.tolist()}
            for role, layer in self.h.layers.items()
        }
        return {
            "format": STATE_FORMAT,
            "model": {"channels": self.settings.channels, "order": self.settings.order},
            "summary": self.h.summary(),
            "depth": ROLES[self.depth()],
            "scores": [None if s is None else s / ONE for s in self.scores],
            "trace": self.trace,
            "depths": self.depths,
            "layers": layers,
        }


def node_memory_bytes(hierarchy: HierarchySettings, settings: PersonalSettings) -> int:
    """Bytes a node's personalised model holds: every layer's A, B, their initial values and
    activity traces (int32), the last dense change (int64) and a full circuit window of
    activations (int64 per component), the bank's copies of the local layers, plus the depth
    scores."""
    c, p = settings.channels, settings.order
    h = Hierarchy(hierarchy, c, c * p)
    total = 8 * len(ROLES)  # scores
    for layer in h.layers.values():
        total += 3 * (layer.a.nbytes + layer.b.nbytes)
        total += 8 * layer.d_out * layer.d_in + 8 * layer.rank * hierarchy.circuit_window
        if layer.role in LOCAL_ROLES:  # the bank's copies of A and B, and a score each
            total += hierarchy.bank_size * (layer.a.nbytes + layer.b.nbytes + 8)
    return total
