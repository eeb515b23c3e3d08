"""The dashboard in a process of its own, so the line comes first.

The station's process does one thing on time: take an image, decide, log, signal the PLC. In the
same process, a busy dashboard (hundreds of clients polling /api/status, thumbnails decoded with
PIL, a model upload being gated) takes the interpreter's lock for long stretches, and the decision
loop waits for it: decision p99 went from ~13 ms to 125-140 ms under 200-400 concurrent requests,
and a SIGTERM waited behind the request queue. Here the HTTP server, the thumbnails and the
gate's evaluation of an uploaded model run in a child process (a fresh interpreter,
`python -m edgeprune.station.dashboard_process`: never forked from a process with threads, and,
unlike multiprocessing's spawn, without re-running the caller's main script) at a lower
priority (nice +10) and, where the machine has several cores, never on the last one. It reads
the station's SQLite database directly (WAL: readers never block the writer) and asks the
station's process for three things only, over a socket pair served by one bridge thread:

- `status`: the station's in-memory snapshot (counters, latency percentiles, PLC and MQTT links),
  asked at most every STATUS_TTL_S whatever the number of clients: the cost to the line is
  bounded and independent of the dashboard's load;
- `swap`: switch to a model the dashboard process has already loaded and gated; the station
  loads it beside the running one and swaps it between two images (`Station.swap_model`);
- `ack_drift`: a person acknowledged the input-drift alarm (`Station.acknowledge_drift`).

Stopping is bounded: the station asks the child to stop, waits at most STOP_GRACE_S, then kills
it (it holds nothing that needs a graceful end: every label and roll-out is committed when made),
so no request in flight can hold up SIGTERM. The child ignores SIGINT/SIGTERM (a Ctrl-C reaches
the whole process group; the station ends it in order) and exits by itself when the station's
process is gone (its end of the control pipe closes).
"""

from __future__ import annotations

import logging
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Callable

from edgeprune.errors import EdgepruneError
from edgeprune.station.decision import LoadedModel, check_ok_classes
from edgeprune.station.log import DecisionLog

log = logging.getLogger("edgeprune.station.dashboard")

STATUS_TTL_S = 0.25  # the dashboard asks the station for its status at most 4 times a second
STOP_GRACE_S = 0.2  # then the dashboard process is killed
START_TIMEOUT_S = 60.0  # spawning + importing FastAPI and ONNX Runtime on a loaded 2-core machine
CHILD_NICE = 10


# --------------------------------------------------------------------------- in the dashboard process


class StationView:
    """What the dashboard's routers need of a Station (web_context.DashboardContext.station), in
    the dashboard process: the config, the database (its own connection), the station's status
    snapshot and the running model (loaded here for its metadata and for the gate), and model
    swaps forwarded to the station's process."""

    def __init__(self, config, conn):
        self.config = config
        self.log = DecisionLog(config.db, config.db_synchronous)
        self._conn = conn
        self._conn_lock = threading.Lock()
        self._status: dict[str, Any] | None = None
        self._status_at = 0.0
        self._models: dict[str, LoadedModel] = {}

    def _ask(self, *request) -> Any:
        with self._conn_lock:  # one request at a time on the pipe, answers in order
            self._conn.send(request)
            kind, value = self._conn.recv()
        if kind == "error":
            raise EdgepruneError(value)
        return value

    def status(self) -> dict[str, Any]:
        now = time.monotonic()
        if self._status is None or now - self._status_at >= STATUS_TTL_S:
            self._status = self._ask("status")
            self._status_at = now
        return dict(self._status)

    @property
    def state(self) -> str:
        return self.status()["state"]

    def current_model(self) -> LoadedModel:
        status = self.status()
        sha = status["model_sha256"]
        if sha not in self._models:  # the station switched (or this is the first call)
            model = LoadedModel(status["model"], runtime=self.config.runtime, threads=self.config.threads)
            self._models = {model.sha256: model, sha: model}
        return self._models[sha]

    def decisions(self, since: int = 0, limit: int = 100) -> list[dict[str, Any]]:
        return self.log.rows(since=since, limit=limit)

    def review_queue(self, since: int = 0, limit: int = 100) -> list[dict[str, Any]]:
        return self.log.rows(since=since, limit=limit, decision="REVIEW")

    def swap_model(self, path: str | Path, gate: Callable[[LoadedModel], str | None] | None = None) -> str:
        """Load and gate `path` here, then ask the station to switch to it (it checks the file's
        bytes are the ones gated). The same contract as Station.swap_model."""
        candidate = LoadedModel(path, runtime=self.config.runtime, threads=self.config.threads)
        check_ok_classes(candidate, self.config.ok_classes)
        if gate is not None:
            reason = gate(candidate)
            if reason:
                raise EdgepruneError(f"model {path} refused by the gate: {reason}")
        sha = self._ask("swap", str(path), candidate.sha256)
        self._models[sha] = candidate
        self._status = None  # the next status shows the new model
        return sha

    def acknowledge_drift(self, client: str | None = None) -> dict:
        """Forwarded to the station's process (Station.acknowledge_drift)."""
        answer = self._ask("ack_drift", client)
        self._status = None  # the next status shows it cleared
        return answer

    def close(self) -> None:
        self.log.close()


