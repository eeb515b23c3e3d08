"""Store-and-forward: the PLC goes down during the run and comes back later; every signal is
delivered once, in order, and register 0 ends equal to the DEFECT count; the outage is an alarm."""

from __future__ import annotations

import threading
import time

from station_support import ModbusPlc, alarms, db_rows, make_replay, station_config

from edgeprune.station import Station


def wait_for(condition, timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_plc_outage_keeps_signals_and_delivers_them_in_order(tile_model, tmp_path):
    replay = make_replay(tile_model, tmp_path / "replay", 12)
    plc = ModbusPlc().start()
    db = tmp_path / "station.db"
    cfg = station_config(tile_model, replay, db, plc=f"modbus://127.0.0.1:{plc.port}", rate=40,
                         drain_timeout=30.0)
    station = Station(cfg)
    outcome = {}
    thread = threading.Thread(target=lambda: outcome.setdefault("result", station.run()))
    try:
        thread.start()
        wait_for(lambda: sum(r["plc_status"] == "sent" for r in db_rows(db)) >= 4, what="first deliveries")
        plc.stop()
        wait_for(lambda: len(db_rows(db)) == 24, what="all images decided")
        pending = sum(r["plc_status"] == "pending" for r in db_rows(db))
        assert pending >= 5, "the images decided during the outage wait in the database"
        assert station.status()["plc"]["connected"] is False
        time.sleep(0.3)
        plc.start()  # same port, same memory: the network came back
        thread.join(60)
        assert not thread.is_alive()
        result = outcome["result"]
        rows = db_rows(db)
        assert result.pending_left == 0 and {r["plc_status"] for r in rows} == {"sent"}
        assert plc.registers(1)[0] == sum(r["decision"] == "DEFECT" for r in rows)
        assert plc.sequence_writes() == [r["id"] for r in rows], "none lost, none twice, in order"
        kinds = [a["kind"] for a in alarms(db)]
        assert "plc_unreachable" in kinds and "plc_restored" in kinds
    finally:
        station.stop()
        thread.join(30)
        plc.close()
