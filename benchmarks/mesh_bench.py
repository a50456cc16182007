"""The mesh on loopback with real worker processes: overhead against the backend called
directly, recovery after kill -9, and how many requests it takes to ban a lying worker.

    python benchmarks/mesh_bench.py [--model-prompts 4] [--rounds 3] [--only overhead]

Overhead: greedy 32-token requests answered by the bundled SmolLM2 (one thread) in this
process and through the mesh (three worker processes), interleaved request by request so both
paths see the same machine load, as tokens per second; and what the mesh adds to one request
with a backend that costs next to nothing (the deterministic one).
Failover: three deterministic workers; the worker the client would pick is killed (SIGKILL)
and the time until the answer from another worker is reported. Lying: three deterministic
workers, one with another seed (same model name, different tokens), spot_check_rate 0.25,
a local referee; requests until the liar is banned, over 10 runs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))

import psutil  # noqa: E402
from mesh_helpers import WorkerProcess, key_file, worker_profile  # noqa: E402

from qres.kernel import plugins  # noqa: E402
from qres.mesh.backend import open_client  # noqa: E402
from qres.mesh.settings import MeshSettings  # noqa: E402

DET = 'use = "deterministic"\nseed = {seed}\nmax_tokens = 64'
LLAMA = 'use = "llama-cpp"\nn_threads = 1\nn_ctx = 1024\nmax_tokens = 64'
PROMPTS = ["The sensor network", "A swarm of nodes", "Residual coding", "The gateway"]


def settings(folder: Path, procs, **extra) -> MeshSettings:
    key = key_file(folder, f"client{time.monotonic_ns()}")
    return MeshSettings(key=str(key), workers=[p.entry() for p in procs], **extra)


async def session(s, body, referee=None):
    client = open_client(s, referee)
    await client.start()
    try:
        await client.wait_connected(len(s.workers), 60)
        await asyncio.sleep(0.5)
        return await body(client)
    finally:
        await client.aclose()


def overhead(folder: Path, n: int, rounds: int) -> None:
    """Tokens/s of SmolLM2 called directly in this process and through the mesh (three worker
    processes, the client picks one), interleaved request by request in one run, so both
    paths see the same machine load. Every request has its own prompt (nothing is cached)."""
    backend = plugins.create(
        "llm_backend", {"use": "llama-cpp", "n_threads": 1, "n_ctx": 1024, "max_tokens": 64}, None
    )
    backend.load()
    # announcements every 2 s, the product's default (the tests' helper uses 0.2 s)
    procs = [
        WorkerProcess(worker_profile(folder, f"llama{i}", LLAMA, announce_s=2.0)) for i in range(3)
    ]
    try:
        s = settings(folder, procs, spot_check_rate=0.0, first_token_timeout_s=120.0)

        def direct(prompt: str) -> int:
            return sum(c.tokens for c in backend.stream(prompt, max_tokens=32))

        workers = [psutil.Process(p.proc.pid) for p in procs]

        def cpu_s() -> float:
            """CPU seconds of this process and the workers (whatever runs either path)."""
            own = time.process_time()
            return own + sum(sum(w.cpu_times()[:2]) for w in workers)

        async def body(client):
            totals = {"direct": [0, 0.0, 0.0], "mesh": [0, 0.0, 0.0]}
            ratios = []
            for r in range(rounds):
                for i, base in enumerate((PROMPTS * n)[:n]):
                    prompt = f"{base} (round {r})"
                    rates = {}
                    order = ("direct", "mesh") if (r + i) % 2 else ("mesh", "direct")
                    for path in order:
                        t, c = time.perf_counter(), cpu_s()
                        if path == "direct":
                            tokens = await asyncio.to_thread(direct, prompt)
                        else:
                            request = {"prompt": prompt, "max_tokens": 32, "temperature": 0.0}
                            tokens = (await client.ask(request)).tokens
                        seconds = time.perf_counter() - t
                        totals[path][0] += tokens
                        totals[path][1] += seconds
                        totals[path][2] += cpu_s() - c
                        rates[path] = tokens / seconds
                    ratios.append(rates["mesh"] / rates["direct"])
            return totals, ratios

        totals, ratios = asyncio.run(session(s, body))
    finally:
        for p in procs:
            p.stop()
        backend.close()
    direct_rate = totals["direct"][0] / totals["direct"][1]
    mesh_rate = totals["mesh"][0] / totals["mesh"][1]
    direct_cpu = totals["direct"][2] / totals["direct"][0] * 1000
    mesh_cpu = totals["mesh"][2] / totals["mesh"][0] * 1000
    print(
        f"overhead: SmolLM2 (1 thread) {len(ratios)} requests x 32 tokens per path, interleaved, "
        f"load average {os.getloadavg()[0]:.1f}: direct {direct_rate:.2f} tokens/s, through the "
        f"mesh (3 workers) {mesh_rate:.2f} tokens/s: {100 * (1 - mesh_rate / direct_rate):+.1f}%"
        f" (median per-pair {100 * (1 - statistics.median(ratios)):+.1f}%); CPU per token: "
        f"direct {direct_cpu:.1f} ms, mesh {mesh_cpu:.1f} ms (client + workers): "
        f"{100 * (mesh_cpu / direct_cpu - 1):+.1f}%"
    )


def request_cost(folder: Path, n: int) -> None:
    """What the mesh adds to one request, with a backend that costs next to nothing (the
    deterministic one, 8 tokens): the backend called directly vs a full mesh round trip
    (signed request, queue, signed chunk and done, TCP+Noise on loopback), interleaved."""
    backend = plugins.create("llm_backend", {"use": "deterministic", "max_tokens": 64}, None)
    (proc,) = [WorkerProcess(worker_profile(folder, "cost", DET.format(seed=0)))]
    try:
        s = settings(folder, [proc], spot_check_rate=0.0)

        async def body(client):
            direct, mesh = [], []
            for i in range(n):
                t = time.perf_counter()
                list(backend.stream(f"request {i}", max_tokens=8))
                direct.append((time.perf_counter() - t) * 1000)
                t = time.perf_counter()
                await client.ask({"prompt": f"request {i}", "max_tokens": 8, "temperature": 0})
                mesh.append((time.perf_counter() - t) * 1000)
            return direct, mesh

        direct, mesh = asyncio.run(session(s, body))
    finally:
        proc.stop()
    print(
        f"per request ({n}, deterministic backend, 8 tokens): direct p50 "
        f"{statistics.median(direct):.3f} ms, through the mesh p50 {statistics.median(mesh):.3f}"
        f" ms: the mesh adds {statistics.median(mesh) - statistics.median(direct):.2f} ms"
    )


def failover(folder: Path) -> None:
    procs = [WorkerProcess(worker_profile(folder, f"f{i}", DET.format(seed=0))) for i in range(3)]
    try:
        s = settings(folder, procs, spot_check_rate=0.0)

        async def body(client):
            out = []
            for i in range(len(procs) - 1):  # kill all but one, one at a time
                first = client.ranked()[0].did
                victim = next(p for p in procs if p.did == first)
                victim.kill()
                t = time.perf_counter()
                a = await client.ask({"prompt": f"x{i}", "max_tokens": 8, "temperature": 0.0})
                out.append((time.perf_counter() - t) * 1000)
                assert a.worker != victim.did
            return out

        times = asyncio.run(session(s, body))
    finally:
        for p in procs:
            p.stop()
    print(
        f"failover: answer after kill -9 of the chosen worker in {statistics.median(times):.1f} ms"
    )


def lying(folder: Path, runs: int) -> None:
    counts, honest_banned = [], 0
    for run in range(runs):
        procs = [
            WorkerProcess(worker_profile(folder, f"l{run}{i}", DET.format(seed=s)))
            for i, s in enumerate((0, 0, 9))
        ]
        try:
            s = settings(folder, procs, spot_check_rate=0.25)
            referee = plugins.create("llm_backend", {"use": "deterministic"}, None)

            async def body(client, liar=procs[2].did, honest=(procs[0].did, procs[1].did), tag=run):
                for i in range(200):
                    await client.ask({"prompt": f"r{tag}-{i}", "max_tokens": 8, "temperature": 0})
                    if client.banned(liar):
                        return i + 1, sum(client.banned(d) for d in honest)
                return None, sum(client.banned(d) for d in honest)

            n, bad = asyncio.run(session(s, body, referee))
            counts.append(n)
            honest_banned += bad
        finally:
            for p in procs:
                p.stop()
    caught = [c for c in counts if c is not None]
    print(f"lying worker (spot_check_rate 0.25): banned in {len(caught)}/{runs} runs after "
          f"median {statistics.median(caught)} requests (max {max(caught)}); "
          f"honest workers banned: {honest_banned}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-prompts", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3, help="overhead: rounds of prompts")
    parser.add_argument("--runs", type=int, default=10, help="lying worker: runs")
    parser.add_argument("--only", choices=("lying", "failover", "cost", "overhead"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if args.only in (None, "lying"):
            lying(folder, args.runs)
        if args.only in (None, "failover"):
            failover(folder)
        if args.only in (None, "cost"):
            request_cost(folder, 200)
        if args.model_prompts and args.only in (None, "overhead"):
            overhead(folder, args.model_prompts, args.rounds)


if __name__ == "__main__":
    main()
