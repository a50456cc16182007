"""``qres llm bench``: what the engine and the HTTP server cost, measured side by side in one run.

* Throughput: tokens/s of raw llama-cpp-python, of the qres llama-cpp backend, and through the
  ``qres llm serve`` application over HTTP (cache off), same model, prompt and settings; the
  three are interleaved run by run so a busy machine slows them alike.
* Cache hits: latency p50/p99 of a cached answer over HTTP (keep-alive client).
* Load: concurrent clients against the server with a small queue: answers, ``429``s, other
  failures, latency p50/p99/max and the process's RSS before and after (psutil).
* Batching: tokens/s of greedy generation for several prompts one after another vs as one
  llama.cpp multi-sequence batch, and whether the batched texts are the same.

The HTTP figures come from real ``qres llm serve`` processes on 127.0.0.1, started with a
profile the bench writes (``llm-edge`` with the bench's thread count, context and queue).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

PROMPT = "Write a long story about a lighthouse keeper and the storm:"


@attrs.frozen
class BenchSettings:
    """What ``qres llm bench`` runs: ``runs`` interleaved generations of ``max_tokens`` each,
    ``cache_requests`` cached answers, ``clients`` concurrent clients sending
    ``requests_per_client`` requests of ``load_max_tokens`` against a queue of ``queue_size``,
    and ``batch`` sequences for the batching comparison (0: skip it)."""

    runs: int = 3
    max_tokens: int = 64
    n_threads: int = 1
    n_ctx: int = 1024
    cache_requests: int = 200
    clients: int = 16
    requests_per_client: int = 2
    load_max_tokens: int = 16
    queue_size: int = 4
    batch: int = 4


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (nearest rank) of ``values``."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


SERVE_PROFILE = """
[profile]
name = "llm-bench"
extends = "llm-edge"
description = "qres llm bench: the bundled model, the bench's settings"
[llm]
queue_size = {queue_size}
cache_entries = {cache_entries}
low_battery_percent = 0.0
[llm.backend]
use = "llama-cpp"
n_threads = {n_threads}
n_ctx = {n_ctx}
max_tokens = {max_tokens}
"""


class _Serve:
    """A real ``qres llm serve`` process on a free 127.0.0.1 port, with the bench's settings
    (a separate process, so the measuring client does not share its interpreter)."""

    def __init__(self, settings: BenchSettings, folder: str, cache_entries: int, queue_size: int):
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.profile = os.path.join(folder, f"llm-bench-{self.port}.toml")
        with open(self.profile, "w") as f:
            f.write(
                SERVE_PROFILE.format(
                    queue_size=queue_size,
                    cache_entries=cache_entries,
                    n_threads=settings.n_threads,
                    n_ctx=settings.n_ctx,
                    max_tokens=max(256, settings.max_tokens),
                )
            )

    def __enter__(self) -> _Serve:
        import subprocess
        import sys

        import httpx

        script = Path(sys.executable).with_name("qres")
        exe = [str(script) if script.exists() else "qres", "llm", "serve", "--profile",
               self.profile, "--port", str(self.port)]  # fmt: skip
        self.proc = subprocess.Popen(exe, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.1)
        self.proc.kill()
        raise RuntimeError(f"qres llm serve did not start: {self.proc.stderr.read().decode()}")

    def rss(self) -> int:
        """The server process's resident set size."""
        import psutil

        return psutil.Process(self.proc.pid).memory_info().rss

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except Exception:
            self.proc.kill()
            self.proc.wait()
        self.proc.stderr.close()


def _timed(call: Callable[[], int]) -> float:
    start = time.perf_counter()
    tokens = call()
    return tokens / (time.perf_counter() - start)


