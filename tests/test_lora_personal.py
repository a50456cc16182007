"""A node's personalised model: dense layers on small weights, depth training and choice,
the shared exchange, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from qres.fixed.q16 import ONE
from qres.kernel.errors import QresError
from qres.lora import HierarchySettings
from qres.lora.hierarchy import Hierarchy
from qres.lora.layer import is_dense
from qres.lora.personal import Personal, PersonalSettings, mean_abs_error


def _ar_stream(n, coef, seed, noise=3.0):
    """Two coupled AR(2) channels (their differences follow ``coef``), within +-2**11."""
    rng = np.random.default_rng(seed)
    d = np.zeros((2, n))
    for t in range(2, n):
        d[:, t] = coef @ np.concatenate([d[:, t - 1], d[:, t - 2]]) + rng.normal(0, noise, 2)
    x = np.cumsum(d, axis=1)
    x -= x.mean(axis=1, keepdims=True)
    return np.clip(np.rint(x), -2047, 2047).astype(np.int64)


COEF = np.array([[0.6, 0.2, -0.1, 0.0], [0.3, 0.5, 0.0, -0.2]])


def test_small_weights_get_dense_layers_wide_ones_low_rank():
    assert is_dense(1, 2, 4) and is_dense(2, 2, 4)
    assert not is_dense(1, 4, 8) and not is_dense(8, 128, 128)
    h = Hierarchy(HierarchySettings(), 2, 4)
    assert all(layer.dense for layer in h.layers.values())
    layer = h.layers["agent"]
    assert layer.rank == 4 and np.array_equal(layer.a, np.eye(4, dtype=np.int32) * ONE)
    grad = np.arange(8, dtype=np.int64).reshape(2, 4) * ONE // 8
    h.update("agent", grad, ONE // 2)
    assert np.array_equal(layer.a, layer.a0)  # A stays the identity: B is the dense delta
    assert np.array_equal(layer.delta(), layer.b)
    wide = Hierarchy(HierarchySettings(), 16, 64)
    assert not wide.layers["context"].dense and wide.layers["context"].rank == 1


def test_personal_learns_a_coupled_stream_and_beats_persistence():
    x = _ar_stream(40 * 128, COEF, seed=1)
    node = Personal(HierarchySettings(), PersonalSettings(channels=2, order=2))
    zero = np.zeros((2, 4), np.int64)
    for r in range(30):
        node.learn(x[:, r * 128 : r * 128 + 131])
    test = x[:, 30 * 128 :]
    assert mean_abs_error(node.weights(), test, 2) < 0.85 * mean_abs_error(zero, test, 2)
    assert node.depth() >= 3  # the node's own layers carry its dynamics
    assert len(node.trace) == 30 and len(node.trace[0]) == 5


def test_on_white_differences_the_choice_is_no_worse_than_persistence():
    rng = np.random.default_rng(2)
    x = np.cumsum(rng.integers(-20, 21, (2, 40 * 64)), axis=1)  # a random walk: persistence
    x = np.clip(x - x.mean(axis=1, keepdims=True), -2047, 2047)
    node = Personal(HierarchySettings(), PersonalSettings(channels=2, order=2, lr=1.0))
    for r in range(30):
        node.learn(x[:, r * 64 : r * 64 + 67])
    assert node.scores[node.depth()] == min(node.scores)
    test, zero = x[:, 30 * 64 :], np.zeros((2, 4), np.int64)
    assert mean_abs_error(node.weights(), test, 2) <= 1.02 * mean_abs_error(zero, test, 2)


def test_shared_exchange_and_its_checks():
    node = Personal(HierarchySettings(), PersonalSettings())
    parts = node.shared("domain")
    assert set(parts) == {"b"} and parts["b"].shape == (2, 4)
    parts["b"][:] = ONE // 4
    node.absorb("domain", parts, contributors=5)
    assert node.peers["domain"] == 4 and int(node.h.layers["domain"].b[0, 0]) == ONE // 4
    assert node.shared_parameters() == 3 * 8
    with pytest.raises(QresError, match="stays on the node"):
        node.shared("agent")
    with pytest.raises(QresError, match="shape"):
        node.absorb("swarm", {"b": np.zeros((3, 3), np.int32)}, 2)


def test_same_windows_same_state():
    x = _ar_stream(12 * 64, COEF, seed=3)

    def run():
        nodes = [Personal(HierarchySettings(), PersonalSettings()) for _ in range(2)]
        for r in range(10):
            for n in nodes:
                n.learn(x[:, r * 64 : r * 64 + 67])
            avg = (
                nodes[0].shared("swarm")["b"].astype(np.int64) + nodes[1].shared("swarm")["b"]
            ) // 2
            for n in nodes:
                n.absorb("swarm", {"b": avg}, 2)
        return nodes[0].to_state()

    assert run() == run()


COEF_B = np.array([[-0.5, 0.0, 0.3, 0.1], [0.0, -0.6, 0.1, 0.2]])


def _switching(bank_size, coder=None):
    """A node on stream A for 16 windows, stream B (other dynamics, 8x the noise) for 12,
    then A again for 6; returns the node and its error per window before learning it."""
    a, b = _ar_stream(34 * 130, COEF, 1), _ar_stream(12 * 130, COEF_B, 2, noise=24.0)
    windows = [a[:, k * 130 : k * 130 + 131] for k in range(16)]
    windows += [b[:, k * 130 : k * 130 + 131] for k in range(12)]
    windows += [a[:, k * 130 : k * 130 + 131] for k in range(28, 34)]
    node = Personal(HierarchySettings(bank_size=bank_size), PersonalSettings(), coder=coder)
    errs = []
    for w in windows:
        errs.append(mean_abs_error(node.weights(), w, 2))
        node.learn(w)
    return node, errs


def test_a_change_of_stream_is_found_and_the_old_local_layers_come_back():
    node, errs = _switching(bank_size=4)
    assert 16 in node.changes and 28 in node.changes  # found at once, both ways
    assert all(16 <= c for c in node.changes)  # nothing within the first stream
    assert node.recalled >= 1
    plain, plain_errs = _switching(bank_size=0)
    assert plain.recalled == 0 and not plain.bank
    # back on A, the restored adapters predict better than the ones B overwrote
    assert sum(errs[29:31]) < sum(plain_errs[29:31])


def test_bank_is_bounded_and_scored_by_the_coder_when_given_one():
    from qres.kernel import plugins
    from qres.kernel.config import Location

    coder = plugins.create("coder", {"use": "rice"}, Location("test"))
    node, _ = _switching(bank_size=1, coder=coder)
    assert len(node.bank) == 1 and node.changes
    again, _ = _switching(bank_size=1, coder=coder)
    assert again.changes == node.changes and again.scores == node.scores  # deterministic


def _rice():
    from qres.kernel import plugins
    from qres.kernel.config import Location

    return plugins.create("coder", {"use": "rice"}, Location("test"))


def _coded_switching(choice="signalled"):
    """The switching streams of :func:`_switching`, each window first coded as a block and
    then learned; returns the node, per block the signalled index and the bits (Q16.16) of
    the chosen candidate and of the scored depth, and the windows."""
    a, b = _ar_stream(34 * 130, COEF, 1), _ar_stream(12 * 130, COEF_B, 2, noise=24.0)
    windows = [a[:, k * 130 : k * 130 + 131] for k in range(16)]
    windows += [b[:, k * 130 : k * 130 + 131] for k in range(12)]
    windows += [a[:, k * 130 : k * 130 + 131] for k in range(28, 34)]
    node = Personal(HierarchySettings(block_choice=choice), PersonalSettings(), coder=_rice())
    picked, chosen, scored = [], [], []
    for w in windows:
        index = node.choose(w)
        picked.append(index)
        chosen.append(node.cost(node.candidate(index), w))
        scored.append(node.cost(node.weights(), w))
        node.learn(w)
    return node, picked, (chosen, scored), windows


def test_the_encoder_signals_the_candidate_that_codes_the_block_in_fewest_bits():
    node, picked, (chosen, scored), windows = _coded_switching()
    assert all(c <= s for c, s in zip(chosen, scored, strict=True))
    block = windows[-1]
    assert node.bank  # candidates beyond the depths exist
    usable = 5 + 2 * len(node.bank)
    costs = [node.cost(node.candidate(i), block) for i in range(usable)]
    index = node.choose(block)
    assert costs[index] == min(costs) and index == costs.index(min(costs))  # ties: lowest
    # the index field: ceil(log2(5 depths + 2 local depths x bank_size 4)) = 4 bits
    assert node.slots() == 13 and node.index_bits() == 4
    with pytest.raises(QresError, match="outside"):
        node.candidate(13)
    with pytest.raises(QresError, match="empty"):
        node.candidate(5 + 2 * len(node.bank))


def test_a_returning_stream_is_coded_by_its_banked_adapter_on_its_first_block():
    node, picked, (chosen, scored), _ = _coded_switching()
    assert 16 in node.changes  # B came: A's local layers went to the bank
    assert all(i < 5 for i in picked[:17])  # nothing banked before the first change
    assert picked[28] >= 5  # the first block of A again names a bank entry
    assert chosen[28] < scored[28]  # and codes it in fewer bits than the scored depth
    plain, plain_picked, (plain_chosen, _), _ = _coded_switching("scored")
    assert plain.index_bits() == 0 and plain_picked == plain.depths
    assert chosen[28] < plain_chosen[28]


def test_the_decoder_follows_the_signalled_index_to_the_same_weights():
    _, picked, _, windows = _coded_switching()
    encoder = Personal(HierarchySettings(), PersonalSettings(), coder=_rice())
    decoder = Personal(HierarchySettings(), PersonalSettings(), coder=_rice())
    for w, index in zip(windows, picked, strict=True):
        assert encoder.choose(w) == index  # the same blocks give the same choices
        # the decoder has not seen the block: it takes the index from the stream
        assert np.array_equal(decoder.candidate(index), encoder.candidate(index))
        encoder.learn(w)
        decoder.learn(w)
