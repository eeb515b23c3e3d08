"""The station's dashboard and HTTP API (FastAPI, served by uvicorn; by `station run` in a process of
its own, dashboard_process.py, so no request can hold the decision loop's interpreter).

    GET  /                       the live page (page.py: plain HTML and a small script, no build step)
    GET  /api/status             counters, latency, PLC and MQTT links, model, live accuracy, chart data
    GET  /api/decisions?since=ID&limit=N
    GET  /api/review?limit=N     REVIEW parts no one has labelled yet
    GET  /api/images/{id}        a thumbnail of a part the log knows (by id, never by path)
    GET  /api/models             the roll-out log
    GET  /api/review/{id}/history  every label the part was given (time, label, client)
    POST /api/review/{id}        {"label": CLASS}                          token
    POST /api/models             multipart field `file` (ONNX), gate-checked  token
    POST /api/models/rollback                                              token
    GET  /api/shadow[?model=SHA256]  the shadow model's figures (agreement, latency, reviewed recall)
    POST /api/shadow             multipart field `file` (ONNX): decide live images beside the model  token
    POST /api/shadow/stop                                                  token
    POST /api/drift/acknowledge  clears the input-drift alarm (drift.py)   token

Security: it binds where `http` says (127.0.0.1 unless told otherwise); every state-changing
request needs `Authorization: Bearer TOKEN` (the config's dashboard.token or
$EDGEPRUNE_STATION_TOKEN, compared in constant time; with neither set nothing can be changed);
request bodies are capped (the upload limit for /api/models, 64 KiB elsewhere) while they
stream in, not after; a file is read only for a decision id the log holds, and only when its
bytes still hash to what was decided; an id SQLite cannot hold is a 404 like any unknown one.

The routes live in one router per concern (routes_status, routes_review, routes_models,
routes_drift) over a
shared `web_context.DashboardContext`; this module assembles the app and serves it.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from edgeprune.errors import EdgepruneError
from edgeprune.station.dashboard_config import DashboardConfig, parse_http
from edgeprune.station.review import ReviewLog
from edgeprune.station.rollout import Rollouts
from edgeprune.station.routes_drift import drift_router
from edgeprune.station.routes_models import FORM_OVERHEAD, BodyTooLarge, models_router
from edgeprune.station.routes_review import review_router
from edgeprune.station.routes_shadow import shadow_router
from edgeprune.station.shadow import Shadow
from edgeprune.station.routes_status import status_router
from edgeprune.station.web_context import DashboardContext, DashboardData

log = logging.getLogger("edgeprune.station.web")

SMALL_BODY = 64 * 1024  # every request but an upload
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'self'; img-src 'self'; style-src 'self' 'unsafe-inline'; "
                               "script-src 'self'; connect-src 'self'; frame-ancestors 'none'",
}


class BodyLimit:
    """ASGI middleware: refuse a body over the limit from its Content-Length, and stop reading a
    streamed (chunked) one as soon as it passes the limit."""

    def __init__(self, app, limit_for):
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.limit_for(scope["path"])
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit) \
                and scope["path"] != "/api/models":  # the upload handler logs the attempt itself
            response = JSONResponse({"detail": f"request body larger than {limit} bytes"}, status_code=413)
            return await response(scope, receive, send)
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        return await self.app(scope, limited_receive, send)


LOOPBACK_NAMES = ["127.0.0.1", "localhost", "::1", "[::1]"]


def make_app(station, config: DashboardConfig | None = None, *, allowed_hosts: list[str] | None = None) -> FastAPI:
    """The FastAPI app over a Station (its status, log, swap hook) or the dashboard process's
    view of one. `allowed_hosts`: the Host headers answered (served on loopback: loopback names
    only, so a web page that rebinds its own domain to 127.0.0.1 cannot read the station).
    `app.state.close()` releases the app's database connections."""
    config = config or station.config.dashboard
    db_path = Path(station.config.db)
    ctx = DashboardContext(station, config, ReviewLog(db_path), Rollouts(station, config), DashboardData(db_path),
                           Shadow(station.config))
    upload_limit = config.max_upload_bytes

    app = FastAPI(title="edgeprune station", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(BodyLimit, limit_for=lambda path: upload_limit + FORM_OVERHEAD
                       if path in ("/api/models", "/api/shadow") else SMALL_BODY)
    if allowed_hosts is not None:
        from starlette.middleware.trustedhost import TrustedHostMiddleware

        app.add_middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts)
    app.state.reviews, app.state.rollouts, app.state.data = ctx.reviews, ctx.rollouts, ctx.data
    app.state.close = ctx.close

    @app.middleware("http")
    async def security_headers(request, call_next):
        response = await call_next(request)
        response.headers.update(SECURITY_HEADERS)
        return response

    for router in (status_router(ctx), review_router(ctx), models_router(ctx), drift_router(ctx)):
        app.include_router(router)
    app.include_router(shadow_router(ctx))
    return app


def bind_dashboard_socket(address: str) -> tuple[socket.socket, str, str]:
    """(listening socket, URL, host) for `address`. Bound by the station's process before any
    work, so a busy port fails at start-up with an `error:` line, not a message from elsewhere."""
    host, port = parse_http(address)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on such sockets' connections;
    # without it every keep-alive response (the page's polling) waits ~40 ms on delayed ACKs.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise EdgepruneError(f"--http {address}: cannot listen there ({exc.strerror or exc})") from None
    sock.listen(256)
    url = f"http://{host if family == socket.AF_INET else f'[{host}]'}:{sock.getsockname()[1]}/"
    return sock, url, host


class DashboardServer:
    """uvicorn serving the app in a daemon thread of the calling process: the dashboard
    process's (dashboard_process.py), or a caller's own when it serves a Station in-process."""

    def __init__(self, station, address: str, *, sock: socket.socket | None = None, url: str | None = None):
        import uvicorn

        if sock is None:
            sock, url, host = bind_dashboard_socket(address)
        else:
            host = parse_http(address)[0]
        self.url = url
        loopback = host in ("127.0.0.1", "localhost", "::1") or host.startswith("127.")
        self.app = make_app(station, allowed_hosts=LOOPBACK_NAMES + [host] if loopback else None)
        self.server = uvicorn.Server(uvicorn.Config(self.app, log_level="warning", access_log=False,
                                                    lifespan="off", timeout_graceful_shutdown=1))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True,
                                       name="edgeprune-dashboard")
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started and self.thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        if not self.server.started:
            self.stop()
            sock.close()
            raise EdgepruneError(f"--http {address}: the dashboard did not start")
        log.info("dashboard on %s", self.url)

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)
        self.app.state.close()
