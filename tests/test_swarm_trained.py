"""The round's training memo (:mod:`qres.swarm.trained`): a check whose claimed inputs are the
ones the sender trained from is a lookup with the re-run's bytes; any other claim misses."""

from __future__ import annotations

import attrs
import numpy as np
import pytest

from qres.fixed.q16 import sat_add
from qres.kernel import profiles
from qres.learning import task as learning
from qres.swarm.engine import Simulation, settings_from_profile
from qres.swarm.report import to_json
from qres.swarm.trained import TrainingMemo
from qres.trust.audit import to_q16

ORDER = 4
CALM = learning.TrainSettings(order=ORDER, window=12, lr=1.0)
STORM = attrs.evolve(CALM, lr=1.5)


def _inputs(seed: int, m: int = 6):
    rng = np.random.default_rng(seed)
    w = rng.integers(-(1 << 16), 1 << 16, (m, ORDER)).astype(np.int32)
    x = rng.integers(-2048, 2048, (m, CALM.span)).astype(np.int16)
    return w, x


def _rerun(w, x, ts):
    """The check's re-run, for real: update, residual and gain claims."""
    u = learning.local_update(w, x, ts)
    e0 = learning.prediction_error(w, x, ORDER)
    e1 = learning.prediction_error(sat_add(w, u), x, ORDER)
    res = np.array([to_q16(v) for v in e0.tolist()], np.int64)
    return u, res, res - np.array([to_q16(v) for v in e1.tolist()], np.int64)


def test_a_lookup_of_the_trained_inputs_gives_the_rerun_bytes():
    w, x = _inputs(0)
    memo = TrainingMemo()
    memo.record(w, x, CALM, *_rerun(w, x, CALM))
    order = np.array([4, 1, 1, 0])  # any subset, any order, repeats
    hit, u, res, gain = memo.lookup(w[order], x[order], CALM)
    assert hit.all()
    for got, want in zip((u, res, gain), _rerun(w[order], x[order], CALM), strict=True):
        assert np.array_equal(got, want)


def test_any_other_claim_misses():
    w, x = _inputs(1)
    memo = TrainingMemo()
    memo.record(w, x, CALM, *_rerun(w, x, CALM))
    moved = w.copy()
    moved[0, 2] += 1  # a moved base
    other = x.copy()
    other[1, -1] ^= 1  # another window, one bit apart
    assert not memo.lookup(moved[:1], x[:1], CALM)[0].any()
    assert not memo.lookup(w[1:2], other[1:2], CALM)[0].any()
    assert not memo.lookup(w, x, STORM)[0].any()  # other settings
    assert not memo.lookup(w, x.astype(np.int32), CALM)[0].any()  # other types
    assert not TrainingMemo().lookup(w, x, CALM)[0].any()


def _small(tmp_path, **overrides):
    path = tmp_path / "small.toml"
    path.write_text('[profile]\nextends = "swarm-100"\n[swarm]\nnodes = 30\nrounds = 8\n')
    prof = profiles.load(str(path))
    return prof, settings_from_profile(prof, **overrides)


@pytest.mark.parametrize("attack", ["alie", "base-poison"])
def test_the_memo_changes_no_byte_of_a_run(tmp_path, monkeypatch, attack):
    """The same report with the memo and with every check re-run for real, and the memo
    answered the checks (base poisoning moves bases before training: still lookups)."""
    prof, s = _small(tmp_path, byzantine=0.3)
    hits = []
    lookup = TrainingMemo.lookup

    def counting(self, w, x, ts):
        got = lookup(self, w, x, ts)
        hits.append(int(got[0].sum()))
        return got

    monkeypatch.setattr(TrainingMemo, "lookup", counting)
    memo = to_json(Simulation(prof, s, attack=attack).run())
    assert sum(hits) > 0

    def never(self, w, x, ts):
        hit, u, res, gain = lookup(self, w, x, ts)
        return np.zeros_like(hit), u, res, gain

    monkeypatch.setattr(TrainingMemo, "lookup", never)
    assert to_json(Simulation(prof, s, attack=attack).run()) == memo


def test_a_check_of_mixed_claims_reruns_only_the_misses(tmp_path):
    """Claims the round trained from are looked up, a moved base is re-run: the same bytes
    as re-running every claim."""
    prof, s = _small(tmp_path)
    sim = Simulation(prof, attrs.evolve(s, order=ORDER))
    w, x = _inputs(2)
    sim.trained.record(w[:3], x[:3], CALM, *_rerun(w[:3], x[:3], CALM))
    w[1, 0] += 7  # row 1's claim moved its base: not what was trained
    got = sim._rerun(w, x, CALM, to_q16)
    assert sim.trained.lookup(w, x, CALM)[0].tolist() == [True, False, True] + [False] * 3
    for a, b in zip(got, _rerun(w, x, CALM), strict=True):
        assert np.array_equal(a, b)