def _lower_priority(avoid_cpu: int | None) -> None:
    try:
        os.nice(CHILD_NICE)
    except OSError:
        pass
    if avoid_cpu is not None and hasattr(os, "sched_setaffinity"):
        cpus = os.sched_getaffinity(0) - {avoid_cpu}
        if cpus:
            os.sched_setaffinity(0, cpus)


def main(argv: list[str]) -> None:
    """The dashboard process: argv = listening socket, request and control fds (inherited), the
    core to avoid or -1; the config and URL arrive pickled on stdin from the station's process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    listen_fd, conn_fd, control_fd, avoid = (int(a) for a in argv)
    config, url = pickle.load(sys.stdin.buffer)
    sock = socket.socket(fileno=listen_fd)
    conn, control = Connection(conn_fd), Connection(control_fd)
    _lower_priority(avoid if avoid >= 0 else None)
    from edgeprune.station.web import DashboardServer

    view = StationView(config, conn)
    try:
        server = DashboardServer(view, config.http, sock=sock, url=url)
    except BaseException as exc:
        control.send(("failed", str(exc)))
        raise SystemExit(1) from None
    control.send(("started", url))
    try:
        control.recv()  # "stop", or EOFError when the station's process is gone
    except (EOFError, OSError):
        pass
    server.stop(timeout=STOP_GRACE_S)
    view.close()


# --------------------------------------------------------------------------- in the station's process


class DashboardProcess:
    """Started by Station.run when `http` is set: binds the socket here (a busy port fails before
    any work), spawns the dashboard process and serves its requests from one bridge thread."""

    def __init__(self, station):
        from edgeprune.station.web import bind_dashboard_socket

        self.station = station
        sock, self.url, _ = bind_dashboard_socket(station.config.http)
        conn, child_conn = socket.socketpair()
        control, child_control = socket.socketpair()
        fds = (sock.fileno(), child_conn.fileno(), child_control.fileno())
        avoid = _current_cpu()
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "edgeprune.station.dashboard_process", *map(str, fds),
                 str(-1 if avoid is None else avoid)], stdin=subprocess.PIPE, pass_fds=fds)
        finally:
            for end in (sock, child_conn, child_control):  # the child holds its own copies
                end.close()
        self._conn, self._control = Connection(conn.detach()), Connection(control.detach())
        try:
            self.process.stdin.write(pickle.dumps((station.config, self.url)))
            self.process.stdin.close()
        except OSError:
            pass  # it ended at once: said below
        if not self._control.poll(START_TIMEOUT_S):
            self._kill()
            raise EdgepruneError(f"--http {station.config.http}: the dashboard did not start "
                                 f"within {START_TIMEOUT_S:g} s")
        try:
            kind, detail = self._control.recv()
        except EOFError:
            kind, detail = "failed", f"its process ended (exit code {self.process.poll()})"
        if kind != "started":
            self._kill()
            raise EdgepruneError(f"--http {station.config.http}: the dashboard did not start: {detail}")
        self._bridge = threading.Thread(target=self._serve_requests, name="edgeprune-dashboard-bridge",
                                        daemon=True)
        self._bridge.start()
        log.info("dashboard on %s (process %d)", self.url, self.process.pid)

    def _serve_requests(self) -> None:
        while True:
            try:
                request = self._conn.recv()
            except (EOFError, OSError):
                return  # the dashboard process ended
            try:
                if request[0] == "status":
                    answer = ("ok", self.station.status())
                elif request[0] == "swap":
                    _, path, sha = request

                    def same_bytes(candidate: LoadedModel, sha=sha) -> str | None:
                        return None if candidate.sha256 == sha else "the file changed after it was gated"

                    answer = ("ok", self.station.swap_model(path, gate=same_bytes))
                elif request[0] == "ack_drift":
                    answer = ("ok", self.station.acknowledge_drift(request[1]))
                else:
                    answer = ("error", f"unknown request {request[0]!r}")
            except EdgepruneError as exc:
                answer = ("error", str(exc))
            except Exception as exc:  # noqa: BLE001 - the dashboard gets an answer, the station goes on
                log.exception("dashboard request %r failed", request[0])
                answer = ("error", f"{type(exc).__name__}: {exc}")
            try:
                self._conn.send(answer)
            except (OSError, ValueError):
                return

    def request_stop(self) -> None:
        """Ask the dashboard to stop (returns at once; `stop` waits and kills)."""
        try:
            self._control.send(("stop",))
        except (OSError, ValueError):
            pass

    def stop(self, timeout: float = STOP_GRACE_S) -> None:
        self.request_stop()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        self._kill()

    def _kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)
        for end in (self._conn, self._control):
            end.close()


def _current_cpu() -> int | None:
    """The core kept free of dashboard work (the last one this process may use), where there
    are several. The decision loop is not pinned to it: on a machine shared with other work a
    pinned thread could not move off a core another process is using; the scheduler finds it an
    idle core, and one core is always one the dashboard never takes."""
    try:
        cpus = os.sched_getaffinity(0)
    except (AttributeError, OSError):
        return None
    return max(cpus) if len(cpus) >= 2 else None


if __name__ == "__main__":
    main(sys.argv[1:])
