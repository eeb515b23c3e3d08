"""The station's dashboard and HTTP API (FastAPI, served by uvicorn in a thread of the station).

    GET  /                       the live page (page.py: plain HTML and a small script, no build step)
    GET  /api/status             counters, latency, PLC and MQTT links, model, live accuracy, chart data
    GET  /api/decisions?since=ID&limit=N
    GET  /api/review?limit=N     REVIEW parts no one has labelled yet
    GET  /api/images/{id}        a thumbnail of a part the log knows (by id, never by path)
    GET  /api/models             the roll-out log
    POST /api/review/{id}        {"label": CLASS}                          token
    POST /api/models             multipart field `file` (ONNX), gate-checked  token
    POST /api/models/rollback                                              token

Security: it binds where `http` says (127.0.0.1 unless told otherwise); every state-changing
request needs `Authorization: Bearer TOKEN` (the config's dashboard.token or
$EDGEPRUNE_STATION_TOKEN, compared in constant time; with neither set nothing can be changed);
request bodies are capped (the upload limit for /api/models, 64 KiB elsewhere) while they
stream in, not after; a file is read only for a decision id the log holds, and only when its
bytes still hash to what was decided.
"""

from __future__ import annotations

import hmac
import io
import logging
import socket
import threading
import time
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile

from edgeprune.errors import EdgepruneError
from edgeprune.station.dashboard_config import DashboardConfig, parse_http
from edgeprune.station.mqtt import summarize
from edgeprune.station.page import APP_JS, PAGE
from edgeprune.station.review import ReviewLog, UnknownDecision, connect
from edgeprune.station.rollout import RolloutRefused, Rollouts
from edgeprune.station.sources import image_sha256, is_image

log = logging.getLogger("edgeprune.station.web")

SMALL_BODY = 64 * 1024  # every request but an upload
FORM_OVERHEAD = 64 * 1024  # multipart boundaries and headers around the uploaded file
THUMBNAIL_PX = 96
CHART_WINDOW_S, CHART_BUCKET_S = 300, 5
THROUGHPUT_S = 10.0
LIVE_ACCURACY_ROWS = 1000  # live accuracy: over the latest decisions whose true class is known
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'self'; img-src 'self'; style-src 'self' 'unsafe-inline'; "
                               "script-src 'self'; connect-src 'self'; frame-ancestors 'none'",
}


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int):
        super().__init__(413, f"request body larger than {limit} bytes")


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


class ReviewLabel(BaseModel):
    label: str


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


LOOPBACK_NAMES = ["127.0.0.1", "localhost", "::1", "[::1]"]


