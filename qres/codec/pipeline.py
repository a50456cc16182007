"""The codec pipeline: samples -> integers -> predictor residuals -> entropy-coded blocks.

``compress`` reads a sample stream block by block, turns each block into integers (floats
through an exact decimal scaling or a lossless view of their bits), runs the profile's
predictor and coder on it, and writes a ``.qres`` container. Blocks are independent, so they
are coded in parallel threads (the Cython loops release the GIL) while memory stays bounded by a
window of blocks; the bytes written never depend on the thread count. A block that prediction
does not shrink is stored deflated or raw, so no input grows by more than a few bytes per block.
In bounded-error mode each block is coded with the profile's predictor and with the
interpolation predictors, and the smallest payload wins; the block's flags say which.

The payload of a predicted block is specified in ``docs/format.md``; its side record (the
integer mapping of each channel) in ``docs/mapping.md``.
"""

from __future__ import annotations

import math
import struct
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, BinaryIO

import attrs

from qres.codec import channels, container, limits, mapping, quantised, repeats
from qres.codec.container import (
    DEFAULT_BLOCK_FRAMES,
    METHOD_DEFLATE,
    METHOD_PREDICTED,
    METHOD_QUANTISED,
    METHOD_STORED,
    Block,
    Header,
)
from qres.codec.samples import SampleSource, StreamSpec
from qres.kernel.config import Location
from qres.kernel.errors import IntegrityError, PluginError, ProfileError, UsageError

#: Bit 0 of a block's flags: this block was coded lossless although the stream has a bound.
FLAG_LOSSLESS = 1
#: Bits 1-2 of a block's flags: which predictor coded the block (docs/format.md).
PREDICTOR_SHIFT = 1
PREDICTOR_MASK = 3 << PREDICTOR_SHIFT
#: Block predictor codes: 0 is the header's predictor; the others are fixed by the format, so
#: a decoder needs nothing but the flags to rebuild them.
BLOCK_PREDICTORS: dict[int, dict[str, Any]] = {
    1: {"use": "interp", "kind": "linear", "anchor": 1024},
    2: {"use": "interp", "kind": "cubic", "anchor": 1024},
    3: {"use": "interp", "anchor": 1024},  # each level's kind chosen by the encoder
}
#: The block predictor code whose payload starts with the mask of cubic levels (2 bytes,
#: bit k: the level of stride 2**k), which the encoder chose level by level.
LEVELS = 3
_LEVELS = struct.Struct("<H")
#: Levels of an anchor of 1024: strides 2**0 .. 2**9.
LEVELS_MASK = (1 << 10) - 1
#: Bit 3 of a block's flags: some channels were coded with a polynomial predictor instead of
#: the block's; the payload then holds one predictor code per channel (docs/format.md).
FLAG_CHANNEL_PREDICTORS = 1 << 3
#: Channel predictor codes: 0 is the block's predictor, ``1 + k`` the polynomial of order k.
CHANNEL_POLYNOMIALS = 5
#: Polynomial orders the encoder tries on each channel of a lossless block.
_TRIED_ORDERS = (0, 1, 2, 3)
#: Candidates are ranked on spans of at most this many frames (at least _MIN_SPAN), one
#: every _SAMPLE_EVERY spans.
_SAMPLE_SPAN = 4096
_MIN_SPAN = 1024
_SAMPLE_EVERY = 8
_SAMPLE_MOST = 16384
#: Samples before a span that its polynomial candidates see (the highest order tried).
_SPAN_CONTEXT = max(_TRIED_ORDERS, default=0)
#: A sample's sizes are only estimates of the block's: a candidate whose sample is larger
#: than the block predictor's by less than the sample's noise, a factor 1 + (_NOISE_HALVES /
#: 2) / sqrt(sample frames), may still win and is measured on the whole block (the ratio of
#: two coded sizes on one sample strays from the block's like a mean of that many samples).
_NOISE_HALVES = 3
#: Of the polynomial orders ranked by estimate, how many the coder measures on the sample:
#: the first always, the next ones only when the first is within a factor _RANK_SPREAD
#: (numerator, denominator) of the block predictor's size.
_CODED_ORDERS = 2
_RANK_SPREAD = (21, 20)
#: A channel is sparse when this fraction (numerator, denominator) of its best-estimated
#: polynomial's sampled residuals are zero; the block predictor is then screened on the
#: sample, each span after half a span of warm-up, and skipped when a polynomial beats it by
#: the factor _CLEAR (numerator, denominator; the warm-up leaves the block predictor up to 9%
#: worse than in the block). Blocks whose screen would run the block predictor on more than
#: 1/_SCREEN_SHARE of their frames are not screened.
_SPARSE = (1, 4)
_CLEAR = (10, 11)
#: A sparse channel whose best polynomial's estimated bits on the screen are below this
#: fraction (numerator, denominator) of the block predictor's is cleared on the estimates
#: alone (the coder's sizes of the two differ from the estimates' ratio by a few percent).
_OBVIOUS = (4, 5)
_SCREEN_SHARE = 4
#: A block too short to sample is screened on 1/_SCREEN_SHARE of its frames in this many
#: spans before a polynomial is coded whole (:func:`_short_spans`).
_SHORT_SPANS = 4
#: An incumbent size no candidate reaches (every ranked polynomial is measured).
_NO_INCUMBENT = 1 << 62
#: Bit 4 of a block's flags: some channels' residuals are paired with an earlier channel's;
#: the payload holds the pairs (qres.codec.channels; format 6 on).
FLAG_CHANNEL_PAIRS = 1 << 4
#: Bit 5 of a block's flags: some channels are literals plus copies of their earlier samples;
#: the payload holds one match table per channel (qres.codec.repeats; format 6 on).
FLAG_REPEATS = 1 << 5
#: The flags a block of each format version may carry.
KNOWN_FLAGS_V5 = FLAG_LOSSLESS | PREDICTOR_MASK | FLAG_CHANNEL_PREDICTORS
KNOWN_FLAGS = KNOWN_FLAGS_V5 | FLAG_CHANNEL_PAIRS | FLAG_REPEATS
_BLOCK_PREDICTOR_NAMES = {1: "interp linear", 2: "interp cubic", 3: "interp per level"}


def block_predictor(method: str, flags: int, codec: dict[str, Any]) -> str:
    """What coded a block, from its method and flags (for ``qres info``): the header's
    predictor by name, one of the format's interpolation predictors, or the method itself
    (quantised blocks: the predictor of their quantised samples, marked so)."""
    if method not in ("predicted", "quantised"):
        return method
    code = (flags & PREDICTOR_MASK) >> PREDICTOR_SHIFT
    name = _BLOCK_PREDICTOR_NAMES.get(code) or codec.get("predictor", {}).get("use", "?")
    if method == "quantised":
        return name + " (quantised)"
    return name + (" (lossless)" if flags & FLAG_LOSSLESS and codec.get("max_error") else "")


@attrs.frozen
class CodecSettings:
    """The resolved settings of a compression: plugin tables, block size and error bound."""

    predictor: dict[str, Any]
    coder: dict[str, Any]
    block_frames: int = DEFAULT_BLOCK_FRAMES
    max_error: float = 0

    def to_header(self) -> dict[str, Any]:
        """Plain data stored in the container header."""
        return {"predictor": self.predictor, "coder": self.coder, "max_error": self.max_error}


@attrs.frozen
class Stats:
    """What a compression or decompression did: sizes, blocks by method, time."""

    raw_bytes: int  # the uncompressed stream, as a file
    packed_bytes: int  # the .qres container
    frames: int
    blocks: int
    methods: dict[str, int]
    seconds: float

    @property
    def ratio(self) -> float:
        """Uncompressed size over compressed size."""
        return self.raw_bytes / self.packed_bytes if self.packed_bytes else 0.0


#: Largest error bound on integer samples: predictions and bounds stay inside int64 arithmetic.
MAX_INT_ERROR = 1 << 62


def check_max_error(max_error: float, dtype: str | None = None) -> None:
    """Refuse an error bound the codec cannot honour, with a short line (numbers shown in at
    most 6 significant digits: a bound of 1e300 is not echoed as 300 digits)."""
    import math

    if not isinstance(max_error, (int, float)) or isinstance(max_error, bool):
        raise UsageError(f"--max-error {max_error!r}: not a number; give a number >= 0")
    if not (math.isfinite(max_error) and max_error >= 0):
        raise UsageError(f"--max-error {max_error:.6g}: must be a finite number >= 0")
    if dtype is None or dtype.startswith("float") or not max_error:
        return
    if max_error > MAX_INT_ERROR:
        raise UsageError(
            f"--max-error {max_error:.6g}: too large for {dtype} samples; "
            f"use at most {MAX_INT_ERROR} (2**62)"
        )
    if max_error != int(max_error):
        raise UsageError(
            f"--max-error {max_error:.6g}: integer samples need a whole-number bound; use "
            f"{int(max_error)}"
        )


# -- block payloads ----------------------------------------------------------------------------


def _read_predicted_head(
    view: memoryview, code: int, per_channel: bool, channels: int
) -> tuple[int | None, bytes, int]:
    """A predicted block's leading fields: interpolation levels (if ``code`` says so), one
    predictor code per channel (if ``per_channel``; zeros otherwise) and where they end."""
    pos = 0
    levels = None
    if code == LEVELS:
        if len(view) < _LEVELS.size:
            raise IntegrityError("interpolation levels truncated")
        (levels,) = _LEVELS.unpack_from(view, 0)
        if levels & ~LEVELS_MASK:
            raise IntegrityError(f"bad interpolation levels {levels:#06x}")
        pos = _LEVELS.size
    channel_codes = bytes(channels)
    if per_channel:
        channel_codes = bytes(view[pos : pos + channels])
        pos += channels
        if len(channel_codes) != channels:
            raise IntegrityError("channel predictor codes truncated")
        if not any(channel_codes) or max(channel_codes) > CHANNEL_POLYNOMIALS:
            raise IntegrityError(f"bad channel predictor codes {channel_codes.hex()}")
    return levels, channel_codes, pos


