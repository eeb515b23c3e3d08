"""`edgeprune fleet retrain` without training: the lock against two concurrent attempts (SQLite and
a real PostgreSQL), the triggers (labels since the last retrain, a drift alarm that persists), the
`--auto` loop consuming a trigger whose retrain fails, /api/fleet's retrains, and bad input (error
line, exit 2, no traceback, registry and retrains untouched). The retrain that trains is in
test_fleet_retrain_study.py."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path

import pytest
from fleet_support import Postgres
from sqlalchemy import func, select
from test_fleet import label_batch
from test_fleet_registry import cli

from edgeprune.errors import EdgepruneError
from edgeprune.fleet.config import FleetConfig, RetrainSettings, load_config
from edgeprune.fleet.registry import models as models_table
from edgeprune.fleet.retrain import LEASE_S, Retrains, Trigger, retrain_lock, retrains, watch
from edgeprune.fleet.store import FleetStore, make_engine

STUDY = """name = "retrain-check"
[data]
spec = "digits"
image_size = 8
[baseline]
arch = "mobilenet_v2"
epochs = 1
[[experiments]]
method = "l1"
target = 0.3
finetune_epochs = 0
"""


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_two_concurrent_attempts_one_retrain(backend, tmp_path):
    pg = Postgres() if backend == "postgresql" else None
    url = pg.url if pg else str(tmp_path / "fleet.db")
    engines = [make_engine(url) for _ in range(2)]  # two clients, as two processes have
    try:
        Retrains(engines[0])
        for round_ in range(4):
            barrier = threading.Barrier(2)
            outcomes: list[object] = [None, None]

            def attempt(i: int, barrier=barrier, outcomes=outcomes, round_=round_) -> None:
                book = Retrains(engines[i])
                barrier.wait()
                try:
                    outcomes[i] = book.begin(Trigger("manual" if i else "labels", f"round {round_}"), f"owner-{i}")
                except EdgepruneError as exc:
                    outcomes[i] = exc

            threads = [threading.Thread(target=attempt, args=(i,)) for i in range(2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            won = [o for o in outcomes if isinstance(o, int)]
            lost = [o for o in outcomes if isinstance(o, EdgepruneError)]
            assert len(won) == 1 and len(lost) == 1, outcomes
            assert "is running: one retrain at a time" in str(lost[0])
            book = Retrains(engines[0])
            assert book.busy() and book.running().id == won[0]
            winner = outcomes.index(won[0])
            book.finish(won[0], f"owner-{winner}", state="done", model_sha256="ab" * 32)
            assert not book.busy()
        states = [r.state for r in reversed(Retrains(engines[0]).latest())]
        assert sorted(states) == ["done"] * 4 + ["refused"] * 4
        # A holder that died: its lease runs out, the next retrain marks it abandoned.
        book = Retrains(engines[1])
        dead = book.begin(Trigger("manual", "dies"), "dead-owner")
        with pytest.raises(EdgepruneError, match=f"retrain {dead} "):
            book.begin(Trigger("drift", "too early"), "other")
        later = book.begin(Trigger("drift", "after the lease"), "other", now=time.time() + LEASE_S + 1)
        assert book.get(dead).state == "abandoned" and "lease" in book.get(dead).error
        assert book.get(later).state == "running"
    finally:
        for engine in engines:
            engine.dispose()
        if pg:
            pg.stop()


def images(n: int, seed: int) -> list[tuple[int, str, bytes]]:
    return [(seed + i, "3" if i % 2 else "7", f"part-{seed}-{i}".encode() * 20) for i in range(n)]


def test_triggers_labels_and_persisting_drift(tmp_path):
    store = FleetStore(str(tmp_path / "fleet.db"), tmp_path / "fleet-data")
    book = Retrains(store.engine)
    t0 = time.time() - 1000
    by_labels = RetrainSettings(retrain_after_labels=3)
    store.ingest_labels(label_batch("s1", images(2, 1)), now=t0)
    assert book.due(by_labels, now=t0 + 1) is None
    store.ingest_labels(label_batch("s1", images(1, 10)), now=t0 + 2)
    due = book.due(by_labels, now=t0 + 3)
    assert due.kind == "labels" and due.detail.startswith("3 fleet label(s)")
    rid = book.begin(due, "me", now=t0 + 10)
    book.finish(rid, "me", state="failed", error="no recommendation")  # a failure consumes it too
    assert book.due(by_labels, now=t0 + 20) is None
    store.ingest_labels(label_batch("s2", images(3, 20)), now=t0 + 30)
    assert book.due(by_labels).detail.startswith("3 fleet label(s)"), "only those after the last retrain"

    by_drift = RetrainSettings(retrain_after_drift_s=100)
    store.ingest_event({"station_id": "s2", "kind": "drift", "state": "drift", "ts": t0 + 50}, now=t0 + 50)
    assert book.due(by_drift, now=t0 + 120) is None, "the alarm has lasted 70 s of 100"
    due = book.due(by_drift, now=t0 + 151)
    assert due.kind == "drift" and "s2" in due.detail
    store.ingest_event({"station_id": "s2", "kind": "drift", "state": "ok", "ts": t0 + 160}, now=t0 + 160)
    assert book.due(by_drift, now=t0 + 400) is None, "acknowledged on the station: no alarm"
    store.ingest_event({"station_id": "s2", "kind": "drift", "state": "drift", "ts": t0 + 500}, now=t0 + 500)
    rid = book.begin(Trigger("manual", "by hand"), "me", now=t0 + 550)
    book.finish(rid, "me", state="done", model_sha256="cd" * 32)
    assert book.due(by_drift, now=t0 + 900) is None, "a retrain started since the alarm was raised"
    store.close()


def write_fleet(tmp_path: Path, *, retrain: str = "", acceptance: bool = True, study: str = STUDY) -> Path:
    (tmp_path / "study.toml").write_text(study)
    data = tmp_path / "fleet-data"
    for cls, body in (("3", b"three"), ("7", b"seven")):
        (data / cls).mkdir(parents=True, exist_ok=True)
        blob = body * 30
        (data / cls / f"{hashlib.sha256(blob).hexdigest()}.png").write_bytes(blob)
    if acceptance:
        for cls in ("3", "7"):
            (tmp_path / "acceptance" / cls).mkdir(parents=True, exist_ok=True)
            (tmp_path / "acceptance" / cls / "a.png").write_bytes(f"acceptance {cls}".encode() * 30)
    toml = tmp_path / "fleet.toml"
    toml.write_text(f'db = "fleet.db"\ndata = "fleet-data"\nacceptance = "acceptance"\nok_classes = ["0", "1"]\n'
                    f'[retrain]\nstudy = "study.toml"\n{retrain}')
    return toml


def untouched(db: Path) -> None:
    if not db.exists():
        return
    engine = make_engine(str(db))
    try:
        with engine.connect() as conn:
            for table in (models_table, retrains):
                try:
                    assert conn.execute(select(func.count()).select_from(table)).scalar() == 0, table.name
                except Exception as exc:  # noqa: BLE001 - a table never created is untouched too
                    assert "no such table" in str(exc), exc
    finally:
        engine.dispose()


def test_bad_input_is_an_error_line_and_changes_nothing(tmp_path, capsys):
    toml = write_fleet(tmp_path)
    overlap = tmp_path / "acceptance" / "3" / "copy.png"
    overlap.write_bytes(next((tmp_path / "fleet-data" / "3").iterdir()).read_bytes())
    cases = [
        (("--config", str(toml), "--study", str(tmp_path / "nowhere.toml")), "study config not found"),
        (("--config", str(toml)), "the acceptance set overlaps the training images: 1 file"),
        (("--config", str(toml), "--max-runs", "1"), "--max-runs needs --auto"),
        (("--config", str(toml), "--ray-address", "auto"), "--ray-address needs --executor ray"),
        (("--config", str(toml), "--executor", "slurm"), "retrain.executor must be local or ray"),
        (("--config", str(toml), "--auto"), "no trigger"),
    ]
    for args, message in cases:
        result = cli(capsys, "retrain", *args)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert message in result.stderr and "Traceback" not in result.stderr, (args, result.stderr)
    overlap.unlink()
    for name in ("3", "7"):
        for p in (tmp_path / "acceptance" / name).iterdir():
            p.unlink()
        (tmp_path / "acceptance" / name).rmdir()
    (tmp_path / "acceptance").rmdir()
    result = cli(capsys, "retrain", "--config", str(toml))
    assert result.returncode == 2 and "the acceptance set" in result.stderr and "is not a folder" in result.stderr
    bare = tmp_path / "bare.toml"
    bare.write_text('db = "fleet.db"\ndata = "fleet-data"\nacceptance = "acceptance"\n')
    result = cli(capsys, "retrain", "--config", str(bare))
    assert result.returncode == 2 and "no study to retrain with" in result.stderr
    toml.write_text(toml.read_text() + "retrain_after_lables = 3\n")
    result = cli(capsys, "retrain", "--config", str(toml))
    assert result.returncode == 2 and "unknown key 'retrain_after_lables'" in result.stderr
    untouched(tmp_path / "fleet.db")


def test_auto_loop_records_a_failed_trigger_once(tmp_path):
    """A due trigger whose retrain cannot start (here: the acceptance set overlaps the labels) is
    recorded as failed with the reason, and consumes the trigger: the loop does not run it again."""
    toml = write_fleet(tmp_path, retrain="retrain_after_labels = 2\npoll_s = 0.05\n")
    copy = next((tmp_path / "fleet-data" / "7").iterdir())
    (tmp_path / "acceptance" / "7" / "leak.png").write_bytes(copy.read_bytes())
    cfg = load_config(toml)
    store = FleetStore(cfg.db, cfg.data)
    store.ingest_labels(label_batch("s1", images(2, 1)), now=time.time() - 5)
    store.close()
    messages: list[str] = []
    stop = threading.Event()
    threading.Timer(3.0, stop.set).start()  # the loop would otherwise wait for the next trigger
    assert watch(cfg, stop=stop, log=messages.append) == 1
    engine = make_engine(cfg.db)
    try:
        book = Retrains(engine)
        [row] = book.latest()
        assert (row.trigger, row.state) == ("labels", "failed") and "overlaps" in row.error
        assert book.due(cfg.retrain) is None
        with engine.connect() as conn:
            assert conn.execute(select(retrain_lock.c.owner)).scalar() is None
    finally:
        engine.dispose()
    assert any("failed" in m for m in messages)


def test_api_fleet_lists_retrains(tmp_path):
    from fastapi.testclient import TestClient

    from edgeprune.fleet.page import APP_JS, PAGE
    from edgeprune.fleet.web import make_app

    store = FleetStore(str(tmp_path / "fleet.db"), tmp_path / "fleet-data")
    book = Retrains(store.engine)
    done = book.begin(Trigger("labels", "200 fleet label(s)"), "a")
    book.finish(done, "a", state="done", model_sha256="ef" * 32)
    running = book.begin(Trigger("drift", "drift alarm on s1"), "b")
    with pytest.raises(EdgepruneError):
        book.begin(Trigger("manual", "by hand"), "c")
    client = TestClient(make_app(store, FleetConfig(http=None)))
    body = client.get("/api/fleet").json()
    shown = [(r["id"], r["trigger"], r["state"], r["model_sha256"]) for r in body["retrains"]]
    assert shown == [(running + 1, "manual", "refused", None), (running, "drift", "running", None),
                     (done, "labels", "done", "ef" * 32)]
    assert "retrain" in body["retrains"][0]["error"] and json.dumps(body)
    assert 'id="retrains"' in PAGE and "retrainsTable(data)" in APP_JS
    store.close()
