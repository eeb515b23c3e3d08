"""The review queue: parts the station was unsure about (REVIEW), labelled by a person, and the
export of every labelled part as a class-folder tree that `edgeprune train` and `prune` take.

Labels live in their own tables in the station's database beside `decisions`, which stays the
untouched record of what the station decided: `review_history` keeps every label given (time,
label, client, running model), so a relabelled part shows who changed what when; `reviews` holds
the current label per decision id (the latest), which the queue and the export read. The dashboard and `station export-labels` open their own connection (SQLite in WAL mode
lets them read while the station writes), so a review never waits on the conveyor or the other
way round, and the export works on a copy of the database with no station running.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from edgeprune.errors import EdgepruneError
from edgeprune.station.sources import image_sha256, is_image

SCHEMA = """
CREATE TABLE IF NOT EXISTS reviews (
    decision_id INTEGER PRIMARY KEY REFERENCES decisions (id),
    ts REAL NOT NULL,
    label TEXT NOT NULL,
    model_sha256 TEXT
);
CREATE TABLE IF NOT EXISTS review_history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    decision_id INTEGER NOT NULL REFERENCES decisions (id),
    ts REAL NOT NULL,
    label TEXT NOT NULL,
    client TEXT,
    model_sha256 TEXT
);
CREATE INDEX IF NOT EXISTS review_history_decision ON review_history (decision_id, id);
-- A database labelled before the history existed: its labels become the first history rows.
INSERT INTO review_history (decision_id, ts, label, client, model_sha256)
    SELECT decision_id, ts, label, NULL, model_sha256 FROM reviews
    WHERE NOT EXISTS (SELECT 1 FROM review_history);
"""


def connect(path: str | Path, schema: str) -> sqlite3.Connection:
    """A second connection to the station's database (WAL), with `schema` created."""
    path = Path(path)
    try:
        db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=30)
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(schema)
        db.execute("SELECT 1 FROM decisions LIMIT 1")
    except sqlite3.DatabaseError as exc:
        raise EdgepruneError(f"{path} is not a station database: {exc}") from None
    return db


class UnknownDecision(EdgepruneError):
    pass


