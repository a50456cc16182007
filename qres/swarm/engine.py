"""The swarm simulation: every node's round, vectorised over nodes.

A round (``docs/swarm.md`` has the whole story):

1. *Join and wake.* Nodes due to join get the consensus model (the coordinate-wise median of
   the live, unbanned nodes' weights). Each node's wake schedule (:mod:`qres.swarm.energy`)
   says whether it is awake this round.
2. *Observe and learn.* Each awake node reads its window (:mod:`qres.swarm.data`), measures
   its prediction error (the round's *entropy*, which drives its regime,
   :mod:`qres.swarm.regimes`) and computes its Q16.16 update with :mod:`qres.learning.task`
   (Storm uses ``storm_lr``), with the residual error and accuracy delta it claims.
   Byzantine nodes replace their update with the attack plugin's forgery (omniscient: it sees
   every honest update of the round) and claim the round's highest residual and gain.
3. *Gossip.* A node sends when ``entropy x reputation > cost x bias(regime)`` (cost: the
   radio energy of the packets over the energy of one wake), to ``fanout`` random peers
   through the transport plugin (seeded loss and delay); receivers forward by epidemic
   rules (:mod:`qres.swarm.gossip`). Packets from senders whose ban a node knows are
   dropped on arrival. Every byte sent is counted.
3b. *Check.* Every receiver checks every packet it holds before it can use it
   (``check_rate``): it re-runs the training and replays the round step; a receiver drops a
   packet that fails and publishes the fault (:meth:`Simulation._check`).
4. *Consensus.* Each awake node aggregates its own update (weight 1) and up to
   ``max_inbox`` received ones (the receiver's keyed choice, never the senders' claims) with
   the profile's aggregator, ``f`` = ``assumed_byzantine`` of the rows, and applies it.
5. *Defence*: robust outliers and coordinated groups (:mod:`qres.robust.evidence`),
   stochastic audits that re-run the claimed training; rewards, penalties and bans follow
   the rules of :mod:`qres.robust.reputation`: outliers lose reputation, suspects of
   coordination are audited, and only a failed audit or check (attributable evidence)
   bans.
6. *Energy.* Each node pays for its wakes and airtime and harvests.

Each phase is one method of :class:`Simulation` (``_join_and_wake``, ``_observe_and_learn``,
``_gossip``, ``_check``, ``_consensus``, ``_defend``, ``_spend_energy_and_record``) working
on two state objects: :class:`SwarmState` (what lives from round to round, with the run's
:class:`qres.swarm.history.History`) and :class:`RoundState` (one round's working set).

Determinism: one seed feeds named numpy generators (data, peers, attack, audits, transport);
nodes are visited in id order; every model update is integer arithmetic. The same seed and
profile give the same report bytes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import attrs

from qres.fixed.q16 import Q_MAX, Q_MIN, sat_add
from qres.kernel.errors import QresError, UsageError
from qres.swarm import gossip
from qres.swarm.batching import with_batch_mode
from qres.swarm.history import History, RoundRecord, RoundStats, build_report, significant
from qres.swarm.regimes import NAMES, STORM, window_range
from qres.swarm.settings import SwarmSettings
from qres.swarm.trained import TrainingMemo

__all__ = ["MAX_RECORD_NODES", "RoundStats", "Simulation", "settings_from_profile"]

#: Largest swarm ``record`` accepts: every packet is really signed, committed and proved.
MAX_RECORD_NODES = 1000
#: Most packets one round of a recorded round step may name.
MAX_INPUTS = 1024


def settings_from_profile(profile: Any, **overrides: Any) -> SwarmSettings:
    """The ``[swarm]`` settings of a resolved profile, with command-line overrides."""
    from qres.kernel.config import build_config

    table = profile.data.get("swarm", {})
    plain = {k: v for k, v in table.items() if k not in ("aggregator", "transport", "attack")}
    settings = build_config(SwarmSettings, plain, profile.where("swarm"))
    changes = {k: v for k, v in overrides.items() if v is not None}
    from qres.kernel.config import InvalidSetting

    try:
        return attrs.evolve(settings, **changes)
    except InvalidSetting as exc:
        raise UsageError(
            f"swarm settings: --{exc.name.replace('_', '-')}: bad value {exc.value!r}; "
            f"allowed: {exc.allowed}"
        ) from exc


@attrs.define(eq=False)
class SwarmState:
    """Everything that lives from round to round: who is who, the models, the ledger, the
    regimes, the energy pools, the messages in flight, and the run's :class:`History`."""

    n: int
    byz: Any  # bool (n,): Byzantine nodes
    honest: Any
    joining: Any  # bool (n,): honest nodes that join at ``join_round``
    n_byz: int
    n_join: int
    join_round: int
    alive: Any  # bool (n,): nodes in the swarm (joined)
    W: Any  # int32 (n, d): every node's model
    span_range: Any  # peak-to-peak of each node's first window
    ledger: Any  # qres.robust.reputation.Ledger
    regimes: Any
    energy: Any
    data: Any
    rng: dict  # named generators: setup, peers, attack, audit, tight
    calm_train: Any
    storm_train: Any
    pkt: int  # bytes of one update packet
    audit_bytes: int
    bias: Any  # gossip bias per regime
    cost: float  # radio energy of one send over the energy of one wake
    history: History
    meter: Any
    recorder: Any
    # Updates sent in recent rounds, by round: (origins, rows, residual, claimed gain).
    store: dict = attrs.field(factory=dict)
    due_audit: Any = None  # bool (n,): suspects due for a sure audit this round
    # bool (n,): nodes that published a fault (a forged update or claim, a moved base),
    # whether or not anyone caught it: the red-team suite's ground truth
    committed: Any = None
    steps: Any = None  # qres.swarm.steps.StepLog: every node's round-step chain
    # Each recent round's packets checked once, by round: (senders, ok, wrong step,
    # evidence), and the packets each node holds (keys node x span + tag, sorted)
    verdicts: dict = attrs.field(factory=dict)
    held: Any = None
    pending_dst: Any = None  # messages waiting for a sleeping node
    pending_tag: Any = None
    tx: Any = None  # bytes sent and received this round, per node
    rx: Any = None


@attrs.define(eq=False)
class RoundState:
    """One round's working set, filled phase by phase (positions index the awake nodes)."""

    r: int
    wakes: Any
    active: Any  # bool (n,)
    A: Any  # ids of the awake nodes
    known_banned: Any  # bool (n,): bans every node knows by now
    truth: Any  # bool (n,): the scripted storm
    rep_f: Any  # reputations at the start of the round, floats in [0, 1]
    # 2. observe and learn
    X: Any = None  # windows of the awake nodes
    W0: Any = None  # their models before the round
    err0: Any = None
    entropy: Any = None
    reg_a: Any = None
    delta: Any = None  # honest updates
    sent: Any = None  # what each awake node sends (forgeries for Byzantine nodes)
    residual: Any = None
    gain_claim: Any = None
    byz_a: Any = None
    hon_a: Any = None
    # 3. gossip
    senders_pos: Any = None
    senders: Any = None
    pos: Any = None  # node id -> position among the awake, -1 if asleep
    alive_ids: Any = None
    gain_sum: Any = None  # per origin: accuracy gain its receivers measured
    gain_cnt: Any = None
    # 3b. the receivers' checks: senders whose packet failed, and passed
    check_failed: Any = None
    check_passed: Any = None


