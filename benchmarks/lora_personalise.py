"""Coded bits per sample of personalised predictors on the shared corpus (non-IID).

Every multichannel recording of the corpus is a *domain*; ``--nodes`` nodes read contiguous,
disjoint pieces of two of its channels (normalised by qres.learning.task.normalise). Each node
predicts with the ``mclinear`` model (2 channels, ``--order`` differences, W of 2 x 2p Q16.16).
Every round a node first codes its next ``--eval`` samples with the Rice coder using its
current model (so the figure is what the node pays, from its first round on), then learns
from its next ``--window`` samples. Five schemes, each from W = 0 (persistence), each sending
one model's worth of parameters per round at most:

* ``local``: each node fits its own W, no communication;
* ``fedavg``: one W, every node's step averaged each round (global-only);
* ``ditto``: the FedAvg W plus a personal W per node pulled toward it (Ditto, Li et al. 2021,
  arXiv:2012.04221; ``--ditto-lambda``); with ``--ditto-choice`` each block is coded with the
  personal or the global W, whichever costs fewer bits, plus one bit for the choice;
* ``fedrep``: W = H_i R, the representation R (2 x 2p) shared and averaged, the head H_i
  (2 x 2) local and trained first each round (FedRep, Collins et al. 2021, arXiv:2102.07078);
* ``hierarchy``: qres.lora.personal per node; the foundation and swarm layers are averaged
  over all nodes, the domain layer over the nodes of the same recording, agent and context
  stay on the node; the shared layers take turns on the wire (one per round), so it sends no
  more than FedAvg. Each block is coded with the candidate the node's encoder signals
  (qres.lora.personal.Personal.choose; the index's bits are counted in the figure).

``--files`` picks the recordings: ``tune`` and ``held-out`` are a fixed split of the corpus by
a hash of the file name (what was tuned on the first is judged on the second); ``all`` both.
Printed: mean bits per sample over all rounds, per domain and over all nodes, and the
parameters each node sends per round. Deterministic: integer training throughout.

    QRES_DATA=/work/shared/data .venv/bin/python benchmarks/lora_personalise.py --files held-out
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys

import numpy as np
from qres.builtin_plugins.lora.numpy_lora import NumpyLoRAConfig, initial_a_q16
from qres.builtin_plugins.predictors import mclinear

from qres.fixed.q16 import ONE, from_float
from qres.kernel import plugins
from qres.kernel.config import Location
from qres.kinds.lora import ROLES
from qres.learning.corpus import read_entry, read_manifest
from qres.learning.task import normalise
from qres.lora import HierarchySettings
from qres.lora.domains import Regrouping, signature
from qres.lora.hierarchy import SHARED_ROLES
from qres.lora.personal import Personal, PersonalSettings
from qres.robust.aggregate import div_round

WHERE = Location("<benchmark>", "lora")
SCHEMES = ("local", "fedavg", "ditto", "fedrep", "hierarchy")


def in_split(name: str, files: str) -> bool:
    """The fixed split: a recording is ``tune`` when the first byte of SHA-256(name) is even."""
    even = hashlib.sha256(name.encode()).digest()[0] % 2 == 0
    return files == "all" or (files == "tune") == even


def domains(folder, length, files="all", first=0):
    """(name, (2, n) int64) for every recording of the split with two usable channels from
    channel ``first`` on, of at least ``length`` samples."""
    out = []
    for entry in read_manifest(folder):
        if entry.synthetic or entry.channels < 2 or not in_split(entry.name, files):
            continue
        data = read_entry(folder, entry)
        rows = [normalise(data[c]) for c in range(first, data.shape[0])]
        rows = [r for r in rows if r is not None][:2]
        if len(rows) == 2 and rows[0].shape[0] >= length:
            out.append((entry.name, np.stack(rows).astype(np.int64)))
    return out


def bits(w, x, order, coder):
    """Rice-coded bits per sample of ``x`` predicted by fixed weights ``w``."""
    table = {"use": "mclinear", "order": order, "channels": 2, "adapt": False}
    pred = plugins.create("predictor", table, WHERE)
    pred.set_initial_weights(np.clip(w, -(2**23), 2**23).astype(np.int32).reshape(-1))
    res = pred.encode(x)
    return sum(len(coder.encode(r)) for r in res) * 8 / res.size


def hierarchy_bits(node, x, order, coder):
    """Bits per sample of a hierarchy node on block ``x``: the candidate its encoder signals
    (qres.lora.personal.Personal.choose), plus the index's bits spread over the block."""
    index = node.choose(x)
    return bits(node.candidate(index), x, order, coder) + node.index_bits() / x.size


