"""The swarm simulator on Ray: nodes split into contiguous id ranges held by Ray actors.

``qres swarm simulate --engine ray [--address ADDR] [--shards K]`` runs the same rounds as the
local engine (:mod:`qres.swarm.engine`) and writes the same report bytes, whatever ``K``.

Who holds what:

* A *shard* (:class:`NodeShard`, one Ray actor) owns the nodes ``lo <= id < hi``: their models,
  their data windows, the updates they sent in the last ``max_age`` rounds. It does every
  piece of work that touches one node's model or window: measuring the error, training,
  the claims, the codec meter, the forwarding test, the receiver's screen, the aggregation
  of the inbox, and the re-run of an audit.
* The *driver* (:class:`RaySimulation`) runs the control plane: the wake schedules, regimes
  and energy pools (per-node scalars), the transport (which messages go where, lost or
  delayed: metadata only), the omniscient attack, the round-wide robust statistics, the
  reputation ledger and the bans, and the report.
* Gossip rows travel *shard to shard*: when messages reach a shard's nodes, the shards that
  own their origins push ``(tags, rows)`` batches straight to it (each update once per
  receiving shard, however many of its nodes got it); the driver only names which.

Why the bytes match the local engine: every random draw (routing, loss, delay, audits,
the attack) is made by the driver in node-id order from the same generators; everything a
shard computes is row by row, integer (or exact float64) arithmetic on its own nodes, and
the driver reassembles the per-node results in id order before any reduction. The sent rows
of the round also reach the driver, because the defence's statistics (the coordinate-wise
median and MAD, the k-nearest-neighbour tightness) and the omniscient attack need all of
them in one place.
"""

from __future__ import annotations

import os
import tempfile
import time
import warnings
from contextlib import contextmanager
from typing import Any

import attrs

from qres.kernel.config import integer
from qres.kernel.errors import QresError, UsageError
from qres.swarm.engine import RoundState, Simulation, SwarmState
from qres.swarm.regimes import STORM, window_range

__all__ = ["EngineSettings", "NodeShard", "RaySimulation", "shard_bounds"]


@attrs.frozen
class EngineSettings:
    """Where ``qres swarm simulate`` runs: ``engine`` (``local`` or ``ray``), the Ray
    cluster's ``address`` (None: start a local Ray for the run) and the number of shards."""

    engine: str = attrs.field(default="local")
    address: str | None = attrs.field(default=None)
    shards: int = attrs.field(default=2, validator=integer(1, 4096))

    def __attrs_post_init__(self) -> None:
        if self.engine not in ("local", "ray"):
            raise UsageError(f"--engine {self.engine}: unknown engine; use local or ray")


def shard_bounds(n: int, k: int) -> Any:
    """The ``k + 1`` boundaries of ``k`` contiguous node-id ranges of near-equal size."""
    import numpy as np

    return (np.arange(k + 1, dtype=np.int64) * n) // k


class _Offset:
    """A shard's model rows indexed by global node id (``id - lo``)."""

    def __init__(self, rows: Any, lo: int):
        self.rows, self.lo = rows, lo

    def __getitem__(self, ids: Any) -> Any:
        return self.rows[ids - self.lo]

    def __setitem__(self, ids: Any, value: Any) -> None:
        self.rows[ids - self.lo] = value


class _OffsetSteps:
    """A shard's :class:`~qres.swarm.steps.StepLog` addressed by global node id."""

    def __init__(self, log: Any, lo: int):
        self.log, self.lo = log, lo

    def add(self, node: int, own: Any, rows: Any, weights: Any, tags: Any = None) -> None:
        self.log.add(node - self.lo, own, rows, weights, tags)

    def applied(self, nodes: Any, steps: Any) -> None:
        self.log.applied(nodes - self.lo, steps)


@attrs.define
class _Nodes:
    """What :meth:`Simulation._aggregate_all` reads of the swarm: models and step log."""

    W: Any
    steps: Any


