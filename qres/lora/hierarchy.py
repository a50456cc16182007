"""The adapter hierarchy: one integer LoRA layer per role over one frozen weight, and the
mechanisms that move knowledge between them.

``Hierarchy(settings, d_out, d_in, seed)`` holds a :class:`~qres.lora.layer.Layer` per role
(foundation, domain, swarm, agent, context). A node:

* adds the merged adapter to its frozen weight for inference (:meth:`Hierarchy.delta`), or,
  deterministically, takes a :meth:`Hierarchy.begin_block` snapshot that stays fixed for a
  block while updates are staged, and applies them at :meth:`Hierarchy.end_block`;
* trains a role with a dense gradient (:meth:`Hierarchy.update`): inertia (growing with the
  layer's interaction density), the screening threshold's gate, and resonance with the
  swarm's direction and with the parent layer scale the step;
* calls :meth:`Hierarchy.tick` once per round: phase-based decay, homeostasis of the update
  entropy, circuit detection, migration queues with their bandwidth and emergency bypass,
  restoration of migrated patterns; :meth:`Hierarchy.health` reports HEALTHY or DEGRADED.

All shared state is integer (Q16.16 for reals) and rounded by the one rule, so two nodes given
the same settings, seed and updates hold the same bits. docs/lora.md explains every mechanism.
"""

from __future__ import annotations

from typing import Any

import attrs

from qres.fixed.q16 import ONE
from qres.kernel.errors import QresError
from qres.kinds.lora import ROLES
from qres.lora import mechanisms as mech
from qres.lora.health import HealthReport, LayerVitals, QueueVitals, assess
from qres.lora.layer import MAX_WIDTH, Layer, Transfer, clamp
from qres.lora.queues import MigrationQueue
from qres.lora.settings import CHANNELS, HierarchySettings
from qres.robust.aggregate import div_round

#: Roles whose layers the swarm shares; the others stay on the node.
SHARED_ROLES = ("foundation", "domain", "swarm")


@attrs.frozen
class Snapshot:
    """The adapters as they were when a block began: read-only int32 arrays."""

    tick: int
    deltas: dict  # role -> (d_out, d_in) int32
    total: Any

    def apply(self, weight_q: Any):
        """``weight + total`` (Q16.16, saturated to int32): the weight the block predicts with."""
        from qres.fixed.q16 import sat_add

        return sat_add(weight_q, self.total)


