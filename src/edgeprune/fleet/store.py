"""The fleet's database: every station's decisions, labels, samples and events, in SQLite (the
embedded default, `fleet.db`) or PostgreSQL, through SQLAlchemy 2 Core: one code path for both,
the dialect only choosing its `INSERT ... ON CONFLICT` construct.

Idempotent: `decisions` is keyed by (station_id, id), the station's own row id. A batch is stored
in one transaction with `ON CONFLICT DO NOTHING ... RETURNING id`, and the hourly aggregates are
advanced only by the rows that insert returned, in the same transaction: a batch received twice
(a resend after a broker restart, a station restart, a fleet server killed before its receipt)
adds nothing twice, neither rows nor counts, even with several ingest workers.

Fast reads over large logs: `/api/fleet` never scans `decisions`. It reads `stations` (one row
per station, with its running total), `hourly` (images, OK, DEFECT, REVIEW, ERROR per station and
hour), `hourly_classes` and `hourly_latency` (a log-spaced latency histogram per station and hour,
from which p50 / p99 come at the histogram's resolution, LATENCY_RATIO), all small.

`plc_status` is what the station's row said when it was uploaded (a row uploaded `pending` is not
updated when the PLC later acknowledges it: the fleet keeps decisions, the station its outbox).
"""

from __future__ import annotations

import base64
import json
import math
import re
import threading
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import (BigInteger, Column, Float, Index, Integer, MetaData, String, Table, Text, case,
                        create_engine, event, func, select)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from edgeprune.errors import EdgepruneError
from edgeprune.outputs import atomic_file
from edgeprune.station.log import COLUMNS, DECISIONS
from edgeprune.station.sources import image_sha256
from edgeprune.station.upload import Batch, BatchError

LATENCY_RATIO = 1.05  # histogram buckets: each 5 % wider than the last (p50/p99 within ~2.5 %)
WINDOW_H = 24  # the figures' window: the last 24 hours
IMAGE_EXTS = ("jpg", "jpeg", "png", "bmp", "tif", "tiff", "webp", "gif")
CLASS_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}")  # a folder name: no '/', no '..'
SHA256 = re.compile(r"[0-9a-f]{64}")
TEXT_COLUMNS = ("source", "path", "sha256", "predicted_class", "model_sha256", "plc_status", "true_class")

metadata = MetaData()

decisions = Table(
    "decisions", metadata,
    Column("station_id", String(64), primary_key=True),
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("ts", Float, nullable=False),
    Column("source", Text), Column("path", Text), Column("sha256", String(64)),
    Column("predicted_class", Text), Column("probability", Float),
    Column("decision", String(8), nullable=False), Column("latency_ms", Float),
    Column("model_sha256", String(64)), Column("plc_status", String(16)), Column("true_class", Text),
    Column("received_ts", Float, nullable=False),
)
stations = Table(
    "stations", metadata,
    Column("station_id", String(64), primary_key=True),
    Column("line", Text),
    Column("first_seen", Float, nullable=False),
    Column("last_seen", Float, nullable=False),
    Column("images", BigInteger, nullable=False, default=0),
    Column("model_sha256", String(64)),
    Column("plc_backlog", Integer),
    Column("summary", Text),  # the latest MQTT summary, as the station sent it
    Column("drift_state", String(16)),  # None (never reported), "ok" or "drift"
    Column("drift_detail", Text),
    Column("drift_ts", Float),
    Column("acknowledged_ts", Float),  # a person acknowledged the station's alarms at this time
)
hourly = Table(
    "hourly", metadata,
    Column("station_id", String(64), primary_key=True),
    Column("hour", Integer, primary_key=True, autoincrement=False),
    Column("images", Integer, nullable=False), Column("ok", Integer, nullable=False),
    Column("defect", Integer, nullable=False), Column("review", Integer, nullable=False),
    Column("error", Integer, nullable=False),
    Index("hourly_hour", "hour"),
)
hourly_classes = Table(
    "hourly_classes", metadata,
    Column("station_id", String(64), primary_key=True),
    Column("hour", Integer, primary_key=True, autoincrement=False),
    Column("predicted_class", String(64), primary_key=True),
    Column("n", Integer, nullable=False),
    Index("hourly_classes_hour", "hour"),
)
hourly_latency = Table(
    "hourly_latency", metadata,
    Column("station_id", String(64), primary_key=True),
    Column("hour", Integer, primary_key=True, autoincrement=False),
    Column("bucket", Integer, primary_key=True, autoincrement=False),
    Column("n", Integer, nullable=False),
    Index("hourly_latency_hour", "hour"),
)
labels = Table(
    "labels", metadata,
    Column("station_id", String(64), primary_key=True),
    Column("decision_id", BigInteger, primary_key=True, autoincrement=False),
    Column("ts", Float, nullable=False),
    Column("label", String(64), nullable=False),
    Column("model_sha256", String(64)),
    Column("sha256", String(64), nullable=False),
    Column("file", Text),  # relative to the data folder; None: the station had no image to send
    Column("received_ts", Float, nullable=False),
)
samples = Table(
    "samples", metadata,
    Column("station_id", String(64), primary_key=True),
    Column("decision_id", BigInteger, primary_key=True, autoincrement=False),
    Column("ts", Float), Column("decision", String(8)), Column("predicted_class", Text),
    Column("probability", Float), Column("sha256", String(64)), Column("file", Text),
    Column("received_ts", Float, nullable=False),
)
events = Table(
    "events", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("station_id", String(64), nullable=False),
    Column("ts", Float, nullable=False),
    Column("kind", String(32), nullable=False),
    Column("detail", Text),
    Index("events_station", "station_id", "id"),
)
ingest_errors = Table(
    "ingest_errors", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("ts", Float, nullable=False),
    Column("topic", Text),
    Column("reason", Text, nullable=False),
)


