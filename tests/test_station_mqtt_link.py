"""A broker that is down for the whole run is reported: link state and unsent summaries in the
run's result (`--json`) and as a warning at exit."""

from __future__ import annotations

import json
import subprocess
import sys

from station_support import free_port, start_mosquitto
from station_tiny import tiny_station_files


def run_station(tmp_path, model, replay, port, *extra) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "edgeprune", "station", "run", "--model", str(model), "--source", f"replay:{replay}",
         "--ok-classes", "c0", "--db", str(tmp_path / "s.db"), "--mqtt", f"mqtt://127.0.0.1:{port}/line1",
         "--mqtt-interval", "0.3", "--rate", "20", "--drain-timeout", "1", *extra],
        capture_output=True, text=True, timeout=120)


def test_a_broker_down_for_the_whole_run_is_reported(tmp_path):
    model, replay = tiny_station_files(tmp_path, per_class=10)
    port = free_port()  # nothing listens there
    done = run_station(tmp_path, model, replay, port, "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    link = result["mqtt"]
    assert link["broker"] == f"127.0.0.1:{port}"
    assert link["connected"] is False and link["ever_connected"] is False
    assert link["summaries_published"] >= 2 and link["summaries_unsent"] == link["summaries_published"]
    assert "unreachable for the whole run" in done.stderr and f"127.0.0.1:{port}" in done.stderr


def test_a_reachable_broker_reports_nothing_unsent(tmp_path):
    model, replay = tiny_station_files(tmp_path, per_class=10)
    broker, port = start_mosquitto(tmp_path)
    try:
        done = run_station(tmp_path, model, replay, port, "--json")
    finally:
        broker.terminate()
        broker.wait(10)
    assert done.returncode == 0, done.stderr
    link = json.loads(done.stdout)["mqtt"]
    assert link["ever_connected"] is True and link["summaries_unsent"] == 0 and link["summaries_published"] >= 2
    assert "MQTT" not in done.stderr
