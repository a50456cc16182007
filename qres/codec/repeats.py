"""The repetition stage: a channel coded as literals plus copies of its own earlier samples.

Sensor streams repeat: plateaus (a sleeping wearer's zero counts, a stuck level), recurring
gestures, a duty cycle. A short predictor sees none of that beyond its few taps. This stage
parses a channel's integer samples greedily into *literals* and *matches* (a run of samples
equal to the samples ``distance`` back, LZ77-style, within the block); the predictor and the
coder then code only the literals, and the match table says where the copies go. The codec
tries it per channel of a lossless block and keeps it only when its bytes (table plus coded
literals) are fewer than the channel's without it, so it costs nothing where data does not
repeat but the parse (a compiled hash-chain search, ``qres.codec._repeats``).

From format 9 a copy may also start in the block's earlier channels (the block's samples in
channel order, one flat sequence): sensors that measure overlapping quantities often hold the
same values at the same times (global and diffuse irradiance are equal whenever the sun is
hidden; a reference channel and its duplicate), which no predictor of one channel sees.

Table layout (docs/format.md, "Repeats"): a varint count of matches, then three arrays coded by
the block's coder, each behind its varint byte length: per match the literals before it, its
length minus 4 and its distance minus 1.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs

from qres.codec.container import get_varint, put_varint
from qres.kernel.errors import IntegrityError

#: Shortest match (the parse hashes 4 samples to find candidates).
SHORTEST = 4
#: Shortest matches the encoder tries, each a parse (the first is the screen); ranked by
#: estimate, the best is measured.
MIN_LENGTHS = (8, 4, 16)
#: Hash-chain candidates examined per position.
DEPTH = 8
#: The parse is tried only when its matches cover at least this fraction of the channel.
_COVERAGE = 1 / 64
#: The screen (the first parse on the first 1/_SCREEN_PART of a channel of at least
#: _SCREEN_PART * _SCREEN_MIN samples) must promise at least _SCREEN of its bytes.
_SCREEN = 0.02
_SCREEN_PART = 8
_SCREEN_MIN = 4096
#: Earlier channels of the block the encoder offers as history (a copy may start in any).
HISTORY_CHANNELS = 8
#: Samples of a channel larger than this in magnitude are not parsed (a bit view of floats
#: rarely repeats, and the estimate's arithmetic stays exact).
_LARGEST = 1 << 48


@attrs.frozen
class Parse:
    """A channel as literals and matches: per match, the literals before it (``runs``), its
    ``lengths`` and ``distances`` back (int64 arrays, one entry per match)."""

    runs: Any
    lengths: Any
    distances: Any

    @property
    def copied(self) -> int:
        """Samples the matches supply."""
        return int(self.lengths.sum())


def parse(row, min_length: int, history=None) -> tuple[Any, Parse]:
    """The literals of ``row`` (int64) and their matches, greedily (compiled); copies may
    start in ``history``, the samples just before the row (None: none)."""
    import numpy as np

    start = 0 if history is None else len(history)
    flat = row if not start else np.concatenate((history, row))
    flat = np.ascontiguousarray(flat, dtype=np.int64)
    return _parse(flat, _links(flat), 0, start, len(flat), min_length)


def _links(flat):
    from qres.codec._repeats import links

    return links(flat)


def _parse(flat, links, lo: int, start: int, end: int, min_length: int) -> tuple[Any, Parse]:
    from qres.codec._repeats import parse as compiled

    lits, runs, lens, dists = compiled(flat, links, lo, start, end, min_length, DEPTH)
    return lits, Parse(runs, lens, dists)


class Samples:
    """A block's samples (int64, channels x frames) as the parse sees them: one flat sequence
    in channel order, hashed once for every parse of every channel (whatever its history and
    shortest match), and the same for the channels' first ``head`` samples (the screens).
    A parse of channel ``c`` with ``back`` channels of history is exactly :func:`parse` of
    the channel after those channels' samples."""

    def __init__(self, ints) -> None:
        self.ints = ints
        self.frames = ints.shape[1]
        self._flat: dict[int, tuple[Any, Any]] = {}  # by head: the samples and their links

    def small(self, c: int) -> bool:
        """Whether channel ``c``'s samples are all within ±_LARGEST (row by row: a reduction
        along the frames of a frames-major block is many times slower)."""
        row = self.ints[c]
        return int(row.min()) > -_LARGEST and int(row.max()) < _LARGEST

    def row(self, c: int):
        """Channel ``c``'s samples."""
        return self.ints[c]

    def parse(self, c: int, min_length: int, back: int, head: int | None = None):
        """``(literals, Parse)`` of channel ``c`` (its first ``head`` samples if given, the
        earlier channels' first ``head`` as history), copies starting up to ``back`` channels
        before it."""
        size = self.frames if head is None else head
        if size not in self._flat:
            import numpy as np

            flat = np.ascontiguousarray(self.ints[:, :size], dtype=np.int64).reshape(-1)
            self._flat[size] = (flat, _links(flat))
        flat, links = self._flat[size]
        lo = max(0, c - back) * size
        return _parse(flat, links, lo, c * size, (c + 1) * size, min_length)


