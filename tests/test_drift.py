"""Input drift: the reference recorded at export (through the artifact's metadata), the PSI window
(raised on shifted values, quiet on values drawn like the reference), and the station on the
trained tile model: quiet on a replay of clean test images, alarmed on the same images darkened
(alarm row, /api/status, an MQTT event through a real mosquitto that the fleet's store takes),
drift_action = "review" sending every part to a person until the token-protected acknowledgement,
and bad settings refused with `error: ...`, exit 2."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from station_support import alarms, db_rows, make_replay, start_mosquitto, station_config

from edgeprune.errors import EdgepruneError
from edgeprune.runtime import metadata as md
from edgeprune.runtime.drift import (FEATURES, DriftMonitor, DriftReference, batch_statistics,
                                     expected_null_psi, image_statistics)
from edgeprune.station import Station
from edgeprune.station.dashboard_config import DashboardConfig
from edgeprune.station.web import make_app

TOKEN = "drift-line-token"
# The tile model's reference holds its 60 validation images; over a window of 60 clean images the
# PSI is about 9 * (1/60 + 1/60) = 0.3 by chance, so the tests' threshold sits well above that.
WINDOW, THRESHOLD = 60, 1.0


def synthetic_reference(rng, n=400) -> DriftReference:
    stats = np.column_stack([rng.normal(120, 20, n), rng.normal(40, 5, n), rng.lognormal(4, 0.3, n)])
    return DriftReference.build(stats, rng.beta(8, 1, n), chosen_on="synthetic")


def test_reference_round_trip_and_window():
    rng = np.random.default_rng(0)
    reference = synthetic_reference(rng)
    text = json.dumps(reference.to_dict())
    assert len(text) < 3000  # bins and quantiles, never the raw values
    again = DriftReference.from_dict(json.loads(text))
    assert again.to_dict() == reference.to_dict() and again.images == 400
    assert all(sum(again.features[f].counts) == 400 for f in FEATURES)

    # 3,000 more images drawn like the reference: the window fills and stays quiet.
    monitor = DriftMonitor(again, window=200, threshold=0.25)
    draws = np.random.default_rng(3)
    for _ in range(3000):
        monitor.observe((draws.normal(120, 20), draws.normal(40, 5), draws.lognormal(4, 0.3)), draws.beta(8, 1))
    assert not monitor.alarm, monitor.state()
    assert monitor.state()["psi"] is not None and max(monitor.state()["psi"].values()) < 0.25
    assert expected_null_psi(again, 200) == pytest.approx(9 * (1 / 200 + 1 / 400))

    # Darker images: the brightness moves, the alarm comes once the window holds enough of them.
    raised_after = None
    for n in range(1, 201):
        check = monitor.observe((draws.normal(70, 20), draws.normal(40, 5), draws.lognormal(4, 0.3)),
                                draws.beta(8, 1))
        if check.raised:
            raised_after = n
            break
    assert monitor.alarm and check.worst == "brightness", monitor.state()
    assert raised_after is not None and raised_after < 100, raised_after
    assert monitor.state()["state"] == "drift"
    monitor.acknowledge()
    assert monitor.state()["state"] == "ok" and monitor.state()["window_filled"] == 0


def test_statistics_follow_the_image():
    rng = np.random.default_rng(0)
    image = rng.integers(60, 200, (3, 224, 224), dtype=np.uint8)
    bright, contrast, sharp = image_statistics(image)
    dark = (image * 0.4).astype(np.uint8)
    assert image_statistics(dark)[0] < 0.45 * bright
    flat = np.full_like(image, 128)
    assert image_statistics(flat) == (pytest.approx(128, abs=0.01), 0.0, 0.0)
    smooth = np.repeat(np.repeat(image[:, ::8, ::8], 8, axis=1), 8, axis=2)  # coarse blocks: fewer edges
    assert image_statistics(smooth)[2] < sharp
    batch = batch_statistics(np.stack([image, dark]))
    assert batch.shape == (2, 3) and tuple(batch[0]) == image_statistics(image)


BAD_REFERENCES = [
    ({"version": 2}, "version"),
    ({"features": {"brightness": {"edges": [2, 1], "counts": [1, 1, 1]}}}, "ascending"),
    ({"features": {"brightness": {"edges": [1], "counts": [1, 1, 1]}}}, "one count more"),
    ({"features": {"brightness": {"edges": [1], "counts": [-1, 1]}}}, "non-negative"),
    ({"stats_side": 32}, "export the model again"),
]


@pytest.mark.parametrize("change, needle", BAD_REFERENCES)
def test_damaged_reference_is_refused(change, needle):
    value = synthetic_reference(np.random.default_rng(0)).to_dict()
    for key, part in change.items():
        if key == "features":
            value["features"].update(part)
        else:
            value[key] = part
    with pytest.raises(EdgepruneError, match=needle):
        DriftReference.from_dict(value, "m.onnx")
    props = md.encode({md.CLASS_NAMES: ["a", "b"], md.INPUT_SIZE: 32, md.MEAN: [0.5] * 3, md.STD: [0.5] * 3,
                       md.DRIFT_REFERENCE: value})
    with pytest.raises(EdgepruneError, match=needle):  # the metadata check refuses the artifact
        md.ArtifactMetadata.from_props(props, "m.onnx")


# ----------------------------------------------------------------------------- export


def test_export_records_the_reference(tile_model, tile_tree):
    """The tile model (tests/conftest.py) was exported with its data: the reference is the
    artifact's own statistics and top probabilities on the validation split, read back from the
    file's metadata."""
    import edgeprune as ep
    from conftest import TILE_PER_CLASS, TILE_SIZE

    from edgeprune.runtime import Classifier, softmax

    path = tile_model[0]
    reference = md.read_metadata(path).drift_reference
    assert reference is not None
    data = ep.load_data(ep.DataOptions(spec=str(tile_tree), image_size=TILE_SIZE, normalization="imagenet",
                                       max_per_class=TILE_PER_CLASS))
    images = data.val.images.numpy()
    assert reference.images == len(images) and "validation split" in reference.chosen_on
    top = softmax(Classifier(path).predict_uint8(images)).max(axis=1)
    again = DriftReference.build(batch_statistics(images), top, chosen_on=reference.chosen_on)
    assert again.to_dict() == reference.to_dict()
    assert len(md.read_props(path)[md.DRIFT_REFERENCE]) < 3000


