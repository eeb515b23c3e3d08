"""A station that is away during a roll-out: waited for, then caught up when it is back (the
roll-out ends `done`, with `unreachable` and `reachable` events); with `max_unreachable_s` set,
one that stays away stops the roll-out instead, and the candidate is rejected with the reason.
Two real `edgeprune station run` processes, `fleet rollout --wait` as a real process, SQLite."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest
from loop_support import DIGIT_OK, StationProcess, digits_sets, train_linear, wait_for, write_fleet_toml

from edgeprune.fleet.registry import ModelRegistry
from edgeprune.fleet.rollout import Rollouts
from edgeprune.fleet.store import make_engine
from edgeprune.outputs import file_sha256


def fleet_toml(path, db, sets, stations, extra: str):
    return write_fleet_toml(
        path, db=db, acceptance=sets["acceptance"], ok_classes=DIGIT_OK, stations=stations,
        tables='[rollout]\nshadow_images = 20\nmin_agreement = 0.8\ncanary_images = 20\nwaves = 1\n'
               'history_images = 40\nmax_defect_rate_change = 0.4\nmax_review_rate_change = 0.4\npoll_s = 0.5\n'
               f'max_latency_ratio = 5.0\nstation_timeout_s = 5\n{extra}')


def rollout_cli(toml, model) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgeprune", "fleet", "rollout", str(model), "--config", str(toml),
                           "--wait", "--timeout", "300"], capture_output=True, text=True, timeout=400,
                          env=dict(os.environ))


@pytest.mark.slow
def test_an_away_station_is_waited_for_or_stops_the_rollout_after_max_unreachable_s(tmp_path):
    sets = digits_sets(tmp_path / "digits", replay_copies=8)
    current = train_linear(sets["train"], tmp_path / "current.onnx", fraction=0.6)
    good = train_linear(sets["train"], tmp_path / "good.onnx", seed=3, c=0.5)
    other = train_linear(sets["train"], tmp_path / "other.onnx", seed=5, c=0.3)
    db = tmp_path / "fleet.db"
    engine = make_engine(str(db))
    registry = ModelRegistry(engine, tmp_path / "fleet-data-models")
    for model in (good, other):
        registry.register(model, acceptance=sets["acceptance"], ok_classes=DIGIT_OK.split(","))
    stations = [StationProcess(tmp_path / f"s{i}", current, sets["replay"], ok_classes=DIGIT_OK,
                               gate_set=sets["acceptance"], rate=5.0, station_id=f"s{i}", min_accuracy=0.5)
                for i in (1, 2)]
    rollouts = Rollouts(engine, registry)
    try:
        for station in stations:
            station.start(timeout=240)
        away = stations[1]
        away.stop()  # s2 is away when the roll-out begins

        waiting = fleet_toml(tmp_path / "waiting.toml", db, sets, stations, "")
        result: dict[str, subprocess.CompletedProcess] = {}
        runner = threading.Thread(target=lambda: result.update(run=rollout_cli(waiting, good)))
        runner.start()
        wait_for(lambda: rollouts.latest(1) and any(e["kind"] == "unreachable" and e["station_id"] == "s2"
                                                    for e in rollouts.events(rollouts.latest(1)[0].id)),
                 120, "s2 reported unreachable")
        away.start(timeout=240)  # back: the roll-out catches it up
        runner.join(400)
        run = result["run"]
        assert run.returncode == 0, run.stdout + run.stderr
        first = rollouts.latest(1)[0]
        kinds = [(e["kind"], e["station_id"]) for e in rollouts.events(first.id)]
        assert kinds.index(("unreachable", "s2")) < kinds.index(("reachable", "s2")) < kinds.index(("done", None))
        for station in stations:
            assert station.status()["model_sha256"] == file_sha256(good)

        away.stop()  # away again, and this time the config gives up after 3 s
        strict = fleet_toml(tmp_path / "strict.toml", db, sets, stations, "max_unreachable_s = 3\n")
        run = rollout_cli(strict, other)
        assert run.returncode == 3, run.stdout + run.stderr
        assert "s2 has not answered for" in run.stderr and "max_unreachable_s = 3" in run.stderr
        second = rollouts.latest(1)[0]
        assert second.state in ("stopped", "rolled-back") and second.id != first.id
        assert registry.find(file_sha256(other)).state == "rejected"
        assert stations[0].status()["model_sha256"] == file_sha256(good), "s1 runs the model it ran before"
    finally:
        for station in stations:
            station.stop()
        engine.dispose()
