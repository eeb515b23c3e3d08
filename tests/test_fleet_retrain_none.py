"""`edgeprune fleet retrain` with a study whose rule recommends nothing: an error line, exit 2, no
traceback, the registry as it was, the retrain recorded as failed with the reason. (Its own file:
even untrained, the study exports and measures two models, ~40 s on 2 loaded cores.)"""

from __future__ import annotations

import pytest
from test_fleet_registry import cli
from test_fleet_retrain_study import fleet  # noqa: F401 - the fixture

from edgeprune.fleet.registry import ModelRegistry
from edgeprune.fleet.retrain import Retrains
from edgeprune.fleet.store import make_engine


@pytest.mark.slow
def test_no_recommendation_is_an_error_and_registers_nothing(fleet, capsys):  # noqa: F811
    root, toml, _ = fleet
    engine = make_engine(str(root / "fleet.db"))
    try:
        before = [m.sha256 for m in ModelRegistry(engine, root / "fleet-data-models").models()]
        result = cli(capsys, "retrain", "--config", str(toml), "--study", str(root / "study-none.toml"))
        assert result.returncode == 2, result.stdout
        assert result.stderr.startswith("error: the study recommends no model: None qualifies") or \
            "error: the study recommends no model" in result.stderr, result.stderr[-2000:]
        assert "Traceback" not in result.stderr
        assert [m.sha256 for m in ModelRegistry(engine, root / "fleet-data-models").models()] == before
        latest = Retrains(engine).latest(1)[0]
        assert latest.state == "failed" and "recommends no model" in latest.error and latest.model_sha256 is None
    finally:
        engine.dispose()
