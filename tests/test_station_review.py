"""Low-confidence parts go to a person: REVIEW exactly when the top probability is below
review_below, signalled to the PLC as decision 2, never counted as a reject."""

from __future__ import annotations

import numpy as np
from station_support import ModbusPlc, db_rows, make_replay, scaled_copy, station_config

from edgeprune.station import Station


def test_low_confidence_becomes_review(tile_model, tmp_path):
    replay = make_replay(tile_model, tmp_path / "replay", 10)
    first = station_config(tile_model, replay, tmp_path / "plain.db")
    Station(first).run()
    probabilities = [r["probability"] for r in db_rows(tmp_path / "plain.db")]
    assert len(set(probabilities)) > 5, "a trained model is not equally sure of every part"
    threshold = float(np.median(probabilities))  # about half the parts fall below it

    plc = ModbusPlc().start()
    try:
        db = tmp_path / "review.db"
        cfg = station_config(tile_model, replay, db, review_below=threshold,
                             plc=f"modbus://127.0.0.1:{plc.port}")
        Station(cfg).run()
        rows = db_rows(db)
        assert [r["probability"] for r in rows] == probabilities  # same order, same model
        for r in rows:
            assert (r["decision"] == "REVIEW") == (r["probability"] < threshold), r
        reviews = sum(r["decision"] == "REVIEW" for r in rows)
        assert 0 < reviews < len(rows)
        assert plc.registers(1)[0] == sum(r["decision"] == "DEFECT" for r in rows)
        decisions_written = [values[2] for code, _, values in plc.writes if code == 16]
        assert decisions_written.count(2) == reviews
    finally:
        plc.close()


def test_fallback_model_rechecks_uncertain_parts(tile_model, tmp_path):
    """The cascade: an uncertain part is re-checked by the fallback, which decides it when sure
    (its sha256 is logged with the decision); sure parts never reach the fallback."""
    from edgeprune.outputs import file_sha256

    replay = make_replay(tile_model, tmp_path / "replay", 8)
    Station(station_config(tile_model, replay, tmp_path / "plain.db")).run()
    plain = db_rows(tmp_path / "plain.db")
    threshold = float(np.median([r["probability"] for r in plain]))
    fallback = scaled_copy(tile_model[0], tmp_path / "fallback.onnx", 20.0)
    cfg = station_config(tile_model, replay, tmp_path / "cascade.db", review_below=threshold,
                         fallback_model=fallback)
    Station(cfg).run()
    rows = db_rows(tmp_path / "cascade.db")
    primary_sha, fallback_sha = plain[0]["model_sha256"], file_sha256(fallback)
    uncertain = [(p, r) for p, r in zip(plain, rows) if p["probability"] < threshold]
    assert uncertain
    for p, r in uncertain:
        assert r["model_sha256"] == fallback_sha and r["predicted_class"] == p["predicted_class"]
        assert r["probability"] > p["probability"] and r["decision"] in ("OK", "DEFECT"), r
    sure = [r for p, r in zip(plain, rows) if p["probability"] >= threshold]
    assert sure and all(r["model_sha256"] == primary_sha for r in sure)
