"""qres aggregators inside Flower: the float <-> Q16.16 mapping, order independence, and one
real Flower simulation (Ray backend, in-process ClientApps) where 6 of 20 clients attack:
Flower's FedAvg is dragged away while QresStrategy(adaptive) stays with the attack-free run."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("flwr")
pytest.importorskip("ray")

from qres.integrations.flower import QresStrategy, common_scale, from_q16, to_q16  # noqa: E402

N_CLIENTS, N_BYZANTINE, DIM, ROUNDS = 20, 6, 8, 15
TRUE = np.linspace(-1.0, 1.0, DIM)


def test_scale_is_the_median_peak_rounded_up_to_a_power_of_two():
    rows = np.array([[0.1, -0.3], [0.2, 0.05], [1e9, 0.0]])
    assert common_scale(rows) == 0.5
    assert common_scale(np.zeros((3, 2))) == 1.0


def test_q16_mapping_resolution_and_saturation():
    rows = np.array([[0.25, -0.5, 1e12, -np.inf, np.nan]])
    q = to_q16(rows, 0.5)
    assert q.tolist() == [[32768, -65536, 2**31 - 1, -(2**31), 0]]
    back = from_q16(q, 0.5)
    assert back[0, 0] == 0.25 and back[0, 1] == -0.5


@pytest.mark.parametrize("rule", ["trimmed-mean", "krum", "adaptive"])
def test_aggregate_does_not_depend_on_reply_order(rule):
    rng = np.random.default_rng(3)
    q = rng.integers(-5000, 5000, size=(9, 6)).astype(np.int32)
    nodes = list(range(100, 109))
    first = QresStrategy(rule=rule, f=2)._aggregate(q, nodes, 1)
    perm = rng.permutation(9)
    second = QresStrategy(rule=rule, f=2)._aggregate(q[perm], [nodes[i] for i in perm], 1)
    assert np.array_equal(first, second)


def prediction_error(w: np.ndarray) -> float:
    """Mean squared prediction error of ``w`` on held-out data of the same kind."""
    rng = np.random.default_rng(12345)
    x = rng.normal(size=(4000, DIM))
    y = x @ TRUE + rng.normal(scale=0.1, size=4000)
    return float(np.mean((x @ w - y) ** 2))


def _client_app():
    from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp

    app = ClientApp()

    @app.train()
    def train(msg, ctx):
        pid = int(ctx.node_config["partition-id"])
        w0 = msg.content["arrays"].to_numpy_ndarrays()[0]
        rng = np.random.default_rng(pid)
        x = rng.normal(size=(200, DIM))
        y = x @ TRUE + rng.normal(scale=0.1, size=200)
        w = w0.copy()
        for _ in range(5):
            w = w - 0.1 * x.T @ (x @ w - y) / len(y)
        if pid < N_BYZANTINE and msg.content["config"]["attack"]:
            w = w0 - 10.0 * (w - w0)  # the opposite of the honest step, amplified
        content = {"arrays": ArrayRecord([w]), "metrics": MetricRecord({"num-examples": 200})}
        return Message(RecordDict(content), reply_to=msg)

    return app


@pytest.fixture(scope="module")
def flower_run():
    from flwr.app import ArrayRecord, ConfigRecord
    from flwr.serverapp import ServerApp
    from flwr.serverapp.strategy import FedAvg
    from flwr.simulation import run_simulation

    runs = {
        "fedavg, no attack": (FedAvg(fraction_evaluate=0.0), False),
        "fedavg": (FedAvg(fraction_evaluate=0.0), True),
        "qres adaptive": (
            QresStrategy(rule="adaptive", f=N_BYZANTINE, fraction_evaluate=0.0),
            True,
        ),
    }
    errors: dict[str, float] = {}
    server = ServerApp()

    @server.main()
    def main(grid, ctx):
        for name, (strategy, attack) in runs.items():
            result = strategy.start(
                grid=grid,
                initial_arrays=ArrayRecord([np.zeros(DIM)]),
                num_rounds=ROUNDS,
                train_config=ConfigRecord({"attack": attack}),
            )
            errors[name] = prediction_error(result.arrays.to_numpy_ndarrays()[0])

    run_simulation(
        server_app=server,
        client_app=_client_app(),
        num_supernodes=N_CLIENTS,
        backend_config={
            "client_resources": {"num_cpus": 1},
            "init_args": {"num_cpus": 1, "include_dashboard": False},
        },
    )
    return errors, runs["qres adaptive"][0]


def test_adaptive_holds_where_fedavg_fails(flower_run):
    errors, strategy = flower_run
    clean = errors["fedavg, no attack"]
    assert errors["fedavg"] > 10 * clean, errors
    assert errors["qres adaptive"] <= 1.10 * clean, errors
    # the attackers are the clients below full trust; every honest client keeps it
    reps = sorted(strategy.reputation(n) for n in strategy._reputation)
    assert all(r < 0.9 for r in reps[:N_BYZANTINE]), reps
    assert all(r == 1.0 for r in reps[N_BYZANTINE:]), reps
