"""A node's durable state in SQLite: weights, round, reputation, bans, peers, segment index.

SQLite in WAL mode with ``synchronous=FULL``: a transaction that returned is on disk and
survives power loss; one cut short leaves the previous state. Every change a round makes
(weights, round number, reputations, bans, the round's log line) is one transaction, so a
restart never sees a half-applied round. Keys stay in their own 0600 files, never here.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import attrs

from qres.kernel.errors import IntegrityError

SCHEMA_VERSION = 4
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS model (
    id INTEGER PRIMARY KEY CHECK (id = 1), round INTEGER NOT NULL, weights BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS peers (
    did TEXT PRIMARY KEY, address TEXT NOT NULL DEFAULT '', reputation INTEGER NOT NULL,
    banned_at INTEGER NOT NULL DEFAULT -1, last_seen REAL NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS rounds (
    round INTEGER PRIMARY KEY, time REAL NOT NULL, error REAL NOT NULL, regime TEXT NOT NULL,
    received INTEGER NOT NULL, accepted INTEGER NOT NULL, peers INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS segments (
    seq INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, first_sample INTEGER NOT NULL,
    samples INTEGER NOT NULL, start_time REAL NOT NULL, end_time REAL NOT NULL,
    bytes INTEGER NOT NULL, sha256 TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS bans (
    did TEXT PRIMARY KEY, round INTEGER NOT NULL, issuer TEXT NOT NULL,
    evidence BLOB NOT NULL, time REAL NOT NULL, kind INTEGER NOT NULL DEFAULT 1);
CREATE TABLE IF NOT EXISTS sent (
    round INTEGER PRIMARY KEY, packet BLOB NOT NULL, answer BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS chain (
    id INTEGER PRIMARY KEY CHECK (id = 1), previous BLOB NOT NULL, blinding BLOB NOT NULL,
    start BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS chain_steps (
    round INTEGER PRIMARY KEY, step BLOB NOT NULL, inputs BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS lora (
    id INTEGER PRIMARY KEY CHECK (id = 1), round INTEGER NOT NULL, state BLOB NOT NULL);
"""
#: Each version's step to the next. Version 1 had no ``sent`` table (created by SCHEMA) and
#: no evidence kind (all were 1); version 2 had no round-step chain (``chain``,
#: ``chain_steps``, created by SCHEMA: the node starts its chain at its last stored packet);
#: version 3 had no adapter hierarchy (``lora``, created by SCHEMA: empty until a node with a
#: ``[lora]`` profile stores one).
MIGRATIONS = {
    "1": ["ALTER TABLE bans ADD COLUMN kind INTEGER NOT NULL DEFAULT 1"],
    "2": [],
    "3": [],
}


@attrs.frozen
class Segment:
    """One closed segment: its file, which samples it holds and when they were taken."""

    seq: int
    name: str
    first_sample: int
    samples: int
    start_time: float
    end_time: float
    bytes: int
    sha256: str


