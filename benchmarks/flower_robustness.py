"""qres aggregators inside Flower beside Flower's own robust strategies, in one Flower run.

20 in-process ClientApps (Flower's simulation engine, Ray backend) fit a linear model on their
own noisy data; with ``--byzantine 6`` that many send the opposite of their step, amplified.
Every strategy runs the same rounds on the same clients; the table gives each one's prediction
error on held-out data divided by attack-free FedAvg's, and its mean aggregation time per round
(``aggregate_train``, measured inside the run).

    .venv/bin/python benchmarks/flower_robustness.py [--rounds 15] [--byzantine 6] [--dim 64]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import ServerApp
from flwr.serverapp.strategy import FedAvg, FedMedian, FedTrimmedAvg, Krum
from flwr.simulation import run_simulation

from qres.integrations.flower import QresStrategy


def timed(strategy):
    """Wrap ``aggregate_train`` so the strategy records its own aggregation times."""
    inner = strategy.aggregate_train
    strategy.seconds = []

    def aggregate_train(server_round, replies):
        replies = list(replies)
        start = time.perf_counter()
        out = inner(server_round, replies)
        strategy.seconds.append(time.perf_counter() - start)
        return out

    strategy.aggregate_train = aggregate_train
    return strategy


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--byzantine", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--dim", type=int, default=64)
    a = ap.parse_args()
    truth = np.linspace(-1.0, 1.0, a.dim)

    def data(seed, n):
        rng = np.random.default_rng(seed)
        x = rng.normal(size=(n, a.dim))
        return x, x @ truth + rng.normal(scale=0.1, size=n)

    client = ClientApp()

    @client.train()
    def train(msg, ctx):
        pid = int(ctx.node_config["partition-id"])
        w0 = msg.content["arrays"].to_numpy_ndarrays()[0]
        x, y = data(pid, 200)
        w = w0.copy()
        for _ in range(5):
            w = w - 0.1 * x.T @ (x @ w - y) / len(y)
        if pid < a.byzantine and msg.content["config"]["attack"]:
            w = w0 - 10.0 * (w - w0)
        content = {"arrays": ArrayRecord([w]), "metrics": MetricRecord({"num-examples": 200})}
        return Message(RecordDict(content), reply_to=msg)

    f = a.byzantine
    common = {"fraction_evaluate": 0.0}
    runs = {
        "FedAvg, no attack": (FedAvg(**common), False),
        "FedAvg": (FedAvg(**common), True),
        "Flower Krum": (Krum(num_malicious_nodes=f, **common), True),
        "Flower FedMedian": (FedMedian(**common), True),
        "Flower FedTrimmedAvg": (FedTrimmedAvg(beta=f / a.clients, **common), True),
        "qres krum": (QresStrategy(rule="krum", f=f, **common), True),
        "qres trimmed-mean": (QresStrategy(rule="trimmed-mean", f=f, **common), True),
        "qres adaptive": (QresStrategy(rule="adaptive", f=f, **common), True),
    }
    x_test, y_test = data(12345, 4000)
    errors = {}
    server = ServerApp()

    @server.main()
    def run(grid, ctx):
        for name, (strategy, attack) in runs.items():
            result = timed(strategy).start(
                grid=grid,
                initial_arrays=ArrayRecord([np.zeros(a.dim)]),
                num_rounds=a.rounds,
                train_config=ConfigRecord({"attack": attack}),
            )
            w = result.arrays.to_numpy_ndarrays()[0]
            errors[name] = float(np.mean((x_test @ w - y_test) ** 2))

    run_simulation(
        server_app=server,
        client_app=client,
        num_supernodes=a.clients,
        backend_config={"client_resources": {"num_cpus": 1}, "init_args": {"num_cpus": 1}},
    )
    clean = errors["FedAvg, no attack"]
    print(f"\n{a.clients} clients, {a.byzantine} attacking, {a.rounds} rounds, d={a.dim}")
    print(f"{'strategy':24} {'error / attack-free':>20} {'ms per round':>13}")
    for name, (strategy, _) in runs.items():
        ms = 1000 * float(np.mean(strategy.seconds))
        print(f"{name:24} {errors[name] / clean:20.3f} {ms:13.2f}")


if __name__ == "__main__":
    main()