# ----------------------------------------------------------------------------- the station


def dark_replay(tile_model, folder: Path, factor: float = 0.4) -> Path:
    """The tile model's test images, darkened (a dim lamp), as a class-folder tree of PNGs."""
    _, by_class = tile_model
    for name, paths in by_class.items():
        (folder / name).mkdir(parents=True, exist_ok=True)
        for path in paths:
            with Image.open(path) as image:
                pixels = np.asarray(image.convert("RGB"), dtype=np.float32) * factor
            Image.fromarray(pixels.astype(np.uint8)).save(folder / name / f"{path.stem}.png")
    return folder


class EventSubscriber:
    def __init__(self, port: int, topic: str):
        self.events: list[dict] = []
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self.client.on_message = lambda c, u, m: self.events.append(json.loads(m.payload))
        self.client.connect("127.0.0.1", port)
        self.client.subscribe(f"{topic}/event", qos=1)
        self.client.loop_start()
        time.sleep(0.2)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def test_station_alarms_on_darkened_images_not_on_clean_ones(tile_model, tmp_path):
    per_class = min(len(p) for p in tile_model[1].values())
    clean = make_replay(tile_model, tmp_path / "clean", per_class)
    station = Station(station_config(tile_model, clean, tmp_path / "clean.db", drift_window=WINDOW,
                                     drift_psi_threshold=THRESHOLD))
    result = station.run()
    drift = station.status()["drift"]
    station.close()
    assert result.decided == 2 * per_class > WINDOW
    assert drift["state"] == "ok" and drift["psi"] is not None, drift  # the window filled, and held
    assert max(drift["psi"].values()) < THRESHOLD
    assert not [a for a in alarms(tmp_path / "clean.db") if a["kind"] == "drift"]
    # Every image went through the window, each for a fraction of a millisecond.
    assert result.stages["drift"]["n"] == result.decided and result.stages["drift"]["p50_ms"] < 1.0

    broker, port = start_mosquitto(tmp_path)
    subscriber = EventSubscriber(port, "plant/line1/a")
    try:
        dark = dark_replay(tile_model, tmp_path / "dark")
        station = Station(station_config(
            tile_model, dark, tmp_path / "dark.db", drift_window=WINDOW, drift_psi_threshold=THRESHOLD,
            mqtt=f"mqtt://127.0.0.1:{port}/plant/line1/a", station_id="l1-a", line="line1"))
        result = station.run()
        drift = station.status()["drift"]
        station.close()
        deadline = time.monotonic() + 10
        while not subscriber.events and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        subscriber.close()
        broker.kill()
        broker.wait()
    assert drift["state"] == "drift" and drift["worst"] in FEATURES and drift["since"] is not None, drift
    raised = [a for a in alarms(tmp_path / "dark.db") if a["kind"] == "drift"]
    assert len(raised) == 1 and "PSI" in raised[0]["message"]
    # Raised as soon as the window was full: the darkened images are nothing like the reference.
    assert drift["observed"] == result.decided
    # The event reached the broker, and the fleet's store takes it as the station's drift state.
    assert len(subscriber.events) == 1, subscriber.events
    event = subscriber.events[0]
    assert event["kind"] == "drift" and event["state"] == "drift" and event["station_id"] == "l1-a"
    assert event["line"] == "line1" and event["statistic"] > THRESHOLD and event["window"] == WINDOW
    from edgeprune.fleet.store import FleetStore

    store = FleetStore(str(tmp_path / "fleet.db"), tmp_path / "fleet-data")
    try:
        store.ingest_event(event)
        (entry,) = store.figures().stations
        assert entry.station_id == "l1-a" and entry.drift_state == "drift" and "input drift" in entry.alarms
    finally:
        store.close()


