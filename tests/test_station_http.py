"""The dashboard's HTTP API (FastAPI test client) over a real Station on the trained tile model:
the token, the upload checks, the gate (a worse model refused with its figures, a good one
switched in during a replay with a real Modbus PLC, nothing lost or doubled), rollback, the
review queue and `station export-labels`, and thumbnails served only for what the log knows."""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from station_support import ModbusPlc, db_rows, make_replay, scaled_copy, station_config

from edgeprune.outputs import file_sha256
from edgeprune.station import Station
from edgeprune.station.dashboard_config import DashboardConfig
from edgeprune.station.web import make_app

TOKEN = "s3cret-line-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
GATE_PER_CLASS = 20


@pytest.fixture()
def gate_set(tile_model, tmp_path) -> Path:
    """Test-split images the replays below never show (an offset past them)."""
    return make_replay(tile_model, tmp_path / "gate", GATE_PER_CLASS, offset=30)


def dashboard(gate: Path | None, **changes) -> DashboardConfig:
    values = dict(token=TOKEN, gate_set=gate, min_accuracy=0.6, min_defect_recall=0.5, max_latency_ms=500.0)
    values.update(changes)
    return DashboardConfig(**values)


def rollout_rows(db: Path) -> list[dict]:
    with sqlite3.connect(db) as con:
        con.row_factory = sqlite3.Row
        return [dict(r) for r in con.execute("SELECT * FROM model_rollouts ORDER BY id")]