def mean_rows(rows):
    """The integer mean of equal-shaped int arrays, rounded by the rule."""
    return div_round(np.sum(rows, axis=0, dtype=np.int64), len(rows))


def gershgorin(m):
    """An upper bound of the largest eigenvalue of a symmetric Q16.16 matrix (at least 1)."""
    return max(1, int(np.abs(np.asarray(m, np.int64)).sum(axis=1).max()))


class Baselines:
    """local, FedAvg, Ditto and FedRep side by side, on integer steps."""

    def __init__(self, n, shape, order, lr_q, ditto_q, seed):
        self.order, self.lr_q, self.ditto_q = order, lr_q, ditto_q
        self.local = [np.zeros(shape, np.int64) for _ in range(n)]
        self.glob = np.zeros(shape, np.int64)
        self.ditto = [np.zeros(shape, np.int64) for _ in range(n)]
        cfg = NumpyLoRAConfig(d_in=shape[1], d_out=shape[0], rank=shape[0], seed=seed)
        self.rep = initial_a_q16(cfg).astype(np.int64)  # R: k x d_in, shared
        self.head = [np.zeros((shape[0], shape[0]), np.int64) for _ in range(n)]

    def weights(self, scheme, i):
        """Node i's weight under ``scheme``."""
        if scheme == "local":
            return self.local[i]
        if scheme == "fedavg":
            return self.glob
        if scheme == "ditto":
            return self.ditto[i]
        return div_round(self.head[i] @ self.rep, ONE)

    def learn(self, train):
        """One round of every baseline on the nodes' windows; returns FedAvg's mean step."""
        p, lr = self.order, self.lr_q
        steps = [mclinear.batch_step(self.glob, t, p, lr) for t in train]
        mean_step = mean_rows(steps)
        reps = []
        for i, t in enumerate(train):
            self.local[i] = self.local[i] + mclinear.batch_step(self.local[i], t, p, lr)
            v = self.ditto[i]
            pull = div_round((self.glob - v) * div_round(lr * self.ditto_q, ONE), ONE)
            self.ditto[i] = v + mclinear.batch_step(v, t, p, lr) + pull
            reps.append(self._fedrep(i, t))
        self.glob = self.glob + mean_step
        self.rep = mean_rows(reps)
        return mean_step

    def _fedrep(self, i, t):
        """FedRep's local round: a head step with R fixed, then a step of R (returned)."""
        p, lr, r = self.order, self.lr_q, self.rep
        step = mclinear.batch_step(div_round(self.head[i] @ r, ONE), t, p, lr).astype(np.int64)
        self.head[i] = self.head[i] + div_round(step @ r.T, gershgorin(div_round(r @ r.T, ONE)))
        h = self.head[i]
        step = mclinear.batch_step(div_round(h @ r, ONE), t, p, lr).astype(np.int64)
        scale = gershgorin(div_round(h.T @ h, ONE)) + ONE
        return r + div_round(h.T @ step, scale)


def exchange(nodes, groups, r, last):
    """The hierarchy's shared layer of round r (they take turns), averaged over its group:
    all nodes for the foundation and swarm layers, each domain's nodes for the domain layer
    (``last`` keeps each domain's newest aggregate, which a node joining it takes)."""
    role = SHARED_ROLES[r % len(SHARED_ROLES)]
    parts = {None: list(range(len(nodes)))} if role != "domain" else groups
    for g, members in parts.items():
        sent = [nodes[i].shared(role) for i in members]
        avg = {k: mean_rows([s[k] for s in sent]) for k in sent[0]}
        if role == "domain":
            last[g] = avg
        for i in members:
            nodes[i].absorb(role, avg, len(members))