def rebuild(literals, found: Parse, frames: int, history=None):
    """The channel's ``frames`` samples from its literals and checked parse (compiled), its
    copies reaching into ``history`` (the samples before the channel) where they start there."""
    import numpy as np

    from qres.codec._repeats import rebuild as compiled

    return compiled(
        np.ascontiguousarray(literals, dtype=np.int64),
        found.runs,
        found.lengths,
        found.distances,
        frames,
        None if history is None else np.ascontiguousarray(history, dtype=np.int64),
    )


def encode_table(
    found: Parse, coder, too_large: Callable[[int], bool] | None = None
) -> bytes | None:
    """The match table's bytes: the count, then the runs, lengths - 4 and distances - 1, each
    coded by ``coder`` (the block's entropy coder) behind its byte length. None as soon as
    ``too_large`` says yes to a size the table is known to reach (the arrays are coded
    distances first: they most often cost the most)."""
    import numpy as np

    head = bytearray()
    put_varint(head, len(found.runs))
    if not len(found.runs):
        return None if too_large is not None and too_large(len(head)) else bytes(head)
    arrays = (found.runs, found.lengths - SHORTEST, found.distances - 1)
    coded: list[bytes] = [b""] * len(arrays)
    size = len(head)
    for i in reversed(range(len(arrays))):
        coded[i] = data = coder.encode(np.ascontiguousarray(arrays[i], dtype=np.int64))
        size += len(data) + _varint_size(len(data))
        if too_large is not None and too_large(size):
            return None
    out = head
    for data in coded:
        put_varint(out, len(data))
        out += data
    return bytes(out)


