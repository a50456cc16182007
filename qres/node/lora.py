"""A real node's adapter hierarchy: the simulator's LoRA round on one device's stream.

A node whose profile has a ``[lora]`` table runs, each round it is awake, what one node of
``qres swarm simulate --profile swarm-lora`` runs (:mod:`qres.lora.swarm`), through the same
functions (:mod:`qres.lora.exchange`):

1. it codes the round's window with its :class:`~qres.lora.personal.Personal` (the candidate
   the encoder signals, :meth:`~qres.lora.personal.Personal.choose`, plus the index's bits:
   the bits per sample the round log and the status report), then learns from it;
2. it signs the change of the round's shared layer since its base (``QRLU``,
   :mod:`qres.node.lora_wire`) and sends it to every peer;
3. at the round's close it aggregates its own change and the peers' changes of that layer
   (the domain layer: only those of its own domain) with the profile's aggregator, in the
   order of the senders' keys, screens the new layer on its window and takes it.

Agent and context layers never leave the node. The whole hierarchy, the bases and the bits
history are kept in the node's state (``lora`` table) and survive a restart.
"""

from __future__ import annotations

import io
import pickle
from typing import Any

from qres.kernel.errors import IntegrityError

#: Format tag of the stored hierarchy (the ``lora`` table's blob).
STORED_FORMAT = 1
#: Rounds of coded bits kept in the state (the status shows the first and the newest).
KEEP_BITS = 4096
#: The 4096-level range errors are measured against, as the simulator does.
HALF = 2048


class LoraNode:
    """One node's hierarchy, bases and figures (see the module docstring)."""

    def __init__(self, profile: Any, swarm: Any, domain: str):
        from qres.kernel import plugins
        from qres.kernel.config import Location
        from qres.lora.personal import Personal, PersonalSettings
        from qres.node.lora_wire import domain_tag

        self.hierarchy = profile.settings("lora")
        self.swarm = swarm
        self.domain = domain
        self.tag = domain_tag(domain)
        self.psettings = PersonalSettings(channels=1, order=swarm.order, lr=swarm.lr)
        coder = dict(profile.data.get("codec", {}).get("coder", {"use": "rice"}))
        self.coder = plugins.create("coder", coder, Location(str(profile.path)).child("codec"))
        if "aggregator" in profile.data.get("swarm", {}):
            self.aggregator = profile.build("swarm", "aggregator")
        else:  # the simulator's default for the shared layers
            self.aggregator = plugins.create(
                "aggregator", {"use": "trimmed-mean"}, Location(str(profile.path)).child("swarm")
            )
        self.personal = Personal(self.hierarchy, self.psettings, seed=swarm.seed)
        self.bases: dict[str, Any] = {}  # role -> the last aggregate formed (int64)
        self.bits: list[tuple[int, int]] = []  # (round, coded bits per sample, Q16.16)
        self.errors: list[tuple[int, float]] = []  # (round, mean |error| / range)
        self.aggregated = 0  # peers' changes taken into aggregates
        self.other_base = 0  # peers' changes measured from a base other than ours

    # --- a round ------------------------------------------------------------------------

    def base(self, role: str):
        """This node's base of ``role``: its last aggregate, else the initial values."""
        from qres.lora import exchange

        base = self.bases.get(role)
        return exchange.initial(self.personal, role) if base is None else base

    def code(self, window) -> tuple[int, float]:
        """Bits per sample (Q16.16) the encoder spends on ``window`` (1 x n task integers)
        with the candidate it signals, index included, and the mean |error| relative to the
        range of the model the node predicts with (the simulator's error)."""
        from qres.fixed.q16 import ONE
        from qres.lora.personal import mean_abs_error
        from qres.robust.aggregate import div_round

        p = self.personal
        _, _, res = p.signal(window)
        res = res.reshape(-1)
        bits = len(self.coder.encode(res)) * 8 + p.index_bits()
        error = mean_abs_error(p.weights(), window, self.psettings.order) / ONE / HALF / 2
        return div_round(bits * ONE, max(1, res.size)), float(error)

    def learn(self, r: int, window) -> tuple[str, Any, int, float]:
        """Code ``window``, learn from it and return ``(role, change, bits, error)``: the
        round's shared layer and this node's change of it (int32)."""
        from qres.lora import exchange

        bits, error = self.code(window)
        self.personal.learn(window)
        role = exchange.role_of_round(r)
        self.bits = [*self.bits, (r, bits)][-KEEP_BITS:]
        self.errors = [*self.errors, (r, error)][-KEEP_BITS:]
        return role, exchange.change(self.personal, role, self.base(role)), bits, error

    def sizes(self) -> dict[str, int]:
        """Values a change of each shared layer carries (fixed by the profile)."""
        from qres.lora import exchange
        from qres.lora.hierarchy import SHARED_ROLES

        return {role: exchange.size(self.personal, role) for role in SHARED_ROLES}

    def packet(self, identity, r: int, role: str, change, bits: int, nonce: bytes) -> bytes:
        """The signed ``QRLU`` packet of this round's change."""
        from qres.node.lora_wire import LoraPacket, base_digest

        base = base_digest(self.base(role))
        packet = LoraPacket(identity.public_key, r, nonce, role, self.tag, base, bits, change)
        return packet.signed(identity).encode()

    def group(self, role: str, packets: list) -> list:
        """The peers' packets that enter ``role``'s aggregate: that layer, and for the domain
        layer this node's domain only."""
        return [p for p in packets if p.role == role and (role != "domain" or p.domain == self.tag)]

    def close(self, r: int, role: str, own: Any, own_key: bytes, packets: list) -> tuple[int, bool]:
        """Aggregate ``own`` change and the peers' (already checked: this layer, its size)
        with the profile's aggregator, rows in the order of the senders' public keys; screen
        the new layer on the node's window and take it. Returns ``(rows, taken)``."""
        import numpy as np

        from qres.lora import exchange
        from qres.node.lora_wire import base_digest

        base = self.base(role)
        mine = base_digest(base)
        keyed = sorted(
            [(own_key, np.asarray(own, np.int32))]
            + [(p.sender, np.asarray(p.change, np.int32)) for p in packets],
            key=lambda kv: kv[0],
        )
        rows = np.stack([row for _, row in keyed])
        rng = np.random.default_rng([self.swarm.seed, r])
        new = exchange.combine(self.aggregator, rows, base, self.swarm.assumed_byzantine, rng)
        self.bases[role] = new
        parts = exchange.split(self.personal, role, new)
        taken = self.personal.absorb(role, parts, len(rows), tolerance=self.swarm.accept_tolerance)
        self.aggregated += len(packets)
        self.other_base += sum(p.base != mine for p in packets)
        return len(rows), taken

    # --- what the node reports ----------------------------------------------------------

    def status(self) -> dict:
        """The hierarchy's health for ``/v1/status`` (:func:`status_of`)."""
        return status_of(self.held())

    # --- the stored state ---------------------------------------------------------------

    def held(self) -> dict:
        """What the state keeps (:meth:`dump`), as objects."""
        return {
            "format": STORED_FORMAT,
            "domain": self.domain,
            "personal": self.personal,
            "bases": self.bases,
            "bits": self.bits,
            "errors": self.errors,
            "aggregated": self.aggregated,
            "other_base": self.other_base,
        }

    def dump(self) -> bytes:
        """The hierarchy, bases and figures as stored in the ``lora`` table."""
        coder, self.personal.coder = self.personal.coder, None
        try:
            return pickle.dumps(self.held(), protocol=4)
        finally:
            self.personal.coder = coder

    def load(self, blob: bytes, where: str) -> None:
        """Take a stored state (:meth:`dump`) whose settings match this node's profile."""
        held = read(blob, where)
        personal = held["personal"]
        if personal.h.settings != self.hierarchy or personal.settings != self.psettings:
            raise IntegrityError(
                f"{where}: the stored adapter hierarchy was learned with other [lora] or "
                "[swarm] settings; restore the profile it was learned with or move the state aside"
            )
        self.personal = personal
        self.bases, self.bits, self.errors = held["bases"], held["bits"], held["errors"]
        self.aggregated, self.other_base = held["aggregated"], held["other_base"]


