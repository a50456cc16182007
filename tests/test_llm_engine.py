"""The engine's admission control, cache, energy policy and metrics (deterministic backend)."""

from __future__ import annotations

import asyncio
import threading

import pytest
from llm_server import ServerThread
from qres.builtin_plugins.llm.deterministic import DeterministicBackend

from qres.kernel.errors import QresError
from qres.llm.cache import ResponseCache
from qres.llm.engine import Engine, Request, TooManyRequests, Unavailable, parse_request
from qres.llm.limits import BackendQueue, RateLimiter
from qres.llm.metrics import percentile
from qres.llm.settings import EngineSettings


class Faulty(DeterministicBackend):
    """Fails on prompts containing 'boom'; waits on a gate for prompts containing 'slow'."""

    gate = threading.Event()

    def complete(self, prompt, **kwargs):
        if "boom" in prompt:
            raise RuntimeError("backend exploded")
        if "slow" in prompt:
            self.gate.wait(10)
        return super().complete(prompt, **kwargs)


def run(coro):
    return asyncio.run(coro)


def test_rate_limiter_is_a_token_bucket():
    now = [0.0]
    limiter = RateLimiter(rate_per_s=2.0, burst=3, clock=lambda: now[0])
    for _ in range(3):
        limiter.admit("a")
    with pytest.raises(TooManyRequests) as info:
        limiter.admit("a")
    assert info.value.retry_after_s == 1
    limiter.admit("b")  # buckets are per client
    now[0] = 0.5
    limiter.admit("a")  # one token refilled after 0.5 s at 2/s


def test_cache_is_lru_with_ttl_and_survives_restarts(tmp_path):
    now = [100.0]
    path = tmp_path / "c.sqlite"
    cache = ResponseCache(2, ttl_s=10, path=path, clock=lambda: now[0])
    cache.put("a", {"v": 1})
    cache.put("b", {"v": 2})
    assert cache.get("a") == {"v": 1}  # a is now the most recent
    cache.put("c", {"v": 3})  # evicts b
    assert cache.get("b") is None and len(cache) == 2
    cache.close()
    reopened = ResponseCache(2, ttl_s=10, path=path, clock=lambda: now[0])
    assert reopened.get("a") == {"v": 1} and reopened.get("c") == {"v": 3}
    now[0] = 111.0
    assert reopened.get("a") is None  # expired
    reopened.close()


def test_queue_serves_by_priority_and_refuses_when_full():
    async def scenario():
        queue = BackendQueue(size=2, retry_after_s=3)
        await queue.acquire()
        order = []

        async def wait(priority, name):
            await queue.acquire(priority)
            order.append(name)
            queue.release()

        low = asyncio.create_task(wait(9, "low"))
        high = asyncio.create_task(wait(0, "high"))
        await asyncio.sleep(0)
        with pytest.raises(TooManyRequests) as info:
            await queue.acquire()
        assert info.value.retry_after_s == 3
        queue.release()
        await asyncio.gather(low, high)
        return order

    assert run(scenario()) == ["high", "low"]


def test_parse_request_validates_openai_bodies():
    s = EngineSettings(max_prompt_chars=10)
    assert parse_request({"prompt": "hi", "stop": "x"}, s, chat=False).stop == ("x",)
    for body, chat in [
        ({"prompt": "x" * 11}, False),
        ({"prompt": 3}, False),
        ({"messages": []}, True),
        ({"messages": [{"role": "robot", "content": "x"}]}, True),
        ({"prompt": "x", "n": 2}, False),
        ({"prompt": "x", "max_tokens": 1.5}, False),
        ([1, 2], False),
    ]:
        with pytest.raises(QresError):
            parse_request(body, s, chat)


def test_energy_policy_shortens_or_serves_only_from_cache():
    level = [100.0]
    settings = EngineSettings(low_battery_percent=20, low_battery_max_tokens=3)
    engine = Engine(DeterministicBackend(), settings, battery=lambda: level[0])
    level[0] = 10.0
    done, _ = run(engine.complete(Request(prompt="p", max_tokens=50)))
    assert done.tokens == 3 and done.finish_reason == "length"
    cache_only = Engine(
        DeterministicBackend(), EngineSettings(low_battery_percent=20, low_battery="cache-only"),
        battery=lambda: level[0],
    )  # fmt: skip
    level[0] = 90.0
    run(cache_only.complete(Request(prompt="known", max_tokens=4)))
    level[0] = 5.0
    hit, cached = run(cache_only.complete(Request(prompt="known", max_tokens=4)))
    assert cached and hit.tokens == 4
    with pytest.raises(Unavailable):
        run(cache_only.complete(Request(prompt="unknown", max_tokens=4)))


def test_backend_failure_is_one_error_and_the_engine_goes_on():
    engine = Engine(Faulty(), EngineSettings(cache_entries=0))
    with pytest.raises(QresError, match="backend exploded"):
        run(engine.complete(Request(prompt="boom", max_tokens=2)))
    done, _ = run(engine.complete(Request(prompt="fine", max_tokens=2)))
    assert done.tokens == 2
    summary = engine.metrics.summary()
    assert summary["requests"] == 2 and summary["ok"] == 1


def test_metrics_percentiles_nearest_rank():
    values = [float(v) for v in range(1, 101)]
    assert [percentile(values, q) for q in (50, 95, 99)] == [50.0, 95.0, 99.0]
    assert percentile([], 50) == 0.0


def test_server_turns_excess_load_into_429_with_retry_after():
    openai = pytest.importorskip("openai")
    Faulty.gate.clear()
    engine = Engine(Faulty(), EngineSettings(queue_size=1, retry_after_s=2, cache_entries=0))
    server = ServerThread(engine).start()
    try:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="k", max_retries=0)
        results = []

        def call(prompt):
            try:
                results.append(client.completions.create(model="m", prompt=prompt, max_tokens=2))
            except openai.RateLimitError as exc:
                results.append(exc)

        threads = [threading.Thread(target=call, args=(f"slow {i}",)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(0.5)
        Faulty.gate.set()
        for t in threads:
            t.join(10)
        refused = [r for r in results if isinstance(r, Exception)]
        assert len(results) == 4 and 1 <= len(refused) <= 2
        assert all(r.response.headers["Retry-After"] == "2" for r in refused)
        with pytest.raises(openai.InternalServerError, match="backend exploded"):
            client.completions.create(model="m", prompt="boom", max_tokens=2)
        assert client.completions.create(model="m", prompt="ok", max_tokens=2).choices
        import urllib.request

        text = urllib.request.urlopen(server.url + "/metrics").read().decode()
        assert 'qres_llm_requests_total{outcome="rejected"}' in text
        health = urllib.request.urlopen(server.url + "/health").read()
        assert b'"ok"' in health
    finally:
        server.stop()