def throughput(backend: Any, raw: Any, settings: BenchSettings, folder: str) -> dict[str, Any]:
    """Tokens/s of raw llama-cpp-python, the qres backend and ``qres llm serve`` over HTTP
    (cache off). Each round runs the three back to back, in a rotating order; the ratios are
    medians of the per-round ratios, so a machine whose load drifts skews them least."""
    import httpx

    n = settings.max_tokens

    def raw_call() -> int:
        raw.reset()
        out = raw.create_completion(PROMPT, max_tokens=n, temperature=0.0)
        return out["usage"]["completion_tokens"]

    def backend_call() -> int:
        return backend.complete(PROMPT, max_tokens=n).tokens

    rates: dict[str, list[float]] = {"raw": [], "backend": [], "http": []}
    serve = _Serve(settings, folder, cache_entries=0, queue_size=settings.queue_size)
    with serve, httpx.Client(base_url=serve.url, timeout=300) as client:

        def http_call() -> int:
            body = {"prompt": PROMPT, "max_tokens": n, "temperature": 0}
            reply = client.post("/v1/completions", json=body)
            reply.raise_for_status()
            return reply.json()["usage"]["completion_tokens"]

        calls = {"raw": raw_call, "backend": backend_call, "http": http_call}
        for call in calls.values():  # warm-up: page the model in
            call()
        names = list(calls)
        for i in range(settings.runs):
            for name in names[i % 3 :] + names[: i % 3]:
                rates[name].append(_timed(calls[name]))
    median = {k: statistics.median(v) for k, v in rates.items()}
    ratio = {
        k: statistics.median(a / r for a, r in zip(rates[k], rates["raw"], strict=True))
        for k in ("backend", "http")
    }
    return {
        "prompt": PROMPT,
        "max_tokens": n,
        "runs": settings.runs,
        "tokens_per_s": median,
        "all_tokens_per_s": rates,
        "backend_vs_raw": ratio["backend"],
        "http_vs_raw": ratio["http"],
    }


def cache_hits(settings: BenchSettings, folder: str) -> dict[str, Any]:
    """Latency of a cached answer from ``qres llm serve``, client side, keep-alive."""
    import httpx

    body = {"prompt": "Cache me:", "max_tokens": 8, "temperature": 0}
    serve = _Serve(settings, folder, cache_entries=256, queue_size=settings.queue_size)
    with serve, httpx.Client(base_url=serve.url, timeout=60) as client:
        client.post("/v1/completions", json=body).raise_for_status()  # the miss that fills it
        latencies, hits = [], 0
        for _ in range(settings.cache_requests):
            start = time.perf_counter()
            reply = client.post("/v1/completions", json=body)
            latencies.append(time.perf_counter() - start)
            hits += reply.headers.get("X-Cache") == "hit"
    return {
        "requests": settings.cache_requests,
        "hits": hits,
        "p50_ms": percentile(latencies, 50) * 1e3,
        "p99_ms": percentile(latencies, 99) * 1e3,
    }


def load(settings: BenchSettings, folder: str) -> dict[str, Any]:
    """``clients`` concurrent clients against ``qres llm serve`` with a ``queue_size`` queue
    and the cache off; the server's RSS before and after."""
    import httpx

    statuses: list[int] = []
    latencies: list[float] = []

    async def one_client(client: httpx.AsyncClient, k: int) -> None:
        for j in range(settings.requests_per_client):
            body = {"prompt": f"Client {k} asks question {j}:", "max_tokens":
                    settings.load_max_tokens, "temperature": 0}  # fmt: skip
            start = time.perf_counter()
            try:
                reply = await client.post("/v1/completions", json=body)
                statuses.append(reply.status_code)
            except httpx.HTTPError:
                statuses.append(0)
            latencies.append(time.perf_counter() - start)

    async def all_clients(url: str) -> None:
        limits = httpx.Limits(max_connections=settings.clients)
        async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as client:
            await asyncio.gather(*(one_client(client, k) for k in range(settings.clients)))

    with _Serve(settings, folder, cache_entries=0, queue_size=settings.queue_size) as serve:
        before = serve.rss()
        start = time.perf_counter()
        asyncio.run(all_clients(serve.url))
        wall = time.perf_counter() - start
        after = serve.rss()
    return {
        "clients": settings.clients,
        "requests": len(statuses),
        "queue_size": settings.queue_size,
        "ok": statuses.count(200),
        "rejected_429": statuses.count(429),
        "other": len(statuses) - statuses.count(200) - statuses.count(429),
        "p50_s": percentile(latencies, 50),
        "p99_s": percentile(latencies, 99),
        "max_s": max(latencies),
        "wall_s": wall,
        "rss_before_mb": before / 2**20,
        "rss_after_mb": after / 2**20,
    }


