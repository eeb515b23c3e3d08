"""A roll-out on PostgreSQL, driven by `fleet serve`, that survives the server's kill -9: two real
`edgeprune station run` processes replaying digits, a real mosquitto and a throwaway PostgreSQL
cluster. `fleet rollout MODEL` (no --wait) only records the roll-out; `fleet serve`, whose config
lists the [[stations]], drives it; killed with SIGKILL in the middle, a new `fleet serve` goes on
from where the database says it stood. Every station ends on the candidate, switched exactly once,
and decided no image twice."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys

import pytest
from fleet_support import FleetProcess, Postgres
from loop_support import DIGIT_OK, StationProcess, digits_sets, train_linear, wait_for, write_fleet_toml
from station_support import start_mosquitto

from edgeprune.fleet.registry import ModelRegistry
from edgeprune.fleet.rollout import Rollouts
from edgeprune.fleet.store import make_engine
from edgeprune.outputs import file_sha256


@pytest.mark.slow
def test_fleet_serve_on_postgresql_resumes_a_rollout_after_kill9(tmp_path):
    sets = digits_sets(tmp_path / "digits", replay_copies=6)
    current = train_linear(sets["train"], tmp_path / "current.onnx", fraction=0.6)
    good = train_linear(sets["train"], tmp_path / "good.onnx", seed=3, c=0.5)
    sha_current, sha_good = file_sha256(current), file_sha256(good)
    pg = Postgres()
    broker, port = start_mosquitto(tmp_path)
    engine = make_engine(pg.url)
    registry = ModelRegistry(engine, tmp_path / "fleet-data-models")
    registry.register(good, acceptance=sets["acceptance"], ok_classes=DIGIT_OK.split(","))
    stations = [StationProcess(tmp_path / f"s{i}", current, sets["replay"], ok_classes=DIGIT_OK,
                               gate_set=sets["acceptance"], rate=5.0, station_id=f"s{i}", min_accuracy=0.5)
                for i in (1, 2)]
    toml = write_fleet_toml(
        tmp_path / "fleet.toml", db=pg.url, acceptance=sets["acceptance"], ok_classes=DIGIT_OK, stations=stations,
        tables='[rollout]\nshadow_images = 30\nmin_agreement = 0.9\ncanary_images = 30\nwaves = 1\n'
               'history_images = 60\nmax_defect_rate_change = 0.3\nmax_review_rate_change = 0.3\npoll_s = 0.5\n'
               'max_latency_ratio = 5.0\nstation_timeout_s = 90\n')
    fleet = FleetProcess(tmp_path, port, pg.url, extra=["--config", str(toml)])
    rollouts = Rollouts(engine, registry)
    try:
        for station in stations:
            station.start(timeout=240)
        started = subprocess.run([sys.executable, "-m", "edgeprune", "fleet", "rollout", str(good), "--config",
                                  str(toml)], capture_output=True, text=True, timeout=120, env=dict(os.environ))
        assert started.returncode == 0, started.stdout + started.stderr
        assert "fleet serve` with this config drives it" in started.stderr
        rollout_id = rollouts.latest(1)[0].id
        assert rollouts.get(rollout_id).state == "shadow"

        fleet.start()
        # Killed once the canary has switched: mid-way, with one station on each model.
        wait_for(lambda: any(e["kind"] == "switched" for e in rollouts.events(rollout_id)), 240, "the canary switch")
        fleet.kill9()
        stood = rollouts.get(rollout_id)
        assert stood.state in ("canary", "waves")
        fleet.start()
        done = wait_for(lambda: (r := rollouts.get(rollout_id)).finished and r, 300, "the roll-out to finish")
        assert done.state == "done", done.reason
        assert registry.find(sha_good).state == "rolled-out"
        for station in stations:
            assert station.status()["model_sha256"] == sha_good
        switched = [e["station_id"] for e in rollouts.events(rollout_id) if e["kind"] == "switched"]
        assert switched == ["s1", "s2"], "each station switched exactly once, across the restart"
    finally:
        fleet.stop()
        for station in stations:
            station.stop()
        broker.terminate()
        engine.dispose()
        pg.stop()
    for station in stations:
        with sqlite3.connect(station.db) as con:
            rows = con.execute("SELECT path, sha256, model_sha256 FROM decisions ORDER BY id").fetchall()
        assert len(rows) == len({(p, s) for p, s, _ in rows}), "an image decided twice"
        models = [m for _, _, m in rows]
        assert [m for i, m in enumerate(models) if i == 0 or models[i - 1] != m] == [sha_current, sha_good]
