"""The input-drift alarm over HTTP: a person acknowledges it (token). Its state is in
/api/status (`drift`)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.concurrency import run_in_threadpool

from edgeprune.errors import EdgepruneError
from edgeprune.station.web_context import DashboardContext, client_of


def drift_router(ctx: DashboardContext) -> APIRouter:
    router = APIRouter()

    @router.post("/api/drift/acknowledge")
    async def acknowledge(request: Request) -> dict[str, Any]:
        if not ctx.authorized(request):
            ctx.refuse_unauthorized()
        try:
            return await run_in_threadpool(ctx.station.acknowledge_drift, client_of(request))
        except EdgepruneError as exc:
            raise HTTPException(409, str(exc)) from None

    return router
