"""Where a node's samples come from: a raw file replayed at its sample rate, or stdin.

A source is an async iterator of numpy arrays of the stream's sample type. A file source
starts at sample ``start`` (a restarted node resumes after the samples its segments hold);
``--speed 0`` replays as fast as the node can take it.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator

from qres.kernel.errors import QresError

#: Seconds of samples handed over at a time when replaying at the sample rate.
TICK_SECONDS = 0.05
#: Samples per chunk when replaying without pacing, and bytes per stdin read.
FAST_CHUNK = 4096
STDIN_READ = 1 << 16


def open_source(path: str, spec, settings, options, start: int) -> AsyncIterator:
    """The source named by ``path`` ("-" for stdin)."""
    if path == "-":
        return _stdin(spec)
    return _file(path, spec, settings.sample_rate * options.speed, start)


async def _file(path: str, spec, rate: float, start: int) -> AsyncIterator:
    import numpy as np

    try:
        data = np.memmap(path, dtype=spec.numpy_dtype(), mode="r")
    except (OSError, ValueError) as exc:
        raise QresError(f"{path}: cannot read the source ({exc}); give a raw sample file") from exc
    per_tick = FAST_CHUNK if rate <= 0 else max(1, round(rate * TICK_SECONDS))
    loop = asyncio.get_running_loop()
    t0, sent = loop.time(), 0
    pos = min(start, data.shape[0])
    while pos < data.shape[0]:
        chunk = np.array(data[pos : pos + per_tick])
        pos += chunk.shape[0]
        sent += chunk.shape[0]
        yield chunk
        if rate > 0:
            await asyncio.sleep(max(0.0, t0 + sent / rate - loop.time()))
        else:
            await asyncio.sleep(0)


async def _stdin(spec) -> AsyncIterator:
    import numpy as np

    loop = asyncio.get_running_loop()
    size = spec.itemsize
    rest = b""
    reader = getattr(sys.stdin.buffer, "read1", sys.stdin.buffer.read)
    while True:
        data = await loop.run_in_executor(None, reader, STDIN_READ)
        if not data:
            return
        data = rest + data
        whole = len(data) - len(data) % size
        rest = data[whole:]
        if whole:
            yield np.frombuffer(data[:whole], dtype=spec.numpy_dtype()).copy()
