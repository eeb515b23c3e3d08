"""Model roll-outs over HTTP: the roll-out log, an upload checked by the gate (token), rollback."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from starlette.datastructures import UploadFile

from edgeprune.station.rollout import RolloutRefused
from edgeprune.station.web_context import DashboardContext, client_of

FORM_OVERHEAD = 64 * 1024  # multipart boundaries and headers around the uploaded file


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int):
        super().__init__(413, f"request body larger than {limit} bytes")


def models_router(ctx: DashboardContext) -> APIRouter:
    router = APIRouter()
    config, rollouts = ctx.config, ctx.rollouts
    upload_limit = config.max_upload_bytes

    def refused(exc: RolloutRefused) -> JSONResponse:
        return JSONResponse({"detail": str(exc), "figures": exc.figures, "gate": rollouts.gate_thresholds()},
                            status_code=exc.status_code)

    @router.get("/api/models")
    def model_log(limit: int = 20) -> list[dict[str, Any]]:
        return rollouts.history(max(1, min(limit, 500)))

    @router.post("/api/models")
    async def upload(request: Request):
        client = client_of(request)
        if not ctx.authorized(request):
            rollouts.record("upload", client=client, accepted=False, status_code=401, reason="no or wrong token")
            ctx.refuse_unauthorized()
        declared = request.headers.get("content-length")
        too_large = f"upload larger than the limit of {config.max_upload_mb:g} MB (dashboard.max_upload_mb)"
        if declared is not None and (not declared.isdigit() or int(declared) > upload_limit + FORM_OVERHEAD):
            rollouts.record("upload", client=client, accepted=False, status_code=413, reason=too_large)
            raise HTTPException(413, too_large)
        try:
            form = await request.form(max_files=1, max_fields=4)
        except BodyTooLarge:
            rollouts.record("upload", client=client, accepted=False, status_code=413, reason=too_large)
            raise HTTPException(413, too_large) from None
        try:
            file = form.get("file")
            if not isinstance(file, UploadFile):
                raise HTTPException(400, "send the model as multipart/form-data field `file`")
            payload = await file.read(upload_limit + 1)
            if len(payload) > upload_limit:
                rollouts.record("upload", client=client, accepted=False, status_code=413, reason=too_large,
                                filename=file.filename)
                raise HTTPException(413, too_large)
            try:
                return await run_in_threadpool(rollouts.upload, payload, filename=file.filename, client=client)
            except RolloutRefused as exc:
                return refused(exc)
        finally:
            await form.close()

    @router.post("/api/models/rollback")
    def rollback(request: Request):
        if not ctx.authorized(request):
            rollouts.record("rollback", client=client_of(request), accepted=False, status_code=401,
                            reason="no or wrong token")
            ctx.refuse_unauthorized()
        try:
            return rollouts.rollback(client=client_of(request))
        except RolloutRefused as exc:
            return refused(exc)

    return router
