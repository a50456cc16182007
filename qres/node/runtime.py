"""The node process: ingest a stream into segments, learn, gossip, aggregate, obey bans.

One asyncio loop runs four tasks: the source (samples into the current segment), the round
clock, the receiver (verifies every packet as it arrives) and, if configured, the HTTP API.
Rounds follow the wall clock: round ``r`` is ``floor(time * time_scale / round_seconds)``, so
nodes agree on round numbers without talking. A node wakes on its regime's schedule (the
simulator's energy model) and sleeps through the rounds between wakes, doing no learning work
in them. In each round it is awake a node trains on its recent
samples (:mod:`qres.learning.task`), signs its update (:mod:`qres.trust.packet`) and sends it
to its peers; at the next round boundary it judges the round with the simulator's defence
(:mod:`qres.node.defence`: the receiver's screen, the profile's aggregator with reputations,
robust outliers, coordination, audits that really ask the sender, :mod:`qres.node.audits`) and
bans on attributable evidence only (a bad signed packet, an equivocation, a failed audit).
Everything a round changes is one SQLite transaction; the packet signed for a round is stored
before it is sent, so a restart never signs a second update for the same round.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from pathlib import Path
from typing import Any

import attrs

from qres.fixed.q16 import sat_add
from qres.kernel.errors import QresError
from qres.node import bans
from qres.node.checks import Checks, fresh_counts
from qres.node.lora_wire import MAGIC as LORA_MAGIC

#: Q16.16 one (reputations are stored as integers of this unit).
ONE = 1 << 16
#: Seconds between looks at the ban notices received.
BAN_POLL_SECONDS = 0.1
#: Seconds between looks, within a round, for a full training window (in a round opened
#: without one) and for peers that connected after this round's update went out.
POLL_SECONDS = 0.25
#: Rounds before a packet's whose packets a check's request lists as held: a node wakes every
#: round in Calm, so its round step mostly names its previous round's packets.
HELD_ROUNDS = 2
#: Segments' worth of samples an asleep node holds before its full sample memory wakes it to
#: store them (a wake it pays for).
SLEEP_SEGMENTS = 16


@attrs.frozen
class RunOptions:
    """How ``qres node run`` was asked to run."""

    source: str = "-"  # a file path, or "-" for stdin
    speed: float = 1.0  # replay speed of a file source, in multiples of its sample rate
    time_scale: float = 1.0  # simulated seconds per wall-clock second (rounds and wakes)
    rounds: int = 0  # stop after this many rounds (0: run until stopped)
    exit_on_eof: bool = False  # stop when the source ends
    data_dir: str = ""  # overrides [node] data_dir
    listen: str = ""  # overrides the TCP transport's listen address
    http: str = ""  # overrides [node] http
    attack: str = ""  # an attack plugin: this node forges its updates (tests, benchmarks)


class Node:
    """One running node (build it, then ``await run()``; :meth:`stop` ends it gracefully)."""

    def __init__(self, profile, options: RunOptions, identity=None):
        from qres.codec.samples import StreamSpec
        from qres.kernel.config import build_config
        from qres.node.segments import SegmentStore
        from qres.node.settings import NodeSettings
        from qres.node.state import State
        from qres.robust.reputation import Ledger
        from qres.swarm.engine import settings_from_profile
        from qres.swarm.settings import reputation_rules

        self.profile = profile
        self.options = options
        table = profile.data.get("node", {})
        plain = {k: v for k, v in table.items() if k != "transport"}
        self.settings = build_config(NodeSettings, plain, profile.where("node"))
        self.swarm = settings_from_profile(profile)
        dtype = self.settings.dtype or profile.data.get("codec", {}).get("dtype", "int16")
        self.spec = StreamSpec(dtype, self.settings.channels)
        if self.spec.packed:
            # Sources hand samples over as numpy arrays, which have no 3-byte type.
            from qres.kernel.errors import ProfileError

            raise ProfileError(
                f"{profile.path}: node.dtype: a node's source cannot be {dtype} (packed "
                "samples); give the source as int32"
            )
        self.identity = identity or self._load_identity()
        folder = Path(options.data_dir or self.settings.data_dir)
        self.folder = folder
        self.state = State(folder / "state.sqlite")
        self._check_owner()
        self.segments = SegmentStore(folder / "segments", self.state, self.spec, str(profile.path))
        self.recovered = self.segments.recover()
        self.transport = self._make_transport()
        self.aggregator = (
            profile.build("swarm", "aggregator")
            if "aggregator" in profile.data.get("swarm", {})
            else None
        )
        self.attack = None
        if options.attack:
            from qres.kernel import plugins
            from qres.kernel.config import Location

            self.attack = plugins.create("attack", {"use": options.attack}, Location("--attack"))
        self._last_rows: list = []  # the updates accepted last round (what an attack sees)
        # per DID: (evidence kind, signed bytes) whose fault any peer can check (docs/node.md)
        self._evidence: dict[str, tuple[int, bytes]] = {}
        self._new_bans: list[tuple] = []  # (did, round, issuer, kind, evidence) to persist
        self._sent = self.state.sent()  # round -> (our packet, our audit answer)
        self._first: dict[tuple[str, int], bytes] = {}  # (DID, round) -> first packet seen
        self._audits: dict[tuple[str, int], Any] = {}  # audits asked, not yet answered
        self._answered: set[tuple[str, int]] = set()  # (peer, round) audits we answered
        self._via: dict[str, str] = {}  # DID -> the peer whose notice brought its evidence
        self.ledger_slots: dict[str, int] = {}
        slots = max(2, self._max_peers())
        self.ledger = Ledger(slots, reputation_rules(self.swarm, slots))
        from qres.node.defence import Defence

        self.defence = Defence(self.swarm, self.ledger, self.aggregator)
        self.lora = None  # the adapter hierarchy, when the profile has a [lora] table
        if "lora" in profile.data:
            from qres.node.lora import LoraNode

            self.lora = LoraNode(profile, self.swarm, self.settings.domain)
        self._check_kind()
        self._load_state()
        self.energy = self._make_energy()
        self._moved = (0, 0)  # transport bytes sent, delivered at the last round's close
        self._stop = asyncio.Event()
        self._awake = asyncio.Event()
        self._awake.set()
        self._awake_rounds = 0  # rounds closed awake (audit patience counts these)
        self._buffer: list = []  # (samples, arrival time) not in a segment yet
        self.recent = None
        self.stats = {
            "samples_in": 0,
            "bytes_in": 0,
            "bytes_out": 0,
            "updates_sent": 0,
            "updates_received": 0,
            "rejected": {},
            "duplicates": 0,  # second copies of a packet: counted, never a fault
            "bans_sent": 0,
            "bans_received": 0,
            "bans_rejected": {},
            "audits": {"asked": 0, "passed": 0, "failed": 0, "unanswered": 0, "answered": 0},
            "checks": fresh_counts(),
            "rounds": 0,
            "asleep_rounds": 0,
            "regime": "calm",
            "error": None,
        }
        self._inbox: dict[int, dict[str, Any]] = {}  # round -> sender DID -> update array
        self.checks = Checks(self.settings.check_rate, self.stats["checks"])
        self.started = time.time()
        self.http_port: int | None = None

    # --- construction -------------------------------------------------------------------

    def _load_identity(self):
        from qres.trust.identity import default_key_path, load_identity

        return load_identity(self.settings.key or default_key_path())

    def _check_owner(self) -> None:
        owner = self.state.get_meta("did")
        if owner is None:
            self.state.set_meta("did", self.identity.did)
        elif owner != self.identity.did:
            raise QresError(
                f"{self.state.path}: belongs to {owner}, not to this key ({self.identity.did}); "
                "give each node its own data folder"
            )

    def _check_kind(self) -> None:
        """A state holds one kind of model: the swarm's shared one or an adapter hierarchy;
        a node of the other kind refuses it rather than mix them."""
        kind = "lora" if self.lora is not None else "shared"
        stored = self.state.get_meta("model_kind")
        if stored is None:
            # a state from before adapter hierarchies holds the shared model
            had = self.state.load_model() is not None or self.state.sent()
            stored = "shared" if had else kind
            self.state.set_meta("model_kind", stored)
        if stored != kind:
            what = {"lora": "an adapter hierarchy ([lora])", "shared": "the swarm's shared model"}
            raise QresError(
                f"{self.state.path}: holds {what[stored]}, but the profile asks for "
                f"{what[kind]}; give this node the profile it learned with, or its own data folder"
            )

    def _make_transport(self):
        from qres.kernel import plugins

        table = dict(self.profile.data.get("node", {}).get("transport", {"use": "tcp"}))
        if self.options.listen and table.get("use") == "tcp":
            table["listen"] = self.options.listen
        where = self.profile.where("node", "transport")
        transport = plugins.create("transport", table, where)
        if not hasattr(transport, "asend"):
            raise QresError(
                f"{where}: transport {transport.name!r} does not reach other machines; "
                "use tcp or mqtt for a node"
            )
        transport._identity = self.identity
        return transport

    def _make_energy(self):
        """The simulator's energy model for this one node, priced by the profile's hardware
        plugin (all powers 0 without a ``[hardware]`` table: only the schedule is kept)."""
        from qres.swarm.energy import EnergyModel

        hardware = self.profile.build("hardware") if "hardware" in self.profile.data else None
        return EnergyModel(1, self.swarm, hardware)

    def _spend_energy(self, r: int) -> None:
        """Pay round ``r`` as the simulator does: its wakes (:meth:`_schedule`), the radio
        airtime of the bytes it moved while awake, sleep, harvest."""
        import numpy as np

        wakes = np.array([self._wakes_now])
        stats = self.transport.stats
        sent, got = stats.sent_bytes, stats.delivered_bytes
        tx, rx = sent - self._moved[0], got - self._moved[1]
        self._moved = (sent, got)
        self.energy.spend(wakes, np.array([float(tx)]), np.array([float(rx)]))

    def energy_status(self) -> dict:
        """The energy figures of ``/v1/status`` (joules, seconds, fraction of capacity)."""
        e = self.energy
        return {
            "pool_j": float(e.pool[0]),
            "level": float(e.level()[0]),
            "spent_j": float(e.spent_j[0]),
            "radio_on_s": float(e.radio_on_s[0]),
            "elapsed_s": float(e.elapsed_s[0]),
            "wakes": int(self.stats.get("wakes", 0)),
            "hardware": e.hardware.name if e.hardware is not None else None,
        }

    def _max_peers(self) -> int:
        return int(getattr(self.transport.config, "max_peers", 256))

    def _slot(self, did: str) -> int | None:
        slot = self.ledger_slots.get(did)
        if slot is None and len(self.ledger_slots) < self.ledger.rep.shape[0]:
            slot = self.ledger_slots[did] = len(self.ledger_slots)
        return slot

    def _load_state(self) -> None:
        from qres.learning import task

        model = self.state.load_model()
        if model is None or model[1].shape[0] != self.swarm.order:
            self.round, self.weights = -1, task.genesis_weights(self.swarm.order)
        else:
            self.round, self.weights = model
        self._load_scale()
        for peer in self.state.peers():
            slot = self._slot(peer["did"])
            if slot is None:
                continue
            self.ledger.rep[slot] = peer["reputation"]
            self.ledger.banned_at[slot] = peer["banned_at"]
            self.ledger.effective_at[slot] = peer["banned_at"]
            if peer["banned_at"] >= 0:
                self.transport.ban(peer["did"])
        self._load_chain()
        if self.lora is not None:
            stored = self.state.load_lora()
            if stored is not None:
                self.lora.load(stored[1], str(self.state.path))

    def _load_chain(self) -> None:
        """The open round-step chain (:mod:`qres.node.steps`). Without one (a new state, or
        one written before round steps) it starts at the last packet stored, whose audit
        answer opens its base, else at the genesis model; the weights are set to its start
        (whatever was applied after that packet cannot be proven, so it is dropped)."""
        from qres.learning import task
        from qres.node import audits
        from qres.node.steps import Chain
        from qres.trust.packet import PacketError, decode, decode_audit

        d = self.swarm.order
        row = self.state.load_chain()
        chain = Chain.load(row, d) if row is not None else None
        if chain is not None:
            self.chain = chain
            if self.state.load_model() is None:  # signed, never closed: the base it committed to
                self.weights = chain.start.copy()
            return
        chain = Chain.genesis(task.genesis_weights(d))
        for r in sorted(self._sent, reverse=True):
            packet, answer = self._sent[r]
            try:
                if len(decode(packet).update) != d:
                    continue
                opened = decode_audit(audits.decode_answer(answer, legacy=True).response)
            except PacketError:
                continue
            chain = Chain.after(packet, opened.blinding, opened.weights)
            break
        self.chain = chain
        self.weights = chain.start.copy()
        with self.state.transaction():
            self.state.save_chain(*chain.stored())
            self.state.save_weights(self.weights)

    # --- the clock ----------------------------------------------------------------------

    @property
    def round_wall_seconds(self) -> float:
        """Wall-clock seconds per round."""
        return self.swarm.round_seconds / self.options.time_scale

    def round_at(self, t: float) -> int:
        """The round number at wall-clock time ``t``."""
        return math.floor(t / self.round_wall_seconds)

    # --- running ------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the node to finish its segment, persist and exit."""
        self._stop.set()

    async def run(self) -> dict:
        """Run until stopped (or the round / EOF limits); returns the final status."""
        await self.transport.start()
        tasks, runner = [], None
        try:
            tasks = [
                asyncio.ensure_future(self._ingest()),
                asyncio.ensure_future(self._rounds()),
                asyncio.ensure_future(self._receive()),
                asyncio.ensure_future(self._ban_notices()),
            ]
            for task in tasks:
                task.add_done_callback(self._task_done)
            http = self.options.http or self.settings.http
            if http:
                from qres.node.http import start_http

                runner = await start_http(self, http)
            await self._stop.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._store_all()
            if runner is not None:
                await runner.cleanup()
            await self.transport.aclose()
            status = self.status()
            self.state.close()
        if self._failure is not None:
            raise self._failure
        return status

    _failure: BaseException | None = None
    _chain_step: tuple | None = None  # the round's sub-step, stored with the round

    def _task_done(self, task: asyncio.Task) -> None:
        # A task that fails (an unreadable source, a full disk) stops the node with its error.
        if not task.cancelled() and task.exception() is not None and self._failure is None:
            self._failure = task.exception()
            self.stop()

    # --- ingest -------------------------------------------------------------------------

    async def _ingest(self) -> None:
        from qres.node.sources import open_source

        start = self.state.samples_stored()
        self._next_sample = start
        self._segment_start = time.time()
        source = open_source(self.options.source, self.spec, self.settings, self.options, start)
        async for chunk in source:
            self._take(chunk)
        if self.options.exit_on_eof:
            self._store_all()
            self.stop()

    def _take(self, chunk) -> None:
        import numpy as np

        s = self.settings
        self.stats["samples_in"] += len(chunk)
        self.stats["bytes_in"] += chunk.nbytes
        span = self.swarm.order + self.swarm.window
        tail = chunk if self.recent is None else np.concatenate([self.recent, chunk])
        self.recent = tail[-span:]
        if self.scale is None:
            self._calibrate(chunk)
        self._buffer.append((chunk, time.time()))
        if self._slept is None:
            self._store_due()
        elif self._buffered() >= SLEEP_SEGMENTS * s.segment_samples:
            self._wakes_now += 1  # the full sample memory wakes the CPU to store it
            self.stats["wakes"] = self.stats.get("wakes", 0) + 1
            self._store_due()

    def _buffered(self) -> int:
        return sum(len(b) for b, _ in self._buffer)

    def _store_due(self) -> None:
        """Close the segments that are due: every full one (``segment_samples``), then the
        one being filled if it is older than ``segment_seconds``. Compressing and writing is
        CPU work: an asleep node records its samples and stores them when it wakes."""
        s = self.settings
        while self._buffered() >= s.segment_samples:
            self._flush_segment(s.segment_samples)
        if self._buffer and time.time() - self._segment_start >= s.segment_seconds:
            self._flush_segment()

    def _store_all(self) -> None:
        """Store every sample received (at a stop), in segments of at most
        ``segment_samples``."""
        while self._buffer:
            self._flush_segment(self.settings.segment_samples)

    def _flush_segment(self, limit: int | None = None) -> None:
        """Write the oldest ``limit`` buffered samples (all without a limit) as one segment,
        timed from the segment's start to the arrival of its last sample."""
        import numpy as np

        if not self._buffer:
            return
        taken, size, end = [], 0, self._segment_start
        while self._buffer and (limit is None or size < limit):
            chunk, arrived = self._buffer.pop(0)
            if limit is not None and size + len(chunk) > limit:
                keep = limit - size
                self._buffer.insert(0, (chunk[keep:], arrived))
                chunk = chunk[:keep]
            taken.append(chunk)
            size += len(chunk)
            end = arrived
        samples = np.concatenate(taken)
        seg = self.segments.write(self._next_sample, samples, self._segment_start, end)
        self.stats["bytes_out"] += seg.bytes
        self._next_sample += len(samples)
        self._segment_start = end

    # --- learning rounds ----------------------------------------------------------------

    async def _rounds(self) -> None:
        closed = 0
        while True:
            r = self.round_at(time.time())
            if r > self.round:
                if self._pending is not None or self._slept is not None:
                    if self._pending is not None:
                        self._close_round()
                    else:
                        self._close_sleep()
                    closed += 1
                    if self.options.rounds and closed >= self.options.rounds:
                        self.stop()
                        return
                await self._begin_round(r)
            elif self._waiting_for_data() and self._windows() is not None:
                await self._open_round(r)  # the window filled during the round: take part
            else:
                await self._catch_up()
            wait = (r + 1) * self.round_wall_seconds - time.time()
            await asyncio.sleep(max(0.005, min(wait, POLL_SECONDS)))

    _pending = None  # (round, own update, windows, storm, error before it) of the open round

    def _waiting_for_data(self) -> bool:
        return self._pending is not None and self._pending[1] is None

    # --- the wake schedule --------------------------------------------------------------

    _slept: int | None = None  # the round this node is sleeping through
    _on_grid = False
    _wakes_now = 0  # wakes in the current round

    async def _begin_round(self, r: int) -> None:
        """Wake for round ``r`` if the schedule says so, else sleep through it: no training,
        no packets, no aggregation, nothing received is looked at until the next wake."""
        self._wakes_now = self._schedule(r)
        if self._wakes_now == 0:
            self.round, self._slept = r, r
            self._awake.clear()
            return
        self._awake.set()
        self._store_due()  # what the sensor recorded while this node slept
        await self._open_round(r)

    def _schedule(self, r: int) -> int:
        """Wakes in round ``r`` on the regime's schedule (the simulator's ``EnergyModel``,
        which also lets a node without the energy for one wake sleep). A node trusts itself
        fully, so its interval is the regime's base. The first wake is put on the clock's grid
        of that interval, so nodes with one schedule wake in the same rounds without talking."""
        import numpy as np

        from qres.swarm.regimes import NAMES

        e = self.energy
        regime = np.array([NAMES.index(self.stats["regime"])])
        if not self._on_grid:
            interval = float(e.intervals(regime, np.ones(1))[0])
            e.next_wake[:] = math.ceil(r * self.swarm.round_seconds / interval) * interval
            self._on_grid = True
        wakes = int(e.wakes(r, regime, np.ones(1), np.ones(1, bool))[0])
        self.stats["wakes"] = self.stats.get("wakes", 0) + wakes
        return wakes

    @property
    def asleep(self) -> bool:
        """True between wakes (a round slept through)."""
        return self._slept is not None

    def seconds_to_wake(self) -> int:
        """Whole wall-clock seconds until the round of this node's next wake (at least 1)."""
        T = self.swarm.round_seconds
        due = math.floor(float(self.energy.next_wake[0]) / T) * T / self.options.time_scale
        return max(1, math.ceil(due - time.time()))

    def _close_sleep(self) -> None:
        """End a round slept through: pay its sleep and log it (no error, nothing received)."""
        r, self._slept = self._slept, None
        self.stats["asleep_rounds"] += 1
        self._spend_energy(r)
        self._save_round(r, None, 0, 0)

    def _windows(self):
        """The window of this round: the newest ``order + window`` samples in the task's
        integers (the stream's kept :class:`~qres.learning.task.Scale`), or None before the
        scale is known or the samples are there."""
        span = self.swarm.order + self.swarm.window
        if self.scale is None or self.recent is None or len(self.recent) < span:
            return None
        return self.scale.apply(self.recent[-span:])[None, :]

    # --- the stream's scale -------------------------------------------------------------

    scale = None  # qres.learning.task.Scale once known
    span_range = None  # the peak-to-peak of the first window (entropy's unit), once known

    def _load_scale(self) -> None:
        """The profile's ``sample_range``, else the scale this node calibrated before (kept
        in the state), else none yet (:meth:`_calibrate`); and the entropy's range."""
        import json

        from qres.learning.task import Scale

        self._calibration: list = []
        kept = self.state.get_meta("scale")
        if self.settings.sample_range:
            self.scale = Scale(*(float(v) for v in self.settings.sample_range))
        elif kept is not None:
            self.scale = Scale(*json.loads(kept))
        span_range = self.state.get_meta("span_range")
        self.span_range = None if span_range is None else float(span_range)

    def _calibrate(self, chunk) -> None:
        """Fit the stream's scale on its first ``calibration_samples`` samples, the rule the
        simulator applies to a whole recording (a flat start is dropped and fitted again),
        and keep it in the state so a restart maps samples the same way."""
        import json

        import numpy as np

        from qres.learning.task import Scale

        self._calibration.append(chunk)
        have = sum(len(c) for c in self._calibration)
        if have < self.settings.calibration_samples:
            return
        samples = np.concatenate(self._calibration)[: self.settings.calibration_samples]
        self._calibration = []
        scale = Scale.fit(samples)
        if scale is not None:
            self.scale = scale
            self.state.set_meta("scale", json.dumps([scale.lo, scale.hi]))

    def _observe(self, windows) -> float:
        """The round's error before learning (the model held, on the round's window) and the
        regime it drives, by the simulator's rule
        (:meth:`qres.swarm.regimes.RegimeTracker.observe_errors`)."""
        import numpy as np

        from qres.learning import task
        from qres.swarm.regimes import NAMES, RegimeTracker, window_range

        error = task.prediction_error(self.weights, windows, self.swarm.order)
        if self.span_range is None:
            self.span_range = float(window_range(windows)[0])
            self.state.set_meta("span_range", repr(self.span_range))
        if not hasattr(self, "_regimes"):
            self._regimes = RegimeTracker(1, self.swarm)
        low = self.energy.low()
        self._regimes.observe_errors(np.array([0]), error, np.array([self.span_range]), low)
        self.stats["regime"] = NAMES[int(self._regimes.regime[0])]
        return float(error[0])

    @property
    def _keep_rounds(self) -> int:
        """Rounds a packet stays acceptable (before and after the current one)."""
        return max(2, self.swarm.max_age)

    async def _open_round(self, r: int) -> None:
        """Train on the recent window and send the signed update for round ``r`` (or, after a
        restart within ``r``, the very packet already signed for it)."""
        import numpy as np

        from qres.node import audits
        from qres.trust.packet import decode

        self.round = r
        if self.lora is not None:
            return await self._open_lora_round(r)
        stored = self._sent.get(r)
        if stored is not None:
            # a node applies what it committed to: the update its packet carries
            answer = audits.decode_answer(stored[1], legacy=True)
            windows = np.asarray(answer.window, np.int32)[None, :]
            error = self._observe(windows)
            own = np.asarray(decode(stored[0]).update, np.int32)
            self._pending = (r, own, windows, answer.storm, error)
            packet = stored[0]
        else:
            windows = self._windows()
            if windows is None:
                self._pending, self._packet = (r, None, None, False, None), None
                return
            # the base first (a packet left unclosed settled, an attack's choice of base), then
            # as the simulator: the regime, then training
            self._settle_chain(r)
            self._choose_base(r)
            error = self._observe(windows)
            storm = self.stats["regime"] == "storm"
            packet, own = self._sign_round(r, windows, storm)
            self._pending = (r, own, windows, storm, error)
        self._packet = packet
        sent = await self.transport.abroadcast(packet)
        self._reached = set(self.transport.connected()) if sent else set()
        self.stats["updates_sent"] += 1 if sent else 0

    _packet: bytes | None = None  # this round's signed update

    async def _open_lora_round(self, r: int) -> None:
        """A LoRA node's round (:mod:`qres.node.lora`): code the window with its hierarchy,
        learn, sign the change of the round's shared layer and send it (after a restart
        within ``r``, the very packet already signed)."""
        from qres.node import lora_wire

        stored = self._sent.get(r)
        if stored is not None:
            packet = stored[0]
            self._pending = (r, lora_wire.decode(packet), None, False, None)
        else:
            windows = self._windows()
            if windows is None:
                self._pending, self._packet = (r, None, None, False, None), None
                return
            role, change, bits, error = self.lora.learn(r, windows)
            if self.attack is not None:
                change = self._forge_lora(r, change)
            packet = self.lora.packet(self.identity, r, role, change, bits, os.urandom(16))
            keep = self._keep_rounds + 2
            lora = (r, self.lora.dump())
            self.state.save_sent(r, packet, b"", keep, lora=lora)
            self._sent[r] = (packet, b"")
            for old in [k for k in self._sent if k < r - keep]:
                del self._sent[old]
            self._pending = (r, lora_wire.decode(packet), windows, False, error)
        self._packet = packet
        sent = await self.transport.abroadcast(packet)
        self._reached = set(self.transport.connected()) if sent else set()
        self.stats["updates_sent"] += 1 if sent else 0

    def _forge_lora(self, r: int, change):
        """A Byzantine LoRA node's forged change, from its honest one and the peers' changes
        of the last layer of that size it aggregated (what its attack sees)."""
        import numpy as np

        seen = [x for x in self._last_rows if x.size == change.size]
        honest = np.stack([change, *seen]).astype(np.int32)
        forged = self.attack.forge(
            honest, 1, rng=self._rng(r, 0), context=self._attack_context(r, change)
        )[0]
        return np.asarray(forged, np.int32)

    _reached: set = frozenset()  # the peers it went to

    async def _catch_up(self) -> None:
        """Send this round's update to every connected peer it has not reached yet (at the
        round's start, and to peers that connect later in the round: a restarted node or a
        healed partition still hears it)."""
        if self._packet is None:
            return
        new = [d for d in self.transport.connected() if d not in self._reached]
        first = not self._reached
        for did in new:
            if await self.transport.asend(did, self._packet):
                self._reached.add(did)
        if first and self._reached:
            self.stats["updates_sent"] += 1

    def _sign_round(self, r: int, windows, storm: bool):
        """Train, sign the packet (committed, its round step's digest inside, with its audit
        answer kept) and store both before anything is sent; returns ``(packet bytes, the
        update it carries)``: the update this node applies at the round's close."""
        import numpy as np

        from qres.node import audits
        from qres.trust import audit

        ts = audits.train_settings(self.swarm, storm)
        nonce = os.urandom(16)
        claim = audit.honest_claim(self.weights, windows[0], nonce, ts)
        if self.attack is not None:
            claim = self._forge(r, claim)
        step, evidence = self.chain.close(self.identity.public_key, r)
        packet, response = audit.prepare(
            self.identity, r, nonce, self.weights.tolist(), claim, step=step
        )
        answer = audits.make_answer(self.identity, response.encode(), windows[0], storm, evidence)
        data, ans = packet.encode(), answer.encode()
        from qres.node.steps import Chain

        chain = Chain.after(data, response.blinding, self.weights)
        keep = self._keep_rounds + 2
        self.state.save_sent(r, data, ans, keep, weights=self.weights, chain=chain.stored())
        self.chain = chain
        self._sent[r] = (data, ans)
        for old in [k for k in self._sent if k < r - keep]:
            del self._sent[old]
        return data, np.asarray(claim.update, np.int32)

    def _settle_chain(self, r: int) -> None:
        """A packet whose round was never closed here (a restart after it, or a state from
        before round steps): its own update is applied alone, as a round that took nothing,
        so the chain names it and the weights are what replaying the chain gives."""
        import numpy as np

        from qres.trust.packet import decode

        if self.chain.previous is None or self.chain.steps:
            return
        previous = decode(self.chain.previous)
        if previous.round >= r:
            return
        own = np.asarray(previous.update, np.int32)
        self.weights = sat_add(self.chain.start, own)
        self.chain.add(previous.round, own, [], None)

    def _attack_context(self, r: int, own=None):
        import numpy as np

        from qres.kinds.attack import AttackContext

        return AttackContext(
            round=r,
            nodes=np.zeros(1, np.int64),
            own=None if own is None else np.asarray(own, np.int32)[None, :],
            reputations=np.ones(1),
            audit_rate=self.swarm.audit_rate,
            check_rate=self.settings.check_rate,  # public: every receiver's checks
        )

    def _rng(self, r: int, salt: int):
        import numpy as np

        key = int.from_bytes(self.identity.public_key[:8], "little")
        return np.random.default_rng([r, key, salt])

    def _choose_base(self, r: int) -> None:
        """A Byzantine node's attack may pick the model it trains from and commits to
        (:meth:`qres.kinds.attack.Attack.choose_base`): base poisoning, which its round step
        gives away to any auditor."""
        import numpy as np

        if self.attack is None:
            return
        chosen = self.attack.choose_base(
            self.weights[None, :].copy(), rng=self._rng(r, 1), context=self._attack_context(r)
        )
        if chosen is not None:
            self.weights = np.asarray(chosen, np.int32).reshape(-1)[: self.swarm.order].copy()

    def _forge(self, r: int, claim):
        """A Byzantine node's forged update, from its own honest one and the updates it took
        last round (what its attack sees), with the honest claims."""
        import numpy as np

        from qres.trust import audit

        update = np.asarray(claim.update, np.int32)
        honest = np.stack([update, *self._last_rows]).astype(np.int32)
        forged = self.attack.forge(
            honest, 1, rng=self._rng(r, 0), context=self._attack_context(r, update)
        )[0]
        return audit.Claim(
            tuple(int(v) for v in forged), claim.residual_error, claim.accuracy_delta
        )

    async def _receive(self) -> None:
        from qres.node import audits, trimmed
        from qres.trust.packet import Verifier

        keep = self._keep_rounds
        # Packets up to `keep` rounds ahead wait in the inbox for their round: a clock ahead
        # of ours is not a fault (ours may be the one behind), and never evidence.
        verifier = Verifier(
            allow_unknown=True, dimension=self.swarm.order, window=keep, future=keep
        )
        while True:
            await self._awake.wait()  # asleep: what arrives waits in the transport's queue
            message = await self.transport.recv(None)
            magic = bytes(message.payload[:4])
            if self.lora is not None or magic == LORA_MAGIC:
                self._take_lora(message)
                continue
            if magic == audits.REQUEST_MAGIC:
                await self._answer_audit(message)
                continue
            if magic == audits.ANSWER_MAGIC:
                self._take_answer(bytes(message.payload))
                continue
            if magic == trimmed.MAGIC:
                self._take_trimmed(bytes(message.payload))
                continue
            verifier.advance(max(self.round, 0))
            for did, slot in self.ledger_slots.items():
                if self.ledger.banned_at[slot] >= 0:
                    verifier.ban(did)
            self._take_update(verifier, message)

    def _is_banned(self, did: str) -> bool:
        slot = self.ledger_slots.get(did)
        return slot is not None and self.ledger.banned_at[slot] >= 0

    def _reject(self, name: str) -> None:
        self.stats["rejected"][name] = self.stats["rejected"].get(name, 0) + 1

    def _take_update(self, verifier, message) -> None:
        from qres.node import bans
        from qres.trust.packet import Reason

        payload = bytes(message.payload)
        verdict = verifier.check(payload)
        self.stats["updates_received"] += 1
        if verdict.reason is Reason.REPLAY and verdict.packet is not None:
            return self._second_copy(verdict.packet, payload)
        if not verdict.ok:
            self._reject(verdict.reason.name)
            if verdict.reason in bans.TRANSFERABLE and verdict.packet is not None:
                # signed and provably wrong by its own bytes: a fault, banned at round close
                self._fault(verdict.packet.did, (bans.EVIDENCE_PACKET, payload))
            return
        packet = verdict.packet
        if packet.did != message.src:
            self._reject("RELAYED")
        if (packet.did, packet.round) in self._first:
            return self._second_copy(packet, payload)
        self._first[(packet.did, packet.round)] = payload
        self._inbox.setdefault(packet.round, {})[packet.did] = (packet, payload)
        self._ask_check(packet, payload)

    def _ask_check(self, packet, payload: bytes) -> None:
        """Ask the sender of a packet just taken for what its check needs (its audit
        answer), unless the packet's round is already closed here or it is not drawn."""
        from qres.node.audits import AuditRequest
        from qres.node.checks import PendingCheck

        slot = self._slot(packet.did)
        if slot is None or packet.round < self.round or not self.checks.draw():
            return
        check = PendingCheck(slot, packet.did, packet.round, packet, payload, self._awake_rounds)
        request = AuditRequest(packet.round, packet.nonce, self._held(packet.round)).encode()
        self.checks.ask(check, len(request))
        asyncio.ensure_future(self.transport.asend(packet.did, request))

    def _take_lora(self, message) -> None:
        """Check a ``QRLU`` packet as it arrives (:mod:`qres.node.lora_wire`) and keep it for
        its round. The layer of a round and its size are public: a signed packet that names
        another layer or carries another size is the signer's fault, as is a second,
        different packet for one round (an equivocation)."""
        from qres.lora import exchange
        from qres.node import lora_wire
        from qres.trust.packet import PacketError

        payload = bytes(message.payload)
        if self.lora is None:
            return self._reject("LORA_PACKET")  # a LoRA peer in a swarm of shared models
        if payload[:4] != lora_wire.MAGIC:
            return self._reject("NOT_LORA")  # a peer without [lora] (or an audit it asks)
        self.stats["updates_received"] += 1
        try:
            packet = lora_wire.decode(payload)
        except PacketError as exc:
            return self._reject(exc.reason.name)
        if packet.sender == self.identity.public_key:
            return self._reject("SELF")
        if not packet.verify_signature():  # before the sender takes a ledger slot
            return self._reject("BAD_SIGNATURE")
        slot = self._slot(packet.did)
        if slot is not None and self.ledger.banned_at[slot] >= 0:
            return self._reject("BANNED_SENDER")
        now, keep = max(self.round, 0), self._keep_rounds
        if packet.round > now + keep:
            return self._reject("FUTURE_ROUND")
        if packet.round < now - keep:
            return self._reject("STALE_ROUND")
        if packet.did != message.src:
            self._reject("RELAYED")
        if packet.role != exchange.role_of_round(packet.round):
            self._reject("WRONG_LAYER")
            return self._fault(packet.did, (bans.EVIDENCE_LORA_PACKET, payload))
        if len(packet.change) != exchange.size(self.lora.personal, packet.role):
            self._reject("BAD_DIMENSION")
            return self._fault(packet.did, (bans.EVIDENCE_LORA_PACKET, payload))
        first = self._first.get((packet.did, packet.round))
        if first is not None:
            if first == payload:
                self.stats["duplicates"] += 1
                return
            self._reject("EQUIVOCATION")
            self._inbox.get(packet.round, {}).pop(packet.did, None)
            evidence = (bans.EVIDENCE_LORA_EQUIVOCATION, bans.pair(first, payload))
            return self._fault(packet.did, evidence)
        self._first[(packet.did, packet.round)] = payload
        self._inbox.setdefault(packet.round, {})[packet.did] = (packet, payload)

    def _second_copy(self, packet, payload: bytes) -> None:
        """A second packet of one sender for one round. The same bytes again are a duplicate
        (a peer resending to one that joined late, a restarted peer resending what it signed,
        at-least-once delivery): counted in ``duplicates``, never a fault or a refusal. Two
        different signed packets are an equivocation, even under one nonce: an attributable
        fault with both packets as evidence."""
        from qres.node import bans

        first = self._first.get((packet.did, packet.round))
        if first is None or first == payload:
            # (None: the first copy's record was pruned with its round; the verifier still
            # knew its nonce, so these are the same bytes or the round is long closed)
            self.stats["duplicates"] += 1
            return
        if bans.equivocation(first, payload, packet.sender, self.swarm.order):
            self._reject("EQUIVOCATION")
            evidence = (bans.EVIDENCE_EQUIVOCATION, bans.pair(first, payload))
            self._fault(packet.did, evidence)
            self._inbox.get(packet.round, {}).pop(packet.did, None)
        else:
            self.stats["duplicates"] += 1

    # --- audits -------------------------------------------------------------------------

    async def _answer_audit(self, message) -> None:
        """Answer a peer's audit of one of our packets (once per peer and round)."""
        from qres.node import audits
        from qres.trust.packet import PacketError, decode

        try:
            request = audits.decode_request(message.payload)
        except PacketError as exc:
            return self._reject("AUDIT_" + exc.reason.name)
        stored = self._sent.get(request.round)
        key = (str(message.src), request.round)
        if stored is None or key in self._answered or decode(stored[0]).nonce != request.nonce:
            return self._reject("AUDIT_UNKNOWN")
        self._answered.add(key)
        reply = stored[1]
        if request.held:  # leave out the packets the requester holds (qres.node.trimmed)
            from qres.node.trimmed import trim

            try:
                reply = trim(stored[1], set(request.held))
            except PacketError:  # an answer stored before round steps: sent whole
                reply = stored[1]
        if await self.transport.asend(message.src, reply):
            self.stats["audits"]["answered"] += 1

    def _ask_audits(self, r: int, picks: list) -> None:
        """Ask the senders of the picked packets of round ``r`` for their audit answers."""
        from qres.node.audits import AuditRequest
        from qres.node.defence import PendingAudit

        for did, slot, (packet, raw) in picks:
            asked = self._awake_rounds
            self._audits[(did, r)] = PendingAudit(slot, did, r, packet, raw, asked)
            request = AuditRequest(r, packet.nonce, self._held(r)).encode()
            asyncio.ensure_future(self.transport.asend(did, request))
            self.stats["audits"]["asked"] += 1

    def _held(self, r: int) -> list[bytes]:
        """Hash prefixes of the packets this node holds that a round step ending at a packet
        of round ``r`` most likely names: the peers' and its own of the ``HELD_ROUNDS``
        rounds before ``r`` (an answer may leave those out, :mod:`qres.node.trimmed`)."""
        from qres.node.audits import HELD_PREFIX_BYTES
        from qres.trust.packet import packet_hash

        rounds = range(r - HELD_ROUNDS, r)
        held = [p for (_, q), p in self._first.items() if q in rounds]
        held += [self._sent[q][0] for q in rounds if q in self._sent]
        return sorted({packet_hash(p)[:HELD_PREFIX_BYTES] for p in held})

    def _take_trimmed(self, payload: bytes) -> None:
        """A trimmed answer: put back the packets it names (this node holds them) and take
        the answer its sender signed; one that cannot be rebuilt proves nothing."""
        from qres.node.trimmed import expand
        from qres.trust.packet import PacketError, packet_hash

        held = {packet_hash(p): p for p in self._first.values()}
        held.update((packet_hash(p), p) for p, _ in self._sent.values())
        try:
            full = expand(payload, held.get)
        except PacketError as exc:
            return self._reject("AUDIT_" + exc.reason.name)
        self._take_answer(full, wire=len(payload))

    def _take_answer(self, payload: bytes, wire: int | None = None) -> None:
        """Judge an audit answer against the packet we asked about (``wire``: the bytes it
        took on the wire, when it came trimmed)."""
        from qres.node import audits, bans
        from qres.trust.packet import PacketError, decode_audit

        try:
            answer = audits.decode_answer(payload)
            response = decode_audit(answer.response)
        except PacketError as exc:
            return self._reject("AUDIT_" + exc.reason.name)
        size = len(payload) if wire is None else wire
        check = self.checks.answered(answer.did, response.round, response.nonce, size)
        if check is not None:
            return self._judge_check(check, answer, payload)
        pending = self._audits.get((answer.did, response.round))
        if pending is None or pending.packet.nonce != response.nonce:
            if self._is_banned(answer.did):  # a check dropped at the ban: nothing to settle
                return None
            return self._reject("AUDIT_UNASKED")
        del self._audits[(answer.did, response.round)]
        result = audits.judge(pending.packet, answer, self.swarm, self.step_rule)
        if result.ok:
            self.stats["audits"]["passed"] += 1
            self.defence.passed(pending.slot)
        elif audits.is_fault(result):
            self.stats["audits"]["failed"] += 1
            self._reject(bans.audit_fault_name(result))
            self._fault(answer.did, (bans.EVIDENCE_AUDIT, bans.pair(pending.raw, payload)))
        else:  # an answer that proves nothing (e.g. a broken inner signature): unanswered
            self._expire_audit(pending)

    def _judge_check(self, check, answer, payload: bytes) -> None:
        """A check's verdict: a passed packet may be aggregated; a failed one is dropped and
        its sender faulted (and banned at once, the notice carrying packet and answer); an
        answer that proves nothing leaves the packet unused, as an unanswered check."""
        from qres.node import audits, bans

        result = audits.judge(check.packet, answer, self.swarm, self.step_rule)
        if result.ok:
            self.checks.verdict(check, True)
            self.defence.passed(check.slot)
        elif audits.is_fault(result):
            self.checks.verdict(check, False)
            self._reject(bans.audit_fault_name(result))
            self._inbox.get(check.round, {}).pop(check.did, None)
            self._fault(check.did, (bans.EVIDENCE_AUDIT, bans.pair(check.raw, payload)))
            self._apply_bans(max(self.round, 0))
        else:
            self.checks.counts["unanswered"] += 1

    @property
    def step_rule(self):
        """How this node replays a peer's round step: the swarm's rule (its own) and the
        public genesis model (:class:`qres.node.audits.StepRule`)."""
        from qres.learning import task
        from qres.node.audits import StepRule

        return StepRule(self.defence.rule, task.genesis_weights(self.swarm.order))

    def _expire_audit(self, pending) -> None:
        self.stats["audits"]["unanswered"] += 1
        if self.ledger.banned_at[pending.slot] < 0:
            self.defence.unanswered(pending.slot)

    def _expire_audits(self) -> None:
        from qres.node.defence import AUDIT_PATIENCE

        self.checks.expire(self._awake_rounds, AUDIT_PATIENCE)  # never a fault

        for key, pending in list(self._audits.items()):
            if pending.asked <= self._awake_rounds - AUDIT_PATIENCE:
                del self._audits[key]
                self._expire_audit(pending)

    def _fault(self, did: str, evidence: tuple[int, bytes] | None) -> None:
        """Record an attributable fault of ``did`` (banned at the next ``ban_low``) and keep
        the evidence that lets every peer check it."""
        slot = self._slot(did)
        if slot is None:
            return
        if evidence is not None:
            self._evidence.setdefault(did, evidence)
        self.ledger.record_fault([slot])  # attributable: bannable at the next ban_low

    # --- ban notices --------------------------------------------------------------------

    async def _ban_notices(self) -> None:
        """Check the ban notices peers send; a notice whose evidence holds is a fault this
        node has observed itself (the issuer's word alone counts for nothing)."""
        while True:
            await asyncio.sleep(BAN_POLL_SECONDS)
            await self._awake.wait()  # asleep: notices wait for the next wake
            notices = self.transport.bans_received()
            for message in notices:
                self._take_notice(message.payload)
            if notices:
                self._apply_bans(max(self.round, 0))

    def _take_notice(self, data: bytes) -> None:
        from qres.node.bans import check_evidence, decode_notice
        from qres.trust.packet import PacketError

        self.stats["bans_received"] += 1
        try:
            notice = decode_notice(data)
        except PacketError as exc:
            return self._refuse_notice(exc.reason.name)
        if notice.banned == self.identity.public_key:
            return self._refuse_notice("SELF")
        if self._slot(notice.banned_did) is None:
            return self._refuse_notice("NO_ROOM")
        if self._is_banned(notice.banned_did):
            return  # already banned here: nothing to check
        sizes = None if self.lora is None else self.lora.sizes()
        fault = check_evidence(notice, self.swarm, self.step_rule, sizes)
        if fault is None:
            return self._refuse_notice("NO_EVIDENCE")
        self._via.setdefault(notice.banned_did, notice.issuer_did)
        self._fault(notice.banned_did, (notice.kind, notice.evidence))

    def _refuse_notice(self, why: str) -> None:
        self.stats["bans_rejected"][why] = self.stats["bans_rejected"].get(why, 0) + 1

    def _apply_bans(self, r: int, persist: bool = True) -> None:
        """Ban the peers the ledger's rules now ban; drop them, tell the others."""
        banned = self.ledger.ban_low(r)
        slots = {s: d for d, s in self.ledger_slots.items()}
        for slot in banned.tolist():
            did = slots[slot]
            self.transport.ban(did)
            # its packets still being checked are never used now; a second failed check of
            # a peer already banned would be counted twice
            self.checks.drop(did)
            kind, evidence = self._evidence.get(did, (0, b""))
            via = self._via.get(did, self.identity.did)
            self._new_bans.append((did, r, via, kind, evidence))
            if evidence:
                asyncio.ensure_future(self._publish_ban(did, r, kind, evidence))
        if persist and len(banned):
            with self.state.transaction():
                self._persist_bans()

    def _persist_bans(self) -> None:
        for did, r, issuer, kind, evidence in self._new_bans:
            slot = self.ledger_slots[did]
            self.state.save_peer(did, int(self.ledger.rep[slot]), int(self.ledger.banned_at[slot]))
            self.state.save_ban(did, r, issuer, evidence, kind)
        self._new_bans = []

    async def _publish_ban(self, did: str, r: int, kind: int, evidence: bytes) -> None:
        from qres.node.bans import make_notice
        from qres.trust.identity import public_key_of

        notice = make_notice(self.identity, public_key_of(did), r, evidence, kind)
        if await self.transport.abroadcast_ban(notice.encode()):
            self.stats["bans_sent"] += 1

    def _close_round(self) -> None:
        """Judge round ``_pending``: screen, aggregate, score, audit, ban, persist."""
        import numpy as np

        pending = self._pending
        if pending is None:
            pending = (self.round, None, None, False, None)
        r, own, windows, storm, error = pending
        received = self._inbox.pop(r, {})
        for old in [k for k in self._inbox if k < r]:
            del self._inbox[old]
        for key in [k for k in self._first if k[1] < r - self._keep_rounds]:
            del self._first[key]
        self._answered = {k for k in self._answered if k[1] >= r - self._keep_rounds}
        if self.lora is not None:
            return self._close_lora_round(r, own, error, received)
        dids = sorted(d for d in received if self._slot(d) is not None)
        dids = [d for d in dids if not self._is_banned(d)]
        # a packet drawn for a check is used only once its check has passed
        dids = self.checks.close(r, dids)
        slots = np.array([self.ledger_slots[d] for d in dids], np.int64)
        packets = [received[d] for d in dids]
        d = self.swarm.order
        rows = np.array([p.update for p, _ in packets], np.int32).reshape(-1, d)
        self._last_rows = list(rows)
        accepted = 0
        self._chain_step = None
        if own is not None:
            kept, gain = self.defence.screen(self.weights, windows, rows)
            kept &= self.defence.counted(slots)  # unproven peers move nothing
            accepted = int(kept.sum())
            update = self.defence.combine(own, rows[kept], slots[kept])
            taken = [packets[i][1] for i in np.flatnonzero(kept).tolist()]
            weights = self.defence.weights(slots[kept])
            self._chain_step = self.chain.add(r, own, taken, weights)
            verdicts = self.defence.judge(own, rows, slots, gain, storm)
            self.weights = sat_add(self.weights, update)
            audit = [i for i in verdicts.audit if not self.checks.is_drawn(dids[i], r)]
            self._ask_audits(r, [(dids[i], int(slots[i]), packets[i]) for i in audit])
        self.checks.forget(r)
        self._awake_rounds += 1
        self._expire_audits()
        self._apply_bans(r, persist=False)
        self._spend_energy(r)
        self._save_round(r, error, len(received), accepted)
        self._pending, self._packet = None, None

    def _close_lora_round(self, r: int, own, error, received: dict) -> None:
        """Close a LoRA node's round: aggregate the round's layer from this node's change and
        its peers' (unbanned, of its group), screen and take it, ban, persist."""
        import numpy as np

        packets = []
        for did in sorted(received):
            slot = self._slot(did)
            if slot is not None and self.ledger.banned_at[slot] < 0:
                packets.append(received[did][0])
        accepted = 0
        if own is not None:
            group = self.lora.group(own.role, packets)
            rows, _ = self.lora.close(r, own.role, own.change, self.identity.public_key, group)
            accepted = rows - 1
            self._last_rows = [np.asarray(p.change, np.int32) for p in group]
        self._awake_rounds += 1
        self._apply_bans(r, persist=False)
        self._spend_energy(r)
        self._save_round(r, error, len(received), accepted)
        self._pending, self._packet = None, None

    def _save_round(self, r: int, error: float | None, received: int, accepted: int) -> None:
        self.stats["rounds"] += 1
        if error is not None:
            self.stats["error"] = error
        peers = len(self.transport.connected())
        with self.state.transaction():
            self.state.save_model(r, self.weights)
            if self._chain_step is not None:
                self.state.add_chain_step(*self._chain_step)
                self._chain_step = None
            for did, slot in self.ledger_slots.items():
                self.state.save_peer(
                    did, int(self.ledger.rep[slot]), int(self.ledger.banned_at[slot])
                )
            self._persist_bans()
            if self.lora is not None:
                self.state.save_lora(r, self.lora.dump())
            self.state.log_round(
                r,
                -1.0 if error is None else error,
                self.stats["regime"],
                received,
                accepted,
                peers,
            )

    # --- status -------------------------------------------------------------------------

    def status(self) -> dict:
        """What ``qres node status`` and ``GET /v1/status`` report."""
        return status_of(self.state, self.stats, self)


