"""The dashboard's reads of what the line did: the page, /api/status, decisions, thumbnails."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException
from fastapi.responses import HTMLResponse, Response

from edgeprune.station.mqtt import summarize
from edgeprune.station.page import APP_JS, PAGE
from edgeprune.station.sources import image_sha256, is_image
from edgeprune.station.web_context import DashboardContext, check_decision_id, thumbnail

THROUGHPUT_S = 10.0
LIVE_ACCURACY_ROWS = 1000  # live accuracy: over the latest decisions whose true class is known


def status_router(ctx: DashboardContext) -> APIRouter:
    router = APIRouter()
    station = ctx.station

    @router.get("/", response_class=HTMLResponse)
    def page() -> HTMLResponse:
        return HTMLResponse(PAGE)

    @router.get("/app.js")
    def script() -> Response:
        return Response(APP_JS, media_type="text/javascript")

    @router.get("/api/status")
    def status() -> dict[str, Any]:
        out = station.status()
        model = station.current_model()
        meta = model.classifier.metadata
        out["model_info"] = {
            "name": model.path.name, "source_checkpoint": meta.raw.get("edgeprune.source_checkpoint"),
            "sha256": model.sha256, "architecture": meta.architecture, "test_accuracy": meta.test_accuracy,
            "accuracy_data": meta.raw.get("edgeprune.accuracy_data"), "class_names": model.class_names,
            "runtime": model.classifier.runtime}
        out["review_backlog"] = ctx.reviews.backlog()
        out["last_id"] = station.log.last_id()
        recent = ctx.data.recent(LIVE_ACCURACY_ROWS)
        live = summarize(recent, ok_classes=frozenset(station.config.ok_classes), class_names=model.class_names)
        out["live"] = {"accuracy": live["accuracy"], "ok_defect_accuracy": live["ok_defect_accuracy"],
                       "labelled": live["labelled"], "over_last": len(recent)}
        now = time.time()
        out["timeline"] = ctx.data.timeline(now)
        # Images/s over the last THROUGHPUT_S (or the run so far, when shorter).
        span = min(THROUGHPUT_S, out["elapsed_s"]) if out["state"] == "running" else 0.0
        out["throughput_per_s"] = ctx.data.count_since(now - span) / span if span > 0.5 else None
        out["gate"] = ctx.rollouts.gate_thresholds()
        out["rollouts"] = ctx.rollouts.history(5)
        out["token_configured"] = ctx.config.bearer_token() is not None
        return out

    @router.get("/api/decisions")
    def decisions(since: int = 0, limit: int = 100) -> list[dict[str, Any]]:
        if since < 0 or not 1 <= limit <= 1000:
            raise HTTPException(422, "since must be >= 0 and limit 1..1000")
        rows = station.decisions(since=since, limit=limit)
        # A person's label travels with the row: the fleet's canary compares the share of reviewed
        # parts each model got right before and after a switch.
        labels = ctx.reviews.labels_of([r["id"] for r in rows])
        return [{**r, "label": labels.get(r["id"])} for r in rows]

    @router.get("/api/images/{decision_id}")
    def image(decision_id: int) -> Response:
        check_decision_id(decision_id)
        found = ctx.data.image(decision_id)
        if found is None:
            raise HTTPException(404, f"no decision {decision_id}")
        path, sha = Path(found[0]), found[1]
        if not is_image(path):  # a camera frame has no file
            raise HTTPException(404, f"decision {decision_id} has no image file")
        try:
            raw = path.read_bytes()
        except OSError:
            raise HTTPException(404, f"the image of decision {decision_id} is gone") from None
        if image_sha256(raw) != sha:
            raise HTTPException(410, f"the image of decision {decision_id} changed since it was decided")
        try:
            body = thumbnail(raw)
        except Exception:  # noqa: BLE001 - PIL's many errors: an unreadable image (an ERROR row)
            raise HTTPException(404, f"the image of decision {decision_id} is not readable") from None
        return Response(body, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})

    return router
