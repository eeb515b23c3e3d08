"""A relabelled part keeps every label (time, label, client); the export takes the latest; ids
SQLite cannot hold are a 404 like any unknown id."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from station_support import db_rows, make_replay, station_config

from edgeprune.station import Station
from edgeprune.station.dashboard_config import DashboardConfig
from edgeprune.station.review import ReviewLog, export_labels
from edgeprune.station.web import make_app

TOKEN = "history-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
HUGE = "99999999999999999999999999"


@pytest.fixture()
def decided(tile_model, tmp_path):
    replay = make_replay(tile_model, tmp_path / "replay", 2)
    db = tmp_path / "station.db"
    cfg = station_config(tile_model, replay, db, dashboard=DashboardConfig(token=TOKEN))
    Station(cfg).run()
    return cfg, db


def test_relabelling_keeps_the_history_and_the_export_takes_the_latest(decided, tmp_path):
    cfg, db = decided
    part = db_rows(db)[0]
    with TestClient(make_app(Station(cfg))) as client:
        for label in ("defect", "free", "defect", "free"):
            answer = client.post(f"/api/review/{part['id']}", json={"label": label}, headers=AUTH)
            assert answer.status_code == 200, answer.text
        history = client.get(f"/api/review/{part['id']}/history").json()["labels"]
    assert [h["label"] for h in history] == ["defect", "free", "defect", "free"]
    assert all(h["client"] == "testclient" for h in history)
    assert [h["ts"] for h in history] == sorted(h["ts"] for h in history)
    log = ReviewLog(db)
    try:
        log.label(part["id"], "defect", classes=["defect", "free"], model_sha256=None, client="10.0.0.7")
        assert log.history(part["id"])[-1]["client"] == "10.0.0.7"
        assert [r["label"] for r in log.labelled()] == ["defect"]  # one current label per part
    finally:
        log.close()
    out = export_labels(db, tmp_path / "labels")
    assert out.written == {"defect": 1}
    assert [p.parent.name for p in (tmp_path / "labels").rglob("*.*")] == ["defect"]
    assert Path(part["path"]).name in next((tmp_path / "labels" / "defect").iterdir()).name


def test_ids_out_of_sqlites_range_are_not_found(decided):
    cfg, _ = decided
    with TestClient(make_app(Station(cfg)), raise_server_exceptions=False) as client:
        for bad in (HUGE, "-" + HUGE, str(2**63), "0"):
            assert client.get(f"/api/images/{bad}").status_code == 404, bad
            assert client.get(f"/api/review/{bad}/history").status_code == 404, bad
            assert client.post(f"/api/review/{bad}", json={"label": "free"}, headers=AUTH).status_code == 404, bad
        assert client.get(f"/api/images/{2**63 - 1}").status_code == 404
        assert client.get("/api/images/1").status_code == 200
