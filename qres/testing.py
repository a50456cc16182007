"""Conformance checks for qres plugins: run them in a plugin's own test suite.

``check_plugin(MyPredictor)`` finds the plugin's kind from its base class and checks what every
plugin of that kind promises (docs/plugins.md lists the contracts):

* every kind: the class passes the registration check (right base, no abstract method left,
  an attrs ``Config``), its settings round-trip (``from_config(get_config())``, through JSON and
  TOML), and ``memory_bytes`` is an int >= 0;
* predictors: lossless round trip of int64 blocks (one and several channels, empty, one
  frame), bounded error within ``max_error`` and the bounds, fresh state per call, no mutation;
* coders: round trip of residuals (small, large, int64 extremes, empty), the same bytes twice,
  and every truncation refused with :class:`~qres.kernel.errors.IntegrityError`;
* aggregators: a ``(d,)`` int32 result, bit-identical under permutations of the rows (and of
  their weights), input never modified;
* attacks: ``(f, d)`` int32 rows, the same rows for the same seed, input never modified;
* transports: messages delivered with their payload, counters that add up, bad payloads refused;
* hardware: a positive memory budget, non-negative power in every state, exact energy sums;
* LLM backends: completions within ``max_tokens``, deterministic at temperature 0, bad
  requests refused with :class:`~qres.kernel.errors.QresError`;
* LoRA layers: shapes, a Q16.16 export/import round trip, ``merge_into`` not modifying its input.

Failures raise ``AssertionError`` with a message naming the plugin and the broken promise, so
the checks read well under pytest. ``settings`` gives the profile table (without ``use``) to
build the plugin with; by default every setting keeps its default.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from qres.kernel import plugins
from qres.kernel.errors import IntegrityError, QresError

__all__ = [
    "check_aggregator",
    "check_attack",
    "check_coder",
    "check_config_round_trip",
    "check_hardware",
    "check_llm_backend",
    "check_lora_layer",
    "check_validator",
    "check_plugin",
    "check_predictor",
    "check_transport",
    "kind_of",
]


def kind_of(cls: type) -> str:
    """The plugin kind whose base class ``cls`` derives from."""
    for kind in plugins.KINDS:
        if isinstance(cls, type) and issubclass(cls, plugins.kind_base(kind)):
            return kind
    bases = ", ".join(f"{m}.{c}" for m, c in plugins.KIND_BASES.values())
    raise AssertionError(f"{cls!r} derives from no plugin kind's base; use one of: {bases}")


def check_plugin(cls: type, settings: Mapping[str, Any] | None = None, **options: Any) -> None:
    """Every check that applies to ``cls``: the contract, the settings and its kind's behaviour.

    ``options`` go to the kind's check (``loopback=False`` for a network transport).
    """
    _CHECKS[kind_of(cls)](cls, settings, **options)


def _label(cls: type) -> str:
    return f"{kind_of(cls)} {getattr(cls, 'name', '?')!r} ({cls.__qualname__})"


def check_config_round_trip(cls: type, settings: Mapping[str, Any] | None = None) -> Any:
    """Check the class contract and that settings round-trip; return the built plugin."""
    import tomli_w

    from qres.kernel.profiles import tomllib

    kind = kind_of(cls)
    problem = plugins.contract_problem(kind, cls)
    assert problem is None, f"{kind} {getattr(cls, 'name', '?')!r}: {problem}"
    label = _label(cls)
    assert isinstance(cls.name, str) and cls.name, f"{label}: `name` must be a non-empty string"
    plugin = cls.from_config({"use": cls.name, **(settings or {})})
    table = plugin.get_config()
    assert table.get("use") == cls.name, f"{label}: get_config()['use'] is {table.get('use')!r}"
    again = cls.from_config(table)
    assert again.config == plugin.config, f"{label}: from_config(get_config()) differs"
    assert again.get_config() == table, f"{label}: get_config() is not stable"
    assert json.loads(json.dumps(table)) == table, f"{label}: settings do not survive JSON"
    # TOML has no null: an unset (None) setting is written by leaving its key out.
    written = {k: v for k, v in table.items() if v is not None}
    read = tomllib.loads(tomli_w.dumps({"plugin": written}))["plugin"]
    ok = cls.from_config(read).config == plugin.config
    assert ok, f"{label}: settings do not survive TOML (None settings left out)"
    memory = cls.memory_bytes(plugin.config)
    ok = isinstance(memory, int) and not isinstance(memory, bool) and memory >= 0
    assert ok, f"{label}: memory_bytes gave {memory!r}; return an int >= 0"
    return plugin


def _signals(np: Any, channels: int, n: int, lo: int, hi: int, seed: int) -> Any:
    """Seeded test blocks: smooth waves plus noise plus steps, clipped into ``[lo, hi]``."""
    rng = np.random.default_rng(seed)
    t = np.arange(n, dtype=np.float64)
    rows = []
    for c in range(channels):
        wave = 0.4 * hi * np.sin(2 * np.pi * t / (50 + 17 * c))
        steps = np.where((t // 97) % 2 == 0, 0.1 * hi, -0.1 * hi)
        noise = rng.normal(0, 30, n)
        rows.append(np.clip(np.rint(wave + steps + noise), lo, hi))
    return np.asarray(rows, dtype=np.int64).reshape(channels, n)


def check_predictor(cls: type, settings: Mapping[str, Any] | None = None) -> None:
    """Round trips (lossless and bounded error), fresh state per call, no mutation, weights."""
    import numpy as np

    predictor = check_config_round_trip(cls, settings)
    label = _label(cls)
    lo, hi = -32768, 32767
    cases = [(1, 0), (1, 1), (1, 333), (3, 1000), (2, 4096)]
    for channels, n in cases:
        block = _signals(np, channels, n, lo, hi, seed=channels * 7919 + n)
        before = block.copy()
        residuals = predictor.encode(block)
        assert residuals.shape == block.shape, f"{label}: residuals shaped {residuals.shape}"
        assert residuals.dtype == np.int64, f"{label}: residuals of dtype {residuals.dtype}"
        assert np.array_equal(block, before), f"{label}: encode modified its input"
        again = predictor.encode(block)
        assert np.array_equal(residuals, again), f"{label}: encode depends on earlier calls"
        decoded = predictor.decode(residuals)
        ok = np.array_equal(decoded, block)
        assert ok, f"{label}: lossless round trip fails ({channels}x{n})"
        for max_error in (1, 7):
            q = predictor.encode(block, max_error, bounds=(lo, hi))
            out = predictor.decode(q, max_error, bounds=(lo, hi))
            assert out.shape == block.shape, f"{label}: bounded-error decode shaped {out.shape}"
            if block.size:
                worst = int(np.abs(out - block).max())
                assert worst <= max_error, f"{label}: error {worst} > max_error {max_error}"
                inside = out.min() >= lo and out.max() <= hi
                assert inside, f"{label}: bounded-error reconstruction leaves the bounds"
    flat = _signals(np, 1, 500, lo, hi, seed=5)[0]
    assert np.array_equal(predictor.decode(predictor.encode(flat)), flat), (
        f"{label}: 1-D blocks must round-trip as one channel"
    )
    extremes = np.array([[-(2**63), 2**63 - 1, 0, -1, 2**63 - 1, -(2**63)] * 20], dtype=np.int64)
    assert np.array_equal(predictor.decode(predictor.encode(extremes)), extremes), (
        f"{label}: lossless mode must round-trip any int64 values (wrap-around residuals)"
    )
    weights = predictor.initial_weights()
    count = predictor.weight_count()
    assert weights.shape == (count,), f"{label}: {weights.shape} initial weights for {count}"
    assert weights.dtype == np.int32, f"{label}: initial weights of dtype {weights.dtype}"
    predictor.set_initial_weights(weights)
    assert np.array_equal(predictor.initial_weights(), weights), f"{label}: weights round trip"
    segments = predictor.segments(1000)
    if segments is not None:
        assert sum(segments) == 1000, f"{label}: segments(1000) add up to {sum(segments)}"


def _residual_cases(np: Any) -> list[Any]:
    rng = np.random.default_rng(2024)
    big = np.array([-(2**63), 2**63 - 1, 0, 1, -1, 2**62, -(2**62)] * 9, dtype=np.int64)
    return [
        np.zeros(0, dtype=np.int64),
        np.array([0], dtype=np.int64),
        np.array([-5], dtype=np.int64),
        np.zeros(1000, dtype=np.int64),
        rng.integers(-3, 4, 5000).astype(np.int64),
        np.rint(rng.laplace(0, 200, 4096)).astype(np.int64),
        rng.integers(-(2**40), 2**40, 777).astype(np.int64),
        big,
    ]


def check_coder(cls: type, settings: Mapping[str, Any] | None = None) -> None:
    """Round trips of residuals, stable bytes, and every truncation refused."""
    import numpy as np

    coder = check_config_round_trip(cls, settings)
    label = _label(cls)
    for residuals in _residual_cases(np):
        n = residuals.shape[0]
        extra = {"segments": [n // 3, n - n // 3]} if coder.uses_segments else {}
        data = coder.encode(residuals, **extra)
        assert isinstance(data, bytes), f"{label}: encode returned {type(data).__name__}"
        assert coder.encode(residuals, **extra) == data, f"{label}: encode is not deterministic"
        out = coder.decode(data, n, **extra)
        ok = np.array_equal(np.asarray(out, dtype=np.int64), residuals)
        assert ok, f"{label}: round trip of {n} residuals fails"
        cuts = range(len(data)) if len(data) <= 64 else (*range(0, 64, 7), len(data) - 1)
        for cut in cuts:
            try:
                coder.decode(data[:cut], n, **extra)
            except IntegrityError:
                continue
            except Exception as exc:
                raise AssertionError(
                    f"{label}: decoding {cut} of {len(data)} bytes raised "
                    f"{type(exc).__name__} instead of IntegrityError"
                ) from exc
            raise AssertionError(f"{label}: decoding {cut} of {len(data)} bytes did not fail")


def _updates(np: Any, n: int, d: int, seed: int) -> Any:
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 65536, (n, d)) + np.arange(d) * 1000
    x[: max(1, n // 5)] += 40 * 65536  # a few outliers, as Byzantine rows would be
    return np.clip(np.rint(x), -(2**31), 2**31 - 1).astype(np.int32)


def _aggregate(rule: Any, x: Any, f: int, w: Any, seed: int) -> Any:
    import numpy as np

    return rule.aggregate(x, f=f, weights=w, rng=np.random.default_rng(seed))


def check_aggregator(cls: type, settings: Mapping[str, Any] | None = None) -> None:
    """A (d,) int32 result, bit-identical under row permutations, input never modified."""
    import numpy as np

    rule = check_config_round_trip(cls, settings)
    label = _label(cls)
    checked = 0
    for n, d, f in ((11, 7, 0), (11, 7, 2), (25, 33, 4), (6, 1, 1)):
        x = _updates(np, n, d, seed=n * d + f)
        try:
            rule.check_f(n, f)
        except QresError:
            continue  # the rule cannot tolerate f of n; its bound is its own business
        weights = [None]
        if rule.takes_weights:
            # in [1/4, 1] as Q16.16: valid as sample counts and as reputations alike
            weights.append(np.random.default_rng(n).integers(1 << 14, 1 << 16, n))
        for w in weights:
            frozen = x.copy()
            frozen.flags.writeable = False
            result = _aggregate(rule, frozen, f, w, seed=7)
            assert np.array_equal(frozen, x), f"{label}: aggregate modified its input"
            assert result.shape == (d,), f"{label}: result shaped {result.shape}, need ({d},)"
            assert result.dtype == np.int32, f"{label}: result of dtype {result.dtype}"
            for p in range(3):
                order = np.random.default_rng(100 + p).permutation(n)
                w_perm = None if w is None else w[order]
                permuted = _aggregate(rule, x[order], f, w_perm, seed=7)
                assert np.array_equal(permuted, result), (
                    f"{label}: result changes when the rows are permuted (n={n}, d={d}, f={f})"
                )
            checked += 1
    assert checked, f"{label}: check_f refused every case; it must accept f=0 with n >= 6"


def check_attack(cls: type, settings: Mapping[str, Any] | None = None) -> None:
    """(f, d) int32 rows, reproducible from the seed, input never modified."""
    import numpy as np

    attack = check_config_round_trip(cls, settings)
    label = _label(cls)
    honest = _updates(np, 9, 13, seed=3)
    before = honest.copy()
    for f in (0, 1, 4):
        rows = attack.forge(honest, f, rng=np.random.default_rng(11))
        assert np.array_equal(honest, before), f"{label}: forge modified the honest updates"
        assert rows.shape == (f, 13), f"{label}: forged rows shaped {rows.shape}, need ({f}, 13)"
        assert rows.dtype == np.int32, f"{label}: forged rows of dtype {rows.dtype}"
        again = attack.forge(honest, f, rng=np.random.default_rng(11))
        assert np.array_equal(rows, again), f"{label}: the same seed forged different rows"


def check_transport(
    cls: type, settings: Mapping[str, Any] | None = None, *, loopback: bool = True
) -> None:
    """Messages arrive with their payload, counters add up, bad payloads are refused.

    The behaviour is checked on one instance carrying messages between two node names on its
    own clock (``advance``). A network transport, whose messages go to peers over sockets or
    a broker, passes ``loopback=False``: its contract and settings are checked here, its
    delivery belongs in tests against real peers.
    """
    transport = check_config_round_trip(cls, settings)
    if not loopback:
        transport.close()
        return
    label = _label(cls)
    with transport:
        start = transport.now
        payloads = [bytes([i]) * (i + 1) for i in range(8)]
        accepted = sum(bool(transport.send(1, 2, p)) for p in payloads)
        assert transport.stats.sent_messages == len(payloads), f"{label}: sent_messages count"
        received = []
        for _ in range(64):
            received += transport.receive(2)
            if len(received) >= accepted:
                break
            transport.advance(1)
        assert transport.now >= start, f"{label}: the clock went backwards"
        seqs = [m.seq for m in received]
        assert seqs == sorted(seqs) or len({m.deliver_at for m in received}) > 1, (
            f"{label}: messages due at the same tick must come oldest first"
        )
        for m in received:
            assert (m.src, m.dst) == (1, 2), f"{label}: message {m.seq} has the wrong ends"
            assert m.payload in payloads, f"{label}: message {m.seq} payload was altered"
        stats = transport.stats
        assert stats.delivered_messages >= len(received), f"{label}: delivered_messages count"
        assert stats.dropped_messages <= len(payloads), f"{label}: dropped_messages count"
        assert transport.broadcast(1, b"hi", [1]) == 0, f"{label}: broadcast must skip src"
        for bad in ("text", None, 3):
            try:
                transport.send(1, 2, bad)
            except QresError:
                continue
            raise AssertionError(f"{label}: send accepted a {type(bad).__name__} payload")
        t0 = transport.now
        transport.tick()
        assert transport.now == t0 + 1, f"{label}: tick() must advance the clock by one"


def check_hardware(cls: type, settings: Mapping[str, Any] | None = None) -> None:
    """A positive memory budget, non-negative power in every state, exact energy sums."""
    hw = check_config_round_trip(cls, settings)
    label = _label(cls)
    budget = hw.memory_budget_bytes()
    assert isinstance(budget, int) and budget > 0, f"{label}: memory budget {budget!r}"
    for state in hw.states():
        assert hw.power_mw(state) >= 0, f"{label}: negative power in {state}"
    assert hw.energy_joules({}) == 0, f"{label}: no time must cost no energy"
    one = {state: 1 for state in hw.states()}
    total = sum(hw.power_mw(s) for s in hw.states()) / 1000
    assert abs(hw.energy_joules(one) - total) <= 1e-9 * max(1.0, total), f"{label}: energy sum"


def check_llm_backend(cls: type, settings: Mapping[str, Any] | None = None) -> None:
    """Completions within max_tokens, deterministic at temperature 0, bad requests refused."""
    from qres.kinds.llm import FINISH_REASONS, Completion

    with check_config_round_trip(cls, settings) as backend:
        label = _label(cls)
        done = backend.complete("The sensor reads", max_tokens=5)
        assert isinstance(done, Completion), f"{label}: complete returned {type(done).__name__}"
        assert 0 <= done.tokens <= 5, f"{label}: {done.tokens} tokens for max_tokens=5"
        assert done.finish_reason in FINISH_REASONS, f"{label}: finish_reason {done.finish_reason}"
        again = backend.complete("The sensor reads", max_tokens=5)
        assert again == done, f"{label}: temperature 0 must be deterministic"
        count = backend.count_tokens("The sensor reads")
        assert isinstance(count, int) and count >= 0, f"{label}: count_tokens gave {count!r}"
        bad_requests: list[Callable[[], Any]] = [
            lambda: backend.complete("x", max_tokens=0),
            lambda: backend.complete(b"x", max_tokens=1),
            lambda: backend.complete("x", max_tokens=1, temperature=5.0),
            lambda: backend.complete("x", max_tokens=1, stop=[""]),
        ]
        for call in bad_requests:
            try:
                call()
            except QresError:
                continue
            raise AssertionError(f"{label}: a malformed request was accepted")


def check_lora_layer(cls: type, settings: Mapping[str, Any] | None = None) -> None:
    """Shapes, a Q16.16 export/import round trip, merge_into leaving its input alone."""
    import numpy as np

    layer = check_config_round_trip(cls, settings)
    label = _label(cls)
    x = np.random.default_rng(1).normal(0, 1, (3, layer.d_in))
    out = layer.forward(x)
    assert out.shape == (3, layer.d_out), f"{label}: forward shaped {out.shape}"
    delta = layer.delta_weight()
    assert delta.shape == (layer.d_out, layer.d_in), f"{label}: delta_weight shaped {delta.shape}"
    a_q, b_q = layer.export_q16()
    assert a_q.dtype == np.int32 and b_q.dtype == np.int32, f"{label}: export_q16 must be int32"
    assert a_q.shape == (layer.rank, layer.d_in), f"{label}: A shaped {a_q.shape}"
    assert b_q.shape == (layer.d_out, layer.rank), f"{label}: B shaped {b_q.shape}"
    b_new = np.full_like(b_q, 65536 // 4)
    layer.import_q16(a_q, b_new)
    a2, b2 = layer.export_q16()
    ok = np.array_equal(a2, a_q) and np.array_equal(b2, b_new)
    assert ok, f"{label}: import_q16 then export_q16 must give the same arrays"
    weight = np.ones((layer.d_out, layer.d_in))
    before = weight.copy()
    merged = layer.merge_into(weight)
    assert np.array_equal(weight, before), f"{label}: merge_into modified its input"
    assert np.allclose(merged, weight + layer.delta_weight()), f"{label}: merge_into result"
    zeros_a, zeros_b = np.zeros(a_q.shape), np.zeros(b_q.shape)
    layer.update(zeros_a, zeros_b, 0.1)
    assert np.array_equal(layer.export_q16()[1], b_new), f"{label}: a zero step moved B"


def check_validator(cls: type, settings: Mapping[str, Any] | None = None) -> None:
    """Verdicts for odd answers (empty, huge, binary-looking), inputs left alone, and
    ``safe_check`` never raising."""
    from qres.kinds.validator import Context, Verdict

    validator = check_config_round_trip(cls, settings)
    label = _label(cls)
    for answer in ("", "42", '{"a": 1}', "\x00\xff" * 10, "x" * 100_000, "((((" * 50):
        verdict = validator.safe_check("What is 6 * 7? Give JSON.", answer, Context())
        assert isinstance(verdict, Verdict), f"{label}: safe_check returned {verdict!r}"
        assert isinstance(verdict.reason, str), f"{label}: a verdict's reason must be text"
    assert isinstance(validator.applies("any prompt"), bool), f"{label}: applies must be bool"


_CHECKS: dict[str, Callable[..., None]] = {
    "predictor": check_predictor,
    "coder": check_coder,
    "aggregator": check_aggregator,
    "attack": check_attack,
    "transport": check_transport,
    "hardware": check_hardware,
    "llm_backend": check_llm_backend,
    "lora_layer": check_lora_layer,
    "validator": check_validator,
}
