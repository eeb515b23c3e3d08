"""The fleet's wire benchmark at a tiny scale, as a test of exactly-once: 3 simulated stations
(the station's own Uploader) publish through a real mosquitto to a real `edgeprune fleet serve`
process; during the run one station goes offline and comes back, the broker is restarted and the
fleet server is killed with SIGKILL and restarted. Every station's log must then be in the fleet
database, row by row, none missing and none twice (rows, per-station totals, hourly aggregates)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from edgeprune.fleet.store import FleetStore
from edgeprune.station.log import COLUMNS

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "fleet_mqtt.py"


@pytest.mark.slow
def test_wire_benchmark_loses_and_duplicates_nothing_through_faults(tmp_path):
    out, keep = tmp_path / "result.json", tmp_path / "work"
    result = subprocess.run(
        [sys.executable, str(BENCH), "--stations", "3", "--rate", "20", "--drain-rows", "100", "--steady-s", "0",
         "--faults-s", "15", "--offline-s", "4", "--ack-timeout-s", "2", "--upload-batch", "50",
         "--backends", "sqlite", "--timeout-s", "60", "--out", str(out), "--keep", str(keep)],
        capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    run = json.loads(out.read_text())["backends"]["sqlite"]
    assert [e["fault"] for e in run["faults"]["events"]] == ["station offline", "broker restart", "station back",
                                                             "fleet kill -9"]
    back = next(e for e in run["faults"]["events"] if e["fault"] == "station back")
    assert back["backlog_rows"] > 0, "the offline station came back with rows to resend"
    verify = run["verify"]
    assert (verify["lost"], verify["duplicated"], verify["mismatched"]) == (0, 0, 0), verify
    # 300 drained + at least 15 s x 3 stations x 20/s, whatever the machine's load
    assert verify["rows"] >= 300 + 0.9 * 15 * 3 * 20

    # The same, checked here from the databases themselves, every column of every row.
    store = FleetStore(str(keep / "sqlite" / "fleet.db"), tmp_path / "fleet-data")
    try:
        stations = sorted((keep / "sqlite" / "stations").glob("*.db"))
        assert len(stations) == 3
        total = 0
        for db in stations:
            with sqlite3.connect(db) as con:
                con.row_factory = sqlite3.Row
                mine = [{k: r[k] for k in COLUMNS} for r in con.execute("SELECT * FROM decisions ORDER BY id")]
            station_id = verify["per_station"][int(db.stem)]["station_id"]  # stations/<i>.db, in order
            assert store.decision_rows(station_id) == mine, f"{station_id}: row by row, nothing twice"
            total += len(mine)
        figures = store.figures()
        assert sum(s.images for s in figures.stations) == total
        assert sum(h.images for s in figures.stations for h in s.hourly) == total
    finally:
        store.close()