#: The predictors whose tables the format fixes (block and channel predictor codes), built
#: once per process and shared by every BlockCoder: they hold nothing but their settings
#: (initial weights are only ever given to the header's predictor). They are built again
#: from a new plugin registry (one that changed).
_FORMAT_PREDICTORS: list[Any] = [None, {}]


def _format_predictor(table: dict[str, Any], where: str):
    """The shared predictor of a table the format fixes (see _FORMAT_PREDICTORS)."""
    from qres.kernel import plugins

    registry = plugins.registry()
    if _FORMAT_PREDICTORS[0] is not registry:
        _FORMAT_PREDICTORS[:] = [registry, {}]
    built = _FORMAT_PREDICTORS[1]
    key = tuple(sorted(table.items()))
    pred = built.get(key)
    if pred is None:
        pred = built[key] = plugins.create("predictor", table, Location(where, "predictor"))
    return pred


class BlockCoder:
    """Codes blocks with one predictor and one coder; one instance per worker thread."""

    def __init__(
        self,
        settings: CodecSettings,
        spec: StreamSpec,
        weights=None,
        version: int = container.FORMAT_VERSION,
    ):
        from qres.kernel import plugins

        where = Location("<codec settings>", "codec")
        self.predictor = plugins.create("predictor", settings.predictor, where.child("predictor"))
        self.coder = plugins.create("coder", settings.coder, where.child("coder"))
        import numpy as np

        if weights is not None and len(weights):
            self.predictor.set_initial_weights(np.asarray(weights, dtype=np.int32))
        self.spec = spec
        # The integer mapping sees packed samples (int24) as their array type (int32).
        self.work = spec.working()
        self.settings = settings
        # Blocks of older formats carry none of the newer flags (a reader refuses them).
        self.known_flags = KNOWN_FLAGS if version >= 6 else KNOWN_FLAGS_V5
        # Quantised blocks: bounded-error streams of format 10 on (qres.codec.quantised).
        self.quantised = version >= container.QUANTISED_BLOCKS and bool(settings.max_error)
        # ... and on the channels' own lattices: float streams of format 11 on.
        self.lattice = (
            self.quantised and version >= container.LATTICE_GRIDS and spec.dtype.startswith("float")
        )
        self.weights = weights
        self._inner: dict[str, BlockCoder] = {}  # quantised blocks' lossless coders
        self.version = version  # decides the mapping kinds a block may hold
        self._predictors: dict[Any, Any] = {0: self.predictor}
        # Integer samples keep predictions and bounded-error reconstructions inside their type.
        self.bounds = spec.value_range()
        self.grid_step = None
        self.int_bound = 0
        if settings.max_error:
            if spec.dtype.startswith("float"):
                self.int_bound = mapping.GRID_DIVISIONS - 1
                self.grid_step = quantised.grid_step(settings.max_error, version)
            else:
                self.int_bound = int(settings.max_error)

    # encode ------------------------------------------------------------------------------

    def encode(self, raw: bytes) -> tuple[Block, bytes]:
        """Code one block's bytes (frame order) into a block record.

        Returns the record and the bytes a decoder will restore: ``raw`` itself, or in
        bounded-error mode the reconstruction, whose CRC the record carries.
        """

        spec = self.spec
        block = spec.to_array(raw).reshape(-1, spec.channels)
        frames = block.shape[0]
        flags = 0
        restored = raw
        payload = None
        method = METHOD_PREDICTED
        if self.int_bound:
            payload, flags, method, restored = self._bounded(block, raw)
        if payload is None:
            chosen = self._predicted(block, None, 0, (0,))
            payload = None if chosen is None else chosen[0]
            if chosen is not None:
                flags |= chosen[1]
        raw_crc = zlib.crc32(restored)
        if payload is not None and len(payload) < 0.9 * len(raw):
            return Block(frames, method, flags, raw_crc, payload), restored
        # Prediction did not help: the raw bytes, deflated if that is smaller, are exact.
        best = Block(frames, METHOD_STORED, 0, zlib.crc32(raw), bytes(raw))
        if payload is not None and len(payload) < len(raw):
            best = Block(frames, method, flags, raw_crc, payload)
        deflated = zlib.compress(raw, 6)
        if len(deflated) < len(best.payload):
            best = Block(frames, METHOD_DEFLATE, 0, zlib.crc32(raw), deflated)
        return best, (restored if best.method == method else raw)

    def _bounded(self, block, raw: bytes) -> tuple[bytes | None, int, int, bytes]:
        """A bounded-error block's smallest candidate: its payload (None: code it lossless
        below), flags, method and the bytes the decoder restores. Format 10 on, a long block
        codes whole only the candidates its screen keeps (:meth:`_bounded_screen`), and the
        others too when none of those holds the bound."""
        found: dict[str, Any] = {}
        keep = quantised.CANDIDATES
        if self.quantised:
            max_error = float(self.settings.max_error)
            found[quantised.QUANTISED] = quantised.quantise(block, self.work.dtype, max_error)
            if self.lattice:
                found[quantised.LATTICE] = self._on_lattices(block)
            keep = self._bounded_screen(block, found)
        best = (None, FLAG_LOSSLESS, METHOD_PREDICTED, raw)
        best = self._bounded_among(block, raw, found, keep, best)
        if best[0] is None and keep != quantised.CANDIDATES:
            best = self._bounded_among(block, raw, found, quantised.CANDIDATES - keep, best)
        return best

    def _bounded_among(self, block, raw: bytes, found, keep, best):
        """The smallest of ``best`` and the candidates in ``keep``, in the order closed loop,
        quantised on the bound's grid, quantised on the channels' lattices, lossless (the first
        wins ties). ``found``: the grid indices of the quantised candidates, by name."""
        spec = self.spec
        max_error = float(self.settings.max_error)
        payload, flags, method, restored = best
        # The header's predictor and the interpolation predictors each code the block in a
        # closed loop, and the smallest wins (a choice the data makes, recorded in the flags).
        if quantised.CLOSED in keep:
            chosen = self._predicted(block, self.grid_step, self.int_bound, (0, *BLOCK_PREDICTORS))
            if chosen is not None and (payload is None or len(chosen[0]) < len(payload)):
                # The decoder's view of a bounded-error block is its reconstruction: compute
                # it and check the bound (float rounding could in principle break it).
                decoded = self._decode_predicted(chosen[0], len(block), False, chosen[1])
                if _within(block, decoded, max_error):
                    payload, flags, restored = chosen[0], chosen[1], spec.to_bytes(decoded)
                    method = METHOD_PREDICTED
        if not self.quantised:
            return payload, flags, method, restored
        # Quantise first, code losslessly: smaller than the closed loop on data with long
        # constant stretches, copies or few values on the bound's grid.
        for name in (quantised.QUANTISED, quantised.LATTICE):
            if name not in keep:
                continue
            incumbent = None if payload is None else len(payload)
            shortcut = self._quantised(block, found.get(name), incumbent)
            if shortcut is not None:
                payload, flags, decoded = shortcut
                method, restored = METHOD_QUANTISED, spec.to_bytes(decoded)
        # Lossless coding holds any bound, and wins where the bound is fine next to the
        # data's own structure (its lattice, dictionary or copies).
        if quantised.LOSSLESS in keep:
            exact = self._predicted(block, None, 0, (0,))
            if exact is not None and (payload is None or len(exact[0]) < len(payload)):
                return exact[0], exact[1] | FLAG_LOSSLESS, METHOD_PREDICTED, raw
        return payload, flags, method, restored

    def _bounded_screen(self, block, found) -> frozenset[str]:
        """The bounded-error candidates worth coding whole: on a long block, those whose
        bytes on a sample of it (:func:`quantised.screen_spans`) come within the noise band
        of the best one's (:func:`quantised.may_win`); every candidate on a short block."""
        import numpy as np

        spans = quantised.screen_spans(len(block))
        if not spans:
            return quantised.CANDIDATES
        sample = np.concatenate([block[a:b] for a, b in spans])
        sizes: dict[str, int] = {}
        codes = (0, *BLOCK_PREDICTORS)
        closed = self._predicted(sample, self.grid_step, self.int_bound, codes)
        if closed is not None:
            sizes[quantised.CLOSED] = len(closed[0])
        for name, candidate in found.items():
            if candidate is None:
                continue
            q = np.concatenate([candidate[1][a:b] for a, b in spans])
            inner = self._inner_coder(candidate[0])._predicted(q, None, 0, (0,))
            if inner is not None:
                # The type byte; not the recorded grids, a fixed cost that would weigh on the
                # sample eight times or more what it weighs on the block (the choice counts it).
                sizes[name] = 1 + len(inner[0])
        exact = self._predicted(sample, None, 0, (0,))
        if exact is not None:
            sizes[quantised.LOSSLESS] = len(exact[0])
        return quantised.may_win(sizes)

    def _on_lattices(self, block):
        """The block's grid indices on its channels' own lattices
        (:func:`quantised.quantise_lattice`), or None when no channel has one."""
        import numpy as np

        max_error = float(self.settings.max_error)
        dtype = self.work.dtype
        native = block.astype(block.dtype.newbyteorder("="), copy=False)
        grids = [
            quantised.lattice_grid(np.ascontiguousarray(native[:, c]), dtype, max_error)
            for c in range(native.shape[1])
        ]
        return quantised.quantise_lattice(native, dtype, max_error, grids)

    def _quantised(self, block, found, incumbent: int | None) -> tuple[bytes, int, Any] | None:
        """The quantised candidate (qres.codec.quantised) of the block's grid indices
        ``found`` (:func:`quantised.quantise`, or :func:`quantised.quantise_lattice` with the
        grids it records): its payload, flags and reconstruction, or None when it has no grid,
        is not smaller than ``incumbent`` bytes or its reconstruction breaks the bound."""
        max_error = float(self.settings.max_error)
        if found is None:
            return None
        code, q = found[:2]
        head = _quantised_head(found)
        chosen = self._inner_coder(code)._predicted(q, None, 0, (0,))
        if chosen is None or (incumbent is not None and len(head) + len(chosen[0]) >= incumbent):
            return None
        grids = found[2] if len(found) > 2 else None
        decoded = quantised.reconstruct(q, self.work.dtype, max_error, self.bounds, grids)
        if not _within(block, decoded, max_error):
            return None
        return head + chosen[0], chosen[1], decoded

    def _inner_coder(self, code: int) -> BlockCoder:
        """The lossless coder of quantised samples of type ``code``, built once."""
        dtype = quantised.inner_type(code, self.work.dtype)
        inner = self._inner.get(dtype)
        if inner is None:
            settings = attrs.evolve(self.settings, max_error=0)
            spec = StreamSpec(dtype, self.spec.channels)
            inner = self._inner[dtype] = BlockCoder(settings, spec, self.weights, self.version)
        return inner

    def _quantised_parts(self, block: Block) -> tuple[BlockCoder, Block, Any]:
        """A quantised block's lossless coder, inner predicted block (the payload after its
        type byte and recorded grids) and recorded grids (None: the bound's grid), checked."""
        if not self.quantised:
            raise IntegrityError("quantised block in a lossless stream; corrupted")
        if block.flags & FLAG_LOSSLESS or not block.payload:
            raise IntegrityError("quantised block: lossless flag or no payload; corrupted")
        first = block.payload[0]
        grids, start = None, 1
        if first & quantised.LATTICE_FLAG:
            if not self.lattice:
                raise IntegrityError(
                    f"quantised block: recorded grids in a format {self.version} "
                    f"{self.spec.dtype} stream; corrupted"
                )
            grids, start = quantised.read_grids(block.payload, self.spec.channels)
        inner = self._inner_coder(first & ~quantised.LATTICE_FLAG)
        payload = block.payload[start:]
        rest = Block(block.frames, METHOD_PREDICTED, block.flags, block.raw_crc, payload)
        return inner, rest, grids

    def block_predictor(self, code: int, levels: int | None = None):
        """The predictor of block predictor ``code`` (0: the header's; for code 3 with the
        cubic-levels mask ``levels``), built once."""
        key = code if levels is None else (code, levels)
        pred = self._predictors.get(key)
        if pred is None:
            table = dict(BLOCK_PREDICTORS[code])
            if levels is not None:
                table["cubic_levels"] = levels
            pred = self._predictors[key] = _format_predictor(table, "<block flags>")
        return pred

    def _predicted(self, block, grid_step, bound, codes) -> tuple[bytes, int] | None:
        """The smallest payload over the block predictors ``codes`` and its block flags (the
        predictor code, the first one winning ties, and the stages it uses), or None if the
        block has no integer mapping. Lossless blocks also try polynomial predictors channel
        by channel (below) and repeats; every block tries channel pairs."""
        import numpy as np

        # Bounds near the float range overflow in intermediate steps; the mapping checks its
        # results, so numpy's warnings are noise on the user's terminal.
        with np.errstate(all="ignore"):
            mapped = mapping.to_integers(
                block,
                self.work,
                grid_step,
                lattice=not bound,
                version=self.version,
            )
        if mapped is None:
            return None
        bounds = self.bounds if grid_step is None else None
        best: tuple | None = None
        for code in codes:
            pred = self.block_predictor(code)
            head = b""
            if not bound:
                # Lossless: the channel choice runs the predictor where it may win.
                channel_codes, coded, rows = self._channel_choice(pred, mapped.ints, bounds)
            else:
                if code == LEVELS:
                    residuals, levels = pred.encode_choosing(
                        mapped.ints, max_error=bound, bounds=bounds
                    )
                    head = _LEVELS.pack(levels & LEVELS_MASK)
                else:
                    residuals = pred.encode(mapped.ints, max_error=bound, bounds=bounds)
                channel_codes, rows = b"", list(residuals)
                coded = self._code_channels(pred, residuals)
            size = len(head) + len(channel_codes) + sum(len(c) for c in coded)
            if best is None or size < best[0]:
                best = (size, code, head, channel_codes, coded, rows, pred)
        assert best is not None
        _, code, head, channel_codes, coded_channels, rows, pred = best
        flags = code << PREDICTOR_SHIFT | (FLAG_CHANNEL_PREDICTORS if channel_codes else 0)
        stages, more = self._channel_stages(
            pred, mapped.ints, rows, coded_channels, channel_codes, not bound, bounds
        )
        parts = [head, channel_codes, stages, mapped.side]
        for coded in (*coded_channels, *(self.coder.encode(s) for s in mapped.extras)):
            parts.append(struct.pack("<I", len(coded)))
            parts.append(coded)
        return b"".join(parts), flags | more

    def _channel_stages(self, pred, ints, rows, coded, channel_codes, lossless, bounds):
        """Repeats (lossless blocks) and channel pairs, each kept where the coder's bytes of a
        channel shrink: the payload fields they add and their block flags; ``coded`` is
        updated in place. A channel that copies from an earlier one may no longer pair, and
        a pair can beat those copies: when any copy reaches into an earlier channel, the
        stages are chosen again with copies inside each channel only, and the fewer bytes
        win (the copies within channels on a tie)."""
        # One hashing of the block's samples serves every parse of both choices, and a pair
        # coded in the first is not coded again in the second.
        args = (
            pred,
            repeats.Samples(ints) if lossless else None,
            rows,
            channel_codes,
            lossless,
            bounds,
            {},
        )
        first = self._stages_with(*args, list(coded), repeats.HISTORY_CHANNELS)
        best = first
        if first[3]:
            own = self._stages_with(*args, list(coded), 0)
            if _stages_size(own) <= _stages_size(first):
                best = own
        coded[:] = best[2]
        return best[0], best[1]

    def _stages_with(
        self, pred, samples, rows, channel_codes, lossless, bounds, memo, coded, history
    ):
        """One choice of both stages, copies starting up to ``history`` channels back:
        ``(fields, flags, coded, crossed)``, ``crossed`` saying whether a copy does."""
        count = len(rows)
        codes = channel_codes or bytes(count)
        found: list[bytes | None] = [None] * count
        crossed = False
        if lossless:
            for c in range(count):
                if codes[c] == 0 and not pred.channels_independent:
                    continue  # its literals would change the other channels' predictions
                own = self._channel_predictor(pred, codes[c])

                def code_literals(lits, own=own):
                    return self._code_row(own, own.encode(lits.reshape(1, -1), bounds=bounds)[0])

                got = repeats.choose(
                    samples,
                    c,
                    rows[c],
                    len(coded[c]),
                    _estimated_bits,
                    code_literals,
                    self.coder,
                    history,
                )
                if got is not None:
                    found[c], coded[c], reached = got
                    crossed |= reached
        pairs = channels.choose(
            rows,
            coded,
            [f is None for f in found],
            _sample_spans(len(rows[0])),
            _estimated_bits,
            lambda c, row: self._code_row(self._channel_predictor(pred, codes[c]), row),
            memo,
        )
        parts, flags = [], 0
        if pairs is not None:
            parts.append(channels.encode_table(pairs))
            flags |= FLAG_CHANNEL_PAIRS
        if any(f is not None for f in found):
            parts += [b"\0" if f is None else f for f in found]
            flags |= FLAG_REPEATS
        return b"".join(parts), flags, coded, crossed

    def _channel_predictor(self, pred, code: int):
        """The predictor of channel code ``code``: 0 the block's ``pred``, else a polynomial."""
        return pred if code == 0 else self.polynomial(code - 1)

    def _code_row(self, pred, row) -> bytes:
        """The coder's bytes of one channel's residuals (with ``pred``'s segments)."""
        segments = self._segments(pred, len(row))
        if segments is None:
            return self.coder.encode(row)
        return self.coder.encode(row, segments=segments)

    def _code_channels(self, pred, residuals) -> list[bytes]:
        """The coder's bytes of each channel's residuals (with ``pred``'s segments)."""
        segments = self._segments(pred, residuals.shape[1])
        if segments is None:
            return [self.coder.encode(stream) for stream in residuals]
        return [self.coder.encode(stream, segments=segments) for stream in residuals]

    def _channel_choice(self, pred, ints, bounds) -> tuple[bytes, list, list]:
        """Per channel, the block predictor's bytes or a polynomial predictor's, whichever the
        coder makes smaller: the channel codes (empty when every channel keeps the block
        predictor), the coded channels and their residuals.

        Sparse, bursty or noisy channels (rain gauges, activity counts, clipped stretches)
        are often cheaper with a short fixed predictor (or none: order 0) than with an
        adaptive one whose taps echo every burst. The candidates are ranked by the coder's
        size of their residuals on a sample of the block (:func:`_sample_spans`); a candidate
        is coded whole only when the sample says it may win (:func:`_may_win`), so a channel
        is coded whole once unless the sample cannot tell its two best candidates apart,
        and then the measured sizes decide. The block predictor is not even run on a sparse
        channel that a polynomial clearly wins (:meth:`_clear_polynomials`)."""
        if not _TRIED_ORDERS:
            residuals = pred.encode(ints, bounds=bounds)
            return b"", self._code_channels(pred, residuals), list(residuals)
        choice = _Choice(self, pred, ints, bounds)
        clear = self._clear_polynomials(pred, ints, choice)
        choice.run_block_predictor([c for c in range(len(ints)) if c not in clear])
        for c, (order, screened, ranked) in clear.items():
            if choice.whole:
                # The polynomials' sizes on the block are exact: measure the best two, unless
                # the screen already told its best two apart by the margin _CLEAR.
                lead = _decisive(screened, ranked[:_CODED_ORDERS])
                if lead is not None:
                    choice.take(c, lead, choice.prefixes.code((lead, c), choice.full(lead, c)))
                    continue
                order, data = self._measure_screened(choice, c, screened, ranked)
                choice.take(c, order, data)
            else:
                choice.take(c, order, self.coder.encode(choice.full(order, c)))
        for c in choice.ran:
            choice.decide(c)
        codes = choice.codes
        kept = [c for c, code in enumerate(codes) if code == 0]
        if not any(codes) or pred.channels_independent:
            for c in kept:
                choice.own(c)
        if not any(codes):
            return b"", choice.coded, choice.rows
        if kept and not pred.channels_independent:
            # The block predictor sees only the channels that keep it (as the decoder will).
            kept_rows = pred.encode(ints[kept], bounds=bounds)
            again = self._code_channels(pred, kept_rows)
            for c, data, row in zip(kept, again, kept_rows, strict=True):
                choice.coded[c] = data
                choice.rows[c] = row
        return bytes(codes), choice.coded, choice.rows

    def _clear_polynomials(self, pred, ints, choice: _Choice) -> dict[int, tuple[int, dict, list]]:
        """The sparse channels of a block that a polynomial clearly wins, with its order, the
        polynomials' coded screens by order and their ranking there: the block predictor (an
        adaptive one, such as the NLMS cascade, costs ten times a polynomial) need not run on
        them at all.

        A channel is sparse when at least a fraction _SPARSE of its best-estimated
        polynomial's sampled residuals are zero: plateaus, counts, rain; that is where
        fixed polynomials beat adaptive predictors, and the only channels screened (others
        cost nothing more). The block predictor runs on the screen alone, and the polynomial
        must beat it there by a factor _CLEAR. The screen is the sample's spans, each after
        half a span of the block before it (the block predictor's in-block residuals there
        come out no worse than this, having adapted longer), or on a block too short to
        sample its first 1/_SCREEN_SHARE (exactly the block's start, where an adaptive
        predictor is at its worst, which the margin covers)."""
        import numpy as np

        frames = ints.shape[1]
        if choice.whole:
            spans, warm_up = [(0, choice.screen_width)], 0
            cost = spans[0][1] if spans[0][1] >= _MIN_SPAN else frames
        else:
            spans = choice.spans
            span = spans[0][1] - spans[0][0]
            warm_up = span // 2
            cost = _SCREEN_SHARE * len(spans) * (span + warm_up)
        if cost > frames or not pred.channels_independent or choice.same:
            return {}  # a screen would cost more than a share of what it can save
        if choice.whole:
            # The block's start: the polynomials' residuals there are the block's.
            head = ints[:, : spans[0][1]]
            polys = {
                k: self.polynomial(k).encode(head, bounds=choice.bounds) for k in _TRIED_ORDERS
            }
        else:
            polys = choice.polys
        sparse = {}
        # Zeros per channel and order: a channel none of whose polynomials is sparse needs no
        # ranking (the best-estimated one cannot be sparse either).
        zeros = {k: np.count_nonzero(p == 0, axis=1) for k, p in polys.items()}
        width = next(iter(polys.values())).shape[1]
        for c in range(ints.shape[0]):
            if all(_SPARSE[1] * int(z[c]) < _SPARSE[0] * width for z in zeros.values()):
                continue
            rows = {k: p[c] for k, p in polys.items()}
            estimates: dict[int, int] = {}
            ranked = _ranked(rows, estimates)
            row = rows[ranked[0]]
            if _SPARSE[1] * int(np.count_nonzero(row == 0)) >= _SPARSE[0] * len(row):
                sparse[c] = rows, ranked, estimates[ranked[0]]
        if not sparse:
            return {}
        warm = _span_residuals(pred, ints[list(sparse)], spans, choice.bounds, warm_up)
        clear = {}
        for i, (c, (rows, ranked, lead)) in enumerate(sparse.items()):
            code = choice.prefixes.for_channel(c, keep=True) if choice.whole else None
            mine = _estimated_bits(warm[i])
            if _OBVIOUS[1] * lead < _OBVIOUS[0] * mine:
                # The estimates alone put the polynomial that far ahead: the block predictor's
                # screen is not coded (the estimate misses what the coder gains on runs, which
                # favours the sparser polynomial all the more). Its estimate, in bytes, stands
                # in for its size in the ranking.
                _, order, screened = self._rank_polynomials(rows, mine // 8, ranked, code=code)
                clear[c] = order, screened, ranked
                continue
            if choice.whole and self._segments(pred, frames) is None:
                # The start of the block predictor's row: kept open for its whole row (and
                # the first span of its screen, :meth:`_Choice._may_win_screen`).
                mark = (choice.screen[0][1], ("mine", c)) if choice.screen else None
                theirs = len(choice.prefixes.code(("own", c), warm[i], keep=True, mark=mark))
            else:
                theirs = len(self.coder.encode(warm[i]))
            # The screen of a block too short to sample is its start: the polynomials' coded
            # screens stay open, so a whole row coded later goes on from there.
            best, order, screened = self._rank_polynomials(rows, theirs, ranked, code=code)
            if _CLEAR[1] * best < _CLEAR[0] * theirs:
                clear[c] = order, screened, ranked
        return clear

    def _measure_screened(self, choice: _Choice, c: int, screened: dict, ranked: list[int]):
        """The best polynomial of a sparse channel of a block too short to sample whose screen
        could not tell its best two apart: ``(order, coded bytes)``. The screen's best is
        coded whole first; a runner-up only if its screen size, scaled by the first's growth
        from its screen to the whole row, may still beat it within the screen's noise
        (:func:`_may_win`). Without both on the screen, the whole rows are ranked afresh."""
        orders = [k for k in ranked[:_CODED_ORDERS] if k in screened]
        if len(orders) < 2:
            rows = choice.whole_rows(c)
            _, order, data = self._rank_polynomials(
                rows, _NO_INCUMBENT, code=choice.prefixes.for_channel(c)
            )
            return order, data[order]
        orders.sort(key=lambda k: (len(screened[k]), ranked.index(k)))
        code = choice.prefixes.for_channel(c)
        first = orders[0]
        best = (code(first, choice.full(first, c)), first)
        width = choice.screen_width
        for k in orders[1:]:
            # Integer arithmetic: the runner-up's screen times the first's whole over its screen.
            scaled = len(screened[k]) * len(best[0]) // max(1, len(screened[first]))
            if _may_win(scaled, len(best[0]), width):
                data = code(k, choice.full(k, c))
                if len(data) < len(best[0]):
                    best = (data, k)
        return best[1], best[0]

    def _rank_polynomials(
        self,
        rows: dict[int, Any],
        incumbent: int,
        ranked: list[int] | None = None,
        estimates: dict[int, int] | None = None,
        code: Callable[[int, Any], bytes] | None = None,
    ) -> tuple[int, int, dict]:
        """The smallest sample size of a channel's polynomial candidates (``rows``: the
        sample's residuals by order), its order and the coded samples, against the block
        predictor's ``incumbent`` size. The candidates are ranked by an estimate and the best
        of them is measured by the coder; the next ones only when the first is within a
        factor _RANK_SPREAD of the incumbent: the estimate misses what context modelling gains
        on runs and bursts, so it misorders polynomials by a few percent (more on sparse
        channels, where the polynomials win), and one ranked behind a first that is far
        behind cannot win. Nor can, on a channel that is not sparse, one whose estimate puts
        it far behind (:func:`_far_behind`). No candidates: no size (-1). ``ranked``: the
        orders ranked, when known (``estimates``: their estimates, when known); ``code``
        codes the row of an order (by default the coder, from its fresh state)."""
        if not rows:
            return -1, -1, {}
        if code is None:
            code = self._code_plain
        estimates = {} if estimates is None else estimates
        ranked = _ranked(rows, estimates) if ranked is None else ranked
        coded = {ranked[0]: code(ranked[0], rows[ranked[0]])}
        lead = len(coded[ranked[0]])
        if _RANK_SPREAD[1] * lead < _RANK_SPREAD[0] * incumbent:
            for k in ranked[1:_CODED_ORDERS]:
                if not _far_behind(rows, ranked[0], k, lead, incumbent, estimates):
                    coded[k] = code(k, rows[k])
        best = min(len(data) for data in coded.values())
        first = next(k for k in ranked if k in coded and len(coded[k]) == best)
        return best, first, coded

    def _code_plain(self, order: int, row) -> bytes:
        """The coder's bytes of a polynomial's row (no segments)."""
        return self.coder.encode(row)

    def _is_block_predictor(self, pred, order: int, frames: int) -> bool:
        """Whether the polynomial of ``order`` is the block predictor itself (the `fast`
        profile's): the same residuals, coded with the same segments, give the same bytes."""
        poly = self.polynomial(order)
        return (
            type(pred) is type(poly)
            and pred.config == poly.config
            and self._segments(pred, frames) is None
        )

    def polynomial(self, order: int):
        """The polynomial predictor of ``order`` for channel codes, built once."""
        key = ("polynomial", order)
        pred = self._predictors.get(key)
        if pred is None:
            table = {"use": "polynomial", "order": order}
            pred = self._predictors[key] = _format_predictor(table, "<channel codes>")
        return pred

    def _segments(self, pred, n: int) -> tuple[int, ...] | None:
        """The predictor's residual segments, if this coder models segments apart."""
        return pred.segments(n) if self.coder.uses_segments else None

    # decode ------------------------------------------------------------------------------

    def tables_allocate(self, block: Block) -> bool:
        """Whether reading the block's fields allocates in proportion to the frames it
        declares (its match tables are coded by the coder, whose streams may hold any number of
        values): :func:`_guarded` then bounds the frames before :meth:`check_producible`."""
        predicted = block.method in (METHOD_PREDICTED, METHOD_QUANTISED)
        return predicted and bool(block.flags & FLAG_REPEATS)

    def check_producible(self, number: int, block: Block) -> None:
        """Refuse, before decoding or allocating anything, a block whose payload cannot
        produce the frames it declares (damage, or a bomb): see :func:`_check_raw_size`; the
        channel streams of a predicted block may hold no more samples than the coder's
        ``max_samples`` says their bytes can."""
        if block.method == METHOD_QUANTISED:
            try:
                inner, block, _ = self._quantised_parts(block)
            except IntegrityError as exc:
                raise IntegrityError(f"block {number}: {exc}") from exc
            inner.check_producible(number, block)
            return
        try:
            if block.method != METHOD_PREDICTED:
                _check_raw_size(block, self.spec.frame_bytes)
                return
            self._check_flags(block.flags)
            bound = getattr(self.coder, "max_samples", None)
            if bound is None:
                return
            view = memoryview(block.payload)
            layout = self._read_layout(view, block.frames, block.flags)
            pos = layout.pos
            for i, n in enumerate(layout.lengths):
                if pos + 4 > len(view):
                    raise IntegrityError("channel data truncated")
                (length,) = struct.unpack_from("<I", view, pos)
                most = bound(length)
                if most is not None and n > most:
                    raise IntegrityError(
                        f"stream {i} declares {n} samples but {length} bytes of "
                        f"{self.coder.name!r} data hold at most {most}; the block is corrupted"
                    )
                pos += 4 + length
        except IntegrityError as exc:
            raise IntegrityError(f"block {number}: {exc}") from exc

    def _check_flags(self, flags: int) -> None:
        if flags & ~self.known_flags:
            raise IntegrityError(
                f"unknown flags {flags:#04x}; corrupted, or written by a newer qres"
            )

    def decode(self, number: int, block: Block) -> bytes:
        """The raw bytes (frame order) of one block record, checked against its CRC."""
        self.check_producible(number, block)
        try:
            if block.method == METHOD_STORED:
                raw = block.payload
            elif block.method == METHOD_DEFLATE:
                raw = _inflate(block.payload, block.frames * self.spec.frame_bytes)
            elif block.method == METHOD_QUANTISED:
                inner, rest, grids = self._quantised_parts(block)
                q = inner._decode_predicted(rest.payload, rest.frames, True, rest.flags)
                max_error = float(self.settings.max_error)
                decoded = quantised.reconstruct(q, self.work.dtype, max_error, self.bounds, grids)
                raw = self.spec.to_bytes(decoded)
            else:
                lossless = bool(block.flags & FLAG_LOSSLESS) or not self.int_bound
                decoded = self._decode_predicted(block.payload, block.frames, lossless, block.flags)
                raw = self.spec.to_bytes(decoded)
        except IntegrityError as exc:
            raise IntegrityError(f"block {number}: {exc}") from exc
        if len(raw) != block.frames * self.spec.frame_bytes:
            raise IntegrityError(f"block {number}: decoded size is wrong; the block is corrupted")
        if block.raw_crc != zlib.crc32(raw):
            raise IntegrityError(f"block {number}: decoded data fails its checksum; corrupted")
        return raw

    def _read_layout(self, view, frames: int, flags: int) -> _Layout:
        """A predicted block's fields before its streams, checked (docs/format.md)."""
        count = self.spec.channels
        code = (flags & PREDICTOR_MASK) >> PREDICTOR_SHIFT
        per_channel = bool(flags & FLAG_CHANNEL_PREDICTORS)
        levels, channel_codes, pos = _read_predicted_head(view, code, per_channel, count)
        pred = self.block_predictor(code, levels)
        pairs = None
        if flags & FLAG_CHANNEL_PAIRS:
            pairs, pos = channels.read_table(view, pos, count)
        found: list = [None] * count
        if flags & FLAG_REPEATS:
            cross = self.version >= container.CROSS_CHANNEL_REPEATS
            for c in range(count):
                reach = c * frames if cross else 0
                found[c], pos = repeats.read_table(view, pos, frames, self.coder, reach)
            if all(f is None for f in found):
                raise IntegrityError("repeats: no channel has matches; corrupted")
            for c, f in enumerate(found):
                if f is not None and channel_codes[c] == 0 and not pred.channels_independent:
                    raise IntegrityError(f"repeats on channel {c}, whose predictor is shared")
        for c, (back, _) in enumerate(pairs or ()):
            if back and (found[c] is not None or found[c - back] is not None):
                raise IntegrityError(f"channel {c} pairs a channel with repeats; corrupted")
        side, pos = mapping.read_side(view, pos, self.work, frames, self.version)
        lengths = tuple(frames - f.copied if f else frames for f in found) + side.extra_lengths
        return _Layout(pred, channel_codes, pairs, found, side, lengths, pos)

    def _decode_predicted(self, payload: bytes, frames: int, lossless: bool, flags: int) -> Any:
        import numpy as np

        spec = self.spec
        view = memoryview(payload)
        layout = self._read_layout(view, frames, flags)
        pred, codes, found = layout.pred, layout.channel_codes, layout.repeats
        pos = layout.pos
        streams = []
        for i, n in enumerate(layout.lengths):
            own = self._channel_predictor(pred, codes[i]) if i < spec.channels else None
            if pos + 4 > len(view):
                raise IntegrityError("channel data truncated")
            (length,) = struct.unpack_from("<I", view, pos)
            pos += 4
            if pos + length > len(view):
                raise IntegrityError("channel data truncated")
            data = bytes(view[pos : pos + length])
            segs = None if own is None else self._segments(own, n)
            if segs is not None:
                streams.append(self.coder.decode(data, n, segments=segs))
            else:
                streams.append(self.coder.decode(data, n))
            pos += length
        if pos != len(view):
            raise IntegrityError("unexpected bytes after the channel data")
        rows = streams[: spec.channels]
        if layout.pairs is not None:
            channels.restore(rows, layout.pairs)
        bound = 0 if lossless else self.int_bound
        grid = None if lossless else self.grid_step
        bounds = self.bounds if grid is None else None
        plain = [c for c in range(spec.channels) if found[c] is None]
        kept = [c for c in plain if codes[c] == 0]
        if len(kept) == spec.channels == 1:
            ints = pred.decode(rows[0].reshape(1, -1), max_error=bound, bounds=bounds)  # no copy
        elif len(kept) == spec.channels:
            ints = pred.decode(np.stack(rows), max_error=bound, bounds=bounds)
        else:
            ints = np.empty((spec.channels, frames), dtype=np.int64)
            if kept:
                kept_rows = np.stack([rows[c] for c in kept])
                ints[kept] = pred.decode(kept_rows, max_error=bound, bounds=bounds)
            for c in range(spec.channels):
                own = self._channel_predictor(pred, codes[c])
                if found[c] is not None:
                    lits = own.decode(rows[c].reshape(1, -1), max_error=bound, bounds=bounds)
                    # Copies may start in the channels before (all decoded by now).
                    ints[c] = repeats.rebuild(lits[0], found[c], frames, ints[:c].ravel())
                elif codes[c]:
                    ints[c] = own.decode(rows[c], max_error=bound, bounds=bounds)
        extras = streams[spec.channels :]
        with np.errstate(all="ignore"):
            return mapping.from_integers(ints, layout.side, extras, self.work, grid)


class _Choice:
    """The state of one block's channel choice (:meth:`BlockCoder._channel_choice`): the
    sample, the polynomial candidates' residuals on it (and whole, once needed), the block
    predictor's residuals on the channels it ran on, and per channel the code, the coded
    bytes and the residuals chosen so far."""

    def __init__(self, coder: BlockCoder, pred, ints, bounds):
        count, frames = ints.shape
        self.coder, self.pred, self.ints, self.bounds = coder, pred, ints, bounds
        self.spans = _sample_spans(frames)
        # A block too short to sample is its own sample: the sizes measured on it are exact
        # (the block predictor's too when its coding uses no segments, as the sample's does
        # not), and each candidate is coded once.
        self.whole = self.spans == [(0, frames)]
        self.width = 0 if self.whole else sum(b - a for a, b in self.spans)
        #: The frames of a short block's screen of its sparse channels (its start).
        self.screen_width = frames // _SCREEN_SHARE
        self.exact = self.whole and coder._segments(pred, frames) is None
        # The polynomial candidates on the sample (none on a block that is its own sample:
        # their whole rows are computed per channel as needed, :meth:`full`).
        rows = None if self.whole or not _TRIED_ORDERS else _SpanRows(ints, self.spans)
        self.polys = {
            k: rows.residuals(coder.polynomial(k), bounds)
            for k in ([] if rows is None else _TRIED_ORDERS)
        }
        self._screened: dict[int, Any] = {}  # the candidates on the screen's spans
        self._full: dict[Any, Any] = {}  # by order (every channel) or (order, channel)
        #: The orders whose polynomial is the block predictor (same residuals, same bytes).
        self.same = {k for k in _TRIED_ORDERS if coder._is_block_predictor(pred, k, frames)}
        #: Where a block too short to sample is screened before a polynomial is coded whole:
        #: with a coder whose passes are costly (a cheap one codes it whole for less than the
        #: screen's calls cost), and not when the block predictor is a polynomial itself
        #: (`fast`): its rivals are of one family, within a screen's noise of it.
        costly = coder.coder.models_context
        self.screen = _short_spans(frames) if self.whole and costly and not self.same else []
        self.residuals: list = [None] * count  # the block predictor's
        #: The polynomials' coded screens of a block too short to sample, kept open.
        self.prefixes = _Prefixes(coder.coder)
        self.ran: list[int] = []
        self.codes = [0] * count
        self.coded: list = [None] * count
        self.rows: list = [None] * count

    def run_block_predictor(self, channels: list[int]) -> None:
        """Run the block predictor on ``channels`` (all of them unless it codes each channel
        on its own)."""
        if not channels:
            return
        ints = self.ints if len(channels) == len(self.ints) else self.ints[channels]
        ran = self.pred.encode(ints, bounds=self.bounds)
        for i, c in enumerate(channels):
            self.residuals[c] = self.rows[c] = ran[i]
        self.ran = channels

    def full(self, order: int, c: int):
        """The polynomial of ``order``'s residuals of channel ``c`` of the whole block
        (computed once; a polynomial codes each channel on its own)."""
        rows = self._full.get(order)
        if rows is not None:
            return rows[c]
        row = self._full.get((order, c))
        if row is None:
            poly = self.coder.polynomial(order)
            row = self._full[order, c] = poly.encode(self.ints[c], bounds=self.bounds)
        return row

    def whole_rows(self, c: int) -> dict[int, Any]:
        """Channel ``c``'s whole-block residuals by polynomial order, but for the orders
        that are the block predictor itself. Unscreened, every channel will need them: they
        are computed for the whole block at once."""
        orders = [k for k in _TRIED_ORDERS if k not in self.same]
        if not self.screen:
            for k in orders:
                if k not in self._full:
                    poly = self.coder.polynomial(k)
                    self._full[k] = poly.encode(self.ints, bounds=self.bounds)
        return {k: self.full(k, c) for k in orders}

    def own(self, c: int) -> bytes:
        """The block predictor's bytes of channel ``c`` (coded once; on from its screen or its
        sample's first span when they were coded first, and their start kept open for them
        when they come after)."""
        if self.coded[c] is None:
            row = self.residuals[c]
            if self.coder._segments(self.pred, len(row)) is None:
                mark = (self.screen[0][1], ("mine", c)) if self.screen else None
                self.coded[c] = self.prefixes.code(("own", c), row, mark=mark)
            else:
                self.coded[c] = self.coder._code_row(self.pred, row)
        return self.coded[c]

    def take(self, c: int, order: int, data: bytes) -> None:
        """Channel ``c`` is coded with the polynomial of ``order``, as ``data``."""
        self.coded[c] = data
        self.codes[c] = 1 + order
        self.rows[c] = self.full(order, c)

    def _may_win_screen(self, c: int) -> bool:
        """Whether a polynomial may beat the block predictor on channel ``c`` of a block too
        short to sample: both coded on the screen's spans (their in-block residuals, exact),
        the polynomials ranked and measured as on a long block's sample, within that
        sample's noise. Where even their estimates there are within that noise, the screen
        would rarely rule the polynomial out, so it is not coded: the block decides."""
        import numpy as np

        spans = self.screen
        if not self._screened:
            rows = _SpanRows(self.ints, spans)
            for k in _TRIED_ORDERS:
                if k not in self.same:
                    self._screened[k] = rows.residuals(self.coder.polynomial(k), self.bounds)
        mine = np.concatenate([self.residuals[c][a:b] for a, b in spans])
        sampled = {k: p[c] for k, p in self._screened.items()}
        estimates: dict[int, int] = {}
        ranked = _ranked(sampled, estimates)
        width = sum(b - a for a, b in spans)
        if _may_win(estimates[ranked[0]], _estimated_bits(mine), width):
            return True
        theirs = len(self.prefixes.code(("mine", c), mine))
        best, _, _ = self.coder._rank_polynomials(sampled, theirs, ranked, estimates)
        return _may_win(best, theirs, width)

    def decide(self, c: int) -> None:
        """Channel ``c``'s choice between the block predictor and its best polynomial: on
        the sample, then on the whole block where the sample cannot tell them apart."""
        import numpy as np

        mine = self.residuals[c]
        if self.exact:
            mine_sample = len(self.own(c))
        elif self.whole:
            mine_sample = len(self.coder.coder.encode(mine))
        else:
            # The sample's first span starts the row: the row may go on from there.
            sample = np.concatenate([mine[a:b] for a, b in self.spans])
            plain = self.coder._segments(self.pred, len(mine)) is None
            mark = (self.spans[0][1], ("own", c)) if plain else None
            mine_sample = len(self.prefixes.code(("sample", c), sample, mark=mark))
        if len(self.same) == len(_TRIED_ORDERS):
            return  # every polynomial is the block predictor itself
        if self.screen and not self._may_win_screen(c):
            return  # the block predictor's
        # A polynomial that is the block predictor itself (fast's) is the incumbent already.
        if self.whole:
            rows = self.whole_rows(c)
        else:
            rows = {k: p[c] for k, p in self.polys.items() if k not in self.same}
        # The whole rows go on from their coded screens or from their samples' first spans.
        code = self.prefixes.for_channel(c, mark=None if self.whole else self.spans[0][1])
        best, order, sample_bytes = self.coder._rank_polynomials(rows, mine_sample, code=code)
        if not sample_bytes or not _may_win(best, mine_sample, self.width):
            return  # the block predictor's
        data = (
            sample_bytes[order]
            if self.whole
            else self.prefixes.code((order, c), self.full(order, c))
        )
        measure = self.whole or _may_win(mine_sample, best, self.width)
        if not measure:
            # The block predictor is ruled out: a runner-up the sample cannot tell from the
            # best polynomial is measured whole instead (two whole passes at most).
            for k, other in sample_bytes.items():
                if k != order and _may_win(len(other), best, self.width):
                    alt = self.prefixes.code((k, c), self.full(k, c))
                    if len(alt) < len(data):
                        order, data = k, alt
        if measure and len(self.own(c)) <= len(data):
            return  # measured whole: the block predictor's is no larger
        self.take(c, order, data)


class _Prefixes:
    """Coder streams kept open after a row's prefix (by key: order and channel), so that the
    whole row is coded on from there rather than from the start again: the same bytes, the
    prefix coded once. A row is continued only from a stream of exactly its first samples
    (checked), and once."""

    def __init__(self, coder):
        self.coder = coder
        self.open: dict[Any, tuple[Any, Any]] = {}

    def code(self, key, row, keep: bool = False, mark: tuple[int, Any] | None = None) -> bytes:
        """The coder's bytes of ``row``, continued from an open stream of its prefix under
        ``key`` if there is one; ``keep``: leave the stream of ``row`` open under ``key``;
        ``mark``: ``(at, other)``, also leave the stream of its first ``at`` samples open
        under ``other`` (a sample whose first span starts a row the block may code whole)."""
        import numpy as np

        stream, done = None, 0
        found = self.open.pop(key, None)
        if found is not None:
            n = len(found[1])
            if n < len(row) and np.array_equal(row[:n], found[1]):
                stream, done = found[0], n
        if mark is not None and done < mark[0] < len(row):
            at, other = mark
            if other not in self.open or len(self.open[other][1]) < at:
                if stream is None:
                    stream = self.coder.encode_open(row[:at])[1]
                else:
                    self.coder.resume(stream, row[done:at])
                if stream is not None:
                    done = at
                    self.open[other] = self.coder.fork(stream), row[:at]
        if stream is not None:
            data = self.coder.resume(stream, row[done:])
        elif keep:
            data, stream = self.coder.encode_open(row)
        else:
            return self.coder.encode(row)
        if keep and stream is not None:
            self.open[key] = stream, row
        return data

    def for_channel(
        self, c: int, keep: bool = False, mark: int | None = None
    ) -> Callable[[int, Any], bytes]:
        """A ``code(order, row)`` for channel ``c``'s polynomial rows (:meth:`code`); ``mark``:
        the rows are samples whose first ``mark`` samples start the whole rows."""
        if mark is None:
            return lambda order, row: self.code((order, c), row, keep)
        return lambda order, row: self.code(("sample", order, c), row, keep, (mark, (order, c)))


@attrs.frozen
class _Layout:
    """A predicted block's fields before its streams: the block predictor, the channel
    predictor codes, channel pairs, match tables, the mapping's side record, the length of
    every stream and where the streams start."""

    pred: Any
    channel_codes: bytes
    pairs: list | None
    repeats: list
    side: Any
    lengths: tuple[int, ...]
    pos: int


def _ranked(rows: dict[int, Any], estimates: dict[int, int] | None = None) -> list[int]:
    """The keys of candidate residual ``rows`` by their estimated size, smallest first (the
    smaller key on a tie); ``estimates`` receives the estimates by key."""
    found = {k: _estimated_bits(row) for k, row in rows.items()}
    if estimates is not None:
        estimates.update(found)
    return sorted(rows, key=lambda k: (found[k], k))


def _far_behind(rows, first: int, k: int, coded: int, incumbent: int, estimates) -> bool:
    """Whether candidate ``k`` cannot win though the first-ranked one (coded to ``coded``
    bytes) is within _RANK_SPREAD of the ``incumbent``: the first's coded size scaled by
    the ratio of their estimates is beyond that spread too. On residuals that are not
    sparse the estimate is off by a few percent at most, the same for candidates of one
    channel; on sparse ones (a fraction _SPARSE of zeros or more, in either candidate) it
    misses what the coder gains on runs, so those are never ruled out this way; nor on
    samples under _MIN_SPAN frames, where the coder's learning costs more than the estimate
    can tell."""
    import numpy as np

    if len(rows[first]) < _MIN_SPAN:
        return False
    for key in (first, k):
        row = rows[key]
        if _SPARSE[1] * int(np.count_nonzero(row == 0)) >= _SPARSE[0] * len(row):
            return False
        if key not in estimates:
            estimates[key] = _estimated_bits(row)
    predicted = coded * estimates[k]
    return _RANK_SPREAD[1] * predicted >= _RANK_SPREAD[0] * incumbent * max(1, estimates[first])


def _decisive(screened: dict[int, bytes], orders: list[int]) -> int | None:
    """The one of ``orders`` whose coded screen (``screened``: bytes by order) beats every
    other's by the factor _CLEAR, or None (not all of them screened, or none that far ahead).
    The screen is the start of the block, not a sample spread over it, so the same margin as
    the block predictor's screen tells two polynomials apart on it."""
    if not all(k in screened for k in orders):
        return None
    sizes = sorted((len(screened[k]), i, k) for i, k in enumerate(orders))
    lead = sizes[0]
    if all(_CLEAR[1] * lead[0] < _CLEAR[0] * size for size, _, _ in sizes[1:]):
        return lead[2]
    return None


def _may_win(candidate: int, incumbent: int, width: int) -> bool:
    """Whether a candidate whose sample codes to ``candidate`` bytes may beat, on the whole
    block, an incumbent whose sample codes to ``incumbent`` bytes, on a sample of ``width``
    frames (0: the sample is the whole block, so the sizes are exact). Integer arithmetic: a
    choice decides bytes, so it must be the same on every machine."""
    if not width:
        return candidate < incumbent
    root = math.isqrt(width)
    return 2 * candidate * root < incumbent * (2 * root + _NOISE_HALVES)


def _estimated_bits(residuals) -> int:
    """A cheap size estimate of coded residuals, enough to rank candidates (the coder then
    measures the best one): the order-0 entropy of the signed bit-length classes the coder
    models, plus the bits below each leading one. Integer arithmetic only (a ranking decides
    bytes, so it must be the same on every machine); compiled in ``qres.codec._estimate``
    (the plain-Python reference is in tests/test_channel_ranking.py)."""
    import numpy as np

    from qres.codec._estimate import estimated_bits

    return estimated_bits(np.ascontiguousarray(residuals, dtype=np.int64))


def _span_residuals(poly, ints, spans: list[tuple[int, int]], bounds, context=None) -> Any:
    """A polynomial predictor's residuals over each span of ``ints``, concatenated per
    channel, as the predictor makes them inside the whole block: each span is predicted with
    up to _SPAN_CONTEXT samples before it (a polynomial of order k looks k samples back), so
    a sampled candidate pays no restart at each span that the whole block would not (a
    restart costs whole raw samples, which biased the ranking towards the block predictor).
    Spans of equal extent go through the predictor in one call, as rows of their own: a
    polynomial codes every row apart, so this is the same as one call per span."""
    return _SpanRows(ints, spans, context).residuals(poly, bounds)


class _SpanRows:
    """The spans of a block cut out once (:func:`_span_residuals`) for every predictor that
    runs on them: spans of equal extent stacked as rows of one array per extent."""

    def __init__(self, ints, spans: list[tuple[int, int]], context=None):
        import numpy as np

        self.spans = spans
        self.channels = ints.shape[0]
        groups: dict[int, list[tuple[int, int, int]]] = {}
        frames = ints.shape[1]
        context = _SPAN_CONTEXT if context is None else context
        for a, b in spans:
            # The first span reaches past its end instead, so that it has the others' extent.
            size = min(frames, b - a + context)
            lo = max(0, min(a - context, frames - size))
            groups.setdefault(size, []).append((lo, a, b))
        self.groups = [
            (
                size,
                members,
                np.stack([ints[:, lo : lo + size] for lo, _, _ in members]).reshape(
                    len(members) * self.channels, size
                ),
            )
            for size, members in groups.items()
        ]

    def residuals(self, poly, bounds) -> Any:
        """``poly``'s residuals over the spans, concatenated per channel."""
        import numpy as np

        pieces: dict[tuple[int, int], Any] = {}
        for size, members, rows in self.groups:
            coded = poly.encode(rows, bounds=bounds).reshape(len(members), self.channels, size)
            for (lo, a, b), piece in zip(members, coded, strict=True):
                pieces[a, b] = piece[:, a - lo : b - lo]
        parts = [pieces[a, b] for a, b in self.spans]
        return np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]


