"""``qres bench aggregators``: the robustness grid and the speed table of the aggregators.

**Robustness grid** (:func:`run_grid`). The learning task of :mod:`qres.learning.task`: ``n``
nodes (100) on non-IID shards of a MANIFEST folder (the shared corpus by default), ``f`` of
them (30, chosen by the seed) Byzantine. A global Q16.16 linear predictor of order 16 starts
as the persistence predictor; each round every node computes its local update from the
global weights on a window of its shard (:func:`qres.learning.task.local_update`), the attack
replaces the Byzantine nodes' rows with rows forged from the honest ones, the aggregator
combines the ``n`` rows with ``f``, and the result is added to the global weights. After the
rounds, the *honest error* is the mean over honest nodes of the prediction error on a
held-out end of their shards (relative to the data range). Every cell is that error
divided by the error of plain ``mean`` with no attack (where the ``f`` nodes train honestly).

All cells share the data, the window offsets of each round and the attack generators (one
seed per round), so they differ only by rule and attack. The optimal attacks search their
scale against the rule under test. The reputation rules (``reputation-weighted``,
``adaptive``) get reputations from a :class:`qres.robust.reputation.ReputationTracker` that
observes every round's rows against the trimmed mean before the rule runs. A rule whose
theory refuses ``n`` and ``f`` (Bulyan needs ``n >= 4f + 3``) gets no cell and the reason.

**Speed table** (:func:`run_speed`). ``n x d`` updates drawn from N(0, 1) in Q16.16; each
qres rule is timed once, and where Flower has the same rule
(``flwr.server.strategy.aggregate``: ``aggregate``, ``aggregate_median``,
``aggregate_trimmed_avg``, ``aggregate_krum``, ``aggregate_bulyan``) Flower is timed on the
same values as float64 in the same process, and the ratio Flower / qres reported (calls
under a second run ``repeats`` times and the fastest counts, for both). Flower's
Krum computes its n x n distances in a Python double loop (minutes at n = 10,000), so it is
timed on the first ``flower_krum_n`` rows and scaled by ``(n / flower_krum_n)**2`` unless
``flower_krum_n >= n``; the table marks such figures as scaled.

numpy, flwr and matplotlib are imported inside the functions that use them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import attrs

from qres.fixed.q16 import sat_add
from qres.kernel.config import integer, number
from qres.kernel.errors import QresError

#: Rules of the grid (plugin tables) with their display names.
GRID_RULES: list[tuple[str, dict]] = [
    ("mean", {"use": "mean"}),
    ("median", {"use": "median"}),
    ("trimmed-mean", {"use": "trimmed-mean"}),
    ("meamed", {"use": "meamed"}),
    ("krum", {"use": "krum"}),
    ("multi-krum", {"use": "multi-krum"}),
    ("bulyan", {"use": "bulyan"}),
    ("geometric-median", {"use": "geometric-median"}),
    ("centered-clipping", {"use": "centered-clipping"}),
    ("nnm+trimmed-mean", {"use": "nnm", "inner": {"use": "trimmed-mean"}}),
    ("bucketing+trimmed-mean", {"use": "bucketing", "inner": {"use": "trimmed-mean"}}),
    ("arc+trimmed-mean", {"use": "arc", "inner": {"use": "trimmed-mean"}}),
    ("reputation-weighted", {"use": "reputation-weighted"}),
    ("adaptive", {"use": "adaptive"}),
]
#: Attacks of the grid; "none" is the attack-free run of each rule.
GRID_ATTACKS = [
    "none",
    "sign-flip",
    "ipm",
    "alie",
    "gaussian",
    "mimic",
    "extreme",
    "optimal-ipm",
    "optimal-alie",
    "minmax",
    "drift",
]
#: The default rule, whose worst case the target is about.
DEFAULT_RULE = "adaptive"
#: Target: the default rule's worst case over attacks, relative to mean without attack.
ROBUSTNESS_TARGET = 1.10


@attrs.frozen
class GridSettings:
    """Size and training of the robustness grid."""

    n: int = attrs.field(default=100, validator=integer(4, 100_000))
    f: int = attrs.field(default=30, validator=integer(0, 100_000))
    rounds: int = attrs.field(default=30, validator=integer(1, 100_000))
    order: int = attrs.field(default=16, validator=integer(1, 256))
    window: int = attrs.field(default=256, validator=integer(8, 65_536))
    lr: float = attrs.field(default=1.0, validator=number(2.0**-16, 1.99))
    #: Samples per shard: training windows come from all but the last ``eval_len``.
    shard_len: int = attrs.field(default=3072, validator=integer(64, 1 << 24))
    eval_len: int = attrs.field(default=1024, validator=integer(8, 1 << 24))
    iid: bool = False
    seed: int = attrs.field(default=0, validator=integer(0, (1 << 63) - 1))
    #: Data folder with a MANIFEST (None: the shared corpus).
    data: str | None = None

    def __attrs_post_init__(self):
        if 2 * self.f >= self.n:
            raise QresError(f"bench grid: f={self.f} needs n > 2f (n={self.n}); lower --f")
        if self.shard_len - self.eval_len < self.order + self.window:
            raise QresError(
                f"bench grid: shards of {self.shard_len} leave {self.shard_len - self.eval_len}"
                f" training samples, fewer than a window ({self.order + self.window})"
            )


class _Task:
    """The data and schedule every cell of the grid shares."""

    def __init__(self, s: GridSettings):
        import numpy as np

        from qres.learning import task as learning

        self.s = s
        self.train = learning.TrainSettings(order=s.order, window=s.window, lr=s.lr)
        streams = learning.load_streams(s.data, min_length=s.shard_len)
        self.shards, self.source = learning.make_shards(
            streams, s.n, s.shard_len, iid=s.iid, rng=np.random.default_rng([s.seed, 0])
        )
        self.sources = sorted({streams[int(i)].group for i in self.source})
        train_len = s.shard_len - s.eval_len
        ev = learning.TrainSettings(order=s.order, window=s.eval_len)
        self.eval = learning.windows_at(self.shards, np.full(s.n, train_len - s.order), ev)
        order = np.random.default_rng([s.seed, 1]).permutation(s.n)
        self.byzantine = np.sort(order[: s.f])
        self.honest = np.sort(order[s.f :])
        self.windows = [
            learning.windows_at(
                self.shards[:, :train_len],
                learning.random_starts(train_len, s.n, self.train, _gen(s.seed, 2, r)),
                self.train,
            )
            for r in range(s.rounds)
        ]


def _gen(*seed: int) -> Any:
    """A generator seeded by a tuple of integers (one stream per purpose and round)."""
    import numpy as np

    return np.random.default_rng(list(seed))


def _apply(w: Any, delta: Any) -> Any:

    return sat_add(w, delta)


def _run_cell(task: _Task, rule_table: dict, attack: str) -> dict:
    """Train through every round with one rule and one attack; the honest error and, for the
    reputation rules, how many honest and Byzantine nodes ended distrusted."""
    import numpy as np

    from qres.kernel import plugins
    from qres.kernel.config import Location
    from qres.learning import task as learning
    from qres.robust.reputation import ReputationTracker

    s = task.s
    where = Location("<bench>")
    rule = plugins.create("aggregator", rule_table, where)
    forger = None
    if attack != "none":
        table: dict = {"use": attack}
        if attack.startswith("optimal-"):
            table["aggregator"] = rule_table
        forger = plugins.create("attack", table, where)
    uses_reps = rule.name in ("reputation-weighted", "adaptive")
    reference = plugins.create("aggregator", {"use": "trimmed-mean"}, where)
    tracker = ReputationTracker(s.n) if uses_reps else None
    w = learning.persistence_weights(s.order)
    h = task.honest.shape[0]
    for r in range(s.rounds):
        deltas = learning.local_update(w, task.windows[r], task.train)
        if forger is None:
            # honest rows first, as in the attacked runs, so row i is the same node
            x = np.vstack([deltas[task.honest], deltas[task.byzantine]])
        else:
            forged = forger.forge(deltas[task.honest], s.f, rng=_gen(s.seed, 3, r))
            x = np.vstack([deltas[task.honest], forged])
        rng = np.random.default_rng([s.seed, 4, r])
        if tracker is not None:
            tracker.observe(x, reference.aggregate(x, f=s.f))
            agg = rule.aggregate(x, f=s.f, weights=tracker.as_weights(), rng=rng)
        else:
            agg = rule.aggregate(x, f=s.f, rng=rng)
        w = _apply(w, agg)
    error = float(learning.prediction_error(w, task.eval[task.honest], s.order).mean())
    out: dict = {"error": error}
    if tracker is not None:
        limit = int(0.1 * 65536 + 0.5)
        low = tracker.reputations <= limit
        out["distrusted_honest"] = int(low[:h].sum())
        out["distrusted_byzantine"] = int(low[h:].sum()) if forger is not None else 0
    return out


def run_grid(
    settings: GridSettings,
    rules: list[tuple[str, dict]] | None = None,
    attacks: list[str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """The robustness grid as a JSON-ready dict (see the module docstring).

    Keys: ``settings``, ``baseline_error`` (mean, no attack), ``attacks``, ``rules`` (one
    entry per rule: ``name``, ``cells`` {attack: error / baseline, or None}, ``errors``,
    ``worst``, ``refused`` (the rule's message if its theory refuses n and f), and for the
    reputation rules ``distrusted`` {attack: [honest, byzantine]}), ``default_rule``,
    ``default_worst`` and ``target_holds``.
    """
    from qres.kernel import plugins
    from qres.kernel.config import Location

    rules = GRID_RULES if rules is None else rules
    attacks = GRID_ATTACKS if attacks is None else attacks
    task = _Task(settings)
    baseline = _run_cell(task, {"use": "mean"}, "none")["error"]
    rows = []
    for name, table in rules:
        rule = plugins.create("aggregator", table, Location("<bench>"))
        entry: dict = {"name": name, "cells": {}, "errors": {}, "refused": None}
        try:
            rule.check_f(settings.n, settings.f)
        except QresError as exc:
            entry["refused"] = str(exc)
        distrusted = {}
        for attack in attacks:
            if entry["refused"]:
                entry["cells"][attack] = entry["errors"][attack] = None
                continue
            if progress:
                progress(f"{name} x {attack}")
            try:
                cell = _run_cell(task, table, attack)
            except QresError as exc:  # e.g. a wrapped rule that refuses the reduced n
                entry["refused"] = str(exc)
                entry["cells"] = dict.fromkeys(attacks)
                entry["errors"] = dict.fromkeys(attacks)
                distrusted = {}
                break
            entry["errors"][attack] = cell["error"]
            entry["cells"][attack] = cell["error"] / baseline
            if "distrusted_honest" in cell:
                distrusted[attack] = [cell["distrusted_honest"], cell["distrusted_byzantine"]]
        if distrusted:
            entry["distrusted"] = distrusted
        values = [v for v in entry["cells"].values() if v is not None]
        entry["worst"] = max(values) if values else None
        rows.append(entry)
    default = next((r for r in rows if r["name"] == DEFAULT_RULE), None)
    worst = default["worst"] if default else None
    return {
        "settings": attrs.asdict(settings),
        "sources": task.sources,
        "byzantine": [int(i) for i in task.byzantine],
        "baseline_error": baseline,
        "attacks": list(attacks),
        "rules": rows,
        "default_rule": DEFAULT_RULE,
        "default_worst": worst,
        "target": ROBUSTNESS_TARGET,
        "target_holds": None if worst is None else worst <= ROBUSTNESS_TARGET,
    }


#: Rules of the speed table: (display name, plugin table, f as a fraction of n).
SPEED_RULES: list[tuple[str, dict]] = [
    ("mean", {"use": "mean"}),
    ("median", {"use": "median"}),
    ("trimmed-mean", {"use": "trimmed-mean"}),
    ("krum", {"use": "krum"}),
    ("multi-krum", {"use": "multi-krum"}),
    ("geometric-median", {"use": "geometric-median"}),
    ("meamed", {"use": "meamed"}),
    ("centered-clipping", {"use": "centered-clipping"}),
    ("reputation-weighted", {"use": "reputation-weighted"}),
    ("adaptive", {"use": "adaptive"}),
    ("bucketing+trimmed-mean", {"use": "bucketing", "inner": {"use": "trimmed-mean"}}),
    ("clipping+trimmed-mean", {"use": "clipping", "inner": {"use": "trimmed-mean"}}),
    ("arc+trimmed-mean", {"use": "arc", "inner": {"use": "trimmed-mean"}}),
    ("nnm+trimmed-mean", {"use": "nnm", "inner": {"use": "trimmed-mean"}}),
]
#: Speed targets (seconds) at n = 10,000, d = 1,000.
SPEED_TARGETS = {
    "median": 0.2,
    "trimmed-mean": 0.2,
    "krum": 5.0,
    "multi-krum": 5.0,
    "geometric-median": 1.0,
}


@attrs.frozen
class SpeedSettings:
    """Size of the speed table."""

    n: int = attrs.field(default=10_000, validator=integer(8, 1 << 20))
    d: int = attrs.field(default=1_000, validator=integer(1, 1 << 20))
    #: Byzantine rows tolerated, as a share of n (bucketing gets two thirds of it, since
    #: buckets of two halve n).
    f_share: float = attrs.field(default=0.3, validator=number(0.0, 0.49))
    seed: int = attrs.field(default=0, validator=integer(0, (1 << 63) - 1))
    #: Rows on which Flower's Krum is timed (its distances are a Python double loop);
    #: the time is scaled by (n / flower_krum_n)**2 when smaller than n.
    flower_krum_n: int = attrs.field(default=1_000, validator=integer(8, 1 << 20))
    #: Size of the Bulyan comparison (Flower re-runs its O(n**2) Krum n - 2f times).
    bulyan_n: int = attrs.field(default=100, validator=integer(7, 1 << 20))
    #: Whether to time Flower at all.
    flower: bool = True
    #: Runs of each call that took under a second; the fastest counts (the machine is
    #: shared, and the minimum is the least disturbed run). Slower calls run once.
    repeats: int = attrs.field(default=3, validator=integer(1, 100))


def _timed(fn: Callable[[], Any], repeats: int = 1) -> tuple[float, Any]:
    """Seconds of the fastest of up to ``repeats`` calls (calls over a second run once)."""
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        took = time.perf_counter() - start
        best = min(best, took)
        if took > 1.0:
            break
    return best, out


def _flower_module():
    try:
        import flwr.server.strategy.aggregate as fl
    except ImportError:
        return None
    return fl


def run_speed(settings: SpeedSettings, progress: Callable[[str], None] | None = None) -> dict:
    """The speed table as a JSON-ready dict: ``settings``, ``flower_version`` (None if
    Flower is not installed or not asked for), ``rows`` (``rule``, ``n``, ``f``, ``qres_s``,
    ``flower_s``, ``flower_scaled``, ``ratio`` = Flower / qres, ``target_s``,
    ``target_holds``)."""
    s = settings
    bench = _SpeedBench.create(s, progress)
    rows = [bench.rule_row(name, table) for name, table in SPEED_RULES]
    rows.append(bench.bulyan_row())
    return {"settings": attrs.asdict(s), "flower_version": bench.version, "rows": rows}


def _flower_results(values: Any) -> list:
    """Rows as Flower's ``(parameters, num_examples)`` results."""
    return [([row], 1) for row in values]


def _speed_row(name: str, n: int, f: int, qres_s: float) -> dict:
    """A row of the speed table before Flower's figures and the target are added."""
    return {
        "rule": name,
        "n": n,
        "f": f,
        "qres_s": qres_s,
        "flower_s": None,
        "flower_scaled": False,
        "ratio": None,
    }


@attrs.define(eq=False)
class _SpeedBench:
    """The inputs of the speed table, shared by every rule: the same values as Q16.16 for
    qres and as float64 for Flower (``fl`` is Flower's aggregate module, or None)."""

    s: SpeedSettings
    x: Any
    as_float: Any
    fl: Any
    version: str | None
    progress: Callable[[str], None] | None

    @classmethod
    def create(cls, s: SpeedSettings, progress: Callable[[str], None] | None) -> _SpeedBench:
        """Draw the updates (N(0, 1) in Q16.16) and find Flower."""
        import numpy as np

        real = np.random.default_rng(s.seed).standard_normal((s.n, s.d))
        x = np.floor(real * 65536.0 + 0.5).astype(np.int32)
        as_float = x.astype(np.float64) / 65536.0  # Flower gets exactly the same values
        fl = _flower_module() if s.flower else None
        version = None
        if fl is not None:
            from importlib.metadata import version as pkg_version

            version = pkg_version("flwr")
        return cls(s, x, as_float, fl, version, progress)

    def _say(self, message: str) -> None:
        if self.progress:
            self.progress(message)

    def rule_row(self, name: str, table: dict) -> dict:
        """Time one qres rule on every row, and Flower's same rule where it has one."""
        from qres.kernel import plugins
        from qres.kernel.config import Location

        s = self.s
        f = int(s.f_share * s.n)
        rule = plugins.create("aggregator", table, Location("<bench>"))
        rf = (2 * f) // 3 if table["use"] == "bucketing" else f
        self._say(f"speed: {name}")
        qs, _ = _timed(lambda: rule.aggregate(self.x, f=rf, rng=_gen(0)), s.repeats)
        row = _speed_row(name, s.n, rf, qs)
        if self.fl is not None:
            self._time_flower(name, f, row)
        if row["flower_s"] is not None:
            row["ratio"] = row["flower_s"] / qs
        target = SPEED_TARGETS.get(name) if (s.n, s.d) == (10_000, 1_000) else None
        row["target_s"] = target
        row["target_holds"] = None if target is None else qs < target
        return row

    def _time_flower(self, name: str, f: int, row: dict) -> None:
        """Flower's time for the rule ``name`` into ``row`` (Krum timed on the first
        ``flower_krum_n`` rows and scaled by the square of the row ratio)."""
        s, fl = self.s, self.fl
        full = _flower_results(self.as_float)
        calls = {
            "mean": lambda: fl.aggregate(full),
            "median": lambda: fl.aggregate_median(full),
            "trimmed-mean": lambda: fl.aggregate_trimmed_avg(full, f / s.n),
        }
        if name in calls:
            row["flower_s"], _ = _timed(calls[name], s.repeats)
        elif name in ("krum", "multi-krum"):
            kn = min(s.flower_krum_n, s.n)
            fk = int(s.f_share * kn)
            small = _flower_results(self.as_float[:kn])
            keep = 0 if name == "krum" else kn - fk
            t, _ = _timed(lambda: fl.aggregate_krum(small, fk, keep))
            row["flower_s"] = t * (s.n / kn) ** 2
            row["flower_scaled"] = kn < s.n
            row["flower_n"] = kn

    def bulyan_row(self) -> dict:
        """Bulyan at a size both can run: ``n >= 4f + 3``."""
        from qres.kernel import plugins
        from qres.kernel.config import Location

        s, fl = self.s, self.fl
        bn = min(s.bulyan_n, s.n)
        bf = (bn - 3) // 4
        self._say("speed: bulyan")
        bulyan = plugins.create("aggregator", {"use": "bulyan"}, Location("<bench>"))
        qs, _ = _timed(lambda: bulyan.aggregate(self.x[:bn], f=bf), s.repeats)
        row = {**_speed_row("bulyan", bn, bf, qs), "target_s": None, "target_holds": None}
        if fl is not None:
            small = _flower_results(self.as_float[:bn])
            row["flower_s"], _ = _timed(
                lambda: fl.aggregate_bulyan(small, bf, fl.aggregate_krum, to_keep=0)
            )
            row["ratio"] = row["flower_s"] / qs
        return row


def run(grid: GridSettings | None, speed: SpeedSettings | None, progress=None) -> dict:
    """Both parts (either may be None to skip it) as one JSON-ready dict."""
    return {
        "grid": run_grid(grid, progress=progress) if grid is not None else None,
        "speed": run_speed(speed, progress=progress) if speed is not None else None,
    }


def write_png(report: dict, out: Any) -> None:
    """Draw the grid (heat map of error ratios) and the speed table (qres vs Flower, log
    seconds) into the binary stream ``out`` as one PNG."""
    from qres.kernel.plotting import pyplot

    plt = pyplot()
    import numpy as np

    grid, speed = report.get("grid"), report.get("speed")
    panels = [p for p in (grid, speed) if p]
    fig, axes = plt.subplots(1, max(len(panels), 1), figsize=(8 * max(len(panels), 1), 7))
    axes = np.atleast_1d(axes)
    i = 0
    if grid:
        ax = axes[i]
        i += 1
        attacks = grid["attacks"]
        names = [r["name"] for r in grid["rules"]]
        values = np.array(
            [
                [np.nan if r["cells"][a] is None else r["cells"][a] for a in attacks]
                for r in grid["rules"]
            ],
            dtype=float,
        )
        shown = np.log10(np.clip(values, 0.5, 100.0))
        im = ax.imshow(shown, cmap="RdYlGn_r", vmin=np.log10(0.8), vmax=np.log10(3.0))
        ax.set_xticks(range(len(attacks)), attacks, rotation=60, ha="right")
        ax.set_yticks(range(len(names)), names)
        for (r, c), v in np.ndenumerate(values):
            label = "n/a" if np.isnan(v) else (f"{v:.2f}" if v < 10 else f"{v:.0f}")
            ax.text(c, r, label, ha="center", va="center", fontsize=7)
        s = grid["settings"]
        ax.set_title(
            f"honest error / mean without attack (n={s['n']}, f={s['f']}, {s['rounds']} rounds)"
        )
        fig.colorbar(im, ax=ax, shrink=0.6, label="log10 ratio")
    if speed:
        ax = axes[i]
        rows = speed["rows"]
        y = np.arange(len(rows))
        ax.barh(y - 0.2, [r["qres_s"] for r in rows], height=0.4, label="qres")
        ax.barh(
            y + 0.2,
            [r["flower_s"] or 0.0 for r in rows],
            height=0.4,
            label=f"Flower {speed['flower_version'] or '(not run)'}",
        )
        ax.set_yticks(y, [f"{r['rule']} (n={r['n']})" for r in rows])
        ax.set_xscale("log")
        ax.invert_yaxis()
        ax.set_xlabel("seconds (log)")
        st = speed["settings"]
        ax.set_title(f"speed, d={st['d']}")
        ax.legend()
    fig.tight_layout()
    fig.savefig(out, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