def status_of(state, stats: dict | None = None, node: Node | None = None) -> dict:
    """The status JSON of a node's state (and of the live node, when given)."""
    model = state.load_model()
    segments = state.segments()
    samples = sum(s.samples for s in segments)
    stored = sum(s.bytes for s in segments)
    peers = state.peers()
    out = {
        "did": state.get_meta("did"),
        "round": model[0] if model else None,
        "segments": len(segments),
        "samples_stored": samples,
        "bytes_stored": stored,
        "peers": [
            {
                "did": p["did"],
                "reputation": p["reputation"] / ONE,
                "banned": p["banned_at"] >= 0,
            }
            for p in peers
        ],
        "banned": sorted(p["did"] for p in peers if p["banned_at"] >= 0),
        "rounds": state.rounds(20),
    }
    if node is not None:
        itemsize = node.spec.itemsize
        out.update(
            running=True,
            uptime_s=time.time() - node.started,
            connected=node.transport.connected(),
            regime=stats["regime"],
            error=stats["error"],
            samples_in=stats["samples_in"],
            updates_sent=stats["updates_sent"],
            updates_received=stats["updates_received"],
            rejected=dict(stats["rejected"]),
            duplicates=stats["duplicates"] + getattr(node.transport, "duplicates", 0),
            idle_closed=getattr(node.transport, "idle_closed", 0),
            bans_sent=stats["bans_sent"],
            bans_received=stats["bans_received"],
            bans_rejected=dict(stats["bans_rejected"]),
            audits=dict(stats["audits"]),
            checks=dict(stats["checks"]),
            transport_bytes={
                "sent": int(node.transport.stats.sent_bytes),
                "received": int(node.transport.stats.delivered_bytes),
                # with framing, encryption and envelopes: what the radio carries
                "wire_sent": int(getattr(node.transport, "wire_bytes_sent", 0)),
                "wire_received": int(getattr(node.transport, "wire_bytes_received", 0)),
            },
            asleep=node.asleep,
            asleep_rounds=stats["asleep_rounds"],
            ratio=(samples * itemsize / stored) if stored else None,
            http_port=node.http_port,
            energy=node.energy_status(),
        )
        if node.lora is not None:
            out["lora"] = node.lora.status()
    elif (stored := state.load_lora()) is not None:
        from qres.node import lora

        out["lora"] = lora.status_of(lora.read(stored[1], str(state.path)))
    return out