def _short_spans(frames: int) -> list[tuple[int, int]]:
    """Where a block too short to sample (:func:`_sample_spans`) but at least _MIN_SPAN
    frames long is screened: a quarter of it in _SHORT_SPANS spans spread evenly over it
    (none for a shorter block, whose whole coding costs less than a screen's calls)."""
    if frames < _MIN_SPAN:
        return []
    span = frames // (_SCREEN_SHARE * _SHORT_SPANS)
    step = frames // _SHORT_SPANS
    return [(a, a + span) for a in range(0, step * _SHORT_SPANS, step)]


def _stages_size(stages) -> int:
    """Bytes of one choice of the block stages: their fields and the coded channels."""
    return len(stages[0]) + sum(len(c) for c in stages[2])


def _sample_spans(frames: int) -> list[tuple[int, int]]:
    """Where the channel predictor candidates are ranked: spans of ``frames / 64`` frames
    (at least _MIN_SPAN, at most _SAMPLE_SPAN) one every _SAMPLE_EVERY spans, an eighth of
    the block spread evenly over all of it, but no more than _SAMPLE_MOST frames (a sample
    of that size ranks candidates as well as a larger one: the coder's bytes per sample
    settle within a few thousand samples); the whole of a block too short to sample."""
    span = min(_SAMPLE_SPAN, max(_MIN_SPAN, frames // 64))
    if frames <= span * _SAMPLE_EVERY:
        return [(0, frames)]
    step = span * _SAMPLE_EVERY
    most = max(1, _SAMPLE_MOST // span)
    if -(-frames // step) > most:
        step = frames // most  # a long block: fewer spans, spread evenly over all of it
    return [(a, min(a + span, frames)) for a in range(0, frames, step)][:most]


#: Most bytes deflate can expand one byte into (zlib's technical note: 1032:1), plus slack
#: for the stream's header and final block.
DEFLATE_MAX_RATIO = 1032
DEFLATE_SLACK = 64


def _check_raw_size(block: Block, frame_bytes: int) -> None:
    """Refuse a stored or deflated block whose declared size its payload cannot produce:
    stored bytes are the samples; deflate expands at most 1032:1."""
    size = block.frames * frame_bytes
    if block.method == METHOD_STORED:
        if len(block.payload) != size:
            raise IntegrityError(
                f"declares {size} bytes but stores {len(block.payload)}; the block is corrupted"
            )
    elif block.method == METHOD_DEFLATE:
        most = DEFLATE_MAX_RATIO * len(block.payload) + DEFLATE_SLACK
        if size > most:
            raise IntegrityError(
                f"declares {size} bytes but {len(block.payload)} deflate bytes can hold at most "
                f"{most}; the block is corrupted"
            )


def _quantised_head(found) -> bytes:
    """The first bytes of a quantised payload of grid indices ``found``: the type code, and
    for grids on the channels' lattices (a third item) the flag and the recorded grids."""
    if len(found) > 2:
        return bytes([found[0] | quantised.LATTICE_FLAG]) + quantised.grids_bytes(found[2])
    return bytes([found[0]])


def _within(block, decoded, bound: float) -> bool:
    import numpy as np

    if block.dtype.kind in "iu":  # exactly: float64 rounds int64 samples past 2**53
        wide = object if block.dtype.itemsize == 8 else np.int64
        gap = block.astype(wide) - decoded.astype(wide)
        return bool(np.all(np.abs(gap) <= int(bound)))
    a = block.astype(np.float64)
    b = decoded.astype(np.float64)
    same = (a == b) | (np.isnan(a) & np.isnan(b))
    with np.errstate(invalid="ignore"):  # inf - inf is NaN: such samples must be ``same``
        return bool(np.all(same | (np.abs(a - b) <= bound)))


def _inflate(payload: bytes, expected: int) -> bytes:
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(payload, expected + 1)
    except zlib.error as exc:
        raise IntegrityError(f"deflate data is corrupted ({exc})") from exc
    if len(raw) != expected or not inflater.eof:
        raise IntegrityError("deflate data has the wrong length")
    return raw


# -- streams -----------------------------------------------------------------------------------


def _in_flight(threads: int) -> int:
    """The most blocks :func:`_ordered_map` holds at once: one without threads, else
    ``2 * threads`` (read and waiting, being coded, or coded and waiting to be written)."""
    return 1 if threads <= 1 else 2 * threads


def _ordered_map(fn: Callable, items: Iterator, threads: int) -> Iterator:
    """``map`` over a thread pool with at most ``2 * threads`` items in flight, in order."""
    if threads <= 1:
        for item in items:
            yield fn(item)
        return
    with ThreadPoolExecutor(max_workers=threads) as pool:
        window: deque = deque()
        for item in items:
            window.append(pool.submit(fn, item))
            if len(window) >= 2 * threads:
                yield window.popleft().result()
        while window:
            yield window.popleft().result()


def _per_thread(
    factory: Callable[[], BlockCoder], first: BlockCoder | None = None
) -> Callable[[], BlockCoder]:
    """One BlockCoder per thread; ``first``, already built, serves the calling thread."""
    local = threading.local()
    local.coder = first

    def get() -> BlockCoder:
        coder = getattr(local, "coder", None)
        if coder is None:
            coder = local.coder = factory()
        return coder

    return get


def _import_before_the_clock() -> None:
    """Import what coding needs before timing starts: a process pays numpy's import once,
    and counting it would report a fraction of the codec's speed on small files."""
    import numpy  # noqa: F401

    from qres.codec import _estimate, _mapping_kernels, _repeats, scaled  # noqa: F401

    _keep_freed_memory()


#: glibc's mallopt parameters and the values the codec sets: the
#: largest mmap threshold glibc's own heuristic ever adopts on 64-bit, and twice that as the
#: trim threshold, as the heuristic pairs them.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD = 32 << 20
_TRIM_THRESHOLD = 2 * _MMAP_THRESHOLD
_ALLOCATOR_ENV = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_")
_allocator_set = False


def _keep_freed_memory() -> None:
    """Keep the memory a block's arrays free for the next block (glibc only, once per
    process, unless the user tuned glibc's allocator through its environment variables).

    A block's candidates are numpy arrays of a few hundred KB to a few MB, made and dropped
    by the dozen. glibc gives memory back to the system as soon as the free space at the
    top of its heap exceeds twice the largest block it recently unmapped (and maps anything
    larger than that block apart), so each of those arrays is mapped, touched page by page
    and given back again: a page fault per 4 KiB, a fifth of the codec's time on a 100 KB
    multichannel file. The thresholds set here are the ones glibc's heuristic moves to by
    itself once a 32 MiB array has been freed; only their start changes."""
    global _allocator_set
    if _allocator_set:
        return
    _allocator_set = True
    import os
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return
    if any(name in os.environ for name in _ALLOCATOR_ENV):
        return
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)
    mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)


def compress(
    source: SampleSource,
    out: BinaryIO,
    settings: CodecSettings,
    threads: int = 1,
    progress: Callable[[int], None] | None = None,
) -> Stats:
    """Compress ``source`` into a container on ``out``; return what was done."""
    _import_before_the_clock()
    spec = source.spec
    version = container.written_version(spec.dtype, bool(settings.max_error))
    # Builds the plugins and loads their native kernels before the clock starts.
    first = BlockCoder(settings, spec, version=version)
    started = time.perf_counter()
    # Weights equal to the predictor's defaults are implied by its settings: store none.
    initial = first.predictor.initial_weights()
    default = first.predictor.default_weights()
    same = len(initial) == len(default) and all(
        int(a) == int(b) for a, b in zip(initial, default, strict=True)
    )
    weights = () if same else tuple(int(w) for w in initial)
    header = Header(
        dtype=spec.dtype,
        channels=spec.channels,
        layout=spec.layout,
        byte_order=spec.byte_order,
        block_frames=settings.block_frames,
        frames=source.frames,
        codec=settings.to_header(),
        prefix=source.prefix,
        weights=weights,
        version=version,
    )
    writer = container.Writer(out, header)
    coders = _per_thread(lambda: BlockCoder(settings, spec, weights, version), first)
    methods = {name: 0 for name in container.METHOD_NAMES.values()}
    raws: deque = deque()

    def job(raw: bytes) -> tuple[Block, bytes]:
        return coders().encode(raw)

    def blocks() -> Iterator[bytes]:
        for raw in source.blocks(settings.block_frames):
            raws.append(raw)
            yield raw

    raw_bytes = len(source.prefix)
    for block, restored in _ordered_map(job, blocks(), threads):
        raw = raws.popleft()
        writer.add(block, restored)
        methods[container.METHOD_NAMES[block.method]] += 1
        raw_bytes += len(raw)
        if progress is not None:
            progress(len(raw))
    trailer = writer.finish(source.tail)
    return Stats(
        raw_bytes=raw_bytes + len(source.tail),
        packed_bytes=writer.offset,
        frames=trailer.total_frames,
        blocks=len(writer.offsets),
        methods=methods,
        seconds=time.perf_counter() - started,
    )


def settings_from_header(header: Header) -> CodecSettings:
    """The codec settings recorded in a container header (checked, never trusted)."""
    codec = header.codec
    predictor, coder = codec.get("predictor"), codec.get("coder")
    max_error = codec.get("max_error", 0)
    if not isinstance(predictor, dict) or not isinstance(coder, dict):
        raise IntegrityError("header: codec settings are missing; corrupted or foreign file")
    if not isinstance(max_error, (int, float)) or isinstance(max_error, bool) or max_error < 0:
        raise IntegrityError("header: bad max_error; corrupted")
    return CodecSettings(predictor, coder, header.block_frames, max_error)


def open_decoder(header: Header) -> Callable[[], BlockCoder]:
    """A per-thread factory of block decoders for the stream described by ``header``."""
    spec = StreamSpec(header.dtype, header.channels, header.layout, header.byte_order)
    settings = settings_from_header(header)
    try:
        first = BlockCoder(settings, spec, header.weights, header.version)
    except ProfileError as exc:
        # The file needs a plugin (or a plugin version) that is not installed here: a plugin
        # loading problem, not damage and not a setting the user can change.
        raise PluginError(
            f"the file's codec cannot be built here ({exc}); install the plugin it needs"
        ) from exc
    return _per_thread(lambda: BlockCoder(settings, spec, header.weights, header.version), first)


def _guarded(
    reader: container.Reader, max_output: int | None, threads: int, coder: BlockCoder
) -> Iterator:
    """The reader's blocks, each checked *before* anything is decoded or allocated for it:
    that its payload can produce what it declares (else damage), then against the output
    limit and the memory it would take to decode."""
    header = reader.header
    frame_bytes = header.channels * header.itemsize
    # Packed samples are held widened too (int24 in int32) while decoding.
    work_itemsize = header.itemsize + coder.work.itemsize * coder.spec.packed
    total = len(header.prefix)
    for number, block in reader.blocks():
        # A match table is decoded by the block's coder into arrays that grow with the frames
        # the block declares: such a block is checked for damage only once the limits below
        # have bounded its frames; any other block's damage is found first, allocating nothing.
        tables_allocate = coder.tables_allocate(block)
        if not tables_allocate:
            coder.check_producible(number, block)
        size = block.frames * frame_bytes
        total += size
        if max_output is not None and total > max_output:
            raise limits.OutputLimit(
                f"block {number} would take the output to {limits.format_size(total)}, past "
                f"--max-output {limits.format_size(max_output)}; raise --max-output (or give "
                "'none') if you trust this file",
                limit=max_output,
            )
        need = limits.block_memory(
            block.frames, header.channels, work_itemsize, len(block.payload)
        ) * _in_flight(threads)
        free = limits.memory_available()
        if free is not None and need > limits.MEMORY_SHARE * free:
            raise limits.OutputLimit(
                f"block {number} declares {limits.format_size(size)}; decoding it needs about "
                f"{limits.format_size(need)} of memory and {limits.format_size(free)} is "
                "available; if you trust this file, decode it on a larger machine"
            )
        if tables_allocate:
            coder.check_producible(number, block)
        yield number, block


def decompress(
    stream: BinaryIO,
    sink: Callable[[int, bytes], None] | None,
    threads: int = 1,
    progress: Callable[[int], None] | None = None,
    on_header: Callable[[Header], None] | None = None,
    max_output: int | None = None,
) -> tuple[Header, Stats, bytes]:
    """Decode every block of the container on ``stream`` and pass ``(first_frame, raw)`` to
    ``sink`` in order (``None`` only verifies); ``on_header`` sees the header first. Checks
    every block, the index, the trailer and the whole-stream SHA-256, and raises
    :class:`IntegrityError` naming the first damage. Returns the header, the statistics and
    the stream's trailing bytes (kept verbatim). ``max_output`` bounds the bytes produced:
    checked against the header's declared frames before anything is written, then against
    each block's declared size before it is decoded (:class:`limits.OutputLimit`)."""
    import hashlib

    _import_before_the_clock()
    reader = container.Reader(stream)
    header = reader.header
    if max_output is not None and header.frames is not None:
        declared = len(header.prefix) + header.frames * header.channels * header.itemsize
        if declared > max_output:
            raise limits.OutputLimit(
                f"the file declares {limits.format_size(declared)} of output, more than "
                f"--max-output {limits.format_size(max_output)}; raise --max-output (or give "
                "'none') if you trust this file",
                limit=max_output,
            )
    decoders = open_decoder(header)  # builds the plugins and loads their native kernels
    started = time.perf_counter()
    if on_header is not None:
        on_header(header)
    sha = hashlib.sha256(header.prefix)
    methods = {name: 0 for name in container.METHOD_NAMES.values()}
    first_frame = 0
    output = len(header.prefix)

    def job(item):
        number, block = item
        return decoders().decode(number, block), block.method

    for raw, method in _ordered_map(
        job, _guarded(reader, max_output, threads, decoders()), threads
    ):
        sha.update(raw)
        methods[container.METHOD_NAMES[method]] += 1
        if sink is not None:
            sink(first_frame, raw)
        first_frame += len(raw) // (header.channels * header.itemsize)
        output += len(raw)
        if progress is not None:
            progress(len(raw))
    trailer, index = reader.trailer, reader.index
    sha.update(index.tail)
    output += len(index.tail)
    if sha.digest() != trailer.sha256:
        raise IntegrityError("stream checksum mismatch; the file is corrupted")
    stats = Stats(
        raw_bytes=output,
        packed_bytes=reader.offset,
        frames=trailer.total_frames,
        blocks=len(index.offsets),
        methods=methods,
        seconds=time.perf_counter() - started,
    )
    return header, stats, index.tail
