"""The shadow model over HTTP: its figures (read), load a candidate and stop it (token)."""

from __future__ import annotations

from typing import Any, Optional

from fastapi import APIRouter, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from starlette.datastructures import UploadFile

from edgeprune.station.rollout import RolloutRefused
from edgeprune.station.web_context import DashboardContext


def shadow_router(ctx: DashboardContext) -> APIRouter:
    router = APIRouter()
    shadow = ctx.shadow
    limit = ctx.config.max_upload_bytes

    @router.get("/api/shadow")
    def figures(model: Optional[str] = None) -> dict[str, Any]:
        if model is not None and (len(model) != 64 or any(c not in "0123456789abcdef" for c in model)):
            raise HTTPException(422, "model must be a sha256 (64 hex digits)")
        return shadow.figures(model).to_dict()

    @router.post("/api/shadow")
    async def load(request: Request):
        if not ctx.authorized(request):
            ctx.refuse_unauthorized()
        form = await request.form(max_files=1, max_fields=4)
        try:
            file = form.get("file")
            if not isinstance(file, UploadFile):
                raise HTTPException(400, "send the model as multipart/form-data field `file`")
            payload = await file.read(limit + 1)
            if len(payload) > limit:
                raise HTTPException(413, f"upload larger than the limit of {ctx.config.max_upload_mb:g} MB")
            try:
                return await run_in_threadpool(shadow.load, payload, filename=file.filename)
            except RolloutRefused as exc:
                return JSONResponse({"detail": str(exc)}, status_code=exc.status_code)
        finally:
            await form.close()

    @router.post("/api/shadow/stop")
    def stop(request: Request) -> dict[str, Any]:
        if not ctx.authorized(request):
            ctx.refuse_unauthorized()
        return shadow.stop(clear=True)

    return router
