"""The tiered router: tools, validators, escalation, budgets, the log, the learned estimator."""

from __future__ import annotations

import json

import pytest
from conftest import run_qres
from hypothesis import given, settings
from hypothesis import strategies as st

from qres.kernel import plugins
from qres.kernel.errors import QresError
from qres.kinds.validator import Context, Validator
from qres.llm import tools
from qres.llm.route_settings import RouterSettings
from qres.llm.router import Router
from qres.llm.tiers import BackendRunner, OpenAIRunner, ToolsRunner


def validator(name, **config):
    return plugins.create("validator", {"use": name, **config}, None)


def deterministic_runner(tier, seed=0):
    backend = plugins.create("llm_backend", {"use": "deterministic", "seed": seed}, None)
    return BackendRunner(tier, backend)


def make_router(tmp_path, validators=(), **overrides):
    tiers = [
        {"name": "t0", "kind": "tools"},
        {"name": "t1", "kind": "llm", "profile": "x", "cost_per_1k": 1.0, "max_tokens": 8},
        {"name": "t2", "kind": "llm", "profile": "x", "cost_per_1k": 10.0, "max_tokens": 8},
    ]
    s = RouterSettings(tiers=tiers, log=str(tmp_path / "log.jsonl"), **overrides)
    t = s.tier_list
    runners = {
        "t0": ToolsRunner(t[0]),
        "t1": deterministic_runner(t[1], 1),
        "t2": deterministic_runner(t[2], 2),
    }
    return Router(s, validators, runners)


# -- tools --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prompt", "value"),
    [
        ("What is 12 * (3 + 4)?", 84),
        ("Compute 1,234 plus 5.", 1239),
        ("What is 2 to the power of 10?", 1024),
        ("How much is 17 minus 20?", -3),
        ("Convert 5 km to miles", 3.106855961),
        ("How many feet are in 3 meters?", 9.842519685),
        ("What is 212 degrees fahrenheit in celsius?", 100),
        ("Convert 2 GiB to MB", None),  # unknown unit: no answer rather than a wrong one
        ("What is 7 divided by 0?", None),
        ("What is 9 ** 99999?", None),
    ],
)
def test_numeric_tools(prompt, value):
    found = tools.answer(prompt)
    if value is None:
        assert found is None
    else:
        assert found.value == pytest.approx(value, rel=1e-9)


def test_lookup_finds_the_longest_fact_and_refuses_the_rest():
    assert tools.answer("What is the capital of the Netherlands?").text == "Amsterdam"
    assert tools.answer("chemical symbol of gold?").text == "Au"
    assert tools.answer("Write a haiku about the sea") is None


def test_a_broken_facts_file_is_one_clear_error(tmp_path):
    bad = tmp_path / "facts.tsv"
    bad.write_text("no tab here\n")
    with pytest.raises(QresError, match="line 1: give key<TAB>answer"):
        tools.lookup("anything", str(bad))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(-999, 999), min_size=2, max_size=5), st.sampled_from("+-*"))
def test_arithmetic_agrees_with_python(numbers, op):
    expr = f" {op} ".join(f"({n})" if n < 0 else str(n) for n in numbers)
    found = tools.arithmetic(f"What is {expr}?")
    assert found is not None and found.value == eval(expr)  # noqa: S307 - integers we made


# -- validators ---------------------------------------------------------------------------


def test_builtin_validators_judge_answers():
    schema = {"type": "object", "required": ["name"]}
    assert validator("json-schema", schema=schema).check("", 'Sure: {"name": "Bob"}', Context()).ok
    assert not validator("json-schema", schema=schema).check("", '{"age": 3}', Context()).ok
    assert not validator("json-schema").check("", "no json", Context()).ok
    assert validator("python-syntax").check("", "```python\nx = 1\n```", Context()).ok
    assert not validator("python-syntax").check("", "def (:", Context()).ok
    assert validator("regex", pattern=r"^\d+$", fullmatch=True).check("", " 42 ", Context()).ok
    assert not validator("length", max_chars=3).check("", "long answer", Context()).ok
    numeric = validator("numeric")
    assert numeric.check("What is 6 * 7?", "6 times 7 is 42", Context()).ok
    assert not numeric.check("What is 6 * 7?", "it is 41", Context()).ok
    agree = validator("agreement", tier="t0")
    ask = Context("t1", lambda tier, prompt: tools.answer(prompt).text)
    assert agree.check("What is 6 * 7?", "42.", ask).ok
    assert not agree.check("What is 6 * 7?", "43", ask).ok


