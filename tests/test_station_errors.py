"""A corrupt image is an ERROR row (no PLC signal, an alarm) and the run goes on."""

from __future__ import annotations

from station_support import ModbusPlc, alarms, db_rows, make_replay, station_config

from edgeprune.station import Station


def test_corrupt_image_is_an_error_row_and_the_run_continues(tile_model, tmp_path):
    replay = make_replay(tile_model, tmp_path / "replay", 5)
    (replay / "defect" / "truncated.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (replay / "free" / "empty.png").write_bytes(b"")
    plc = ModbusPlc().start()
    try:
        db = tmp_path / "station.db"
        result = Station(station_config(tile_model, replay, db, plc=f"modbus://127.0.0.1:{plc.port}")).run()
        rows = db_rows(db)
        assert len(rows) == 12 and result.decided == 12
        errors = [r for r in rows if r["decision"] == "ERROR"]
        assert sorted(r["path"].rsplit("/", 1)[1] for r in errors) == ["empty.png", "truncated.jpg"]
        assert all(r["plc_status"] == "not_needed" and r["predicted_class"] is None for r in errors)
        assert errors[0]["true_class"] in ("free", "defect")
        # Parts after the bad images were decided and signalled as usual.
        assert all(r["plc_status"] == "sent" for r in rows if r["decision"] != "ERROR")
        assert plc.registers(1)[0] == sum(r["decision"] == "DEFECT" for r in rows)
        assert len([a for a in alarms(db) if a["kind"] == "image_error"]) == 2
    finally:
        plc.close()
