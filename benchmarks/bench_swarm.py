"""Swarm simulator benchmarks (pytest-benchmark)::

    .venv/bin/pytest benchmarks/bench_swarm.py --benchmark-only

* a whole ``swarm-100`` run of 20 rounds under the ALIE attack (30 Byzantine nodes);
* one round's parts at 10,000 nodes and 64 weights: local training, the receivers' update
  test (``window_errors`` on 40,000 node-update pairs) and a batch of 40,000 messages through
  the in-process transport.

The scale target (10,000 nodes x 100 rounds x 64 weights under 10 minutes) is measured
by ``benchmarks/swarm_targets.py --only scale``.
"""

from __future__ import annotations

import numpy as np
import pytest

from qres.kernel import plugins, profiles
from qres.kernel.config import Location
from qres.learning import task as learning
from qres.swarm import gossip
from qres.swarm.data import GeneratedData
from qres.swarm.engine import Simulation, settings_from_profile
from qres.swarm.settings import SwarmSettings

BIG = SwarmSettings(nodes=10_000, order=64, window=128)


@pytest.fixture(scope="module")
def windows():
    return GeneratedData(BIG, 0).windows(3, np.arange(BIG.nodes))


def test_swarm_100_twenty_rounds(benchmark):
    prof = profiles.load("swarm-100")
    settings = settings_from_profile(prof, rounds=20, byzantine=0.3)
    report = benchmark(lambda: Simulation(prof, settings, attack="alie").run())
    assert report["banned_honest"] == 0


def test_local_training_10k_x_64(benchmark, windows):
    w = learning.zero_weights(64, BIG.nodes)
    ts = learning.TrainSettings(order=64, window=128, lr=0.5)
    delta = benchmark(learning.local_update, w, windows, ts)
    assert delta.shape == (BIG.nodes, 64)


def test_receiver_test_40k_pairs(benchmark, windows):
    rng = np.random.default_rng(0)
    dst = rng.integers(0, BIG.nodes, 40_000)
    w = rng.integers(-30_000, 30_000, (40_000, 64)).astype(np.int64)
    out = benchmark(gossip.window_errors, w, windows[dst], 64, 32)
    assert out.shape == (40_000,)


def test_transport_batch_40k(benchmark):
    def go():
        t = plugins.create(
            "transport",
            {"use": "inproc", "loss": 0.02, "delay_max": 1, "queue_limit": 100},
            Location("bench"),
        )
        src = np.arange(40_000) % BIG.nodes
        t.send_batch(src, (src * 7 + 1) % BIG.nodes, np.full(40_000, 464), np.arange(40_000))
        t.advance(1)
        return t.receive_batch()

    got = benchmark(go)
    assert got[0].shape[0] > 38_000