class ReviewLog:
    def __init__(self, db_path: str | Path):
        self.path = Path(db_path)
        self._db = connect(self.path, SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def label(self, decision_id: int, label: str, *, classes: Sequence[str], model_sha256: str | None,
              client: str | None = None) -> dict:
        """Record a person's label for one decision (a later label replaces it as the current
        one; both stay in the history). The label must be one of `classes` (the running model's);
        an ERROR row (an unreadable image) cannot be labelled."""
        if label not in classes:
            raise EdgepruneError(f"label {label!r} is not one of the model's classes ({', '.join(classes)})")
        with self._lock:
            row = self._db.execute("SELECT decision FROM decisions WHERE id = ?", (decision_id,)).fetchone()
            if row is None:
                raise UnknownDecision(f"no decision {decision_id} in the log")
            if row[0] == "ERROR":
                raise EdgepruneError(f"decision {decision_id} is an unreadable image (ERROR): nothing to label")
            now = time.time()
            with self._db:  # both rows or neither (the connection is in autocommit otherwise)
                self._db.execute("BEGIN IMMEDIATE")
                self._db.execute(
                    "INSERT INTO review_history (decision_id, ts, label, client, model_sha256) "
                    "VALUES (?, ?, ?, ?, ?)", (decision_id, now, label, client, model_sha256))
                self._db.execute(
                    "INSERT INTO reviews (decision_id, ts, label, model_sha256) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT(decision_id) DO UPDATE SET ts = excluded.ts, label = excluded.label, "
                    "model_sha256 = excluded.model_sha256", (decision_id, now, label, model_sha256))
        return {"id": decision_id, "label": label, "labels": len(self.history(decision_id))}

    def history(self, decision_id: int) -> list[dict[str, Any]]:
        """Every label given to one decision, oldest first."""
        keys = ("ts", "label", "client", "model_sha256")
        with self._lock:
            rows = self._db.execute(f"SELECT {', '.join(keys)} FROM review_history WHERE decision_id = ? "
                                    "ORDER BY id", (decision_id,)).fetchall()
        return [dict(zip(keys, r)) for r in rows]

    def labels_of(self, decision_ids: Sequence[int]) -> dict[int, str]:
        """The current label of each of these decisions that a person labelled."""
        ids = [int(i) for i in decision_ids]
        if not ids:
            return {}
        with self._lock:
            rows = self._db.execute(
                "SELECT decision_id, label FROM reviews WHERE decision_id BETWEEN ? AND ?", (min(ids), max(ids))
            ).fetchall()
        wanted = set(ids)
        return {d: label for d, label in rows if d in wanted}

    def queue(self, limit: int = 50) -> list[dict[str, Any]]:
        """REVIEW decisions no one has labelled yet, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT d.id, d.ts, d.path, d.predicted_class, d.probability, d.true_class FROM decisions d "
                "LEFT JOIN reviews r ON r.decision_id = d.id WHERE d.decision = 'REVIEW' AND r.decision_id IS NULL "
                "ORDER BY d.id LIMIT ?", (limit,)).fetchall()
        keys = ("id", "ts", "path", "predicted_class", "probability", "true_class")
        return [dict(zip(keys, r)) for r in rows]

    def backlog(self) -> int:
        with self._lock:
            return int(self._db.execute(
                "SELECT COUNT(*) FROM decisions d LEFT JOIN reviews r ON r.decision_id = d.id "
                "WHERE d.decision = 'REVIEW' AND r.decision_id IS NULL").fetchone()[0])

    def labelled(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT d.id, d.path, d.sha256, r.label FROM reviews r JOIN decisions d ON d.id = r.decision_id "
                "ORDER BY d.id").fetchall()
        return [dict(zip(("id", "path", "sha256", "label"), r)) for r in rows]


@dataclass
class ExportResult:
    out: Path
    written: dict[str, int]  # images per class
    skipped: list[str]  # why each labelled part was left out (file gone or changed since)

    @property
    def total(self) -> int:
        return sum(self.written.values())


def export_labels(db_path: str | Path, out: str | Path) -> ExportResult:
    """Every labelled part as OUT/<label>/<decision id>_<file name>, checked against the sha256 the
    log recorded (a file changed since it was decided is left out, not exported under a wrong
    label). OUT must not exist or be empty; it appears whole or not at all."""
    from edgeprune.outputs import atomic_folder, check_output_folder

    db_path = Path(db_path)
    if not db_path.is_file():
        raise EdgepruneError(f"station database not found: {db_path}")
    out = Path(out)
    if out.is_dir() and any(out.iterdir()):  # never merged into an earlier export: name a new folder
        raise EdgepruneError(f"label export folder {out} already exists and is not empty: choose a new folder")
    out = check_output_folder(out, inputs=[db_path], what="label export folder")
    log = ReviewLog(db_path)
    try:
        items = log.labelled()
    finally:
        log.close()
    if not items:
        raise EdgepruneError(f"{db_path} holds no labelled parts yet: label REVIEW items on the dashboard first")
    written: dict[str, int] = {}
    skipped: list[str] = []
    with atomic_folder(out, what="label export folder") as tmp:
        for item in items:
            source = Path(item["path"])
            if not is_image(source):
                skipped.append(f"decision {item['id']}: {source} is not an image file (a camera frame?)")
                continue
            try:
                data = source.read_bytes()
            except OSError as exc:
                skipped.append(f"decision {item['id']}: {source}: {exc.strerror or exc}")
                continue
            if image_sha256(data) != item["sha256"]:
                skipped.append(f"decision {item['id']}: {source} changed since it was decided")
                continue
            if Path(item["label"]).name != item["label"] or item["label"] in (".", ".."):
                skipped.append(f"decision {item['id']}: label {item['label']!r} cannot be a folder name")
                continue
            folder = tmp / item["label"]
            folder.mkdir(exist_ok=True)
            (folder / f"{item['id']:08d}_{source.name}").write_bytes(data)
            written[item["label"]] = written.get(item["label"], 0) + 1
        if not written:
            raise EdgepruneError(f"none of the {len(items)} labelled parts could be exported: "
                                 + "; ".join(skipped[:3]))
    return ExportResult(Path(out), written, skipped)
