"""``qres llm``: complete, chat, embed and serve with the profile's LLM backend and engine."""

from __future__ import annotations

import asyncio
import json
import sys

import typer

from qres.cli.output import print_json
from qres.kernel.errors import ProfileError, QresError, UsageError

app = typer.Typer(help="Run an LLM backend: complete, chat, embed, serve.", no_args_is_help=True)

PROFILE = typer.Option("llm-edge", "--profile", "-p", help="Profile with an [llm.backend] table.")
JSON = typer.Option(False, "--json", help="Print one JSON object for scripts.")
TEXTS = typer.Argument(..., help="Texts to embed; '-' reads one per stdin line.")


def open_engine(profile_name: str):
    """The engine and backend the profile configures (backend threads from [hardware])."""
    from qres.kernel import profiles
    from qres.llm.engine import Engine

    profile = profiles.load(profile_name)
    table = profile.data.get("llm", {})
    if "backend" not in table:
        raise ProfileError(
            f"{profile.where('llm')}: no [llm.backend] table; this profile runs no model "
            "(pick a profile such as llm-edge or llm-gateway)"
        )
    backend = profile.build("llm", "backend")
    if "hardware" in profile.data and hasattr(backend, "hardware_cores"):
        backend.hardware_cores = profile.build("hardware").config.cores
    return Engine(backend, profile.settings("llm"))


def _prompt(text: str) -> str:
    if text == "-":
        return sys.stdin.read()
    return text


@app.command("complete")
def complete(
    prompt: str = typer.Argument(..., help="The prompt; '-' reads it from stdin."),
    profile: str = PROFILE,
    max_tokens: int = typer.Option(None, "--max-tokens", help="Most tokens to generate."),
    temperature: float = typer.Option(0.0, "--temperature", help="0 is greedy and cached."),
    stream: bool = typer.Option(False, "--stream", help="Print tokens as they come."),
    as_json: bool = JSON,
) -> None:
    """Complete PROMPT with the profile's backend (raw completion, no chat template)."""
    from qres.llm.engine import Request

    if stream and as_json:
        raise UsageError("--stream and --json do not go together; pick one")
    engine = open_engine(profile)
    request = Request(prompt=_prompt(prompt), max_tokens=max_tokens, temperature=temperature)
    _check(engine, request)
    try:
        _answer(engine, request, stream, as_json)
    finally:
        engine.close()


def _check(engine, request) -> None:
    from qres.llm.engine import parse_request

    body = {"prompt": request.prompt, "temperature": request.temperature}
    if request.messages is not None:
        body = {"messages": list(request.messages), "temperature": request.temperature}
    if request.max_tokens is not None:
        body["max_tokens"] = request.max_tokens
    parse_request(body, engine.settings, chat=request.messages is not None)


def _answer(engine, request, stream: bool, as_json: bool) -> str:
    if stream:

        async def pieces() -> str:
            out = []
            async for chunk in engine.stream(request, "cli"):
                sys.stdout.write(chunk.text)
                sys.stdout.flush()
                out.append(chunk.text)
            sys.stdout.write("\n")
            return "".join(out)

        return asyncio.run(pieces())
    done, hit = asyncio.run(engine.complete(request, "cli"))
    if as_json:
        print_json({**done.to_dict(), "cached": hit, "model": engine.backend.model_id()})
    else:
        typer.echo(done.text)
    return done.text


@app.command("chat")
def chat(
    profile: str = PROFILE,
    system: str = typer.Option("", "--system", help="A system message opening the chat."),
    max_tokens: int = typer.Option(None, "--max-tokens", help="Most tokens per reply."),
    temperature: float = typer.Option(0.0, "--temperature", help="Sampling temperature."),
) -> None:
    """A terminal chat with history: one line per message; an empty line or EOF ends it."""
    from qres.llm.engine import Request

    engine = open_engine(profile)
    history = [{"role": "system", "content": system}] if system else []
    interactive = sys.stdin.isatty()
    try:
        while True:
            if interactive:
                sys.stdout.write("> ")
                sys.stdout.flush()
            line = sys.stdin.readline()
            if not line.strip():
                break
            history.append({"role": "user", "content": line.rstrip("\n")})
            request = Request(
                messages=tuple(history), max_tokens=max_tokens, temperature=temperature
            )
            _check(engine, request)
            reply = _answer(engine, request, stream=True, as_json=False)
            history.append({"role": "assistant", "content": reply})
    finally:
        engine.close()


@app.command("embed")
def embed(
    texts: list[str] = TEXTS,
    profile: str = PROFILE,
) -> None:
    """Print one JSON array (a unit vector) per text, one per line."""
    if texts == ["-"]:
        texts = [line.rstrip("\n") for line in sys.stdin if line.strip()]
    engine = open_engine(profile)
    try:
        for vector in asyncio.run(engine.embed(list(texts), "cli")):
            sys.stdout.write(json.dumps(vector) + "\n")
    finally:
        engine.close()


@app.command("serve")
def serve(
    profile: str = PROFILE,
    host: str = typer.Option(
        "127.0.0.1", "--host", help="Address to bind (loopback only by default)."
    ),
    port: int = typer.Option(8080, "--port", help="TCP port."),
) -> None:
    """Serve an OpenAI-compatible API: /v1/chat/completions, /v1/completions, /v1/embeddings,
    /v1/models, /health, /metrics."""
    from qres.llm.server import serve

    if not 0 < port < 65536:
        raise UsageError(f"--port {port}: give a port in [1, 65535]")
    engine = open_engine(profile)
    engine.backend.load() if hasattr(engine.backend, "load") else None
    print(
        f"qres llm serve: {engine.backend.model_id()} on http://{host}:{port}/v1", file=sys.stderr
    )
    serve(engine, host, port)


@app.command("bench")
def bench(
    as_json: bool = JSON,
    png: str = typer.Option(None, "--png", help="Also draw tokens/s bars to this PNG."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing PNG."),
    runs: int = typer.Option(3, "--runs", min=1, max=100, help="Interleaved runs per path."),
    max_tokens: int = typer.Option(64, "--max-tokens", min=1, max=1024, help="Per run."),
    clients: int = typer.Option(16, "--clients", min=1, max=256, help="Concurrent clients."),
    batch: int = typer.Option(4, "--batch", min=0, max=16, help="Sequences batched (0: skip)."),
) -> None:
    """Tokens/s of raw llama-cpp-python vs the qres backend vs `qres llm serve` over HTTP,
    cache-hit latency, concurrent clients (429s, RSS) and multi-sequence batching, side by
    side in one run on the bundled model with one thread."""
    from pathlib import Path

    from qres.llm import bench as llmbench

    if png and Path(png).exists() and not force:
        raise QresError(f"{png}: already exists; pass --force to overwrite it")
    settings = llmbench.BenchSettings(
        runs=runs, max_tokens=max_tokens, clients=clients, batch=batch
    )

    def progress(stage: str) -> None:
        if not as_json:
            print(f"qres llm bench: {stage}...", file=sys.stderr, flush=True)

    report = llmbench.run(settings, progress)
    if png:
        from qres.codec.files import atomic_output

        with atomic_output(png, force) as out:
            llmbench.write_png(report, out)
    if as_json:
        print_json(report)
        return
    for line in llmbench.summary(report):
        typer.echo(line)
    if png:
        typer.echo(f"wrote {png}")


def register(root: typer.Typer) -> None:
    """Add the ``llm`` group (with ``route`` and ``router``) to the root app."""
    from qres.cli import route_cmd

    route_cmd.attach(app)
    root.add_typer(app, name="llm")
