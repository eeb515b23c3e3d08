"""The shadow model on a real station (in-process, its dashboard on 127.0.0.1): a candidate loaded
through POST /api/shadow (token) decides the live images again, logged in shadow_decisions and
never sent to the PLC; its figures say how often it agrees; a restarted dashboard resumes it and
decides no image twice."""

from __future__ import annotations

import sqlite3
import threading

import httpx
from loop_support import wait_for
from station_support import free_port, scaled_copy, station_config
from station_tiny import tiny_station_files
from test_bad_input import tiny_onnx

from edgeprune.outputs import file_sha256
from edgeprune.station import Station
from edgeprune.station.dashboard_config import DashboardConfig
from edgeprune.station.web import DashboardServer


def shadow_rows(db):
    with sqlite3.connect(db) as con:
        return con.execute("SELECT decision_id, model_sha256, decision FROM shadow_decisions ORDER BY id").fetchall()


def test_shadow_decides_live_images_beside_the_model(tmp_path):
    model, replay = tiny_station_files(tmp_path, per_class=400)
    same = tiny_onnx(tmp_path / "same.onnx", bias=0.5)  # other bytes, the same calls
    opposite = scaled_copy(model, tmp_path / "opposite.onnx", -1.0)  # every call the other way
    dashboard = DashboardConfig(token="shadow-token-123", gate_set=replay)
    cfg = station_config((model, None), replay, tmp_path / "s.db", ok_classes="c0", rate=10.0, dashboard=dashboard)
    station = Station(cfg)
    runner = threading.Thread(target=station.run, daemon=True)
    runner.start()
    server = DashboardServer(station, f"127.0.0.1:{free_port()}")
    auth = {"Authorization": "Bearer shadow-token-123"}
    try:
        url = server.url.rstrip("/")
        with open(same, "rb") as f:
            assert httpx.post(f"{url}/api/shadow", files={"file": ("same.onnx", f)}, timeout=30).status_code == 401
        with open(same, "rb") as f:
            answer = httpx.post(f"{url}/api/shadow", headers=auth, files={"file": ("same.onnx", f)}, timeout=60)
        assert answer.status_code == 200, answer.text
        sha_same = answer.json()["sha256"]
        assert sha_same == file_sha256(same)
        figures = wait_for(lambda: (f := httpx.get(f"{url}/api/shadow", timeout=10).json())["images"] >= 20 and f,
                           60, "shadow decisions")
        assert figures["active"] and figures["agreement"] == 1.0 and figures["latency_ms_p50"] > 0
        assert figures["live_models"] == [file_sha256(model)]

        # A second app over the same database (a restarted dashboard) resumes the shadow.
        server.stop()
        server = DashboardServer(station, f"127.0.0.1:{free_port()}")
        url = server.url.rstrip("/")
        before = httpx.get(f"{url}/api/shadow", timeout=10).json()["images"]
        wait_for(lambda: httpx.get(f"{url}/api/shadow", timeout=10).json()["images"] > before + 5, 60,
                 "the resumed shadow")

        with open(opposite, "rb") as f:  # replaces the running shadow
            answer = httpx.post(f"{url}/api/shadow", headers=auth, files={"file": ("opposite.onnx", f)}, timeout=60)
        assert answer.status_code == 200, answer.text
        sha_opposite = answer.json()["sha256"]
        figures = wait_for(lambda: (f := httpx.get(f"{url}/api/shadow", timeout=10).json())["images"] >= 20 and f,
                           60, "the second shadow's decisions")
        assert figures["model_sha256"] == sha_opposite and figures["agreement"] < 0.2
        # People label parts the second shadow decided: /api/decisions carries each label, and the
        # figures count, part by part, which model alone got a reviewed part right (every call is the
        # other way round, so on every reviewed part exactly one of the two is right).
        shadowed = {d for d, m, _ in shadow_rows(tmp_path / "s.db") if m == sha_opposite}
        rows = [r for r in httpx.get(f"{url}/api/decisions", params={"since": 0, "limit": 1000}, timeout=10).json()
                if r["id"] in shadowed][:12]
        for r in rows:
            answer = httpx.post(f"{url}/api/review/{r['id']}", headers=auth, json={"label": r["true_class"]}, timeout=10)
            assert answer.status_code == 200, answer.text
        labelled = {r["id"]: r["label"] for r in httpx.get(f"{url}/api/decisions", params={"since": 0, "limit": 1000},
                                                           timeout=10).json() if r["label"] is not None}
        assert labelled == {r["id"]: r["true_class"] for r in rows}
        figures = httpx.get(f"{url}/api/shadow", timeout=10).json()
        assert figures["reviewed"] == len(rows) == 12
        assert figures["reviewed_right_live_only"] + figures["reviewed_right_shadow_only"] == 12
        assert figures["reviewed_right_live_only"] == sum((r["predicted_class"] != "c0") == (r["true_class"] != "c0")
                                                          for r in rows)
        assert figures["defects_caught_by_live_only"] + figures["defects_caught_by_shadow_only"] == \
            figures["reviewed_defects"] == sum(r["true_class"] != "c0" for r in rows)
        old = httpx.get(f"{url}/api/shadow", params={"model": sha_same}, timeout=10).json()
        assert not old["active"] and old["agreement"] == 1.0  # its figures stay readable
        stopped = httpx.post(f"{url}/api/shadow/stop", headers=auth, timeout=30)
        assert stopped.status_code == 200 and stopped.json()["stopped"] == sha_opposite
        assert httpx.get(f"{url}/api/shadow", timeout=10).json()["active"] is False
        assert httpx.get(f"{url}/api/shadow", params={"model": "x"}, timeout=10).status_code == 422
    finally:
        server.stop()
        station.stop()
        runner.join(30)
        station.close()
    rows = shadow_rows(tmp_path / "s.db")
    assert len(rows) == len({(d, m) for d, m, _ in rows}), "a shadow decided an image twice"
    with sqlite3.connect(tmp_path / "s.db") as con:
        live = dict(con.execute("SELECT id, model_sha256 FROM decisions").fetchall())
    assert set(live.values()) == {file_sha256(model)}, "the shadow never decided a live row"
    assert {d for d, _, _ in rows} <= set(live)
