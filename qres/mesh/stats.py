"""A client's per-worker statistics and evidence, persisted in SQLite."""

from __future__ import annotations

import sqlite3
import time

SCHEMA = """
CREATE TABLE IF NOT EXISTS workers (
    did TEXT PRIMARY KEY,
    requests INTEGER NOT NULL DEFAULT 0,
    ok INTEGER NOT NULL DEFAULT 0,
    failures INTEGER NOT NULL DEFAULT 0,
    busy INTEGER NOT NULL DEFAULT 0,
    tokens INTEGER NOT NULL DEFAULT 0,
    ms_total REAL NOT NULL DEFAULT 0,
    spot_checks INTEGER NOT NULL DEFAULT 0,
    spot_failures INTEGER NOT NULL DEFAULT 0,
    reputation REAL NOT NULL DEFAULT 1,
    banned INTEGER NOT NULL DEFAULT 0,
    updated REAL NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS evidence (
    ts REAL NOT NULL,
    did TEXT NOT NULL,
    request_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    detail TEXT NOT NULL,
    message BLOB
);
"""
COUNTERS = ("requests", "ok", "failures", "busy", "tokens", "ms_total", "spot_checks",
            "spot_failures")  # fmt: skip


class WorkerStats:
    """Counters per worker DID (table ``workers``) and signed evidence (table ``evidence``)."""

    def __init__(self, path: str = ""):
        self.db = sqlite3.connect(path or ":memory:", check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL") if path else None
        self.db.executescript(SCHEMA)

    def add(self, did: str, **counts: float) -> None:
        """Add ``counts`` (names from :data:`COUNTERS`) to the worker's row."""
        unknown = set(counts) - set(COUNTERS)
        if unknown:
            raise ValueError(f"unknown counters {sorted(unknown)}")
        self.db.execute("INSERT OR IGNORE INTO workers (did) VALUES (?)", (did,))
        sets = ", ".join(f"{k} = {k} + ?" for k in counts)
        self.db.execute(
            f"UPDATE workers SET {sets}, updated = ? WHERE did = ?",  # noqa: S608 - fixed names
            (*counts.values(), time.time(), did),
        )
        self.db.commit()

    def set_standing(self, did: str, reputation: float, banned: bool) -> None:
        """Record the worker's reputation and ban."""
        self.db.execute("INSERT OR IGNORE INTO workers (did) VALUES (?)", (did,))
        self.db.execute(
            "UPDATE workers SET reputation = ?, banned = ? WHERE did = ?",
            (reputation, int(banned), did),
        )
        self.db.commit()

    def evidence(self, did: str, request_id: str, kind: str, detail: str, message=b"") -> None:
        """Keep a piece of evidence against ``did`` (with the signed message that proves it)."""
        self.db.execute(
            "INSERT INTO evidence VALUES (?, ?, ?, ?, ?, ?)",
            (time.time(), did, request_id, kind, detail, message),
        )
        self.db.commit()

    def rows(self) -> list[dict]:
        """Every worker's row, as dicts sorted by DID."""
        cur = self.db.execute("SELECT * FROM workers ORDER BY did")
        names = [c[0] for c in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def close(self) -> None:
        """Close the file."""
        self.db.close()
