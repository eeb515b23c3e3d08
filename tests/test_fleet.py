"""The fleet's store and ingest on real databases: SQLite and a real PostgreSQL server started by
the test (a throwaway cluster on a free port). Batches stored exactly once, aggregates that agree
with the rows, labelled images as a class-folder tree, and bad input refused whole and counted."""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import subprocess
import sys
import time

import numpy as np
import pytest
from fleet_support import Postgres
from sqlalchemy import func, select

from edgeprune.fleet.config import FleetConfig, load_config
from edgeprune.fleet.ingest import Ingestor
from edgeprune.fleet.store import FleetStore, decisions, hourly, labels
from edgeprune.station.log import COLUMNS
from edgeprune.station.upload import Batch, BatchError, decode_batch, encode_batch


@pytest.fixture(scope="module")
def postgres():
    server = Postgres()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    if request.param == "sqlite":
        db = str(tmp_path / "fleet.db")
    else:
        pg = request.getfixturevalue("postgres")
        db = pg.url
        s = FleetStore(db, tmp_path / "fleet-data")  # a clean schema for each test
        from edgeprune.fleet.store import metadata

        metadata.drop_all(s.engine)
        s.close()
    s = FleetStore(db, tmp_path / "fleet-data")
    yield s
    s.close()


def rows(station: str, first: int, count: int, now: float, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed + first)
    out = []
    for i in range(first, first + count):
        decision = ["OK", "DEFECT", "REVIEW", "ERROR"][int(rng.integers(0, 4))]
        out.append({"id": i, "ts": now - 3 * 3600 + i, "source": "replay:/x", "path": f"/x/{i}.jpg",
                    "sha256": hashlib.sha256(str(i).encode()).hexdigest(),
                    "predicted_class": None if decision == "ERROR" else ["free", "crack", "blowhole"][i % 3],
                    "probability": None if decision == "ERROR" else float(rng.uniform(0.5, 1)),
                    "decision": decision, "latency_ms": float(rng.uniform(2, 20)), "model_sha256": "ab" * 32,
                    "plc_status": "not_needed", "true_class": "free", "station_id": station})
    return out


def batch(station: str, rows_: list[dict], after: int, line: str | None = "line1") -> Batch:
    return Batch(station, line, "decisions", after, rows_[-1]["id"], tuple(rows_))


