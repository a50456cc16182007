"""``qres mesh``: run a worker, ask the mesh, serve it as an OpenAI-compatible gateway."""

from __future__ import annotations

import asyncio
import json
import signal
import sys

import typer

from qres.cli.output import print_json
from qres.kernel.errors import ProfileError, QresError, UsageError

app = typer.Typer(help="The inference mesh: workers, asking, the gateway.", no_args_is_help=True)
PROFILE = typer.Option(..., "--profile", "-p", help="Profile with a [mesh] table.")


def mesh_settings(profile):
    """The profile's ``[mesh]`` settings."""
    from qres.kernel.config import build_config
    from qres.mesh.settings import MeshSettings

    table = profile.data.get("mesh")
    if table is None:
        raise ProfileError(f"{profile.where('mesh')}: no [mesh] table; add one (docs/mesh.md)")
    return build_config(MeshSettings, table, profile.where("mesh"))


@app.command("worker")
def worker(profile: str = PROFILE) -> None:
    """Serve the profile's LLM backend to the mesh until interrupted; prints one JSON line
    with the worker's DID and address when it listens."""
    from qres.builtin_plugins.transports.tcp import TcpConfig, TcpTransport
    from qres.kernel import profiles
    from qres.mesh.announce import mqtt_transport
    from qres.mesh.messages import MAX_BODY
    from qres.mesh.worker import Worker
    from qres.trust.identity import default_key_path, load_identity

    loaded = profiles.load(profile)
    settings = mesh_settings(loaded)
    if "backend" not in loaded.data.get("llm", {}):
        raise ProfileError(f"{loaded.where('llm')}: a worker needs an [llm.backend] to serve")
    backend = loaded.build("llm", "backend")
    if hasattr(backend, "load"):
        backend.load()  # before it says it is ready: no first request pays for loading
    identity = load_identity(settings.key or default_key_path())
    config = TcpConfig(listen=settings.listen, swarm=settings.swarm, key=settings.key,
                       max_message=MAX_BODY + 4096)  # fmt: skip
    transport = TcpTransport(config, identity=identity)
    mqtt = mqtt_transport(settings, identity)

    async def main() -> None:
        try:
            await transport.start()
        except OSError as exc:
            raise QresError(f"cannot listen on {settings.listen}: {exc.strerror or exc}") from exc
        if mqtt is not None:
            await mqtt.start()
        host = settings.listen.rpartition(":")[0]
        line = {"did": identity.did, "address": f"{host}:{transport.port}",
                "models": [backend.model_id()]}  # fmt: skip
        sys.stdout.write(json.dumps(line) + "\n")
        sys.stdout.flush()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        task = asyncio.ensure_future(
            Worker(settings, backend, transport, identity, mqtt=mqtt).run()
        )
        await asyncio.wait([task, asyncio.ensure_future(stop.wait())],
                           return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await transport.aclose()
        if mqtt is not None:
            await mqtt.aclose()

    try:
        asyncio.run(main())
    finally:
        backend.close()


@app.command("ask")
def ask(
    prompt: str = typer.Argument(..., help="The prompt; '-' reads it from stdin."),
    profile: str = PROFILE,
    max_tokens: int = typer.Option(64, "--max-tokens", help="Most tokens to generate."),
    temperature: float = typer.Option(0.0, "--temperature", help="0 is greedy (spot-checked)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object for scripts."),
) -> None:
    """Ask the mesh: the fastest expected worker streams the answer; another takes over if it
    fails or disappears."""
    from qres.kernel import profiles
    from qres.kinds.llm import check_request
    from qres.mesh.backend import CONNECT_TIMEOUT_S, open_client

    text = sys.stdin.read() if prompt == "-" else prompt
    check_request("mesh", text, max_tokens, temperature, None)
    settings = mesh_settings(profiles.load(profile))
    if not settings.workers:
        raise ProfileError(f"{profile}: [mesh] workers is empty; list the workers to ask")
    request = {"prompt": text, "max_tokens": max_tokens, "temperature": temperature}

    async def main():
        client = open_client(settings)
        await client.start()
        try:
            await client.wait_connected(1, CONNECT_TIMEOUT_S)
            out = None if as_json else _write
            return await client.ask(request, on_text=out)
        finally:
            await client.aclose()

    answer = asyncio.run(main())
    if as_json:
        print_json({"id": answer.id, "text": answer.text, "tokens": answer.tokens,
                    "finish_reason": answer.finish_reason, "worker": answer.worker,
                    "tried": list(answer.tried)})  # fmt: skip
    else:
        sys.stdout.write("\n")


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


@app.command("gateway")
def gateway(
    profile: str = PROFILE,
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (loopback default)."),
    port: int = typer.Option(8090, "--port", help="TCP port."),
) -> None:
    """Serve the mesh as an OpenAI-compatible API (the endpoints of ``qres llm serve``)."""
    from qres.kernel import profiles
    from qres.kernel.config import build_config
    from qres.llm.engine import Engine
    from qres.llm.server import serve
    from qres.llm.settings import EngineSettings
    from qres.mesh.backend import MeshBackend

    if not 0 < port < 65536:
        raise UsageError(f"--port {port}: give a port in [1, 65535]")
    loaded = profiles.load(profile)
    settings = mesh_settings(loaded)
    plain = {k: v for k, v in loaded.data.get("llm", {}).items() if k != "backend"}
    engine = Engine(MeshBackend(settings), build_config(EngineSettings, plain, loaded.where("llm")))
    print(f"qres mesh gateway: http://{host}:{port}/v1", file=sys.stderr)
    serve(engine, host, port)


def register(root: typer.Typer) -> None:
    """Add the ``mesh`` group to the root app."""
    root.add_typer(app, name="mesh")
