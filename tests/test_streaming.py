"""Streaming: memory stays bounded by a few blocks however large the input (stdin to stdout)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
from pathlib import Path

from qres.demo import make_sample

INPUT_MB = 384


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
        err = proc.stderr.read()
        writer.join()
        status, compress_usage = _wait(proc)
        assert status == 0, err
    restored = hashlib.sha256()
    proc = subprocess.Popen([exe, "decompress", str(packed), "-o", "-"], stdout=subprocess.PIPE)
    while block := proc.stdout.read(1 << 20):
        restored.update(block)
    status, decompress_usage = _wait(proc)
    assert status == 0
    assert restored.digest() == digest.digest()
    # ru_maxrss is in KiB on Linux: each process stayed far below the input size.
    for usage in (compress_usage, decompress_usage):
        assert usage.ru_maxrss / 1024 < 200, usage.ru_maxrss


def _wait(proc):
    """Wait for ``proc`` and return its exit code and its own resource usage."""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage
