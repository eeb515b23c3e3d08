"""Upstream, exactly once: the decision log and the reviewed labels, as gzip JSON-lines batches.

Topics (under the station's `mqtt` topic, TOPIC):
    TOPIC/upload/decisions   a batch of `decisions` rows (every column, plus station_id)
    TOPIC/upload/labels      a batch of reviewed labels, each with its image's bytes and sha256
    TOPIC/upload/receipt     the fleet's answer: {"stream", "after", "cursor"} once a batch is stored

A batch is gzip over JSON lines: a header line (format, station_id, line, stream, `after` = the
cursor it continues from, `cursor` = its last row's position, `count`), then one row per line.

The cursor (table `upload_cursor` in the station's own database) moves only when the fleet's
receipt says the batch is stored, not when the broker acknowledged the PUBLISH (QoS 1): a broker
restarted without persistence, or a fleet server killed between receiving and committing, would
otherwise lose an acknowledged batch. Until a receipt comes, the same rows are sent again from
the cursor (after `upload_ack_timeout_s`, after a reconnect, after a station restart); the fleet
stores by (station_id, decision id), so a repeat adds nothing. The reasoning that a receipt for
any batch starting at or below the cursor may advance it: batches always start at the cursor of
the moment they were sent, and the cursor only ever holds confirmed positions, so "stored (after,
cursor]" with after <= the stored cursor means everything up to `cursor` is stored.

Why hand-written and not an MQTT library feature: MQTT's QoS ends at the broker; an end-to-end
receipt from the consumer is the application's job (the end-to-end argument).
"""

from __future__ import annotations

import base64
import gzip
import json
import logging
import sqlite3
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeprune.station.config import parse_mqtt_url
from edgeprune.station.log import COLUMNS
from edgeprune.station.sources import image_sha256, is_image

FORMAT = "edgeprune-batch"
VERSION = 1
STREAMS = ("decisions", "labels")
MAX_BATCH_BYTES = 256 * 1024 * 1024  # decompressed: a gzip bomb stops here
MAX_IMAGE_BYTES = 16 * 1024 * 1024
LABEL_FIELDS = ("decision_id", "ts", "label", "model_sha256", "sha256", "ext", "image_base64")

log = logging.getLogger("edgeprune.station.upload")

CURSOR_SCHEMA = "CREATE TABLE IF NOT EXISTS upload_cursor (stream TEXT PRIMARY KEY, value TEXT NOT NULL);"


class BatchError(ValueError):
    """A payload that is not a whole, well-formed batch (it is refused whole)."""


@dataclass(frozen=True)
class Batch:
    station_id: str
    line: str | None
    stream: str  # "decisions" | "labels"
    after: Any  # the cursor it continues from: an id (decisions) or [ts, decision_id] (labels)
    cursor: Any  # its last row's position, in the same form
    rows: tuple[dict[str, Any], ...]


def encode_batch(batch: Batch) -> bytes:
    header = {"format": FORMAT, "version": VERSION, "station_id": batch.station_id, "line": batch.line,
              "stream": batch.stream, "after": batch.after, "cursor": batch.cursor, "count": len(batch.rows)}
    text = "\n".join(json.dumps(item, separators=(",", ":")) for item in (header, *batch.rows)) + "\n"
    return gzip.compress(text.encode("utf-8"), compresslevel=6, mtime=0)


def decode_batch(payload: bytes) -> Batch:
    """The batch in `payload`, or BatchError: truncated or corrupt gzip, a bomb, a header that is
    not ours, a row count that does not match the header, a row that is not a JSON object."""
    inflater = zlib.decompressobj(wbits=31)  # gzip framing; the CRC and length are checked at the end
    try:
        text = inflater.decompress(payload, MAX_BATCH_BYTES)
    except zlib.error as exc:
        raise BatchError(f"not gzip: {exc}") from None
    if inflater.unconsumed_tail:
        raise BatchError(f"larger than {MAX_BATCH_BYTES} bytes decompressed")
    if not inflater.eof:
        raise BatchError("truncated gzip (no end of stream)")
    if inflater.unused_data:
        raise BatchError("bytes after the gzip stream")
    try:
        lines = text.decode("utf-8").split("\n")
    except UnicodeDecodeError:
        raise BatchError("not UTF-8 text") from None
    if len(lines) < 2 or lines[-1] != "":
        raise BatchError("no header line, or the last line is not complete")
    try:
        items = [json.loads(line) for line in lines[:-1]]
    except json.JSONDecodeError as exc:
        raise BatchError(f"a line is not JSON: {exc}") from None
    header, rows = items[0], items[1:]
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise BatchError("no edgeprune batch header")
    if header.get("version") != VERSION:
        raise BatchError(f"batch version {header.get('version')!r}, this fleet reads {VERSION}")
    if header.get("stream") not in STREAMS:
        raise BatchError(f"unknown stream {header.get('stream')!r}")
    if header.get("count") != len(rows):
        raise BatchError(f"header says {header.get('count')!r} rows, {len(rows)} arrived")
    if not all(isinstance(r, dict) for r in rows):
        raise BatchError("a row is not a JSON object")
    station_id = header.get("station_id")
    if not isinstance(station_id, str) or not station_id:
        raise BatchError("no station_id in the header")
    line = header.get("line")
    return Batch(station_id, line if isinstance(line, str) else None, header["stream"], header.get("after"),
                 header.get("cursor"), tuple(rows))


