"""Summaries upstream: a subscriber on a real mosquitto broker receives the station's JSON
summaries (every decision counted once across them) and image samples, also when the broker
only comes up after the station started (paho's queue holds them meanwhile)."""

from __future__ import annotations

import base64
import json
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from station_support import db_rows, free_port, make_replay, start_mosquitto, station_config

from edgeprune.runtime.backends import file_sha256
from edgeprune.station import Station


class Subscriber:
    def __init__(self, port: int, topic: str):
        self.messages: list[tuple[str, dict]] = []
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        # The decision log's gzip batches (TOPIC/upload/...) are the fleet's: test_fleet_*.py.
        self.client.on_message = lambda c, u, m: None if "/upload/" in m.topic else \
            self.messages.append((m.topic, json.loads(m.payload)))
        self.client.connect("127.0.0.1", port)
        self.client.subscribe(f"{topic}/#", qos=1)
        self.client.subscribe(topic, qos=1)
        self.client.loop_start()
        time.sleep(0.2)

    def summaries(self) -> list[dict]:
        return [m for t, m in self.messages if not t.endswith("/sample")]

    def samples(self) -> list[dict]:
        return [m for t, m in self.messages if t.endswith("/sample")]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def wait_images(subscriber: Subscriber, total: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while sum(s["images"] for s in subscriber.summaries()) < total and time.monotonic() < deadline:
        time.sleep(0.05)


def test_summary_reaches_a_subscriber(tile_model, tmp_path):
    broker, port = start_mosquitto(tmp_path)
    subscriber = Subscriber(port, "plant/line1")
    try:
        replay = make_replay(tile_model, tmp_path / "replay", 10)
        db = tmp_path / "station.db"
        cfg = station_config(tile_model, replay, db, rate=40, mqtt=f"mqtt://127.0.0.1:{port}/plant/line1",
                             mqtt_interval_s=0.15)
        Station(cfg).run()
        wait_images(subscriber, 20)
        summaries = subscriber.summaries()
        assert len(summaries) >= 2 and sum(s["images"] for s in summaries) == 20  # each image once
        rows = db_rows(db)
        last = summaries[-1]
        assert last["model_sha256"] == file_sha256(tile_model[0])
        assert last["total"]["DEFECT"] == sum(r["decision"] == "DEFECT" for r in rows)
        for key in ("defect_rate", "review_count", "latency_ms_p50", "latency_ms_p99", "plc_backlog",
                    "accuracy", "ok_defect_accuracy"):
            assert key in last
        busy = [s for s in summaries if s["images"]]
        assert all(0 <= s["defect_rate"] <= 1 and s["latency_ms_p99"] >= s["latency_ms_p50"] > 0 for s in busy)
        assert all(s["ok_defect_accuracy"] is not None for s in busy), "replay labels give live accuracy"
        samples = subscriber.samples()
        assert samples, "an image sample comes with the summaries"
        image = base64.b64decode(samples[0]["image_base64"])
        assert image == Path(samples[0]["path"]).read_bytes()
    finally:
        subscriber.close()
        broker.terminate()
        broker.wait(5)


def test_summaries_wait_while_the_broker_is_down(tile_model, tmp_path):
    port = free_port()  # nothing listens yet
    replay = make_replay(tile_model, tmp_path / "replay", 10)
    cfg = station_config(tile_model, replay, tmp_path / "station.db", rate=8,
                         mqtt=f"mqtt://127.0.0.1:{port}/plant/line2", mqtt_interval_s=0.2)
    station = Station(cfg)
    thread = threading.Thread(target=station.run)
    thread.start()
    time.sleep(0.8)  # summaries published meanwhile wait in paho's queue
    broker, _ = start_mosquitto(tmp_path, port)
    subscriber = Subscriber(port, "plant/line2")
    try:
        thread.join(60)
        wait_images(subscriber, 20)
        summaries = subscriber.summaries()
        assert sum(s["images"] for s in summaries) == 20, "no summary lost to the broker outage"
        assert summaries[0]["ts"] < summaries[-1]["ts"]
    finally:
        station.stop()
        thread.join(10)
        subscriber.close()
        broker.terminate()
        broker.wait(5)