def latency_bucket(ms: float) -> int:
    return int(math.floor(math.log(max(ms, 0.001)) / math.log(LATENCY_RATIO)))


def bucket_value(bucket: int) -> float:
    """The bucket's geometric middle, in ms."""
    return LATENCY_RATIO ** (bucket + 0.5)


def _quantile(histogram: dict[int, int], q: float) -> float | None:
    total = sum(histogram.values())
    if not total:
        return None
    rank, seen = q * total, 0
    for bucket in sorted(histogram):
        seen += histogram[bucket]
        if seen >= rank:
            return bucket_value(bucket)
    return bucket_value(max(histogram))


def display_url(url: str) -> str:
    """A database URL without its password (for messages and the page)."""
    if "://" not in url:
        return url
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - an unparsable URL is shown as the scheme only
        return url.split("://")[0] + "://..."


def make_engine(db: str | Path) -> Engine:
    """An engine for a file path (SQLite, WAL) or a postgresql:// URL (psycopg 3), checked by
    connecting once: an unreachable database fails here, before anything starts."""
    db = str(db)
    if db.startswith(("postgresql://", "postgres://", "postgresql+psycopg://")):
        url = "postgresql+psycopg://" + db.split("://", 1)[1]
        engine = create_engine(url, pool_pre_ping=True, connect_args={"connect_timeout": 5})
    elif "://" in db:
        raise EdgepruneError(f"db must be a file path or a postgresql:// URL, got {display_url(db)!r}")
    else:
        path = Path(db)
        if path.is_dir():
            raise EdgepruneError(f"db {path} is a folder, not a database file")
        path.parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(f"sqlite:///{path}", connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(connection, record):  # WAL: the page reads while the ingester writes
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
    try:
        with engine.connect() as conn:
            conn.execute(select(1))
    except SQLAlchemyError as exc:
        engine.dispose()
        reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0] if str(getattr(exc, "orig", exc)).strip() else type(exc).__name__
        raise EdgepruneError(f"cannot reach the fleet database {display_url(db)}: {reason}") from None
    return engine


# ----------------------------------------------------------------------------- what a read returns


@dataclass(frozen=True)
class HourFigures:
    hour_ts: int  # the hour's start, Unix seconds
    images: int
    defect_rate: float | None  # DEFECT / (OK + DEFECT + REVIEW)
    review_rate: float | None