class Hierarchy:
    """Five integer LoRA layers over one d_out x d_in weight and the mechanisms between them."""

    def __init__(self, settings: HierarchySettings, d_out: int, d_in: int, seed: int = 0):
        if not (1 <= d_out <= MAX_WIDTH and 1 <= d_in <= MAX_WIDTH):
            raise QresError(
                f"lora hierarchy: weight {d_out}x{d_in}; each side must be 1..{MAX_WIDTH}"
            )
        self.settings = settings
        self.d_out, self.d_in = d_out, d_in
        self.layers = {
            role: Layer.new(
                role,
                settings.rank_for(role, d_out, d_in),
                d_out,
                d_in,
                seed,
                settings.circuit_window,
            )
            for role in ROLES
        }
        self.queues = [
            MigrationQueue(
                settings.bandwidth_q(i), settings.queue_limit, settings.q(settings.emergency)
            )
            for i in range(len(CHANNELS))
        ]
        self.transfers: list[Transfer] = []
        self.tick_count = 0
        self.migrations = 0
        self._staged: list[tuple] | None = None
        self._snapshot: Snapshot | None = None

    # -- inference ------------------------------------------------------------------------
    def delta(self):
        """The merged adapter: the layers' deltas summed in role order (int32, saturated)."""
        import numpy as np

        from qres.fixed.q16 import saturate

        total = np.zeros((self.d_out, self.d_in), dtype=np.int64)
        for role in ROLES:
            total += self.layers[role].delta()
        return saturate(total)

    def begin_block(self) -> Snapshot:
        """Freeze the adapters for a block: the snapshot stays valid until :meth:`end_block`;
        updates given meanwhile are staged, not applied."""
        if self._snapshot is not None:
            raise QresError("lora hierarchy: a block is already open; call end_block first")
        deltas = {}
        for role in ROLES:
            d = clamp(self.layers[role].delta())
            d.flags.writeable = False
            deltas[role] = d
        total = self.delta()
        total.flags.writeable = False
        self._snapshot = Snapshot(self.tick_count, deltas, total)
        self._staged = []
        return self._snapshot

    def end_block(self) -> int:
        """Apply the staged updates in the order given; returns how many."""
        if self._snapshot is None:
            raise QresError("lora hierarchy: no block is open; call begin_block first")
        staged, self._staged, self._snapshot = self._staged or [], None, None
        for args in staged:
            self._update(*args)
        return len(staged)

    # -- training -------------------------------------------------------------------------
    def update(
        self, role: str, grad_w: Any, lr_q: int, direction: Any = None, contributions: int = 1
    ) -> None:
        """One step of ``role``'s adapter against the dense Q16.16 gradient ``grad_w``
        (d_out x d_in) at learning rate ``lr_q``; ``direction`` is the swarm's recent update
        of the whole weight (dense, for horizontal resonance), ``contributions`` how many
        nodes' updates this one stands for (the interaction density)."""
        import numpy as np

        if role not in self.layers:
            raise QresError(f"lora hierarchy: unknown role {role!r}; roles: {', '.join(ROLES)}")
        g = np.asarray(grad_w)
        if g.shape != (self.d_out, self.d_in) or g.dtype.kind not in "iu":
            raise QresError(
                f"lora hierarchy: gradient of shape {g.shape} and dtype {g.dtype}; "
                f"give an integer array of shape ({self.d_out}, {self.d_in})"
            )
        if self._staged is not None:
            self._staged.append((role, g.copy(), lr_q, direction, contributions))
            return
        self._update(role, g, lr_q, direction, contributions)

    def _update(self, role, grad_w, lr_q, direction, contributions) -> None:
        import numpy as np

        s = self.settings
        layer = self.layers[role]
        inertia = mech.effective_inertia(s.inertia_q(role), layer.density_q, s.q(s.density_k))
        step = div_round(int(lr_q) * (ONE - inertia), ONE)
        da, db = self._raw_step(layer, grad_w, step)
        if layer.dense:  # the gate and the spread look at the parameters that can move
            db = mech.gate(db, layer.threshold_q).astype(np.int64)
        else:
            flat = np.concatenate([da.reshape(-1), db.reshape(-1)])
            flat = mech.gate(flat, layer.threshold_q).astype(np.int64)
            da = flat[: da.size].reshape(da.shape)
            db = flat[da.size :].reshape(db.shape)
        # a component in transit keeps its A row, so moving its B column conserves B a^T
        da[self._moving(role)] = 0
        # the dense change this step makes, to first order: B dA + dB A
        dense = div_round(layer.b.astype(np.int64) @ da + db @ layer.a.astype(np.int64), ONE)
        cos_h = 0 if direction is None else mech.cosine_q16(dense, direction)
        parent = self._parent(role)
        last = None if parent is None else self.layers[parent].last_dense
        cos_v = 0 if last is None else mech.cosine_q16(dense, last)
        factor = mech.resonance_factor(
            cos_h, cos_v, s.q(s.horizontal_gain), s.q(s.vertical_gain), s.q(s.amplification_cap)
        )
        if factor != ONE:
            da, db = mech.scale(da, factor), mech.scale(db, factor)
            dense = mech.scale(dense, factor)
        layer.amplified += factor > ONE
        layer.damped += factor < ONE
        layer.a = clamp(layer.a.astype(np.int64) + da)
        layer.b = clamp(layer.b.astype(np.int64) + db)
        layer.trace_a = mech.update_trace(layer.trace_a, da != 0, s.trace_shift)
        layer.trace_b = mech.update_trace(layer.trace_b, db != 0, s.trace_shift)
        activation = np.abs(np.asarray(da, np.int64)).sum(axis=1) + np.abs(
            np.asarray(db, np.int64)
        ).sum(axis=0)
        layer.history.append(activation)
        moved = db.reshape(-1) if layer.dense else np.concatenate([da.reshape(-1), db.reshape(-1)])
        if np.any(moved):  # a layer held still by its inertia has no spread to judge
            layer.spread_q = mech.update_spread(moved)
            layer.moves += 1
        layer.last_dense = np.asarray(dense, dtype=np.int64)
        layer.updates += 1
        layer.contributions += int(contributions)

    @staticmethod
    def _raw_step(layer: Layer, grad_w: Any, step: int):
        """The plain LoRA step ``(-step * B^T G, -step * G A^T)`` (Q16.16), A held on dense
        layers."""
        import numpy as np

        ga, gb = layer.grads(grad_w)
        if layer.dense:  # A is the frozen identity: B takes the dense step itself
            ga = np.zeros_like(ga)
        flat = -div_round(np.concatenate([ga.reshape(-1), gb.reshape(-1)]) * step, ONE)
        return flat[: ga.size].reshape(ga.shape), flat[ga.size :].reshape(gb.shape)

    def _moving(self, role: str) -> list[int]:
        """Components of ``role`` that a transfer is moving (as source or destination)."""
        slots = [t.src_slot for t in self.transfers if t.src_role == role]
        return slots + [
            t.dst_slot for t in self.transfers if t.dst_role == role and t.dst_slot is not None
        ]

    @staticmethod
    def _parent(role: str) -> str | None:
        i = ROLES.index(role)
        return ROLES[i - 1] if i else None

    # -- between rounds ---------------------------------------------------------------------
    def tick(self) -> list[tuple[str, str, int]]:
        """One round of the slow mechanisms; returns the migrations released this tick as
        (from role, to role, priority Q16.16)."""
        s = self.settings
        for role in ROLES:
            layer = self.layers[role]
            self._decay(layer)
            layer.density_q += div_round(
                layer.contributions * ONE - layer.density_q, 1 << s.trace_shift
            )
            layer.contributions = 0
            layer.threshold_q = mech.homeostasis(
                layer.threshold_q,
                layer.spread_q,
                s.q(s.entropy_low),
                s.q(s.entropy_high),
                s.q(s.threshold_step),
                s.q(s.threshold_max),
            )
        self._detect()
        released = self._release()
        self._restore()
        self.tick_count += 1
        return released

    def _decay(self, layer: Layer) -> None:
        s = self.settings
        slow = ONE - s.inertia_q(layer.role)  # slow layers forget slowly too
        active = div_round(s.q(s.decay_active) * slow, ONE)
        free = div_round(s.q(s.decay_free) * slow, ONE)
        level = s.q(s.active_level)
        # columns in transit belong to their transfer, which conserves them: no decay there
        moving = self._moving(layer.role)
        kept_a, kept_b = layer.a[moving].copy(), layer.b[:, moving].copy()
        layer.a = mech.decay_toward(layer.a, layer.a0, layer.trace_a >= level, active, free)
        layer.b = mech.decay_toward(layer.b, layer.b0, layer.trace_b >= level, active, free)
        layer.a[moving], layer.b[:, moving] = kept_a, kept_b

    def _detect(self) -> None:
        import numpy as np

        s = self.settings
        threshold = s.q(s.circuit_threshold)
        for i in range(len(ROLES) - 1, 0, -1):
            layer = self.layers[ROLES[i]]
            if len(layer.history) < s.circuit_window:
                continue
            series = np.stack(list(layer.history))
            for k in range(layer.rank):
                if k in layer.busy or layer.component_norm(k) == 0:
                    continue
                score = mech.autocorrelation(series[:, k], s.circuit_lags)
                if score < threshold:
                    continue
                channel = len(ROLES) - 1 - i
                cost = layer.d_in + layer.d_out
                if self.queues[channel].offer(score, cost, self.tick_count, (ROLES[i], k)):
                    layer.busy.add(k)

    def _release(self) -> list[tuple[str, str, int]]:
        out = []
        for channel, queue in enumerate(self.queues):
            dst_role = ROLES[len(ROLES) - 2 - channel]
            dst = self.layers[dst_role]
            for item in queue.tick(self.settings.budget_params(dst_role, dst.d_out, dst.d_in)):
                src_role, k = item.payload
                if self._start_transfer(src_role, k, dst):
                    out.append((src_role, dst_role, item.priority))
                else:
                    queue.rejected += 1  # the destination has no room for it
        # rejected items free their component for a later offer
        for role in ROLES[1:]:
            layer = self.layers[role]
            queued = {it.payload[1] for q in self.queues for it in q.items if it.payload[0] == role}
            moving = {t.src_slot for t in self.transfers if t.src_role == role}
            layer.busy = queued | moving
        return out

    def _start_transfer(self, src_role: str, k: int, dst: Layer) -> bool:
        """Move component k of the source into the destination.

        A dense destination (A the identity) takes the component's outer product ``b a^T``
        into B itself: every pattern fits, nothing is overwritten, and its identity A is never
        touched. A low-rank destination takes it into its weakest slot (lowest index on ties,
        never one still receiving): an empty slot takes the source's A row and a zero B
        column; a slot holding the same A row (the same pattern, migrated before) keeps its
        column and adds to it; a slot holding anything else is not overwritten: the migration
        is refused (False). The B column then moves share by share (:meth:`_restore`)."""
        import numpy as np

        src = self.layers[src_role]
        column = src.b[:, k].astype(np.int64).copy()
        if dst.dense:
            self.transfers.append(Transfer(src_role, k, dst.role, None, column))
            self.migrations += 1
            return True
        receiving = {t.dst_slot for t in self.transfers if t.dst_role == dst.role}
        slots = [s for s in range(dst.rank) if s not in receiving]
        if not slots:
            return False
        slot = min(slots, key=lambda s: (dst.component_norm(s), s))
        if not np.array_equal(dst.a[slot], src.a[k]):
            if dst.component_norm(slot) > 0:
                return False
            dst.a[slot] = src.a[k]
            dst.b[:, slot] = 0
        self.transfers.append(Transfer(src_role, k, dst.role, slot, column))
        self.migrations += 1
        return True

    def _restore(self) -> None:
        """Move ``restoration`` of each transfer's remaining column from source to destination
        (the last share whole): the merged adapter keeps ``b a^T`` exactly while it moves, up
        to the A rows, which a transfer copies and decay may then move apart."""
        import numpy as np

        s = self.settings
        share_q = s.q(s.restoration)
        keep = []
        for t in self.transfers:
            src, dst = self.layers[t.src_role], self.layers[t.dst_role]
            chunk = div_round(t.remaining * share_q, ONE)
            if not np.any(chunk) or share_q >= ONE:
                chunk = t.remaining
            src.b[:, t.src_slot] = clamp(src.b[:, t.src_slot].astype(np.int64) - chunk)
            if t.dst_slot is None:  # dense: the share's outer product with the source's A row
                moved = div_round(np.outer(chunk, src.a[t.src_slot].astype(np.int64)), ONE)
                dst.b = clamp(dst.b.astype(np.int64) + moved)
            else:
                dst.b[:, t.dst_slot] = clamp(dst.b[:, t.dst_slot].astype(np.int64) + chunk)
            t.remaining = t.remaining - chunk
            if np.any(t.remaining):
                keep.append(t)
        self.transfers = keep

    # -- reporting ----------------------------------------------------------------------------
    def health(self) -> HealthReport:
        """HEALTHY, or DEGRADED with one reason per limit broken (see qres.lora.health)."""
        s = self.settings
        layers = [
            LayerVitals(role, layer.spread_q, layer.moves, layer.amplified, layer.damped)
            for role, layer in self.layers.items()
        ]
        queues = [
            QueueVitals(CHANNELS[i], q.depth(), q.oldest_wait(self.tick_count), q.rejection_rate())
            for i, q in enumerate(self.queues)
        ]
        limits = {
            "entropy_low": s.q(s.entropy_low),
            "entropy_high": s.q(s.entropy_high),
            "max_amplified": s.q(s.max_amplified),
            "warmup": s.health_warmup,
            "max_queue_depth": s.max_queue_depth,
            "max_wait": s.max_wait,
            "max_rejection": s.q(s.max_rejection),
        }
        return assess(layers, queues, limits)

    def summary(self) -> dict[str, Any]:
        """Per layer: rank, base and effective inertia, drift from init, threshold, updates;
        the migration count and the health report (JSON-ready)."""
        s = self.settings
        layers = {}
        for role, layer in self.layers.items():
            eff = mech.effective_inertia(s.inertia_q(role), layer.density_q, s.q(s.density_k))
            layers[role] = {
                "rank": layer.rank,
                "dense": layer.dense,
                "shared": role in SHARED_ROLES,
                "inertia": s.inertia[ROLES.index(role)],
                "effective_inertia": eff / ONE,
                "drift": layer.drift() / ONE,
                "threshold": layer.threshold_q / ONE,
                "updates": layer.updates,
            }
        return {
            "tick": self.tick_count,
            "layers": layers,
            "migrations": self.migrations,
            "queues": {CHANNELS[i]: q.depth() for i, q in enumerate(self.queues)},
            "health": self.health().to_dict(),
        }