def test_token_and_upload_checks(tile_model, gate_set, tmp_path, monkeypatch):
    replay = make_replay(tile_model, tmp_path / "replay", 3)
    db = tmp_path / "station.db"
    station = Station(station_config(tile_model, replay, db, dashboard=dashboard(gate_set, max_upload_mb=1)))
    station.run()  # a few decisions in the log; the app reads it
    station = Station(station_config(tile_model, replay, db, dashboard=dashboard(gate_set, max_upload_mb=1)))
    model_bytes = Path(tile_model[0]).read_bytes()
    with TestClient(make_app(station)) as client:
        status = client.get("/api/status").json()
        assert status["model_info"]["sha256"] == file_sha256(tile_model[0])
        assert status["model_info"]["class_names"] == ["defect", "free"]
        assert status["last_id"] == 6 and status["token_configured"] is True

        files = {"file": ("m.onnx", b"not a model at all", "application/octet-stream")}
        assert client.post("/api/models", files=files).status_code == 401
        wrong = client.post("/api/models", files=files, headers={"Authorization": "Bearer wrong-token"})
        assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
        assert client.post("/api/models/rollback").status_code == 401
        assert client.post("/api/review/1", json={"label": "free"}).status_code == 401
        assert client.post("/api/review/1", content=b"{not json").status_code == 401
        assert client.post("/api/review/1", content=b"{not json", headers=AUTH).status_code == 422
        # Refused by its content, never by its name: a text file called .onnx, a pickle.
        assert client.post("/api/models", files=files, headers=AUTH).status_code == 415
        pickle_bytes = b"\x80\x04\x95\x10\x00\x00\x00\x00\x00\x00\x00}\x94\x8c\x01a\x94K\x01s."
        assert client.post("/api/models", files={"file": ("model.onnx", pickle_bytes)}, headers=AUTH).status_code == 415
        # The tile model is ~9 MB: over this station's 1 MB limit, refused before it is parsed.
        big = client.post("/api/models", files={"file": ("m.onnx", model_bytes)}, headers=AUTH)
        assert big.status_code == 413 and "max_upload_mb" in big.json()["detail"]
        # A streamed body without a Content-Length is cut off as soon as it passes the limit.
        def chunks():
            yield b"--x\r\nContent-Disposition: form-data; name=\"file\"; filename=\"m.onnx\"\r\n\r\n"
            for _ in range(40):
                yield b"\0" * 65536

        streamed = client.post("/api/models", content=chunks(),
                               headers={**AUTH, "Content-Type": "multipart/form-data; boundary=x"})
        assert streamed.status_code == 413, streamed.text
        # Other requests' bodies are capped too.
        assert client.post("/api/review/1", content=b"x" * 100_000, headers=AUTH).status_code == 413
        # Labels: one of the model's classes, for a decision the log holds.
        assert client.post("/api/review/1", json={"label": "scratch"}, headers=AUTH).status_code == 422
        assert client.post("/api/review/999", json={"label": "free"}, headers=AUTH).status_code == 404
        assert client.post("/api/review/1", json={"label": "free"}, headers=AUTH).status_code == 200
        # Nothing to roll back to yet.
        assert client.post("/api/models/rollback", headers=AUTH).status_code == 409
        # Thumbnails by decision id only.
        thumb = client.get("/api/images/1")
        assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
        from PIL import Image
        import io

        assert max(Image.open(io.BytesIO(thumb.content)).size) <= 96
        assert client.get("/api/images/999").status_code == 404
        assert client.get("/api/images/..%2F..%2Fetc%2Fpasswd").status_code in (404, 422)
        assert client.get("/").headers["content-security-policy"].startswith("default-src 'self'")
    attempts = rollout_rows(db)
    assert [(a["action"], a["status_code"]) for a in attempts] == [
        ("upload", 401), ("upload", 401), ("rollback", 401), ("upload", 415), ("upload", 415),
        ("upload", 413), ("upload", 413), ("rollback", 409)]
    assert not any(a["accepted"] for a in attempts)

    # Without a configured token nothing can be changed; EDGEPRUNE_STATION_TOKEN sets one.
    monkeypatch.delenv("EDGEPRUNE_STATION_TOKEN", raising=False)
    station = Station(station_config(tile_model, replay, db, dashboard=dashboard(gate_set, token=None)))
    with TestClient(make_app(station)) as client:
        refused = client.post("/api/review/2", json={"label": "free"}, headers=AUTH)
        assert refused.status_code == 401 and "no token is configured" in refused.json()["detail"]
        monkeypatch.setenv("EDGEPRUNE_STATION_TOKEN", "from-the-environment")
        ok = client.post("/api/review/2", json={"label": "defect"},
                         headers={"Authorization": "Bearer from-the-environment"})
        assert ok.status_code == 200


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def test_gate_refuses_a_worse_model_switches_a_good_one_mid_replay_and_rolls_back(tile_model, gate_set, tmp_path):
    replay = make_replay(tile_model, tmp_path / "replay", 30)
    original = Path(tile_model[0])
    worse = scaled_copy(original, tmp_path / "upload-worse.onnx", -1.0)
    better = scaled_copy(original, tmp_path / "upload-good.onnx", 2.0)
    plc = ModbusPlc().start()
    db = tmp_path / "station.db"
    try:
        cfg = station_config(tile_model, replay, db, rate=20, plc=f"modbus://127.0.0.1:{plc.port}",
                             dashboard=dashboard(gate_set))
        station = Station(cfg)
        order = [str(Path(p).absolute()) for _, p in station.source.files]
        results = []
        runner = threading.Thread(target=lambda: results.append(station.run()))
        runner.start()
        try:
            with TestClient(make_app(station)) as client:
                wait_for(lambda: station.log.last_id() >= 5, 20, "the first decisions")
                refused = client.post("/api/models", headers=AUTH,
                                      files={"file": ("worse.onnx", worse.read_bytes())})
                assert refused.status_code == 422, refused.text
                figures = refused.json()["figures"]
                assert figures["images"] == 2 * GATE_PER_CLASS and figures["accuracy"] < 0.6
                assert refused.json()["detail"].startswith("worse.onnx (") and "accuracy" in refused.json()["detail"]
                assert figures["latency_ms_p50"] > 0
                assert not (db.with_name("station-models") / f"{file_sha256(worse)}.onnx").exists()
                assert figures["threads"] == 1 and figures["device"].startswith("cpu-")
                assert station.current_model().sha256 == file_sha256(original)

                before = station.log.last_id()
                accepted = client.post("/api/models", headers=AUTH,
                                       files={"file": ("good.onnx", better.read_bytes())})
                assert accepted.status_code == 200, accepted.text
                good = accepted.json()
                assert good["sha256"] == file_sha256(better) and good["previous_sha256"] == file_sha256(original)
                assert good["figures"]["accuracy"] >= 0.6 and good["figures"]["defect_recall"] >= 0.5
                # Scaling the logits keeps every call: the same accuracy the worse copy inverted.
                assert good["figures"]["accuracy"] == pytest.approx(1 - figures["accuracy"])
                assert client.get("/api/status").json()["model_info"]["sha256"] == good["sha256"]

                wait_for(lambda: station.log.last_id() >= before + 8, 20, "decisions by the new model")
                back = client.post("/api/models/rollback", headers=AUTH)
                assert back.status_code == 200, back.text
                assert back.json()["sha256"] == file_sha256(original)
                assert client.get("/api/status").json()["model_sha256"] == file_sha256(original)
                after_rollback = station.log.last_id()
                wait_for(lambda: station.log.last_id() >= after_rollback + 5, 20, "decisions after the rollback")
                history = client.get("/api/models").json()
        finally:
            station.stop()
            runner.join(30)
        rows = db_rows(db)
        assert results and results[0].decided == len(rows)
        # Nothing lost, nothing doubled: the log holds the replay's first N images, in order, once each.
        assert [r["id"] for r in rows] == list(range(1, len(rows) + 1))
        assert [r["path"] for r in rows] == order[: len(rows)]
        # Each image was decided by exactly one model; the switches happened between two images.
        shas = [r["model_sha256"] for r in rows]
        runs = [s for i, s in enumerate(shas) if i == 0 or s != shas[i - 1]]
        assert runs == [file_sha256(original), file_sha256(better), file_sha256(original)]
        # The PLC got every part's sequence id once, in order.
        assert wait_for(lambda: plc.sequence_writes() == [r["id"] for r in rows] or None, 10, "the PLC")
        assert plc.registers(1)[0] == sum(r["decision"] == "DEFECT" for r in rows)
    finally:
        plc.close()
    logged = rollout_rows(db)
    assert [(a["action"], a["status_code"], a["accepted"]) for a in logged] == [
        ("upload", 422, 0), ("upload", 200, 1), ("rollback", 200, 1)]
    assert logged[0]["filename"] == "worse.onnx" and logged[0]["sha256"] == file_sha256(worse)
    assert logged[2]["active_sha256"] == file_sha256(original)
    assert [h["action"] for h in history] == ["rollback", "upload", "upload"]
    stored = db.with_name("station-models") / f"{file_sha256(better)}.onnx"
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == file_sha256(better)


