"""The response cache: LRU with a time-to-live, kept in SQLite so it survives restarts.

Only deterministic requests are cached (the engine decides); the key is a SHA-256 of the
backend's configuration, the model, and the request's messages and parameters.
"""

from __future__ import annotations

import collections
import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS responses ("
    "key TEXT PRIMARY KEY, value TEXT NOT NULL, created REAL NOT NULL, used REAL NOT NULL)"
)


def cache_key(parts: Mapping[str, Any]) -> str:
    """The SHA-256 (hex) of ``parts`` as canonical JSON (sorted keys, no spaces)."""
    canonical = json.dumps(parts, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class ResponseCache:
    """At most ``entries`` answers, each valid ``ttl_s`` seconds, least recently used evicted.

    With ``path``, every change is written to that SQLite file and the newest entries are read
    back on start. Thread-safe.
    """

    def __init__(
        self,
        entries: int,
        ttl_s: float,
        path: str | Path | None = None,
        clock: Callable[[], float] = time.time,
    ):
        self.entries, self.ttl_s, self.clock = entries, ttl_s, clock
        self._items: collections.OrderedDict[str, tuple[float, dict]] = collections.OrderedDict()
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        if path and entries:
            Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(Path(path).expanduser()), check_same_thread=False)
            self._db.execute(SCHEMA)
            self._load()

    def _load(self) -> None:
        now = self.clock()
        self._db.execute("DELETE FROM responses WHERE created < ?", (now - self.ttl_s,))
        rows = self._db.execute(
            "SELECT key, value, created FROM responses ORDER BY used DESC LIMIT ?", (self.entries,)
        ).fetchall()
        for key, value, created in reversed(rows):
            try:
                self._items[key] = (created, json.loads(value))
            except ValueError:  # a damaged row is dropped, not served
                continue
        self._db.execute(
            "DELETE FROM responses WHERE key NOT IN (SELECT key FROM responses "
            "ORDER BY used DESC LIMIT ?)",
            (self.entries,),
        )
        self._db.commit()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: str) -> dict | None:
        """The cached value, or None if absent or expired (an expired entry is dropped)."""
        if not self.entries:
            return None
        with self._lock:
            found = self._items.get(key)
            if found is None:
                return None
            created, value = found
            now = self.clock()
            if now - created > self.ttl_s:
                self._drop(key)
                return None
            self._items.move_to_end(key)
            if self._db is not None:
                self._db.execute("UPDATE responses SET used = ? WHERE key = ?", (now, key))
                self._db.commit()
            return value

    def put(self, key: str, value: dict) -> None:
        """Store ``value`` under ``key``, evicting the least recently used beyond the size."""
        if not self.entries:
            return
        with self._lock:
            now = self.clock()
            self._items[key] = (now, value)
            self._items.move_to_end(key)
            if self._db is not None:
                self._db.execute(
                    "INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?)",
                    (key, json.dumps(value), now, now),
                )
            while len(self._items) > self.entries:
                oldest = next(iter(self._items))
                self._drop(oldest)
            if self._db is not None:
                self._db.commit()

    def _drop(self, key: str) -> None:
        self._items.pop(key, None)
        if self._db is not None:
            self._db.execute("DELETE FROM responses WHERE key = ?", (key,))
            self._db.commit()

    def close(self) -> None:
        """Close the SQLite file."""
        if self._db is not None:
            self._db.close()
            self._db = None