def test_review_action_until_acknowledged(tile_model, tmp_path):
    dark = dark_replay(tile_model, tmp_path / "dark")
    db = tmp_path / "station.db"
    settings = dict(drift_window=WINDOW, drift_psi_threshold=THRESHOLD, drift_action="review",
                    dashboard=DashboardConfig(token=TOKEN))
    station = Station(station_config(tile_model, dark, db, max_images=WINDOW + 20, **settings))
    station.run()
    drift = station.status()["drift"]
    station.close()
    rows = db_rows(db)
    assert drift["state"] == "drift" and len(rows) == WINDOW + 20
    # Raised by the first full window (the darkened images are far from the reference): that
    # image and every one after it went to a person.
    assert all(r["decision"] in ("OK", "DEFECT") for r in rows[: WINDOW - 1])
    assert all(r["decision"] == "REVIEW" for r in rows[WINDOW - 1:]), [r["decision"] for r in rows]

    # Restarted: the alarm is still latched (it is kept in the station's database), so parts keep
    # going to a person until someone acknowledges it with the token.
    clean = make_replay(tile_model, tmp_path / "clean", 10)
    station = Station(station_config(tile_model, clean, db, max_images=6, **settings))
    assert station.status()["drift"]["state"] == "drift"
    station.run()
    assert all(r["decision"] == "REVIEW" for r in db_rows(db)[-6:])
    with TestClient(make_app(station)) as client:
        assert client.post("/api/drift/acknowledge").status_code == 401
        assert client.post("/api/drift/acknowledge", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.get("/api/status").json()["drift"]["state"] == "drift"
        answer = client.post("/api/drift/acknowledge", headers={"Authorization": f"Bearer {TOKEN}"})
        assert answer.status_code == 200 and answer.json()["acknowledged"] is True
        assert client.get("/api/status").json()["drift"]["state"] == "ok"
    station.close()
    assert [a["kind"] for a in alarms(db) if a["kind"].startswith("drift")] == ["drift", "drift_acknowledged"]

    station = Station(station_config(tile_model, clean, db, max_images=6, **settings))
    assert station.status()["drift"]["state"] == "ok"  # the acknowledgement outlives a restart too
    station.run()
    station.close()
    assert all(r["decision"] in ("OK", "DEFECT") for r in db_rows(db)[-6:])


def test_model_without_reference_is_not_watched(tile_model, tmp_path):
    from edgeprune.workflows.export import set_onnx_metadata
    import onnx

    bare = tmp_path / "bare.onnx"
    graph = onnx.load(str(tile_model[0]))
    props = {p.key: p.value for p in graph.metadata_props if p.key != md.DRIFT_REFERENCE}
    del graph.metadata_props[:]
    onnx.helper.set_model_props(graph, props)
    onnx.save(graph, str(bare))
    replay = make_replay(tile_model, tmp_path / "replay", 2)
    station = Station(station_config((bare, tile_model[1]), replay, tmp_path / "s.db"))
    assert station.status()["drift"]["state"] == "off"
    assert "no drift reference" in station.status()["drift"]["reason"] and station.warnings == []
    station.close()
    # drift_action = "review" asked for what cannot happen: a warning at start.
    station = Station(station_config((bare, tile_model[1]), replay, tmp_path / "s.db", drift_action="review"))
    assert any("no drift reference" in w for w in station.warnings)
    with pytest.raises(EdgepruneError, match="not watched"):
        station.acknowledge_drift()
    station.run()
    station.close()
    assert set_onnx_metadata  # imported from the export workflow: the same writer


BAD_SETTINGS = [
    ("drift_window = 5\n", "drift_window"),
    ("drift_window = 100.5\n", "drift_window"),
    ("drift_psi_threshold = 0\n", "drift_psi_threshold"),
    ("drift_psi_threshold = \"high\"\n", "drift_psi_threshold"),
    ("drift_action = \"page\"\n", "drift_action must be one of off, alarm, review"),
    ("drift_windw = 100\n", "unknown key 'drift_windw'"),
]


@pytest.mark.parametrize("text, needle", BAD_SETTINGS)
def test_bad_drift_settings_are_clear_errors(text, needle, tmp_path, capsys):
    from test_station_config import run_cli

    config = tmp_path / "station.toml"
    config.write_text('model = "m.onnx"\nsource = "replay:."\n' + text)
    code, _, err = run_cli(["station", "run", "--config", config], capsys)
    assert code == 2 and "error:" in err and "Traceback" not in err, err
    assert needle in err and str(config) in err, err


def test_small_window_warns_of_false_alarms(tile_model, tmp_path):
    replay = make_replay(tile_model, tmp_path / "replay", 1)
    station = Station(station_config(tile_model, replay, tmp_path / "s.db", drift_window=20))
    try:
        assert any("expect false drift alarms" in w for w in station.warnings), station.warnings
    finally:
        station.close()
