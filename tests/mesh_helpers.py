"""Mesh worker processes for the tests: a profile per worker, started as `qres mesh worker`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from qres.trust.identity import Identity, save_identity


def key_file(folder: Path, name: str) -> Path:
    path = folder / f"{name}.pem"
    save_identity(Identity.generate(), path)
    return path


def worker_profile(folder: Path, name: str, backend: str, announce_s=0.2, **mesh) -> Path:
    key = key_file(folder, name)
    extra = "".join(f"{k} = {json.dumps(v)}\n" for k, v in mesh.items())
    path = folder / f"{name}.toml"
    path.write_text(
        f'[profile]\nname = "{name}"\n\n[llm.backend]\n{backend}\n\n'
        f'[mesh]\nlisten = "127.0.0.1:0"\nkey = "{key}"\nannounce_s = {announce_s}\n{extra}'
    )
    return path


class WorkerProcess:
    """A running `qres mesh worker`; ``did`` and ``address`` from its first stdout line."""

    def __init__(self, profile: Path):
        exe = Path(sys.executable).with_name("qres")
        env = {**os.environ}
        env.pop("QRES_PLUGINS", None)
        self.proc = subprocess.Popen(
            [str(exe), "mesh", "worker", "--profile", str(profile)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(self.proc.stderr.read().decode())
        info = json.loads(line)
        self.did, self.address = info["did"], info["address"]

    def entry(self) -> dict:
        return {"address": self.address, "did": self.did}

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode


class InProcessWorker:
    """A :class:`qres.mesh.worker.Worker` (or a subclass: ``worker_class``) on a real TCP
    transport, run on its own event loop thread in the test process, for workers whose
    behaviour a test controls (a gated backend, inflated announcements)."""

    def __init__(self, folder: Path, name: str, backend, worker_class=None, **mesh):
        import asyncio
        import threading

        from qres.builtin_plugins.transports.tcp import TcpConfig, TcpTransport

        from qres.mesh.messages import MAX_BODY
        from qres.mesh.settings import MeshSettings
        from qres.mesh.worker import Worker
        from qres.trust.identity import load_identity

        key = key_file(folder, name)
        self.identity = load_identity(key)
        self.settings = MeshSettings(key=str(key), announce_s=0.2, **mesh)
        config = TcpConfig(swarm=self.settings.swarm, key=str(key), max_message=MAX_BODY + 4096)
        self.transport = TcpTransport(config, identity=self.identity)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.transport.start(), self.loop).result(10)
        cls = worker_class or Worker
        self.worker = cls(self.settings, backend, self.transport, self.identity)
        self.task = asyncio.run_coroutine_threadsafe(self.worker.run(), self.loop)
        self.did, self.address = self.identity.did, f"127.0.0.1:{self.transport.port}"

    def entry(self) -> dict:
        return {"address": self.address, "did": self.did}

    def stop(self) -> None:
        import asyncio

        self.task.cancel()
        asyncio.run_coroutine_threadsafe(self.transport.aclose(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