@dataclass(frozen=True)
class StationFigures:
    station_id: str
    line: str | None
    images: int  # decisions stored, all time
    first_seen: float
    last_seen: float
    silent_s: float
    offline: bool  # silent longer than offline_after_s
    images_last_hour: int
    defect_rate_last_hour: float | None
    review_rate_last_hour: float | None
    hourly: list[HourFigures]  # the last WINDOW_H hours, oldest first, empty hours as 0
    defect_classes: dict[str, int]  # predicted classes of the DEFECT/REVIEW/OK rows, last WINDOW_H hours
    latency_ms_p50: float | None  # last WINDOW_H hours, histogram resolution
    latency_ms_p99: float | None
    plc_backlog: int | None  # from the latest summary
    model_sha256: str | None
    reviewed: int  # labels received
    live_accuracy: float | None  # predicted class == the person's label, over the reviewed parts
    labelled_images: int  # labelled images stored in the data tree
    drift_state: str | None
    drift_detail: dict[str, Any] | None
    drift_ts: float | None
    alarms: list[str]  # offline, drift (until acknowledged)
    acknowledged_ts: float | None


@dataclass(frozen=True)
class FleetFigures:
    generated_ts: float
    window_h: int
    offline_after_s: float
    stations: list[StationFigures]
    lines: dict[str, list[HourFigures]]  # defect rate over time per line
    class_distribution: dict[str, int]  # over every station, last WINDOW_H hours
    models: dict[str, list[str]]  # model sha256 -> the stations running it
    ingest_errors: int
    database: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class IngestResult:
    stored: int = 0  # new rows
    repeated: int = 0  # rows already stored (a resend)
    files: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------- the store


def _rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _check_row(row: dict[str, Any], station_id: str) -> dict[str, Any]:
    """One uploaded decision row checked and typed, or BatchError (the whole batch is refused)."""
    missing = [c for c in COLUMNS if c not in row]
    if missing:
        raise BatchError(f"a decision row lacks {', '.join(missing)}")
    if row.get("station_id", station_id) != station_id:
        raise BatchError(f"a row of station {row.get('station_id')!r} in a batch of {station_id!r}")
    out: dict[str, Any] = {"station_id": station_id}
    if not isinstance(row["id"], int) or isinstance(row["id"], bool) or row["id"] < 1:
        raise BatchError(f"decision id must be a positive integer, got {row['id']!r}")
    out["id"] = row["id"]
    for key in ("ts", "probability", "latency_ms"):
        value = row[key]
        if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool)
                                  or not math.isfinite(value)):
            raise BatchError(f"decision {row['id']}: {key} must be a number, got {value!r}")
        out[key] = None if value is None else float(value)
    if out["ts"] is None:
        raise BatchError(f"decision {row['id']}: no ts")
    if row["decision"] not in DECISIONS:
        raise BatchError(f"decision {row['id']}: decision {row['decision']!r} is not one of {DECISIONS}")
    out["decision"] = row["decision"]
    for key in TEXT_COLUMNS:
        value = row[key]
        if value is not None and not isinstance(value, str):
            raise BatchError(f"decision {row['id']}: {key} must be text, got {value!r}")
        out[key] = value
    return out


