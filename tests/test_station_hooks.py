"""What the dashboard (issue 12) plugs into, on a running station: status(), decisions(since,
limit), review_queue(), and swap_model() -- atomic between two images, refused by a gate without
touching the running model."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from station_support import db_rows, make_replay, scaled_copy, station_config

from edgeprune.errors import EdgepruneError
from edgeprune.outputs import file_sha256
from edgeprune.station import Station


def test_status_queries_and_model_swap_on_a_running_station(tile_model, tmp_path):
    replay = make_replay(tile_model, tmp_path / "replay", 15)
    Station(station_config(tile_model, replay, tmp_path / "probe.db")).run()
    threshold = float(np.median([r["probability"] for r in db_rows(tmp_path / "probe.db")]))
    db = tmp_path / "station.db"
    station = Station(station_config(tile_model, replay, db, rate=25, review_below=threshold))
    thread = threading.Thread(target=station.run)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while station.status()["decided_this_run"] < 8:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        status = station.status()
        assert status["state"] == "running" and status["model_sha256"] == file_sha256(tile_model[0])
        assert sum(status["total"].values()) >= 8 and status["latency_ms_p99"] > 0
        assert 0 <= status["ok_defect_accuracy"] <= 1 and status["labelled_this_run"] > 0  # replay labels
        first = station.decisions(since=0, limit=3)
        assert [r["id"] for r in first] == [1, 2, 3]
        assert [r["id"] for r in station.decisions(since=3, limit=2)] == [4, 5]
        assert all(r["decision"] == "REVIEW" for r in station.review_queue())

        with pytest.raises(EdgepruneError, match="refused by the gate: accuracy too low"):
            station.swap_model(tile_model[0], gate=lambda model: "accuracy too low")
        sharper = scaled_copy(tile_model[0], tmp_path / "sharper.onnx", 20.0)
        new_sha = station.swap_model(sharper, gate=lambda model: None)
        swapped_at = station.status()["decided_this_run"]
        assert station.status()["model_sha256"] == new_sha == file_sha256(sharper)
        thread.join(30)
    finally:
        station.stop()
        thread.join(10)
    final = station.status()  # still answers after the run, until close()
    assert final["state"] == "stopped" and final["decided_this_run"] == 30
    station.close()
    rows = db_rows(db)
    assert len(rows) == 30
    shas = [r["model_sha256"] for r in rows]
    switch = shas.index(new_sha)
    assert switch >= 8 and switch <= swapped_at + 1 and set(shas[switch:]) == {new_sha}, "one clean switch"
    # The sharper model is surer: fewer parts go to a person after the swap.
    before = np.mean([r["decision"] == "REVIEW" for r in rows[:switch]])
    after = np.mean([r["decision"] == "REVIEW" for r in rows[switch:]])
    assert after < before
