"""LLM overhead and serving figures, side by side in one run (the same as `qres llm bench`).

Raw llama-cpp-python vs the qres llama-cpp backend vs `qres llm serve` over HTTP (tokens/s,
same prompt and settings, interleaved runs), cache-hit latency over HTTP, 16 concurrent clients
against a small queue (429s, latency, RSS), and sequential vs multi-sequence batched greedy
generation (tokens/s, exactness). One thread, the bundled SmolLM2-135M model.

    python benchmarks/bench_llm.py [--json] [--runs N] [--max-tokens N]
"""

from __future__ import annotations

import argparse
import json

from qres.llm import bench


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--batch", type=int, default=4)
    args = parser.parse_args()
    settings = bench.BenchSettings(
        runs=args.runs, max_tokens=args.max_tokens, clients=args.clients, batch=args.batch
    )
    report = bench.run(settings)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print("\n".join(bench.summary(report)))


if __name__ == "__main__":
    main()