def run(args):
    need = args.nodes * (args.rounds * args.window + args.eval + args.order + 1)
    doms = domains(args.data, need, args.files, args.first_channel)
    if not doms:
        sys.exit("no recording has two channels of enough samples; lower --rounds or --nodes")
    streams, groups = [], {}
    piece = need // args.nodes
    for d, (_, x) in enumerate(doms):
        for k in range(args.nodes):
            groups.setdefault(d, []).append(len(streams))
            streams.append(x[:, k * piece : (k + 1) * piece])
    switched = switch_plan(args, groups)
    shared = groups if args.domains == "declared" else None
    per_round, nodes, regroup = simulate(args, streams, shared, switched)
    scores = {s: per_round[s].mean(axis=0) for s in SCHEMES}
    report(args, doms, groups, scores, nodes, (2, 2 * args.order))
    if regroup is not None:
        print_domains(doms, groups, regroup, scores)
    if switched:
        steady, _, _ = simulate(args, streams, shared, {})
        print_switch(args, per_round, steady, switched)
    if args.state:
        with open(args.state, "w") as f:
            json.dump(nodes[0].to_state(), f)


def simulate(args, streams, groups, switched):
    """Every scheme over the rounds; ``switched`` maps a node to the node whose stream it
    reads inside the ``--switch`` span; ``groups`` are the declared domains, or None to
    discover them and keep them current (qres.lora.domains.Regrouping). Returns the bits per
    round and node of each scheme, the hierarchy's nodes and the regrouping (or None)."""
    coder = plugins.create("coder", {"use": "rice"}, WHERE)
    p, shape = args.order, (2, 2 * args.order)
    lr_q = from_float(args.lr)
    base = Baselines(len(streams), shape, p, lr_q, from_float(args.ditto_lambda), args.seed)
    hset = HierarchySettings(**dict(_setting(kv) for kv in args.set))
    pset = PersonalSettings(channels=2, order=p, lr=args.lr, score_shift=args.score_shift)
    nodes = [Personal(hset, pset, seed=args.seed, coder=coder) for _ in streams]
    per_round = {s: np.zeros((args.rounds, len(streams))) for s in SCHEMES}
    regroup = None
    if groups is None:
        regroup = regrouping(args, hset, streams)
        groups = regroup.groups()
    direction, last = None, {}
    for r in range(args.rounds):
        lo = r * args.window
        source = [switched.get(i, i) if in_switch(args, r) else i for i in range(len(streams))]
        train = [streams[j][:, lo : lo + args.window + p + 1] for j in source]
        test = [streams[j][:, lo + args.window : lo + args.window + args.eval] for j in source]
        for i, t in enumerate(test):
            for s in SCHEMES[:-1]:
                per_round[s][r, i] = bits(base.weights(s, i), t, p, coder)
            if args.ditto_choice:  # Ditto's own model or the global one, one bit per block
                shared_bits = bits(base.glob, t, p, coder)
                per_round["ditto"][r, i] = min(per_round["ditto"][r, i], shared_bits) + 1 / t.size
            per_round["hierarchy"][r, i] = hierarchy_bits(nodes[i], t, p, coder)
        mean_step = base.learn(train)
        for i, t in enumerate(train):
            nodes[i].learn(t, direction)
        if regroup is not None and r > 0 and hset.domain_patience:
            changed = {i for i, node in enumerate(nodes) if node.changes[-1:] == [r]}
            for i, _, new in regroup.observe([signature(t) for t in train], changed):
                if new in last:  # the joining node takes the domain's newest aggregate
                    nodes[i].absorb("domain", last[new], len(groups.get(new, ())) + 1)
            groups = regroup.groups()
        exchange(nodes, groups, r, last)
        direction = -mean_step if mean_step.any() else None
    return per_round, nodes, regroup


def regrouping(args, hset, streams):
    """The domains qres.lora.domains finds from each node's first training window, kept
    current as the streams change."""
    first = [x[:, : args.window + args.order + 1] for x in streams]
    margin = hset.q(hset.domain_margin)
    return Regrouping([signature(w) for w in first], margin, hset.domain_patience)


