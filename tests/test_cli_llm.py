"""`qres llm` from the command line, with the real bundled model (one thread)."""

from __future__ import annotations

import json

import pytest
from conftest import run_qres

pytest.importorskip("llama_cpp")

PROFILE = """
[profile]
name = "t"
extends = "llm-edge"
[llm.backend]
use = "llama-cpp"
n_threads = 1
n_ctx = 512
max_tokens = 32
"""


@pytest.fixture
def profile(tmp_path):
    path = tmp_path / "t.toml"
    path.write_text(PROFILE)
    return str(path)


def test_complete_json_from_stdin_and_stream_agree(profile):
    done = run_qres("llm", "complete", "-", "--profile", profile, "--max-tokens", "6", "--json",
                    input=b"The sky is")  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["tokens"] <= 6 and out["finish_reason"] in ("stop", "length")
    assert out["prompt_tokens"] > 0 and out["model"].startswith("SmolLM2")
    streamed = run_qres("llm", "complete", "The sky is", "-p", profile, "--max-tokens", "6",
                        "--stream")  # fmt: skip
    assert streamed.returncode == 0 and streamed.stdout.decode() == out["text"] + "\n"


def test_chat_keeps_history_and_embed_prints_unit_vectors(profile):
    done = run_qres("llm", "chat", "-p", profile, "--max-tokens", "4", input=b"Hi\nAgain\n")
    assert done.returncode == 0, done.stderr
    vectors = run_qres("llm", "embed", "a", "b", "-p", profile)
    rows = [json.loads(line) for line in vectors.stdout.decode().splitlines()]
    assert len(rows) == 2 and abs(sum(x * x for x in rows[0]) - 1) < 1e-4


@pytest.mark.parametrize(
    "args, code, words",
    [
        (["complete", "x", "--max-tokens", "0"], 1, "max_tokens=0"),
        (["complete", "x", "--stream", "--json"], 2, "--stream and --json"),
        (["complete", "x", "--profile", "esp32"], 3, "no [llm.backend]"),
    ],
)
def test_errors_are_one_line_with_the_documented_code(profile, args, code, words):
    extra = [] if "--profile" in args else ["--profile", profile]
    done = run_qres("llm", *args, *extra)
    assert done.returncode == code
    err = done.stderr.decode()
    assert err.startswith("qres: error:") and err.count("\n") == 1 and words in err


def test_profiles_check_accounts_model_and_kv_cache():
    done = run_qres("profiles", "check", "llm-edge", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    llm = [i for i in report["items"] if i["kind"] == "llm_backend"][0]
    assert llm["bytes"] > 98_000_000 and report["fits"]
