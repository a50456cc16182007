"""The router's semantic cache: validated answers found again by embedding similarity.

Rows live in SQLite (``cache`` table: id, float32 vector, answer, tier, time); the vectors are
also held in one numpy matrix, so a lookup is one matrix-vector product over at most
``entries`` unit vectors. The router re-runs the new prompt's validators on a hit before
serving it (a cached answer is never served where a validator would reject it).
"""

from __future__ import annotations

import sqlite3
import time

import attrs

SCHEMA = """
CREATE TABLE IF NOT EXISTS cache (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    vector BLOB NOT NULL,
    answer TEXT NOT NULL,
    tier TEXT NOT NULL,
    created REAL NOT NULL
)
"""


@attrs.frozen
class Hit:
    """A cached answer, the tier that gave it and its cosine similarity to the prompt."""

    answer: str
    tier: str
    similarity: float


class SemanticCache:
    """Nearest-neighbour answers over unit vectors (see the module docstring)."""

    def __init__(self, db: sqlite3.Connection, entries: int, threshold: float):
        import numpy as np

        self.db, self.entries, self.threshold = db, entries, threshold
        db.execute(SCHEMA)
        rows = db.execute("SELECT id, vector, answer, tier FROM cache ORDER BY id").fetchall()
        self.ids = [r[0] for r in rows]
        self.meta = [(r[2], r[3]) for r in rows]
        dim = len(rows[0][1]) // 4 if rows else 0
        self.matrix = np.array([np.frombuffer(r[1], np.float32) for r in rows], np.float32)
        self.matrix = self.matrix.reshape(len(rows), dim)

    def nearest(self, vector) -> list[Hit]:
        """Cached answers at or above the threshold, most similar first."""
        import numpy as np

        v = np.asarray(vector, np.float32)
        if not len(self.ids) or self.matrix.shape[1] != v.shape[0]:
            return []
        sims = self.matrix @ v
        order = np.argsort(-sims)
        return [Hit(*self.meta[i], float(sims[i])) for i in order[:8] if sims[i] >= self.threshold]

    def put(self, vector, answer: str, tier: str) -> None:
        """Keep a validated answer; drop the oldest beyond ``entries``."""
        import numpy as np

        v = np.asarray(vector, np.float32)
        if len(self.ids) and self.matrix.shape[1] != v.shape[0]:
            return  # another embedding model: keep the cache consistent, do not mix
        cur = self.db.execute(
            "INSERT INTO cache (vector, answer, tier, created) VALUES (?, ?, ?, ?)",
            (v.tobytes(), answer, tier, time.time()),
        )
        self.db.commit()
        self.ids.append(cur.lastrowid)
        self.meta.append((answer, tier))
        self.matrix = np.vstack([self.matrix.reshape(-1, v.shape[0]), v[None, :]])
        while len(self.ids) > self.entries:
            self.db.execute("DELETE FROM cache WHERE id = ?", (self.ids.pop(0),))
            self.meta.pop(0)
            self.matrix = self.matrix[1:]
        self.db.commit()
