"""The review queue over HTTP: REVIEW parts no one has labelled, a person's label (token), and
every label a part was given."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ValidationError

from edgeprune.errors import EdgepruneError
from edgeprune.station.review import UnknownDecision
from edgeprune.station.web_context import DashboardContext, check_decision_id, client_of


class ReviewLabel(BaseModel):
    label: str


def review_router(ctx: DashboardContext) -> APIRouter:
    router = APIRouter()
    station = ctx.station

    @router.get("/api/review")
    def review_queue(limit: int = 50) -> dict[str, Any]:
        if not 1 <= limit <= 1000:
            raise HTTPException(422, "limit must be 1..1000")
        return {"backlog": ctx.reviews.backlog(), "items": ctx.reviews.queue(limit),
                "classes": station.current_model().class_names}

    @router.get("/api/review/{decision_id}/history")
    def history(decision_id: int) -> dict[str, Any]:
        check_decision_id(decision_id)
        return {"id": decision_id, "labels": ctx.reviews.history(decision_id)}

    @router.post("/api/review/{decision_id}")
    async def label(decision_id: int, request: Request) -> dict[str, Any]:
        if not ctx.authorized(request):  # before the body is even read: 401 whatever was sent
            ctx.refuse_unauthorized()
        check_decision_id(decision_id)
        try:
            body = ReviewLabel.model_validate_json(await request.body())
        except ValidationError:
            raise HTTPException(422, 'send JSON {"label": CLASS}') from None
        model = station.current_model()
        try:
            return await run_in_threadpool(ctx.reviews.label, decision_id, body.label, classes=model.class_names,
                                           model_sha256=model.sha256, client=client_of(request))
        except UnknownDecision as exc:
            raise HTTPException(404, str(exc)) from None
        except EdgepruneError as exc:
            raise HTTPException(422, str(exc)) from None

    return router
