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
   every honest update of the round) and claim the round's highest priority.
3. *Gossip.* A node sends when ``entropy x reputation > cost x bias(regime)`` (cost: the
   radio energy of the packets over the energy of one wake), to ``fanout`` random peers
   through the transport plugin (seeded loss and delay); receivers forward by epidemic
   rules (:mod:`qres.swarm.gossip`). Packets from senders whose ban a node knows are
   dropped on arrival. Every byte sent is counted.
4. *Consensus.* Each awake node aggregates its own update and up to ``max_inbox`` received
   ones (highest priority first) with the profile's aggregator, ``f`` = ``assumed_byzantine``
   of the rows, and applies the result.
5. *Defence* (:mod:`qres.swarm.reputation`): Grubbs outliers, coordinated groups, stochastic
   audits that re-run the claimed training, rewards, penalties and bans.
6. *Energy.* Each node pays for its wakes and airtime and harvests.

Determinism: one seed feeds named numpy generators (data, peers, attack, audits, transport);
nodes are visited in id order; every model update is integer arithmetic. The same seed and
profile give the same report bytes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import attrs

from qres.kernel.errors import QresError
from qres.swarm.regimes import NAMES, STORM
from qres.swarm.settings import DAY_S, SwarmSettings


def _r(value: float, digits: int = 9) -> float:
    """A float rounded to ``digits`` significant digits, for a stable report."""
    if value == 0 or not math.isfinite(value):
        return float(value) if math.isfinite(value) else None  # type: ignore[return-value]
    return float(f"{value:.{digits}g}")


#: Largest swarm ``record`` accepts: every packet is really signed, committed and proved.
MAX_RECORD_NODES = 1000


