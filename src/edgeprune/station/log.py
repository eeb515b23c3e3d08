"""The decision log: SQLite in WAL mode, one row per image, and the PLC's outbox.

The `decisions` table is the record a quality engineer audits, and it is also the queue of PLC
signals: a row is written with `plc_status = 'pending'` in the same transaction as the decision
(and the replay position), so a decision and its signal exist together or not at all, in id
order. The forwarder marks a row `sent` only after the PLC acknowledged it (plc.py).

`UNIQUE(path, sha256)` is what makes "never decide an image twice" hold across restarts: an image
already in the log is skipped before it is classified, and even a race could not insert it twice.

One connection shared by the station's threads behind a lock: the writes are tiny and a lock is
simpler and faster here than one connection per thread contending for SQLite's write lock.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from edgeprune.errors import EdgepruneError

DECISIONS = ("OK", "DEFECT", "REVIEW", "ERROR")
DECISION_CODES = {"OK": 0, "DEFECT": 1, "REVIEW": 2}  # the value written to the PLC's register
PLC_STATUSES = ("sent", "pending", "not_needed")

SCHEMA = """
CREATE TABLE IF NOT EXISTS decisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    source TEXT NOT NULL,
    path TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    predicted_class TEXT,
    probability REAL,
    decision TEXT NOT NULL CHECK (decision IN ('OK', 'DEFECT', 'REVIEW', 'ERROR')),
    latency_ms REAL,
    model_sha256 TEXT,
    plc_status TEXT NOT NULL CHECK (plc_status IN ('sent', 'pending', 'not_needed')),
    true_class TEXT,
    UNIQUE (path, sha256)
);
CREATE INDEX IF NOT EXISTS decisions_pending ON decisions (plc_status) WHERE plc_status = 'pending';
CREATE TABLE IF NOT EXISTS station_state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS alarms (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    kind TEXT NOT NULL,
    message TEXT NOT NULL
);
"""

COLUMNS = ("id", "ts", "source", "path", "sha256", "predicted_class", "probability", "decision",
           "latency_ms", "model_sha256", "plc_status", "true_class")


@dataclass(frozen=True)
class Decision:
    """One row before it is written (no id yet)."""

    ts: float
    source: str
    path: str
    sha256: str
    predicted_class: str | None
    probability: float | None
    decision: str
    latency_ms: float | None
    model_sha256: str | None
    true_class: str | None = None


@dataclass(frozen=True)
class Signal:
    """A pending PLC signal: the row's id (the part's sequence id) and its decision."""

    id: int
    decision: str


class DecisionLog:
    def __init__(self, path: str | Path, synchronous: str = "NORMAL"):
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: autocommit; transactions are explicit (BEGIN IMMEDIATE).
            self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None,
                                       timeout=30)
            mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise EdgepruneError(f"{self.path}: SQLite refused WAL mode ({mode}); put the "
                                     "database on a local disk")
            # NORMAL in WAL mode: a commit survives the process being killed (it is in the OS's
            # cache); FULL also survives a power cut, at an fsync per decision.
            self._db.execute(f"PRAGMA synchronous={synchronous}")
            self._db.executescript(SCHEMA)
            self._check_columns()
        except sqlite3.DatabaseError as exc:
            raise EdgepruneError(f"{self.path} is not a usable station database: {exc}") from None
        self._lock = threading.RLock()

    def _check_columns(self) -> None:
        found = tuple(row[1] for row in self._db.execute("PRAGMA table_info(decisions)"))
        if found != COLUMNS:
            raise EdgepruneError(f"{self.path}: its decisions table has columns {found}, not the "
                                 f"station's {COLUMNS}: another program's database?")

    def close(self) -> None:
        with self._lock:
            self._db.close()  # idempotent in sqlite3

    # ------------------------------------------------------------------------- writing

    def seen(self, path: str, sha256: str) -> bool:
        with self._lock:
            row = self._db.execute("SELECT 1 FROM decisions WHERE path = ? AND sha256 = ?",
                                   (path, sha256)).fetchone()
        return row is not None

    def add(self, decision: Decision, *, needs_signal: bool, state: dict[str, str] | None = None) -> int | None:
        """Write one decision (pending for the PLC when `needs_signal`) and the source's state
        (e.g. the replay position) in one transaction. None if the image was already decided."""
        status = "pending" if needs_signal else "not_needed"
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                cursor = self._db.execute(
                    "INSERT OR IGNORE INTO decisions (ts, source, path, sha256, predicted_class, "
                    "probability, decision, latency_ms, model_sha256, plc_status, true_class) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (decision.ts, decision.source, decision.path, decision.sha256,
                     decision.predicted_class, decision.probability, decision.decision,
                     decision.latency_ms, decision.model_sha256, status, decision.true_class))
                row_id = cursor.lastrowid if cursor.rowcount == 1 else None
                for key, value in (state or {}).items():
                    self._db.execute("INSERT INTO station_state (key, value) VALUES (?, ?) "
                                     "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, value))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return row_id

    def mark_sent(self, row_id: int) -> None:
        with self._lock:
            self._db.execute("UPDATE decisions SET plc_status = 'sent' WHERE id = ? AND plc_status = 'pending'",
                             (row_id,))

    def alarm(self, kind: str, message: str) -> None:
        with self._lock:
            self._db.execute("INSERT INTO alarms (ts, kind, message) VALUES (?, ?, ?)",
                             (time.time(), kind, message))

    def set_state(self, key: str, value: str) -> None:
        """A value kept across restarts (e.g. a latched drift alarm), outside a decision's transaction."""
        with self._lock:
            self._db.execute("INSERT INTO station_state (key, value) VALUES (?, ?) "
                             "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, value))

    def get_state(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM station_state WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    # ------------------------------------------------------------------------- reading

    def pending(self, limit: int = 100) -> list[Signal]:
        """The oldest pending PLC signals, in the order they must be delivered."""
        with self._lock:
            rows = self._db.execute("SELECT id, decision FROM decisions WHERE plc_status = 'pending' "
                                    "ORDER BY id LIMIT ?", (limit,)).fetchall()
        return [Signal(int(i), d) for i, d in rows]

    def backlog(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM decisions WHERE plc_status = 'pending'").fetchone()[0])

    def defects_sent(self) -> int:
        """DEFECT signals the PLC acknowledged: what its count register must hold (mod 65536)."""
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM decisions WHERE decision = 'DEFECT' "
                                        "AND plc_status = 'sent'").fetchone()[0])

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT decision, COUNT(*) FROM decisions GROUP BY decision").fetchall()
        out = {d: 0 for d in DECISIONS}
        out.update({d: int(n) for d, n in rows})
        return out

    def rows(self, since: int = 0, limit: int = 100, decision: str | None = None) -> list[dict[str, Any]]:
        """Rows with id > since, oldest first (the dashboard's /api/decisions?since=&limit=)."""
        query = f"SELECT {', '.join(COLUMNS)} FROM decisions WHERE id > ?"
        args: list[Any] = [since]
        if decision is not None:
            query += " AND decision = ?"
            args.append(decision)
        query += " ORDER BY id LIMIT ?"
        args.append(limit)
        with self._lock:
            rows = self._db.execute(query, args).fetchall()
        return [dict(zip(COLUMNS, row)) for row in rows]

    def last_id(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COALESCE(MAX(id), 0) FROM decisions").fetchone()[0])

    def alarms(self, limit: int = 20) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute("SELECT id, ts, kind, message FROM alarms ORDER BY id DESC LIMIT ?",
                                    (limit,)).fetchall()
        return [dict(zip(("id", "ts", "kind", "message"), row)) for row in rows]

    def iter_all(self) -> Iterator[dict[str, Any]]:
        return iter(self.rows(0, limit=-1))
