"""Accuracy and cost of always-T0, always-T1, always-top and the router (rules and learned)
on the task set of router_tasks.py, in the style of RouteLLM's cost/quality comparison.

Tiers: T0 the tools (free), T1 the bundled SmolLM2-135M with 32 tokens (0.0001 per 1k
tokens), T2 "top" (0.002 per 1k tokens). No bigger model is available offline, so the top tier
is SmolLM2 again with 64 tokens: its row shows what escalation costs, not what a large model
would add. Each tier answers each prompt once (greedy, so answers are reused by every
strategy); the learned estimator is trained on the first half of the tasks' logs (labelled by
correctness) and every strategy is scored on the second half.

    python benchmarks/router_bench.py --per-kind 30
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import router_tasks  # noqa: E402

from qres.kernel import plugins, profiles  # noqa: E402
from qres.llm import tools  # noqa: E402
from qres.llm.route_learn import read_examples, train  # noqa: E402
from qres.llm.route_settings import RouterSettings  # noqa: E402
from qres.llm.router import Router  # noqa: E402
from qres.llm.tiers import TierAnswer  # noqa: E402

TIERS = [
    {"name": "t0", "kind": "tools"},
    {"name": "t1", "kind": "llm", "profile": "llm-edge", "cost_per_1k": 0.0001, "max_tokens": 32},
    {"name": "t2", "kind": "llm", "profile": "llm-edge", "cost_per_1k": 0.002, "max_tokens": 64},
]


def model_answers(tasks, backend) -> dict:
    """T1 and T2 answers per prompt from one greedy run of 64 tokens (T1 is its first 32)."""
    out = {}
    for i, task in enumerate(tasks):
        pieces, tokens = [], 0
        t1 = None
        for chunk in backend.stream_chat(
            [{"role": "user", "content": task["prompt"]}], max_tokens=64, temperature=0.0
        ):
            pieces.append(chunk.text)
            tokens += chunk.tokens
            if tokens >= 32 and t1 is None:
                t1 = ("".join(pieces), tokens)
        text = "".join(pieces)
        t1 = t1 or (text, tokens)
        used = backend.count_tokens(task["prompt"]) + 20  # the chat template's tokens
        out[task["prompt"]] = {
            "t1": TierAnswer(t1[0].strip(), used, t1[1]),
            "t2": TierAnswer(text.strip(), used, tokens),
        }
        print(f"\r{i + 1}/{len(tasks)} prompts through the model", end="", file=sys.stderr)
    print(file=sys.stderr)
    return out


def runners(answers):
    def tier(name):
        return lambda prompt: answers[prompt][name]

    def t0(prompt):
        found = tools.answer(prompt)
        return TierAnswer(None if found is None else found.text)

    return {"t0": t0, "t1": tier("t1"), "t2": tier("t2")}


def score_fixed(tasks, answers, name, cost_per_1k) -> tuple[float, float]:
    right, cost = 0, 0.0
    for task in tasks:
        if name == "t0":
            found = tools.answer(task["prompt"])
            right += router_tasks.check(task, found.text if found else None)
            continue
        a = answers[task["prompt"]][name]
        right += router_tasks.check(task, a.text)
        cost += cost_per_1k * (a.prompt_tokens + a.tokens) / 1000
    return right / len(tasks), cost


def score_router(tasks, answers, validators, **settings) -> tuple[float, float, list]:
    with tempfile.TemporaryDirectory() as tmp:
        s = RouterSettings(tiers=TIERS, log=str(Path(tmp) / "log.jsonl"), **settings)
        router = Router(s, validators, runners(answers))
        right, cost, times = 0, 0.0, []
        for task in tasks:
            out = router.route(task["prompt"])
            right += router_tasks.check(task, out.answer)
            cost += out.cost
            t = time.perf_counter()
            router.decide(task["prompt"])
            times.append((time.perf_counter() - t) * 1000)
        router.close()
    return right / len(tasks), cost, times


def training_log(tasks, answers, path: Path) -> None:
    """Log lines with every tier's attempt labelled by correctness (the benchmark knows it)."""
    from qres.llm import features

    with path.open("w") as out:
        for task in tasks:
            found = tools.answer(task["prompt"])
            right = router_tasks.check(task, found.text if found else None)
            attempts = [{"tier": "t0", "ok": right, "correct": right}]
            for name in ("t1", "t2"):
                ok = router_tasks.check(task, answers[task["prompt"]][name].text)
                attempts.append({"tier": name, "ok": ok, "correct": ok})
            record = {"features": features.extract(task["prompt"]), "attempts": attempts}
            out.write(json.dumps(record) + "\n")


def _anchor(units: int) -> None:
    """A fixed pure-Python workload (the wall-clock anchor): ``units`` SHA-256 digests."""
    data = b"anchor"
    for _ in range(units):
        data = hashlib.sha256(data).digest()


