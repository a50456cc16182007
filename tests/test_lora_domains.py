"""Domains found from the data (qres.lora.domains): scale-free integer signatures checked
against float references, clustering that recovers distinct sensors, is deterministic and
does not depend on the nodes' order."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from qres.fixed.q16 import ONE
from qres.lora.domains import Regrouping, discover, signature, silhouette
from qres.lora.swarm import generated_domains


def _float_signature(x, lags=2):
    x = np.asarray(x, dtype=float)
    out, diffs = [], []
    for row in x:
        d = np.diff(row)
        diffs.append(d)
        for lag in range(1, lags + 1):
            u, v = d[:-lag], d[lag:]
            den = np.sqrt((u * u).sum() * (v * v).sum())
            out.append((u * v).sum() / den if den else 0.0)
        dev = np.abs(row - row.mean()).mean()
        out.append(np.abs(d).mean() / dev if dev else 0.0)
    for i in range(len(diffs)):
        for j in range(i + 1, len(diffs)):
            u, v = diffs[i], diffs[j]
            den = np.sqrt((u * u).sum() * (v * v).sum())
            out.append((u * v).sum() / den if den else 0.0)
    return out


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(-2048, 2047), min_size=24, max_size=24),
    st.lists(st.integers(-2048, 2047), min_size=24, max_size=24),
)
def test_signature_matches_the_float_reference(c0, c1):
    x = np.array([c0, c1], dtype=np.int64)
    got = signature(x)
    want = _float_signature(x)
    assert len(got) == len(want) == 7
    for g, w in zip(got, want, strict=True):
        assert abs(g - w * ONE) <= 2  # rounding of the Q16.16 result and the isqrt


def test_signature_is_scale_free():
    rng = np.random.default_rng(1)
    x = np.cumsum(rng.integers(-20, 21, (2, 300)), axis=1)
    assert signature(x) == signature(4 * x)  # a sensor's gain does not change its kind


def _generated(nodes_per_source, seed=0, window=256):
    sigs, truth = [], []
    for d, (_, x) in enumerate(generated_domains(seed, 4 * window * nodes_per_source)):
        for k in range(nodes_per_source):
            sigs.append(signature(x[:, k * window : (k + 1) * window + 3]))
            truth.append(d)
    return sigs, truth


def test_distinct_sensors_are_found():
    sigs, truth = _generated(5)
    assert discover(sigs) == truth
    assert discover(sigs) == discover(sigs)


def test_the_partition_does_not_depend_on_the_node_order():
    sigs, truth = _generated(4)
    order = np.random.default_rng(3).permutation(len(sigs))
    label = discover([sigs[i] for i in order])
    back = [0] * len(sigs)
    for pos, i in enumerate(order):
        back[i] = label[pos]
    same = {(a, b) for a in range(len(sigs)) for b in range(len(sigs)) if truth[a] == truth[b]}
    found = {(a, b) for a in range(len(sigs)) for b in range(len(sigs)) if back[a] == back[b]}
    assert same == found


def test_nodes_without_structure_form_one_domain():
    rng = np.random.default_rng(0)
    sigs = [list(rng.integers(0, 1 << 16, 7)) for _ in range(40)]
    assert discover(sigs) == [0] * 40
    assert discover(sigs[:2]) == [0, 0]


def test_silhouette_of_a_clean_split():
    dist = np.array([[0, 1, 9, 9], [1, 0, 9, 9], [9, 9, 0, 1], [9, 9, 1, 0]])
    assert silhouette(dist, [0, 0, 1, 1]) == round((8 / 9) * ONE)
    assert silhouette(dist, [0, 1, 1, 1]) < silhouette(dist, [0, 0, 1, 1])


def _silhouette_reference(dist, label):
    """The mean silhouette in exact fractions."""
    from fractions import Fraction

    groups = sorted(set(label))
    total = Fraction(0)
    for i, own in enumerate(label):
        mates = [j for j, g in enumerate(label) if g == own and j != i]
        if not mates:
            continue
        a = Fraction(sum(dist[i][j] for j in mates), len(mates))
        b = min(
            Fraction(sum(dist[i][j] for j, g in enumerate(label) if g == h), label.count(h))
            for h in groups
            if h != own
        )
        top = max(a, b)
        total += (b - a) / top if top else 0
    return total / len(label)


@settings(max_examples=80, deadline=None)
@given(
    st.lists(st.lists(st.integers(0, 1 << 16), min_size=3, max_size=3), min_size=3, max_size=12),
    st.data(),
)
def test_silhouette_matches_exact_fractions(points, data):
    n = len(points)
    label = data.draw(st.lists(st.integers(0, 2), min_size=n, max_size=n))
    label = [sorted(set(label)).index(g) for g in label]  # groups 0..k-1, none empty
    if max(label) == 0:
        label[0] = 1 if n > 1 else 0
        label = [sorted(set(label)).index(g) for g in label]
    dist = [[sum(abs(a - b) for a, b in zip(p, q, strict=True)) for q in points] for p in points]
    want = _silhouette_reference(dist, label) * ONE
    assert abs(silhouette(np.array(dist), label) - want) <= 3


def _windows(sources, rounds, window=256):
    """Per round, each node's window: node k reads source ``sources[r][k]`` at round r."""
    streams = [x for _, x in generated_domains(0, (rounds + 1) * window * 8)]
    return [
        [
            streams[src][:, (r * 8 + k) * window : (r * 8 + k + 1) * window + 3]
            for k, src in enumerate(row)
        ]
        for r, row in enumerate(sources)
    ]


