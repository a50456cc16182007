"""qres.testing's conformance checks, run over every built-in plugin (numcodecs' common.py
shape), and shown to catch plugins that break their kind's contract."""

from __future__ import annotations

import numpy as np
import pytest

from qres import testing
from qres.kernel import plugins

BUILTINS = sorted(
    (info.kind, info.name) for info in plugins.list_plugins() if info.package == "qres"
)


def test_every_kind_has_a_builtin_and_a_check():
    assert {kind for kind, _ in BUILTINS} == set(plugins.KINDS)
    assert set(testing._CHECKS) == set(plugins.KINDS)


#: Transports that carry messages to peers over sockets or a broker: their delivery is tested
#: against real peers (tests/test_transport_tcp.py, tests/test_transport_mqtt.py).
NETWORK_TRANSPORTS = {"tcp", "mqtt"}


@pytest.fixture
def node_key(tmp_path, monkeypatch):
    """A node key in a private qres home, for plugins that load the node's identity."""
    from qres.trust.identity import Identity, default_key_path, save_identity

    monkeypatch.setenv("QRES_HOME", str(tmp_path))
    save_identity(Identity.generate(), default_key_path())


@pytest.fixture
def openai_server():
    """A real OpenAI-compatible server for the openai backend: `qres llm serve`'s app in front
    of the deterministic backend, on 127.0.0.1."""
    from llm_server import ServerThread

    from qres.llm.engine import Engine

    engine = Engine(plugins.get_plugin("llm_backend", "deterministic").from_config({}))
    server = ServerThread(engine).start()
    yield server.url + "/v1"
    server.stop()
    engine.close()


@pytest.mark.parametrize(("kind", "name"), BUILTINS, ids=[f"{k}-{n}" for k, n in BUILTINS])
def test_builtin_plugin_conforms(kind, name, node_key, request):
    cls = plugins.get_plugin(kind, name)
    assert testing.kind_of(cls) == kind
    options = {"loopback": False} if kind == "transport" and name in NETWORK_TRANSPORTS else {}
    if (kind, name) == ("llm_backend", "openai"):
        base_url = request.getfixturevalue("openai_server")
        testing.check_plugin(cls, {"base_url": base_url, "max_tokens": 64})
        return
    testing.check_plugin(cls, **options)


def test_network_transports_are_builtins():
    assert NETWORK_TRANSPORTS <= {name for kind, name in BUILTINS if kind == "transport"}


def test_settings_are_passed_through():
    cls = plugins.get_plugin("predictor", "nlms")
    testing.check_plugin(cls, {"order": 4})
    with pytest.raises(Exception, match="order"):
        testing.check_plugin(cls, {"order": -1})


def _rice():
    return plugins.get_plugin("coder", "rice")


def test_a_coder_that_loses_data_is_caught():
    class Lossy(_rice()):
        name = "lossy"

        def decode(self, data, n, **kw):
            out = super().decode(data, n, **kw)
            return out // 2 * 2

    with pytest.raises(AssertionError, match="round trip"):
        testing.check_coder(Lossy)


def test_a_coder_that_misses_truncation_is_caught():
    from qres.kinds.coder import Coder

    class Naive(Coder):
        name = "naive"

        def encode(self, residuals):
            return np.asarray(residuals, dtype="<i8").tobytes()

        def decode(self, data, n):
            return np.frombuffer(data, dtype="<i8", count=n).astype(np.int64)

    with pytest.raises(AssertionError, match="instead of IntegrityError"):
        testing.check_coder(Naive)


def test_an_order_dependent_aggregator_is_caught():
    mean = plugins.get_plugin("aggregator", "mean")

    class FirstRow(mean):
        name = "first-row"

        def _aggregate(self, x, f, weights, rng):
            return np.array(x[0], dtype=np.int32)

    with pytest.raises(AssertionError, match="permuted"):
        testing.check_aggregator(FirstRow)


def test_a_mutating_aggregator_is_caught():
    mean = plugins.get_plugin("aggregator", "mean")

    class Sorter(mean):
        name = "sorter"

        def aggregate(self, updates, *, f, weights=None, rng=None):
            updates.sort(axis=0)  # writes into the caller's array
            return super().aggregate(updates, f=f, weights=weights, rng=rng)

    with pytest.raises((AssertionError, ValueError)):
        testing.check_aggregator(Sorter)


def test_a_predictor_with_state_between_calls_is_caught():
    poly = plugins.get_plugin("predictor", "polynomial")

    class Drifting(poly):
        name = "drifting"
        calls = 0

        def _run(self, block, decode, max_error, lo, hi):
            Drifting.calls += 1
            out = super()._run(block, decode, max_error, lo, hi)
            return out + (Drifting.calls % 2) if not decode else out

    with pytest.raises(AssertionError):
        testing.check_predictor(Drifting)


def test_a_config_that_does_not_round_trip_is_caught():
    import attrs

    mean = plugins.get_plugin("aggregator", "mean")

    class Lying(mean):
        name = "lying"

        @attrs.frozen
        class Config:
            k: int = 1

        def get_config(self):
            return {"use": self.name, "k": self.config.k + 1}

    with pytest.raises(AssertionError, match="differs"):
        testing.check_aggregator(Lying)


def test_a_class_of_no_kind_is_caught():
    with pytest.raises(AssertionError, match="no plugin kind"):
        testing.check_plugin(plugins.Plugin)
