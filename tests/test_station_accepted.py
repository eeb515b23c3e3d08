"""A station's accepted model outlives its restart: a real `edgeprune station run` process takes
a gated upload, is stopped and started again, and runs the accepted model (log and /api/status
say so); a rollback is kept the same way; a config edited to name other bytes wins."""

from __future__ import annotations

import sqlite3

import httpx
from loop_support import AUTH, StationProcess, upload, wait_for
from station_tiny import tiny_station_files
from test_bad_input import tiny_onnx

from edgeprune.outputs import file_sha256


def decided_by(db, sha: str) -> int:
    with sqlite3.connect(db) as con:
        return con.execute("SELECT COUNT(*) FROM decisions WHERE model_sha256 = ?", (sha,)).fetchone()[0]


def test_accepted_model_and_rollback_survive_a_restart(tmp_path):
    model_a, replay = tiny_station_files(tmp_path, per_class=400)
    model_b = tiny_onnx(tmp_path / "b.onnx", bias=0.5)  # other bytes, the same classes
    model_c = tiny_onnx(tmp_path / "c.onnx", bias=0.25)
    sha_a, sha_b, sha_c = file_sha256(model_a), file_sha256(model_b), file_sha256(model_c)
    station = StationProcess(tmp_path / "s1", model_a, replay, ok_classes="c0", gate_set=replay)
    try:
        station.start()
        assert station.status()["model_origin"]["origin"] == "config"
        answer = upload(station.url, model_b)
        assert answer.status_code == 200, answer.text
        wait_for(lambda: decided_by(station.db, sha_b) >= 3, 60, "decisions by the uploaded model")
        assert station.stop() == 0

        station.start()  # the same config, still naming model A
        status = station.status()
        assert status["model_sha256"] == sha_b
        assert status["model_origin"]["origin"] == "accepted"
        assert "instead of the config's a" not in status["model_origin"]["detail"]  # it names the files
        assert sha_b[:12] in status["model_origin"]["detail"] and "tiny.onnx" in status["model_origin"]["detail"]
        before = decided_by(station.db, sha_b)
        wait_for(lambda: decided_by(station.db, sha_b) >= before + 3, 60, "decisions after the restart")
        assert "model: the accepted model" in station.output()

        back = httpx.post(f"{station.url}/api/models/rollback", headers=AUTH, timeout=60)  # across the restart
        assert back.status_code == 200, back.text
        assert back.json()["sha256"] == sha_a
        assert station.stop() == 0

        station.start()
        status = station.status()
        assert status["model_sha256"] == sha_a and status["model_origin"]["origin"] == "config"
        assert station.stop() == 0

        # Upload B again, then a person edits the config to model C: the edit wins at the next start.
        station.start()
        assert upload(station.url, model_b).status_code == 200
        assert station.stop() == 0
        station.set_model(model_c)
        station.start()
        status = station.status()
        assert status["model_sha256"] == sha_c
        assert "edited config wins" in status["model_origin"]["detail"]
    finally:
        station.stop()
    with sqlite3.connect(station.db) as con:
        rows = con.execute("SELECT path, sha256, model_sha256 FROM decisions").fetchall()
    assert len(rows) == len({(p, s) for p, s, _ in rows}), "an image decided twice"
    assert {m for _, _, m in rows} <= {sha_a, sha_b, sha_c}