def _position(stream: str, value: Any) -> Any:
    """A cursor as a comparable value: an int (decisions) or a (ts, id) tuple (labels)."""
    if stream == "decisions":
        return int(value)
    ts, decision_id = value
    return (float(ts), int(decision_id))


class Uploader:
    """Sends the station's `decisions` (and `reviews`, when the dashboard made that table) upstream
    in batches, in its own thread with its own SQLite connection (WAL: it never blocks the main
    loop), and moves the cursor on the fleet's receipt."""

    def __init__(self, db_path: str | Path, mqtt_url: str, *, station_id: str, line: str | None,
                 interval_s: float = 5.0, batch: int = 500, ack_timeout_s: float = 10.0):
        import paho.mqtt.client as mqtt

        self.station_id, self.line = station_id, line
        self.interval_s, self.batch, self.ack_timeout_s = interval_s, batch, ack_timeout_s
        self.endpoint = parse_mqtt_url(mqtt_url)
        self.topic = self.endpoint.path.strip("/")
        self.db_path = Path(db_path)
        self._db: sqlite3.Connection | None = None  # opened by start(), in the thread that runs
        self._lock = threading.RLock()
        self._cursor: dict[str, Any] = {}
        self.fleet_seen = False  # a receipt ever came: worth waiting for the rest at exit
        self._inflight: dict[str, tuple[Any, float] | None] = {s: None for s in STREAMS}
        self._last_sent = {s: 0.0 for s in STREAMS}
        self._timeout = {s: ack_timeout_s for s in STREAMS}
        self._flushing = False  # stop() is waiting for the last receipts
        self.batches_sent = 0
        self.rows_confirmed = 0
        self.connected = False
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"edgeprune-upload-{station_id}")
        self.client.reconnect_delay_set(min_delay=0.5, max_delay=5)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="edgeprune-upload", daemon=True)

    # ------------------------------------------------------------------------- the cursor

    def _load_cursor(self, stream: str) -> Any:
        row = self._db.execute("SELECT value FROM upload_cursor WHERE stream = ?", (stream,)).fetchone()
        if row is None:
            return 0 if stream == "decisions" else (0.0, 0)
        return _position(stream, json.loads(row[0]))

    def cursor(self, stream: str = "decisions") -> Any:
        with self._lock:
            return self._cursor[stream]

    def _store_cursor(self, stream: str, value: Any) -> None:
        self._db.execute("INSERT INTO upload_cursor (stream, value) VALUES (?, ?) ON CONFLICT(stream) "
                         "DO UPDATE SET value = excluded.value", (stream, json.dumps(value)))

    # ------------------------------------------------------------------------- MQTT callbacks

    def _on_connect(self, client, userdata, flags, reason_code, properties=None):
        self.connected = not reason_code.is_failure
        if self.connected:
            client.subscribe(f"{self.topic}/upload/receipt", qos=1)
            with self._lock:  # what was in flight may be lost with the old connection: resend now
                self._inflight = {s: None for s in STREAMS}
            self._wake.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties=None):
        self.connected = False

    def _on_message(self, client, userdata, message) -> None:
        try:
            receipt = json.loads(message.payload)
            stream = receipt["stream"]
            after, cursor = _position(stream, receipt["after"]), _position(stream, receipt["cursor"])
        except Exception:  # noqa: BLE001 - a foreign message on our receipt topic is ignored
            log.warning("ignored a malformed receipt on %s", message.topic)
            return
        with self._lock:
            if stream not in STREAMS or not after <= self._cursor[stream] < cursor:
                return  # a repeat, or a receipt for rows already confirmed
            self._store_cursor(stream, list(cursor) if isinstance(cursor, tuple) else cursor)
            if stream == "decisions":
                self.rows_confirmed += cursor - self._cursor[stream]
            self._cursor[stream] = cursor
            self._inflight[stream] = None
            self._timeout[stream] = self.ack_timeout_s
            self.fleet_seen = True
        self._wake.set()

    # ------------------------------------------------------------------------- batches

    def _next_batch(self, stream: str) -> Batch | None:
        after = self._cursor[stream]
        if stream == "decisions":
            rows = self._db.execute(f"SELECT {', '.join(COLUMNS)} FROM decisions WHERE id > ? ORDER BY id LIMIT ?",
                                    (after, self.batch)).fetchall()
            if not rows:
                return None
            out = tuple({**dict(zip(COLUMNS, r)), "station_id": self.station_id} for r in rows)
            return Batch(self.station_id, self.line, stream, after, out[-1]["id"], out)
        if self._db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'reviews'").fetchone() is None:
            return None  # no dashboard ever ran here: no labels
        # Labels with their images: fewer per batch (each carries its image's bytes).
        rows = self._db.execute(
            "SELECT r.decision_id, r.ts, r.label, r.model_sha256, d.path, d.sha256 FROM reviews r "
            "JOIN decisions d ON d.id = r.decision_id WHERE (r.ts, r.decision_id) > (?, ?) "
            "ORDER BY r.ts, r.decision_id LIMIT ?", (after[0], after[1], max(1, self.batch // 10))).fetchall()
        if not rows:
            return None
        out = tuple(self._label_row(*r) for r in rows)
        return Batch(self.station_id, self.line, stream, list(after), [rows[-1][1], rows[-1][0]], out)

    @staticmethod
    def _label_row(decision_id, ts, label, model_sha256, path, sha256) -> dict[str, Any]:
        data, ext = None, None
        p = Path(path)
        if is_image(p):
            try:
                raw = p.read_bytes()
                # Only the bytes that were decided: a file changed since is sent without an image.
                if len(raw) <= MAX_IMAGE_BYTES and image_sha256(raw) == sha256:
                    data, ext = base64.b64encode(raw).decode("ascii"), p.suffix.lower().lstrip(".")
            except OSError:
                pass
        return {"decision_id": decision_id, "ts": ts, "label": label, "model_sha256": model_sha256,
                "sha256": sha256, "ext": ext, "image_base64": data}

    def _due(self, stream: str, now: float) -> bool:
        inflight = self._inflight[stream]
        if inflight is not None:
            # The exit's window is short: there an unanswered batch is resent every ack timeout,
            # not after the doubled wait of a fleet that was down a while (it may be back now).
            timeout = self.ack_timeout_s if self._flushing else self._timeout[stream]
            if now - inflight[1] < timeout:
                return False  # waiting for the receipt
            log.info("no receipt for %s up to %s within %.0f s: resending from the cursor", stream,
                     inflight[0], timeout)
            self._timeout[stream] = min(self._timeout[stream] * 2, 300.0)
            return True
        if now - self._last_sent[stream] >= self.interval_s:
            return True
        if stream == "decisions":  # a full batch waits: send it now, not at the interval
            last = self._db.execute("SELECT COALESCE(MAX(id), 0) FROM decisions").fetchone()[0]
            return last - self._cursor[stream] >= self.batch
        return False

    def tick(self) -> None:
        if not self.connected:
            return
        now = time.monotonic()
        with self._lock:
            for stream in STREAMS:
                if not self._due(stream, now):
                    continue
                batch = self._next_batch(stream)
                if batch is None:
                    self._last_sent[stream] = now
                    continue
                info = self.client.publish(f"{self.topic}/upload/{stream}", encode_batch(batch), qos=1)
                if info.rc != 0:
                    continue  # not connected after all: the next tick tries again
                self._inflight[stream] = (batch.cursor, now)
                self._last_sent[stream] = now
                self.batches_sent += 1

    def pending(self) -> int:
        """Decisions not yet confirmed by the fleet."""
        with self._lock:
            last = self._db.execute("SELECT COALESCE(MAX(id), 0) FROM decisions").fetchone()[0]
            return int(last - self._cursor["decisions"])

    def labels_pending(self) -> int:
        with self._lock:
            if self._db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'reviews'").fetchone() is None:
                return 0
            ts, decision_id = self._cursor["labels"]
            return int(self._db.execute("SELECT COUNT(*) FROM reviews WHERE (ts, decision_id) > (?, ?)",
                                        (ts, decision_id)).fetchone()[0])

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception as exc:  # noqa: BLE001 - an upload problem never stops the station
                log.warning("upload failed: %s", exc)
            self._wake.wait(0.2)
            self._wake.clear()

    def start(self) -> None:
        self._db = sqlite3.connect(str(self.db_path), check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(CURSOR_SCHEMA)
        self._cursor = {s: self._load_cursor(s) for s in STREAMS}
        # A station whose cursor ever moved has a fleet: at exit it waits for it (up to flush_s).
        self.fleet_seen = self._cursor["decisions"] > 0
        self.client.connect_async(self.endpoint.host, self.endpoint.port, keepalive=30)
        self.client.loop_start()
        self._thread.start()

    def stop(self, flush_s: float = 3.0) -> int:
        """Up to `flush_s` for the rest to be confirmed, when this station has a fleet (a receipt
        ever came; a station without one does not wait); what is left goes at the next start, from
        the cursor. Returns the decisions still unconfirmed."""
        deadline = time.monotonic() + (flush_s if self.fleet_seen else 0.0)
        with self._lock:
            self._last_sent = {s: 0.0 for s in STREAMS}  # anything new goes now, not at the interval
        with self._lock:
            self._flushing = True
        while time.monotonic() < deadline and (self.pending() > 0 or self.labels_pending() > 0):
            self._wake.set()
            time.sleep(0.05)
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=5)
        left = self.pending()
        self.client.disconnect()
        self.client.loop_stop()
        with self._lock:
            self._db.close()
        return left
