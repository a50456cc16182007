"""Streaming: memory stays bounded by a few blocks however large the input (stdin to stdout)."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from qres.codec.demo import make_sample

INPUT_MB = 384


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_large_pipe_round_trip_in_bounded_memory(tmp_path):
    exe = str(Path(sys.executable).with_name("qres"))
    chunk = make_sample(frames=131072)  # 1 MiB
    packed = tmp_path / "big.qres"
    digest = hashlib.sha256()
    with packed.open("wb") as out:
        proc = subprocess.Popen(
            [exe, "compress", "-", "--dtype", "int16", "--channels", "4", "--profile", "fast"],
            stdin=subprocess.PIPE,
            stdout=out,
            stderr=subprocess.PIPE,
        )

        def feed():
            for _ in range(INPUT_MB):
                proc.stdin.write(chunk)
                digest.update(chunk)
            proc.stdin.close()

        writer = threading.Thread(target=feed)
        writer.start()
        watch = _PeakWatcher(proc.pid, exe)
        err = proc.stderr.read()
        writer.join()
        assert proc.wait(timeout=600) == 0, err
        compress_peak = watch.stop()
    restored = hashlib.sha256()
    proc = subprocess.Popen([exe, "decompress", str(packed), "-o", "-"], stdout=subprocess.PIPE)
    watch = _PeakWatcher(proc.pid, exe)
    while block := proc.stdout.read(1 << 20):
        restored.update(block)
    assert proc.wait(timeout=600) == 0
    decompress_peak = watch.stop()
    assert restored.digest() == digest.digest()
    assert 0 < compress_peak < 200 and 0 < decompress_peak < 200, (compress_peak, decompress_peak)


class _PeakWatcher:
    """Polls a process's VmHWM (peak RSS since its exec, in MiB) until it exits.

    ``ru_maxrss`` from wait4 would not do: a child forked from a large test process inherits
    the parent's resident size before it execs qres.
    """

    def __init__(self, pid: int, exe: str):
        self.exe = exe
        self.path = Path(f"/proc/{pid}/status")
        self.peak = 0.0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.done.is_set():
            try:
                # Count only readings taken wholly after the exec into qres.
                if self.exe in self._cmdline():
                    status = self.path.read_text()
                    if self.exe in self._cmdline():
                        for line in status.splitlines():
                            if line.startswith("VmHWM:"):
                                self.peak = max(self.peak, int(line.split()[1]) / 1024)
            except OSError:
                return
            self.done.wait(0.05)

    def _cmdline(self) -> str:
        return (self.path.parent / "cmdline").read_bytes().decode(errors="replace")

    def stop(self) -> float:
        self.done.set()
        self.thread.join()
        return self.peak
