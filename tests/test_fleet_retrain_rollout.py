"""`[retrain] rollout = true`: a registered candidate is put straight into a roll-out to every
[[stations]] entry (`fleet serve` drives it), so the loop closes without a person; a roll-out
still active leaves the candidate registered and says why; the setting without stations is refused.
(The whole path, drift alarm to fleet, runs in benchmarks/loop.py.)"""

from __future__ import annotations

import pytest
from loop_support import DIGIT_OK, digits_sets, train_linear

from edgeprune.errors import EdgepruneError
from edgeprune.fleet.config import load_config
from edgeprune.fleet.registry import ModelRegistry
from edgeprune.fleet.retrain import rollout_candidate
from edgeprune.fleet.rollout import Rollouts
from edgeprune.fleet.store import make_engine

STATIONS = '[[stations]]\nid = "s1"\nurl = "http://127.0.0.1:9"\ntoken = "token-0123456"\n' \
           '[[stations]]\nid = "s2"\nurl = "http://127.0.0.1:9"\ntoken = "token-0123456"\n'


def test_a_candidate_goes_into_a_rollout_to_every_station(tmp_path):
    sets = digits_sets(tmp_path / "digits", replay_copies=1)
    first = train_linear(sets["train"], tmp_path / "first.onnx", fraction=0.6)
    second = train_linear(sets["train"], tmp_path / "second.onnx", seed=3)
    toml = tmp_path / "fleet.toml"
    toml.write_text(f'db = "fleet.db"\nacceptance = "{sets["acceptance"]}"\nok_classes = ["0"]\n{STATIONS}'
                    '[retrain]\nstudy = "study.toml"\nrollout = true\n[rollout]\nwaves = 1\n')
    config = load_config(toml)
    engine = make_engine(config.db)
    registry = ModelRegistry(engine, tmp_path / "models")
    said: list[str] = []
    try:
        a = registry.register(first, acceptance=sets["acceptance"], ok_classes=DIGIT_OK.split(","))
        b = registry.register(second, acceptance=sets["acceptance"], ok_classes=DIGIT_OK.split(","))
        rollout_id = rollout_candidate(config, engine, registry, a.sha256, said.append)
        rollout = Rollouts(engine, registry).get(rollout_id)
        assert rollout.model_sha256 == a.sha256 and rollout.state == "shadow"
        assert rollout.stations == ["s1", "s2"] and rollout.settings.waves == 1
        assert registry.find(a.sha256).state == "shadow"
        # One roll-out at a time: the second candidate stays a candidate, and the log says why.
        assert rollout_candidate(config, engine, registry, b.sha256, said.append) is None
        assert registry.find(b.sha256).state == "candidate"
        assert "one roll-out at a time" in said[-1] and b.sha256[:12] in said[-1]
    finally:
        engine.dispose()


def test_rollout_without_stations_is_refused(tmp_path):
    toml = tmp_path / "fleet.toml"
    toml.write_text('db = "fleet.db"\n[retrain]\nstudy = "study.toml"\nrollout = true\n')
    with pytest.raises(EdgepruneError, match=r"retrain.rollout needs the stations"):
        load_config(toml)
    toml.write_text('db = "fleet.db"\n[retrain]\nrollout = "yes"\n')
    with pytest.raises(EdgepruneError, match=r"retrain.rollout must be true or false"):
        load_config(toml)