def test_a_bad_validator_setting_is_a_profile_error():
    from qres.kernel.errors import ProfileError

    with pytest.raises(ProfileError, match="pattern"):
        validator("regex", pattern="(unclosed")
    with pytest.raises(ProfileError, match="schema"):
        validator("json-schema", schema={"type": 12})


class Raising(Validator):
    name = "raising"

    def check(self, prompt, answer, context):
        raise RuntimeError("bug")


def test_a_raising_validator_fails_the_answer_and_the_router_escalates(tmp_path):
    router = make_router(tmp_path, [Raising()])
    out = router.route("Tell me a story about a sensor")
    assert not out.ok and [a.tier for a in out.attempts] == ["t1", "t2"]
    assert all("raised RuntimeError: bug" in a.reason for a in out.attempts)


# -- routing ------------------------------------------------------------------------------


def test_tools_answer_for_free_and_models_are_escalated_on_failure(tmp_path):
    router = make_router(tmp_path, [validator("json-schema", when="(?i)json")])
    out = router.route("What is 6 * 7?")
    assert (out.answer, out.tier, out.cost) == ("42", "t0", 0.0)
    # the deterministic backend never writes JSON: t1 then t2 fail validation
    out = router.route("Give JSON for a sensor named Bob")
    assert not out.ok and [a.tier for a in out.attempts] == ["t1", "t2"]
    assert out.cost > 0
    lines = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [line["tier"] for line in lines] == ["t0", "t2"]
    assert lines[1]["attempts"][0]["reason"].startswith("json-schema:")
    assert "Bob" not in (tmp_path / "log.jsonl").read_text()  # prompts are hashed, not kept


def test_rules_raise_the_start_tier(tmp_path):
    router = make_router(tmp_path)
    assert router.decide("What is the capital of Peru?").start == 0
    assert router.decide("Describe a sensor").start == 1
    hard = router.decide("Write a python function, then explain why it works step by step")
    assert hard.start == 2 and {"code", "multi_step"} <= set(hard.scores["triggered"])


def test_budget_skips_expensive_tiers_and_degrades(tmp_path):
    router = make_router(tmp_path, budget_per_hour=0.05)
    hard = "Write a python function, then explain why it works step by step"
    out = router.route(hard)  # t2 would cost more than the budget: degrade to t1
    assert [(a.tier, a.skipped) for a in out.attempts] == [("t2", True), ("t1", False)]
    assert out.tier == "t1" and router.spent(3600) <= 0.05


def test_learned_estimator_from_logs(tmp_path):
    router = make_router(tmp_path, [validator("numeric", when=r"\d")])
    for i in range(12):
        router.route(f"What is {i} * 7?")
        router.route(f"Tell me about sensor number {i} in words")
    router.close()
    log = tmp_path / "log.jsonl"
    out = run_qres("llm", "router", "train", str(log), "--out", str(tmp_path / "m.json"))
    assert out.returncode == 0, out.stderr.decode()
    model = json.loads((tmp_path / "m.json").read_text())
    assert set(model["tiers"]) == {"t0", "t1", "t2"}  # the word prompts fail t1 and t2
    learned = make_router(tmp_path, estimator="learned", model_path=str(tmp_path / "m.json"))
    assert learned.decide("What is 99 * 7?").start == 0
    probs = learned.decide("What is 99 * 7?").scores
    assert probs["t0"] > 0.5


# -- the command line ---------------------------------------------------------------------


def test_route_explain_and_answer_from_the_command_line(tmp_path):
    out = run_qres("llm", "route", "What is 12 * (3 + 4)?", "--explain")
    assert out.returncode == 0, out.stderr.decode()
    text = out.stdout.decode()
    assert "tool" in text and "start at t0 (tools)" in text
    out = run_qres("llm", "route", "Convert 10 kg to pounds", "--log", str(tmp_path / "l"))
    assert out.returncode == 0 and out.stdout.decode().strip() == "22.04622622"
    assert json.loads((tmp_path / "l").read_text())["tier"] == "t0"


def test_bad_input_is_one_clear_line(tmp_path):
    out = run_qres("llm", "router", "train", str(tmp_path / "missing.jsonl"))
    assert out.returncode == 1 and out.stderr.decode().startswith("qres: error:")
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    out = run_qres("llm", "router", "train", str(tmp_path / "bad.jsonl"))
    assert out.returncode == 1 and b"line 1: not a decision-log record" in out.stderr
    out = run_qres("llm", "route", "hi", "--profile", "llm-edge")
    assert out.returncode == 3 and b"no [router] table" in out.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text('[profile]\nname="bad"\n[router]\ntiers = [{ name = "a", kind = "psychic" }]\n')
    out = run_qres("llm", "route", "hi", "--profile", str(bad))
    assert out.returncode == 3 and b"tiers" in out.stderr and b"Traceback" not in out.stderr