class NodeShard:
    """The nodes ``lo <= id < hi`` of a simulated swarm (a Ray actor; see the module
    docstring). Methods take and return global node ids, in increasing order."""

    def __init__(self, profile: Any, settings: Any, lo: int, hi: int):
        import numpy as np

        from qres.learning import task as learning
        from qres.swarm.coding import CodecMeter
        from qres.swarm.data import open_data

        # The local engine's own phases do the per-node work, on this shard's rows.
        self.sim = Simulation(profile, settings, attack_free=True)
        self.s = settings
        self.n, self.lo, self.hi = settings.nodes, lo, hi
        self.data = open_data(settings, settings.seed)
        # Recordings: keep only this shard's nodes' slices (windows are then asked for by
        # local id); the generated set is a function of (seed, node, round) and keeps none.
        self.data_lo = 0
        if getattr(self.data, "kind", "") == "manifest":
            self.data.shards = self.data.shards[lo:hi].copy()
            self.data_lo = lo
        self.W = learning.genesis_weights(settings.order, hi - lo)
        self.span_range = np.zeros(hi - lo)
        self.calm = learning.TrainSettings(
            order=settings.order, window=settings.window, lr=settings.lr
        )
        self.storm = learning.TrainSettings(
            order=settings.order, window=settings.window, lr=settings.storm_lr
        )
        self.meter = CodecMeter(settings, profile)
        from qres.swarm.steps import StepLog

        self.steps = StepLog(self.W)  # this shard's nodes' round-step chains, by local id
        self.peers: list[Any] = []
        self.store: dict[int, tuple[Any, Any]] = {}  # round -> (ids, sent rows)
        self.pos = np.full(hi - lo, -1, np.int64)  # local id -> position among the awake
        self.ids = self.X = self.W0 = self.delta = None
        self._inbox: list[tuple[Any, Any]] = []

    def connect(self, peers: list[Any]) -> int:
        """Learn the handles of every shard (this one included), in id order."""
        self.peers = list(peers)
        return self.hi - self.lo

    def peak_rss(self) -> int:
        """Peak resident memory of this actor's process, in bytes."""
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def usage(self) -> tuple[int, float]:
        """Peak resident memory (bytes) and CPU seconds (user + system) of this actor's
        process so far: what a machine of its own would have spent on it."""
        import resource

        u = resource.getrusage(resource.RUSAGE_SELF)
        return u.ru_maxrss * 1024, u.ru_utime + u.ru_stime

    # --- models -----------------------------------------------------------------------------

    def rows(self, mask: Any) -> Any:
        """The models of this shard's nodes where ``mask`` (local, bool) is set."""
        return self.W[mask]

    def set_rows(self, mask: Any, row: Any) -> None:
        """Joiners: the nodes where ``mask`` is set take the model ``row`` as their genesis."""
        import numpy as np

        self.W[mask] = row
        self.steps.restart(np.flatnonzero(mask), self.W)

    def put_rows(self, ids: Any, rows: Any) -> None:
        """Replace the models of ``ids`` (an attack's choice of base)."""
        self.W[ids - self.lo] = rows

    # --- 2. observe and learn ---------------------------------------------------------------

    def observe(self, r: int, ids: Any) -> tuple[Any, Any, Any]:
        """Read the awake nodes' windows and measure their errors: ``(err0, span_range,
        full)`` (the driver turns the first two into entropies), ``full`` where a node's
        round-step chain must close this round."""
        import numpy as np

        from qres.learning import task as learning

        local = ids - self.lo
        X = self.data.windows(r, ids - self.data_lo)
        fresh = self.span_range[local] == 0
        if fresh.any():
            self.span_range[local[fresh]] = window_range(X[fresh])
        self.ids, self.X, self.W0 = ids, X, self.W[local]
        self.pos[:] = -1
        self.pos[local] = np.arange(ids.shape[0])
        self.err0 = learning.prediction_error(self.W0, X, self.s.order)
        return self.err0, self.span_range[local], self.steps.full(local)

    def bases(self) -> Any:
        """The awake nodes' models before this round's training (for ``--record``)."""
        return self.W0

    def learn(self, storm: Any, honest: Any) -> tuple[Any, Any, Any, tuple[int, int, int]]:
        """Train (Storm nodes with ``storm_lr``), claim, and code the honest nodes' windows:
        ``(delta, residual, gain, (learned bytes, plain bytes, samples))``."""
        import numpy as np

        from qres.learning import task as learning
        from qres.swarm.engine import _claims

        d = self.s.order
        delta = np.empty((self.ids.shape[0], d), np.int32)
        if not self.ids.shape[0]:
            self.delta = delta
            empty = np.zeros(0, np.int64)
            return delta, empty, empty, (0, 0, 0)
        for mask, ts in ((~storm, self.calm), (storm, self.storm)):
            if mask.any():
                delta[mask] = learning.local_update(self.W0[mask], self.X[mask], ts)
        self.delta = delta
        residual, gain = _claims(self.W0, self.X, delta, self.err0, d)
        claims = (residual, gain, self.calm, self.storm)
        self.sim.remember_training(self.W0, self.X, storm, delta, *claims)
        m = self.meter
        before = (m.learned_bytes, m.plain_bytes, m.samples)
        m.add(self.ids[honest], self.W0[honest], self.X[honest])
        coded = (m.learned_bytes - before[0], m.plain_bytes - before[1], m.samples - before[2])
        return delta, residual, gain, coded

    def close_steps(self, ids: Any, round_: int = -1, recording: bool = False) -> Any:
        """The round's senders commit to their chains (new ones start at their bases); when
        ``recording``, returns the closed chains by global id, ``{id: (start, chain,
        meta)}``, for the driver to sign their round steps."""
        local = ids - self.lo
        self.steps.close(local, self.W0[self.pos[local]], round_)
        if not recording:
            return None
        log = self.steps
        return {i + self.lo: (*log.closed[i], log.closed_meta[i]) for i in local.tolist()}

    def check_steps(self, ids: Any, packet_bytes: int) -> tuple[Any, list[int], list]:
        """Replay the checked senders' closed chains against the bases they committed to:
        the mask of matches, the bytes of each one's round-step evidence (for an auditor)
        and what a checker fetches of it (:meth:`~qres.swarm.steps.StepLog.evidence`)."""
        local = ids - self.lo
        sim = self.sim
        ok = self.steps.check(local, self.W0[self.pos[local]], sim._replay_rule, sim._robust_many)
        sizes = [self.steps.evidence_bytes(i, packet_bytes) for i in local.tolist()]
        return ok, sizes, [self.steps.evidence(i) for i in local.tolist()]

    def post(self, r: int, forged_pos: Any, forged: Any) -> None:
        """Keep this round's sent rows (forgeries replace the Byzantine nodes' updates)."""
        sent = self.delta.copy()
        sent[forged_pos] = forged
        self.store[r] = (self.ids, sent)
        for old in [k for k in self.store if k < r - self.s.max_age]:
            del self.store[old]

    # --- 3./4. gossip rows, shard to shard --------------------------------------------------

    def push(self, wanted: dict[int, Any]) -> list[Any]:
        """Send each shard ``j`` in ``wanted`` the rows of the updates ``wanted[j]`` (tags
        of updates this shard's nodes sent); returns the refs of the deliveries."""
        import numpy as np

        refs = []
        for j, tags in wanted.items():
            rows = np.empty((tags.shape[0], self.s.order), np.int32)
            rounds, origins = tags // self.n, tags % self.n
            for rr in np.unique(rounds).tolist():
                ids, sent = self.store[rr]
                sel = np.flatnonzero(rounds == rr)
                rows[sel] = sent[np.searchsorted(ids, origins[sel])]
            refs.append(self.peers[j].accept.remote(tags, rows))
        return refs

    def accept(self, tags: Any, rows: Any) -> None:
        """Receive a batch of gossip rows from another shard."""
        self._inbox.append((tags, rows))

    def _received(self, tags: Any) -> Any:
        """The rows of ``tags`` among the batches received; empties the buffer."""
        import numpy as np

        if not self._inbox:
            return np.zeros((0, self.s.order), np.int32)
        have = np.concatenate([t for t, _ in self._inbox])
        rows = np.concatenate([w for _, w in self._inbox])
        self._inbox = []
        order = np.argsort(have, kind="stable")
        return rows[order[np.searchsorted(have[order], tags)]]

    def forward_gains(self, dst: Any, tags: Any) -> Any:
        """The accuracy gain each candidate ``dst`` measures for update ``tags`` on the newest
        samples of its window (the forwarding test of :meth:`Simulation._forward`)."""
        import numpy as np

        from qres.fixed.q16 import Q_MAX, Q_MIN
        from qres.learning import task as learning
        from qres.swarm import gossip

        s = self.s
        upd = self._received(tags).astype(np.int64)
        base_w = self.W[dst - self.lo].astype(np.int64)
        tried = np.clip(base_w + upd, Q_MIN, Q_MAX)
        xw = self.X[self.pos[dst - self.lo]]
        before = gossip.window_errors(base_w, xw, s.order, s.eval_samples)
        after = gossip.window_errors(tried, xw, s.order, s.eval_samples)
        return (before - after) / learning.SPAN

    def consensus(self, in_dst: Any, in_tag: Any, prio: Any, rep_f: Any, senders: Any) -> Any:
        """Screen the inbox on each receiver's window, aggregate, apply, log the step; the
        kept mask. A node applies what it committed to: its sent row if it sent one."""
        sim, W = self.sim, _Offset(self.W, self.lo)
        rows = self._received(in_tag)
        kept = sim._screen(W, self.X, _Offset(self.pos, self.lo), in_dst, rows)
        own = self.delta.copy()
        own[senders] = self.store[max(self.store)][1][senders]
        nodes = _Nodes(W, _OffsetSteps(self.steps, self.lo))
        k = kept
        sim._aggregate_all(
            nodes, self.ids, own, in_dst[k], in_tag[k], rows[k], prio[k], self.n, rep_f
        )
        return kept

    def audit(self, ids: Any, residual: Any, gain: Any, storm: Any) -> Any:
        """Re-run the claimed training of ``ids`` (this round's senders here): True where
        the sent update and the claims ``residual``, ``gain`` match."""
        import numpy as np

        from qres.trust.audit import to_q16

        p = self.pos[ids - self.lo]
        sent = self.store[max(self.store)][1][p]
        reg = np.where(storm, STORM, 0)
        a_pos = np.arange(ids.shape[0])
        args = (self.W0[p], self.X[p], sent, residual, gain, reg)
        return self.sim._audit(a_pos, *args, self.calm, self.storm, to_q16)


