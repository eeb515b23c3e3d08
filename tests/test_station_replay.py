"""End to end: a replay of N real tile images through a trained model gives exactly N decision
rows, and the real Modbus PLC's register 0 holds exactly as many reject signals as DEFECT rows,
each part's sequence id written once, in order."""

from __future__ import annotations

from station_support import ModbusPlc, db_rows, make_replay, station_config

from edgeprune.station import COLUMNS, Station

PER_CLASS = 12


def test_replay_decides_each_image_once_and_signals_every_defect(tile_model, tmp_path):
    replay = make_replay(tile_model, tmp_path / "replay", PER_CLASS)
    plc = ModbusPlc().start()
    try:
        db = tmp_path / "station.db"
        cfg = station_config(tile_model, replay, db, plc=f"modbus://127.0.0.1:{plc.port}?unit=1", rate=200)
        result = Station(cfg).run()
        rows = db_rows(db)
        assert tuple(rows[0]) == COLUMNS
        assert result.decided == len(rows) == 2 * PER_CLASS and result.ended_by == "source ended"
        assert len({(r["path"], r["sha256"]) for r in rows}) == len(rows)
        assert {r["plc_status"] for r in rows} == {"sent"} and result.pending_left == 0
        defects = sum(r["decision"] == "DEFECT" for r in rows)
        assert 0 < defects < len(rows), "a trained model finds some, not all, parts defective"
        count, sequence, decision = plc.registers(3)
        assert count == defects
        assert sequence == rows[-1]["id"] and decision == {"OK": 0, "DEFECT": 1, "REVIEW": 2}[rows[-1]["decision"]]
        assert plc.sequence_writes() == [r["id"] for r in rows], "each part signalled once, in order"
        assert plc.coils(1) == [True]  # a reject pulse was set (the PLC program resets it)
        # The replay knows the true classes: the model is clearly better than chance here too.
        judged = [r for r in rows if r["decision"] in ("OK", "DEFECT")]
        correct = sum((r["decision"] == "OK") == (r["true_class"] == "free") for r in judged)
        assert correct / len(judged) > 0.6, f"{correct}/{len(judged)} correct OK/DEFECT calls"
        assert all(r["model_sha256"] == rows[0]["model_sha256"] and r["latency_ms"] > 0 for r in rows)
        # A restart continues the replay: nothing is left, nothing decided again.
        again = Station(cfg).run()
        assert again.decided == 0 and len(db_rows(db)) == len(rows)
        assert plc.sequence_writes() == [r["id"] for r in rows]
    finally:
        plc.close()
