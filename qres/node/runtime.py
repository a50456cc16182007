"""The node process: ingest a stream into segments, learn, gossip, aggregate, obey bans.

One asyncio loop runs four tasks: the source (samples into the current segment), the round
clock, the receiver (verifies every packet as it arrives) and, if configured, the HTTP API.
Rounds follow the wall clock: round ``r`` is ``floor(time * time_scale / round_seconds)``, so
nodes agree on round numbers without talking. In each round a node trains on its recent
samples (:mod:`qres.learning.task`), signs its update (:mod:`qres.trust.packet`) and sends it
to its peers; at the next round boundary it aggregates the updates it accepted for the round
with the profile's aggregator (:func:`qres.robust.combine.robust_aggregate`), scores senders
with the simulator's reputation rules (:class:`qres.robust.reputation.Ledger`) and bans those
that fall below the threshold. Everything a round changes is one SQLite transaction.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from pathlib import Path
from typing import Any

import attrs

from qres.fixed.q16 import Q_MAX, Q_MIN, sat_add
from qres.kernel.errors import QresError

#: Q16.16 one (reputations are stored as integers of this unit).
ONE = 1 << 16
#: Seconds between looks at the ban notices received.
BAN_POLL_SECONDS = 0.1


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
        # per DID: a signed packet whose fault any peer can check (sent with our ban notice)
        self._evidence: dict[str, bytes] = {}
        self._new_bans: list[tuple[str, int, str, bytes]] = []  # to persist with the round
        self._via: dict[str, str] = {}  # DID -> the peer whose notice brought its evidence
        self.ledger_slots: dict[str, int] = {}
        slots = max(2, self._max_peers())
        self.ledger = Ledger(slots, reputation_rules(self.swarm, slots))
        self._load_state()
        self.energy = self._make_energy()
        self._moved = (0, 0)  # transport bytes sent, delivered at the last round's close
        self._stop = asyncio.Event()
        self._buffer: list = []
        self.recent = None
        self.stats = {
            "samples_in": 0,
            "bytes_in": 0,
            "bytes_out": 0,
            "updates_sent": 0,
            "updates_received": 0,
            "rejected": {},
            "bans_sent": 0,
            "bans_received": 0,
            "bans_rejected": {},
            "rounds": 0,
            "regime": "calm",
            "error": None,
        }
        self._inbox: dict[int, dict[str, Any]] = {}  # round -> sender DID -> update array
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
        """Pay round ``r`` as the simulator does: its wakes by regime and reputation (a node
        trusts itself fully), the radio airtime of the bytes it moved, sleep, harvest."""
        import numpy as np

        from qres.swarm.regimes import NAMES

        regime = np.array([NAMES.index(self.stats["regime"])])
        wakes = self.energy.wakes(r, regime, np.ones(1), np.ones(1, bool))
        stats = self.transport.stats
        sent, got = stats.sent_bytes, stats.delivered_bytes
        tx, rx = sent - self._moved[0], got - self._moved[1]
        self._moved = (sent, got)
        self.energy.spend(wakes, np.array([float(tx)]), np.array([float(rx)]))
        self.stats["wakes"] = self.stats.get("wakes", 0) + int(wakes[0])

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
            self.round, self.weights = -1, task.persistence_weights(self.swarm.order)
        else:
            self.round, self.weights = model
        for peer in self.state.peers():
            slot = self._slot(peer["did"])
            if slot is None:
                continue
            self.ledger.rep[slot] = peer["reputation"]
            self.ledger.banned_at[slot] = peer["banned_at"]
            self.ledger.effective_at[slot] = peer["banned_at"]
            if peer["banned_at"] >= 0:
                self.transport.ban(peer["did"])

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
            self._flush_segment()
            if runner is not None:
                await runner.cleanup()
            await self.transport.aclose()
            status = self.status()
            self.state.close()
        if self._failure is not None:
            raise self._failure
        return status

    _failure: BaseException | None = None

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
            self._flush_segment()
            self.stop()

    def _take(self, chunk) -> None:
        import numpy as np

        s = self.settings
        self.stats["samples_in"] += len(chunk)
        self.stats["bytes_in"] += chunk.nbytes
        span = self.swarm.order + self.swarm.window
        tail = chunk if self.recent is None else np.concatenate([self.recent, chunk])
        self.recent = tail[-4 * span :]
        while len(chunk):
            room = s.segment_samples - sum(len(b) for b in self._buffer)
            self._buffer.append(chunk[:room])
            chunk = chunk[room:]
            full = sum(len(b) for b in self._buffer) >= s.segment_samples
            if full or time.time() - self._segment_start >= s.segment_seconds:
                self._flush_segment()

    def _flush_segment(self) -> None:
        import numpy as np

        if not self._buffer:
            return
        samples = np.concatenate(self._buffer)
        self._buffer = []
        now = time.time()
        seg = self.segments.write(self._next_sample, samples, self._segment_start, now)
        self.stats["bytes_out"] += seg.bytes
        self._next_sample += len(samples)
        self._segment_start = now

    # --- learning rounds ----------------------------------------------------------------

    async def _rounds(self) -> None:
        closed = 0
        while True:
            r = self.round_at(time.time())
            if r > self.round:
                if self._pending is not None:
                    self._close_round()
                    closed += 1
                    if self.options.rounds and closed >= self.options.rounds:
                        self.stop()
                        return
                await self._open_round(r)
            wait = (r + 1) * self.round_wall_seconds - time.time()
            await asyncio.sleep(max(0.005, wait))

    _pending = None  # (round, own update, windows) of the round in progress

    def _windows(self):
        from qres.learning import task

        span = self.swarm.order + self.swarm.window
        if self.recent is None or len(self.recent) < span:
            return None
        values = task.normalise(self.recent)
        if values is None:
            return None
        return values[-span:][None, :]

    async def _open_round(self, r: int) -> None:
        """Train on the recent window and send the signed update for round ``r``."""
        from qres.fixed.q16 import ONE as Q_ONE
        from qres.learning import task
        from qres.trust import commitment as cm
        from qres.trust.packet import make_packet

        self.round = r
        windows = self._windows()
        if windows is None:
            self._pending = (r, None, None)
            return
        storm = self.stats["regime"] == "storm"
        ts = task.TrainSettings(
            order=self.swarm.order,
            window=self.swarm.window,
            lr=self.swarm.storm_lr if storm else self.swarm.lr,
        )
        update = task.local_update(self.weights, windows, ts)[0]
        sent = update
        if self.attack is not None:
            import numpy as np

            honest = np.stack([update, *self._last_rows]).astype(np.int32)
            rng = np.random.default_rng([r, int.from_bytes(self.identity.public_key[:8], "little")])
            sent = self.attack.forge(honest, 1, rng=rng)[0]
        error = float(task.prediction_error(self.weights, windows, self.swarm.order)[0])
        base = cm.commit(self.weights.tolist(), 0)
        new = (self.weights.astype("int64") + update).clip(Q_MIN, Q_MAX)
        packet = make_packet(
            self.identity,
            r,
            os.urandom(16),
            sent,
            base=base,
            commitment=cm.commit(new.tolist(), 0),
            residual_error=min(int(error * Q_ONE), Q_MAX),
        )
        self._pending = (r, update, windows)
        sent = await self.transport.abroadcast(packet.encode())
        self.stats["updates_sent"] += 1 if sent else 0

    async def _receive(self) -> None:
        from qres.trust.packet import Verifier

        verifier = Verifier(allow_unknown=True, dimension=self.swarm.order, window=2, future=1)
        while True:
            message = await self.transport.recv(None)
            verifier.advance(max(self.round, 0))
            for did, slot in self.ledger_slots.items():
                if self.ledger.banned_at[slot] >= 0:
                    verifier.ban(did)
            verdict = verifier.check(message.payload)
            self.stats["updates_received"] += 1
            if not verdict.ok:
                name = verdict.reason.name
                self.stats["rejected"][name] = self.stats["rejected"].get(name, 0) + 1
                if verdict.reason.attributable and verdict.packet is not None:
                    # signed and provably wrong: a fault, banned when the round closes
                    self._fault(verdict.packet.did, message.payload, verdict.reason)
                continue
            packet = verdict.packet
            if packet.did != message.src:
                self.stats["rejected"]["RELAYED"] = self.stats["rejected"].get("RELAYED", 0) + 1
            self._inbox.setdefault(packet.round, {})[packet.did] = packet.update

    def _fault(self, did: str, packet: bytes, reason) -> None:
        from qres.node.bans import TRANSFERABLE

        slot = self._slot(did)
        if slot is None:
            return
        if reason in TRANSFERABLE:
            self._evidence.setdefault(did, bytes(packet))
        self.ledger.record_fault([slot])  # attributable: bannable at the next ban_low

    # --- ban notices --------------------------------------------------------------------

    async def _ban_notices(self) -> None:
        """Check the ban notices peers send; a notice whose evidence holds is a fault this
        node has observed itself (the issuer's word alone counts for nothing)."""
        while True:
            await asyncio.sleep(BAN_POLL_SECONDS)
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
        reason = check_evidence(notice, self.swarm.order)
        if reason is None:
            return self._refuse_notice("NO_EVIDENCE")
        self._via.setdefault(notice.banned_did, notice.issuer_did)
        self._fault(notice.banned_did, notice.evidence, reason)

    def _refuse_notice(self, why: str) -> None:
        self.stats["bans_rejected"][why] = self.stats["bans_rejected"].get(why, 0) + 1

    def _apply_bans(self, r: int, persist: bool = True) -> None:
        """Ban the peers the ledger's rules now ban; drop them, tell the others."""
        banned = self.ledger.ban_low(r)
        slots = {s: d for d, s in self.ledger_slots.items()}
        for slot in banned.tolist():
            did = slots[slot]
            self.transport.ban(did)
            evidence = self._evidence.get(did)
            via = self._via.get(did, self.identity.did)
            self._new_bans.append((did, r, via, evidence or b""))
            if evidence is not None:
                asyncio.ensure_future(self._publish_ban(did, r, evidence))
        if persist and len(banned):
            with self.state.transaction():
                self._persist_bans()

    def _persist_bans(self) -> None:
        for did, r, issuer, evidence in self._new_bans:
            slot = self.ledger_slots[did]
            self.state.save_peer(did, int(self.ledger.rep[slot]), int(self.ledger.banned_at[slot]))
            self.state.save_ban(did, r, issuer, evidence)
        self._new_bans = []

    async def _publish_ban(self, did: str, r: int, evidence: bytes) -> None:
        from qres.node.bans import make_notice
        from qres.trust.identity import public_key_of

        notice = make_notice(self.identity, public_key_of(did), r, evidence)
        if await self.transport.abroadcast_ban(notice.encode()):
            self.stats["bans_sent"] += 1

    def _close_round(self) -> None:
        """Aggregate round ``_pending``'s updates, score senders, ban, persist."""
        import numpy as np

        from qres.learning import task
        from qres.robust.combine import robust_aggregate
        from qres.robust.evidence import grubbs_outliers, update_statistic

        r, own, windows = self._pending if self._pending is not None else (self.round, None, None)
        received = self._inbox.pop(r, {})
        for old in [k for k in self._inbox if k < r]:
            del self._inbox[old]
        dids = sorted(d for d in received if self._slot(d) is not None)
        slots = np.array([self.ledger_slots[d] for d in dids], np.int64)
        live = [i for i, s in enumerate(slots) if self.ledger.banned_at[s] < 0]
        dids, slots = [dids[i] for i in live], slots[live]
        rows = [np.asarray(received[d], np.int32) for d in dids]
        self._last_rows = rows
        accepted = len(rows)
        if own is not None:
            x = np.stack([own, *rows]) if rows else own[None, :]
            if len(rows) >= 2:
                stats = update_statistic(x[1:])
                outliers = grubbs_outliers(
                    stats, self.swarm.grubbs_alpha, max_outliers=len(rows) // 2
                )
                flagged = set(outliers.tolist())
                bad = slots[sorted(flagged)] if flagged else np.zeros(0, np.int64)
                good = np.array([s for i, s in enumerate(slots) if i not in flagged], np.int64)
                self.ledger.adjust(bad, -self.ledger.pen_outlier)
                self.ledger.adjust(good, self.ledger.reward)
                keep = [0] + [i + 1 for i in range(len(rows)) if i not in flagged]
                x = x[keep]
            agg = self.aggregator
            update = robust_aggregate(agg, x, self.swarm.assumed_byzantine) if agg else x.mean(0)
            self.weights = sat_add(self.weights, np.asarray(update, np.int64))
            error = float(task.prediction_error(self.weights, windows, self.swarm.order)[0])
            self._observe_regime(error, windows)
        else:
            error = None
        self._apply_bans(r, persist=False)
        self._spend_energy(r)
        self._save_round(r, error, len(received), accepted)
        self._pending = None

    def _observe_regime(self, error: float, windows) -> None:
        import numpy as np

        from qres.learning import task
        from qres.swarm.regimes import NAMES, RegimeTracker

        if not hasattr(self, "_regimes"):
            self._regimes = RegimeTracker(1, self.swarm)
        spread = max(1, int(windows.max()) - int(windows.min()))
        entropy = min(error * task.SPAN / spread, 1.0)
        self._regimes.observe(np.array([0]), np.array([entropy]))
        self.stats["regime"] = NAMES[int(self._regimes.regime[0])]

    def _save_round(self, r: int, error: float | None, received: int, accepted: int) -> None:
        self.stats["rounds"] += 1
        if error is not None:
            self.stats["error"] = error
        peers = len(self.transport.connected())
        with self.state.transaction():
            self.state.save_model(r, self.weights)
            for did, slot in self.ledger_slots.items():
                self.state.save_peer(
                    did, int(self.ledger.rep[slot]), int(self.ledger.banned_at[slot])
                )
            self._persist_bans()
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
            bans_sent=stats["bans_sent"],
            bans_received=stats["bans_received"],
            bans_rejected=dict(stats["bans_rejected"]),
            ratio=(samples * itemsize / stored) if stored else None,
            http_port=node.http_port,
            energy=node.energy_status(),
        )
    return out