def read(blob: bytes, where: str) -> dict:
    """A stored hierarchy (:meth:`LoraNode.dump`), read by the restricted unpickler."""
    try:
        held = _Restricted(io.BytesIO(blob)).load()
    except Exception as exc:  # any damage: one clear line, the state is not touched
        raise IntegrityError(
            f"{where}: the stored adapter hierarchy is unreadable ({exc}); move the "
            "state aside to start the hierarchy afresh"
        ) from exc
    if not isinstance(held, dict) or held.get("format") != STORED_FORMAT:
        raise IntegrityError(f"{where}: the stored adapter hierarchy has an unknown format")
    return held


def status_of(held: dict) -> dict:
    """The hierarchy's health: per layer rank, drift, inertia; health and its reasons; the
    depth predicted with; coded bits (first, newest, the last 20 rounds); aggregates."""
    from qres.fixed.q16 import ONE
    from qres.kinds.lora import ROLES

    p = held["personal"]
    summary = p.h.summary()
    bits = held["bits"]
    keys = ("shared", "rank", "dense", "effective_inertia", "drift")
    return {
        "domain": held["domain"],
        "health": summary["health"]["status"],
        "reasons": summary["health"]["reasons"],
        "depth": ROLES[p.depth()],
        "layers": {role: {k: layer[k] for k in keys} for role, layer in summary["layers"].items()},
        "migrations": summary["migrations"],
        "queues": summary["queues"],
        "rounds": len(bits),
        "first_bits_per_sample": bits[0][1] / ONE if bits else None,
        "bits_per_sample": bits[-1][1] / ONE if bits else None,
        "bits": [[r, b / ONE] for r, b in bits[-20:]],
        "rejected_aggregates": p.rejected,
        "aggregated": held["aggregated"],
        "other_base": held["other_base"],
        "changes": len(p.changes),
    }


class _Restricted(pickle.Unpickler):
    """Builds only what :meth:`LoraNode.dump` stores: qres.lora's classes, numpy arrays and
    the builtin containers; any other class (arbitrary code) is refused."""

    ALLOWED_MODULES = ("qres.lora.", "qres.fixed.")
    NUMPY = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("collections", "deque"),
        ("copyreg", "_reconstructor"),
        ("builtins", "object"),
        ("builtins", "set"),
        ("builtins", "frozenset"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self.NUMPY:
            return super().find_class(module, name)
        if module.startswith(self.ALLOWED_MODULES):
            found = super().find_class(module, name)
            if isinstance(found, type):  # a class of the hierarchy, never a function
                return found
        raise pickle.UnpicklingError(f"{module}.{name} is not part of a stored hierarchy")