@contextmanager
def _neutral_cwd():
    """Run in a directory holding no Python package: Ray puts the driver's working
    directory on its workers' import path, where a source checkout would shadow the
    installed qres."""
    here = os.getcwd()
    # an empty folder of its own (the temporary folder itself may hold anything), kept:
    # the processes Ray starts keep it as their working directory
    neutral = os.path.join(tempfile.gettempdir(), f"qres-ray-{os.getuid()}")
    os.makedirs(neutral, mode=0o700, exist_ok=True)
    os.chdir(neutral)
    try:
        yield
    finally:
        os.chdir(here)


def _check_reachable(address: str) -> None:
    """Refuse a ``host:port`` nothing listens on, in seconds (Ray itself retries for
    minutes, printing as it goes); other spellings (``auto``, ``ray://...``) go to Ray."""
    import socket

    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or "/" in address:
        return
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as exc:
        raise QresError(
            f"--engine ray: --address {address}: nothing answers there ({exc.strerror or exc}); "
            "start the head with `ray start --head --port PORT` or give its host:port"
        ) from exc


class RayCluster:
    """A Ray connection for one run: joins ``address`` or starts a local Ray (stopped at
    :meth:`close`); an already initialised Ray (a test's, a notebook's) is used as is."""

    def __init__(self, address: str | None, shards: int):
        try:
            import ray
        except ImportError as exc:
            raise QresError(
                "--engine ray: Ray is not installed; install it with pip install 'qres[ray]'"
            ) from exc
        self.ray = ray
        self.started = False
        if not ray.is_initialized():
            options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
            if address is None:
                # a Ray of its own ("local": never another user's running cluster), with
                # one logical CPU per shard
                options.update(address="local", num_cpus=shards)
            else:
                _check_reachable(address)
                options["address"] = address
            try:
                with _neutral_cwd(), warnings.catch_warnings():
                    warnings.simplefilter("ignore", FutureWarning)  # Ray's notes on GPUs
                    ray.init(**options, logging_level="ERROR")
            except (ConnectionError, RuntimeError, ValueError) as exc:
                where = address or "a local Ray"
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise QresError(
                    f"--engine ray: cannot start or join {where}: {first}; check --address "
                    "(host:port of `ray start --head`) or leave it out to start Ray locally"
                ) from exc
            self.started = True
        cpus = float(ray.cluster_resources().get("CPU", 1.0))
        # Fractional requests: K shards fit however many CPUs the cluster declares.
        self.cpus_per_shard = min(1.0, cpus / shards)

    def close(self) -> None:
        """Stop Ray if this run started it."""
        if self.started:
            self.ray.shutdown()
            self.started = False

    def __enter__(self) -> RayCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RaySimulation(Simulation):
    """:class:`Simulation` whose nodes live in Ray actors (see the module docstring)."""

    def __init__(self, profile: Any, settings: Any, engine: EngineSettings, **kwargs: Any):
        super().__init__(profile, settings, **kwargs)
        self.engine = engine
        self.cluster: RayCluster | None = None
        self.shards: list[Any] = []
        #: Rows pushed from one shard to another over the run, and the shards' peak memory
        #: (bytes, read when the run ends): what ``benchmarks/swarm_ray.py`` reports.
        self.exchanged_rows = 0
        self.shard_peak_rss: list[int] = []
        #: CPU seconds each shard's process spent over the run (read when it ends).
        self.shard_cpu_seconds: list[float] = []
        #: Bytes of numpy arrays the driver sent to and received from the shards (call
        #: arguments and results; the row exchanges between shards are not through it).
        self.driver_bytes_out = 0
        self.driver_bytes_in = 0
        #: ``receivers[c]``: how many times an update was wanted by ``c`` receiving nodes in
        #: one row exchange (any shards): what the exchange would cost at another shard count.
        self.receivers: Any = None
        #: Seconds the driver waited on the shards (calls and row exchanges) over the run.
        self.wait_seconds = 0.0

    def run(self, on_round: Any = None) -> dict:
        """Start (or join) Ray, run every round on the shards, stop what was started."""
        self.cluster = RayCluster(self.engine.address, self.engine.shards)
        try:
            return super().run(on_round)
        finally:
            self._stop_shards()

    def _stop_shards(self) -> None:
        """Read the shards' peak memory, end them, and stop Ray if this run started it."""
        ray = self.cluster.ray
        try:
            usage = ray.get([shard.usage.remote() for shard in self.shards])
            self.shard_peak_rss = [rss for rss, _ in usage]
            self.shard_cpu_seconds = [cpu for _, cpu in usage]
        except ray.exceptions.RayError:
            pass  # a shard that died with the run's error has no figure to give
        try:
            for shard in self.shards:
                ray.kill(shard)
        finally:
            self.shards = []
            self.cluster.close()

    # --- the fan-out to the shards ----------------------------------------------------------

    def _call(self, method: str, per_shard: list[tuple]) -> list[Any]:
        """Call ``method`` on every shard with its own arguments; results in shard order."""
        ray = self.cluster.ray
        refs = [
            getattr(sh, method).remote(*a) for sh, a in zip(self.shards, per_shard, strict=True)
        ]
        self.driver_bytes_out += _array_bytes(per_shard)
        start = time.perf_counter()
        try:
            got = ray.get(refs)
            self.driver_bytes_in += _array_bytes(got)
            return got
        except ray.exceptions.RayTaskError as exc:
            # a shard's own error (bad data, a plugin's refusal) reads as it would locally
            if isinstance(exc.cause, QresError):
                raise exc.cause from None
            raise
        finally:
            self.wait_seconds += time.perf_counter() - start

    def _split(self, ids: Any) -> list[Any]:
        """Positions of the sorted ``ids`` that fall in each shard's range."""
        import numpy as np

        cuts = np.searchsorted(ids, self.bounds)
        return [np.arange(cuts[k], cuts[k + 1]) for k in range(len(self.shards))]

    def _owner(self, ids: Any) -> Any:
        import numpy as np

        return np.searchsorted(self.bounds, ids, side="right") - 1

    def _exchange(self, dst: Any, tags: Any) -> None:
        """Have the shards owning the updates ``tags`` push their rows to the shards owning
        the receivers ``dst``, one batch per pair of shards."""
        import numpy as np

        ray, n = self.cluster.ray, self.s.nodes
        to, frm = self._owner(dst), self._owner(tags % n)
        count = np.bincount(np.unique(tags, return_counts=True)[1])
        if self.receivers is None or self.receivers.shape[0] < count.shape[0]:
            grown = np.zeros(count.shape[0], np.int64)
            if self.receivers is not None:
                grown[: self.receivers.shape[0]] = self.receivers
            self.receivers = grown
        self.receivers[: count.shape[0]] += count
        wanted: list[dict[int, Any]] = [{} for _ in self.shards]
        for i in np.unique(frm).tolist():
            for j in np.unique(to[frm == i]).tolist():
                wanted[i][j] = np.unique(tags[(frm == i) & (to == j)])
                if i != j:
                    self.exchanged_rows += int(wanted[i][j].shape[0])
        self.driver_bytes_out += _array_bytes(wanted)  # the tags each shard is to push
        start = time.perf_counter()
        pushes = [self.shards[i].push.remote(w) for i, w in enumerate(wanted) if w]
        ray.get([ref for refs in ray.get(pushes) for ref in refs])
        self.wait_seconds += time.perf_counter() - start

    # --- phases -----------------------------------------------------------------------------

    def _setup(self) -> SwarmState:

        sw = super()._setup()
        sw.W = None  # the models and the step chains live in the shards
        sw.steps = _ShardSteps(self)
        ray, k = self.cluster.ray, min(self.engine.shards, self.s.nodes)
        self.bounds = shard_bounds(self.s.nodes, k)
        actor = ray.remote(NodeShard).options(
            num_cpus=self.cluster.cpus_per_shard, scheduling_strategy="SPREAD"
        )
        profile = ray.put(self.profile)
        b = self.bounds.tolist()
        self.shards = [actor.remote(profile, self.s, b[i], b[i + 1]) for i in range(k)]
        ray.get([sh.connect.remote(self.shards) for sh in self.shards])
        self._packet_bytes = sw.pkt
        return sw

    def _join_and_wake(self, sw: SwarmState, r: int) -> RoundState:
        import numpy as np

        from qres.robust.aggregate import median_columns

        if sw.n_join and r == sw.join_round:
            base = sw.alive & ~sw.ledger.banned()
            b = self.bounds
            parts = self._call("rows", [(base[b[k] : b[k + 1]],) for k in range(len(b) - 1)])
            rows = np.concatenate(parts)
            consensus = median_columns(rows) if rows.shape[0] else np.zeros(self.s.order, np.int32)
            self._call(
                "set_rows", [(sw.joining[b[k] : b[k + 1]], consensus) for k in range(len(b) - 1)]
            )
            sw.alive = sw.alive | sw.joining
        n_join, sw.n_join = sw.n_join, 0  # joining is done above
        try:
            return super()._join_and_wake(sw, r)
        finally:
            sw.n_join = n_join

    def _observe_and_learn(self, sw: SwarmState, rd: RoundState) -> None:
        import numpy as np

        A = rd.A
        parts = self._split(A)
        if self.attack is not None and sw.byz[A].any():
            self._choose_bases(sw, rd)
        got = self._call("observe", [(rd.r, A[p]) for p in parts])
        rd.err0 = np.concatenate([g[0] for g in got])
        ranges = np.concatenate([g[1] for g in got])
        sw.steps.full_now = np.concatenate([g[2] for g in got])
        rd.W0 = _HeldByShards()
        if sw.recorder is not None:  # packets commit to the bases: the driver signs them
            rd.W0 = np.concatenate(self._call("bases", [() for _ in self.shards]))
        low = sw.energy.low() & rd.active
        rd.entropy = sw.regimes.observe_errors(A, rd.err0, ranges, low)
        rd.reg_a = sw.regimes.regime[A]
        rd.byz_a = sw.byz[A]
        rd.hon_a = ~rd.byz_a
        storm = rd.reg_a == STORM
        got = self._call("learn", [(storm[p], rd.hon_a[p]) for p in parts])
        rd.delta = np.concatenate([g[0] for g in got])
        rd.residual = np.concatenate([g[1] for g in got])
        rd.gain_claim = np.concatenate([g[2] for g in got])
        m = sw.meter
        coded = np.sum([g[3] for g in got], axis=0).tolist()
        if rd.hon_a.any():
            m.learned_bytes += coded[0]
            m.plain_bytes += coded[1]
            m.samples += coded[2]
            m.last = (coded[2], coded[0])
            m.nodes.update(A[rd.hon_a].tolist())
        rd.sent = rd.delta.copy()
        if self.attack is not None and rd.byz_a.any() and rd.hon_a.any():
            self._forge(sw, rd)
        lying = (rd.sent != rd.delta).any(axis=1)
        self._call("post", [(rd.r, np.flatnonzero(lying[p]), rd.sent[p][lying[p]]) for p in parts])

    def _choose_bases(self, sw: SwarmState, rd: RoundState) -> None:
        """The attack's choice of base for the awake Byzantine nodes, on their models
        fetched from the shards and put back."""
        import numpy as np

        nodes = rd.A[sw.byz[rd.A]]
        owner = self._owner(nodes)
        where = [np.flatnonzero(owner == k) for k in range(len(self.shards))]
        b = self.bounds
        masks = []
        for k, w in enumerate(where):
            mask = np.zeros(b[k + 1] - b[k], bool)
            mask[nodes[w] - b[k]] = True
            masks.append((mask,))
        held = np.concatenate(self._call("rows", masks))  # in id order, as nodes
        sw.W = _Rows(nodes, held)
        try:
            super()._choose_bases(sw, rd)
        finally:
            chosen, sw.W = sw.W.rows, None
        self._call("put_rows", [(nodes[w], chosen[w]) for w in where])

    def _gossip(self, sw: SwarmState, rd: RoundState) -> tuple[Any, Any]:
        in_dst, in_tag = super()._gossip(sw, rd)
        # The driver keeps only the claims of past rounds; the rows stay in the shards.
        A, _, residual, gain = sw.store[rd.r]
        sw.store[rd.r] = (A, None, residual, gain)
        return in_dst, in_tag

    def _forward_gains(self, sw, rd, c_dst, c_tag, c_org):
        """The local engine's forwarding test (same selection, same draws), run in the shards
        that hold the receivers."""
        import numpy as np

        gain = np.empty(c_dst.shape[0])
        self._exchange(c_dst, c_tag)
        owner = self._owner(c_dst)
        where = [np.flatnonzero(owner == k) for k in range(len(self.shards))]
        got = self._call("forward_gains", [(c_dst[w], c_tag[w]) for w in where])
        for w, g in zip(where, got, strict=True):
            gain[w] = g
        return gain

    def _consensus(self, sw: SwarmState, rd: RoundState, in_dst, in_tag) -> None:
        import numpy as np

        n = sw.n
        in_dst, in_tag, _, in_prio = self._inbox_claims(in_dst, in_tag, sw.store, n, rd.rep_f)
        self._exchange(in_dst, in_tag)
        parts = self._split(in_dst)
        rep = self.cluster.ray.put(rd.rep_f)  # one copy in the object store for every shard
        self.driver_bytes_out += int(rd.rep_f.nbytes)
        senders = np.zeros(rd.A.shape[0], bool)
        senders[rd.senders_pos] = True
        got = self._call(
            "consensus",
            [
                (in_dst[p], in_tag[p], in_prio[p], rep, np.flatnonzero(senders[a]))
                for p, a in zip(parts, self._split(rd.A), strict=True)
            ],
        )
        kept = np.concatenate(got) if got else np.zeros(0, bool)
        screened = sw.history.screened
        screened["received"] += int(in_dst.shape[0])
        screened["rejected_honest"] += int(np.count_nonzero(~kept & sw.honest[in_tag % n]))
        screened["rejected_byzantine"] += int(np.count_nonzero(~kept & sw.byz[in_tag % n]))

    def _inbox_claims(self, in_dst, in_tag, store, n, rep_f):
        """:meth:`Simulation._inbox` on the driver's row-less store: same order, same
        drops, same priorities; no rows."""
        shim = {rr: (ids, _NoRows(), res, gain) for rr, (ids, _, res, gain) in store.items()}
        saved, self.s = self.s, attrs.evolve(self.s, order=1)
        try:
            return self._inbox(in_dst, in_tag, shim, n, rep_f)
        finally:
            self.s = saved

    def _audit(self, a_pos, W0, X, sent, residual, gain_claim, reg_a, calm, storm, to_q16):
        import numpy as np

        ids = self._round_ids[a_pos]
        ok = np.zeros(a_pos.shape[0], bool)
        owner = self._owner(ids)
        where = [np.flatnonzero(owner == k) for k in range(len(self.shards))]
        args = [
            (ids[w], residual[a_pos[w]], gain_claim[a_pos[w]], reg_a[a_pos[w]] == STORM)
            for w in where
        ]
        for w, got in zip(where, self._call("audit", args), strict=True):
            ok[w] = got
        return ok

    def _check(self, sw: SwarmState, rd: RoundState, in_dst, in_tag) -> tuple[Any, Any]:
        self._round_ids = rd.A
        return super()._check(sw, rd, in_dst, in_tag)

    def _defend(self, sw: SwarmState, rd: RoundState) -> None:
        self._round_ids = rd.A
        super()._defend(sw, rd)