def build_attack(profile: Any, name: str | None) -> Any:
    """The run's attack: ``--attack NAME`` when given, else the profile's ``[swarm.attack]``,
    else None."""
    from qres.kernel import plugins
    from qres.kernel.config import Location

    if name:
        return plugins.create("attack", {"use": name}, Location("--attack"))
    if "attack" in profile.data.get("swarm", {}):
        return profile.build("swarm", "attack")
    return None


def _setting_names(kind: str, table: Any) -> set[str]:
    """The setting names of the plugin a profile table names (none if it names no plugin)."""
    from qres.kernel import plugins

    try:
        cls = plugins.get_plugin(kind, table.get("use"))
    except QresError:
        return set()  # plugins.create reports the problem with the profile's location
    return set(attrs.fields_dict(cls.Config)) if attrs.has(cls.Config) else set()


class Simulation:
    """One simulated swarm: build it from a profile, then :meth:`run`."""

    def __init__(
        self,
        profile: Any,
        settings: SwarmSettings,
        *,
        attack: str | None = None,
        attack_free: bool = False,
        record: Any = None,
    ):
        from qres.kernel import plugins
        from qres.kernel.config import Location

        self.profile = profile
        self.s = settings
        if record is not None and settings.nodes > MAX_RECORD_NODES:
            raise QresError(
                f"--record signs and commits every packet: at most {MAX_RECORD_NODES} nodes, "
                f"got {settings.nodes}; record a smaller swarm"
            )
        if record is not None and settings.max_inbox > MAX_INPUTS:
            raise QresError(
                f"--record writes each round step: max_inbox at most {MAX_INPUTS} packets, "
                f"got {settings.max_inbox}; lower swarm.max_inbox"
            )
        self.record = record
        swarm = profile.data.get("swarm", {})
        if "aggregator" in swarm:
            self.aggregator = profile.build("swarm", "aggregator")
        else:
            self.aggregator = plugins.create(
                "aggregator", {"use": "adaptive"}, Location(str(profile.path)).child("swarm")
            )
        table = dict(swarm.get("transport", {"use": "inproc"}))
        # The run's seed and sizes go to the transport settings it has; a transport without
        # them (a third-party one) keeps its own.
        known = _setting_names("transport", table)
        for key, value in (
            ("seed", settings.seed % (1 << 64)),
            ("max_payload", 1 << 20),
            ("queue_limit", 4 * settings.max_inbox),
        ):
            if key in known:
                table.setdefault(key, value)
        transport = plugins.create("transport", table, profile.where("swarm", "transport"))
        self.transport = with_batch_mode(transport)
        self.attack = None if attack_free else build_attack(profile, attack)
        self.hardware = profile.build("hardware") if "hardware" in profile.data else None
        from qres.robust.combine import takes_reputation

        self.pass_reputation = takes_reputation(self.aggregator)
        # this round's honest training by exact inputs: a check of it is a lookup
        self.trained = TrainingMemo()

    def run(self, on_round: Callable[[RoundStats], None] | None = None) -> dict:
        """Run every round, phase by phase as the module docstring numbers them; returns the
        report (plain data, see :mod:`qres.swarm.report` and :func:`build_report`)."""
        import numpy as np

        sw = self._setup()
        self.ledger = sw.ledger  # for callers that inspect reputations and bans afterwards
        self.committed = sw.committed
        for r in range(self.s.rounds):
            rd = self._join_and_wake(sw, r)
            if rd.A.shape[0] == 0:
                radio_on = sw.energy.spend(rd.wakes, sw.tx, sw.rx)
                record = RoundRecord(np.nan, np.nan, 0, 0, 0, radio_on)
                sw.history.record(record, sw, rd.truth, self.s.round_seconds)
                self.transport.advance(1)
                continue
            self._observe_and_learn(sw, rd)
            in_dst, in_tag = self._gossip(sw, rd)
            in_dst, in_tag = self._check(sw, rd, in_dst, in_tag)
            self._consensus(sw, rd, in_dst, in_tag)
            self._defend(sw, rd)
            self._spend_energy_and_record(sw, rd)
            if on_round is not None:
                on_round(sw.history.round_stats(r))
        if sw.recorder is not None:
            sw.recorder.writer.finish()  # the end record: a cut stream reads as truncated
        return self._report(sw)

    # --- the phases of a round --------------------------------------------------------------

    def _setup(self) -> SwarmState:
        """Who is Byzantine, who joins late, and the state every round starts from."""
        import numpy as np

        from qres.learning import task as learning
        from qres.robust.reputation import Ledger
        from qres.swarm import gossip
        from qres.swarm.coding import CodecMeter
        from qres.swarm.data import open_data
        from qres.swarm.energy import EnergyModel
        from qres.swarm.regimes import RegimeTracker
        from qres.swarm.settings import reputation_rules
        from qres.swarm.steps import StepLog

        s = self.s
        n, seed = s.nodes, s.seed
        data = open_data(s, seed)
        rng = {
            name: np.random.default_rng([seed, key])
            for name, key in (
                ("setup", 0x5E7),
                ("peers", 0x9EE2),
                ("attack", 0xA77A),
                ("audit", 0xA0D1),
                ("tight", 0x71687),
                ("check", 0xC4EC),
            )
        }
        n_byz = int(math.floor(s.byzantine * n + 0.5))
        byz = np.zeros(n, bool)
        byz[np.sort(rng["setup"].permutation(n)[:n_byz])] = True
        joining = np.zeros(n, bool)
        n_join = int(math.floor(s.join_fraction * np.count_nonzero(~byz)))
        if n_join:
            joining[rng["setup"].choice(np.flatnonzero(~byz), n_join, replace=False)] = True
        energy = EnergyModel(n, s, self.hardware)
        pkt = gossip.packet_bytes(s.order)
        wake_j = energy.wake_energy_j()
        gossip_j = pkt * s.fanout * 8.0 / s.link_bps * energy.radio_active / 1000.0
        return SwarmState(
            n=n,
            byz=byz,
            honest=~byz,
            joining=joining,
            n_byz=n_byz,
            n_join=n_join,
            join_round=s.join_round or s.rounds // 2,
            alive=~joining,
            W=learning.genesis_weights(s.order, n),
            span_range=np.zeros(n),
            ledger=Ledger(n, reputation_rules(s, n)),
            regimes=RegimeTracker(n, s),
            energy=energy,
            data=data,
            rng=rng,
            calm_train=learning.TrainSettings(order=s.order, window=s.window, lr=s.lr),
            storm_train=learning.TrainSettings(order=s.order, window=s.window, lr=s.storm_lr),
            pkt=pkt,
            audit_bytes=gossip.audit_response_bytes(s.order),
            bias=np.array([s.gossip_bias_calm, s.gossip_bias_prestorm, s.gossip_bias_storm]),
            cost=gossip_j / wake_j if wake_j > 0 else 0.0,
            history=History(n),
            recorder=_Recorder(self.record, n, seed) if self.record is not None else None,
            meter=CodecMeter(s, self.profile),
            due_audit=np.zeros(n, bool),
            committed=np.zeros(n, bool),
            steps=StepLog(learning.genesis_weights(s.order, n)),
            held=np.zeros(0, np.int64),
            pending_dst=np.zeros(0, np.int64),
            pending_tag=np.zeros(0, np.int64),
            tx=np.zeros(n, np.int64),
            rx=np.zeros(n, np.int64),
        )

    def _send(self, sw: SwarmState, src, dst, size, tags, kind: str):
        """Hand a batch of messages to the transport and count their bytes (``size``: one
        for all, or one per message)."""
        import numpy as np

        sizes = np.broadcast_to(np.asarray(size, np.int64), src.shape).copy()
        kept = self.transport.send_batch(src, dst, sizes, tags)
        np.add.at(sw.tx, src, sizes)
        sw.history.bytes_by_kind[kind] += int(sizes.sum())
        return kept

    def _join_and_wake(self, sw: SwarmState, r: int) -> RoundState:
        """1. Joiners get the consensus model; each node's schedule says if it is awake."""
        import numpy as np

        from qres.robust.aggregate import median_columns

        sw.tx[:] = 0
        sw.rx[:] = 0
        if sw.n_join and r == sw.join_round:
            base = sw.alive & ~sw.ledger.banned()
            d = self.s.order
            consensus = median_columns(sw.W[base]) if base.any() else np.zeros(d, np.int32)
            sw.W[sw.joining] = consensus
            sw.steps.restart(np.flatnonzero(sw.joining), sw.W)
            sw.alive = sw.alive | sw.joining
        rep_f = sw.ledger.fraction()
        wakes = sw.energy.wakes(r, sw.regimes.regime, rep_f, sw.alive)
        active = wakes > 0
        return RoundState(
            r=r,
            wakes=wakes,
            active=active,
            A=np.flatnonzero(active),
            known_banned=sw.ledger.banned_known(r),
            truth=sw.data.storm_truth(r),
            rep_f=rep_f,
        )

    def _observe_and_learn(self, sw: SwarmState, rd: RoundState) -> None:
        """2. Read the windows, measure the error (entropy, regime), train; the Byzantine
        nodes forge their updates and claims."""
        import numpy as np

        from qres.learning import task as learning

        A, d = rd.A, self.s.order
        X = sw.data.windows(rd.r, A)
        fresh = sw.span_range[A] == 0
        if fresh.any():
            sw.span_range[A[fresh]] = window_range(X[fresh])
        if self.attack is not None and sw.byz[A].any():
            self._choose_bases(sw, rd)
        W0 = sw.W[A]
        err0 = learning.prediction_error(W0, X, d)
        low = sw.energy.low() & rd.active
        rd.entropy = sw.regimes.observe_errors(A, err0, sw.span_range[A], low)
        rd.reg_a = sw.regimes.regime[A]
        in_storm = rd.reg_a == STORM
        delta = np.empty((A.shape[0], d), np.int32)
        for mask, ts in ((~in_storm, sw.calm_train), (in_storm, sw.storm_train)):
            if mask.any():
                delta[mask] = learning.local_update(W0[mask], X[mask], ts)
        rd.X, rd.W0, rd.err0, rd.delta = X, W0, err0, delta
        rd.residual, rd.gain_claim = _claims(W0, X, delta, err0, d)
        claims = (rd.residual, rd.gain_claim, sw.calm_train, sw.storm_train)
        self.remember_training(W0, X, in_storm, delta, *claims)
        rd.sent = delta.copy()
        rd.byz_a = sw.byz[A]
        rd.hon_a = ~rd.byz_a
        # each honest node codes what it observed with the model it held (its codec)
        sw.meter.add(A[rd.hon_a], W0[rd.hon_a], X[rd.hon_a])
        if self.attack is not None and rd.byz_a.any() and rd.hon_a.any():
            self._forge(sw, rd)

    def remember_training(self, W0, X, in_storm, delta, residual, gain, calm, storm) -> None:
        """Keep this round's training (the awake nodes' updates and honest claims) by its
        exact inputs, dropping the last round's: a check or audit that re-runs a claimed
        training from those same inputs looks the bytes up (:class:`TrainingMemo`)."""
        self.trained = TrainingMemo()
        for mask, ts in ((~in_storm, calm), (in_storm, storm)):
            if mask.any():
                self.trained.record(W0[mask], X[mask], ts, delta[mask], residual[mask], gain[mask])

    def _choose_bases(self, sw: SwarmState, rd: RoundState) -> None:
        """The attack's hook on the awake Byzantine nodes' models before they train
        (:meth:`qres.kinds.attack.Attack.choose_base`): base poisoning, which the round-step
        audit catches (:mod:`qres.swarm.steps`)."""
        import numpy as np

        from qres.kinds.attack import AttackContext

        nodes = rd.A[sw.byz[rd.A]]
        context = AttackContext(
            round=rd.r,
            nodes=nodes,
            reputations=rd.rep_f[nodes],
            audit_rate=self.s.audit_rate,
            check_rate=self.s.check_rate,
            receivers=self.s.fanout,
        )
        chosen = self.attack.choose_base(sw.W[nodes], rng=sw.rng["attack"], context=context)
        if chosen is not None:
            chosen = np.asarray(chosen, np.int32).reshape(nodes.shape[0], -1)
            # an awake Byzantine node sends this round: the moved base is published
            sw.committed[nodes[(chosen != sw.W[nodes]).any(axis=1)]] = True
            sw.W[nodes] = chosen

    def _forge(self, sw: SwarmState, rd: RoundState) -> None:
        """Byzantine rows: the attack's forgery of this round's honest updates, claiming the
        round's highest residual and gain (the highest priority)."""
        import numpy as np

        from qres.kinds.attack import AttackContext

        byz_a, hon_a = rd.byz_a, rd.hon_a
        nodes = rd.A[byz_a]
        context = AttackContext(
            round=rd.r,
            nodes=nodes,
            own=rd.delta[byz_a].copy(),
            reputations=rd.rep_f[nodes],
            audit_rate=self.s.audit_rate,
            check_rate=self.s.check_rate,
            receivers=self.s.fanout,
        )
        forged = self.attack.forge(
            rd.delta[hon_a], int(byz_a.sum()), rng=sw.rng["attack"], context=context
        )
        rd.sent[byz_a] = forged
        # a Byzantine node that sends its own update this round behaves: honest claims
        lying = np.zeros(byz_a.shape[0], bool)
        lying[byz_a] = (forged != rd.delta[byz_a]).any(axis=1)
        sw.committed[rd.A[lying]] = True
        residual_b = rd.residual.copy()
        residual_b[lying] = rd.residual[hon_a].max()
        gain_b = rd.gain_claim.copy()
        gain_b[lying] = max(int(rd.gain_claim[hon_a].max()), 1)
        rd.residual, rd.gain_claim = residual_b, gain_b

    def _gossip(self, sw: SwarmState, rd: RoundState) -> tuple[Any, Any]:
        """3. Senders gossip to random peers, receivers forward for ``hops`` hops; returns
        the (destination, tag) of the messages the awake nodes hold now."""
        import numpy as np

        s, n, A = self.s, sw.n, rd.A
        wants = rd.entropy * rd.rep_f[A] > sw.cost * sw.bias[rd.reg_a]
        # Byzantine nodes ignore the energy rule; honest nodes that know they are banned
        # stay quiet.
        quiet = rd.known_banned[A] & rd.hon_a
        # a round-step record covers at most 64 rounds: a node whose chain is that long sends
        wants |= sw.steps.full(A)
        rd.senders_pos = np.flatnonzero((wants | rd.byz_a) & ~quiet)
        rd.senders = A[rd.senders_pos]
        sw.steps.close(rd.senders, rd.W0[rd.senders_pos], rd.r)
        wrong = getattr(sw.steps, "closed_wrong", {})
        sw.committed[[i for i in rd.senders.tolist() if wrong.get(i)]] = True
        rd.pos = np.full(n, -1, np.int64)
        rd.pos[A] = np.arange(A.shape[0])
        sw.store[rd.r] = (A, rd.sent, rd.residual, rd.gain_claim)
        if sw.recorder is not None:
            sw.recorder.steps_of(rd.r, rd.senders, sw.steps)
            sw.recorder.packets(
                rd.r, rd.senders, rd.senders_pos, rd.W0, rd.sent, rd.residual, rd.gain_claim
            )
            sw.recorder.prune(rd.r, s.max_age)
        for old in [k for k in sw.store if k < rd.r - s.max_age]:
            del sw.store[old]
        rd.alive_ids = np.flatnonzero(sw.alive)
        src, dst = gossip.random_peers(rd.senders, rd.alive_ids, s.fanout, sw.rng["peers"])
        self._send(sw, src, dst, sw.pkt, rd.r * n + src, "updates")
        got_dst, got_tag = self._hops(sw, rd)
        # what each node holds: its own packet and what reached it, asleep or not
        self._hold(
            sw,
            rd,
            np.concatenate([rd.senders, *got_dst]),
            np.concatenate([rd.r * n + rd.senders, *got_tag]),
        )
        in_dst = np.concatenate([sw.pending_dst, *got_dst])
        in_tag = np.concatenate([sw.pending_tag, *got_tag])
        # stale or banned-origin messages are discarded; sleeping nodes keep theirs
        fresh_msg = (in_tag // n >= rd.r - s.max_age) & ~rd.known_banned[in_tag % n]
        in_dst, in_tag = in_dst[fresh_msg], in_tag[fresh_msg]
        waiting = ~rd.active[in_dst]
        sw.pending_dst, sw.pending_tag = in_dst[waiting], in_tag[waiting]
        return in_dst[~waiting], in_tag[~waiting]

    def _hops(self, sw: SwarmState, rd: RoundState) -> tuple[list, list]:
        """Deliver, then forward the fresh updates worth it, hop by hop."""
        import numpy as np

        s, n = self.s, sw.n
        got_dst: list[Any] = []
        got_tag: list[Any] = []
        seen_keys = np.zeros(0, np.int64)
        rd.gain_sum = np.zeros(n)
        rd.gain_cnt = np.zeros(n, np.int64)
        for hop in range(s.hops + 1):
            _, m_dst, m_size, m_tag, _ = self.transport.receive_batch()
            np.add.at(sw.rx, m_dst, m_size)
            # control messages (tag -1) delayed from earlier rounds carry no update
            origin = m_tag % n
            ok = (m_tag >= 0) & ~rd.known_banned[origin]  # verifier drops known-banned senders
            m_dst, m_tag, origin = m_dst[ok], m_tag[ok], origin[ok]
            got_dst.append(m_dst)
            got_tag.append(m_tag)
            if hop == s.hops or s.forward_budget == 0:
                break
            seen_keys, more = self._forward(sw, rd, m_dst, m_tag, origin, seen_keys)
            if not more:
                break
        return got_dst, got_tag

    def _forward(self, sw, rd, m_dst, m_tag, origin, seen_keys) -> tuple[Any, bool]:
        """Forwarding: fresh updates received by awake nodes, once per (node, update), those
        that improve the receiver's error, its ``forward_budget`` best by priority. Returns
        the (node, update) keys seen so far and whether anything was forwarded."""
        import numpy as np

        n, r = sw.n, rd.r
        cand = rd.active[m_dst] & (m_tag // n == r)
        key = m_dst * (n * (r + 1)) + m_tag
        cand &= ~np.isin(key, seen_keys)
        c_dst, c_tag, c_org = m_dst[cand], m_tag[cand], origin[cand]
        c_key, first = np.unique(key[cand], return_index=True)
        c_dst, c_tag, c_org = c_dst[first], c_tag[first], c_org[first]
        seen_keys = np.union1d(seen_keys, c_key)
        if c_dst.shape[0] == 0:
            return seen_keys, False
        gain = self._forward_gains(sw, rd, c_dst, c_tag, c_org)
        return seen_keys, self._send_forwards(sw, rd, c_dst, c_tag, c_org, gain)

    def _forward_gains(self, sw, rd, c_dst, c_tag, c_org):
        """How much each candidate update improves its receiver's error on its own window."""
        import numpy as np

        from qres.learning import task as learning

        s = self.s
        base_w = sw.W[c_dst].astype(np.int64)
        upd = rd.sent[rd.pos[c_org]].astype(np.int64)
        tried = np.clip(base_w + upd, Q_MIN, Q_MAX)
        xw = rd.X[rd.pos[c_dst]]
        before = gossip.window_errors(base_w, xw, s.order, s.eval_samples)
        after = gossip.window_errors(tried, xw, s.order, s.eval_samples)
        return (before - after) / learning.SPAN

    def _send_forwards(self, sw, rd, c_dst, c_tag, c_org, gain) -> bool:
        """Credit each origin with the gains its update brought, and forward the updates that
        helped: each node's top ``forward_budget`` by priority (ties: lower tag first) to
        ``fanout`` random peers. False when nothing is forwarded."""
        import numpy as np

        s = self.s
        np.add.at(rd.gain_sum, c_org, gain)
        np.add.at(rd.gain_cnt, c_org, 1)
        # measured by the receiver (its gain on its own window, its reputation of the
        # origin), never the residual the sender claims: an attacker claims the highest
        prio = gain * rd.rep_f[c_org]
        fwd = gain > s.forward_threshold
        f_dst, f_tag, f_prio = c_dst[fwd], c_tag[fwd], prio[fwd]
        order = np.lexsort((f_tag, -f_prio, f_dst))
        f_dst, f_tag = f_dst[order], f_tag[order]
        first_of = np.searchsorted(f_dst, f_dst, side="left")
        keep = (np.arange(f_dst.shape[0]) - first_of) < s.forward_budget
        f_dst, f_tag = f_dst[keep], f_tag[keep]
        if f_dst.shape[0] == 0:
            return False
        fsrc, fdst = gossip.random_peers(f_dst, rd.alive_ids, s.fanout, sw.rng["peers"])
        self._send(sw, fsrc, fdst, sw.pkt, np.repeat(f_tag, s.fanout), "forwards")
        return True

    def _consensus(self, sw: SwarmState, rd: RoundState, in_dst, in_tag) -> None:
        """4. Each awake node screens what it received on its own data, then aggregates."""
        import numpy as np

        n = sw.n
        in_dst, in_tag, in_rows, in_prio = self._inbox(in_dst, in_tag, sw.store, n, rd.rep_f)
        kept = self._screen(sw.W, rd.X, rd.pos, in_dst, in_rows)
        screened = sw.history.screened
        screened["received"] += int(in_dst.shape[0])
        screened["rejected_honest"] += int(np.count_nonzero(~kept & sw.honest[in_tag % n]))
        screened["rejected_byzantine"] += int(np.count_nonzero(~kept & sw.byz[in_tag % n]))
        # a node applies what it committed to: its packet's update if it sent one
        own = rd.delta.copy()
        own[rd.senders_pos] = rd.sent[rd.senders_pos]
        self._aggregate_all(
            sw,
            rd.A,
            own,
            in_dst[kept],
            in_tag[kept],
            in_rows[kept],
            in_prio[kept],
            n,
            rd.rep_f,
        )

    def _defend(self, sw: SwarmState, rd: RoundState) -> None:
        """5. Judge the updates sent this round by senders not known to be banned (robust
        outliers, coordinated groups, audits, rewards), then ban the nodes whose audits
        failed and flood the ban notices."""
        import numpy as np

        from qres.swarm import gossip

        n, ledger, history = sw.n, sw.ledger, sw.history
        s_ok = rd.senders_pos[~rd.known_banned[rd.senders]]
        audited_ok = np.zeros(n, bool)
        flagged = np.zeros(n, bool)
        audit_bans = np.zeros(0, np.int64)
        if s_ok.shape[0] >= 3:
            audit_bans = self._judge(sw, rd, s_ok, flagged, audited_ok)
        # suspicion of coordination draws a sure audit next round, never a ban by itself
        due = ledger.suspects(flagged, audited_ok, rd.r, int(rd.senders.shape[0]))
        sw.due_audit[:] = False
        sw.due_audit[due] = True
        low_bans = ledger.ban_low(rd.r)
        history.count(history.ban_causes, "audit", audit_bans, sw.byz)
        history.count(history.ban_causes, "reputation", low_bans, sw.byz)
        banned_now = np.concatenate([audit_bans, low_bans])
        if banned_now.shape[0]:
            # one ban notice per round, flooded: every alive node forwards it once
            size = gossip.BAN_NOTICE_BASE_BYTES + gossip.BAN_NOTICE_PER_NODE_BYTES * int(
                banned_now.shape[0]
            )
            alive = rd.alive_ids
            b_src, b_dst = gossip.random_peers(alive, alive, self.s.fanout, sw.rng["peers"])
            self._send(sw, b_src, b_dst, size, np.full(b_src.shape[0], -1), "bans")
        # the control messages (audits, bans) arrive like the rest; nothing aggregates them
        _, c_dst, c_size, _, _ = self.transport.receive_batch()
        np.add.at(sw.rx, c_dst, c_size)

    def _judge(self, sw: SwarmState, rd: RoundState, s_ok, flagged, audited_ok) -> Any:
        """Penalise robust outliers, flag and audit coordinated groups, reward the useful
        rest; returns the nodes banned for failed audits (rules:
        :mod:`qres.robust.reputation`; tests: :mod:`qres.robust.evidence`)."""
        import numpy as np

        from qres.robust.evidence import robust_outliers, tightness, update_statistic

        s, n, ledger, history = self.s, sw.n, sw.ledger, sw.history
        ids = rd.A[s_ok]
        # distance to the coordinate-wise median of the unbanned senders, judged against
        # the median and MAD of the others: a minority can neither mask nor frame
        stat = update_statistic(rd.sent[s_ok])
        out = ids[robust_outliers(stat, s.grubbs_alpha)]
        ledger.adjust(out, -ledger.pen_outlier)
        history.count(history.flags, "grubbs", out, sw.byz)
        # Coordination is judged against every packet seen this round, those of banned
        # senders included (a cartel member still matches its banned fellows), on the scale
        # of the unbanned senders only (banned ones cannot shrink it).
        all_rows = rd.sent[rd.senders_pos]
        k = min(s.suspect_group_size - 1, all_rows.shape[0] - 1)
        unbanned = ~rd.known_banned[rd.senders]
        t_all = tightness(all_rows, max(k, 1), sw.rng["tight"], scale_rows=unbanned)
        flagged[rd.senders[t_all < s.suspect_tightness]] = True
        tight = flagged[ids]
        # Similarity only draws audits: an original looks exactly like its copiers, and the
        # audit (re-running the claimed training) tells them apart.
        watched = np.zeros(n, bool)
        watched[rd.senders[t_all < s.audit_tightness]] = True
        history.count(history.flags, "suspect", ids[tight], sw.byz)
        bans = self._audits(sw, rd, s_ok, watched[ids], audited_ok)
        # rewards: inliers whose receivers measured a gain
        useful = np.zeros(n, bool)
        measured = rd.gain_cnt[ids] > 0
        useful[ids[measured & (rd.gain_sum[ids] > 0)]] = True
        useful[out] = False
        ledger.adjust(np.flatnonzero(useful & ~ledger.banned()), ledger.reward)
        return bans

    def _audits(self, sw: SwarmState, rd: RoundState, s_ok, watched, audited_ok) -> Any:
        """Stochastic audits (storm rate for Storm senders, raised for watched ones, sure
        for suspects due) that re-run the claimed training and, with ``audit_steps``,
        replay the round step, beside the receivers' checks of this round (:meth:`_check`,
        before the consensus). A failure of either is an attributable fault
        (``rep_penalty_audit``, then the ban). Returns the nodes banned."""
        import numpy as np

        from qres.swarm import gossip

        s, audits = self.s, sw.history.audits
        p = np.where(rd.reg_a[s_ok] == STORM, s.audit_rate_storm, s.audit_rate)
        p = np.where(watched, np.maximum(p, s.audit_suspect_rate), p)
        p = np.where(sw.due_audit[rd.A[s_ok]], 1.0, p)
        picked = sw.rng["audit"].random(s_ok.shape[0]) < p
        ids = rd.A[s_ok]
        # an auditor replays the step even when a receiver checked it: the checker may
        # have been a colluder that kept quiet
        stepped = picked & s.audit_steps
        ok, wrong = self._verify(sw, rd, s_ok[picked], stepped[picked])
        known = np.isin(ids[picked], rd.check_failed)  # counted by the receivers' check
        sw.history.count(audits, "wrong_step", ids[picked][wrong & ~known], sw.byz)
        audits["audited"] += int(picked.sum())
        failed = np.union1d(ids[picked][~ok], rd.check_failed)
        audits["failed"] += int(failed.shape[0])
        sw.history.count(audits, "failed", failed, sw.byz)
        passed = np.union1d(ids[picked][ok], rd.check_passed)
        audited_ok[np.setdiff1d(passed, failed)] = True
        if picked.any():
            if sw.recorder is not None:
                sw.recorder.audits(ids[picked])
            # request to the sender, response back (to one auditor: a random peer)
            a_src, a_dst = gossip.random_peers(ids[picked], rd.alive_ids, 1, sw.rng["peers"])
            control = np.full(a_src.shape[0], -1)
            self._send(sw, a_dst, a_src, gossip.AUDIT_REQUEST_BYTES, control, "audits")
            self._send(sw, a_src, a_dst, sw.audit_bytes, control, "audits")
            for k in np.flatnonzero(stepped[picked]).tolist():  # and the step's evidence
                size = sw.steps.evidence_bytes(int(ids[picked][k]), sw.pkt)
                self._send(sw, a_src[k : k + 1], a_dst[k : k + 1], size, control[:1], "audits")
        return sw.ledger.fault(failed, rd.r)

    def _verify(self, sw: SwarmState, rd: RoundState, pos, steps: Any) -> Any:
        """Where the packets of the awake nodes at ``pos`` pass (the claimed training
        re-run from the opened base on the window and, where ``steps`` (bool, per packet),
        the round step's replay against the base it commits to, :mod:`qres.swarm.steps`),
        and where the step is wrong (two bool arrays)."""
        import numpy as np

        from qres.trust.audit import to_q16

        if not pos.shape[0]:
            return np.ones(0, bool), np.zeros(0, bool)
        args = (rd.W0, rd.X, rd.sent, rd.residual, rd.gain_claim, rd.reg_a)
        ok = self._audit(pos, *args, sw.calm_train, sw.storm_train, to_q16)
        steps = np.broadcast_to(np.asarray(steps, bool), pos.shape)
        wrong = np.zeros(pos.shape[0], bool)
        if steps.any():
            at = pos[steps]
            wrong[steps] = ~sw.steps.check(
                rd.A[at], rd.W0[at], self._replay_rule, self._robust_many
            )
            ok &= ~wrong
        return ok, wrong

    def _check(self, sw: SwarmState, rd: RoundState, in_dst, in_tag) -> tuple[Any, Any]:
        """3b. The receivers' checks, before anyone aggregates: every receiver checks every
        packet it holds this round before it can use it (``check_rate``: the chance it
        checks one; 1, the default, checks all). A check fetches the opening, the window
        and the round step's evidence, re-runs the training and replays the step. A
        receiver that finds a fault drops the packet and publishes the evidence (the
        sender is faulted in :meth:`_defend`); no receiver takes another's word for a
        packet it aggregates. A Byzantine receiver checks like anyone but never reports a
        fellow's fault, and uses what it likes. Returns the messages left to aggregate;
        sets ``rd.check_failed`` (senders an honest checker caught) and
        ``rd.check_passed`` (senders of this round whose packet an honest checker passed).

        The verdict is deterministic replay, the same for every checker, so it is computed
        once per packet, in the round the packet is sent (:meth:`_verdicts`), and shared by
        the receivers that check it. Bytes, per check: the request, the answer (opening,
        proof, window), and the step's evidence: the record and only the packets (the
        previous one and the inputs) the checker does not hold (:meth:`_evidence_bytes`).

        *Why every receiver:* a fault is visible only in the packet that carries it, and a
        single checker may be a colluder who stays silent. When every receiver checks what
        it uses, a fault escapes only if no honest node received the packet, and then it
        harmed no honest node. *Why before use:* a fault found after the receivers
        aggregated has done its harm."""
        import numpy as np

        n, s = sw.n, self.s
        empty = np.zeros(0, np.int64)
        rd.check_failed, rd.check_passed = empty, empty
        self._verdicts(sw, rd)
        if s.check_rate <= 0.0 or in_dst.shape[0] == 0:
            return in_dst, in_tag
        span = (s.rounds + 1) * n
        key = in_dst.astype(np.int64) * span + in_tag
        pairs = np.unique(key[in_tag % n != in_dst])  # each held packet once, not its own
        dst, tag = pairs // span, pairs % span
        ok, wrong, at = self._verdict_of(sw, tag)
        checked = at >= 0
        if s.check_rate < 1.0:
            checked &= sw.rng["check"].random(pairs.shape[0]) < s.check_rate
        dst, tag, ok, wrong, at = (
            dst[checked],
            tag[checked],
            ok[checked],
            wrong[checked],
            at[checked],
        )
        if not dst.shape[0]:
            return in_dst, in_tag
        sw.history.audits["checked"] += int(dst.shape[0])
        honest = sw.honest[dst]  # a Byzantine checker stays silent
        caught = honest & ~ok
        origin = tag % n
        rd.check_failed = np.unique(origin[caught])
        this_round = tag // n == rd.r
        rd.check_passed = np.setdiff1d(origin[honest & ok & this_round], rd.check_failed)
        sw.history.count(sw.history.audits, "wrong_step", np.unique(origin[caught & wrong]), sw.byz)
        self._send_checks(sw, dst, tag, at)
        drop = np.isin(key, dst[caught] * span + tag[caught])
        return in_dst[~drop], in_tag[~drop]

    def _verdicts(self, sw: SwarmState, rd: RoundState) -> None:
        """Each packet of this round checked once (training re-run, step replayed), with
        what its check costs beside the packet (the record's bytes and the tags of the
        evidence packets): ``sw.verdicts[round] = (senders, ok, wrong, evidence)``."""
        import numpy as np

        for old in [k for k in sw.verdicts if k < rd.r - self.s.max_age]:
            del sw.verdicts[old]
        if self.s.check_rate <= 0.0:
            return
        s_ok = rd.senders_pos[~rd.known_banned[rd.senders]]
        ok, wrong = self._verify(sw, rd, s_ok, True)
        ids = rd.A[s_ok]
        evidence = []
        for node in ids.tolist():
            record, prev, inputs = sw.steps.evidence(node)
            if prev >= 0:
                inputs = np.concatenate([[prev * sw.n + node], inputs])
            evidence.append((record, inputs))
        sw.verdicts[rd.r] = (ids, ok, wrong, evidence)

    def _verdict_of(self, sw: SwarmState, tags) -> tuple[Any, Any, Any]:
        """The verdicts of the packets ``tags`` (ok, wrong step, and the index of the
        packet in its round's verdicts, -1 where none was computed: a sender known to be
        banned when it sent, or a packet older than ``max_age``)."""
        import numpy as np

        n = sw.n
        ok = np.ones(tags.shape[0], bool)
        wrong = np.zeros(tags.shape[0], bool)
        at = np.full(tags.shape[0], -1, np.int64)
        rounds = tags // n
        for rr in np.unique(rounds).tolist():
            entry = sw.verdicts.get(rr)
            if entry is None or not entry[0].shape[0]:
                continue
            ids, v_ok, v_wrong, _ = entry
            sel = np.flatnonzero(rounds == rr)
            p = np.minimum(np.searchsorted(ids, tags[sel] % n), ids.shape[0] - 1)
            found = ids[p] == tags[sel] % n
            sel, p = sel[found], p[found]
            ok[sel], wrong[sel], at[sel] = v_ok[p], v_wrong[p], p
        return ok, wrong, at

    def _send_checks(self, sw: SwarmState, dst, tag, at) -> None:
        """The checks' traffic: each checker's request to the sender, and the sender's
        answer (opening, proof, window, the step's record and the evidence packets the
        checker does not hold)."""
        import numpy as np

        from qres.swarm import gossip

        s, n = self.s, sw.n
        origin = tag % n
        evidence = [sw.verdicts[int(t // n)][3][int(k)] for t, k in zip(tag, at, strict=True)]
        record = np.array([e[0] for e in evidence], np.int64)
        missing = self._missing(sw, dst, [e[1] for e in evidence])
        answer = sw.audit_bytes + 2 * (s.order + s.window) + record + sw.pkt * missing
        control = np.full(dst.shape[0], -1)
        self._send(sw, dst, origin, gossip.AUDIT_REQUEST_BYTES, control, "checks")
        self._send(sw, origin, dst, answer, control, "checks")

    def _missing(self, sw: SwarmState, dst, evidence: list) -> Any:
        """How many of each checker's evidence packets (tags) it does not hold."""
        import numpy as np

        counts = np.array([e.shape[0] for e in evidence], np.int64)
        if not counts.sum():
            return counts
        span = (self.s.rounds + 1) * sw.n
        tags = np.concatenate(evidence)
        who = np.repeat(dst.astype(np.int64), counts)
        held = np.isin(who * span + tags, sw.held) | (tags % sw.n == who)
        pair = np.repeat(np.arange(dst.shape[0]), counts)
        return counts - np.bincount(pair[held], minlength=dst.shape[0])

    def _hold(self, sw: SwarmState, rd: RoundState, dst, tag) -> None:
        """Remember which packets each node holds (received, by any node awake or not, in
        the last ``max_age`` rounds): a checker fetches only the evidence it lacks."""
        import numpy as np

        span = (self.s.rounds + 1) * sw.n
        fresh = sw.held[(sw.held % span) // sw.n >= rd.r - self.s.max_age]
        key = dst.astype(np.int64) * span + tag
        sw.held = np.union1d(fresh, key[tag >= 0])

    def _spend_energy_and_record(self, sw: SwarmState, rd: RoundState) -> None:
        """6. Pay for wakes and airtime, harvest; then record the round."""
        import numpy as np

        s, history = self.s, sw.history
        radio_on = sw.energy.spend(rd.wakes, sw.tx, sw.rx)
        self.transport.advance(1)
        hon_a, byz_a, err0 = rd.hon_a, rd.byz_a, rd.err0
        record = RoundRecord(
            honest_error=float(err0[hon_a].mean()) if hon_a.any() else float("nan"),
            byzantine_error=float(err0[byz_a].mean()) if byz_a.any() else float("nan"),
            active=int(rd.A.shape[0]),
            senders=int(rd.senders.shape[0]),
            bytes=int(sw.tx.sum()),
            radio_on=radio_on,
        )
        history.record(record, sw, rd.truth, s.round_seconds)
        for i, name in enumerate(NAMES):
            history.regime_node_rounds[name] += int(np.count_nonzero(rd.reg_a == i))
        # regime detection against the scripted storm
        if rd.truth.any() or sw.data.kind == "generated":
            # honest nodes only: an attacker's model, and so its regime, is its own choice
            history.score_regimes(s, rd.r, rd.A[hon_a], rd.reg_a[hon_a], rd.truth)
        known = sw.ledger.banned_known(rd.r + 1)
        if sw.n_byz and history.isolated_round is None and known[sw.byz].all():
            history.isolated_round = rd.r + 1

    def _report(self, sw: SwarmState) -> dict:
        """The report, with what the nodes' codecs achieved."""
        report = build_report(self, sw, sw.history)
        report["codec"] = codec = sw.meter.report()
        if codec["samples"]:
            # what shipping each node's coded stream upstream costs, beside the raw stream
            traffic = report["traffic_per_node_per_day"]
            traffic["compressed_data_bytes"] = significant(
                traffic["raw_data_bytes"]
                * codec["bits_per_sample_learned"]
                / (8.0 * self.s.sample_bytes)
            )
        return report

    # --- pieces of a round ------------------------------------------------------------------

    def _inbox(self, in_dst, in_tag, store, n, rep_f):
        """One row per (node, update): the received updates' rows and selection keys
        (:func:`gossip.selection_keys`), sorted by node then tag; updates from the node itself
        or no longer stored dropped."""
        import numpy as np

        d = self.s.order
        order = np.lexsort((in_tag, in_dst))
        in_dst, in_tag = in_dst[order], in_tag[order]
        if in_dst.shape[0]:
            dup = np.zeros(in_dst.shape[0], bool)
            dup[1:] = (in_dst[1:] == in_dst[:-1]) & (in_tag[1:] == in_tag[:-1])
            keep = ~dup & (in_tag % n != in_dst)
            in_dst, in_tag = in_dst[keep], in_tag[keep]
        rows = np.zeros((in_dst.shape[0], d), np.int32)
        found = np.zeros(in_dst.shape[0], bool)
        rounds = in_tag // n
        for rr in np.unique(rounds).tolist():
            entry = store.get(rr)
            if entry is None:
                continue
            ids, sent, _, _ = entry
            sel = np.flatnonzero(rounds == rr)
            p = np.searchsorted(ids, in_tag[sel] % n)
            rows[sel] = sent[p]
            found[sel] = True
        in_dst, in_tag = in_dst[found], in_tag[found]
        return in_dst, in_tag, rows[found], gossip.selection_keys(in_dst, in_tag, self.s.seed)

    def _screen(self, W, X, pos, in_dst, rows):
        """Each receiver's own test of what it received: an update is kept unless applying it
        makes the receiver's error on its newest ``eval_samples`` more than
        ``1 + accept_tolerance`` times worse. Returns the mask of kept updates."""
        import numpy as np

        from qres.swarm import gossip

        s = self.s
        if in_dst.shape[0] == 0:
            return np.zeros(0, bool)
        xw = X[pos[in_dst]]
        kept, _, _ = gossip.screen(W[in_dst], xw, rows, s.order, s.eval_samples, s.accept_tolerance)
        return kept

    def _aggregate_all(self, sw, A, delta, in_dst, in_tag, rows, keys, n, rep_f) -> None:
        """Each awake node aggregates its own update (at weight 1) with its inbox (at most
        ``max_inbox`` updates, lowest selection key first), applies the result and logs the
        step."""
        import numpy as np

        from qres.robust.reputation import REP_ONE

        s = self.s
        starts = np.searchsorted(in_dst, A, side="left")
        ends = np.searchsorted(in_dst, A, side="right")
        rep_q = np.floor(rep_f * REP_ONE + 0.5).astype(np.int64)
        W, log = sw.W, sw.steps
        choose = self._input_chooser(sw)
        alone = []  # positions of the nodes that received nothing: they apply their own
        nodes, inputs, weights_of = [], [], []
        for j in range(A.shape[0]):
            i = int(A[j])
            a, b = int(starts[j]), int(ends[j])
            if a == b:
                alone.append(j)
                log.add(i, delta[j], rows[:0], None)
                continue
            idx = np.arange(a, b)
            if b - a > s.max_inbox:
                # the receiver's keyed choice: no sender can steer what it takes
                idx = np.sort(idx[np.lexsort((in_tag[idx], keys[idx]))[: s.max_inbox]])
            x = np.concatenate([delta[j][None, :], rows[idx]])
            weights = None
            if self.pass_reputation:
                # a node trusts its own update fully (as the real node does); its own
                # reputation is what others think of it
                weights = np.concatenate([[REP_ONE], rep_q[in_tag[idx] % n]])
                if not weights.any():
                    weights = None
            if choose is not None and sw.byz[i]:
                idx, weights = choose(i, idx, in_tag[idx] % n, weights)
                if idx.shape[0] == 0:
                    alone.append(j)
                    log.add(i, delta[j], rows[:0], None)
                    continue
                x = np.concatenate([delta[j][None, :], rows[idx]])
            log.add(i, delta[j], x[1:], weights, in_tag[idx])
            if choose is not None and sw.byz[i] and self.pass_reputation:
                rule = np.concatenate([[REP_ONE], rep_q[in_tag[idx] % n]])
                if not np.array_equal(rule, weights):
                    log.misweighted(i)
            nodes.append(i)
            inputs.append(x)
            weights_of.append(weights)
        # Each node's aggregate depends only on its own inputs: all of them at once (a rule
        # with a batch path computes them across nodes, the same bits), then applied.
        if alone:
            W[A[alone]] = sat_add(W[A[alone]], delta[alone])
            log.applied(A[alone], delta[alone])
        if nodes:
            ids = np.array(nodes, np.int64)
            steps = np.stack(self._robust_many(inputs, weights_of))
            W[ids] = sat_add(W[ids], steps)
            log.applied(ids, steps)

    def _input_chooser(self, sw):
        """The attack's choice of rows and weights for a Byzantine node's aggregate
        (:meth:`qres.kinds.attack.Attack.choose_inputs`), or None when the attack keeps the
        rules: a function ``(node, idx, origins, weights) -> (idx, weights)``."""
        import numpy as np

        from qres.kinds.attack import Attack, AttackContext

        attack = self.attack
        if attack is None or type(attack).choose_inputs is Attack.choose_inputs:
            return None
        if getattr(sw, "byz", None) is None:
            return None
        context = AttackContext(
            nodes=np.flatnonzero(sw.byz),
            audit_rate=self.s.audit_rate,
            check_rate=self.s.check_rate,
            receivers=self.s.fanout,
        )

        def choose(node, idx, origins, weights):
            got = attack.choose_inputs(origins, weights, rng=sw.rng["attack"], context=context)
            if got is None:
                return idx, weights
            keep, chosen = got
            keep = np.asarray(keep, bool)
            if not self.pass_reputation or chosen is None:
                return idx[keep], weights if weights is None else weights[np.r_[True, keep]]
            return idx[keep], np.asarray(chosen, np.int64)

        return choose

    def _robust_many(self, inputs, weights):
        """:meth:`_robust` of many nodes' inputs, batched where the rule can."""
        from qres.robust.combine import robust_aggregate_many

        return robust_aggregate_many(self.aggregator, inputs, self.s.assumed_byzantine, weights)

    def _replay_rule(self, rows, weights):
        """The aggregate an auditor recomputes for a logged step (the node's own rule)."""
        return self._robust(self.aggregator, rows, rows.shape[0], weights)

    def _robust(self, agg, x, m, weights):
        """Aggregate with ``f = assumed_byzantine x m`` (the rule shared with the real node)."""
        from qres.robust.combine import robust_aggregate

        return robust_aggregate(agg, x, self.s.assumed_byzantine, weights)

    def _audit(self, a_pos, W0, X, sent, residual, gain_claim, reg_a, calm, storm, to_q16):
        """Re-run the claimed training of the audited updates from the weights the node
        committed to, on the same window; True where update, residual and gain all match."""
        import numpy as np

        ok = np.zeros(a_pos.shape[0], bool)
        for mask, ts in ((reg_a[a_pos] != STORM, calm), (reg_a[a_pos] == STORM, storm)):
            if not mask.any():
                continue
            p = a_pos[mask]
            u, res, gain = self._rerun(W0[p], X[p], ts, to_q16)
            same = (u == sent[p]).all(axis=1) & (res == residual[p]) & (gain == gain_claim[p])
            ok[np.flatnonzero(mask)] = same
        return ok

    def _rerun(self, w, x, ts, to_q16) -> tuple[Any, Any, Any]:
        """The training of ``w`` on ``x`` with ``ts`` and its honest claims (update, residual,
        gain): looked up where this round trained from exactly these inputs
        (:attr:`trained`), re-run for real everywhere else."""
        import numpy as np

        from qres.learning import task as learning

        hit, u, res, gain = self.trained.lookup(w, x, ts)
        miss = np.flatnonzero(~hit)
        if miss.shape[0]:
            wm, xm, d = w[miss], x[miss], self.s.order
            um = learning.local_update(wm, xm, ts)
            e0 = learning.prediction_error(wm, xm, d)
            e1 = learning.prediction_error(sat_add(wm, um), xm, d)
            u[miss] = um
            res[miss] = [to_q16(v) for v in e0.tolist()]
            gain[miss] = res[miss] - np.array([to_q16(v) for v in e1.tolist()], np.int64)
        return u, res, gain


def _claims(W0: Any, X: Any, delta: Any, err0: Any, d: int) -> tuple[Any, Any]:
    """The residual error and accuracy gain a node claims for its update (Q16.16 int64)."""
    import numpy as np

    from qres.learning import task as learning
    from qres.trust.audit import to_q16

    new = sat_add(W0, delta)
    err1 = learning.prediction_error(new, X, d)
    residual = np.array([to_q16(v) for v in err0.tolist()], np.int64)
    gain = residual - np.array([to_q16(v) for v in err1.tolist()], np.int64)
    return residual, gain


class _Recorder:
    """Writes the round's update packets, really signed, committed and proved (inline
    proofs, for offline audit with ``qres audit``), and the audit responses auditors got, each
    followed by the evidence of the round step its packet commits to, to a QRPS stream
    (:mod:`qres.trust.packet`). Each packet carries the digest of its node's real round-step
    record (:mod:`qres.trust.roundstep`), built from the node's closed chain
    (:class:`qres.swarm.steps.StepLog`) and the hashes of the recorded packets it took. Keys
    come from the seed and the node id, the blindings and nonces from a generator seeded by
    the seed: a recording is reproducible."""

    def __init__(self, out: Any, n: int, seed: int):
        import hashlib

        import numpy as np

        from qres.trust import packet as pk
        from qres.trust.identity import Identity

        self.writer = pk.StreamWriter(out)
        self.n = n
        self.ids = [
            Identity.from_seed(
                hashlib.blake2b(f"qres-swarm/{seed}/{i}".encode(), digest_size=32).digest()
            )
            for i in range(n)
        ]
        self.rng = np.random.default_rng([seed, 0x4EC0])
        self.responses: dict[int, Any] = {}
        self.evidence: dict[int, bytes] = {}
        self.steps: dict[int, tuple[bytes, bytes]] = {}  # node -> (digest, evidence) to sign
        self.last: dict[int, tuple[bytes, bytes]] = {}  # node -> (its last packet, blinding)
        self.sent: dict[tuple[int, int], bytes] = {}  # (round, node) -> the packet's bytes

    def randbytes(self, k: int) -> bytes:
        """Deterministic random bytes for blindings and proof nonces."""
        return self.rng.bytes(k)

    def steps_of(self, r: int, senders: Any, log: Any) -> None:
        """The round steps this round's senders commit to (their chains, just closed)."""
        from qres.trust import packet as pk
        from qres.trust import roundstep as rs

        for node in senders.tolist():
            start, chain = log.closed[node]
            meta = log.closed_meta[node]
            previous = self.last.get(node)
            if previous is None and not chain:
                continue  # a genesis base nothing has moved: the genesis digest
            subs, inputs = [], {}
            for (own, _rows, weights), (rnd, tags) in zip(chain, meta, strict=True):
                tags = [] if tags is None else tags.tolist()
                packets = [self.sent[(t // self.n, t % self.n)] for t in tags]
                hashes = [pk.packet_hash(p) for p in packets]
                inputs.update(zip(hashes, packets, strict=True))
                if weights is None:
                    subs.append(rs.SubStep(rnd, own, hashes, [0] * len(hashes)))
                else:
                    w = [int(v) for v in weights]
                    subs.append(rs.SubStep(rnd, own, hashes, w[1:], w[0], True))
            record = rs.RoundStep(
                self.ids[node].public_key,
                r,
                rs.NO_PREVIOUS if previous is None else pk.packet_hash(previous[0]),
                bytes(32) if previous is None else previous[1],
                start,
                subs,
            ).encode()
            evidence = rs.StepEvidence(
                record, None if previous is None else previous[0], list(inputs.values())
            )
            self.steps[node] = (rs.step_digest(record), evidence.encode())

    def prune(self, r: int, max_age: int) -> None:
        """Forget packets no open chain can name any more (a chain covers at most 64
        rounds, and takes packets at most ``max_age`` rounds old)."""
        from qres.trust.roundstep import MAX_SUBSTEPS

        oldest = r - MAX_SUBSTEPS - max_age - 1
        for key in [k for k in self.sent if k[0] < oldest]:
            del self.sent[key]

    def packets(self, r, senders, senders_pos, W0, sent, residual, gain) -> None:
        """Sign, commit and record every update sent in round ``r``."""
        from qres.trust import audit
        from qres.trust import packet as pk

        self.responses, self.evidence = {}, {}
        for node, p in zip(senders.tolist(), senders_pos.tolist(), strict=True):
            claim = audit.Claim(tuple(sent[p].tolist()), int(residual[p]), int(gain[p]))
            step, evidence = self.steps.pop(node, (pk.GENESIS_STEP, b""))
            packet, response = audit.prepare(
                self.ids[node],
                r,
                self.randbytes(16),
                W0[p].tolist(),
                claim,
                randbytes=self.randbytes,
                inline_proof=True,
                step=step,
            )
            data = packet.encode()
            self.writer.write(data, pk.RECORD_PACKET)
            self.responses[node] = response
            self.evidence[node] = evidence
            self.last[node] = (data, response.blinding)
            self.sent[(r, node)] = data

    def audits(self, nodes) -> None:
        """Record the audit responses of the audited senders of this round, each followed
        by its round step's evidence (none for a genesis base)."""
        from qres.trust import packet as pk

        for node in nodes.tolist():
            if node in self.responses:
                self.writer.write_audit(self.responses[node])
                if self.evidence.get(node):
                    self.writer.write(self.evidence[node], pk.RECORD_STEP)
