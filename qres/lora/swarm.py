"""The LoRA swarm: nodes personalise ``mclinear`` models with the adapter hierarchy; the shared
layers travel through the swarm's robust aggregation, the local ones never leave the node.

``qres swarm simulate --profile swarm-lora`` runs it (a profile with a ``[lora]`` table). Each
node is a :class:`~qres.lora.personal.Personal` on a two-channel stream; nodes are grouped in
*domains* (a domain is one recording, or one source of the generated set: nodes on the same
kind of sensor; with ``[lora] domains = "discovered"`` found from the nodes' signatures and
kept current, :class:`~qres.lora.domains.Regrouping`: a node whose stream changes kind moves
to the domain it now resembles and takes that domain's newest layer). Every round:

1. each node codes its next window as its encoder would: with the candidate model (a depth
   of the hierarchy, or a banked local adapter) that the profile's coder spends the fewest
   bits on, whose index it signals (:meth:`~qres.lora.personal.Personal.choose`, with
   ``block_choice = "signalled"``; with ``"scored"``, the depth of best running score). The
   report counts that model's error, relative to the 4096-level range, and the coder's bits
   per sample with the index's bits included, as ``benchmarks/lora_personalise.py`` does;
   then the node learns from the window;
2. one shared layer takes its turn on the wire (foundation, domain, swarm, foundation, ...):
   each node sends its change since the last aggregate (B, and A when not dense, as Q16.16
   int32 rows); Byzantine nodes send what the attack forges instead; the profile's
   aggregator combines the rows of the layer's group (every node for the foundation and swarm
   layers, the domain's nodes for the domain layer), tolerating ``assumed_byzantine`` of
   them; every node of the group screens the aggregate on its own newest window (refused
   when it makes the node's error more than ``1 + accept_tolerance`` times worse, as the
   swarm's nodes screen updates) and takes it. Agent and context layers stay local.

Everything is a pure function of the profile, the seed and the data: the same run gives the
same report bytes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from qres.kernel.config import Location
from qres.kernel.errors import QresError
from qres.kinds.lora import ROLES
from qres.lora import exchange
from qres.lora.personal import Personal, PersonalSettings, mean_abs_error, residual_bits
from qres.swarm.engine import build_attack

#: Sources of the generated set: (period of channel 0, period of channel 1's own tone, lag of
#: channel 1 behind channel 0, coupling in 1/8).
SOURCES = ((24, 37, 2, 6), (40, 29, 5, 3), (64, 23, 1, 7), (100, 53, 8, 2))
#: The integer range of a stream: [-2048, 2047], as qres.learning.task.
HALF = 2048
#: Bytes of one parameter on the wire (Q16.16 int32).
PARAM_BYTES = exchange.PARAM_BYTES


def generated_domains(seed: int, length: int) -> list[tuple[str, Any]]:
    """The generated set: one (2, length) int64 stream per source; channel 1 follows
    channel 0 ``lag`` samples late, plus its own tone; integer noise from the seed."""
    import numpy as np

    from qres.swarm.data import sine_table

    table = sine_table()
    t = np.arange(length, dtype=np.int64)
    out = []
    for k, (p0, p1, lag, mix) in enumerate(SOURCES):
        rng = np.random.default_rng([seed, k])
        c0 = table[(t * 4096 // p0) % 4096] * 5 // 8 + rng.integers(-40, 41, length)
        late = np.concatenate([np.zeros(lag, np.int64), c0[:-lag]])
        c1 = late * mix // 8 + table[(t * 4096 // p1) % 4096] // 4 + rng.integers(-40, 41, length)
        out.append((f"source-{k}", np.clip(np.stack([c0, c1]), -HALF, HALF - 1)))
    return out


def recorded_domains(folder: str, length: int) -> list[tuple[str, Any]]:
    """(name, (2, n) int64) for every real recording of ``folder`` with two usable channels
    of at least ``length`` samples (normalised by qres.learning.task.normalise)."""
    import numpy as np

    from qres.learning.corpus import read_entry, read_manifest
    from qres.learning.task import normalise

    out = []
    for entry in read_manifest(folder):
        if entry.synthetic or entry.channels < 2:
            continue
        data = read_entry(folder, entry)
        rows = [normalise(data[c]) for c in range(data.shape[0])]
        rows = [r for r in rows if r is not None][:2]
        if len(rows) == 2 and rows[0].shape[0] >= length:
            out.append((entry.name, np.stack(rows).astype(np.int64)))
    return out


class LoraSwarm:
    """One run of a LoRA swarm (see the module docstring); after :meth:`run`, ``cpu`` holds
    the process CPU seconds of each round (kept out of the report, which is deterministic)."""

    def __init__(self, profile: Any, settings: Any, attack: str | None = None, attack_free=False):
        from qres.kernel import plugins

        self.profile, self.s = profile, settings
        self.hierarchy = profile.settings("lora")
        self.personal = PersonalSettings(channels=2, order=settings.order, lr=settings.lr)
        swarm = profile.data.get("swarm", {})
        where = Location(str(profile.path)).child("swarm")
        if "aggregator" in swarm:
            self.aggregator = profile.build("swarm", "aggregator")
        else:
            self.aggregator = plugins.create("aggregator", {"use": "trimmed-mean"}, where)
        self.attack = None if attack_free else build_attack(profile, attack)
        # the codec's coder: depths are scored, and blocks chosen, by its bits
        codec = profile.data.get("codec", {})
        if "coder" in codec:
            self.coder = profile.build("codec", "coder")
        else:
            self.coder = plugins.create("coder", {"use": "rice"}, where.child("codec"))

    # -- setup -------------------------------------------------------------------------------
    def _streams(self) -> tuple[list[Any], list[int], list[str]]:
        """Each node's (2, n) stream and domain; the domains' names. Node i is in domain
        ``i * D // n`` (neighbouring ids share a domain: non-IID); the k-th node of a domain
        reads the k-th piece of its stream (wrapping round when the recording is short)."""
        s = self.s
        piece = s.rounds * s.window + s.order + 1
        if s.data == "generated":
            doms = generated_domains(s.seed, -(-s.nodes // len(SOURCES)) * piece)
        else:
            doms = recorded_domains(s.data, piece)
            if not doms:
                raise QresError(
                    f"--data {s.data}: no recording has two channels of {piece} samples; "
                    "lower --rounds or --window, or give longer recordings"
                )
        streams, domain, seen = [], [], {}
        for i in range(s.nodes):
            d = i * len(doms) // s.nodes
            k = seen[d] = seen.get(d, -1) + 1
            x = doms[d][1]
            lo = (k % (x.shape[1] // piece)) * piece
            streams.append(x[:, lo : lo + piece])
            domain.append(d)
        return streams, domain, [name for name, _ in doms]

    def _domains_report(self, domain, names, regroup) -> dict:
        """How the domains were formed, which declared domains each one holds at the end,
        and how many times a node moved to another domain."""
        out = {"mode": self.hierarchy.domains, "members": _found(domain, names, self.declared)}
        if regroup is not None:
            out["moves"] = len(regroup.moves)
        return out

    def _discover(self, streams: list[Any]) -> Any:
        """Domains found from each node's first window and kept current
        (qres.lora.domains.Regrouping): every node publishes its signature each round, and
        every node computes the same domains from them."""
        from qres.lora.domains import Regrouping, signature

        first = [x[:, : self.s.window + self.s.order + 1] for x in streams]
        h = self.hierarchy
        return Regrouping([signature(w) for w in first], h.q(h.domain_margin), h.domain_patience)

    def _join(self, node: Personal, flat: Any, members: int) -> None:
        """A node that moved to a domain of ``members`` nodes takes its newest domain-layer
        aggregate ``flat`` (None before the domain's first turn), as the members hold it, and
        screens it as it screens every aggregate (a domain may be majority Byzantine)."""
        if flat is None:
            return
        layer = node.h.layers["domain"]
        parts, at = {}, 0
        for key in sorted(node.shared("domain")):
            shape = getattr(layer, key).shape
            parts[key] = flat[at : at + shape[0] * shape[1]].reshape(shape)
            at += shape[0] * shape[1]
        node.absorb("domain", parts, members + 1, tolerance=self.s.accept_tolerance)

    def _byzantine(self) -> Any:
        import numpy as np

        n = self.s.nodes
        count = int(self.s.byzantine * n)
        order = np.random.default_rng([self.s.seed, 1]).permutation(n)
        byz = np.zeros(n, bool)
        byz[order[:count]] = True
        return byz

    # -- the run -----------------------------------------------------------------------------
    def run(self, on_round: Callable[[int, float], None] | None = None) -> dict:
        """Every round as the module docstring says; returns the report (plain data)."""
        import numpy as np

        s = self.s
        streams, domain, names = self._streams()
        self.declared = (domain, names)
        regroup = None
        if self.hierarchy.domains == "discovered":
            regroup = self._discover(streams)
            domain = list(regroup.label)
            names = [f"domain-{g}" for g in range(max(domain) + 1)]
        byz = self._byzantine()
        nodes = [
            Personal(self.hierarchy, self.personal, seed=s.seed, coder=self.coder) for _ in streams
        ]
        groups = {"all": list(range(s.nodes))}
        by_domain = _members(domain)
        bases: dict[tuple, dict] = {}
        latest: dict[tuple, Any] = {}  # (role, group): the group's newest aggregate
        rng = np.random.default_rng([s.seed, 2])
        honest = ~byz
        error, bits, sent_bytes, self.cpu = [], [], [], []
        signalled = np.zeros(nodes[0].slots(), np.int64)
        for r in range(s.rounds):
            started = time.process_time()
            lo = r * s.window
            errs, coded = np.zeros(s.nodes), np.zeros(s.nodes)
            for i, node in enumerate(nodes):
                window = streams[i][:, lo : lo + s.window + s.order + 1]
                errs[i], coded[i], index = self._code(node, window)
                signalled[index] += not byz[i]
            for i, node in enumerate(nodes):
                node.learn(streams[i][:, lo : lo + s.window + s.order + 1])
            if regroup is not None and r > 0:
                by_domain = self._regroup(regroup, streams, r, nodes, by_domain, latest)
                domain = list(regroup.label)
            role = exchange.role_of_round(r)
            parts = {"all": groups["all"]} if role != "domain" else by_domain
            size = 0
            for g, members in parts.items():
                size = self._exchange(nodes, role, members, byz, bases, rng, r)
                latest[(role, g)] = bases[(role, members[0])]
            error.append(float(errs[honest].mean()))
            bits.append(float(coded[honest].mean()))
            sent_bytes.append(size * PARAM_BYTES)
            self.cpu.append(time.process_time() - started)
            if on_round is not None:
                on_round(r, error[-1])
        coding = {"bits": bits, "signalled": signalled}
        self.regroup = regroup
        return self._report(nodes, names, domain, byz, error, sent_bytes, coding)

    def _regroup(self, regroup, streams, r, nodes, by_domain, latest) -> dict:
        """Round r's signatures (and the nodes whose change test fired) to the
        regrouping; a node that moves takes its new domain's layer. Returns the domains'
        members after the moves."""
        from qres.lora.domains import signature

        lo = r * self.s.window
        end = lo + self.s.window + self.s.order + 1
        changed = {i for i, node in enumerate(nodes) if node.changes[-1:] == [r]}
        sigs = [signature(x[:, lo:end]) for x in streams]
        for i, _, new in regroup.observe(sigs, changed):
            self._join(nodes[i], latest.get(("domain", new)), len(by_domain[new]))
        return _members(regroup.label)

    def _code(self, node: Personal, window: Any) -> tuple[float, float, int]:
        """What the node's encoder does with ``window``: the candidate it signals
        (:meth:`Personal.choose`), that model's error relative to the range, and the coder's
        bits per sample with the index's bits counted."""
        index, w, res = node.signal(window)
        error = mean_abs_error(w, window, self.s.order) / (1 << 16) / HALF / 2
        cost = residual_bits(self.coder, res) / (1 << 16)
        return error, cost + node.index_bits() / res.size, index

    def _exchange(self, nodes, role, members, byz, bases, rng, r) -> int:
        """One group's turn for ``role`` (the step of :mod:`qres.lora.exchange`, which the
        real node runs too): rows, forgeries, robust aggregate, absorbed by every member.
        Returns the parameters one node sent."""
        import numpy as np

        from qres.kinds.attack import AttackContext

        first = nodes[members[0]]
        base_key = (role, members[0])
        base = bases.get(base_key)
        if base is None:
            base = exchange.initial(first, role)
        rows = np.stack([exchange.change(nodes[i], role, base) for i in members])
        bad = np.array([byz[i] for i in members])
        if self.attack is not None and bad.any() and (~bad).any():
            context = AttackContext(round=r, nodes=np.flatnonzero(bad), own=rows[bad].copy())
            rows[bad] = self.attack.forge(rows[~bad], int(bad.sum()), rng=rng, context=context)
        new = exchange.combine(self.aggregator, rows, base, self.s.assumed_byzantine, rng)
        bases[base_key] = new
        out = exchange.split(first, role, new)
        for i in members:
            nodes[i].absorb(role, out, len(members), tolerance=self.s.accept_tolerance)
        return int(new.size)

    def _report(self, nodes, names, domain, byz, error, sent_bytes, coding) -> dict:
        """The report: plain data, the same bytes for the same run (no timings)."""
        import numpy as np

        honest = [i for i in range(len(nodes)) if not byz[i]]
        tail = max(1, len(error) // 4)
        depth = np.bincount([nodes[i].depth() for i in honest], minlength=len(ROLES))
        per_domain = {}
        for d, name in enumerate(names):
            members = [i for i in honest if domain[i] == d]
            if members:
                per_domain[name] = len(members)
        return {
            "profile": self.profile.name,
            "model": "lora",
            "nodes": len(nodes),
            "byzantine_nodes": int(byz.sum()),
            "attack": None if self.attack is None else self.attack.name,
            "aggregator": self.aggregator.name,
            "rounds": len(error),
            "seed": self.s.seed,
            "honest_nodes_per_domain": per_domain,
            "domains": self._domains_report(domain, names, self.regroup),
            "honest_error": [round(e, 9) for e in error],
            "final_honest_error": round(float(np.mean(error[-tail:])), 9),
            "honest_bits_per_sample": [round(b, 6) for b in coding["bits"]],
            "final_honest_bits_per_sample": round(float(np.mean(coding["bits"][-tail:])), 6),
            "signalled": _signalled(coding["signalled"]),
            "bytes_per_node_round": [int(b) for b in sent_bytes],
            "parameters_per_node": nodes[0].shared_parameters(),
            "depth_chosen": {ROLES[d]: int(c) for d, c in enumerate(depth) if c},
            "healthy_nodes": sum(nodes[i].h.health().status == "HEALTHY" for i in honest),
            "migrations": sum(nodes[i].h.migrations for i in honest),
            "rejected_aggregates": sum(nodes[i].rejected for i in honest),
        }


def _listed(counts: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items())


def _signalled(counts) -> dict:
    """How often the honest nodes' encoders signalled each candidate, all rounds: the
    depths by role, the banked adapters together."""
    out = {ROLES[d]: int(c) for d, c in enumerate(counts[: len(ROLES)]) if c}
    if counts[len(ROLES) :].any():
        out["bank"] = int(counts[len(ROLES) :].sum())
    return out


def _members(domain) -> dict[int, list[int]]:
    """Domain -> its nodes, in node order."""
    out: dict[int, list[int]] = {}
    for i, d in enumerate(domain):
        out.setdefault(d, []).append(i)
    return out


def _found(domain, names, declared) -> dict:
    """Per domain in use, how many nodes of each declared domain it holds."""
    out: dict[str, dict[str, int]] = {}
    for i, d in enumerate(domain):
        row = out.setdefault(names[d], {})
        source = declared[1][declared[0][i]]
        row[source] = row.get(source, 0) + 1
    return out


def simulate(profile: Any, settings: Any, attack: str | None, baseline: bool | None) -> dict:
    """A run and, when there is an attack (or ``baseline``), the same swarm without it (the
    Byzantine nodes then behave): ``attack_free`` holds its error and the ratio."""
    sim = LoraSwarm(profile, settings, attack=attack)
    result = sim.run()
    if baseline is None:
        baseline = sim.attack is not None
    if baseline:
        free = LoraSwarm(profile, settings, attack_free=True).run()
        a, b = result["final_honest_error"], free["final_honest_error"]
        result["attack_free"] = {
            "honest_error": free["honest_error"],
            "final_honest_error": b,
            "error_ratio": round(a / b, 6) if b else None,
            "final_honest_bits_per_sample": free["final_honest_bits_per_sample"],
            "bits_ratio": round(
                result["final_honest_bits_per_sample"] / free["final_honest_bits_per_sample"], 6
            ),
            "rejected_aggregates": free["rejected_aggregates"],
        }
    result["cpu_seconds_per_round"] = sim.cpu  # the caller shows it; to_json leaves it out
    return result


def summary_rows(report: dict) -> list[list[str]]:
    """The headline figures of a LoRA swarm report, as (name, value) rows."""
    rows = [
        ["nodes (Byzantine)", f"{report['nodes']} ({report['byzantine_nodes']})"],
        ["attack", str(report["attack"])],
        ["aggregator (shared layers)", report["aggregator"]],
        ["final personalised error", str(report["final_honest_error"])],
        ["final bits per sample (index counted)", str(report["final_honest_bits_per_sample"])],
    ]
    if "attack_free" in report:
        free = report["attack_free"]
        rows.append(["attack-free final error", str(free["final_honest_error"])])
        rows.append(["error ratio (attack / free)", str(free["error_ratio"])])
        rows.append(["bits ratio (attack / free)", str(free["bits_ratio"])])
    per_round = report["bytes_per_node_round"]
    rows += [
        [
            "honest nodes per domain",
            ", ".join(f"{k} {v}" for k, v in report["honest_nodes_per_domain"].items()),
        ],
        ["bytes per node per round", f"{sum(per_round) / max(1, len(per_round)):.1f}"],
        ["depth scored best at the end", _listed(report["depth_chosen"])],
        ["candidates signalled (blocks)", _listed(report["signalled"])],
        ["HEALTHY nodes", str(report["healthy_nodes"])],
        ["migrations", str(report["migrations"])],
        ["aggregates refused by the screen", str(report["rejected_aggregates"])],
    ]
    return rows


def plot(report: dict, target: Any) -> None:
    """The personalised error per round (with the attack-free run when there is one); PNG."""
    from qres.kernel.plotting import pyplot

    plt = pyplot()
    rounds = list(range(len(report["honest_error"])))
    fig, ax = plt.subplots(figsize=(9, 4.5))
    label = f"attack: {report['attack']}" if report["attack"] else "personalised error"
    ax.plot(rounds, report["honest_error"], label=label, color="tab:red")
    if "attack_free" in report:
        free = report["attack_free"]["honest_error"]
        ax.plot(rounds, free, label="attack-free", color="tab:blue", linestyle="--")
    ax.set_yscale("log")
    ax.set_title("honest nodes' prediction error (relative to range)")
    ax.set_xlabel("round")
    ax.legend()
    fig.suptitle(f"qres swarm: {report['profile']}, {report['nodes']} nodes, seed {report['seed']}")
    fig.tight_layout()
    fig.savefig(target, format="png", dpi=90, metadata={"Software": None})
    plt.close(fig)