def _calibrate(target_ns: float) -> int:
    """Anchor units whose median CPU time (over 51 runs) matches ``target_ns``."""

    def median_ns(units: int) -> float:
        spent = []
        for _ in range(51):
            c = time.thread_time_ns()
            _anchor(units)
            spent.append(time.thread_time_ns() - c)
        return statistics.median(spent)

    units = 1
    while median_ns(units) < target_ns:
        units *= 2
    return max(1, round(units * target_ns / median_ns(units)))


def _p(times: list[float], q: float) -> float:
    ordered = sorted(times)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def decision_overhead(tasks, rounds: int) -> None:
    """p50 and p99 of ``Router.decide`` (features and the rules) over every task's prompt, in
    wall-clock time and in this thread's CPU time (which a descheduling does not inflate),
    side by side with an anchor: a fixed workload calibrated to the decision's median CPU
    time, timed interleaved with the decisions. The anchor does nothing the router does, so
    whatever tail it shows is the machine's (other processes, the scheduler), not the router's.
    """
    router = Router(RouterSettings(tiers=TIERS), runners={"t0": None, "t1": None, "t2": None})
    prompts = [task["prompt"] for task in tasks]
    for p in prompts:  # warm up: regexes compiled, caches filled
        router.decide(p)
    cpu = []
    for p in prompts:
        c = time.thread_time_ns()
        router.decide(p)
        cpu.append(time.thread_time_ns() - c)
    units = _calibrate(statistics.median(cpu))
    series = {"router": ([], []), "anchor": ([], [])}
    calls = (("router", router.decide), ("anchor", lambda _p: _anchor(units)))
    for _ in range(rounds):
        for p in prompts:
            for name, call in calls:
                t, c = time.perf_counter_ns(), time.thread_time_ns()
                call(p)
                series[name][1].append((time.thread_time_ns() - c) / 1e6)
                series[name][0].append((time.perf_counter_ns() - t) / 1e6)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    n = len(series["router"][0])
    print(f"decision overhead, {n} decisions, load average {load:.1f}, {os.cpu_count()} CPUs:")
    for name, (wall, cpu_ms) in series.items():
        over = sum(w > 1.0 for w in wall) / len(wall)
        print(
            f"  {name:6s} wall p50 {_p(wall, 0.5):.3f} ms p99 {_p(wall, 0.99):.3f} ms "
            f"(over 1 ms: {100 * over:.2f}%); cpu p50 {_p(cpu_ms, 0.5):.3f} ms "
            f"p99 {_p(cpu_ms, 0.99):.3f} ms"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-kind", type=int, default=30)
    parser.add_argument(
        "--decisions-only",
        type=int,
        default=0,
        metavar="ROUNDS",
        help="only time ROUNDS decisions per task (no model) and print p50/p99",
    )
    args = parser.parse_args()
    tasks = router_tasks.build(args.per_kind)
    if args.decisions_only:
        decision_overhead(tasks, args.decisions_only)
        return
    backend = plugins.create(
        "llm_backend", {"use": "llama-cpp", "n_threads": 1, "n_ctx": 1024, "max_tokens": 64}, None
    )
    started = time.perf_counter()
    answers = model_answers(tasks, backend)
    model_s = time.perf_counter() - started
    backend.close()
    profile = profiles.load("router")
    count = len(profile.data["router"].get("validators", []))
    validators = [profile.build("router", "validators", i) for i in range(count)]
    half = len(tasks) // 2
    train_set, test_set = tasks[:half], tasks[half:]
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "train.jsonl"
        training_log(train_set, answers, log)
        model = train(read_examples(log.open(), str(log)))
        model_path = Path(tmp) / "model.json"
        model_path.write_text(model.to_json())
        rows = []
        for label, name, price in (("always-T0", "t0", 0), ("always-T1", "t1", 0.0001),
                                   ("always-top (T2)", "t2", 0.002)):  # fmt: skip
            acc, cost = score_fixed(test_set, answers, name, price)
            rows.append((label, acc, cost))
        acc, cost, times = score_router(test_set, answers, validators)
        rows.append(("router, rules", acc, cost))
        learned = score_router(
            test_set, answers, validators, estimator="learned", model_path=str(model_path)
        )
        rows.append(("router, learned", learned[0], learned[1]))
    times = sorted(times + learned[2])
    print(f"{len(test_set)} test prompts ({args.per_kind * 4} built, {half} for training); "
          f"model answers took {model_s:.0f} s\n")  # fmt: skip
    print("| strategy | accuracy | cost per 1000 prompts |")
    print("|---|---|---|")
    for label, acc, cost in rows:
        print(f"| {label} | {acc:.1%} | {1000 * cost / len(test_set):.4f} |")
    by_kind = {}
    for task in test_set:
        by_kind.setdefault(task["kind"], []).append(task)
    print("\naccuracy by kind (router, rules):")
    for kind, items in by_kind.items():
        acc, _, _ = score_router(items, answers, validators)
        print(f"  {kind}: {acc:.1%}")
    p99 = times[int(0.99 * (len(times) - 1))]
    print(
        f"\ndecision overhead: p50 {statistics.median(times):.3f} ms, p99 {p99:.3f} ms "
        f"over {len(times)} decisions"
    )


if __name__ == "__main__":
    main()
