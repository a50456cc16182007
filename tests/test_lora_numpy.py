"""The numpy LoRA layer and the LoRA stack: dense equivalence, inertia, Q16.16, config."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qres.kernel import plugins
from qres.kernel.config import Location
from qres.kernel.errors import FixedPointError, ProfileError, QresError
from qres.kinds.lora import ROLES, LoRALayer, LoRAStack, from_q16, to_q16


def make(**settings):
    return plugins.create("lora_layer", {"use": "numpy-lora", **settings}, Location("l.toml"))


def trained(seed: int = 0, **settings):
    """A layer whose B is non-zero, so its delta is too."""
    layer = make(seed=seed, **settings)
    rng = np.random.default_rng(seed)
    layer.update(rng.normal(size=layer.A.shape), rng.normal(size=layer.B.shape), lr=0.1)
    return layer


def test_registered_through_the_hook():
    cls = plugins.get_plugin("lora_layer", "numpy-lora")
    assert issubclass(cls, LoRALayer)
    assert plugins.registry()["lora_layer"]["numpy-lora"].source.endswith("lora.numpy_lora")


def test_init_b_zero_a_small_and_delta_zero():
    layer = make(d_in=32, d_out=12, rank=4, alpha=8.0)
    assert layer.A.shape == (4, 32) and layer.A.dtype == np.float32
    assert layer.B.shape == (12, 4) and not layer.B.any()
    bound = 1 / math.sqrt(32)
    assert np.abs(layer.A).max() <= bound
    assert np.abs(layer.A).max() > bound / 2  # not all tiny: really spread over the range
    x = np.random.default_rng(1).normal(size=(5, 32))
    assert not layer.forward(x).any()
    assert not layer.delta_weight().any()


def test_init_is_deterministic_and_seeded():
    a = make(seed=3, role="swarm").A
    assert np.array_equal(a, make(seed=3, role="swarm").A)
    assert not np.array_equal(a, make(seed=4, role="swarm").A)
    assert not np.array_equal(a, make(seed=3, role="agent").A)
    # Pinned: the SHAKE-256 derivation must not drift between versions or machines.
    q, _ = make(d_in=8, d_out=5, rank=2).export_q16()
    assert q[0, :4].tolist() == [-5505, -8095, 8422, 9754]


def test_matrices_are_read_only():
    layer = make()
    with pytest.raises(ValueError):
        layer.A[0, 0] = 1.0
    with pytest.raises(ValueError):
        layer.B[0, 0] = 1.0


@settings(max_examples=30, deadline=None)
@given(
    d_in=st.integers(1, 12),
    d_out=st.integers(1, 12),
    data=st.data(),
    seed=st.integers(0, 1000),
    alpha=st.floats(0.5, 16),
)
def test_forward_equals_dense_computation(d_in, d_out, data, seed, alpha):
    rank = data.draw(st.integers(1, min(d_in, d_out)))
    layer = trained(seed, d_in=d_in, d_out=d_out, rank=rank, alpha=alpha)
    x = np.random.default_rng(seed).normal(size=(3, d_in))
    a, b = layer.A.astype(np.float64), layer.B.astype(np.float64)
    dense = x @ ((alpha / rank) * (b @ a)).T
    np.testing.assert_allclose(layer.forward(x), dense, rtol=1e-10, atol=1e-12)
    base = np.ones((3, d_out))
    np.testing.assert_allclose(layer.forward(x, base), base + dense, rtol=1e-10, atol=1e-12)
    # One sample without a batch axis gives one row.
    np.testing.assert_allclose(layer.forward(x[0]), dense[0], rtol=1e-10, atol=1e-12)


def test_merge_equals_forward_and_leaves_weight_alone():
    layer = trained(5, d_in=10, d_out=6, rank=3)
    w = np.random.default_rng(2).normal(size=(6, 10))
    w_before = w.copy()
    merged = layer.merge_into(w)
    x = np.random.default_rng(3).normal(size=(4, 10))
    np.testing.assert_allclose(x @ merged.T, layer.forward(x, x @ w.T), rtol=1e-10, atol=1e-12)
    assert np.array_equal(w, w_before)
    with pytest.raises(QresError, match=r"expected \(6, 10\)"):
        layer.merge_into(np.zeros((10, 6)))


def test_backward_matches_finite_differences():
    layer = trained(7, d_in=5, d_out=4, rank=2, alpha=3.0)
    rng = np.random.default_rng(0)
    x, target = rng.normal(size=(6, 5)), rng.normal(size=(6, 4))

    def loss(a, b):
        return 0.5 * np.sum(((3.0 / 2) * x @ a.T @ b.T - target) ** 2)

    a, b = layer.A.astype(np.float64), layer.B.astype(np.float64)
    grad_a, grad_b = layer.backward(x, layer.forward(x) - target)
    eps = 1e-6
    for matrix, grad, is_a in ((a, grad_a, True), (b, grad_b, False)):
        for index in np.ndindex(matrix.shape):
            bumped = matrix.copy()
            bumped[index] += eps
            numeric = (loss(bumped, b) if is_a else loss(a, bumped)) - loss(a, b)
            assert numeric / eps == pytest.approx(grad[index], rel=1e-3, abs=1e-4)


def test_training_reduces_error():
    layer = make(d_in=6, d_out=3, rank=2, alpha=2.0, seed=1)
    rng = np.random.default_rng(4)
    target_w = rng.normal(size=(3, 2)) @ rng.normal(size=(2, 6)) * 0.5
    x = rng.normal(size=(64, 6))
    y = x @ target_w.T

    def error():
        return float(np.mean((layer.forward(x) - y) ** 2))

    start = error()
    for _ in range(300):
        layer.update(*layer.backward(x, (layer.forward(x) - y) / len(x)), lr=0.2)
    assert error() < 0.05 * start


def test_inertia_scales_updates_exactly():
    rng = np.random.default_rng(9)
    grad_a, grad_b = rng.normal(size=(3, 7)), rng.normal(size=(5, 3))
    moves = {}
    for inertia in (0.0, 0.5, 0.75, 0.9):
        layer = make(d_in=7, d_out=5, rank=3, inertia=inertia)
        a0, b0 = layer.A.copy(), layer.B.copy()
        layer.update(grad_a, grad_b, lr=0.01)
        da, db = layer.last_update()
        expected_a = (-(1 - inertia) * 0.01 * grad_a).astype(np.float32)
        assert np.array_equal(da, expected_a)
        assert np.array_equal(db, (-(1 - inertia) * 0.01 * grad_b).astype(np.float32))
        assert np.array_equal(layer.A, a0 + expected_a)
        assert np.array_equal(layer.B, b0 + db)
        moves[inertia] = db
    # Powers-of-two inertia factors scale the float32 step exactly.
    assert np.array_equal(moves[0.5], moves[0.0] / 2)
    assert np.array_equal(moves[0.75], moves[0.0] / 4)
    assert np.abs(moves[0.9]).sum() < np.abs(moves[0.75]).sum()


@pytest.mark.parametrize(
    ("grads", "lr", "match"),
    [
        (((3, 7), (5, 3)), -0.1, "lr=-0.1"),
        (((3, 7), (5, 3)), float("nan"), "lr=nan"),
        (((7, 3), (5, 3)), 0.1, r"grad_A has shape \(7, 3\)"),
        (((3, 7), (5, 4)), 0.1, r"grad_B has shape \(5, 4\)"),
    ],
)
def test_bad_updates_rejected_and_change_nothing(grads, lr, match):
    layer = make(d_in=7, d_out=5, rank=3)
    a0 = layer.A.copy()
    with pytest.raises(QresError, match=match):
        layer.update(np.ones(grads[0]), np.ones(grads[1]), lr)
    assert np.array_equal(layer.A, a0)


def test_non_finite_gradient_rejected():
    layer = make(d_in=7, d_out=5, rank=3)
    grad = np.ones((3, 7))
    grad[1, 2] = np.inf
    with pytest.raises(QresError, match="NaN or infinity"):
        layer.update(grad, np.ones((5, 3)), 0.1)


@settings(max_examples=40, deadline=None)
@given(
    values=st.lists(st.floats(-30000, 30000, allow_nan=False), min_size=12, max_size=12),
)
def test_q16_export_import_round_trip(values):
    layer = make(d_in=4, d_out=3, rank=2)
    a_q = to_q16(np.array(values[:8]).reshape(2, 4), "A")
    b_q = to_q16(np.array(values[8:10] + values[:4]).reshape(3, 2), "B")
    layer.import_q16(a_q, b_q)
    a_out, b_out = layer.export_q16()
    assert a_out.dtype == np.int32 and b_out.dtype == np.int32
    # float32 holds |q| < 2**24 exactly; beyond that within one float32 step.
    small = np.abs(a_q) < (1 << 24)
    assert np.array_equal(a_out[small], a_q[small])
    np.testing.assert_allclose(
        layer.A, np.array(values[:8]).reshape(2, 4), atol=1 / 65536, rtol=2**-23
    )


def test_trained_layer_round_trips_within_one_q16_step():
    layer = trained(11, d_in=9, d_out=7, rank=3)
    a_q, b_q = layer.export_q16()
    assert np.abs(a_q / 65536 - layer.A).max() <= 0.5 / 65536
    copy = make(d_in=9, d_out=7, rank=3)
    copy.import_q16(a_q, b_q)
    assert np.abs(copy.A - layer.A).max() <= 1 / 65536
    assert np.abs(copy.B - layer.B).max() <= 1 / 65536
    assert np.array_equal(copy.export_q16()[1], b_q)


def test_q16_rounding_is_numpy_round():
    q = to_q16([0.5 / 65536, 1.5 / 65536, -2.5 / 65536, 1.0, -32768.0], "v")
    assert q.tolist() == [0, 2, -2, 65536, -(1 << 31)]


@pytest.mark.parametrize("value", [32768.0, -32768.00001, float("inf"), float("nan")])
def test_q16_overflow_and_non_finite_are_clear_errors(value):
    with pytest.raises(FixedPointError, match=r"A\[0, 1\]"):
        to_q16(np.array([[0.0, value]]), "A")


def test_export_overflow_names_the_layer():
    layer = make(d_in=4, d_out=4, rank=2, role="context")
    layer.update(np.zeros((2, 4)), np.full((4, 2), -1.0), lr=40000.0)
    with pytest.raises(FixedPointError, match=r"lora layer context .*B\[0, 0\]"):
        layer.export_q16()


def test_import_rejects_wrong_shape_dtype_and_range():
    layer = make(d_in=4, d_out=3, rank=2)
    with pytest.raises(QresError, match=r"expected \(2, 4\)"):
        layer.import_q16(np.zeros((4, 2), np.int32), np.zeros((3, 2), np.int32))
    with pytest.raises(QresError, match="dtype float64"):
        layer.import_q16(np.zeros((2, 4)), np.zeros((3, 2), np.int32))
    with pytest.raises(FixedPointError, match="outside int32"):
        layer.import_q16(np.full((2, 4), 1 << 40), np.zeros((3, 2), np.int32))
    assert from_q16(np.array([65536, -32768]), (2,), "v").tolist() == [1.0, -0.5]


def test_forward_rejects_wrong_width():
    layer = make(d_in=4, d_out=3, rank=2)
    with pytest.raises(QresError, match=r"does not end in 4"):
        layer.forward(np.zeros((2, 5)))
    with pytest.raises(QresError, match=r"expected \(2, 3\)"):
        layer.forward(np.zeros((2, 4)), base=np.zeros((2, 4)))


def test_memory_bytes_is_float32_params_and_update_buffers():
    cls = plugins.get_plugin("lora_layer", "numpy-lora")
    layer = make(d_in=64, d_out=32, rank=8)
    assert cls.memory_bytes(layer.config) == 2 * 4 * 8 * (64 + 32)
    actual = layer.A.nbytes + layer.B.nbytes + sum(m.nbytes for m in layer.last_update())
    assert cls.memory_bytes(layer.config) == actual


def test_config_round_trips():
    layer = make(d_in=20, d_out=10, rank=5, alpha=2.5, inertia=0.9, role="foundation", seed=77)
    table = layer.get_config()
    assert table["use"] == "numpy-lora"
    again = plugins.create("lora_layer", table, Location("x"))
    assert again.config == layer.config
    assert np.array_equal(again.A, layer.A)
    assert layer.scaling == 0.5


@pytest.mark.parametrize(
    ("settings", "key", "allowed"),
    [
        ({"d_in": 4, "d_out": 8, "rank": 5}, "rank", "min(d_in, d_out) = 4"),
        ({"rank": 0}, "rank", "integer"),
        ({"inertia": 1.0}, "inertia", "[0, 1)"),
        ({"inertia": -0.5}, "inertia", "[0, 1)"),
        ({"inertia": float("nan")}, "inertia", "[0, 1)"),
        ({"alpha": 0}, "alpha", "(0, 65536]"),
        ({"role": "leader"}, "role", "'foundation', 'domain', 'swarm', 'agent', 'context'"),
        ({"d_in": 2.5}, "d_in", "integer"),
        ({"seed": "x"}, "seed", "integer"),
        ({"dropout": 0.1}, "dropout", "allowed keys"),
    ],
)
def test_bad_settings_give_profile_error(settings, key, allowed):
    with pytest.raises(ProfileError) as info:
        make(**settings)
    assert str(info.value).startswith(f"l.toml: {key}")
    assert allowed in str(info.value)
    assert info.value.exit_code == 3


# The stack ---------------------------------------------------------------------------------


def stack_tables(roles, **shape):
    shape = {"d_in": 6, "d_out": 4, "rank": 2, **shape}
    return [{"use": "numpy-lora", "role": r, "seed": i, **shape} for i, r in enumerate(roles)]


def test_stack_orders_by_hierarchy_and_sums_deltas_in_order():
    tables = stack_tables(["context", "foundation", "swarm"])
    stack = LoRAStack.from_tables(tables, Location("p.toml", "lora.layers"))
    assert stack.roles == ("foundation", "swarm", "context")
    rng = np.random.default_rng(0)
    for layer in stack.layers:
        layer.update(rng.normal(size=layer.A.shape), rng.normal(size=layer.B.shape), 0.1)
    f, s, c = (stack.layer(r) for r in ("foundation", "swarm", "context"))
    x = rng.normal(size=(3, 6))
    base = rng.normal(size=(3, 4))
    expected = ((base + f.forward(x)) + s.forward(x)) + c.forward(x)
    assert np.array_equal(stack.forward(x, base), expected)
    dense = (f.delta_weight() + s.delta_weight()) + c.delta_weight()
    assert np.array_equal(stack.delta_weight(), dense)
    w = rng.normal(size=(4, 6))
    np.testing.assert_allclose(x @ stack.merge_into(w).T, stack.forward(x, x @ w.T), rtol=1e-10)
    assert stack.memory_bytes() == 3 * 2 * 4 * 2 * (6 + 4)
    assert (stack.d_in, stack.d_out) == (6, 4)


def test_stack_same_result_whatever_the_given_order():
    one = LoRAStack.from_tables(stack_tables(["agent", "domain"]), Location("p"))
    tables = stack_tables(["agent", "domain"])
    two = LoRAStack.from_tables(tables[::-1], Location("p"))
    assert one.roles == two.roles == ("domain", "agent")
    for a, b in zip(one.layers, two.layers, strict=True):
        assert np.array_equal(a.A, b.A)


def test_stack_errors():
    with pytest.raises(ProfileError, match="two layers have role 'agent'"):
        LoRAStack.from_tables(stack_tables(["agent", "agent"]), Location("p.toml", "lora.layers"))
    mixed = stack_tables(["domain"]) + stack_tables(["agent"], d_in=8)
    with pytest.raises(ProfileError, match=r"^p\.toml: lora\.layers: .*use one shape"):
        LoRAStack.from_tables(mixed, Location("p.toml", "lora.layers"))
    bad = stack_tables(["domain", "agent"])
    bad[1]["rank"] = 99
    with pytest.raises(ProfileError, match=r"^p\.toml: lora\.layers\[1\]\.rank"):
        LoRAStack.from_tables(bad, Location("p.toml", "lora.layers"))
    with pytest.raises(ProfileError, match="expected an array"):
        LoRAStack.from_tables({"use": "numpy-lora"}, Location("p.toml", "lora.layers"))
    with pytest.raises(QresError, match="no layers"):
        LoRAStack([])
    stack = LoRAStack([make(role="agent")])
    with pytest.raises(QresError, match="no 'context' layer; roles present: agent"):
        stack.layer("context")


def test_roles_are_the_documented_hierarchy():
    assert ROLES == ("foundation", "domain", "swarm", "agent", "context")