def _array_bytes(value: Any) -> int:
    """Bytes of the numpy arrays in ``value`` (nested tuples, lists and dicts; an object
    put in Ray's store once counts nothing here)."""
    import numpy as np

    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    if isinstance(value, (tuple, list)):
        return sum(_array_bytes(v) for v in value)
    if isinstance(value, dict):
        return sum(_array_bytes(v) for v in value.values())
    return 0


class _HeldByShards:
    """Stands for the round's models before training, which only the shards hold (the
    step log's driver side ignores the bases it is handed)."""

    def __getitem__(self, index: Any) -> None:
        return None


class _Rows:
    """The models of some nodes, indexed by node id as ``sw.W`` is (an attack's base
    choice reads and replaces exactly those)."""

    def __init__(self, nodes: Any, rows: Any):
        self.nodes, self.rows = nodes, rows

    def _at(self, ids: Any) -> Any:
        import numpy as np

        at = np.searchsorted(self.nodes, ids)
        if not np.array_equal(self.nodes[at], ids):
            raise KeyError("only the awake Byzantine nodes' models are at hand")
        return at

    def __getitem__(self, ids: Any) -> Any:
        return self.rows[self._at(ids)]

    def __setitem__(self, ids: Any, value: Any) -> None:
        self.rows[self._at(ids)] = value


