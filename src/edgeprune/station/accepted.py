"""The model a station was told to run, kept in its own database so a restart runs it again.

    accepted = AcceptedModels(db_path)
    accepted.push(new_path, new_sha, previous_path, previous_sha, config_path, config_sha, reason="upload")
    accepted.pop()                 # a rollback: the model that ran before, or None
    accepted.current()             # the accepted model, or None (the config's model rules)

Two tables beside `decisions`:

- `accepted_model`: one row, the model a gated upload or a rollback switched to, with the
  config's model (path, sha256) at that time. At start the station runs the accepted model
  instead of the config's, unless the config now names other bytes: a person who edits the config
  after a roll-out means it, and is obeyed (the log and /api/status say which won and why).
- `model_stack`: the models that ran before, newest on top: what a rollback returns to, across
  restarts too (the roll-out log, `model_rollouts`, records attempts; this is the state).

Written by the dashboard process (rollout.Rollouts) and read by the station's process at start,
each through its own SQLite connection (WAL), each change in one transaction.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS accepted_model (
    one INTEGER PRIMARY KEY CHECK (one = 1),
    ts REAL NOT NULL,
    path TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    reason TEXT NOT NULL,          -- upload | rollback
    config_path TEXT NOT NULL,     -- the config's model when this was accepted
    config_sha256 TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS model_stack (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    path TEXT NOT NULL,
    sha256 TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class AcceptedModel:
    path: Path
    sha256: str
    ts: float
    reason: str
    config_path: Path
    config_sha256: str


@dataclass(frozen=True)
class StartModel:
    """Which model a starting station runs, and why (for the log and /api/status)."""
    path: Path
    origin: str  # "config" | "accepted"
    detail: str


def _connect(db: str | Path) -> sqlite3.Connection:
    con = sqlite3.connect(str(db), timeout=30, isolation_level=None, check_same_thread=False)
    con.execute("PRAGMA journal_mode=WAL")
    con.executescript(SCHEMA)
    return con


class AcceptedModels:
    def __init__(self, db: str | Path):
        self._db = _connect(db)

    def close(self) -> None:
        self._db.close()

    def current(self) -> AcceptedModel | None:
        row = self._db.execute("SELECT path, sha256, ts, reason, config_path, config_sha256 "
                               "FROM accepted_model WHERE one = 1").fetchone()
        if row is None:
            return None
        return AcceptedModel(Path(row[0]), row[1], row[2], row[3], Path(row[4]), row[5])

    def stack(self) -> list[tuple[Path, str]]:
        """The models a rollback returns to, oldest first."""
        return [(Path(p), s) for p, s in self._db.execute("SELECT path, sha256 FROM model_stack ORDER BY id")]

    def _set(self, path: Path, sha: str, reason: str, config_path: Path, config_sha: str) -> None:
        self._db.execute(
            "INSERT INTO accepted_model (one, ts, path, sha256, reason, config_path, config_sha256) "
            "VALUES (1,?,?,?,?,?,?) ON CONFLICT(one) DO UPDATE SET ts=excluded.ts, path=excluded.path, "
            "sha256=excluded.sha256, reason=excluded.reason, config_path=excluded.config_path, "
            "config_sha256=excluded.config_sha256",
            (time.time(), str(path), sha, reason, str(config_path), config_sha))

    def push(self, path: Path, sha: str, previous: tuple[Path, str], config: tuple[Path, str]) -> None:
        """An accepted upload: `previous` goes on the rollback stack, `path` becomes the accepted model."""
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("INSERT INTO model_stack (ts, path, sha256) VALUES (?,?,?)",
                             (time.time(), str(previous[0]), previous[1]))
            self._set(Path(path), sha, "upload", *config)

    def pop(self, config: tuple[Path, str]) -> None:
        """An accepted rollback: the top of the stack becomes the accepted model again."""
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            row = self._db.execute("SELECT id, path, sha256 FROM model_stack ORDER BY id DESC LIMIT 1").fetchone()
            if row is None:
                return
            self._db.execute("DELETE FROM model_stack WHERE id = ?", (row[0],))
            self._set(Path(row[1]), row[2], "rollback", *config)


def start_model(db: str | Path, config_model: Path) -> StartModel:
    """The model a station starts with: the accepted one when there is one, its file still holds
    the accepted bytes and the config still names the model it named at acceptance; else the
    config's, with the reason. The config's model is hashed only when there is an accepted one to
    compare it with; a missing file is the config's model, for the Classifier to report in the
    words a user acts on."""
    if not Path(db).is_file():
        return StartModel(config_model, "config", "the config's model")
    store = AcceptedModels(db)
    try:
        accepted = store.current()
    finally:
        store.close()
    if accepted is None:
        return StartModel(config_model, "config", "the config's model (no model accepted on this station)")
    from edgeprune.outputs import file_sha256

    try:
        config_sha = file_sha256(config_model)
    except OSError:
        return StartModel(config_model, "config", "the config's model")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(accepted.ts))
    if accepted.sha256 == config_sha:
        return StartModel(config_model, "config", f"the config's model (also the accepted one, {when})")
    if accepted.config_sha256 != config_sha:
        return StartModel(config_model, "config",
                          f"the config's model: the config names other bytes ({config_sha[:12]}) than when "
                          f"{accepted.sha256[:12]} was accepted ({when}, config model "
                          f"{accepted.config_sha256[:12]}), so the edited config wins")
    try:
        on_disk = file_sha256(accepted.path)
    except OSError:
        on_disk = None
    if on_disk != accepted.sha256:
        return StartModel(config_model, "config",
                          f"the config's model: the accepted model {accepted.path} ({accepted.sha256[:12]}, "
                          f"{when}) is {'missing' if on_disk is None else 'changed on disk'}")
    return StartModel(accepted.path, "accepted",
                      f"the accepted model {accepted.path.name} ({accepted.sha256[:12]}, by {accepted.reason} "
                      f"at {when}) instead of the config's {config_model.name} ({config_sha[:12]})")