# -- the semantic cache (real embeddings from the bundled model) ---------------------------


def test_semantic_cache_serves_only_what_validators_accept(tmp_path, llama_backend):
    s = RouterSettings(
        tiers=[{"name": "t1", "kind": "llm", "profile": "x", "max_tokens": 8}],
        cache_threshold=0.9,
        state=str(tmp_path / "state.sqlite"),
    )
    runner = deterministic_runner(s.tier_list[0])
    checks = [validator("json-schema", when="(?i)json")]

    def embed(text):
        return llama_backend.embed([text])[0]

    router = Router(s, checks, {"t1": runner}, embed=embed)
    first = router.route("Describe the weather in Paris today")
    again = router.route("Describe the weather in Paris today.")
    assert first.ok and not first.cached and again.cached and again.answer == first.answer
    # a near-identical prompt whose validator rejects the cached answer is not served from it
    json_ask = router.route("Describe the weather in Paris today as JSON")
    assert not json_ask.cached
    router.close()
    reopened = Router(s, checks, {"t1": runner}, embed=embed)  # the cache persists
    assert reopened.route("Describe the weather in Paris today").cached
    reopened.close()


# -- the openai tier against a live `qres llm serve` ----------------------------------------


@pytest.fixture
def qres_serve(tmp_path):
    """`qres llm serve` with the deterministic backend on a free 127.0.0.1 port, in its own
    process; yields its ``/v1`` URL and stops it afterwards."""
    import socket
    import subprocess
    import sys
    import time
    import urllib.request
    from pathlib import Path

    profile = tmp_path / "served.toml"
    profile.write_text(
        '[profile]\nname = "served"\n\n[llm.backend]\nuse = "deterministic"\nseed = 5\n'
    )
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    exe = Path(sys.executable).with_name("qres")
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(
        [str(exe), "llm", "serve", "--profile", str(profile), "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(url + "/health", timeout=2):
                break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail((tmp_path / "serve.log").read_text())
            time.sleep(0.1)
    yield url + "/v1", proc
    if proc.poll() is None:
        proc.terminate()
        proc.wait(10)
    log.close()


def test_the_openai_tier_asks_a_live_server_and_escalates_when_it_is_gone(tmp_path, qres_serve):
    """The openai tier goes through the openai backend (one HTTP client in qres) to a real
    `qres llm serve`: the server's answer, its token counts billed at the tier's price; once the
    server is gone, the tier fails with the backend's one-line reason and the router escalates."""
    url, proc = qres_serve
    tiers = [
        {"name": "t0", "kind": "tools"},
        {"name": "remote", "kind": "openai", "url": url, "model": "deterministic",
         "cost_per_1k": 2.0, "max_tokens": 9, "latency_budget_ms": 20000},
        {"name": "local", "kind": "llm", "profile": "x", "max_tokens": 4},
    ]  # fmt: skip
    s = RouterSettings(tiers=tiers)
    t = s.tier_list
    runners = {"t0": ToolsRunner(t[0]), "remote": OpenAIRunner(t[1]),
               "local": deterministic_runner(t[2], 1)}  # fmt: skip
    router = Router(s, [], runners)
    try:
        prompt = "Tell me about the swarm"
        served = plugins.create("llm_backend", {"use": "deterministic", "seed": 5}, None)
        expected = served.chat([{"role": "user", "content": prompt}], max_tokens=9)
        out = router.route(prompt)
        assert (out.ok, out.tier, out.answer) == (True, "remote", expected.text.strip())
        [attempt] = out.attempts
        assert attempt.tokens >= expected.tokens == 9
        assert out.cost == pytest.approx(2.0 * attempt.tokens / 1000)
        assert router.route("What is 6 * 7?").tier == "t0"  # the tools still come first
        proc.terminate()
        proc.wait(10)
        out = router.route("Tell me about the swarm again")
        assert out.ok and out.tier == "local"
        assert [a.tier for a in out.attempts] == ["remote", "local"]
        reason = out.attempts[0].reason
        assert "cannot reach the server" in reason and url in reason and "\n" not in reason
    finally:
        router.close()


def test_an_openai_tier_needs_an_http_url():
    from qres.kernel.config import InvalidSetting

    with pytest.raises(InvalidSetting, match="http://"):
        RouterSettings(tiers=[{"name": "r", "kind": "openai", "url": "ftp://x", "model": "m"}])
