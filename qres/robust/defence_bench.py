"""``qres bench defence``: the red-team suite of the swarm's defence.

Every attack of :data:`ATTACKS` (the built-in ones and the adaptive ones of
``plugins/attacks/adaptive.py``, which watch the round, their reputations and the audit rate)
runs in the swarm simulator at each Byzantine fraction and seed, beside the attack-free run
of the same swarm (the same nodes, the Byzantine ones training honestly). Each cell reports:

* ``error_ratio``: the honest error (mean over ALL honest nodes, banned ones included, of
  the last ``tail`` rounds' errors) over the attack-free run's;
* ``honest_banned``: honest nodes banned (the target is 0: bans need attributable evidence);
* ``byzantine_banned``; ``faulted_unbanned``: nodes with a detected attributable fault (a
  failed audit or round-step check) that are not banned; ``committed_unbanned``: nodes that
  published a fault (a forged update or claim, a base that is not their step's replay),
  caught or not, and are not banned at the end of the run (the simulator's ground truth;
  the target for both is 0);
* at fractions of 45% and more, ``trimmed_ratio``: the honest error of the same attacked
  swarm with ``trimmed-mean`` as its aggregator, over the same attack-free run's error as
  ``error_ratio`` (so the two compare honest errors under the same attack; the target:
  ``error_ratio`` no worse). ``trimmed_own_ratio`` is it over the trimmed mean's own
  attack-free run.

The summary's cells give, per fraction and attack, the worst ratio over the seeds (what the
targets compare) and the mean over them (``mean_ratio``, ``mean_trimmed_ratio``).

numpy is imported inside the functions.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs

from qres.kernel.config import integer

#: The red team: the built-in attacks, then the adaptive ones.
ATTACKS = (
    "sign-flip",
    "ipm",
    "alie",
    "gaussian",
    "mimic",
    "extreme",
    "minmax",
    "drift",
    "sleeper",
    "framing",
    "noisy-cartel",
    "under-threshold",
    "targeted",
    "mixed",
    "audit-aware",
    "base-poison",
    "audit-aware-poison",
    "friends",
)
#: Targets: error ratio at or below 30% Byzantine.
ERROR_TARGET = 1.10


def _tuple(value):
    return tuple(value)


@attrs.frozen
class DefenceSettings:
    """What the suite runs."""

    profile: str = "swarm-100"
    nodes: int = attrs.field(default=60, validator=integer(4, 100_000))
    rounds: int = attrs.field(default=40, validator=integer(2, 100_000))
    fractions: tuple = attrs.field(default=(0.1, 0.3, 0.45), converter=_tuple)
    seeds: tuple = attrs.field(default=(0, 1, 2, 3, 4), converter=_tuple)
    attacks: tuple = attrs.field(default=ATTACKS, converter=_tuple)
    #: "generated", or a MANIFEST folder of recordings.
    data: str = "generated"
    partition: str = "non-iid"
    #: Rounds at the end whose honest errors are averaged.
    tail: int = attrs.field(default=5, validator=integer(1, 100_000))


def _honest_error(report: dict, tail: int) -> float:
    import math

    errs = [e for e in report["honest_error"] if e is not None and math.isfinite(e)]
    errs = errs[-tail:]
    return sum(errs) / len(errs) if errs else float("nan")


def _simulate(profile, settings, attack: str | None, aggregator: str | None = None):
    """One run: returns (report, simulation)."""
    from qres.swarm.engine import Simulation

    if aggregator is not None:
        profile = _with_aggregator(profile, aggregator)
    sim = Simulation(profile, settings, attack=attack, attack_free=attack is None)
    report = sim.run()
    return report, sim


def _with_aggregator(profile, name: str):
    """The profile with ``[swarm.aggregator] use = name``."""
    import copy

    data = copy.deepcopy(profile.data)
    data.setdefault("swarm", {})["aggregator"] = {"use": name}
    return attrs.evolve(profile, data=data)


def run(s: DefenceSettings, progress: Callable[[str], None] | None = None) -> dict:
    """Run the suite; returns the table (plain data) with the targets checked."""
    import attrs as _attrs

    from qres.kernel import profiles
    from qres.swarm.engine import settings_from_profile

    loaded = profiles.load(s.profile)
    rows: list[dict] = []
    for frac in s.fractions:
        for seed in s.seeds:
            base = settings_from_profile(
                loaded,
                nodes=s.nodes,
                rounds=s.rounds,
                byzantine=frac,
                seed=seed,
                data=s.data,
                partition=s.partition,
            )
            free, _ = _simulate(loaded, base, None)
            free_err = _honest_error(free, s.tail)
            free_tm = None  # the trimmed mean's own attack-free error, computed once
            for attack in s.attacks:
                if progress:
                    progress(f"byzantine {frac:.0%} seed {seed}: {attack}")
                rep, sim = _simulate(loaded, base, attack)
                err = _honest_error(rep, s.tail)
                row = {
                    "byzantine": frac,
                    "seed": seed,
                    "attack": attack,
                    "error_ratio": err / free_err,
                    "honest_banned": rep["banned_honest"],
                    "byzantine_banned": rep["banned_byzantine"],
                    "faulted_unbanned": int((sim.ledger.faulted & ~sim.ledger.banned()).sum()),
                    "committed_unbanned": int((sim.committed & ~sim.ledger.banned()).sum()),
                }
                if frac >= 0.45:
                    if free_tm is None:
                        tm_free, _ = _simulate(loaded, base, None, "trimmed-mean")
                        free_tm = _honest_error(tm_free, s.tail)
                    tm, _ = _simulate(loaded, base, attack, "trimmed-mean")
                    tm_err = _honest_error(tm, s.tail)
                    row["trimmed_ratio"] = tm_err / free_err
                    row["trimmed_own_ratio"] = tm_err / free_tm
                rows.append(row)
    return {"settings": _attrs.asdict(s), "rows": rows, "summary": summarise(rows)}


def summarise(rows: list[dict]) -> dict:
    """Per (fraction, attack): worst error ratio over seeds (and the mean over them: two
    different trajectories differ by a few percent from seed to seed, so the worst of a few
    seeds compares noise as much as rules), honest nodes banned (sum), faulted nodes left
    unbanned (sum); and whether the targets hold."""
    cells: dict = {}
    sums: dict = {}
    tsums: dict = {}
    counts: dict = {}
    for r in rows:
        key = f"{r['byzantine']:g}/{r['attack']}"
        c = cells.setdefault(
            key,
            {"byzantine": r["byzantine"], "attack": r["attack"], "worst_ratio": 0.0,
             "honest_banned": 0, "byzantine_banned": 0, "faulted_unbanned": 0,
             "committed_unbanned": 0},
        )  # fmt: skip
        c["worst_ratio"] = max(c["worst_ratio"], r["error_ratio"])
        sums[key] = sums.get(key, 0.0) + r["error_ratio"]
        counts[key] = counts.get(key, 0) + 1
        c["mean_ratio"] = sums[key] / counts[key]
        c["honest_banned"] += r["honest_banned"]
        c["byzantine_banned"] += r["byzantine_banned"]
        c["faulted_unbanned"] += r["faulted_unbanned"]
        c["committed_unbanned"] += r.get("committed_unbanned", 0)
        if "trimmed_ratio" in r:
            c["worst_trimmed_ratio"] = max(c.get("worst_trimmed_ratio", 0.0), r["trimmed_ratio"])
            tsums[key] = tsums.get(key, 0.0) + r["trimmed_ratio"]
            c["mean_trimmed_ratio"] = tsums[key] / counts[key]
    low = [c for c in cells.values() if c["byzantine"] <= 0.3]
    high = [c for c in cells.values() if c["byzantine"] > 0.3]
    targets = {
        "error_at_30": all(c["worst_ratio"] <= ERROR_TARGET for c in low),
        "no_honest_banned": all(c["honest_banned"] == 0 for c in cells.values()),
        "faults_banned": all(c["faulted_unbanned"] == 0 for c in cells.values()),
        "committed_banned": all(c["committed_unbanned"] == 0 for c in cells.values()),
        "not_worse_than_trimmed_at_45": all(
            c["worst_ratio"] <= c.get("worst_trimmed_ratio", float("inf")) for c in high
        ),
    }
    return {"cells": list(cells.values()), "targets": targets}