class State:
    """The node's database (one connection, used from one thread)."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db = sqlite3.connect(self.path, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.executescript(SCHEMA)
            check = self.db.execute("PRAGMA quick_check").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            raise IntegrityError(
                f"{self.path}: node state is not a readable SQLite database ({exc}); "
                "move it aside to start afresh"
            ) from exc
        if check != "ok":
            raise IntegrityError(f"{self.path}: node state failed its integrity check: {check}")
        version = self.get_meta("schema")
        if version in MIGRATIONS:
            with self.transaction():
                while version in MIGRATIONS:
                    for statement in MIGRATIONS[version]:
                        self.db.execute(statement)
                    version = str(int(version) + 1)
                self.set_meta("schema", str(SCHEMA_VERSION))
        elif version is None:
            self.set_meta("schema", str(SCHEMA_VERSION))
        elif version != str(SCHEMA_VERSION):
            raise IntegrityError(f"{self.path}: state schema {version}, expected {SCHEMA_VERSION}")

    def close(self) -> None:
        """Close the database."""
        self.db.close()

    def transaction(self):
        """A context manager: ``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on error)."""
        return _Transaction(self.db)

    # --- meta ------------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        """A stored setting or None."""
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        """Store a setting (inside or outside a transaction)."""
        self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    # --- model -----------------------------------------------------------------------------

    def load_model(self):
        """``(round, weights int32 array)`` or None before the first round."""
        import numpy as np

        row = self.db.execute("SELECT round, weights FROM model WHERE id = 1").fetchone()
        if row is None:
            return None
        return int(row[0]), np.frombuffer(row[1], dtype="<i4").astype(np.int32)

    def save_model(self, round_: int, weights) -> None:
        """Store the weights reached after ``round_`` (call inside a transaction)."""
        import numpy as np

        blob = np.asarray(weights, dtype="<i4").tobytes()
        self.db.execute("INSERT OR REPLACE INTO model VALUES (1, ?, ?)", (round_, blob))

    def log_round(
        self, round_: int, error: float, regime: str, received: int, accepted: int, peers: int
    ) -> None:
        """One line of the round log (call inside the round's transaction)."""
        self.db.execute(
            "INSERT OR REPLACE INTO rounds VALUES (?, ?, ?, ?, ?, ?, ?)",
            (round_, time.time(), error, regime, received, accepted, peers),
        )

    def rounds(self, limit: int = 100) -> list[dict]:
        """The last ``limit`` rounds, oldest first."""
        rows = self.db.execute(
            "SELECT round, time, error, regime, received, accepted, peers FROM rounds "
            "ORDER BY round DESC LIMIT ?",
            (limit,),
        ).fetchall()
        keys = ("round", "time", "error", "regime", "received", "accepted", "peers")
        return [dict(zip(keys, row, strict=True)) for row in reversed(rows)]

    # --- peers -----------------------------------------------------------------------------

    def peers(self) -> list[dict]:
        """Every peer: DID, address, reputation (Q16.16 of 1.0), round banned (-1: not)."""
        rows = self.db.execute(
            "SELECT did, address, reputation, banned_at, last_seen FROM peers ORDER BY did"
        ).fetchall()
        keys = ("did", "address", "reputation", "banned_at", "last_seen")
        return [dict(zip(keys, row, strict=True)) for row in rows]

    def save_peer(self, did: str, reputation: int, banned_at: int, address: str = "") -> None:
        """Insert or update one peer (call inside a transaction)."""
        self.db.execute(
            "INSERT INTO peers (did, address, reputation, banned_at, last_seen) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT(did) DO UPDATE SET reputation = excluded."
            "reputation, banned_at = excluded.banned_at, last_seen = excluded.last_seen, "
            "address = CASE WHEN excluded.address = '' THEN address ELSE excluded.address END",
            (did, address, reputation, banned_at, time.time()),
        )

    def save_ban(self, did: str, round_: int, issuer: str, evidence: bytes, kind: int = 1) -> None:
        """Record why ``did`` is banned: the round, whose check decided it (this node's DID)
        and the signed bytes that prove the fault, with their evidence kind (docs/node.md, "Ban
        notices"; empty when they cannot be passed on). Call inside a transaction."""
        self.db.execute(
            "INSERT OR IGNORE INTO bans (did, round, issuer, evidence, time, kind) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (did, round_, issuer, bytes(evidence), time.time(), kind),
        )

    def bans(self) -> list[dict]:
        """Every recorded ban, oldest first."""
        rows = self.db.execute(
            "SELECT did, round, issuer, evidence, time, kind FROM bans ORDER BY time, did"
        ).fetchall()
        keys = ("did", "round", "issuer", "evidence", "time", "kind")
        return [dict(zip(keys, row, strict=True)) for row in rows]

    # --- what this node signed -----------------------------------------------------------

    def save_sent(
        self,
        round_: int,
        packet: bytes,
        answer: bytes,
        keep: int,
        *,
        weights=None,
        chain=None,
        lora: tuple[int, bytes] | None = None,
    ) -> None:
        """Store the update packet signed for ``round_`` and its audit answer *before* it is
        sent, so a restart in the same round resends these bytes instead of signing a second,
        different update (an equivocation); rounds older than ``round_ - keep`` are dropped.
        In the same transaction: ``weights``, the base the packet commits to, and ``chain``,
        ``(previous, blinding, start)`` where the node's next round step starts (its steps
        so far are dropped: the packet's record holds them); ``lora``, ``(round, stored
        hierarchy)``: a LoRA node's hierarchy after learning the packet's window (its answer
        is empty: a LoRA packet has no audit answer)."""
        with self.transaction():
            self.db.execute(
                "INSERT OR REPLACE INTO sent VALUES (?, ?, ?)", (round_, packet, answer)
            )
            self.db.execute("DELETE FROM sent WHERE round < ?", (round_ - keep,))
            if weights is not None:
                self.save_weights(weights)
            if chain is not None:
                self.save_chain(*chain)
            if lora is not None:
                self.save_lora(*lora)

    def save_weights(self, weights) -> None:
        """Store the weights, keeping the round they belong to (call inside a transaction);
        before the first round closed there is no model to change: the node then starts
        from the genesis model, and its chain (``chain``) from the base it committed to."""
        import numpy as np

        blob = np.asarray(weights, dtype="<i4").tobytes()
        self.db.execute("UPDATE model SET weights = ? WHERE id = 1", (blob,))

    # --- the open round-step chain -------------------------------------------------------

    def save_chain(self, previous: bytes, blinding: bytes, start: bytes) -> None:
        """Start the round-step chain at ``previous`` (this node's last packet, empty for the
        genesis model), the blinding of its base and the base's weights (int32 little-endian);
        its steps are dropped. Call inside a transaction."""
        self.db.execute(
            "INSERT OR REPLACE INTO chain VALUES (1, ?, ?, ?)", (previous, blinding, start)
        )
        self.db.execute("DELETE FROM chain_steps")

    def add_chain_step(self, round_: int, step: bytes, inputs: bytes) -> None:
        """One aggregate of the open chain: the encoded sub-step and the input packets it
        names (call inside the round's transaction)."""
        self.db.execute(
            "INSERT OR REPLACE INTO chain_steps VALUES (?, ?, ?)", (round_, step, inputs)
        )

    def load_chain(self) -> dict | None:
        """The open chain: ``previous``, ``blinding``, ``start`` and ``steps`` (``(round,
        sub-step, inputs)`` in round order); None when none was stored."""
        row = self.db.execute("SELECT previous, blinding, start FROM chain WHERE id = 1").fetchone()
        if row is None:
            return None
        steps = self.db.execute("SELECT round, step, inputs FROM chain_steps ORDER BY round")
        return {
            "previous": bytes(row[0]),
            "blinding": bytes(row[1]),
            "start": bytes(row[2]),
            "steps": [(int(r), bytes(a), bytes(b)) for r, a, b in steps.fetchall()],
        }

    def sent(self) -> dict[int, tuple[bytes, bytes]]:
        """The stored packets and answers, by round."""
        rows = self.db.execute("SELECT round, packet, answer FROM sent").fetchall()
        return {int(r): (bytes(p), bytes(a)) for r, p, a in rows}

    # --- the adapter hierarchy (a node with a [lora] profile) ------------------------------

    def save_lora(self, round_: int, blob: bytes) -> None:
        """Store the hierarchy as it is after ``round_`` (call inside a transaction)."""
        self.db.execute("INSERT OR REPLACE INTO lora VALUES (1, ?, ?)", (round_, blob))

    def load_lora(self) -> tuple[int, bytes] | None:
        """``(round, stored hierarchy)`` or None when no hierarchy was stored."""
        row = self.db.execute("SELECT round, state FROM lora WHERE id = 1").fetchone()
        return None if row is None else (int(row[0]), bytes(row[1]))

    # --- segments --------------------------------------------------------------------------

    def segments(self) -> list[Segment]:
        """The index, in order."""
        rows = self.db.execute("SELECT * FROM segments ORDER BY seq").fetchall()
        return [Segment(*row) for row in rows]

    def add_segment(self, segment: Segment) -> None:
        """Index a closed segment (its file is already complete on disk)."""
        with self.transaction():
            self.db.execute(
                "INSERT OR REPLACE INTO segments VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                attrs.astuple(segment),
            )

    def samples_stored(self) -> int:
        """Samples held by indexed segments (where a restarted file source resumes)."""
        row = self.db.execute("SELECT MAX(first_sample + samples) FROM segments").fetchone()
        return int(row[0] or 0)


class _Transaction:
    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self):
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, exc_type, *_):
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")
