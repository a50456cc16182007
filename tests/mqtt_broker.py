"""A real MQTT broker for tests: mosquitto when it is on PATH, else amqtt."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"MQTT broker did not listen on {port}")


class Broker:
    """One broker process on 127.0.0.1:``port``; ``restart()`` keeps the port."""

    def __init__(self, folder: Path, users: dict[str, str] | None = None, tls=None):
        self.folder = folder
        self.port = free_port()
        self.users = users or {}
        self.tls = tls  # (ca, cert, key) paths or None
        self.proc: subprocess.Popen | None = None

    def _mosquitto_config(self) -> Path:
        lines = [f"listener {self.port} 127.0.0.1", "persistence false"]
        if os.geteuid() == 0:
            # As root mosquitto would drop to the `mosquitto` user, which cannot read the
            # root-owned files of this temporary folder; stay root (tests only).
            lines.append("user root")
        if self.users:
            passwd = self.folder / "passwd"
            passwd.write_text("")
            for user, password in self.users.items():
                subprocess.run(
                    ["mosquitto_passwd", "-b", str(passwd), user, password],
                    check=True,
                    capture_output=True,
                )
            lines += ["allow_anonymous false", f"password_file {passwd}"]
        else:
            lines.append("allow_anonymous true")
        if self.tls:
            ca, cert, key = self.tls
            lines += [f"cafile {ca}", f"certfile {cert}", f"keyfile {key}"]
        path = self.folder / "mosquitto.conf"
        path.write_text("\n".join(lines) + "\n")
        return path

    def start(self) -> Broker:
        if shutil.which("mosquitto"):
            cmd = ["mosquitto", "-c", str(self._mosquitto_config())]
        else:
            import importlib.util

            import pytest

            if importlib.util.find_spec("amqtt") is None:
                pytest.skip("no MQTT broker: install mosquitto (apt) or amqtt (pip)")
            if self.users or self.tls:
                pytest.skip("login and TLS tests need mosquitto")
            config = self.folder / "amqtt.yaml"
            config.write_text(
                f"listeners:\n  default:\n    type: tcp\n    bind: 127.0.0.1:{self.port}\n"
                "auth:\n  allow-anonymous: true\n"
            )
            cmd = [sys.executable, "-m", "amqtt.scripts.broker_script", "-c", str(config)]
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=(self.folder / "broker.log").open("ab")
        )
        _wait_port(self.port)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()
