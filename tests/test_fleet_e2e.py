"""End to end, with real parts on 127.0.0.1: a station (replaying real tile images) publishes its
decision log through a real mosquitto broker to a real `edgeprune fleet serve` process, into
SQLite and into a real PostgreSQL server. Meanwhile the broker is restarted, the fleet server is
killed with SIGKILL and restarted, and the station is restarted while the fleet is down. After
that the fleet's rows equal the station's, row by row, none missing and none twice."""

from __future__ import annotations

import threading
import time

import pytest
from fleet_support import FleetProcess, Postgres
from station_support import db_rows, make_replay, start_mosquitto, station_config

from edgeprune.fleet.store import FleetStore
from edgeprune.station import COLUMNS, Station
from edgeprune.station.review import ReviewLog

STATION, LINE = "line1-a", "line1"


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def fleet_images(fleet: FleetProcess) -> int:
    try:
        stations = fleet.fleet()["stations"]
    except Exception:  # noqa: BLE001 - the server may be restarting
        return -1
    return next((s["images"] for s in stations if s["station_id"] == STATION), 0)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_every_decision_exactly_once_through_faults(backend, tile_model, tmp_path):
    pg = Postgres() if backend == "postgresql" else None
    db = pg.url if pg else str(tmp_path / "fleet.db")
    broker, port = start_mosquitto(tmp_path)
    fleet = FleetProcess(tmp_path, port, db).start()
    replay = make_replay(tile_model, tmp_path / "replay", 25)
    station_db = tmp_path / "station.db"
    cfg = station_config(tile_model, replay, station_db, rate=12, mqtt=f"mqtt://127.0.0.1:{port}/factory/{LINE}/a",
                         mqtt_interval_s=0.5, station_id=STATION, line=LINE, upload_interval_s=0.3,
                         upload_batch=7, upload_ack_timeout_s=1.0, max_images=36, drain_timeout=60.0)
    try:
        station = Station(cfg)
        runner = threading.Thread(target=station.run)
        runner.start()
        wait_for(lambda: fleet_images(fleet) > 0, 30, "the first batch in the fleet")
        broker.terminate()  # the broker restarts mid-run (no persistence: what it held is gone)
        broker.wait(10)
        time.sleep(0.5)
        broker, _ = start_mosquitto(tmp_path, port)
        wait_for(lambda: fleet_images(fleet) >= 14, 30, "batches after the broker restart")
        fleet.kill9()  # kill -9 mid-run, then restarted
        time.sleep(1.0)
        fleet.start()
        runner.join(120)
        assert not runner.is_alive()
        station.close()
        # The rest of the replay with the fleet down, a few parts labelled by a person meanwhile:
        # the station restarts and resends from its cursor once the fleet is back.
        fleet.kill9()
        rows = db_rows(station_db)
        reviews = ReviewLog(station_db)
        labelled = {r["id"]: ("defect" if r["predicted_class"] == "free" else "free") for r in rows[:3]}
        for decision_id, label in labelled.items():
            reviews.label(decision_id, label, classes=["defect", "free"], model_sha256=None)
        reviews.close()
        second = Station(cfg.replace(max_images=None))
        runner = threading.Thread(target=second.run)
        runner.start()
        time.sleep(1.0)
        fleet.start()
        runner.join(120)
        second.close()
        station_rows = db_rows(station_db)
        assert len(station_rows) == 50
        wait_for(lambda: fleet_images(fleet) == len(station_rows), 60, "every decision in the fleet")
        status = fleet.fleet()
        assert fleet.stop() == 0
    finally:
        fleet.stop()
        broker.terminate()
        broker.wait(10)
    store = FleetStore(db, tmp_path / "fleet-data")
    try:
        fleet_rows = store.decision_rows(STATION)
        assert fleet_rows == [{k: r[k] for k in COLUMNS} for r in station_rows], "row by row, nothing twice"
        entry = next(s for s in status["stations"] if s["station_id"] == STATION)
        assert entry["images"] == len(station_rows) and entry["line"] == LINE
        assert entry["model_sha256"] == station_rows[-1]["model_sha256"]
        assert entry["reviewed"] == 3
        files = sorted(p.relative_to(tmp_path / "fleet-data").as_posix()
                       for p in (tmp_path / "fleet-data").rglob("*") if p.is_file())
        by_id = {r["id"]: r for r in station_rows}
        expected = sorted(f"{label}/{by_id[i]['sha256']}{'.' + by_id[i]['path'].rsplit('.', 1)[1].lower()}"
                          for i, label in labelled.items())
        assert files == expected, "labelled images as <class>/<sha256>.<ext>"
        assert status["ingest_errors"] == 0
    finally:
        store.close()
        if pg:
            pg.stop()