def _regrouping(first, patience=2):
    return Regrouping([signature(w) for w in first], ONE // 4, patience)


def test_a_node_whose_stream_switches_moves_to_the_domain_it_now_resembles():
    steady = [0, 0, 0, 1, 1, 1, 2, 2]
    switched = [2, 0, 0, 1, 1, 1, 2, 2]  # node 0 reads source 2 in rounds 3..7
    plan = [steady] * 3 + [switched] * 5 + [steady] * 5
    windows = _windows(plan, len(plan))
    regroup = _regrouping(windows[0])
    assert regroup.label == [0, 0, 0, 1, 1, 1, 2, 2]
    labels = [list(regroup.label)]
    for row in windows[1:]:
        regroup.observe([signature(w) for w in row])
        labels.append(list(regroup.label))
    assert [lab[0] for lab in labels[:4]] == [0, 0, 0, 0]
    assert labels[7][0] == 2 and labels[-1][0] == 0  # there during the switch, and back
    assert all(lab[1:] == steady[1:] for lab in labels)  # nobody else moves
    assert len(regroup.moves) == 2 and regroup.first == steady
    again = _regrouping(windows[0])
    for row in windows[1:]:
        again.observe([signature(w) for w in row])
    assert again.moves == regroup.moves  # deterministic


def test_steady_streams_do_not_flap_and_patience_zero_keeps_the_domains():
    plan = [[0, 0, 1, 1, 2, 2, 3, 3]] * 12
    windows = _windows(plan, len(plan))
    regroup, frozen = _regrouping(windows[0]), _regrouping(windows[0], patience=0)
    for row in windows[1:]:
        regroup.observe([signature(w) for w in row])
    assert regroup.moves == [] and regroup.label == regroup.first
    switched = [[1, 0, 1, 1, 2, 2, 3, 3]] * 6
    for row in _windows(switched, 6):
        assert frozen.observe([signature(w) for w in row]) == []
    assert frozen.label == frozen.first


def test_a_node_must_be_drawn_patience_rounds_in_a_row():
    # node 0 alternates between its own source and another: never drawn twice in a row
    plan = [[0, 0, 0, 1, 1, 1]] + [[1 if r % 2 else 0, 0, 0, 1, 1, 1] for r in range(1, 10)]
    windows = _windows(plan, len(plan))
    regroup = _regrouping(windows[0], patience=3)
    for row in windows[1:]:
        regroup.observe([signature(w) for w in row])
    assert regroup.label[0] == 0


def test_a_change_of_stream_restarts_the_running_signature():
    steady = [0, 0, 0, 1, 1, 1, 2, 2]
    switched = [2, 0, 0, 1, 1, 1, 2, 2]
    plan = [steady] * 6 + [switched] * 6
    windows = _windows(plan, len(plan))
    told, untold = _regrouping(windows[0]), _regrouping(windows[0])
    for r, row in enumerate(windows[1:], start=1):
        sigs = [signature(w) for w in row]
        told.observe(sigs, changed={0} if r == 6 else ())
        untold.observe(sigs)
    assert told.label[0] == untold.label[0] == 2
    # told at the switch, node 0 moves no later, and by patience rounds after it
    assert told.moves[0][0] <= untold.moves[0][0] and told.moves[0][0] <= 6 + 2
