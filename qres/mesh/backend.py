"""The mesh as an LLM backend: what ``qres mesh gateway`` serves and the router's mesh tier
asks. The client runs on a private event loop thread; calls block until the answer is in."""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Iterator, Mapping, Sequence

from qres.kernel.errors import QresError
from qres.kinds.llm import Chunk, Completion, LLMBackend, check_messages, check_request
from qres.mesh.settings import MeshSettings

#: Seconds to wait for the first worker to connect when the backend starts.
CONNECT_TIMEOUT_S = 10.0


def open_client(settings: MeshSettings, referee=None):
    """A :class:`~qres.mesh.client.MeshClient` over a TCP transport, listening for
    announcements over MQTT too when ``announce_via`` says so (not yet started)."""
    from qres.builtin_plugins.transports.tcp import TcpConfig, TcpTransport
    from qres.mesh.client import MeshClient
    from qres.mesh.messages import MAX_BODY
    from qres.trust.identity import default_key_path, load_identity

    identity = load_identity(settings.key or default_key_path())
    config = TcpConfig(
        listen="127.0.0.1:0",
        peers=[dict(w) for w in settings.workers],
        swarm=settings.swarm,
        key=settings.key,
        accept_unknown=False,
        max_message=MAX_BODY + 4096,
    )
    from qres.mesh.announce import mqtt_transport

    allowed = [w["did"] for w in settings.workers]
    mqtt = mqtt_transport(settings, identity, allowed=allowed, session="client")
    transport = TcpTransport(config, identity=identity)
    return MeshClient(settings, transport, identity, referee, announcements=mqtt)


class MeshBackend(LLMBackend):
    """Completions from the mesh's workers (streamed, with failover and spot checks)."""

    name = "mesh"

    def __init__(self, settings: MeshSettings, referee=None, max_tokens: int = 256):
        super().__init__()
        self.settings, self.max_tokens = settings, max_tokens
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="qres-mesh", daemon=True)
        self.thread.start()
        self.client = open_client(settings, referee)
        self._call(self.client.start())
        try:
            self._call(self.client.wait_connected(1, CONNECT_TIMEOUT_S))
        except QresError:
            self.close()
            raise

    def _call(self, coro, timeout: float | None = None):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def _request(self, prompt=None, messages=None, max_tokens=None, temperature=0.0, stop=None,
                 seed=None) -> dict:  # fmt: skip
        limit = self.max_tokens if max_tokens is None else max_tokens
        stops = check_request(
            self.name, prompt if prompt is not None else "", limit, temperature, stop
        )
        body = {"max_tokens": limit, "temperature": float(temperature), "stop": list(stops)}
        if seed is not None:
            body["seed"] = seed
        if messages is not None:
            body["messages"] = [dict(x) for x in check_messages(self.name, messages)]
        else:
            body["prompt"] = prompt
        return body

    def complete(self, prompt, *, max_tokens=None, temperature=0.0, stop=None, seed=None):
        """The mesh's completion of ``prompt``."""
        request = self._request(prompt, None, max_tokens, temperature, stop, seed)
        answer = self._call(self.client.ask(request))
        return Completion(answer.text, answer.tokens, answer.finish_reason)

    def chat(self, messages: Sequence[Mapping[str, str]], *, max_tokens=None, temperature=0.0,
             stop=None, seed=None) -> Completion:  # fmt: skip
        """The mesh's reply to ``messages`` (the worker applies its model's chat template)."""
        request = self._request(None, messages, max_tokens, temperature, stop, seed)
        answer = self._call(self.client.ask(request))
        return Completion(answer.text, answer.tokens, answer.finish_reason)

    def _stream(self, request: dict) -> Iterator[Chunk]:
        pieces: queue.Queue = queue.Queue()
        future = asyncio.run_coroutine_threadsafe(
            self.client.ask(request, on_text=lambda text: pieces.put(text)), self.loop
        )
        future.add_done_callback(lambda _f: pieces.put(None))
        while (text := pieces.get()) is not None:
            yield Chunk(text, 0)
        answer = future.result()
        yield Chunk("", answer.tokens, answer.finish_reason)

    def stream(self, prompt, *, max_tokens=None, temperature=0.0, stop=None, seed=None):
        """The completion piece by piece, as the workers stream it."""
        return self._stream(self._request(prompt, None, max_tokens, temperature, stop, seed))

    def stream_chat(self, messages, *, max_tokens=None, temperature=0.0, stop=None, seed=None):
        """The chat reply piece by piece."""
        return self._stream(self._request(None, messages, max_tokens, temperature, stop, seed))

    def count_tokens(self, text: str) -> int:
        """An estimate (the workers' tokenizers are remote): one token per 4 characters."""
        return max(1, len(text) // 4) if text else 0

    def model_id(self) -> str:
        """The model the first announcing worker serves, else ``mesh``."""
        for view in self.client.workers.values():
            if view.announced and view.announced.get("models"):
                return str(view.announced["models"][0])
        return "mesh"

    def close(self) -> None:
        """Stop the client and its loop."""
        if self.loop.is_running():
            self._call(self.client.aclose(), 10)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