def print_domains(doms, groups, regroup, scores):
    """The same bits per discovered domain (as found from the first windows), with the
    recordings each one holds, and the nodes that moved to another domain later."""
    owner = {i: d for d, members in groups.items() for i in members}
    found = {}
    for i, g in enumerate(regroup.first):
        found.setdefault(g, []).append(i)
    moves = ", ".join(f"node {i} {a}->{b} at round {r}" for r, i, a, b in regroup.moves)
    print(f"discovered domains: {len(found)} (from each node's first window)")
    print(f"moves to another domain: {len(regroup.moves)}" + (f" ({moves})" if moves else ""))
    print(f"{'domain: recordings (nodes)':44s}" + "".join(f"{s:>11s}" for s in SCHEMES))
    for g, members in found.items():
        names = [doms[owner[i]][0][:10] for i in members]
        counts = ", ".join(f"{n} {names.count(n)}" for n in dict.fromkeys(names))
        row = "".join(f"{scores[s][members].mean():11.3f}" for s in SCHEMES)
        print(f"{f'{g}: {counts}'[:44]:44s}{row}")
    for g, members in found.items():
        names = [doms[owner[i]][0] for i in members]
        listed = ", ".join(f"{n} x{names.count(n)}" for n in dict.fromkeys(names))
        print(f"  domain {g}: {listed}")


def switch_plan(args, groups):
    """With ``--switch A:B``: the first node of each recording reads the next recording's
    first node's stream from round A to round B - 1 (node -> node it reads)."""
    if not args.switch:
        return {}
    heads = [members[0] for members in groups.values()]
    return {h: heads[(k + 1) % len(heads)] for k, h in enumerate(heads)}


def in_switch(args, r):
    """Whether round r is inside the ``--switch`` span."""
    return bool(args.switch) and args.switch[0] <= r < args.switch[1]


def adaptation(series, start, end):
    """Rounds from ``start`` until the bits are within 10% of their best over [start, end)."""
    best = series[start:end].min()
    return next(r - start for r in range(start, end) if series[r] <= 1.1 * best)


def caught_up(series, reference, start, end):
    """Rounds from ``start`` until the bits are within 10% of ``reference`` on the same
    blocks (``end - start`` when never)."""
    late = (r - start for r in range(start, end) if series[r] <= 1.1 * reference[r])
    return next(late, end - start)


def print_switch(args, per_round, steady, switched):
    """Mean over the switched nodes of: adaptation (rounds to within 10% of the best on the
    new stream); adaptation against the stream's own node (rounds until the switched node
    codes each block within 10% of what the node that reads that stream all along codes it
    with, in the run without the switch, under the best scheme on that block: the same
    blocks, so a stream that gets easier or harder later does not count as adapting);
    forgetting as the mean bits of the first three rounds back over the last three before
    the switch; and forgetting against the same rounds of a run without the switch (the bits
    the switch cost on the old stream: 1.0 when nothing was lost, whatever the stream does
    meanwhile)."""
    a, b = args.switch
    nodes = sorted(switched)
    print(f"switch: nodes {nodes} read another recording in rounds {a}..{b - 1}")
    print(f"{'':44s}" + "".join(f"{s:>11s}" for s in SCHEMES))
    rows = {
        "rounds to adapt (within 10% of best)": [],
        "rounds to adapt (within 10% of stream's own)": [],
        "forgetting (bits back / bits before)": [],
        "forgetting (bits back / without switch)": [],
    }
    names = list(rows)
    own = {i: np.min([steady[s][:, switched[i]] for s in SCHEMES], axis=0) for i in nodes}
    for s in SCHEMES:
        x, y = per_round[s], steady[s]
        rows[names[0]].append(np.mean([adaptation(x[:, i], a, b) for i in nodes]))
        rows[names[1]].append(np.mean([caught_up(x[:, i], own[i], a, b) for i in nodes]))
        rows[names[2]].append(
            np.mean([x[b : b + 3, i].mean() / x[a - 3 : a, i].mean() for i in nodes])
        )
        rows[names[3]].append(
            np.mean([x[b : b + 3, i].mean() / y[b : b + 3, i].mean() for i in nodes])
        )
    for name, values in rows.items():
        print(f"{name:44s}" + "".join(f"{v:11.3f}" for v in values))
    print("per switched node, rounds to adapt (within 10% of best / of stream's own):")
    for s in SCHEMES:
        x = per_round[s]
        best = ",".join(str(adaptation(x[:, i], a, b)) for i in nodes)
        mine = ",".join(str(caught_up(x[:, i], own[i], a, b)) for i in nodes)
        print(f"  {s:10s} {best:24s} / {mine}")


