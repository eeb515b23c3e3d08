"""The fleet page and its API (FastAPI), under the station dashboard's conventions.

    GET  /                                  the page (fleet/page.py: HTML, one script, inline SVG charts)
    GET  /api/fleet                         every station's figures (store.FleetFigures), the ingest counters,
                                            the newest registered models, roll-outs (each station's state,
                                            the newest events) and retrains (overview.fleet_document)
    POST /api/stations/{id}/acknowledge     clear the station's alarms until a new one comes     token

Security as the dashboard's: loopback unless told, Host headers checked on loopback, every
state-changing request needs `Authorization: Bearer TOKEN` (fleet.toml's token or
$EDGEPRUNE_FLEET_TOKEN, compared in constant time; with neither, nothing can be changed), small
request bodies only, no CDN. No token is ever in the page or /api/fleet (overview.fleet_document).
"""

from __future__ import annotations

import hmac
from typing import Any, Callable

from fastapi import FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, Response

from edgeprune.errors import EdgepruneError
from edgeprune.fleet.config import FleetConfig
from edgeprune.fleet.overview import LoopView, fleet_document
from edgeprune.fleet.page import APP_JS, PAGE
from edgeprune.fleet.registry import models_dir_for
from edgeprune.fleet.store import FleetStore
from edgeprune.station.config import check_station_id
from edgeprune.station.web import SECURITY_HEADERS, SMALL_BODY, BodyLimit

def make_app(store: FleetStore, config: FleetConfig, *, status: Callable[[], dict] | None = None,
             allowed_hosts: list[str] | None = None) -> FastAPI:
    app = FastAPI(title="edgeprune fleet", docs_url=None, redoc_url=None, openapi_url=None)
    loop = LoopView(store.engine, models_dir_for(config.data))  # creates the loop's tables a database lacks
    app.add_middleware(BodyLimit, limit_for=lambda path: SMALL_BODY)
    if allowed_hosts is not None:
        from starlette.middleware.trustedhost import TrustedHostMiddleware

        app.add_middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts)

    @app.middleware("http")
    async def security_headers(request: Request, call_next):
        response = await call_next(request)
        response.headers.update(SECURITY_HEADERS)
        return response

    def authorize(request: Request) -> None:
        expected = config.bearer_token()
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if expected is not None and scheme.lower() == "bearer" and \
                hmac.compare_digest(given.strip().encode(), expected.encode()):
            return
        why = ("a bearer token is needed (Authorization: Bearer TOKEN)" if expected
               else "no token is configured (token in fleet.toml or EDGEPRUNE_FLEET_TOKEN): nothing can be changed")
        raise HTTPException(401, why, headers={"WWW-Authenticate": "Bearer"})

    @app.get("/", response_class=HTMLResponse)
    def page() -> HTMLResponse:
        return HTMLResponse(PAGE)

    @app.get("/app.js")
    def script() -> Response:
        return Response(APP_JS, media_type="text/javascript")

    @app.get("/api/fleet")
    def fleet() -> dict[str, Any]:
        figures = store.figures(offline_after_s=config.offline_after_s)
        return fleet_document(figures, loop.read(running=figures.models), config,
                              server=status() if status is not None else None)

    @app.post("/api/stations/{station_id}/acknowledge")
    async def acknowledge(station_id: str, request: Request) -> dict[str, Any]:
        authorize(request)
        try:
            check_station_id(station_id)
        except EdgepruneError as exc:
            raise HTTPException(422, str(exc)) from None
        if not await run_in_threadpool(store.acknowledge, station_id):
            raise HTTPException(404, f"no station {station_id!r} in the fleet")
        return {"station_id": station_id, "acknowledged": True}

    return app