def test_review_queue_labels_and_export(tile_model, tmp_path, capsys):
    from edgeprune.cli import main

    replay = make_replay(tile_model, tmp_path / "replay", 10)
    Station(station_config(tile_model, replay, tmp_path / "plain.db")).run()
    threshold = float(np.median([r["probability"] for r in db_rows(tmp_path / "plain.db")]))
    db = tmp_path / "station.db"
    cfg = station_config(tile_model, replay, db, review_below=threshold, dashboard=dashboard(None))
    Station(cfg).run()
    reviews = [r for r in db_rows(db) if r["decision"] == "REVIEW"]
    assert len(reviews) >= 2
    station = Station(cfg)
    with TestClient(make_app(station)) as client:
        queue = client.get("/api/review").json()
        assert [i["id"] for i in queue["items"]] == [r["id"] for r in reviews] and queue["backlog"] == len(reviews)
        first, second = reviews[0], reviews[1]
        assert client.post(f"/api/review/{first['id']}", json={"label": "defect"}, headers=AUTH).status_code == 200
        assert client.post(f"/api/review/{second['id']}", json={"label": "free"}, headers=AUTH).status_code == 200
        queue = client.get("/api/review").json()
        assert queue["backlog"] == len(reviews) - 2 and first["id"] not in [i["id"] for i in queue["items"]]
        # The status carries the backlog and, with the replay's true classes, live accuracy.
        status = client.get("/api/status").json()
        assert status["review_backlog"] == len(reviews) - 2
        assert status["live"]["labelled"] == len(db_rows(db)) and 0 < status["live"]["accuracy"] <= 1
        assert sum(p["images"] for p in status["timeline"]["points"]) == len(db_rows(db))

    out = tmp_path / "labels"
    with pytest.raises(SystemExit) as done:
        main(["station", "export-labels", "--db", str(db), "--out", str(out)])
    assert done.value.code in (0, None)
    exported = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert exported == sorted([f"defect/{first['id']:08d}_{Path(first['path']).name}",
                               f"free/{second['id']:08d}_{Path(second['path']).name}"])
    assert (out / exported[0]).read_bytes() == Path(first["path"] if exported[0].startswith("defect")
                                                    else second["path"]).read_bytes()
    # The tree is what training reads: two classes, one image each.
    from edgeprune.runtime.data import load_test_images

    images = load_test_images(out, class_names=["defect", "free"], image_size=48)
    assert images.images.shape == (2, 3, 48, 48) and list(images.labels) == [0, 1]
    # An existing export is never overwritten.
    with pytest.raises(SystemExit) as again:
        main(["station", "export-labels", "--db", str(db), "--out", str(out)])
    assert again.value.code == 2 and "choose a new folder" in capsys.readouterr().err


