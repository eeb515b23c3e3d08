"""`edgeprune fleet serve`: subscribe to the stations' topics, store every batch, serve the page.

Threads: paho's network thread only queues each message; one ingest worker stores them in
arrival order and publishes the receipt after the commit (so a receipt always means "stored");
uvicorn serves the page and /api/fleet in its own thread. A kill -9 at any moment loses nothing:
what was queued or half-stored has no receipt yet, and the station sends it again.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import socket
import threading
import time
from typing import Callable

from edgeprune.errors import EdgepruneError
from edgeprune.fleet.config import FleetConfig, parse_mqtt_filter
from edgeprune.fleet.ingest import Ingestor
from edgeprune.fleet.store import FleetStore

log = logging.getLogger("edgeprune.fleet")
QUEUE_MAX = 10_000  # messages waiting for the worker; beyond it paho's thread waits (back-pressure)


class FleetServer:
    def __init__(self, config: FleetConfig, *, store: FleetStore | None = None):
        import paho.mqtt.client as mqtt

        self.config = config
        self.store = store or FleetStore(config.db, config.data)  # an unreachable database fails here
        self.ingestor = Ingestor(self.store, config)
        self.host, self.port, self.topic = parse_mqtt_filter(config.mqtt)
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"edgeprune-fleet-{socket.gethostname()}-{os.getpid()}")
        self.client.reconnect_delay_set(min_delay=0.5, max_delay=5)
        self.client.max_inflight_messages_set(100)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = lambda c, u, m: self._queue.put((m.topic, bytes(m.payload)))
        self.connected = False
        self.started_ts: float | None = None
        self._queue: queue.Queue = queue.Queue(QUEUE_MAX)
        self._stop = threading.Event()
        self._worker = threading.Thread(target=self._work, name="edgeprune-fleet-ingest", daemon=True)
        self.rollouts = None
        if config.endpoints:  # stations the fleet may switch: it drives their roll-outs too
            from edgeprune.fleet.rollout import RolloutWorker

            self.rollouts = RolloutWorker(self.store.engine, config, owner=f"serve-{socket.gethostname()}-{os.getpid()}")
        self.http = None
        if config.http is not None:
            self.http = _HttpServer(self, config.http)  # a busy port fails here, before anything starts

    def _on_connect(self, client, userdata, flags, reason_code, properties=None):
        self.connected = not reason_code.is_failure
        if self.connected:
            client.subscribe(self.topic, qos=1)
            log.info("subscribed to %s on %s:%s", self.topic, self.host, self.port)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties=None):
        self.connected = False

    def _work(self) -> None:
        while not self._stop.is_set() or not self._queue.empty():
            try:
                topic, payload = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                outcome = self.ingestor.handle(topic, payload)
            except Exception as exc:  # noqa: BLE001 - the server outlives any one message
                log.exception("ingest failed on %s: %s", topic, exc)
                continue
            if outcome.receipt is not None:
                self.client.publish(outcome.receipt[0], outcome.receipt[1], qos=1)

    def status(self) -> dict:
        return {"mqtt": f"mqtt://{self.host}:{self.port}/{self.topic}", "connected": self.connected,
                "queued": self._queue.qsize(), "messages": dict(self.ingestor.counts),
                "started_ts": self.started_ts}

    def start(self) -> None:
        self.started_ts = time.time()
        self._worker.start()
        self.client.connect_async(self.host, self.port, keepalive=30)
        self.client.loop_start()
        if self.rollouts is not None:
            self.rollouts.start()
        if self.http is not None:
            self.http.start()

    def stop(self) -> None:
        self._stop.set()
        self.client.disconnect()
        self.client.loop_stop()
        self._worker.join(10)
        if self.rollouts is not None:
            self.rollouts.stop()
        if self.http is not None:
            self.http.stop()
        self.store.close()

    def serve_forever(self, on_ready: Callable[[], None] | None = None) -> None:
        """Until SIGINT / SIGTERM."""
        stop = threading.Event()
        previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
        self.start()
        try:
            if on_ready is not None:
                on_ready()
            while not stop.wait(0.5):
                pass
        finally:
            for s, h in previous.items():
                signal.signal(s, h)
            self.stop()


class _HttpServer:
    """uvicorn in a daemon thread, its socket bound at construction (a busy port is an `error:`)."""

    def __init__(self, server: FleetServer, address: str):
        import uvicorn

        from edgeprune.fleet.web import make_app
        from edgeprune.station.web import LOOPBACK_NAMES, bind_dashboard_socket

        # the dashboard's own binder: an `error:` line for a busy port, TCP_NODELAY for polling
        sock, self.url, host = bind_dashboard_socket(address)
        self.sock = sock
        loopback = host in ("127.0.0.1", "localhost", "::1") or host.startswith("127.")
        app = make_app(server.store, server.config, status=server.status,
                       allowed_hosts=LOOPBACK_NAMES + [host] if loopback else None)
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                                                    timeout_graceful_shutdown=2))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True,
                                       name="edgeprune-fleet-http")

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started and self.thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        if not self.server.started:
            raise EdgepruneError("the fleet page did not start")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()
