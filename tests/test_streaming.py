"""Streaming: memory stays bounded by a few blocks however large the input (stdin to stdout)."""

from __future__ import annotations

import hashlib
import resource
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
        assert proc.wait(timeout=600) == 0, err
    restored = hashlib.sha256()
    proc = subprocess.Popen([exe, "decompress", str(packed), "-o", "-"], stdout=subprocess.PIPE)
    while block := proc.stdout.read(1 << 20):
        restored.update(block)
    assert proc.wait(timeout=600) == 0
    assert restored.digest() == digest.digest()
    # ru_maxrss is in KiB on Linux: the largest child stayed far below the input size.
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    assert peak_mb < 200, peak_mb
