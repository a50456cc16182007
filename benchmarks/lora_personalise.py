"""Coded bits per sample of personalised predictors on the shared corpus (non-IID).

Every multichannel recording of the corpus is a *domain*; ``--nodes`` nodes read contiguous,
disjoint pieces of its first two channels (normalised by qres.learning.task.normalise). Each
node predicts with the ``mclinear`` model (2 channels, ``--order`` differences, W of 2 x 2p
Q16.16) and codes its next ``--eval`` samples with the Rice coder, after each of ``--rounds``
rounds of training on its next ``--window`` samples (a stream that moves on). Four schemes,
each from W = 0 (persistence):

* ``local``: each node fits its own W (batch_step), no communication;
* ``global``: one W, every node's step averaged each round (FedAvg);
* ``hierarchy``: W = 0 frozen plus the qres.lora hierarchy per node; the foundation and swarm
  layers are averaged over all nodes, the domain layer over the nodes of the same recording,
  agent and context stay on the node; the swarm's mean step drives horizontal resonance;
* ``global+local``: the FedAvg W plus each node's own correction fitted on top (a simple
  personalised baseline, "fine-tune the global model").

Printed: mean bits per sample over the last ``--tail`` rounds, per domain and over all nodes,
and the parameters each node sends per round. Deterministic: integer training throughout.

    QRES_DATA=/work/shared/data .venv/bin/python benchmarks/lora_personalise.py
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
from qres.builtin_plugins.predictors import mclinear

from qres.fixed.q16 import ONE
from qres.kernel import plugins
from qres.kernel.config import Location
from qres.learning.corpus import read_entry, read_manifest
from qres.learning.task import normalise
from qres.lora import Hierarchy, HierarchySettings
from qres.lora.hierarchy import SHARED_ROLES
from qres.robust.aggregate import div_round

WHERE = Location("<benchmark>", "lora")
SCHEMES = ("local", "global", "global+local", "hierarchy")


def domains(folder, length):
    """(name, (2, n) int64) for every recording with two usable channels of ``length``."""
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


def bits(w, x, order, coder):
    """Rice-coded bits per sample of ``x`` predicted by fixed weights ``w``."""
    table = {"use": "mclinear", "order": order, "channels": 2, "adapt": False}
    pred = plugins.create("predictor", table, WHERE)
    pred.set_initial_weights(np.clip(w, -(2**23), 2**23).astype(np.int32).reshape(-1))
    res = pred.encode(x)
    return sum(len(coder.encode(r)) for r in res) * 8 / res.size


def mean_rows(rows):
    """The integer mean of equal-shaped int arrays, rounded by the rule."""
    return div_round(np.sum(rows, axis=0, dtype=np.int64), len(rows))


def average_shared(hs, groups):
    """FedAvg of the shared layers' A and B: foundation and swarm over all, domain per group."""
    for role in SHARED_ROLES:
        parts = [list(range(len(hs)))] if role != "domain" else list(groups.values())
        for members in parts:
            for attr in ("a", "b"):
                avg = mean_rows([getattr(hs[i].layers[role], attr) for i in members])
                for i in members:
                    setattr(hs[i].layers[role], attr, avg.astype(np.int32))


def run(args):
    need = args.nodes * (args.rounds * args.window + args.eval + args.order + 1)
    doms = domains(args.data, need)
    if not doms:
        sys.exit("no recording has two channels of enough samples; lower --rounds or --nodes")
    nodes, groups = [], {}
    piece = need // args.nodes
    for d, (name, x) in enumerate(doms):
        for k in range(args.nodes):
            groups.setdefault(d, []).append(len(nodes))
            nodes.append((name, x[:, k * piece : (k + 1) * piece]))
    coder = plugins.create("coder", {"use": "rice"}, WHERE)
    p, shape = args.order, (2, 2 * args.order)
    lr = int(args.lr * ONE)
    local = [np.zeros(shape, np.int64) for _ in nodes]
    glob = np.zeros(shape, np.int64)
    corr = [np.zeros(shape, np.int64) for _ in nodes]
    settings = HierarchySettings(**dict(_setting(kv) for kv in args.set))
    hs = [Hierarchy(settings, shape[0], shape[1], seed=args.seed) for _ in nodes]
    scores = {s: np.zeros(len(nodes)) for s in SCHEMES}
    last_dir = None
    for r in range(args.rounds):
        lo = r * args.window
        train = [x[:, lo : lo + args.window + p + 1] for _, x in nodes]
        test = [x[:, lo + args.window : lo + args.window + args.eval] for _, x in nodes]
        steps = [mclinear.batch_step(glob, t, p, lr) for t in train]
        mean_step = mean_rows(steps)
        glob = glob + mean_step
        for i, t in enumerate(train):
            local[i] = local[i] + mclinear.batch_step(local[i], t, p, lr)
            corr[i] = corr[i] + mclinear.batch_step(glob + corr[i], t, p, lr)
            w = hs[i].delta().astype(np.int64)
            grad = -mclinear.batch_step(w, t, p, ONE)  # minus the normalised step: dLoss/dW
            for role in ("foundation", "domain", "swarm", "agent", "context"):
                hs[i].update(role, grad, lr, direction=last_dir)
            hs[i].tick()
        average_shared(hs, groups)
        last_dir = -mean_step if mean_step.any() else None
        if r >= args.rounds - args.tail:
            for i, t in enumerate(test):
                scores["local"][i] += bits(local[i], t, p, coder)
                scores["global"][i] += bits(glob, t, p, coder)
                scores["global+local"][i] += bits(glob + corr[i], t, p, coder)
                scores["hierarchy"][i] += bits(hs[i].delta(), t, p, coder)
    for s in SCHEMES:
        scores[s] /= args.tail
    sent = sum(hs[0].layers[r].params for r in SHARED_ROLES)
    print(
        f"{len(doms)} domains x {args.nodes} nodes, {args.rounds} rounds, order {p}, "
        f"window {args.window}, eval {args.eval}; bits/sample, mean of the last {args.tail}"
    )
    print(f"{'domain':44s}" + "".join(f"{s:>14s}" for s in SCHEMES))
    for d, members in groups.items():
        row = "".join(f"{scores[s][members].mean():14.3f}" for s in SCHEMES)
        print(f"{doms[d][0][:44]:44s}{row}")
    print(f"{'all nodes':44s}" + "".join(f"{scores[s].mean():14.3f}" for s in SCHEMES))
    print(
        f"{'parameters sent per node per round':44s}{0:14d}{glob.size:14d}{glob.size:14d}{sent:14d}"
    )
    health = sum(h.health().status == "HEALTHY" for h in hs)
    print(
        f"hierarchy: {health}/{len(hs)} nodes HEALTHY, {sum(h.migrations for h in hs)} migrations"
    )


def _setting(text):
    """``key=value`` of a [lora] setting; the value is read as JSON (numbers, lists)."""
    import json

    key, _, value = text.partition("=")
    return key, json.loads(value)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--data", default=None, help="MANIFEST folder (default: $QRES_DATA or ../shared/data)"
    )
    ap.add_argument("--nodes", type=int, default=3, help="nodes per recording")
    ap.add_argument("--rounds", type=int, default=24)
    ap.add_argument("--window", type=int, default=256)
    ap.add_argument("--eval", type=int, default=1024)
    ap.add_argument("--order", type=int, default=2)
    ap.add_argument("--lr", type=float, default=0.5)
    ap.add_argument("--tail", type=int, default=6)
    ap.add_argument("--seed", type=int, default=0)
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