@attrs.frozen
class RoundStats:
    """What one round looked like (the live view shows it; the report keeps it)."""

    round: int
    honest_error: float
    active: int
    senders: int
    banned_honest: int
    banned_byzantine: int
    regimes: dict
    bytes_sent: int
    rep_honest: float
    rep_byzantine: float
    energy_level: float


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
        raise QresError(
            f"swarm settings: --{exc.name.replace('_', '-')}: bad value {exc.value!r}; "
            f"allowed: {exc.allowed}"
        ) from exc


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
        self.record = record
        swarm = profile.data.get("swarm", {})
        if "aggregator" in swarm:
            self.aggregator = profile.build("swarm", "aggregator")
        else:
            self.aggregator = plugins.create(
                "aggregator", {"use": "adaptive"}, Location(str(profile.path)).child("swarm")
            )
        table = dict(swarm.get("transport", {"use": "inproc"}))
        table.setdefault("seed", settings.seed % (1 << 64))
        table.setdefault("max_payload", 1 << 20)
        table.setdefault("queue_limit", 4 * settings.max_inbox)
        self.transport = plugins.create("transport", table, profile.where("swarm", "transport"))
        if not hasattr(self.transport, "send_batch"):
            raise QresError(
                f"{profile.where('swarm', 'transport')}: transport "
                f"{self.transport.name!r} has no batch mode; the simulator needs 'inproc'"
            )
        self.attack = None
        if not attack_free:
            if attack:
                self.attack = plugins.create("attack", {"use": attack}, Location("--attack"))
            elif "attack" in swarm:
                self.attack = profile.build("swarm", "attack")
        self.hardware = profile.build("hardware") if "hardware" in profile.data else None
        # Reputation-type rules read the weights argument as reputations (Q16.16 in [0, 1]).
        from qres.kinds.aggregator import Aggregator

        agg_cls = type(self.aggregator)
        self.pass_reputation = (
            agg_cls.takes_weights and agg_cls.prepare_weights is not Aggregator.prepare_weights
        )

    def run(self, on_round: Callable[[RoundStats], None] | None = None) -> dict:
        """Run every round; returns the report (plain data, see :mod:`qres.swarm.report`)."""
        import numpy as np

        from qres.learning import task as learning
        from qres.robust.aggregate import median_columns
        from qres.robust.evidence import grubbs_outliers, tightness, update_statistic
        from qres.robust.reputation import Ledger
        from qres.swarm import gossip
        from qres.swarm.coding import CodecMeter
        from qres.swarm.data import open_data
        from qres.swarm.energy import EnergyModel
        from qres.swarm.regimes import RegimeTracker
        from qres.swarm.settings import reputation_rules
        from qres.trust.audit import to_q16

        s = self.s
        n, d = s.nodes, s.order
        seed = s.seed
        data = open_data(s, seed)
        rng_setup = np.random.default_rng([seed, 0x5E7])
        rng_peers = np.random.default_rng([seed, 0x9EE2])
        rng_attack = np.random.default_rng([seed, 0xA77A])
        rng_audit = np.random.default_rng([seed, 0xA0D1])
        rng_tight = np.random.default_rng([seed, 0x71687])

        n_byz = int(math.floor(s.byzantine * n + 0.5))
        byz = np.zeros(n, bool)
        byz[np.sort(rng_setup.permutation(n)[:n_byz])] = True
        honest = ~byz
        joining = np.zeros(n, bool)
        n_join = int(math.floor(s.join_fraction * np.count_nonzero(honest)))
        if n_join:
            joining[rng_setup.choice(np.flatnonzero(honest), n_join, replace=False)] = True
        join_round = s.join_round or s.rounds // 2
        alive = ~joining

        W = np.zeros((n, d), np.int32)
        span_range = np.zeros(n)  # peak-to-peak of each node's first window
        ledger = Ledger(n, reputation_rules(s, n))
        regimes = RegimeTracker(n, s)
        energy = EnergyModel(n, s, self.hardware)
        calm_train = learning.TrainSettings(order=d, window=s.window, lr=s.lr)
        storm_train = learning.TrainSettings(order=d, window=s.window, lr=s.storm_lr)
        pkt = gossip.packet_bytes(d)
        audit_bytes = gossip.audit_response_bytes(d)
        bias = np.array([s.gossip_bias_calm, s.gossip_bias_prestorm, s.gossip_bias_storm])
        transport = self.transport
        wake_j = energy.wake_energy_j()
        gossip_j = pkt * s.fanout * 8.0 / s.link_bps * energy.radio_active / 1000.0
        cost = gossip_j / wake_j if wake_j > 0 else 0.0

        # Updates sent in recent rounds, by round: (origins, rows, residual, claimed gain).
        store: dict[int, tuple[Any, Any, Any, Any]] = {}
        pending_dst = np.zeros(0, np.int64)  # messages waiting for a sleeping node
        pending_tag = np.zeros(0, np.int64)

        rec: dict[str, list] = {
            k: []
            for k in (
                "honest_error",
                "byzantine_error",
                "active",
                "senders",
                "bytes",
                "rep_honest",
                "rep_byzantine",
                "energy_level",
                "radio_sleep",
                "regimes",
                "storm_truth",
                "banned_honest",
                "banned_byzantine",
            )
        }
        bytes_by_kind = {"updates": 0, "forwards": 0, "audits": 0, "bans": 0}
        audits = {"audited": 0, "failed": 0, "failed_honest": 0, "failed_byzantine": 0}
        flagged_totals = {
            "grubbs_honest": 0,
            "grubbs_byzantine": 0,
            "suspect_honest": 0,
            "suspect_byzantine": 0,
        }
        false_alarm = {"calm_node_rounds": 0, "alarm_node_rounds": 0}
        screened = {"received": 0, "rejected_honest": 0, "rejected_byzantine": 0}
        ban_causes = dict.fromkeys(
            ("group_honest", "group_byzantine", "reputation_honest", "reputation_byzantine"), 0
        )
        detect_delay: list[int] = []
        storm_onset_seen = np.full(n, -1, np.int64)
        isolated_round = None
        regime_node_rounds = dict.fromkeys(NAMES, 0)
        tx = np.zeros(n, np.int64)
        rx = np.zeros(n, np.int64)

        def send(src, dst, size, tags, kind):
            kept = transport.send_batch(src, dst, np.full(src.shape[0], size, np.int64), tags)
            np.add.at(tx, src, size)
            bytes_by_kind[kind] += int(size) * int(src.shape[0])
            return kept

        recorder = _Recorder(self.record, n, seed) if self.record is not None else None
        meter = CodecMeter(s, self.profile)

        for r in range(s.rounds):
            tx[:] = 0
            rx[:] = 0
            # 1. join and wake
            if n_join and r == join_round:
                base = alive & ~ledger.banned()
                consensus = median_columns(W[base]) if base.any() else np.zeros(d, np.int32)
                W[joining] = consensus
                alive = alive | joining
            rep_f = ledger.fraction()
            wakes = energy.wakes(r, regimes.regime, rep_f, alive)
            active = wakes > 0
            A = np.flatnonzero(active)
            known_banned = ledger.banned_known(r)
            truth = data.storm_truth(r)
            if A.shape[0] == 0:
                radio_on = energy.spend(wakes, tx, rx)
                self._record(
                    rec, r, np.nan, np.nan, 0, 0, ledger, byz, regimes, energy, radio_on, truth, 0
                )
                transport.advance(1)
                continue
            # 2. observe and learn
            X = data.windows(r, A)
            fresh = span_range[A] == 0
            if fresh.any():
                ptp = (X[fresh].max(axis=1) - X[fresh].min(axis=1)).astype(np.float64)
                span_range[A[fresh]] = np.maximum(ptp, 1.0)
            W0 = W[A]
            err0 = learning.prediction_error(W0, X, d)
            entropy = np.minimum(err0 * learning.SPAN / span_range[A], 1.0)
            regimes.observe(A, entropy)
            regimes.force_calm(energy.low() & active)
            reg_a = regimes.regime[A]
            in_storm = reg_a == STORM
            delta = np.empty((A.shape[0], d), np.int32)
            for mask, ts in ((~in_storm, calm_train), (in_storm, storm_train)):
                if mask.any():
                    delta[mask] = learning.local_update(W0[mask], X[mask], ts)
            err1 = learning.prediction_error(
                np.clip(W0.astype(np.int64) + delta, -(1 << 31), (1 << 31) - 1).astype(np.int32),
                X,
                d,
            )
            residual = np.array([to_q16(v) for v in err0.tolist()], np.int64)
            gain_claim = residual - np.array([to_q16(v) for v in err1.tolist()], np.int64)
            sent = delta.copy()
            byz_a = byz[A]
            hon_a = ~byz_a
            # each honest node codes what it observed with the model it held (its codec)
            meter.add(A[hon_a], W0[hon_a], X[hon_a])
            if self.attack is not None and byz_a.any() and hon_a.any():
                sent[byz_a] = self.attack.forge(delta[hon_a], int(byz_a.sum()), rng=rng_attack)
                residual_b = residual.copy()
                residual_b[byz_a] = residual[hon_a].max()
                gain_b = gain_claim.copy()
                gain_b[byz_a] = max(int(gain_claim[hon_a].max()), 1)
                residual, gain_claim = residual_b, gain_b
            # 3. gossip
            rep_a = rep_f[A]
            wants = entropy * rep_a > cost * bias[reg_a]
            # Byzantine nodes ignore the energy rule; honest nodes that know they are banned
            # stay quiet.
            senders_pos = np.flatnonzero((wants | byz_a) & ~(known_banned[A] & hon_a))
            senders = A[senders_pos]
            pos = np.full(n, -1, np.int64)
            pos[A] = np.arange(A.shape[0])
            store[r] = (A, sent, residual, gain_claim)
            if recorder is not None:
                recorder.packets(r, senders, senders_pos, W0, sent, residual, gain_claim)
            for old in [k for k in store if k < r - s.max_age]:
                del store[old]
            alive_ids = np.flatnonzero(alive)
            src, dst = gossip.random_peers(senders, alive_ids, s.fanout, rng_peers)
            send(src, dst, pkt, r * n + src, "updates")
            got_dst: list[Any] = []
            got_tag: list[Any] = []
            seen_keys = np.zeros(0, np.int64)
            gain_sum = np.zeros(n)
            gain_cnt = np.zeros(n, np.int64)
            for hop in range(s.hops + 1):
                m_src, m_dst, m_size, m_tag, _ = transport.receive_batch()
                np.add.at(rx, m_dst, m_size)
                # control messages (tag -1) delayed from earlier rounds carry no update
                origin = m_tag % n
                ok = (m_tag >= 0) & ~known_banned[origin]  # verifier drops known-banned senders
                m_dst, m_tag, origin = m_dst[ok], m_tag[ok], origin[ok]
                got_dst.append(m_dst)
                got_tag.append(m_tag)
                if hop == s.hops or s.forward_budget == 0:
                    break
                # forwarding: fresh updates received by awake nodes, once per (node, update)
                cand = active[m_dst] & (m_tag // n == r)
                key = m_dst * (n * (r + 1)) + m_tag
                cand &= ~np.isin(key, seen_keys)
                c_dst, c_tag, c_org = m_dst[cand], m_tag[cand], origin[cand]
                c_key = key[cand]
                c_key, first = np.unique(c_key, return_index=True)
                c_dst, c_tag, c_org = c_dst[first], c_tag[first], c_org[first]
                seen_keys = np.union1d(seen_keys, c_key)
                if c_dst.shape[0] == 0:
                    break
                base_w = W[c_dst].astype(np.int64)
                upd = sent[pos[c_org]].astype(np.int64)
                tried = np.clip(base_w + upd, -(1 << 31), (1 << 31) - 1)
                xw = X[pos[c_dst]]
                before = gossip.window_errors(base_w, xw, d, s.eval_samples)
                after = gossip.window_errors(tried, xw, d, s.eval_samples)
                gain = (before - after) / learning.SPAN
                np.add.at(gain_sum, c_org, gain)
                np.add.at(gain_cnt, c_org, 1)
                prio = (residual[pos[c_org]] / 65536.0) * gain * rep_f[c_org]
                fwd = gain > s.forward_threshold
                f_dst, f_tag, f_prio = c_dst[fwd], c_tag[fwd], prio[fwd]
                # top forward_budget per node by priority (ties: lower tag first)
                order = np.lexsort((f_tag, -f_prio, f_dst))
                f_dst, f_tag = f_dst[order], f_tag[order]
                first_of = np.searchsorted(f_dst, f_dst, side="left")
                keep = (np.arange(f_dst.shape[0]) - first_of) < s.forward_budget
                f_dst, f_tag = f_dst[keep], f_tag[keep]
                if f_dst.shape[0] == 0:
                    break
                fsrc, fdst = gossip.random_peers(f_dst, alive_ids, s.fanout, rng_peers)
                ftag = np.repeat(f_tag, s.fanout)
                send(fsrc, fdst, pkt, ftag, "forwards")
            in_dst = np.concatenate([pending_dst, *got_dst])
            in_tag = np.concatenate([pending_tag, *got_tag])
            # stale or banned-origin messages are discarded; sleeping nodes keep theirs
            fresh_msg = (in_tag // n >= r - s.max_age) & ~known_banned[in_tag % n]
            in_dst, in_tag = in_dst[fresh_msg], in_tag[fresh_msg]
            waiting = ~active[in_dst]
            pending_dst, pending_tag = in_dst[waiting], in_tag[waiting]
            in_dst, in_tag = in_dst[~waiting], in_tag[~waiting]
            # 4. consensus: each node screens what it received on its own data, then
            # aggregates
            in_dst, in_tag, in_rows, in_prio = self._inbox(in_dst, in_tag, store, n, rep_f)
            kept = self._screen(W, X, pos, in_dst, in_rows)
            screened["received"] += int(in_dst.shape[0])
            screened["rejected_honest"] += int(np.count_nonzero(~kept & honest[in_tag % n]))
            screened["rejected_byzantine"] += int(np.count_nonzero(~kept & byz[in_tag % n]))
            self._aggregate_all(
                W, A, delta, in_dst[kept], in_tag[kept], in_rows[kept], in_prio[kept], n, rep_f
            )
            # 5. defence, on the updates sent this round by senders not known to be banned
            s_ok = senders_pos[~known_banned[senders]]
            new_bans = []
            audited_ok = np.zeros(n, bool)
            flagged = np.zeros(n, bool)
            if s_ok.shape[0] >= 3:
                rows = sent[s_ok]
                ids = A[s_ok]
                stat = update_statistic(rows)
                out = ids[grubbs_outliers(stat, s.grubbs_alpha, max_outliers=len(ids) // 2)]
                ledger.adjust(out, -ledger.pen_outlier)
                flagged_totals["grubbs_honest"] += int(np.count_nonzero(honest[out]))
                flagged_totals["grubbs_byzantine"] += int(np.count_nonzero(byz[out]))
                # Coordination is judged against every packet seen this round, those of
                # banned senders included: a cartel member still matches its banned fellows.
                all_rows = sent[senders_pos]
                k = min(s.suspect_group_size - 1, all_rows.shape[0] - 1)
                t_all = tightness(all_rows, max(k, 1), rng_tight)
                flagged[senders[t_all < s.suspect_tightness]] = True
                tight = flagged[ids]
                # a looser closeness only draws audits: audits, not statistics, convict
                watched = np.zeros(n, bool)
                watched[senders[t_all < s.audit_tightness]] = True
                ledger.adjust(ids[tight], -ledger.pen_suspect)
                flagged_totals["suspect_honest"] += int(np.count_nonzero(honest[ids[tight]]))
                flagged_totals["suspect_byzantine"] += int(np.count_nonzero(byz[ids[tight]]))
                # audits: stochastic, storm rate for storm senders, raised for suspects
                p = np.where(reg_a[s_ok] == STORM, s.audit_rate_storm, s.audit_rate)
                p = np.where(watched[ids], np.maximum(p, s.audit_suspect_rate), p)
                picked = rng_audit.random(s_ok.shape[0]) < p
                a_pos = s_ok[picked]
                if a_pos.shape[0]:
                    ok_rows = self._audit(
                        a_pos,
                        W0,
                        X,
                        sent,
                        residual,
                        gain_claim,
                        reg_a,
                        calm_train,
                        storm_train,
                        to_q16,
                    )
                    a_ids = A[a_pos]
                    audits["audited"] += int(a_ids.shape[0])
                    failed = a_ids[~ok_rows]
                    audits["failed"] += int(failed.shape[0])
                    audits["failed_honest"] += int(np.count_nonzero(honest[failed]))
                    audits["failed_byzantine"] += int(np.count_nonzero(byz[failed]))
                    ledger.adjust(failed, -ledger.pen_audit)
                    audited_ok[a_ids[ok_rows]] = True
                    if recorder is not None:
                        recorder.audits(a_ids)
                    # request to the sender, response back (to one auditor: a random peer)
                    a_src, a_dst = gossip.random_peers(a_ids, alive_ids, 1, rng_peers)
                    send(
                        a_dst,
                        a_src,
                        gossip.AUDIT_REQUEST_BYTES,
                        np.full(a_ids.shape[0], -1),
                        "audits",
                    )
                    send(a_src, a_dst, audit_bytes, np.full(a_ids.shape[0], -1), "audits")
                # rewards: inliers not suspected whose receivers measured a gain
                useful = np.zeros(n, bool)
                measured = gain_cnt[ids] > 0
                useful[ids[measured & (gain_sum[ids] > 0)]] = True
                useful[out] = False
                useful[ids[tight]] = False
                ledger.adjust(np.flatnonzero(useful & ~ledger.banned()), ledger.reward)
            group_bans = ledger.suspects(flagged, audited_ok, r, int(senders.shape[0]))
            low_bans = ledger.ban_low(r)
            for cause, ids_ in (("group", group_bans), ("reputation", low_bans)):
                ban_causes[cause + "_honest"] += int(np.count_nonzero(honest[ids_]))
                ban_causes[cause + "_byzantine"] += int(np.count_nonzero(byz[ids_]))
            new_bans += [group_bans, low_bans]
            banned_now = np.concatenate(new_bans)
            if banned_now.shape[0]:
                # one ban notice per round, flooded: every alive node forwards it once
                size = gossip.BAN_NOTICE_BASE_BYTES + gossip.BAN_NOTICE_PER_NODE_BYTES * int(
                    banned_now.shape[0]
                )
                b_src, b_dst = gossip.random_peers(alive_ids, alive_ids, s.fanout, rng_peers)
                send(b_src, b_dst, size, np.full(b_src.shape[0], -1), "bans")
            # the control messages (audits, bans) arrive like the rest; nothing aggregates them
            c_src, c_dst, c_size, _, _ = transport.receive_batch()
            np.add.at(rx, c_dst, c_size)
            # 6. energy
            radio_on = energy.spend(wakes, tx, rx)
            transport.advance(1)
            # records
            hon_err = float(err0[hon_a].mean()) if hon_a.any() else float("nan")
            byz_err = float(err0[byz_a].mean()) if byz_a.any() else float("nan")
            self._record(
                rec,
                r,
                hon_err,
                byz_err,
                int(A.shape[0]),
                int(senders.shape[0]),
                ledger,
                byz,
                regimes,
                energy,
                radio_on,
                truth,
                int(tx.sum()),
            )
            for i, name in enumerate(NAMES):
                regime_node_rounds[name] += int(np.count_nonzero(reg_a == i))
            # regime detection against the scripted storm
            if truth.any() or data.kind == "generated":
                self._score_regimes(r, A, reg_a, truth, false_alarm, detect_delay, storm_onset_seen)
            known = ledger.banned_known(r + 1)
            if n_byz and isolated_round is None and known[byz].all():
                isolated_round = r + 1
            if on_round is not None:
                on_round(self._round_stats(r, rec, regimes, ledger, byz))

        report = self._report(
            rec,
            ledger,
            byz,
            honest,
            energy,
            transport,
            bytes_by_kind,
            audits,
            flagged_totals,
            false_alarm,
            detect_delay,
            isolated_round,
            regime_node_rounds,
            pkt,
            audit_bytes,
            n_byz,
            n_join,
            data,
            ban_causes,
            screened,
        )
        report["codec"] = codec = meter.report()
        if codec["samples"]:
            # what shipping each node's coded stream upstream costs, beside the raw stream
            traffic = report["traffic_per_node_per_day"]
            traffic["compressed_data_bytes"] = _r(
                traffic["raw_data_bytes"]
                * codec["bits_per_sample_learned"]
                / (8.0 * s.sample_bytes)
            )
        return report

    # --- pieces of a round ------------------------------------------------------------------

    def _inbox(self, in_dst, in_tag, store, n, rep_f):
        """One row per (node, update): the received updates' rows and claimed priorities,
        sorted by node then tag; updates from the node itself or no longer stored dropped."""
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
        prio = np.full(in_dst.shape[0], -1.0)
        found = np.zeros(in_dst.shape[0], bool)
        rounds = in_tag // n
        for rr in np.unique(rounds).tolist():
            entry = store.get(rr)
            if entry is None:
                continue
            ids, sent, residual, gain = entry
            sel = np.flatnonzero(rounds == rr)
            p = np.searchsorted(ids, in_tag[sel] % n)
            rows[sel] = sent[p]
            prio[sel] = (residual[p] / 65536.0) * (gain[p] / 65536.0) * rep_f[in_tag[sel] % n]
            found[sel] = True
        return in_dst[found], in_tag[found], rows[found], prio[found]

    def _screen(self, W, X, pos, in_dst, rows):
        """Each receiver's own test of what it received: an update is kept unless applying it
        makes the receiver's error on its newest ``eval_samples`` more than
        ``1 + accept_tolerance`` times worse. Returns the mask of kept updates."""
        import numpy as np

        from qres.swarm import gossip

        s = self.s
        if in_dst.shape[0] == 0:
            return np.zeros(0, bool)
        base = W[in_dst].astype(np.int64)
        xw = X[pos[in_dst]]
        before = gossip.window_errors(base, xw, s.order, s.eval_samples)
        tried = np.clip(base + rows, -(1 << 31), (1 << 31) - 1)
        after = gossip.window_errors(tried, xw, s.order, s.eval_samples)
        return after <= before * (1.0 + s.accept_tolerance) + 1.0

    def _aggregate_all(self, W, A, delta, in_dst, in_tag, rows, prio, n, rep_f) -> None:
        """Each awake node aggregates its own update with its inbox (at most ``max_inbox``
        updates, highest claimed priority first) and applies the result."""
        import numpy as np

        from qres.robust.reputation import REP_ONE

        s = self.s
        starts = np.searchsorted(in_dst, A, side="left")
        ends = np.searchsorted(in_dst, A, side="right")
        rep_q = np.floor(rep_f * REP_ONE + 0.5).astype(np.int64)
        agg = self.aggregator
        for j in range(A.shape[0]):
            i = int(A[j])
            a, b = int(starts[j]), int(ends[j])
            if a == b:
                update = delta[j]
            else:
                idx = np.arange(a, b)
                if b - a > s.max_inbox:
                    idx = np.sort(idx[np.lexsort((in_tag[idx], -prio[idx]))[: s.max_inbox]])
                x = np.concatenate([delta[j][None, :], rows[idx]])
                weights = None
                if self.pass_reputation:
                    weights = rep_q[np.concatenate([[i], in_tag[idx] % n])]
                    if not weights.any():
                        weights = None
                update = self._robust(agg, x, x.shape[0], weights)
            W[i] = np.clip(W[i].astype(np.int64) + update, -(1 << 31), (1 << 31) - 1)

    def _robust(self, agg, x, m, weights):
        """Aggregate with ``f = assumed_byzantine x m`` (lowered until the rule accepts it)."""
        f = min(int(self.s.assumed_byzantine * m), (m - 1) // 2)
        while True:
            try:
                return agg.aggregate(x, f=f, weights=weights)
            except QresError:
                if f == 0:
                    return x[0]
                f -= 1

    def _audit(self, a_pos, W0, X, sent, residual, gain_claim, reg_a, calm, storm, to_q16):
        """Re-run the claimed training of the audited updates from the weights the node
        committed to, on the same window; True where update, residual and gain all match."""
        import numpy as np

        from qres.learning import task as learning

        d = self.s.order
        ok = np.zeros(a_pos.shape[0], bool)
        for mask, ts in ((reg_a[a_pos] != STORM, calm), (reg_a[a_pos] == STORM, storm)):
            if not mask.any():
                continue
            p = a_pos[mask]
            w = W0[p]
            u = learning.local_update(w, X[p], ts)
            e0 = learning.prediction_error(w, X[p], d)
            new = np.clip(w.astype(np.int64) + u, -(1 << 31), (1 << 31) - 1).astype(np.int32)
            e1 = learning.prediction_error(new, X[p], d)
            res = np.array([to_q16(v) for v in e0.tolist()], np.int64)
            gain = res - np.array([to_q16(v) for v in e1.tolist()], np.int64)
            same = (u == sent[p]).all(axis=1) & (res == residual[p]) & (gain == gain_claim[p])
            ok[np.flatnonzero(mask)] = same
        return ok

    def _score_regimes(self, r, A, reg_a, truth, false_alarm, detect_delay, onset_seen):
        """False alarms (non-Calm while the truth is calm, outside the recovery tail) and the
        delay from storm onset to Storm."""
        import numpy as np

        s = self.s
        t_a = truth[A]
        # After the scripted storm ends, the detector is allowed its hysteresis: the rest of
        # the minimum storm and the recovery confirmations (plus the moving average's lag).
        end = s.storm_start + s.storm_rounds
        tail = max(s.storm_min_rounds - s.storm_rounds, 0) + s.confirm_calm + 3
        in_tail = s.storm_rounds > 0 and end <= r < end + tail
        calm_truth = ~t_a & ~in_tail
        false_alarm["calm_node_rounds"] += int(np.count_nonzero(calm_truth))
        false_alarm["alarm_node_rounds"] += int(np.count_nonzero(calm_truth & (reg_a != 0)))
        if s.storm_rounds and s.storm_start <= r < end:
            hit = A[t_a & (reg_a == STORM) & (onset_seen[A] < 0)]
            onset_seen[hit] = r
            detect_delay.extend([r - s.storm_start] * int(hit.shape[0]))

    def _record(
        self,
        rec,
        r,
        hon_err,
        byz_err,
        active,
        senders,
        ledger,
        byz,
        regimes,
        energy,
        radio_on,
        truth,
        sent_bytes,
    ) -> None:
        import numpy as np

        banned = ledger.banned()
        rep = ledger.fraction()
        rec["honest_error"].append(hon_err)
        rec["byzantine_error"].append(byz_err)
        rec["active"].append(active)
        rec["senders"].append(senders)
        rec["bytes"].append(sent_bytes)
        rec["rep_honest"].append(float(rep[~byz].mean()))
        rec["rep_byzantine"].append(float(rep[byz].mean()) if byz.any() else float("nan"))
        rec["energy_level"].append(float(energy.level().mean()))
        rec["radio_sleep"].append(1.0 - float(radio_on.mean()) / self.s.round_seconds)
        rec["regimes"].append(regimes.counts())
        rec["storm_truth"].append(int(np.count_nonzero(truth)))
        rec["banned_honest"].append(int(np.count_nonzero(banned & ~byz)))
        rec["banned_byzantine"].append(int(np.count_nonzero(banned & byz)))

    def _round_stats(self, r, rec, regimes, ledger, byz) -> RoundStats:
        return RoundStats(
            round=r,
            honest_error=rec["honest_error"][-1],
            active=rec["active"][-1],
            senders=rec["senders"][-1],
            banned_honest=rec["banned_honest"][-1],
            banned_byzantine=rec["banned_byzantine"][-1],
            regimes=rec["regimes"][-1],
            bytes_sent=int(sum(rec["bytes"])),
            rep_honest=rec["rep_honest"][-1],
            rep_byzantine=rec["rep_byzantine"][-1],
            energy_level=rec["energy_level"][-1],
        )

    def _report(
        self,
        rec,
        ledger,
        byz,
        honest,
        energy,
        transport,
        bytes_by_kind,
        audits,
        flagged_totals,
        false_alarm,
        detect_delay,
        isolated_round,
        regime_node_rounds,
        pkt,
        audit_bytes,
        n_byz,
        n_join,
        data,
        ban_causes,
        screened,
    ) -> dict:
        import numpy as np

        s = self.s
        n = s.nodes
        banned = ledger.banned()
        errs = [_r(v) for v in rec["honest_error"]]
        finite = [v for v in errs if v is not None]
        total_s = s.rounds * s.round_seconds
        days = total_s / DAY_S
        sent_total = int(sum(rec["bytes"]))
        radio_on_total = float(energy.radio_on_s.sum())
        sleep_fraction = 1.0 - radio_on_total / (n * total_s)
        spent = float(energy.spent_j.sum())
        always_on_j = energy.always_on_mw * total_s / 1000.0 * n
        per_node_day = sent_total / n / days
        calm = regime_node_rounds
        report = {
            "profile": self.profile.name,
            "seed": s.seed,
            "nodes": n,
            "byzantine_nodes": n_byz,
            "joined_mid_run": n_join,
            "attack": self.attack.name if self.attack is not None else None,
            "aggregator": self.aggregator.name,
            "rounds": s.rounds,
            "round_seconds": s.round_seconds,
            "weights": s.order,
            "data": data.kind if data.kind == "generated" else s.data,
            "partition": s.partition,
            "honest_error": errs,
            "final_honest_error": finite[-1] if finite else None,
            "banned_honest": int(np.count_nonzero(banned & honest)),
            "banned_byzantine": int(np.count_nonzero(banned & byz)),
            "byzantine_isolated_round": isolated_round,
            "bytes_sent": sent_total,
            "bytes_by_kind": bytes_by_kind,
            "packet_bytes": pkt,
            "audit_response_bytes": audit_bytes,
            "transport": transport.stats.to_dict(),
            "regime_rounds": calm,
            "regime_timeline": rec["regimes"],
            "sleep_fraction": _r(sleep_fraction),
            "energy": {
                "hardware": self.hardware.name if self.hardware is not None else None,
                "spent_j_per_node": _r(spent / n),
                "always_on_j_per_node": _r(always_on_j / n),
                "saving_vs_always_on": _r(always_on_j / spent) if spent > 0 else None,
                "average_mw_per_node": _r(spent / n / total_s * 1000.0),
                "final_level_mean": _r(float(energy.level().mean())),
                "level": [_r(v) for v in rec["energy_level"]],
            },
            "reputation": {
                "honest_mean": [_r(v) for v in rec["rep_honest"]],
                "byzantine_mean": [_r(v) for v in rec["rep_byzantine"]],
            },
            "banned_per_round": {
                "honest": rec["banned_honest"],
                "byzantine": rec["banned_byzantine"],
            },
            "audits": audits,
            "bans_by_cause": ban_causes,
            "screened_updates": screened,
            "flags": flagged_totals,
            "regime_detection": {
                "false_alarm_rate": _r(
                    false_alarm["alarm_node_rounds"] / max(false_alarm["calm_node_rounds"], 1)
                ),
                "calm_node_rounds": false_alarm["calm_node_rounds"],
                "detected_nodes": len(detect_delay),
                "storm_nodes": int(np.count_nonzero(getattr(data, "stormed", np.zeros(1)))),
                "detection_delay_max": max(detect_delay) if detect_delay else None,
                "detection_delay_mean": _r(sum(detect_delay) / len(detect_delay))
                if detect_delay
                else None,
            },
            "traffic_per_node_per_day": {
                "gossip_bytes": _r(per_node_day),
                "raw_data_bytes": _r(s.sample_rate_hz * s.sample_bytes * DAY_S),
                # federated learning at the same cadence: every time a node takes part, it
                # uploads its update and downloads the global model, d float32 each
                "float32_fl_bytes": _r(sum(rec["active"]) / n / days * 2 * 4 * s.order),
            },
            "active_per_round": rec["active"],
            "senders_per_round": rec["senders"],
            "bytes_per_round": rec["bytes"],
        }
        return report


class _Recorder:
    """Writes the round's update packets, really signed, committed and proved (inline
    proofs, for offline audit with ``qres audit``), and the audit responses auditors got, to
    a QRPS stream (:mod:`qres.trust.packet`). Keys come from the seed and the node id, the
    blindings and nonces from a generator seeded by the seed: a recording is reproducible."""

    def __init__(self, out: Any, n: int, seed: int):
        import hashlib

        import numpy as np

        from qres.trust import packet as pk
        from qres.trust.identity import Identity

        self.writer = pk.StreamWriter(out)
        self.ids = [
            Identity.from_seed(
                hashlib.blake2b(f"qres-swarm/{seed}/{i}".encode(), digest_size=32).digest()
            )
            for i in range(n)
        ]
        self.rng = np.random.default_rng([seed, 0x4EC0])
        self.responses: dict[int, Any] = {}

    def randbytes(self, k: int) -> bytes:
        """Deterministic random bytes for blindings and proof nonces."""
        return self.rng.bytes(k)

    def packets(self, r, senders, senders_pos, W0, sent, residual, gain) -> None:
        """Sign, commit and record every update sent in round ``r``."""
        from qres.trust import audit

        self.responses = {}
        for node, p in zip(senders.tolist(), senders_pos.tolist(), strict=True):
            claim = audit.Claim(tuple(sent[p].tolist()), int(residual[p]), int(gain[p]))
            packet, response = audit.prepare(
                self.ids[node],
                r,
                self.randbytes(16),
                W0[p].tolist(),
                claim,
                randbytes=self.randbytes,
                inline_proof=True,
            )
            self.writer.write_packet(packet)
            self.responses[node] = response

    def audits(self, nodes) -> None:
        """Record the audit responses of the audited senders of this round."""
        for node in nodes.tolist():
            if node in self.responses:
                self.writer.write_audit(self.responses[node])