class FleetStore:
    def __init__(self, db: str | Path, data: str | Path = "fleet-data", samples_dir: str | Path | None = None):
        self.url = str(db)
        self.engine = make_engine(db)
        self.dialect = self.engine.dialect.name
        self.data = Path(data)
        self.samples_dir = Path(samples_dir) if samples_dir is not None else \
            self.data.with_name(self.data.name + "-samples")
        try:
            metadata.create_all(self.engine)
        except SQLAlchemyError as exc:
            raise EdgepruneError(f"cannot create the fleet tables in {display_url(self.url)}: "
                                 f"{getattr(exc, 'orig', exc)}") from None
        self._files_lock = threading.Lock()

    def close(self) -> None:
        self.engine.dispose()

    def _insert(self, table: Table):
        if self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        return insert(table)

    # ------------------------------------------------------------------------- writing

    def _touch_station(self, conn, station_id: str, line: str | None, now: float, *, images: int = 0,
                       **values: Any) -> None:
        stmt = self._insert(stations).values(station_id=station_id, line=line, first_seen=now, last_seen=now,
                                             images=images, **values)
        update: dict[str, Any] = {"last_seen": func.max(stations.c.last_seen, stmt.excluded.last_seen)
                                  if self.dialect == "sqlite" else func.greatest(stations.c.last_seen,
                                                                                 stmt.excluded.last_seen),
                                  "images": stations.c.images + stmt.excluded.images}
        if line is not None:
            update["line"] = stmt.excluded.line
        for key in values:
            update[key] = getattr(stmt.excluded, key)
        conn.execute(stmt.on_conflict_do_update(index_elements=["station_id"], set_=update))

    def ingest_decisions(self, batch: Batch, now: float | None = None) -> IngestResult:
        now = time.time() if now is None else now
        rows = [_check_row(r, batch.station_id) for r in batch.rows]  # all checked before any write
        for row in rows:
            row["received_ts"] = now
        if not rows:
            return IngestResult()
        by_id = {r["id"]: r for r in rows}
        with self.engine.begin() as conn:
            stmt = self._insert(decisions).on_conflict_do_nothing(
                index_elements=["station_id", "id"]).returning(decisions.c.id)
            new_ids = [r[0] for r in conn.execute(stmt, rows)]
            new = [by_id[i] for i in new_ids]
            self._aggregate(conn, batch.station_id, new)
            latest_model = max(rows, key=lambda r: r["id"])["model_sha256"]
            extra = {"model_sha256": latest_model} if latest_model else {}
            self._touch_station(conn, batch.station_id, batch.line, now, images=len(new), **extra)
        return IngestResult(stored=len(new), repeated=len(rows) - len(new))

    def _aggregate(self, conn, station_id: str, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        counts: dict[int, dict[str, int]] = defaultdict(lambda: {"images": 0, "ok": 0, "defect": 0,
                                                                 "review": 0, "error": 0})
        classes: dict[tuple[int, str], int] = defaultdict(int)
        latency: dict[tuple[int, int], int] = defaultdict(int)
        for r in rows:
            hour = int(r["ts"] // 3600)
            c = counts[hour]
            c["images"] += 1
            c[r["decision"].lower()] += 1
            if r["predicted_class"] is not None and r["decision"] != "ERROR":
                classes[(hour, r["predicted_class"][:64])] += 1
            if r["latency_ms"] is not None:
                latency[(hour, latency_bucket(r["latency_ms"]))] += 1
        stmt = self._insert(hourly)
        conn.execute(stmt.on_conflict_do_update(
            index_elements=["station_id", "hour"],
            set_={k: getattr(hourly.c, k) + getattr(stmt.excluded, k) for k in ("images", "ok", "defect", "review", "error")}),
            [{"station_id": station_id, "hour": h, **c} for h, c in counts.items()])
        if classes:
            stmt = self._insert(hourly_classes)
            conn.execute(stmt.on_conflict_do_update(
                index_elements=["station_id", "hour", "predicted_class"], set_={"n": hourly_classes.c.n + stmt.excluded.n}),
                [{"station_id": station_id, "hour": h, "predicted_class": k, "n": n} for (h, k), n in classes.items()])
        if latency:
            stmt = self._insert(hourly_latency)
            conn.execute(stmt.on_conflict_do_update(
                index_elements=["station_id", "hour", "bucket"], set_={"n": hourly_latency.c.n + stmt.excluded.n}),
                [{"station_id": station_id, "hour": h, "bucket": b, "n": n} for (h, b), n in latency.items()])

    def _write_image(self, folder: Path, name: str, data: bytes) -> None:
        """Content-addressed and atomic (outputs.atomic_file): a file that exists already holds
        these very bytes, so it is kept; a reader never sees half a file."""
        target = folder / name
        if target.exists():
            return
        folder.mkdir(parents=True, exist_ok=True)
        with self._files_lock:
            if target.exists():
                return
            with atomic_file(target, what="fleet image") as tmp:
                tmp.write_bytes(data)

    def ingest_labels(self, batch: Batch, now: float | None = None) -> IngestResult:
        now = time.time() if now is None else now
        checked = []
        for row in batch.rows:  # every row checked (and every image hashed) before anything is written
            decision_id, label, sha = row.get("decision_id"), row.get("label"), row.get("sha256")
            if not isinstance(decision_id, int) or isinstance(decision_id, bool) or decision_id < 1:
                raise BatchError(f"label row: decision_id must be a positive integer, got {decision_id!r}")
            if not isinstance(label, str) or not CLASS_NAME.fullmatch(label) or label.strip(". ") != label:
                raise BatchError(f"label {label!r} cannot name a class folder")
            if not isinstance(sha, str) or not SHA256.fullmatch(sha):
                raise BatchError(f"label row {decision_id}: sha256 must be 64 hex digits")
            ts = row.get("ts")
            if not isinstance(ts, (int, float)) or isinstance(ts, bool) or not math.isfinite(ts):
                raise BatchError(f"label row {decision_id}: ts must be a number")
            data, name = None, None
            if row.get("image_base64") is not None:
                ext = row.get("ext")
                if not isinstance(ext, str) or ext not in IMAGE_EXTS:
                    raise BatchError(f"label row {decision_id}: image extension {ext!r} is not one of {IMAGE_EXTS}")
                try:
                    data = base64.b64decode(row["image_base64"], validate=True)
                except (ValueError, TypeError):
                    raise BatchError(f"label row {decision_id}: image_base64 is not base64") from None
                if image_sha256(data) != sha:
                    raise BatchError(f"label row {decision_id}: the image bytes do not hash to its sha256")
                name = f"{sha}.{ext}"
            checked.append({"station_id": batch.station_id, "decision_id": decision_id, "ts": float(ts),
                            "label": label, "model_sha256": row.get("model_sha256") if isinstance(
                                row.get("model_sha256"), str) else None,
                            "sha256": sha, "file": f"{label}/{name}" if name else None,
                            "received_ts": now, "_data": data})
        result = IngestResult()
        with self.engine.begin() as conn:
            for row in checked:
                data = row.pop("_data")
                old = conn.execute(select(labels.c.ts, labels.c.file).where(
                    labels.c.station_id == row["station_id"], labels.c.decision_id == row["decision_id"])).first()
                if old is not None and old.ts >= row["ts"]:
                    result.repeated += 1
                    continue
                if data is not None:
                    self._write_image(self.data / row["label"], row["file"].split("/", 1)[1], data)
                    result.files.append(row["file"])
                stmt = self._insert(labels).values(**row)
                conn.execute(stmt.on_conflict_do_update(
                    index_elements=["station_id", "decision_id"],
                    set_={k: getattr(stmt.excluded, k) for k in ("ts", "label", "model_sha256", "sha256", "file",
                                                                 "received_ts")}))
                result.stored += 1
                if old is not None and old.file and old.file != row["file"]:
                    self._drop_if_unused(conn, old.file)
            self._touch_station(conn, batch.station_id, batch.line, now)
        return result

    def _drop_if_unused(self, conn, file: str) -> None:
        """A relabelled part's image leaves its old class folder when no other label keeps it there."""
        still = conn.execute(select(func.count()).select_from(labels).where(labels.c.file == file)).scalar()
        if not still:
            (self.data / file).unlink(missing_ok=True)

    def ingest_sample(self, message: dict[str, Any], now: float | None = None) -> bool:
        now = time.time() if now is None else now
        station_id = message["station_id"]
        decision_id, sha = message.get("id"), message.get("sha256")
        if not isinstance(decision_id, int) or not isinstance(sha, str) or not SHA256.fullmatch(sha):
            raise BatchError("a sample needs an integer id and a sha256")
        file = None
        if message.get("image_base64") is not None:
            try:
                data = base64.b64decode(message["image_base64"], validate=True)
            except (ValueError, TypeError):
                raise BatchError("sample image_base64 is not base64") from None
            if image_sha256(data) != sha:
                raise BatchError("the sample's bytes do not hash to its sha256")
            ext = Path(str(message.get("path", ""))).suffix.lower().lstrip(".")
            ext = ext if ext in IMAGE_EXTS else "bin"
            self._write_image(self.samples_dir, f"{sha}.{ext}", data)
            file = f"{sha}.{ext}"
        row = {"station_id": station_id, "decision_id": decision_id, "ts": message.get("ts"),
               "decision": message.get("decision"), "predicted_class": message.get("predicted_class"),
               "probability": message.get("probability"), "sha256": sha, "file": file, "received_ts": now}
        with self.engine.begin() as conn:
            result = conn.execute(self._insert(samples).values(**row).on_conflict_do_nothing(
                index_elements=["station_id", "decision_id"]))
            self._touch_station(conn, station_id, message.get("line"), now)
        return bool(result.rowcount)

    def ingest_summary(self, message: dict[str, Any], now: float | None = None) -> None:
        now = time.time() if now is None else now
        backlog = message.get("plc_backlog")
        values: dict[str, Any] = {"summary": json.dumps(message)[:65536],
                                  "plc_backlog": backlog if isinstance(backlog, int) else None}
        if isinstance(message.get("model_sha256"), str):
            values["model_sha256"] = message["model_sha256"]
        with self.engine.begin() as conn:
            self._touch_station(conn, message["station_id"], message.get("line"), now, **values)

    def ingest_event(self, message: dict[str, Any], now: float | None = None) -> None:
        """A station's event (e.g. drift): kept in `events`; a drift event sets the station's state."""
        now = time.time() if now is None else now
        kind = message.get("kind")
        if not isinstance(kind, str) or not kind:
            raise BatchError("an event needs a kind")
        ts = message.get("ts") if isinstance(message.get("ts"), (int, float)) else now
        detail = json.dumps(message)[:65536]
        values: dict[str, Any] = {}
        if kind == "drift":
            state = message.get("state")
            if state not in ("ok", "drift"):
                raise BatchError(f"a drift event's state must be ok or drift, got {state!r}")
            values = {"drift_state": state, "drift_detail": detail, "drift_ts": float(ts)}
        with self.engine.begin() as conn:
            conn.execute(events.insert().values(station_id=message["station_id"], ts=float(ts), kind=kind[:32],
                                                detail=detail))
            self._touch_station(conn, message["station_id"], message.get("line"), now, **values)

    def record_error(self, topic: str | None, reason: str, now: float | None = None) -> None:
        with self.engine.begin() as conn:
            conn.execute(ingest_errors.insert().values(ts=time.time() if now is None else now,
                                                       topic=(topic or "")[:512], reason=reason[:1000]))

    def acknowledge(self, station_id: str, now: float | None = None) -> bool:
        """A person saw the station's alarms: they are cleared until a new one comes."""
        with self.engine.begin() as conn:
            result = conn.execute(stations.update().where(stations.c.station_id == station_id)
                                  .values(acknowledged_ts=time.time() if now is None else now))
        return bool(result.rowcount)

    # ------------------------------------------------------------------------- reading

    def station_ids(self) -> list[str]:
        with self.engine.connect() as conn:
            return [r[0] for r in conn.execute(select(stations.c.station_id).order_by(stations.c.station_id))]

    def decision_rows(self, station_id: str) -> list[dict[str, Any]]:
        """Every stored decision of one station in id order (the station's own columns)."""
        cols = [getattr(decisions.c, c) for c in COLUMNS]
        with self.engine.connect() as conn:
            rows = conn.execute(select(*cols).where(decisions.c.station_id == station_id).order_by(decisions.c.id))
            return [dict(zip(COLUMNS, r)) for r in rows]

    def labelled_images(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(labels.c.station_id, func.count()).where(labels.c.file.is_not(None))
                                .group_by(labels.c.station_id))
            return {s: int(n) for s, n in rows}

    def figures(self, *, offline_after_s: float = 60.0, now: float | None = None,
                window_h: int = WINDOW_H) -> FleetFigures:
        now = time.time() if now is None else now
        this_hour = int(now // 3600)
        first_hour = this_hour - window_h + 1
        with self.engine.connect() as conn:
            station_rows = conn.execute(select(stations).order_by(stations.c.station_id)).mappings().all()
            hours: dict[str, dict[int, Any]] = defaultdict(dict)
            for r in conn.execute(select(hourly).where(hourly.c.hour >= first_hour)).mappings():
                hours[r["station_id"]][r["hour"]] = r
            classes: dict[str, dict[str, int]] = defaultdict(dict)
            for s, k, n in conn.execute(
                    select(hourly_classes.c.station_id, hourly_classes.c.predicted_class, func.sum(hourly_classes.c.n))
                    .where(hourly_classes.c.hour >= first_hour)
                    .group_by(hourly_classes.c.station_id, hourly_classes.c.predicted_class)):
                classes[s][k] = int(n)
            latency: dict[str, dict[int, int]] = defaultdict(dict)
            for s, b, n in conn.execute(
                    select(hourly_latency.c.station_id, hourly_latency.c.bucket, func.sum(hourly_latency.c.n))
                    .where(hourly_latency.c.hour >= first_hour)
                    .group_by(hourly_latency.c.station_id, hourly_latency.c.bucket)):
                latency[s][int(b)] = int(n)
            accuracy: dict[str, tuple[int, int]] = {}
            for s, n, right in conn.execute(
                    select(labels.c.station_id, func.count(),
                           func.sum(case((decisions.c.predicted_class == labels.c.label, 1), else_=0)))
                    .join(decisions, (decisions.c.station_id == labels.c.station_id)
                          & (decisions.c.id == labels.c.decision_id))
                    .group_by(labels.c.station_id)):
                accuracy[s] = (int(n), int(right or 0))
            images_stored = {s: int(n) for s, n in conn.execute(
                select(labels.c.station_id, func.count()).where(labels.c.file.is_not(None)).group_by(labels.c.station_id))}
            errors = int(conn.execute(select(func.count()).select_from(ingest_errors)).scalar() or 0)

        out: list[StationFigures] = []
        line_hours: dict[str, dict[int, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0, 0]))
        distribution: dict[str, int] = defaultdict(int)
        models: dict[str, list[str]] = defaultdict(list)
        for st in station_rows:
            sid = st["station_id"]
            series = []
            for h in range(first_hour, this_hour + 1):
                r = hours[sid].get(h)
                images, judged = (r["images"], r["ok"] + r["defect"] + r["review"]) if r else (0, 0)
                series.append(HourFigures(h * 3600, images, _rate(r["defect"], judged) if r else None,
                                          _rate(r["review"], judged) if r else None))
                if r:
                    acc = line_hours[st["line"] or "(no line)"][h]
                    acc[0] += images
                    acc[1] += r["defect"]
                    acc[2] += judged
            last = series[-1]
            for k, n in classes[sid].items():
                distribution[k] += n
            if st["model_sha256"]:
                models[st["model_sha256"]].append(sid)
            reviewed, right = accuracy.get(sid, (0, 0))
            silent = max(0.0, now - st["last_seen"])
            offline = silent > offline_after_s
            ack = st["acknowledged_ts"]
            alarms = []
            if offline:
                alarms.append(f"silent for {silent:.0f} s (offline after {offline_after_s:g} s)")
            if st["drift_state"] == "drift" and (ack is None or ack < (st["drift_ts"] or 0)):
                alarms.append("input drift")
            out.append(StationFigures(
                station_id=sid, line=st["line"], images=int(st["images"]), first_seen=st["first_seen"],
                last_seen=st["last_seen"], silent_s=silent, offline=offline,
                images_last_hour=last.images, defect_rate_last_hour=last.defect_rate,
                review_rate_last_hour=last.review_rate, hourly=series, defect_classes=dict(classes[sid]),
                latency_ms_p50=_quantile(latency[sid], 0.5), latency_ms_p99=_quantile(latency[sid], 0.99),
                plc_backlog=st["plc_backlog"], model_sha256=st["model_sha256"], reviewed=reviewed,
                live_accuracy=_rate(right, reviewed), labelled_images=images_stored.get(sid, 0),
                drift_state=st["drift_state"],
                drift_detail=json.loads(st["drift_detail"]) if st["drift_detail"] else None,
                drift_ts=st["drift_ts"], alarms=alarms, acknowledged_ts=ack))
        lines = {name: [HourFigures(h * 3600, v[0], _rate(v[1], v[2]), None) for h, v in sorted(by_hour.items())]
                 for name, by_hour in sorted(line_hours.items())}
        return FleetFigures(generated_ts=now, window_h=window_h, offline_after_s=offline_after_s, stations=out,
                            lines=lines, class_distribution=dict(distribution), models=dict(models),
                            ingest_errors=errors, database=display_url(self.url))

