"""The model registry in the fleet database (SQLite and a real PostgreSQL): a model judged on the
frozen acceptance set as a station decides, kept by content, every state change stored; the CLI
(`fleet register`, `fleet models --json`) and its bad input."""

from __future__ import annotations

import json
import subprocess

import pytest
from fleet_support import Postgres
from loop_support import DIGIT_OK, digits_sets, train_linear

from edgeprune.errors import EdgepruneError
from edgeprune.fleet.registry import ModelRegistry
from edgeprune.fleet.store import make_engine
from edgeprune.outputs import file_sha256


@pytest.fixture(scope="module")
def digits_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("digits")
    sets = digits_sets(root, replay_copies=1)
    good = train_linear(sets["train"], root / "good.onnx", fraction=0.6)
    bad = train_linear(sets["train"], root / "shuffled.onnx", shuffle_labels=True)
    return sets, good, bad


def cli(capsys, *args: str) -> subprocess.CompletedProcess:
    """`edgeprune fleet ARGS` in this process (a fresh interpreter costs ~30 s on a loaded machine)."""
    from edgeprune.cli import main

    capsys.readouterr()
    try:
        main(["fleet", *args])
        code = 0
    except SystemExit as exc:
        code = exc.code or 0
    out = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out.out, out.err)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_registry_judges_keeps_and_records_every_state(backend, digits_models, tmp_path):
    sets, good, bad = digits_models
    pg = Postgres() if backend == "postgresql" else None
    engine = make_engine(pg.url if pg else str(tmp_path / "fleet.db"))
    try:
        registry = ModelRegistry(engine, tmp_path / "fleet-data-models")
        ok = DIGIT_OK.split(",")
        first = registry.register(good, acceptance=sets["acceptance"], ok_classes=ok, fleet_labels=0,
                                  study_run="runs/a")
        child = registry.register(bad, acceptance=sets["acceptance"], ok_classes=ok, parent=first.sha256[:10],
                                  fleet_labels=37)
        assert first.state == child.state == "candidate"
        assert first.accuracy > 0.9 and first.defect_recall > 0.9  # a trained linear model on digits
        assert child.accuracy < 0.3, "trained on shuffled labels: near chance (0.1)"
        assert child.parent_sha256 == first.sha256 and child.fleet_labels == 37
        assert first.acceptance_images == child.acceptance_images > 300
        assert first.size_bytes == good.stat().st_size and first.latency_ms_p50 > 0
        kept = tmp_path / "fleet-data-models" / f"{first.sha256}.onnx"
        assert first.file == str(kept) and file_sha256(kept) == first.sha256
        # Registering the same bytes again changes nothing.
        assert registry.register(good, acceptance=sets["acceptance"], ok_classes=ok) == first
        registry.set_state(first.sha256, "shadow", "roll-out 1 started")
        registry.set_state(first.sha256, "rejected", "agreement 0.41 < 0.95", {"agreement": 0.41})
        states = registry.states(first.sha256)
        assert [s.state for s in states] == ["candidate", "shadow", "rejected"]
        assert states[-1].figures == {"agreement": 0.41} and states[-1].ts >= states[0].ts
        assert registry.find(first.sha256).state == "rejected"
        assert [m.sha256 for m in registry.models()] == [child.sha256, first.sha256]
        assert registry.resolve(first.sha256[:8]).sha256 == first.sha256
        with pytest.raises(EdgepruneError, match="no registered model"):
            registry.resolve("feedbeef")
    finally:
        engine.dispose()
        if pg:
            pg.stop()


def test_cli_register_and_models(digits_models, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # without a config the registry's files go to ./fleet-data-models
    sets, good, _ = digits_models
    db = str(tmp_path / "fleet.db")
    result = cli(capsys, "register", str(good), "--db", db, "--acceptance", str(sets["acceptance"]),
                 "--ok-classes", DIGIT_OK, "--fleet-labels", "5", "--json")
    assert result.returncode == 0, result.stderr
    row = json.loads(result.stdout)
    assert row["sha256"] == file_sha256(good) and row["state"] == "candidate" and row["fleet_labels"] == 5
    listed = cli(capsys, "models", "--db", db, "--json")
    assert listed.returncode == 0, listed.stderr
    models = json.loads(listed.stdout)
    assert [m["sha256"] for m in models] == [row["sha256"]]
    assert [s["state"] for s in models[0]["states"]] == ["candidate"]
    table = cli(capsys, "models", "--db", db)
    assert table.returncode == 0 and "model registry: 1 model(s)" in table.stdout
    again = cli(capsys, "register", str(good), "--db", db, "--acceptance", str(sets["acceptance"]), "--ok-classes", DIGIT_OK)
    assert again.returncode == 0 and "already registered" in again.stderr + again.stdout
    # Bad input (a fresh database): an error line and exit 2, never a traceback.
    db = str(tmp_path / "other.db")
    for args, message in [
        (("register", str(good), "--db", db), "no acceptance set"),
        (("register", str(tmp_path / "missing.onnx"), "--db", db, "--acceptance", str(sets["acceptance"]),
          "--ok-classes", DIGIT_OK), "model not found"),
        (("register", str(good), "--db", db, "--acceptance", str(tmp_path), "--ok-classes", DIGIT_OK),
         "differ from the model's classes"),
        (("register", str(good), "--db", db, "--acceptance", str(sets["acceptance"]), "--ok-classes", "x"),
         "do not fit"),
    ]:
        bad = cli(capsys, *args)
        assert bad.returncode == 2, (args, bad.stdout, bad.stderr)
        assert message in bad.stderr and "Traceback" not in bad.stderr, bad.stderr