def report(args, doms, groups, scores, nodes, shape):
    """Print the table."""
    print(
        f"{len(doms)} domains ({args.files} files) x {args.nodes} nodes, {args.rounds} rounds, "
        f"order {args.order}, window {args.window}, eval {args.eval}; bits/sample, all rounds"
    )
    print(f"{'domain':44s}" + "".join(f"{s:>11s}" for s in SCHEMES))
    for d, members in groups.items():
        row = "".join(f"{scores[s][members].mean():11.3f}" for s in SCHEMES)
        print(f"{doms[d][0][:44]:44s}{row}")
    print(f"{'all nodes':44s}" + "".join(f"{scores[s].mean():11.3f}" for s in SCHEMES))
    size = shape[0] * shape[1]
    sent = -(-nodes[0].shared_parameters() // len(SHARED_ROLES))
    print(
        f"{'parameters sent per node per round':44s}{0:11d}{size:11d}{size:11d}{size:11d}{sent:11d}"
    )
    healthy = sum(n.h.health().status == "HEALTHY" for n in nodes)
    depth = np.bincount([n.depth() for n in nodes], minlength=len(ROLES))
    chosen = ", ".join(f"{ROLES[d]} {c}" for d, c in enumerate(depth) if c)
    print(
        f"hierarchy: {healthy}/{len(nodes)} nodes HEALTHY, "
        f"{sum(n.h.migrations for n in nodes)} migrations; depth chosen at the end: {chosen}"
    )


def _setting(text):
    """``key=value`` of a [lora] setting; the value is read as JSON (numbers, lists)."""
    key, _, value = text.partition("=")
    return key, json.loads(value)


def _span(text):
    a, _, b = text.partition(":")
    a, b = int(a), int(b)
    if not 0 < a < b:
        raise argparse.ArgumentTypeError("A:B with 0 < A < B")
    return a, b


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--data",
        default=os.environ.get("QRES_DATA", "../shared/data"),
        help="MANIFEST folder (default: $QRES_DATA or ../shared/data)",
    )
    ap.add_argument("--files", choices=("tune", "held-out", "all"), default="all")
    ap.add_argument("--first-channel", type=int, default=0, help="the pair starts here")
    ap.add_argument("--nodes", type=int, default=3, help="nodes per recording")
    ap.add_argument("--rounds", type=int, default=24)
    ap.add_argument("--window", type=int, default=256)
    ap.add_argument("--eval", type=int, default=1024)
    ap.add_argument("--order", type=int, default=2)
    ap.add_argument("--lr", type=float, default=0.5)
    ap.add_argument("--ditto-lambda", type=float, default=0.1)
    ap.add_argument(
        "--ditto-choice",
        action="store_true",
        help="Ditto codes each block with its personal or the global model, whichever is "
        "cheaper, and signals it (one bit per block), as the hierarchy's encoder chooses",
    )
    ap.add_argument("--score-shift", type=int, default=2, help="depth scores: weight 2**-N")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--switch",
        type=_span,
        default=None,
        metavar="A:B",
        help="the first node of each recording reads the next one in rounds A..B-1",
    )
    ap.add_argument(
        "--domains",
        choices=("declared", "discovered"),
        default="declared",
        help="the domain layer's groups: the recordings, or found from the data",
    )
    ap.add_argument("--state", default=None, help="write node 0's hierarchy state (JSON) here")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a [lora] setting for the hierarchy, e.g. --set decay_free=0.01",
    )
    run(ap.parse_args(argv))


if __name__ == "__main__":
    main()