def run(settings: BenchSettings, progress: Callable[[str], None] = lambda s: None) -> dict:
    """Every measurement above on the bundled model; one report dict."""
    from qres.builtin_plugins.llm import llamacpp
    from qres.llm import batching

    config = llamacpp.LlamaCppConfig(
        n_threads=settings.n_threads, n_ctx=settings.n_ctx, max_tokens=max(256, settings.max_tokens)
    )
    path = llamacpp.model_path(config)
    backend = llamacpp.LlamaCppBackend(config)
    backend.load()
    raw = llamacpp._load(path, n_ctx=settings.n_ctx, n_threads=settings.n_threads,
                         n_threads_batch=settings.n_threads)  # fmt: skip
    report: dict[str, Any] = {"model": path.stem, "n_threads": settings.n_threads}
    try:
        with tempfile.TemporaryDirectory(prefix="qres-llm-bench-") as folder:
            progress("throughput")
            report["throughput"] = throughput(backend, raw, settings, folder)
            progress("cache hits")
            report["cache"] = cache_hits(settings, folder)
            progress("concurrent clients")
            report["load"] = load(settings, folder)
        if settings.batch:
            progress("batching")
            report["batching"] = batching.compare(raw, settings.batch, settings.max_tokens)
            report["batching_flash_attn"] = batching.compare(
                raw, settings.batch, settings.max_tokens, flash_attn=True
            )
    finally:
        raw.close()
        backend.close()
    return report


def summary(report: dict) -> list[str]:
    """The report as lines of text."""
    t, c, ld = report["throughput"], report["cache"], report["load"]
    r = t["tokens_per_s"]
    lines = [
        f"model {report['model']}, {report['n_threads']} thread(s), {t['max_tokens']} tokens, "
        f"median of {t['runs']} interleaved runs",
        f"tokens/s  raw llama-cpp-python {r['raw']:.1f}  qres backend {r['backend']:.1f} "
        f"({t['backend_vs_raw']:.1%})  qres llm serve over HTTP {r['http']:.1f} "
        f"({t['http_vs_raw']:.1%})",
        f"cache hit over HTTP: p50 {c['p50_ms']:.2f} ms  p99 {c['p99_ms']:.2f} ms "
        f"({c['hits']}/{c['requests']} hits)",
        f"{ld['clients']} clients x {ld['requests'] // ld['clients']} requests, queue "
        f"{ld['queue_size']}: {ld['ok']} answered, {ld['rejected_429']} got 429, "
        f"{ld['other']} other; latency p50 {ld['p50_s']:.2f} s p99 {ld['p99_s']:.2f} s "
        f"max {ld['max_s']:.2f} s; RSS {ld['rss_before_mb']:.0f} -> {ld['rss_after_mb']:.0f} MB",
    ]
    for key in ("batching", "batching_flash_attn"):
        if key not in report:
            continue
        b = report[key]
        attention = "flash attention" if b["flash_attn"] else "the backend's attention"
        lines.append(
            f"greedy generation, {b['sequences']} sequences, {attention}: sequential "
            f"{b['sequential_tokens_per_s']:.1f} tokens/s, one multi-sequence batch "
            f"{b['batched_tokens_per_s']:.1f} tokens/s (x{b['speedup']:.2f}); "
            f"{b['identical_sequences']}/{b['sequences']} sequences identical"
        )
    return lines


def write_png(report: dict, out: Any) -> None:
    """Bars of tokens/s (raw, backend, HTTP; sequential vs batched) into the stream ``out``."""
    from qres.kernel.plotting import pyplot

    plt = pyplot()
    rates = report["throughput"]["tokens_per_s"]
    labels, values = list(rates), list(rates.values())
    if "batching" in report:
        labels += ["sequential", "batched"]
        values += [report["batching"]["sequential_tokens_per_s"],
                   report["batching"]["batched_tokens_per_s"]]  # fmt: skip
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.bar(labels, values, color=["#4c72b0"] * 3 + ["#dd8452"] * (len(labels) - 3))
    ax.set_ylabel("tokens/s")
    cache = report["cache"]
    ax.set_title(
        f"{report['model']}, {report['n_threads']} thread(s); cache hit p50 "
        f"{cache['p50_ms']:.2f} ms, p99 {cache['p99_ms']:.2f} ms"
    )
    for i, v in enumerate(values):
        ax.text(i, v, f"{v:.1f}", ha="center", va="bottom")
    fig.tight_layout()
    fig.savefig(out, format="png", dpi=100)
    plt.close(fig)