class _ShardSteps:
    """The driver's side of the round-step log: the chains are in the shards; this
    forwards the engine's calls to the shards that hold the nodes."""

    def __init__(self, sim: RaySimulation):
        self.sim = sim
        self.full_now: Any = None  # per awake node, from this round's observe
        self.sizes: dict[int, int] = {}
        self.fetched: dict[int, tuple] = {}

    def full(self, nodes: Any) -> Any:
        """Nodes whose chain must close this round (``nodes`` are the round's awake)."""
        return self.full_now

    def close(self, nodes: Any, _bases: Any, round_: int = -1) -> None:
        """The senders commit to their chains; the shards hold their bases. A recording
        run gets the closed chains back (``closed``, ``closed_meta``, as a local log has)."""
        sim = self.sim
        recording = sim.record is not None
        got = sim._call("close_steps", [(nodes[p], round_, recording) for p in sim._split(nodes)])
        if recording:
            self.closed, self.closed_meta = {}, {}
            for part in got:
                for node, (start, chain, meta) in part.items():
                    self.closed[node] = (start, chain)
                    self.closed_meta[node] = meta

    def check(self, nodes: Any, _bases: Any, _aggregate: Any, _many: Any = None) -> Any:
        """Each shard replays its audited nodes' chains with its own aggregator."""
        import numpy as np

        sim = self.sim
        owner = sim._owner(nodes)
        where = [np.flatnonzero(owner == k) for k in range(len(sim.shards))]
        ok = np.ones(nodes.shape[0], bool)
        pkt = sim._packet_bytes
        got = sim._call("check_steps", [(nodes[w], pkt) for w in where])
        self.sizes, self.fetched = {}, {}
        for w, (flags, sizes, fetched) in zip(where, got, strict=True):
            ok[w] = flags
            self.sizes.update(zip(nodes[w].tolist(), sizes, strict=True))
            self.fetched.update(zip(nodes[w].tolist(), fetched, strict=True))
        return ok

    def evidence(self, node: int) -> tuple[int, int, Any]:
        """What a checker fetches of the checked node's round-step evidence (from
        :meth:`check`)."""
        return self.fetched[node]

    def evidence_bytes(self, node: int, _packet_bytes: int) -> int:
        """Bytes of the audited node's round-step evidence (from :meth:`check`)."""
        return self.sizes[node]


class _NoRows:
    """Stands for the rows of a driver-side store entry: indexing gives zero-width rows."""

    def __getitem__(self, index: Any) -> Any:
        import numpy as np

        count = np.asarray(index).shape[0] if np.ndim(index) else 1
        return np.zeros((count, 1), np.int32)
