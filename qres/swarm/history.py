"""What a swarm run keeps: per-round series and run-wide counters, and the report built from
them (plain data; :mod:`qres.swarm.report` renders it).

:class:`History` is filled by :class:`qres.swarm.engine.Simulation` round by round (one
:meth:`History.record` per round, counters added by the phases) and turned into the report by
:func:`build_report` at the end.
"""

from __future__ import annotations

import math
from typing import Any

import attrs

from qres.swarm.regimes import NAMES, STORM
from qres.swarm.settings import DAY_S

#: The per-round series of the report, in the order they are recorded.
SERIES = (
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


def significant(value: float, digits: int = 9) -> float:
    """A float rounded to ``digits`` significant digits, for a stable report."""
    if value == 0 or not math.isfinite(value):
        return float(value) if math.isfinite(value) else None  # type: ignore[return-value]
    return float(f"{value:.{digits}g}")


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


@attrs.define
class RoundRecord:
    """One round's figures, as :meth:`History.record` stores them."""

    honest_error: float
    byzantine_error: float
    active: int
    senders: int
    bytes: int
    radio_on: Any  # seconds each node's radio was on


def _zeros(*keys: str) -> dict:
    return dict.fromkeys(keys, 0)


@attrs.define
class History:
    """Per-round series (``series``) and the run's counters."""

    n: int
    series: dict = attrs.field(factory=lambda: {k: [] for k in SERIES})
    bytes_by_kind: dict = attrs.field(
        factory=lambda: _zeros("updates", "forwards", "audits", "checks", "bans")
    )
    audits: dict = attrs.field(
        factory=lambda: _zeros(
            "audited",
            "checked",
            "failed",
            "failed_honest",
            "failed_byzantine",
            "wrong_step_honest",
            "wrong_step_byzantine",
        )
    )
    flags: dict = attrs.field(
        factory=lambda: _zeros(
            "grubbs_honest", "grubbs_byzantine", "suspect_honest", "suspect_byzantine"
        )
    )
    false_alarm: dict = attrs.field(factory=lambda: _zeros("calm_node_rounds", "alarm_node_rounds"))
    screened: dict = attrs.field(
        factory=lambda: _zeros("received", "rejected_honest", "rejected_byzantine")
    )
    ban_causes: dict = attrs.field(
        factory=lambda: _zeros(
            "audit_honest",
            "audit_byzantine",
            "group_honest",
            "group_byzantine",
            "reputation_honest",
            "reputation_byzantine",
        )
    )
    detect_delay: list = attrs.field(factory=list)
    regime_node_rounds: dict = attrs.field(factory=lambda: dict.fromkeys(NAMES, 0))
    isolated_round: int | None = None
    storm_onset_seen: Any = None

    def __attrs_post_init__(self) -> None:
        import numpy as np

        self.storm_onset_seen = np.full(self.n, -1, np.int64)

    def count(self, table: dict, prefix: str, nodes: Any, byz: Any) -> None:
        """Add how many of ``nodes`` are honest and Byzantine to ``table[prefix + '_...']``."""
        import numpy as np

        table[prefix + "_honest"] += int(np.count_nonzero(~byz[nodes]))
        table[prefix + "_byzantine"] += int(np.count_nonzero(byz[nodes]))

    def record(self, rec: RoundRecord, swarm: Any, truth: Any, round_seconds: float) -> None:
        """Append one round's figures and the swarm's state after it."""
        import numpy as np

        byz, ledger = swarm.byz, swarm.ledger
        banned = ledger.banned()
        rep = ledger.fraction()
        add = {k: v.append for k, v in self.series.items()}
        add["honest_error"](rec.honest_error)
        add["byzantine_error"](rec.byzantine_error)
        add["active"](rec.active)
        add["senders"](rec.senders)
        add["bytes"](rec.bytes)
        add["rep_honest"](float(rep[~byz].mean()))
        add["rep_byzantine"](float(rep[byz].mean()) if byz.any() else float("nan"))
        add["energy_level"](float(swarm.energy.level().mean()))
        add["radio_sleep"](1.0 - float(rec.radio_on.mean()) / round_seconds)
        add["regimes"](swarm.regimes.counts())
        add["storm_truth"](int(np.count_nonzero(truth)))
        add["banned_honest"](int(np.count_nonzero(banned & ~byz)))
        add["banned_byzantine"](int(np.count_nonzero(banned & byz)))

    def round_stats(self, r: int) -> RoundStats:
        """The live view of the round just recorded."""
        last = {k: v[-1] for k, v in self.series.items()}
        return RoundStats(
            round=r,
            honest_error=last["honest_error"],
            active=last["active"],
            senders=last["senders"],
            banned_honest=last["banned_honest"],
            banned_byzantine=last["banned_byzantine"],
            regimes=last["regimes"],
            bytes_sent=int(sum(self.series["bytes"])),
            rep_honest=last["rep_honest"],
            rep_byzantine=last["rep_byzantine"],
            energy_level=last["energy_level"],
        )

    def score_regimes(self, s: Any, r: int, A: Any, reg_a: Any, truth: Any) -> None:
        """False alarms (non-Calm while the truth is calm, outside the recovery tail) and the
        delay from storm onset to Storm."""
        import numpy as np

        t_a = truth[A]
        # After the scripted storm ends, the detector is allowed its hysteresis: the rest of
        # the minimum storm and the recovery confirmations (plus the moving average's lag).
        end = s.storm_start + s.storm_rounds
        tail = max(s.storm_min_rounds - s.storm_rounds, 0) + s.confirm_calm + 3
        in_tail = s.storm_rounds > 0 and end <= r < end + tail
        calm_truth = ~t_a & ~in_tail
        self.false_alarm["calm_node_rounds"] += int(np.count_nonzero(calm_truth))
        self.false_alarm["alarm_node_rounds"] += int(np.count_nonzero(calm_truth & (reg_a != 0)))
        if s.storm_rounds and s.storm_start <= r < end:
            onset = self.storm_onset_seen
            hit = A[t_a & (reg_a == STORM) & (onset[A] < 0)]
            onset[hit] = r
            self.detect_delay.extend([r - s.storm_start] * int(hit.shape[0]))


def build_report(sim: Any, swarm: Any, history: History) -> dict:
    """The report of a finished run (keys in docs/swarm.md)."""
    import numpy as np

    s = sim.s
    n = s.nodes
    ser = history.series
    banned = swarm.ledger.banned()
    errs = [significant(v) for v in ser["honest_error"]]
    finite = [v for v in errs if v is not None]
    total_s = s.rounds * s.round_seconds
    days = total_s / DAY_S
    sent_total = int(sum(ser["bytes"]))
    return {
        "profile": sim.profile.name,
        "seed": s.seed,
        "nodes": n,
        "byzantine_nodes": swarm.n_byz,
        "joined_mid_run": swarm.n_join,
        "attack": sim.attack.name if sim.attack is not None else None,
        "aggregator": sim.aggregator.name,
        "rounds": s.rounds,
        "round_seconds": s.round_seconds,
        "weights": s.order,
        "data": swarm.data.kind if swarm.data.kind == "generated" else s.data,
        "partition": s.partition,
        "honest_error": errs,
        "final_honest_error": finite[-1] if finite else None,
        "banned_honest": int(np.count_nonzero(banned & swarm.honest)),
        "banned_byzantine": int(np.count_nonzero(banned & swarm.byz)),
        "byzantine_isolated_round": history.isolated_round,
        "bytes_sent": sent_total,
        "bytes_by_kind": history.bytes_by_kind,
        "packet_bytes": swarm.pkt,
        "audit_response_bytes": swarm.audit_bytes,
        "transport": sim.transport.stats.to_dict(),
        "regime_rounds": history.regime_node_rounds,
        "regime_timeline": ser["regimes"],
        "sleep_fraction": significant(1.0 - float(swarm.energy.radio_on_s.sum()) / (n * total_s)),
        "energy": _energy_section(sim, swarm, history),
        "reputation": {
            "honest_mean": [significant(v) for v in ser["rep_honest"]],
            "byzantine_mean": [significant(v) for v in ser["rep_byzantine"]],
        },
        "banned_per_round": {"honest": ser["banned_honest"], "byzantine": ser["banned_byzantine"]},
        "audits": history.audits,
        "bans_by_cause": history.ban_causes,
        "screened_updates": history.screened,
        "flags": history.flags,
        "regime_detection": _detection_section(swarm, history),
        "traffic_per_node_per_day": {
            "gossip_bytes": significant(sent_total / n / days),
            "raw_data_bytes": significant(s.sample_rate_hz * s.sample_bytes * DAY_S),
            # federated learning at the same cadence: every time a node takes part, it
            # uploads its update and downloads the global model, d float32 each
            "float32_fl_bytes": significant(sum(ser["active"]) / n / days * 2 * 4 * s.order),
        },
        "active_per_round": ser["active"],
        "senders_per_round": ser["senders"],
        "bytes_per_round": ser["bytes"],
    }


def _energy_section(sim: Any, swarm: Any, history: History) -> dict:
    s, energy = sim.s, swarm.energy
    n = s.nodes
    total_s = s.rounds * s.round_seconds
    spent = float(energy.spent_j.sum())
    always_on_j = energy.always_on_mw * total_s / 1000.0 * n
    return {
        "hardware": sim.hardware.name if sim.hardware is not None else None,
        "spent_j_per_node": significant(spent / n),
        "always_on_j_per_node": significant(always_on_j / n),
        "saving_vs_always_on": significant(always_on_j / spent) if spent > 0 else None,
        "average_mw_per_node": significant(spent / n / total_s * 1000.0),
        "final_level_mean": significant(float(energy.level().mean())),
        "level": [significant(v) for v in history.series["energy_level"]],
    }


def _stormed(swarm: Any) -> Any:
    import numpy as np

    stormed = getattr(swarm.data, "stormed", None)
    return np.zeros(swarm.n, bool) if stormed is None else np.asarray(stormed, bool)


def _detection_section(swarm: Any, history: History) -> dict:
    import numpy as np

    fa, delay = history.false_alarm, history.detect_delay
    return {
        "false_alarm_rate": significant(fa["alarm_node_rounds"] / max(fa["calm_node_rounds"], 1)),
        "calm_node_rounds": fa["calm_node_rounds"],
        "detected_nodes": len(delay),
        # honest nodes only, as detection is scored (qres.swarm.engine)
        "storm_nodes": int(np.count_nonzero(_stormed(swarm) & swarm.honest)),
        "detection_delay_max": max(delay) if delay else None,
        "detection_delay_mean": significant(sum(delay) / len(delay)) if delay else None,
    }
