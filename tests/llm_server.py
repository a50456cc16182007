"""A real `qres llm serve` app on 127.0.0.1 in a background thread, for the tests."""

from __future__ import annotations

import asyncio
import socket
import threading

from aiohttp import web

from qres.llm.server import make_app


class ServerThread:
    """Runs ``make_app(engine)`` (or any aiohttp ``app``) on a free port until :meth:`stop`."""

    def __init__(self, engine=None, app=None):
        self.engine = engine
        self.app = app if app is not None else make_app(engine)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        self.loop = asyncio.new_event_loop()
        self.runner = web.AppRunner(self.app)
        self.loop.run_until_complete(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", self.port)
        self.loop.run_until_complete(site.start())
        self._ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(self.runner.cleanup())

    def start(self):
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def stop(self):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
