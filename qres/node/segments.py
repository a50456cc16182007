"""Rolling ``.qres`` segments: how a node stores its stream so that a crash loses at most the
segment it was filling and never leaves a corrupt one.

A segment is written to ``<name>.part``, flushed to disk (``fsync``), renamed to its final name
(atomic on POSIX), the folder is flushed, and only then indexed in the state database. The
final name carries everything the index needs (sequence number, first sample, sample count,
start and end times in microseconds), so on restart :func:`recover` deletes stray ``.part``
files and indexes any complete segment the index missed (a crash between rename and commit).
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from qres.kernel.errors import QresError
from qres.node.state import Segment, State

NAME = re.compile(r"^seg-(\d{8})-(\d+)-(\d+)-(\d+)-(\d+)\.qres$")


def segment_name(seq: int, first: int, samples: int, start: float, end: float) -> str:
    """The file name of a segment (times as integer microseconds since the epoch)."""
    return f"seg-{seq:08d}-{first}-{samples}-{int(start * 1e6)}-{int(end * 1e6)}.qres"


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SegmentStore:
    """The segment folder of a node and its index."""

    def __init__(self, folder: Path, state: State, spec, profile: str):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.state = state
        self.spec = spec
        self.profile = profile

    def recover(self) -> dict[str, int]:
        """Delete unfinished ``.part`` files, index complete segments the index lacks."""
        from qres.codec.files import decompress_bytes

        removed = adopted = 0
        for part in self.folder.glob("*.part"):
            part.unlink()
            removed += 1
        indexed = {s.name for s in self.state.segments()}
        for path in sorted(self.folder.glob("seg-*.qres")):
            match = NAME.match(path.name)
            if match is None or path.name in indexed:
                continue
            data = path.read_bytes()
            seq, first, samples, start_us, end_us = (int(g) for g in match.groups())
            try:
                decompress_bytes(data)
            except QresError:
                path.rename(path.with_suffix(".damaged"))
                continue
            self.state.add_segment(
                Segment(
                    seq,
                    path.name,
                    first,
                    samples,
                    start_us / 1e6,
                    end_us / 1e6,
                    len(data),
                    hashlib.sha256(data).hexdigest(),
                )
            )
            adopted += 1
        return {"removed_parts": removed, "adopted": adopted}

    def next_seq(self) -> int:
        """The sequence number of the next segment."""
        segments = self.state.segments()
        return segments[-1].seq + 1 if segments else 0

    def write(self, first: int, samples, start: float, end: float) -> Segment:
        """Compress ``samples`` (a numpy array of the source's type) into the next segment."""
        from qres.codec.files import compress_bytes

        data = compress_bytes(samples.tobytes(), self.spec, profile=self.profile)
        seq = self.next_seq()
        name = segment_name(seq, first, len(samples), start, end)
        final = self.folder / name
        part = final.with_name(name + ".part")
        with open(part, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(part, final)
        _fsync_dir(self.folder)
        segment = Segment(
            seq, name, first, len(samples), start, end, len(data), hashlib.sha256(data).hexdigest()
        )
        self.state.add_segment(segment)
        return segment

    def read(self, segment: Segment):
        """The samples of one segment, checked against its recorded SHA-256."""
        import numpy as np

        from qres.codec.files import decompress_bytes

        data = (self.folder / segment.name).read_bytes()
        if hashlib.sha256(data).hexdigest() != segment.sha256:
            from qres.kernel.errors import IntegrityError

            raise IntegrityError(f"{self.folder / segment.name}: does not match its index entry")
        return np.frombuffer(decompress_bytes(data), dtype=self.spec.numpy_dtype())
