"""The loop's roll-out with real parts on 127.0.0.1: three real `edgeprune station run` processes
(one signalling a real Modbus PLC) replaying digits, a fleet database on SQLite, and
`edgeprune fleet rollout --wait` as a real process. A good candidate goes shadow -> canary -> both
waves; a candidate trained on shuffled labels is stopped in shadow and rejected; a candidate that
agrees in shadow but is many times slower breaches the canary and is rolled back. Each image is
decided once per station, each decision row names the model that decided it, and every station
switched exactly once, when the roll-out said so."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys

import pytest
from loop_support import DIGIT_OK, TOKEN, StationProcess, digits_sets, slow_copy, train_linear
from station_support import ModbusPlc

from edgeprune.fleet.registry import ModelRegistry
from edgeprune.fleet.rollout import Rollouts
from edgeprune.fleet.store import make_engine
from edgeprune.outputs import file_sha256

TOKEN_ENV = "EDGEPRUNE_TEST_S3_TOKEN"


def rows(db) -> list[tuple]:
    with sqlite3.connect(db) as con:
        return con.execute("SELECT id, path, sha256, model_sha256, plc_status FROM decisions ORDER BY id").fetchall()


def shadow_rows(db) -> list[tuple]:
    with sqlite3.connect(db) as con:
        return con.execute("SELECT decision_id, model_sha256 FROM shadow_decisions").fetchall()


def rollout_cli(fleet_toml, model, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, TOKEN_ENV: TOKEN}
    return subprocess.run([sys.executable, "-m", "edgeprune", "fleet", "rollout", str(model), "--config",
                           str(fleet_toml), "--wait", "--timeout", "240", *extra],
                          capture_output=True, text=True, timeout=400, env=env)


@pytest.mark.slow
def test_good_candidate_rolls_out_shuffled_one_stops_in_shadow_slow_one_rolls_back(tmp_path):
    sets = digits_sets(tmp_path / "digits", replay_copies=6)
    current = train_linear(sets["train"], tmp_path / "current.onnx", fraction=0.6)
    good = train_linear(sets["train"], tmp_path / "good.onnx", seed=3, c=0.5)
    bad = train_linear(sets["train"], tmp_path / "shuffled.onnx", shuffle_labels=True)
    slow = slow_copy(good, tmp_path / "slow.onnx")  # the good model's decisions, tens of times slower
    sha_current, sha_good, sha_bad, sha_slow = (file_sha256(p) for p in (current, good, bad, slow))

    fleet_toml = tmp_path / "fleet.toml"
    db = tmp_path / "fleet.db"
    engine = make_engine(str(db))
    registry = ModelRegistry(engine, tmp_path / "fleet-data-models")
    for model in (good, bad, slow):
        registry.register(model, acceptance=sets["acceptance"], ok_classes=DIGIT_OK.split(","))

    plc = ModbusPlc().start()
    stations = [StationProcess(tmp_path / f"s{i}", current, sets["replay"], ok_classes=DIGIT_OK,
                               gate_set=sets["acceptance"], rate=5.0, station_id=f"s{i}", min_accuracy=0.5,
                               plc_port=plc.port if i == 1 else None) for i in (1, 2, 3)]
    entries = "".join(
        f'\n[[stations]]\nid = "s{i}"\nurl = "{s.url}"\n'
        + (f'token_env = "{TOKEN_ENV}"\n' if i == 3 else f'token = "{TOKEN}"\n')
        for i, s in enumerate(stations, start=1))
    fleet_toml.write_text(
        f'db = "{db}"\ndata = "{tmp_path / "fleet-data"}"\nacceptance = "{sets["acceptance"]}"\n'
        f'ok_classes = [{", ".join(repr(c) for c in DIGIT_OK.split(","))}]\n{entries}\n'
        '[rollout]\nshadow_images = 40\nmin_agreement = 0.9\ncanary_images = 40\nwaves = 2\n'
        'max_defect_rate_change = 0.3\nmax_review_rate_change = 0.3\n'
        'history_images = 100\npoll_s = 0.5\nmax_latency_ratio = 5.0\nstation_timeout_s = 90\n')
    # The canary's tolerances are wide: 40 images against 100 spread the defect rate by ~0.09.
    try:
        for station in stations:
            station.start(timeout=240)

        good_run = rollout_cli(fleet_toml, good)
        assert good_run.returncode == 0, good_run.stdout + good_run.stderr
        for station in stations:
            assert station.status()["model_sha256"] == sha_good
        assert [s.state for s in registry.states(sha_good)] == ["candidate", "shadow", "canary", "rolled-out"]
        rollouts = Rollouts(engine, registry)
        done = rollouts.latest(1)[0]
        assert done.state == "done" and {s.state for s in done.station_states} == {"watched"}
        kinds = [e["kind"] for e in rollouts.events(done.id)]
        assert kinds.index("canary") < kinds.index("wave") and kinds[-1] == "done"
        assert [e["station_id"] for e in rollouts.events(done.id) if e["kind"] == "switched"] == ["s1", "s2", "s3"]
        shadow_figures = {s.station_id: s.figures for s in done.station_states}
        assert all(f is not None for f in shadow_figures.values())

        bad_run = rollout_cli(fleet_toml, bad)
        assert bad_run.returncode == 3, bad_run.stdout + bad_run.stderr
        assert "stopped" in bad_run.stderr and "agreement" in bad_run.stderr
        assert registry.find(sha_bad).state == "rejected"
        assert "agreement" in registry.states(sha_bad)[-1].reason
        for station in stations:
            assert station.status()["model_sha256"] == sha_good, "a candidate stopped in shadow never switches"

        slow_run = rollout_cli(fleet_toml, slow)
        assert slow_run.returncode == 3, slow_run.stdout + slow_run.stderr
        # Usually the canary breaches; on a loaded host the canary's own "before" can be slow
        # enough that the first wave breaches instead. Either way every switched station goes back.
        assert "latency p50" in slow_run.stderr, slow_run.stderr
        assert registry.find(sha_slow).state == "rejected"
        assert [s.state for s in registry.states(sha_slow)][:3] == ["candidate", "shadow", "canary"]
        rolled = rollouts.latest(1)[0]
        assert rolled.state == "rolled-back"
        switched = [e["station_id"] for e in rollouts.events(rolled.id) if e["kind"] == "switched"]
        assert switched[0] == "s1" and switched == ["s1", "s2", "s3"][: len(switched)]
        states = {s.station_id: s.state for s in rolled.station_states}
        assert all(states[sid] == "rolled-back" for sid in switched), states
        for station in stations:
            assert station.status()["model_sha256"] == sha_good, "every switched station went back"
        for run in (good_run, bad_run, slow_run):
            assert TOKEN not in run.stdout + run.stderr
    finally:
        for station in stations:
            station.stop()
        plc.close()
        engine.dispose()

    for station in stations:
        decided = rows(station.db)
        assert len(decided) == len({(r[1], r[2]) for r in decided}), f"{station.db}: an image decided twice"
        models = [r[3] for r in decided]
        runs = [m for i, m in enumerate(models) if i == 0 or models[i - 1] != m]  # each model's stretch
        # each row names the model that decided it, and each station switched only when told to
        sid = station.db.parent.name
        if sid in switched:  # the slow candidate, then back
            assert runs == [sha_current, sha_good, sha_slow, sha_good], runs
        else:
            assert runs == [sha_current, sha_good], runs
        shadowed = shadow_rows(station.db)
        assert len(shadowed) == len(set(shadowed)), "a shadow decided an image twice"
        assert {m for _, m in shadowed} == {sha_good, sha_bad, sha_slow}
        ids = {r[0] for r in decided}
        assert {d for d, _ in shadowed} <= ids
        # The bad candidate shadowed only images decided by the good model (after the switch).
        by_id = {r[0]: r[3] for r in decided}
        assert {by_id[d] for d, m in shadowed if m == sha_bad} == {sha_good}
    sent = [r[0] for r in rows(stations[0].db) if r[4] == "sent"]
    assert plc.sequence_writes() == sent, "no PLC signal lost or doubled across the switch"
