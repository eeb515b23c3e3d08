"""Upstream over MQTT (paho-mqtt): a JSON summary every N seconds, and a sample of images.

Topics: `TOPIC` gets the summary, `TOPIC/sample` one JSON message per sampled image (the latest
DEFECT or REVIEW of the interval first, else the latest image; JPEG/PNG bytes base64-encoded, as
the camera wrote them), `TOPIC/event` an event when it happens (input drift raised or
acknowledged). Messages are published with QoS 1: while the broker is down paho keeps
them in its queue (up to MAX_QUEUED) and sends them, in order, when it reconnects, so nothing is
lost to a broker restart; the station never waits for the broker.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from typing import Any, Callable

import numpy as np

from edgeprune.station.config import parse_mqtt_url

MAX_QUEUED = 10_000

log = logging.getLogger("edgeprune.station.mqtt")


def summarize(rows: list[dict[str, Any]], *, ok_classes, class_names) -> dict[str, Any]:
    """What the interval's decision rows add up to (the figures the summary carries)."""
    decided = [r for r in rows if r["decision"] != "ERROR"]
    counts = {d: sum(1 for r in rows if r["decision"] == d) for d in ("OK", "DEFECT", "REVIEW", "ERROR")}
    latencies = np.array([r["latency_ms"] for r in rows if r["latency_ms"] is not None], dtype=float)
    out: dict[str, Any] = {
        "images": len(rows),
        "decisions": counts,
        "defect_rate": counts["DEFECT"] / len(decided) if decided else None,
        "review_count": counts["REVIEW"],
        "error_count": counts["ERROR"],
        "latency_ms_p50": float(np.percentile(latencies, 50)) if len(latencies) else None,
        "latency_ms_p99": float(np.percentile(latencies, 99)) if len(latencies) else None,
    }
    labelled = [r for r in decided if r["true_class"] is not None]
    # Top-1 accuracy where the true class is one of the model's; OK/DEFECT accuracy wherever a
    # true class is known (a replay's folder names), over the parts not sent to a person.
    top1 = [r for r in labelled if r["true_class"] in class_names]
    out["accuracy"] = (sum(r["predicted_class"] == r["true_class"] for r in top1) / len(top1)) if top1 else None
    judged = [r for r in labelled if r["decision"] in ("OK", "DEFECT")]
    out["ok_defect_accuracy"] = (
        sum((r["decision"] == "OK") == (r["true_class"] in ok_classes) for r in judged) / len(judged)
        if judged else None)
    out["labelled"] = len(labelled)
    return out


def pick_samples(rows: list[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    flagged = [r for r in rows if r["decision"] in ("DEFECT", "REVIEW")]
    ordered = list(reversed(flagged)) + [r for r in reversed(rows) if r not in flagged]
    return ordered[:count]


class MqttPublisher:
    """Every `interval_s`, `build()` -> (summary dict, sample rows) is published."""

    def __init__(self, url: str, interval_s: float, build: Callable[[], tuple[dict, list[dict]]],
                 client_id: str = "edgeprune-station", identity: dict[str, Any] | None = None):
        import paho.mqtt.client as mqtt

        self.endpoint = parse_mqtt_url(url)
        self.topic = self.endpoint.path.strip("/")
        self.interval_s = interval_s
        self.build = build
        self.identity = dict(identity or {})  # station_id and line, in every sample message (the fleet)
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
        self.client.max_queued_messages_set(MAX_QUEUED)
        self.client.reconnect_delay_set(min_delay=0.5, max_delay=5)
        self.published = 0
        self.connected = False
        self.ever_connected = False  # a broker down for the whole run is reported at exit
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        # Message ids published but not yet acknowledged by the broker (QoS 1), for the flush at exit.
        self._unacked: set[int] = set()
        self._acked: set[int] = set()
        self._summaries: set[int] = set()  # the summaries' message ids among them
        self._lock = threading.Lock()
        self.client.on_publish = self._on_publish
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="edgeprune-mqtt", daemon=True)

    def _on_connect(self, client, userdata, flags, reason_code, properties=None):
        self.connected = not reason_code.is_failure
        self.ever_connected = self.ever_connected or self.connected

    def _on_disconnect(self, client, userdata, flags, reason_code, properties=None):
        self.connected = False

    def start(self) -> None:
        # connect_async + loop_start: a broker that is down at start is retried in the
        # background, and what is published meanwhile waits in paho's queue.
        self.client.connect_async(self.endpoint.host, self.endpoint.port, keepalive=30)
        self.client.loop_start()
        self._thread.start()

    def publish_now(self) -> None:
        summary, samples = self.build()
        self._track(self.client.publish(self.topic, json.dumps(summary), qos=1), summary=True)
        for row in samples:
            try:
                with open(row["path"], "rb") as f:
                    data = f.read()
            except OSError:
                continue  # a camera frame or a file already gone: the summary still went
            message = {k: row[k] for k in ("id", "ts", "path", "sha256", "predicted_class", "probability",
                                            "decision", "true_class")}
            message.update(self.identity)
            message["image_base64"] = base64.b64encode(data).decode("ascii")
            self._track(self.client.publish(f"{self.topic}/sample", json.dumps(message), qos=1))
        self.published += 1

    def publish_event(self, kind: str, values: dict[str, Any]) -> None:
        """A station event on TOPIC/event (QoS 1, queued while the broker is down): JSON with
        `kind`, `ts`, station_id and line, and `values` (a drift event: state "drift" or "ok").
        The fleet keeps it in its `events` table (fleet.store.ingest_event)."""
        message = {"kind": kind, "ts": time.time(), **values, **self.identity}
        self._track(self.client.publish(f"{self.topic}/event", json.dumps(message), qos=1))

    def _track(self, info, summary: bool = False) -> None:
        with self._lock:
            if info.mid not in self._acked:
                self._unacked.add(info.mid)
                if summary:
                    self._summaries.add(info.mid)
            self._acked.discard(info.mid)

    def link(self) -> dict[str, Any]:
        """The broker link for the run's result: up now, ever up, and what never reached it."""
        with self._lock:
            unsent = len(self._summaries & self._unacked)
            messages = len(self._unacked)
        return {"broker": f"{self.endpoint.host}:{self.endpoint.port}", "connected": self.connected,
                "ever_connected": self.ever_connected, "summaries_published": self.published,
                "summaries_unsent": unsent, "messages_unsent": messages}

    def _on_publish(self, client, userdata, mid, reason_code=None, properties=None):
        with self._lock:  # may run before publish() has returned the mid to _track
            if mid in self._unacked:
                self._unacked.discard(mid)
                self._summaries.discard(mid)
            else:
                self._acked.add(mid)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.publish_now()
            except Exception as exc:  # noqa: BLE001 - a summary must never stop the station
                log.warning("MQTT summary failed: %s", exc)

    flush_s = 3.0  # at exit; the station lowers it to what is left of its drain_timeout

    def stop(self, flush_s: float | None = None) -> None:
        """A last summary, then up to `flush_s` for the queue to reach the broker (what is still
        queued after that is lost with the process: MQTT carries summaries, not the record)."""
        flush_s = self.flush_s if flush_s is None else flush_s
        self._stop.set()
        self._thread.join(timeout=5)
        try:
            self.publish_now()
        except Exception as exc:  # noqa: BLE001
            log.warning("MQTT summary failed: %s", exc)
        deadline = time.monotonic() + flush_s
        while time.monotonic() < deadline and self._unacked:
            time.sleep(0.02)
        self.client.disconnect()
        self.client.loop_stop()
