"""What the dashboard's routers share: the station they serve, its config, the app's own
database connections, and the token check. One `DashboardContext` per app (web.make_app)."""

from __future__ import annotations

import hmac
import io
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import HTTPException, Request

from edgeprune.station.dashboard_config import DashboardConfig
from edgeprune.station.review import ReviewLog, connect
from edgeprune.station.rollout import Rollouts
from edgeprune.station.shadow import Shadow

THUMBNAIL_PX = 96
CHART_WINDOW_S, CHART_BUCKET_S = 300, 5
SQLITE_MAX_ID = 2**63 - 1  # SQLite's INTEGER range: a larger id cannot name a row (OverflowError)


class DashboardData:
    """Read-only queries for the page (its own connection: never waits behind the main loop)."""

    def __init__(self, db_path: Path):
        self._db = connect(db_path, "")
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def image(self, decision_id: int) -> tuple[str, str] | None:
        with self._lock:
            row = self._db.execute("SELECT path, sha256 FROM decisions WHERE id = ?", (decision_id,)).fetchone()
        return (row[0], row[1]) if row else None

    def timeline(self, now: float) -> dict[str, Any]:
        """Images and DEFECTs per CHART_BUCKET_S over the last CHART_WINDOW_S (empty buckets as 0)."""
        first = int((now - CHART_WINDOW_S) // CHART_BUCKET_S)
        with self._lock:
            rows = self._db.execute(
                "SELECT CAST(ts / ? AS INTEGER) AS b, COUNT(*), SUM(decision = 'DEFECT'), "
                "SUM(decision IN ('OK', 'DEFECT')) FROM decisions WHERE ts >= ? GROUP BY b",
                (CHART_BUCKET_S, first * CHART_BUCKET_S)).fetchall()
        found = {int(b): (int(n), int(d or 0), int(j or 0)) for b, n, d, j in rows}
        last = int(now // CHART_BUCKET_S)
        points = [{"t": b * CHART_BUCKET_S, "images": found.get(b, (0, 0, 0))[0],
                   "defects": found.get(b, (0, 0, 0))[1], "judged": found.get(b, (0, 0, 0))[2]}
                  for b in range(first, last + 1)]
        return {"bucket_s": CHART_BUCKET_S, "window_s": CHART_WINDOW_S, "points": points}

    def count_since(self, ts: float) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM decisions WHERE ts >= ?", (ts,)).fetchone()[0])

    def recent(self, limit: int) -> list[dict[str, Any]]:
        keys = ("decision", "predicted_class", "true_class", "latency_ms")
        with self._lock:
            rows = self._db.execute(f"SELECT {', '.join(keys)} FROM decisions ORDER BY id DESC LIMIT ?",
                                    (limit,)).fetchall()
        return [dict(zip(keys, r)) for r in rows]


def thumbnail(data: bytes) -> bytes:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        image.draft("RGB", (THUMBNAIL_PX, THUMBNAIL_PX))  # JPEG: decode at a reduced size
        image = image.convert("RGB")
        image.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
        out = io.BytesIO()
        image.save(out, format="JPEG", quality=80)
    return out.getvalue()


@dataclass
class DashboardContext:
    station: Any  # a Station, or the dashboard process's view of one (dashboard_process.StationView)
    config: DashboardConfig
    reviews: ReviewLog
    rollouts: Rollouts
    data: DashboardData
    shadow: Shadow

    def authorized(self, request: Request) -> bool:
        expected = self.config.bearer_token()
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if expected is None or scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(given.strip().encode(), expected.encode())

    def refuse_unauthorized(self) -> None:
        why = ("a bearer token is needed (Authorization: Bearer TOKEN)" if self.config.bearer_token()
               else "no token is configured (dashboard.token or EDGEPRUNE_STATION_TOKEN): nothing can be changed")
        raise HTTPException(401, why, headers={"WWW-Authenticate": "Bearer"})

    def close(self) -> None:
        for part in (self.shadow, self.reviews, self.rollouts, self.data):
            part.close()


def client_of(request: Request) -> str | None:
    return request.client.host if request.client else None


def check_decision_id(decision_id: int) -> None:
    """An id SQLite cannot hold names no decision: 404, as for any unknown id (not a 500)."""
    if not 1 <= decision_id <= SQLITE_MAX_ID:
        raise HTTPException(404, f"no decision {decision_id}")
