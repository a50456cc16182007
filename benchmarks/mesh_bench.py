"""The mesh on loopback with real worker processes: overhead against the backend called
directly, recovery after kill -9, and how many requests it takes to ban a lying worker.

    python benchmarks/mesh_bench.py [--model-prompts 4]

Overhead: the same greedy requests answered by the backend in this process and through one
worker (the bundled SmolLM2, one thread each, run one after the other), as tokens per second.
Failover: three deterministic workers; the worker the client would pick is killed (SIGKILL)
and the time until the answer from another worker is reported. Lying: three deterministic
workers, one with another seed (same model name, different tokens), spot_check_rate 0.25,
a local referee; requests until the liar is banned, over 10 runs.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))

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


def overhead(folder: Path, n: int) -> None:
    backend = plugins.create(
        "llm_backend", {"use": "llama-cpp", "n_threads": 1, "n_ctx": 1024, "max_tokens": 64}, None
    )
    prompts = (PROMPTS * n)[:n]
    backend.complete(prompts[0], max_tokens=4)  # load
    t, tokens = time.perf_counter(), 0
    for p in prompts:
        tokens += sum(c.tokens for c in backend.stream(p, max_tokens=32))
    direct = tokens / (time.perf_counter() - t)
    backend.close()
    proc = WorkerProcess(worker_profile(folder, "llama", LLAMA))
    try:
        s = settings(folder, [proc], spot_check_rate=0.0, first_token_timeout_s=120.0)

        async def body(client):
            await client.ask({"prompt": prompts[0], "max_tokens": 4, "temperature": 0.0})
            t, count = time.perf_counter(), 0
            for p in prompts:
                a = await client.ask({"prompt": p, "max_tokens": 32, "temperature": 0.0})
                count += a.tokens
            return count / (time.perf_counter() - t)

        mesh = asyncio.run(session(s, body))
    finally:
        proc.stop()
    print(f"tokens/s: direct {direct:.2f}, through the mesh {mesh:.2f} "
          f"({100 * (1 - mesh / direct):+.1f}% overhead), {n} prompts x 32 tokens")  # fmt: skip


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
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        lying(folder, args.runs)
        failover(folder)
        if args.model_prompts:
            overhead(folder, args.model_prompts)


if __name__ == "__main__":
    main()
