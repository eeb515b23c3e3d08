"""A shadow model: a candidate that decides the same live images as the running model, logged
beside the decisions, never sent to the PLC, never delaying the line.

    shadow = Shadow(station_config)           # in the dashboard process (nice +10, off the last core)
    shadow.load(data, filename="cand.onnx")  # checked like an upload (ONNX, metadata, OK classes)
    shadow.figures()                         # agreement with the live decisions, latency, reviewed recall
    shadow.stop()

It runs in the dashboard's process, not the station's: that process already runs at low priority
away from the decision loop's core, and reads the decision log through its own SQLite connection
(WAL), so the line's loop does no extra work at all. A worker thread follows `decisions` in id
order from the row that was last when the shadow was loaded, reads each image file again (only
when its bytes still hash to what was decided: a rewritten file is skipped, not misjudged),
decides it with the candidate under the station's rule (ok_classes, review_below; no fallback) and
writes one row of `shadow_decisions` per (decision, model): a row is never decided twice by a
shadow, even across restarts (the active shadow and its cursor are in `shadow_model`, so a
restarted station resumes it). Camera frames have no file: they are counted as skipped.

The fleet polls `GET /api/shadow` for the figures the station computes from its own tables
(docs/loop.md says why polling): images, agreement (the same OK / DEFECT / REVIEW), the
candidate's latency on this hardware (decode + inference, in this low-priority process: an upper
bound), and, over parts a person reviewed, each model's defect recall.
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeprune.errors import EdgepruneError
from edgeprune.outputs import atomic_file, file_sha256
from edgeprune.station.decision import Decider, LoadedModel
from edgeprune.station.review import connect
from edgeprune.station.sources import image_sha256, is_image

SCHEMA = """
CREATE TABLE IF NOT EXISTS shadow_model (
    one INTEGER PRIMARY KEY CHECK (one = 1),
    path TEXT,                     -- NULL: no shadow
    sha256 TEXT,
    started_ts REAL,
    start_after INTEGER,           -- the last decision id when it was loaded: it shadows what follows
    cursor INTEGER                 -- the last decision id it has looked at
);
CREATE TABLE IF NOT EXISTS shadow_decisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    decision_id INTEGER NOT NULL REFERENCES decisions (id),
    model_sha256 TEXT NOT NULL,    -- the shadow model that decided it
    ts REAL NOT NULL,
    decision TEXT NOT NULL,        -- OK | DEFECT | REVIEW | ERROR (never sent to the PLC)
    predicted_class TEXT,
    probability REAL,
    latency_ms REAL,               -- decode + inference in the dashboard's low-priority process
    UNIQUE (decision_id, model_sha256)
);
"""
BATCH = 64
IDLE_S = 0.1


@dataclass
class ShadowFigures:
    model_sha256: str | None
    active: bool
    images: int  # live images the shadow decided
    skipped: int  # live images it could not read again (camera frames, files gone or rewritten)
    agreement: float | None  # same OK / DEFECT / REVIEW as the live decision
    latency_ms_p50: float | None
    latency_ms_p99: float | None
    reviewed: int  # of those, parts a person labelled
    reviewed_defects: int
    live_defect_recall: float | None  # over the reviewed defects: the running model's calls
    shadow_defect_recall: float | None  # ... and the shadow's
    live_models: list[str]  # the running model(s) it was compared with
    # Paired, part by part (the fleet tests them, not the two rates): reviewed defects that only
    # one of the two models called a defect, and reviewed parts whose pass / reject call only one
    # of them got right.
    defects_caught_by_live_only: int = 0
    defects_caught_by_shadow_only: int = 0
    reviewed_right_live_only: int = 0
    reviewed_right_shadow_only: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Shadow:
    def __init__(self, config, models_dir: Path | None = None):
        self.config = config
        db_path = Path(config.db)
        self.models_dir = models_dir or db_path.with_name(db_path.stem + "-models")
        self._db = connect(db_path, SCHEMA)
        self._db_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._decider: Decider | None = None
        self._sha: str | None = None
        self._skipped = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        row = self._query("SELECT path, sha256 FROM shadow_model WHERE one = 1 AND path IS NOT NULL", one=True)
        if row is not None:  # a restarted station resumes its shadow, when the file is intact
            try:
                self._start(Path(row[0]), row[1])
            except (EdgepruneError, OSError):
                self._execute("UPDATE shadow_model SET path = NULL, sha256 = NULL WHERE one = 1")

    # ------------------------------------------------------------------------- database

    def _execute(self, sql: str, args: tuple = ()) -> None:
        with self._db_lock:
            self._db.execute(sql, args)

    def _query(self, sql: str, args: tuple = (), one: bool = False):
        with self._db_lock:
            cur = self._db.execute(sql, args)
            return cur.fetchone() if one else cur.fetchall()

    # ------------------------------------------------------------------------- control

    def load(self, data: bytes, *, filename: str | None) -> dict[str, Any]:
        """Check and start a shadow model (replacing any running one); returns its sha256."""
        from edgeprune.station.rollout import RolloutRefused, check_onnx

        check_onnx(data)
        sha = hashlib.sha256(data).hexdigest()
        target = self.models_dir / f"{sha}.onnx"
        if not (target.is_file() and file_sha256(target) == sha):
            self.models_dir.mkdir(parents=True, exist_ok=True)
            with atomic_file(target, overwrite=True, what="shadow model") as work:
                work.write_bytes(data)
        self.stop()
        try:
            self._start(target, sha, fresh=True)
        except EdgepruneError as exc:
            raise RolloutRefused(f"{filename or 'the shadow model'} ({sha[:12]}) refused: "
                                 f"{str(exc).replace(str(target), 'it')}", 422) from None
        return {"shadow": True, "sha256": sha, "start_after": self._start_after()}

    def _start(self, path: Path, sha: str, fresh: bool = False) -> None:
        cfg = self.config
        model = LoadedModel(path, runtime=cfg.runtime, threads=1)
        if model.sha256 != sha:
            raise EdgepruneError(f"{path} changed on disk ({sha[:12]} expected)")
        decider = Decider(model, cfg.ok_classes, cfg.review_below)  # checks the OK classes
        if fresh:
            last = self._query("SELECT COALESCE(MAX(id), 0) FROM decisions", one=True)[0]
            self._execute(
                "INSERT INTO shadow_model (one, path, sha256, started_ts, start_after, cursor) VALUES (1,?,?,?,?,?) "
                "ON CONFLICT(one) DO UPDATE SET path=excluded.path, sha256=excluded.sha256, "
                "started_ts=excluded.started_ts, start_after=excluded.start_after, cursor=excluded.cursor",
                (str(path), sha, time.time(), last, last))
        with self._state_lock:
            self._decider, self._sha, self._skipped = decider, sha, 0
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._follow, args=(decider, self._stop), daemon=True,
                                            name="edgeprune-shadow")
            self._thread.start()

    def _start_after(self) -> int | None:
        row = self._query("SELECT start_after FROM shadow_model WHERE one = 1", one=True)
        return row[0] if row else None

    def stop(self, clear: bool = False) -> dict[str, Any]:
        with self._state_lock:
            thread, stop, sha = self._thread, self._stop, self._sha
            self._thread = None
            self._decider = None
        stop.set()
        if thread is not None:
            thread.join(10)
        if clear:
            self._execute("UPDATE shadow_model SET path = NULL WHERE one = 1")
        return {"shadow": False, "stopped": sha}

    def close(self) -> None:
        self.stop()
        with self._db_lock:
            self._db.close()

    # ------------------------------------------------------------------------- the worker

    def _follow(self, decider: Decider, stop: threading.Event) -> None:
        sha = decider.model.sha256
        while not stop.is_set():
            try:
                cursor = self._query("SELECT cursor FROM shadow_model WHERE one = 1 AND sha256 = ?", (sha,), one=True)
                if cursor is None:
                    return
                rows = self._query("SELECT id, path, sha256 FROM decisions WHERE id > ? ORDER BY id LIMIT ?",
                                   (cursor[0], BATCH))
            except Exception:  # noqa: BLE001 - a closed or busy database: try again shortly
                if stop.wait(IDLE_S):
                    return
                continue
            if not rows:
                stop.wait(IDLE_S)
                continue
            for decision_id, path, image_sha in rows:
                if stop.is_set():
                    return
                self._shadow_one(decider, decision_id, path, image_sha)

    def _shadow_one(self, decider: Decider, decision_id: int, path: str, image_sha: str) -> None:
        data = None
        if path and is_image(Path(path)):
            try:
                data = Path(path).read_bytes()
            except OSError:
                data = None
        if data is None or image_sha256(data) != image_sha:
            self._skipped += 1
            self._execute("UPDATE shadow_model SET cursor = ? WHERE one = 1 AND sha256 = ?",
                          (decision_id, decider.model.sha256))
            return
        start = time.perf_counter()
        verdict = decider.decide(data)
        latency_ms = (time.perf_counter() - start) * 1000.0
        with self._db_lock:  # the row and the cursor in one transaction: never decided twice
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(
                    "INSERT OR IGNORE INTO shadow_decisions (decision_id, model_sha256, ts, decision, "
                    "predicted_class, probability, latency_ms) VALUES (?,?,?,?,?,?,?)",
                    (decision_id, decider.model.sha256, time.time(), verdict.decision, verdict.predicted_class,
                     verdict.probability, latency_ms))
                self._db.execute("UPDATE shadow_model SET cursor = ? WHERE one = 1 AND sha256 = ?",
                                 (decision_id, decider.model.sha256))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    # ------------------------------------------------------------------------- what the fleet reads

    def figures(self, sha: str | None = None) -> ShadowFigures:
        """The figures of shadow model `sha` (default: the active one) over every image it decided."""
        with self._state_lock:
            active_sha, skipped = self._sha if self._decider is not None else None, self._skipped
        sha = sha or active_sha
        ok = set(self.config.ok_classes)
        rows = self._query(
            "SELECT s.decision, d.decision, s.latency_ms, r.label, s.predicted_class, d.predicted_class, "
            "d.model_sha256 FROM shadow_decisions s JOIN decisions d ON d.id = s.decision_id "
            "LEFT JOIN reviews r ON r.decision_id = s.decision_id WHERE s.model_sha256 = ? ORDER BY s.id",
            (sha,)) if sha else []
        latencies = np.array([r[2] for r in rows if r[2] is not None], dtype=float)
        reviewed = [r for r in rows if r[3] is not None]
        defects = [r for r in reviewed if r[3] not in ok]

        def rejects(row: tuple, index: int) -> bool:
            return row[index] is not None and row[index] not in ok

        def recall(index: int) -> float | None:
            if not defects:
                return None
            return sum(rejects(r, index) for r in defects) / len(defects)

        live_right = [rejects(r, 5) == (r[3] not in ok) for r in reviewed]
        shadow_right = [rejects(r, 4) == (r[3] not in ok) for r in reviewed]

        return ShadowFigures(
            model_sha256=sha, active=sha is not None and sha == active_sha, images=len(rows),
            skipped=skipped if sha == active_sha else 0,
            agreement=sum(r[0] == r[1] for r in rows) / len(rows) if rows else None,
            latency_ms_p50=float(np.percentile(latencies, 50)) if len(latencies) else None,
            latency_ms_p99=float(np.percentile(latencies, 99)) if len(latencies) else None,
            reviewed=len(reviewed), reviewed_defects=len(defects),
            live_defect_recall=recall(5), shadow_defect_recall=recall(4),
            live_models=sorted({r[6] for r in rows if r[6]}),
            defects_caught_by_live_only=sum(rejects(r, 5) and not rejects(r, 4) for r in defects),
            defects_caught_by_shadow_only=sum(rejects(r, 4) and not rejects(r, 5) for r in defects),
            reviewed_right_live_only=sum(a and not b for a, b in zip(live_right, shadow_right)),
            reviewed_right_shadow_only=sum(b and not a for a, b in zip(live_right, shadow_right)))
