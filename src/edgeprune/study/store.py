"""The study's SQLite database in RUN_DIR (`study.db`): one row per finished experiment.

A row is written in one transaction the moment its experiment has finished, after its checkpoint
folder and ONNX file are complete on disk (both are written under temporary names and renamed
into place by edgeprune.outputs). So a row always names files that exist, and an experiment
without a row is unfinished: `--resume` deletes what it left in its folder and runs it again.
SQLite (in the standard library) gives the atomic commit; nothing here is hand-rolled beyond
the schema. `attempts` records every start, so a test (or a user) can see that a resume re-ran
nothing that had finished.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sqlite3
import time
from pathlib import Path
from typing import Any

from edgeprune.errors import EdgepruneError

DB_NAME = "study.db"

SCHEMA = """
CREATE TABLE IF NOT EXISTS experiments (
    key TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    fold INTEGER NOT NULL,
    baseline_key TEXT,
    folder TEXT NOT NULL,
    config_json TEXT NOT NULL,
    result_json TEXT NOT NULL,
    wall_s REAL NOT NULL,
    started_at REAL NOT NULL,
    finished_at REAL NOT NULL,
    host TEXT
);
CREATE TABLE IF NOT EXISTS attempts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL,
    name TEXT NOT NULL,
    started_at REAL NOT NULL,
    host TEXT
);
CREATE TABLE IF NOT EXISTS study (
    k TEXT PRIMARY KEY,
    v TEXT NOT NULL
);
"""


class StudyStore:
    def __init__(self, run_dir: str | Path, *, create: bool = False):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / DB_NAME
        if not create and not self.path.is_file():
            raise EdgepruneError(f"no study database in {self.run_dir} (expected {self.path}): "
                                 "run `edgeprune study run CONFIG --out RUN_DIR` first")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        existed = self.path.is_file() and self.path.stat().st_size > 0
        self.db = sqlite3.connect(self.path, timeout=60)
        try:
            if existed:
                # A damaged file (truncated, overwritten, not SQLite at all) fails here with a
                # message that names it, not later in a query with a bare sqlite3 traceback.
                problems = [r[0] for r in self.db.execute("PRAGMA quick_check").fetchall()]
                if problems != ["ok"]:
                    raise sqlite3.DatabaseError("; ".join(str(p) for p in problems[:3]))
            self.db.executescript(SCHEMA)
            self.db.commit()
        except sqlite3.DatabaseError as exc:
            self.db.close()
            raise EdgepruneError(
                f"{self.path} is damaged and cannot be read ({exc}): restore it from a copy, or run the "
                f"study again into a new --out (the finished experiments' folders in {self.run_dir} "
                "are kept, but without their rows a resume would run them again)") from None

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> StudyStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---------------------------------------------------------------- study-level values
    def set_value(self, key: str, value: Any) -> None:
        with self.db:
            self.db.execute("INSERT OR REPLACE INTO study (k, v) VALUES (?, ?)", (key, json.dumps(value)))

    def value(self, key: str, default: Any = None) -> Any:
        row = self.db.execute("SELECT v FROM study WHERE k = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    # ---------------------------------------------------------------- experiments
    def done_keys(self) -> set[str]:
        return {k for (k,) in self.db.execute("SELECT key FROM experiments")}

    def record_attempt(self, key: str, name: str) -> None:
        with self.db:
            self.db.execute("INSERT INTO attempts (key, name, started_at, host) VALUES (?, ?, ?, ?)",
                            (key, name, time.time(), socket.gethostname()))

    def attempts(self) -> dict[str, int]:
        return dict(self.db.execute("SELECT key, COUNT(*) FROM attempts GROUP BY key"))

    def record_result(self, experiment, result: dict[str, Any], *, wall_s: float, started_at: float,
                      host: str | None = None) -> None:
        """One row, committed at once; a key already stored is an error, never a second row."""
        try:
            with self.db:
                self.db.execute(
                    "INSERT INTO experiments (key, name, kind, fold, baseline_key, folder, config_json,"
                    " result_json, wall_s, started_at, finished_at, host)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (experiment.key, experiment.name, experiment.kind, experiment.fold,
                     experiment.baseline_key, experiment.folder, json.dumps(experiment.config),
                     json.dumps(result, default=str), wall_s, started_at, time.time(),
                     host or socket.gethostname()))
        except sqlite3.IntegrityError:
            raise EdgepruneError(f"internal: experiment {experiment.name} ({experiment.key}) is "
                                 "already in the database") from None

    def replace_results(self, results: list[tuple[str, dict[str, Any]]]) -> None:
        """New result records for stored experiments (key, result), in one transaction: a re-timed
        study is updated whole or not at all."""
        with self.db:
            for key, result in results:
                changed = self.db.execute("UPDATE experiments SET result_json = ? WHERE key = ?",
                                          (json.dumps(result, default=str), key)).rowcount
                if changed != 1:
                    raise EdgepruneError(f"internal: experiment {key} is not in the database")

    def rows(self) -> list[dict[str, Any]]:
        cursor = self.db.execute(
            "SELECT key, name, kind, fold, baseline_key, folder, config_json, result_json, wall_s,"
            " started_at, finished_at, host FROM experiments ORDER BY started_at")
        out = []
        for (key, name, kind, fold, baseline_key, folder, config_json, result_json, wall_s, started,
             finished, host) in cursor:
            out.append({"key": key, "name": name, "kind": kind, "fold": fold, "baseline_key": baseline_key,
                        "folder": folder, "config": json.loads(config_json),
                        "result": json.loads(result_json), "wall_s": wall_s, "started_at": started,
                        "finished_at": finished, "host": host})
        return out


LOCK_NAME = "study.lock"


class RunLock:
    """The run folder's lock, held by the one `study run` writing into it (another run on the same
    --out would delete the first one's unfinished experiment folders, which have no row yet).

    An advisory fcntl lock on RUN_DIR/study.lock: the kernel releases it when its holder ends,
    however it ends, so a crashed run never leaves a stale lock; the holder's pid is written into
    the file for the error message. The file stays after the run (removing it would let a racing
    run lock an unlinked copy)."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        self._created = not self.run_dir.exists()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise EdgepruneError(
                f"another `study run` (pid {holder}) is running in {self.run_dir}: wait for it to "
                f"finish (then add --resume), stop it, or choose another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        if self._created and os.listdir(self.run_dir) == [LOCK_NAME]:
            # A run that failed before writing anything leaves no folder behind (a run racing
            # for this lock found the folder empty and will be refused or make its own).
            os.unlink(self.path)
            os.rmdir(self.run_dir)
        os.close(self._fd)  # closing the descriptor drops the lock
        self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