def test_thumbnail_only_while_the_file_is_what_was_decided(tile_model, tmp_path):
    """A file rewritten after its decision is not shown as if it were that part."""
    _, by_class = tile_model
    replay = tmp_path / "replay"
    for name, paths in by_class.items():
        (replay / name).mkdir(parents=True)
        (replay / name / paths[0].name).write_bytes(paths[0].read_bytes())  # copies: this test rewrites one
    db = tmp_path / "station.db"
    cfg = station_config(tile_model, replay, db, dashboard=dashboard(None))
    Station(cfg).run()
    rows = db_rows(db)
    station = Station(cfg)
    with TestClient(make_app(station)) as client:
        assert client.get(f"/api/images/{rows[0]['id']}").status_code == 200
        Path(rows[0]["path"]).write_bytes(Path(rows[1]["path"]).read_bytes())
        assert client.get(f"/api/images/{rows[0]['id']}").status_code == 410
        Path(rows[1]["path"]).unlink()
        assert client.get(f"/api/images/{rows[1]['id']}").status_code == 404


def test_dashboard_settings_are_checked(tmp_path):
    from edgeprune.errors import EdgepruneError
    from edgeprune.station import load_config

    toml = tmp_path / "station.toml"
    toml.write_text('model = "m.onnx"\nsource = "replay:r"\nhttp = "127.0.0.1:8080"\n'
                    '[dashboard]\ngate_set = "gate"\nmin_accuracy = 0.9\n')
    cfg = load_config(toml)
    assert cfg.dashboard.gate_set == tmp_path / "gate" and cfg.dashboard.min_accuracy == 0.9
    for bad in ('http = "127.0.0.1:99999"', '[dashboard]\nmin_accuracy = 2', '[dashboard]\ntoken = "short"',
                '[dashboard]\ncolour = "red"'):
        toml.write_text(f'model = "m.onnx"\nsource = "replay:r"\n{bad}\n')
        with pytest.raises(EdgepruneError):
            load_config(toml)
    assert replace(DashboardConfig(), max_upload_mb=2).max_upload_bytes == 2 * 1024 * 1024
    from edgeprune.station.dashboard_config import parse_http

    assert parse_http("8080") == parse_http(":8080") == ("127.0.0.1", 8080)  # loopback unless told
    assert parse_http("0.0.0.0:80") == ("0.0.0.0", 80) and parse_http("[::1]:8080") == ("::1", 8080)


def test_dashboard_modules_are_torch_free():
    from helpers import run_blocked

    run_blocked("import edgeprune.station.web, edgeprune.station.rollout, edgeprune.station.review")


def test_busy_port_is_an_error_line_not_a_traceback(tile_model, tmp_path):
    import socket
    import subprocess
    import sys

    replay = make_replay(tile_model, tmp_path / "replay", 2)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "edgeprune", "station", "run", "--model", str(tile_model[0]),
             "--source", f"replay:{replay}", "--ok-classes", "free", "--db", str(tmp_path / "s.db"),
             "--http", f"127.0.0.1:{port}"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "error:" in done.stderr and "cannot listen" in done.stderr and "Traceback" not in done.stderr
    assert db_rows(tmp_path / "s.db") == []  # nothing decided without its dashboard


def test_served_connections_send_small_responses_at_once(tile_model, tmp_path):
    """The page polls over keep-alive connections: each must have TCP_NODELAY, or every small
    response waits ~40 ms for the client's delayed ACK (Nagle)."""
    import socket

    import httpx
    from station_support import free_port

    from edgeprune.station.web import DashboardServer

    replay = make_replay(tile_model, tmp_path / "replay", 1)
    station = Station(station_config(tile_model, replay, tmp_path / "s.db", dashboard=dashboard(None)))
    server = DashboardServer(station, f"127.0.0.1:{free_port()}")
    try:
        with httpx.Client(base_url=server.url) as client:
            assert client.get("/app.js").status_code == 200
            assert client.get("/", headers={"Host": "attacker.example"}).status_code == 400
            connections = list(server.server.server_state.connections)
            assert connections
            for connection in connections:
                sock = connection.transport.get_extra_info("socket")
                assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    finally:
        server.stop()