def make_app(station, config: DashboardConfig | None = None, *, allowed_hosts: list[str] | None = None) -> FastAPI:
    """The FastAPI app over a Station (its status, log, swap hook). `allowed_hosts`: the Host
    headers answered (served on loopback: loopback names only, so a web page that rebinds its own
    domain to 127.0.0.1 cannot read the station). `app.state.close()` releases the app's database
    connections."""
    config = config or station.config.dashboard
    db_path = Path(station.config.db)
    reviews = ReviewLog(db_path)
    rollouts = Rollouts(station, config)
    data = DashboardData(db_path)
    upload_limit = config.max_upload_bytes

    app = FastAPI(title="edgeprune station", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(BodyLimit, limit_for=lambda path: upload_limit + FORM_OVERHEAD
                       if path == "/api/models" else SMALL_BODY)
    if allowed_hosts is not None:
        from starlette.middleware.trustedhost import TrustedHostMiddleware

        app.add_middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts)
    app.state.reviews, app.state.rollouts, app.state.data = reviews, rollouts, data

    def close() -> None:
        for part in (reviews, rollouts, data):
            part.close()

    app.state.close = close

    @app.middleware("http")
    async def security_headers(request: Request, call_next):
        response = await call_next(request)
        response.headers.update(SECURITY_HEADERS)
        return response

    def authorized(request: Request) -> bool:
        expected = config.bearer_token()
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if expected is None or scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(given.strip().encode(), expected.encode())

    def refuse_unauthorized() -> None:
        why = ("a bearer token is needed (Authorization: Bearer TOKEN)" if config.bearer_token()
               else "no token is configured (dashboard.token or EDGEPRUNE_STATION_TOKEN): nothing can be changed")
        raise HTTPException(401, why, headers={"WWW-Authenticate": "Bearer"})

    def client_of(request: Request) -> str | None:
        return request.client.host if request.client else None

    # ------------------------------------------------------------------------- pages and reads

    @app.get("/", response_class=HTMLResponse)
    def page() -> HTMLResponse:
        return HTMLResponse(PAGE)

    @app.get("/app.js")
    def script() -> Response:
        return Response(APP_JS, media_type="text/javascript")

    @app.get("/api/status")
    def status() -> dict[str, Any]:
        out = station.status()
        model = station.current_model()
        meta = model.classifier.metadata
        out["model_info"] = {
            "name": model.path.name, "source_checkpoint": meta.raw.get("edgeprune.source_checkpoint"),
            "sha256": model.sha256, "architecture": meta.architecture, "test_accuracy": meta.test_accuracy,
            "accuracy_data": meta.raw.get("edgeprune.accuracy_data"), "class_names": model.class_names,
            "runtime": model.classifier.runtime}
        out["review_backlog"] = reviews.backlog()
        out["last_id"] = station.log.last_id()
        recent = data.recent(LIVE_ACCURACY_ROWS)
        live = summarize(recent, ok_classes=frozenset(station.config.ok_classes), class_names=model.class_names)
        out["live"] = {"accuracy": live["accuracy"], "ok_defect_accuracy": live["ok_defect_accuracy"],
                       "labelled": live["labelled"], "over_last": len(recent)}
        now = time.time()
        out["timeline"] = data.timeline(now)
        # Images/s over the last THROUGHPUT_S (or the run so far, when shorter).
        span = min(THROUGHPUT_S, out["elapsed_s"]) if station.state == "running" else 0.0
        out["throughput_per_s"] = data.count_since(now - span) / span if span > 0.5 else None
        out["gate"] = rollouts.gate_thresholds()
        out["rollouts"] = rollouts.history(5)
        out["token_configured"] = config.bearer_token() is not None
        return out

    @app.get("/api/decisions")
    def decisions(since: int = 0, limit: int = 100) -> list[dict[str, Any]]:
        if since < 0 or not 1 <= limit <= 1000:
            raise HTTPException(422, "since must be >= 0 and limit 1..1000")
        return station.decisions(since=since, limit=limit)

    @app.get("/api/review")
    def review_queue(limit: int = 50) -> dict[str, Any]:
        if not 1 <= limit <= 1000:
            raise HTTPException(422, "limit must be 1..1000")
        return {"backlog": reviews.backlog(), "items": reviews.queue(limit),
                "classes": station.current_model().class_names}

    @app.get("/api/images/{decision_id}")
    def image(decision_id: int) -> Response:
        found = data.image(decision_id)
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

    @app.get("/api/models")
    def model_log(limit: int = 20) -> list[dict[str, Any]]:
        return rollouts.history(max(1, min(limit, 500)))

    # ------------------------------------------------------------------------- changes (token)

    @app.post("/api/review/{decision_id}")
    async def label(decision_id: int, request: Request) -> dict[str, Any]:
        if not authorized(request):  # before the body is even read: 401 whatever was sent
            refuse_unauthorized()
        try:
            body = ReviewLabel.model_validate_json(await request.body())
        except ValidationError:
            raise HTTPException(422, 'send JSON {"label": CLASS}') from None
        model = station.current_model()
        try:
            return await run_in_threadpool(reviews.label, decision_id, body.label, classes=model.class_names,
                                           model_sha256=model.sha256)
        except UnknownDecision as exc:
            raise HTTPException(404, str(exc)) from None
        except EdgepruneError as exc:
            raise HTTPException(422, str(exc)) from None

    def refused(exc: RolloutRefused) -> JSONResponse:
        return JSONResponse({"detail": str(exc), "figures": exc.figures, "gate": rollouts.gate_thresholds()},
                            status_code=exc.status_code)

    @app.post("/api/models")
    async def upload(request: Request):
        client = client_of(request)
        if not authorized(request):
            rollouts.record("upload", client=client, accepted=False, status_code=401, reason="no or wrong token")
            refuse_unauthorized()
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

    @app.post("/api/models/rollback")
    def rollback(request: Request):
        if not authorized(request):
            rollouts.record("rollback", client=client_of(request), accepted=False, status_code=401,
                            reason="no or wrong token")
            refuse_unauthorized()
        try:
            return rollouts.rollback(client=client_of(request))
        except RolloutRefused as exc:
            return refused(exc)

    return app


class DashboardServer:
    """uvicorn serving the app in a daemon thread (the station's main loop keeps the main thread
    and its signal handlers). The socket is bound here, so a busy port fails at start-up with an
    `error:` line instead of a log message from a background thread."""

    def __init__(self, station, address: str):
        import uvicorn

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
        sock.listen(64)
        self.url = f"http://{host if family == socket.AF_INET else f'[{host}]'}:{sock.getsockname()[1]}/"
        loopback = host in ("127.0.0.1", "localhost", "::1") or host.startswith("127.")
        self.app = make_app(station, allowed_hosts=LOOPBACK_NAMES + [host] if loopback else None)
        self.server = uvicorn.Server(uvicorn.Config(self.app, log_level="warning", access_log=False,
                                                    lifespan="off", timeout_graceful_shutdown=2))
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

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.app.state.close()


def start_dashboard(station) -> DashboardServer:
    """Serve the dashboard for `station` at its config's `http` address (called by Station.run)."""
    return DashboardServer(station, station.config.http)

