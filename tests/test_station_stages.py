"""Per-stage timings inside the station (wait, read, decode, infer, log, PLC delivery) with
percentiles in /api/status, in the MQTT summary and in the run's result, beside the host's load
and CPU steal."""

from __future__ import annotations

import threading
import time

import httpx
from station_support import ModbusPlc, free_port, start_mosquitto
from station_tiny import tiny_station_files
from test_station_mqtt import Subscriber

from edgeprune.station import Station, load_config
from edgeprune.station.timings import STAGES, StageTimes

LOOP_STAGES = ("wait", "read", "decode", "infer", "log")


def check_stages(stages: dict, expect_plc: bool) -> None:
    assert set(stages) == set(STAGES)
    for name in LOOP_STAGES + (("plc",) if expect_plc else ()):
        s = stages[name]
        assert s["n"] > 0, name
        assert 0 <= s["p50_ms"] <= s["p99_ms"] <= s["max_ms"], (name, s)
    assert stages["infer"]["p50_ms"] > 0 and stages["decode"]["p50_ms"] > 0


def test_stage_timings_in_status_mqtt_and_the_result(tmp_path):
    model, replay = tiny_station_files(tmp_path, per_class=15)
    broker, mqtt_port = start_mosquitto(tmp_path)
    plc = ModbusPlc().start()
    subscriber = Subscriber(mqtt_port, "line1")
    http_port = free_port()
    statuses = []
    try:
        cfg = load_config(None, {"model": model, "source": f"replay:{replay}", "db": tmp_path / "s.db",
                                 "ok_classes": "c0", "rate": 15, "plc": f"modbus://127.0.0.1:{plc.port}",
                                 "mqtt": f"mqtt://127.0.0.1:{mqtt_port}/line1", "mqtt_interval_s": 0.5,
                                 "http": f"127.0.0.1:{http_port}", "retry_min_s": 0.02, "retry_max_s": 0.2})
        station = Station(cfg)

        def poll():
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and len(statuses) < 3:
                try:
                    status = httpx.get(f"http://127.0.0.1:{http_port}/api/status", timeout=5).json()
                except httpx.HTTPError:
                    time.sleep(0.2)
                    continue
                if status["decided_this_run"] >= 5:
                    statuses.append(status)
                time.sleep(0.3)

        poller = threading.Thread(target=poll)
        poller.start()
        with station:
            result = station.run()
        poller.join(70)
        time.sleep(0.5)
    finally:
        subscriber.close()
        plc.close()
        broker.terminate()
        broker.wait(10)
    assert statuses, "the dashboard never showed a running station"
    check_stages(statuses[-1]["stages"], expect_plc=True)
    host = statuses[-1]["host"]
    assert host["cpus"] >= 1 and len(host["load_1m_5m_15m"]) == 3 and host["cpu_steal_pct"] is not None
    check_stages(result.stages, expect_plc=True)
    assert result.stages["infer"]["n"] == result.decided == 30
    summaries = subscriber.summaries()
    assert summaries and all("stages" in s and "host" in s for s in summaries)
    # Each summary covers its own interval: the counts add up to the run's.
    assert sum(s["stages"]["infer"]["n"] for s in summaries) == result.decided
    check_stages(max(summaries, key=lambda s: s["images"])["stages"], expect_plc=False)


def test_stage_summary_since_a_mark():
    times = StageTimes(keep=100)
    for ms in (1.0, 2.0, 3.0):
        times.add("infer", ms)
    mark = times.mark()
    times.add("infer", 10.0)
    times.add("infer", 20.0)
    assert times.summary()["infer"]["n"] == 5
    since = times.summary(since=mark)["infer"]
    assert since["n"] == 2 and since["p50_ms"] == 15.0 and since["max_ms"] == 20.0
    assert times.summary(since=times.mark())["infer"] == {"n": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}