def _varint_size(value: int) -> int:
    """Bytes of ``value`` as a varint (7 bits a byte)."""
    return max(1, -(-value.bit_length() // 7))


def read_table(view, pos: int, frames: int, coder, reach: int = 0) -> tuple[Parse | None, int]:
    """Read and check a match table at ``view[pos]`` for a channel of ``frames`` samples (None
    for a count of 0: the channel has no matches). The count is bounded by the frames, and by
    what the coded bytes can hold, before anything is decoded; then every copy must start
    at most ``reach`` samples before the channel (its history: the earlier channels' samples,
    0 before format 9) and end inside the channel (so the rebuild never reads or writes out of
    bounds)."""
    import numpy as np

    count, pos = get_varint(view, pos, "repeats", frames // SHORTEST)
    if count == 0:
        return None, pos
    arrays = []
    for _ in range(3):
        length, pos = get_varint(view, pos, "repeats", len(view) - pos)
        most = getattr(coder, "max_samples", lambda n: None)(length)
        if most is not None and count > most:
            raise IntegrityError(f"repeats: {count} matches in {length} coded bytes; corrupted")
        values = coder.decode(bytes(view[pos : pos + length]), count)
        if int(values.min()) < 0 or int(values.max()) > frames + reach:
            raise IntegrityError("repeats: a run, length or distance out of range; corrupted")
        arrays.append(values)
        pos += length
    runs, lengths, distances = arrays[0], arrays[1] + SHORTEST, arrays[2] + 1
    ends = np.cumsum(runs + lengths)
    starts = ends - lengths
    if np.any(distances > starts + reach) or int(ends[-1]) > frames:
        raise IntegrityError(f"repeats: a copy reaches outside the {frames} samples; corrupted")
    return Parse(runs, lengths, distances), pos


def copied(values, found: Parse):
    """The entries of ``values`` (one per sample of the channel) at the samples the matches
    of ``found`` supply, in order (compiled)."""
    import numpy as np

    from qres.codec._repeats import copied as compiled

    return compiled(np.ascontiguousarray(values, dtype=np.int64), found.runs, found.lengths)


def copied_mask(found: Parse, n: int):
    """Which of the ``n`` samples the matches supply (bool array): the runs of literals and
    the matches alternate, then the last literals (the plain reference of :func:`copied`)."""
    import numpy as np

    spans = np.empty(2 * len(found.runs) + 1, dtype=np.int64)
    spans[0:-1:2] = found.runs
    spans[1::2] = found.lengths
    spans[-1] = n - int(found.runs.sum()) - int(found.lengths.sum())
    kinds = np.zeros(len(spans), dtype=bool)
    kinds[1::2] = True
    return np.repeat(kinds, spans)


def _gain(parsed, residuals, current, estimate, coder, whole=None, need=0.0):
    """``(gain, literals, table, crossed)`` of ``parsed`` (a channel's literals and Parse):
    the estimated bytes the channel spends on the samples the matches supply (``current``
    bytes in proportion to ``estimate`` of their ``residuals``) less the table's; no gain when
    the matches cover under _COVERAGE of the samples. A parse whose spent bytes are no more
    than ``need`` cannot gain more than ``need`` whatever its table costs: its table is not
    coded; nor is a table once so large that the gain falls below ``need`` (no table either
    way: such a parse is never kept). ``crossed`` says whether a copy starts before the
    channel (in an earlier one)."""
    lits, found = parsed
    n = len(residuals)
    if found.copied < _COVERAGE * n:
        return 0.0, lits, b"", False
    if whole is None:
        whole = max(1, estimate(residuals))
    spent = current * estimate(copied(residuals, found)) / whole
    if spent <= need:
        return spent, lits, b"", False
    # A table so large that the gain falls below need is not coded to its end.
    table = encode_table(found, coder, lambda size: spent - size < need)
    if table is None:
        return 0.0, lits, b"", False
    return spent - len(table), lits, table, reaches_back(found)


def reaches_back(found: Parse) -> bool:
    """Whether a copy of ``found`` starts before its channel (in the history)."""
    import numpy as np

    starts = np.cumsum(found.runs + found.lengths) - found.lengths
    return bool(np.any(found.distances > starts))


def choose(
    samples: Samples,
    c: int,
    residuals,
    current: int,
    estimate: Callable[[Any], int],
    code_literals: Callable[[Any], bytes],
    coder,
    back: int = 0,
) -> tuple[bytes, bytes, bool] | None:
    """The match table and coded literals of channel ``c`` of ``samples`` if smaller than its
    ``current`` bytes, and whether a copy starts in an earlier channel; else None;
    ``residuals`` are what its predictor made of it. A parse's gain is estimated as the
    channel's bytes spent on the samples the matches supply (``estimate`` of their residuals,
    in proportion to the whole) less the table's bytes. A parse of the channel's first eighth
    is a screen (nothing else is tried unless it promises at least _SCREEN of those bytes);
    then the best parse by that estimate is coded by ``code_literals`` and measured. Copies
    may start in the ``back`` channels just before this one in the block (the screen offers
    their first eighths)."""
    row = samples.row(c)
    n = len(row)
    if n < 2 * SHORTEST or not current:
        return None
    if not samples.small(c):
        return None
    # The screen: the first parse over the first eighth of a long channel (repeats that pay
    # show there too; this is most of what the stage costs where nothing repeats).
    head = n // _SCREEN_PART if n >= _SCREEN_PART * _SCREEN_MIN else n
    need = _SCREEN * current * head / n
    screen = _gain(
        samples.parse(c, MIN_LENGTHS[0], back, head if head < n else None),
        residuals[:head],
        current * head / n,
        estimate,
        coder,
        need=need,
    )
    if screen[0] < need or not screen[2]:
        return None
    whole = max(1, estimate(residuals))
    best = None
    for min_length in MIN_LENGTHS:
        if head == n and min_length == MIN_LENGTHS[0]:
            found = screen  # the screen was this parse of the whole channel
        else:
            bar = 0.0 if best is None else max(0.0, best[0])
            parsed = samples.parse(c, min_length, back)
            found = _gain(parsed, residuals, current, estimate, coder, whole, bar)
        if found[0] > 0 and found[2] and (best is None or found[0] > best[0]):
            best = found
    if best is None or best[0] <= 0:
        return None
    _, lits, table, crossed = best
    coded = code_literals(lits)
    if len(table) + len(coded) >= current:
        return None
    return table, coded, crossed


def reference_parse(
    row: list[int], min_length: int, depth: int = DEPTH, history: list[int] = ()
) -> tuple[list, list]:
    """Plain-Python parse the compiled one must equal: the same greedy choice over the same
    candidates (the ``depth`` nearest earlier positions whose 4 samples hash alike; equal
    hashes of different samples only give shorter matches, so candidates are the nearest
    ``depth`` positions with the same hash, which the compiled hash defines), copies
    starting in ``history`` too."""
    from qres.codec._repeats import hash4

    start = len(history)
    row = list(history) + list(row)
    n = len(row)
    heads: dict[int, int] = {}
    chain = [-1] * n
    for j in range(start):
        if j + 4 <= n:
            h = hash4(row[j : j + 4])
            chain[j] = heads.get(h, -1)
            heads[h] = j
    lits, matches = [], []
    i, run = start, 0
    while i < n:
        best_len = best_dist = 0
        if i + min_length <= n:
            p, steps = heads.get(hash4(row[i : i + 4]), -1), 0
            while p >= 0 and steps < depth:
                length = 0
                while i + length < n and row[p + length] == row[i + length]:
                    length += 1
                if length > best_len:
                    best_len, best_dist = length, i - p
                p, steps = chain[p], steps + 1
        start = i
        if best_len >= min_length:
            matches.append((run, best_len, best_dist))
            run, i = 0, i + best_len
        else:
            lits.append(row[i])
            run, i = run + 1, i + 1
        for j in range(start, i):
            if j + 4 <= n:
                h = hash4(row[j : j + 4])
                chain[j] = heads.get(h, -1)
                heads[h] = j
    return lits, matches


def reference_rebuild(
    literals: list[int], matches: list[tuple[int, int, int]], n: int, history: list[int] = ()
) -> list:
    """Plain-Python rebuild the compiled one must equal (copies may start in ``history``)."""
    out: list[int] = list(history)
    lit = 0
    for run, length, dist in matches:
        out += literals[lit : lit + run]
        lit += run
        for _ in range(length):
            out.append(out[-dist])
    out += literals[lit:]
    assert len(out) == n + len(history)
    return out[len(history) :]
