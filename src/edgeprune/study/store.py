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

import json
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
        self.db = sqlite3.connect(self.path, timeout=60)
        self.db.executescript(SCHEMA)
        self.db.commit()

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