def test_batch_round_trip_and_truncation():
    b = batch("s1", rows("s1", 1, 50, time.time()), 0)
    payload = encode_batch(b)
    assert decode_batch(payload) == b
    for cut in (len(payload) - 1, len(payload) - 9, len(payload) // 2, 10):
        with pytest.raises(BatchError):
            decode_batch(payload[:cut])
    with pytest.raises(BatchError, match="not gzip"):
        decode_batch(b"{not gzip}")
    text = gzip.decompress(payload).decode().split("\n")
    with pytest.raises(BatchError, match="rows"):  # a row missing: the header's count says so
        decode_batch(gzip.compress(("\n".join(text[:-2]) + "\n").encode()))


def test_idempotent_ingest(store):
    now = time.time()
    first, second = rows("s1", 1, 300, now), rows("s1", 301, 200, now)
    assert store.ingest_decisions(batch("s1", first, 0), now).stored == 300
    again = store.ingest_decisions(batch("s1", first, 0), now)  # a resend
    assert (again.stored, again.repeated) == (0, 300)
    overlap = first[250:] + second  # a resend that overlaps a new batch
    result = store.ingest_decisions(batch("s1", overlap, 250), now)
    assert (result.stored, result.repeated) == (200, 50)
    store.ingest_decisions(batch("s2", rows("s2", 1, 40, now), 0, line="line2"), now)
    assert [r for r in store.decision_rows("s1")] == [{k: r[k] for k in COLUMNS} for r in first + second]
    with store.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(decisions)).scalar() == 540
        per_hour = conn.execute(select(func.sum(hourly.c.images)).where(hourly.c.station_id == "s1")).scalar()
    assert per_hour == 500, "the aggregates count each row once, resends included"
    figures = store.figures(now=now)
    s1 = next(s for s in figures.stations if s.station_id == "s1")
    assert s1.images == 500 and s1.line == "line1"
    all_rows = first + second
    judged = [r for r in all_rows if r["decision"] != "ERROR" and r["ts"] >= (now // 3600 - 23) * 3600]
    assert sum(h.images for h in s1.hourly) == sum(1 for r in all_rows if r["ts"] >= (now // 3600 - 23) * 3600)
    defects = sum(r["decision"] == "DEFECT" for r in judged)
    by_hour = {h.hour_ts: h for h in s1.hourly if h.images}
    assert sum(round((h.defect_rate or 0) * (h.images - sum(1 for r in all_rows if r["decision"] == "ERROR"
                                                                and int(r["ts"] // 3600) * 3600 == t)))
               for t, h in by_hour.items()) == defects
    true_p50 = float(np.percentile([r["latency_ms"] for r in all_rows if r["ts"] >= (now // 3600 - 23) * 3600], 50))
    assert abs(s1.latency_ms_p50 - true_p50) / true_p50 < 0.06, (s1.latency_ms_p50, true_p50)
    assert s1.defect_classes == {k: sum(1 for r in judged if r["predicted_class"] == k)
                                 for k in {r["predicted_class"] for r in judged}}
    assert figures.models == {"ab" * 32: ["s1", "s2"]}
    assert set(figures.lines) == {"line1", "line2"}


def label_batch(station: str, items: list[tuple[int, str, bytes]], after=(0.0, 0), ts: float = 1000.0) -> Batch:
    out = []
    for i, (decision_id, label, data) in enumerate(items):
        out.append({"decision_id": decision_id, "ts": ts + i, "label": label, "model_sha256": None,
                    "sha256": hashlib.sha256(data).hexdigest(), "ext": "png",
                    "image_base64": base64.b64encode(data).decode()})
    return Batch(station, None, "labels", list(after), [out[-1]["ts"], out[-1]["decision_id"]], tuple(out))


def test_labels_become_a_class_folder_tree(store, tmp_path):
    now = time.time()
    store.ingest_decisions(batch("s1", rows("s1", 1, 10, now), 0), now)
    images = {i: f"image-{i}".encode() * 10 for i in range(1, 4)}
    b = label_batch("s1", [(1, "crack", images[1]), (2, "free", images[2]), (3, "crack", images[3])])
    assert store.ingest_labels(b).stored == 3
    assert store.ingest_labels(b).stored == 0  # a resend
    tree = tmp_path / "fleet-data"
    found = sorted(str(p.relative_to(tree)) for p in tree.rglob("*") if p.is_file())
    expected = sorted(f"{lab}/{hashlib.sha256(images[i]).hexdigest()}.png" for i, lab in ((1, "crack"), (2, "free"), (3, "crack")))
    assert found == expected
    assert (tree / expected[0]).read_bytes() in images.values()
    # Relabelled later: the image moves to its new class folder.
    store.ingest_labels(label_batch("s1", [(1, "free", images[1])], ts=2000.0))
    assert (tree / "free" / f"{hashlib.sha256(images[1]).hexdigest()}.png").is_file()
    assert not (tree / "crack" / f"{hashlib.sha256(images[1]).hexdigest()}.png").exists()
    # Bytes that do not hash to the sha256: the whole batch refused, nothing written.
    bad = label_batch("s1", [(4, "crack", b"good"), (5, "crack", b"also good")], ts=3000.0)
    rows_ = list(bad.rows)
    rows_[1] = {**rows_[1], "image_base64": base64.b64encode(b"tampered").decode()}
    with pytest.raises(BatchError, match="hash"):
        store.ingest_labels(Batch("s1", None, "labels", bad.after, bad.cursor, tuple(rows_)))
    with store.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(labels)).scalar() == 3
    s1 = store.figures(now=now).stations[0]
    assert s1.reviewed == 3 and s1.labelled_images == 3
    predicted = {r["id"]: r["predicted_class"] for r in store.decision_rows("s1")}
    final = {1: "free", 2: "free", 3: "crack"}
    assert s1.live_accuracy == pytest.approx(sum(predicted[i] == final[i] for i in final) / 3)
    # Every edgeprune command reads the tree directly.
    from edgeprune.data import DataOptions  # noqa: F401 - the loader takes DATA/<class>/ folders
    assert {p.name for p in tree.iterdir()} == {"crack", "free"}


def test_bad_payloads_are_counted_not_fatal(store):
    now = time.time()
    ingestor = Ingestor(store, FleetConfig(stations=("s1", "s2")))
    good = encode_batch(batch("s1", rows("s1", 1, 20, now), 0))
    assert ingestor.handle("factory/l1/s1/upload/decisions", good).stored == 20
    cases = {
        "truncated": ("factory/l1/s1/upload/decisions", encode_batch(batch("s1", rows("s1", 21, 20, now), 20))[:-12]),
        "not gzip": ("factory/l1/s1/upload/decisions", b"hello"),
        "foreign json": ("factory/other/thing", json.dumps({"temperature": 21.5}).encode()),
        "not json": ("factory/l1/s1", b"\xff\xfe garbage"),
        "bad row": ("factory/l1/s1/upload/decisions", encode_batch(Batch("s1", None, "decisions", 20, 21, (
            {**rows("s1", 21, 1, now)[0], "decision": "MAYBE"},)))),
    }
    for name, (topic, payload) in cases.items():
        assert ingestor.handle(topic, payload).kind == "malformed", name
    refused = ingestor.handle("factory/l9/intruder/upload/decisions",
                              encode_batch(batch("intruder", rows("intruder", 1, 5, now), 0)))
    assert refused.kind == "refused" and refused.receipt is None
    assert ingestor.counts["malformed"] == len(cases) and ingestor.counts["refused"] == 1
    assert store.station_ids() == ["s1"], "nothing of a refused or malformed payload was stored"
    assert len(store.decision_rows("s1")) == 20
    assert store.figures().ingest_errors == len(cases) + 1


def test_unreachable_database_is_an_error_before_anything_starts(tmp_path):
    result = subprocess.run([sys.executable, "-m", "edgeprune", "fleet", "serve", "--db",
                             "postgresql://fleet:secret@127.0.0.1:9/fleet", "--http", "127.0.0.1:65000"],
                            capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("error: cannot reach the fleet database"), result.stderr
    assert "secret" not in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "fleet.db").exists() and not (tmp_path / "fleet-data").exists()


def test_status_command_and_config(tmp_path):
    db = tmp_path / "fleet.db"
    store = FleetStore(str(db), tmp_path / "fleet-data")
    now = time.time()
    store.ingest_decisions(batch("s7", rows("s7", 1, 30, now), 0), now)
    store.close()
    result = subprocess.run([sys.executable, "-m", "edgeprune", "fleet", "status", "--db", str(db), "--json"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert [(s["station_id"], s["images"]) for s in out["stations"]] == [("s7", 30)]
    toml = tmp_path / "fleet.toml"
    toml.write_text('db = "other.db"\nstations = ["a-1", "b.2"]\noffline_after_s = 30\ntoken = "0123456789"\n')
    cfg = load_config(toml)
    assert cfg.db == str(tmp_path / "other.db") and cfg.stations == ("a-1", "b.2") and cfg.allows("a-1")
    toml.write_text('stations = ["bad/id"]\n')
    result = subprocess.run([sys.executable, "-m", "edgeprune", "fleet", "status", "--config", str(toml)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "station_id must be" in result.stderr and "Traceback" not in result.stderr
