"""One MQTT message in, stored (or counted as bad and logged), and the receipt to send back.

    TOPIC/upload/decisions, TOPIC/upload/labels   gzip JSON-lines batches (station/upload.py)
    TOPIC/sample                                   a sample image (JSON, base64 bytes)
    TOPIC/event                                    a station event, e.g. drift (JSON)
    TOPIC                                          the station's periodic summary (JSON)
    TOPIC/upload/receipt                           the fleet's own receipts: ignored

Bad input never stops the server: a payload that is not what its topic promises (not gzip, a
truncated gzip, not JSON, no station id, a bad row) is refused whole, counted, logged and kept in
`ingest_errors`; a station outside the allow-list is refused the same way. A database error is
not the payload's fault: it is logged, no receipt goes back, and the station sends the batch again.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from edgeprune.errors import EdgepruneError
from edgeprune.fleet.config import FleetConfig
from edgeprune.fleet.store import FleetStore
from edgeprune.station.config import check_station_id
from edgeprune.station.upload import BatchError, decode_batch

MAX_JSON_BYTES = 32 * 1024 * 1024
UPLOAD = "/upload/"

log = logging.getLogger("edgeprune.fleet")


@dataclass(frozen=True)
class Outcome:
    kind: str  # decisions | labels | sample | event | summary | receipt | malformed | refused | db_error
    station_id: str | None = None
    stored: int = 0
    repeated: int = 0
    reason: str | None = None
    receipt: tuple[str, bytes] | None = None  # (topic, payload) to publish once stored


class Ingestor:
    def __init__(self, store: FleetStore, config: FleetConfig):
        self.store, self.config = store, config
        self.counts: Counter[str] = Counter()

    def handle(self, topic: str, payload: bytes) -> Outcome:
        try:
            outcome = self._handle(topic, payload)
        except (BatchError, EdgepruneError) as exc:
            outcome = Outcome("malformed", reason=str(exc))
        except SQLAlchemyError as exc:
            log.error("database error on %s: %s (the station will send it again)", topic, getattr(exc, "orig", exc))
            outcome = Outcome("db_error", reason=str(getattr(exc, "orig", exc))[:500])
        self.counts[outcome.kind] += 1
        if outcome.kind in ("malformed", "refused"):
            log.warning("%s payload on %s: %s", outcome.kind, topic, outcome.reason)
            try:
                self.store.record_error(topic, f"{outcome.kind}: {outcome.reason}")
            except SQLAlchemyError as exc:
                log.error("could not record the bad payload: %s", getattr(exc, "orig", exc))
        return outcome

    def _station(self, station_id: Any) -> str | None:
        """The id if it is well-formed and allowed; None (refused) when the allow-list lacks it."""
        check_station_id(station_id)
        return station_id if self.config.allows(station_id) else None

    def _json(self, payload: bytes) -> dict[str, Any]:
        if len(payload) > MAX_JSON_BYTES:
            raise BatchError(f"a JSON message larger than {MAX_JSON_BYTES} bytes")
        try:
            message = json.loads(payload)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BatchError(f"not JSON: {exc}") from None
        if not isinstance(message, dict):
            raise BatchError("not a JSON object")
        if "station_id" not in message:
            raise BatchError("no station_id (a foreign message, or a station older than the fleet)")
        return message

    def _handle(self, topic: str, payload: bytes) -> Outcome:
        if topic.endswith(UPLOAD + "receipt"):
            return Outcome("receipt")
        for stream in ("decisions", "labels"):
            if topic.endswith(UPLOAD + stream):
                batch = decode_batch(payload)
                if batch.stream != stream:
                    raise BatchError(f"a {batch.stream} batch on the {stream} topic")
                if self._station(batch.station_id) is None:
                    return Outcome("refused", batch.station_id, reason=f"station {batch.station_id!r} is not "
                                   "in the fleet's allow-list (stations = [...])")
                result = (self.store.ingest_decisions(batch) if stream == "decisions"
                          else self.store.ingest_labels(batch))
                prefix = topic[: -len(UPLOAD + stream)]
                receipt = json.dumps({"stream": stream, "after": batch.after, "cursor": batch.cursor,
                                      "stored": result.stored}).encode()
                return Outcome(stream, batch.station_id, result.stored, result.repeated,
                               receipt=(f"{prefix}{UPLOAD}receipt", receipt))
        message = self._json(payload)
        station_id = message["station_id"]
        if self._station(station_id) is None:
            return Outcome("refused", station_id, reason=f"station {station_id!r} is not in the allow-list")
        if topic.endswith("/sample"):
            return Outcome("sample", station_id, int(self.store.ingest_sample(message)))
        if topic.endswith("/event"):
            self.store.ingest_event(message)
            return Outcome("event", station_id, 1)
        if "images" in message and "decisions" in message:
            self.store.ingest_summary(message)
            return Outcome("summary", station_id, 1)
        raise BatchError("a JSON message that is no summary, sample or event")
