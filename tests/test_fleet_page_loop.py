"""The loop on the fleet page and in `fleet status`: a fleet database holding three registered
models (tiny real ONNX classifiers trained on digits, judged on the acceptance set), a roll-out
stopped in shadow and one standing in its canary, and retrains. In headless Chromium the registry
shows every model's state as a badge, the roll-out its current stage and each station's state,
the models table names the registered models the stations run, and a state change written while
the page is open is drawn. No token of the fleet config reaches the page, /api/fleet or
`fleet status`, even where a stored event quotes one."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import httpx
import pytest
from loop_support import DIGIT_OK, digits_sets, train_linear
from test_fleet import batch, rows

from edgeprune.fleet.config import RolloutSettings
from edgeprune.fleet.registry import ModelRegistry, models_dir_for
from edgeprune.fleet.retrain import Retrains, Trigger
from edgeprune.fleet.rollout import Rollouts
from edgeprune.fleet.store import FleetStore

FLEET_TOKEN = "fleet-page-token-4711"
STATION_TOKENS = {"s1": "station-one-secret-0815", "s2": "station-two-secret-1234", "s3": "station-three-secret-99"}
UNREGISTERED = "ab" * 32


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """{"current", "candidate", "shuffled"}: ONNX files, and the acceptance folder."""
    root = tmp_path_factory.mktemp("loop-models")
    sets = digits_sets(root, replay_copies=1)
    return {"acceptance": sets["acceptance"],
            "current": train_linear(sets["train"], root / "current.onnx", fraction=0.5),
            "candidate": train_linear(sets["train"], root / "candidate.onnx"),
            "shuffled": train_linear(sets["train"], root / "shuffled.onnx", shuffle_labels=True)}


def write_config(tmp_path, db: str) -> str:
    """fleet.toml with the page's token and three stations with tokens, at ports nobody serves."""
    from station_support import free_port

    text = f'db = "{db}"\ndata = "{tmp_path / "fleet-data"}"\ntoken = "{FLEET_TOKEN}"\n'
    for sid, token in STATION_TOKENS.items():
        text += f'\n[[stations]]\nid = "{sid}"\nurl = "http://127.0.0.1:{free_port()}"\ntoken = "{token}"\n'
    path = tmp_path / "fleet.toml"
    path.write_text(text)
    return str(path)


def build_fleet(tmp_path, models) -> dict:
    """The database: stations, the registry, two roll-outs (one stopped in shadow, one in its
    canary), two retrains; every write through the classes' public methods."""
    db = str(tmp_path / "fleet.db")
    store = FleetStore(db, tmp_path / "fleet-data")
    registry = ModelRegistry(store.engine, models_dir_for(tmp_path / "fleet-data"))
    ok = DIGIT_OK.split(",")
    current = registry.register(models["current"], acceptance=models["acceptance"], ok_classes=ok)
    registry.set_state(current.sha256, "rolled-out", "running on every station")
    shuffled = registry.register(models["shuffled"], acceptance=models["acceptance"], ok_classes=ok,
                                 parent=current.sha256)
    candidate = registry.register(models["candidate"], acceptance=models["acceptance"], ok_classes=ok,
                                  parent=current.sha256, fleet_labels=12)
    this_hour = time.time() // 3600 * 3600
    for station, sha in (("s1", candidate.sha256), ("s2", current.sha256), ("s3", current.sha256),
                         ("s9", UNREGISTERED)):
        made = [{**r, "model_sha256": sha} for r in rows(station, 1, 50, this_hour + 3 * 3600, seed=len(station))]
        store.ingest_decisions(batch(station, made, 0))

    book = Rollouts(store.engine, registry)
    stopped = book.create(shuffled.sha256, ["s1", "s2", "s3"], RolloutSettings(waves=2))
    reason = "shadow on s1: agreement 0.412 < 0.95 over 200 images"
    book.set_rollout(stopped, state="stopped", reason=reason, event=("breach", reason),
                     figures={"station_id": "s1", "agreement": 0.412},
                     model_state=("rejected", f"roll-out {stopped}: {reason}"))
    rollout = book.create(candidate.sha256, ["s1", "s2", "s3"], RolloutSettings(waves=2))
    for sid, agreement in (("s1", 0.991), ("s2", 0.987), ("s3", 0.979)):
        figures = {"images": 200, "agreement": agreement, "live_defect_recall": None, "shadow_defect_recall": None}
        book.set_station(rollout, sid, state="shadow-passed", figures=figures,
                         event=("shadow-passed", f"{sid}: agreement {agreement:.3f} over 200 images"))
    book.set_rollout(rollout, state="canary", wave=0, event=("canary", "shadow passed on every station; canary s1"),
                     model_state=("canary", f"roll-out {rollout}: shadow passed, canary s1"))
    book.set_station(rollout, "s1", state="switched", event=("switched", f"s1 switched from {current.sha256[:12]}"))
    # A station whose error text quotes the token it was sent (a proxy echoing the request, say):
    # stored as the station said it, never shown.
    echoed = f"s2 refused the fleet's token for status (401): Authorization: Bearer {STATION_TOKENS['s2']}"
    book.set_station(rollout, "s2", last_error=echoed, error_since=time.time(), event=("unreachable", echoed))

    retrains = Retrains(store.engine)
    done = retrains.begin(Trigger("labels", "12 fleet label(s) since the last retrain"), "test")
    retrains.finish(done, "test", state="done", model_sha256=candidate.sha256)
    store.close()
    return {"db": db, "current": current, "candidate": candidate, "shuffled": shuffled, "stopped": stopped,
            "rollout": rollout, "retrain": done, "reason": reason, "config": write_config(tmp_path, db)}


def no_token(text: str) -> None:
    for token in (FLEET_TOKEN, *STATION_TOKENS.values()):
        assert token not in text


def test_api_fleet_on_a_database_without_the_loop_tables(tmp_path):
    """A fleet database from before the registry and roll-outs: /api/fleet creates their tables
    and answers with empty lists; the page's script draws them."""
    from fastapi.testclient import TestClient
    from sqlalchemy import inspect

    from edgeprune.fleet.config import FleetConfig
    from edgeprune.fleet.page import APP_JS
    from edgeprune.fleet.web import make_app

    store = FleetStore(str(tmp_path / "old.db"), tmp_path / "fleet-data")
    store.ingest_decisions(batch("s1", rows("s1", 1, 20, time.time()), 0))
    assert not {"models", "rollouts", "rollout_stations", "retrains"} & set(inspect(store.engine).get_table_names())
    body = TestClient(make_app(store, FleetConfig(http=None, data=tmp_path / "fleet-data"))).get("/api/fleet").json()
    assert body["registry"] == [] and body["rollouts"] == [] and body["retrains"] == []
    assert body["running_models"] == {} and [s["station_id"] for s in body["stations"]] == ["s1"]
    assert {"models", "model_states", "rollouts", "rollout_stations", "rollout_events", "retrains"} <= \
        set(inspect(store.engine).get_table_names())
    assert "registryTable(data)" in APP_JS and "rolloutSection(data)" in APP_JS and "innerHTML" not in APP_JS
    store.close()


ROWS_JS = """
return Array.from(document.querySelectorAll(arguments[0])).map(tr => [tr.dataset[arguments[1]],
  Array.from(tr.querySelectorAll('td')).map(td => [td.className, td.textContent,
    td.querySelector('.badge') ? td.querySelector('.badge').className : null])]);
"""


def table(driver, selector: str, key: str) -> dict[str, dict] | None:
    """{row key: {cell class: text, "badge": the state badge's class list}}, read in one script (the
    page rebuilds its tables every 2 s); None while the table is empty."""
    out = {}
    for name, cells in driver.execute_script(ROWS_JS, selector, key):
        row: dict = {}
        for classes, text, badge in cells:
            for cls in classes.split():
                row.setdefault(cls, text)
            if badge:
                row["badge"] = badge
        out[name] = row
    return out or None


STAGES_JS = """
return Array.from(document.querySelectorAll('#rollout-stages .stage')).map(s => [s.textContent, s.className]);
"""


def test_fleet_page_draws_registry_and_rollouts(models, tmp_path, monkeypatch):
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait
    from fleet_support import FleetProcess
    from station_support import start_mosquitto
    from test_station_browser import chromium_driver

    fleet_db = build_fleet(tmp_path, models)
    cur, cand, bad = fleet_db["current"].sha256, fleet_db["candidate"].sha256, fleet_db["shuffled"].sha256
    broker, port = start_mosquitto(tmp_path)
    # With [[stations]] in its config, `fleet serve` drives the active roll-out too: its stations
    # do not answer here, so the driver records them unreachable and no station's state changes.
    fleet = FleetProcess(tmp_path, port, fleet_db["db"], extra=["--config", fleet_db["config"]]).start()
    driver = None
    try:
        driver = chromium_driver(tmp_path / "chromium-profile")
        wait = WebDriverWait(driver, 30, poll_frequency=0.1, ignored_exceptions=(StaleElementReferenceException,))
        driver.get(fleet.url)
        registry = wait.until(lambda d: table(d, "tr.registry-row", "sha"))
        assert list(registry) == [cand, bad, cur]  # newest first
        assert {sha: registry[sha]["state"] for sha in registry} == {cur: "rolled-out", bad: "rejected", cand: "canary"}
        assert registry[bad]["badge"] == "badge state-rejected" and registry[cand]["badge"] == "badge state-canary"
        assert registry[cand]["name"] == "candidate.onnx" and registry[cand]["parent"] == cur[:12]
        assert registry[cand]["fleet-labels"] == "12" and "%" in registry[cand]["accuracy"]
        assert registry[bad]["reason"] == f"roll-out {fleet_db['stopped']}: {fleet_db['reason']}"
        assert registry[cand]["reason"] == f"roll-out {fleet_db['rollout']}: shadow passed, canary s1"

        # The roll-out in progress: its stages with the canary current, each station's wave and state.
        head = wait.until(lambda d: d.find_element("id", "rollout-head").get_attribute("data-rollout"))
        assert head == str(fleet_db["rollout"])
        stages = driver.execute_script(STAGES_JS)
        assert [s[0] for s in stages] == ["shadow", "canary", "wave 1", "wave 2", "done"]
        assert "passed" in stages[0][1] and "current" in stages[1][1] and "failed" not in stages[1][1]
        assert not any("current" in s[1] or "passed" in s[1] for s in stages[2:])
        stations = wait.until(lambda d: table(d, "tr.rollout-station", "station"))
        assert {sid: (r["wave"], r["state"]) for sid, r in stations.items()} == {
            "s1": ("canary", "switched"), "s2": ("wave 1", "shadow-passed"), "s3": ("wave 2", "shadow-passed")}
        assert stations["s2"]["badge"] == "badge state-shadow-passed"
        assert stations["s3"]["figures"].startswith("agreement 97.9 % over 200 images")
        assert "[token]" in stations["s2"]["error"]
        kinds = [e.text for e in driver.find_elements("css selector", "#rollout-events .kind")]
        assert {"created", "shadow-passed", "canary", "switched"} <= set(kinds)
        earlier = wait.until(lambda d: table(d, "tr.rollout-row", "rollout"))
        assert earlier[str(fleet_db["stopped"])]["badge"] == "badge state-stopped"
        assert earlier[str(fleet_db["stopped"])]["stage"] == "shadow"
        assert earlier[str(fleet_db["stopped"])]["reason"] == fleet_db["reason"]

        # Which station runs which model, named and with its registry state when registered.
        running = wait.until(lambda d: table(d, "tr.model-row", "sha"))
        assert running[cur]["name"] == "current.onnx" and running[cur]["state"] == "rolled-out"
        assert running[cur]["stations"] == "s2, s3" and running[cand]["state"] == "canary"
        assert running[UNREGISTERED]["name"] == "not registered"

        # A state change written while the page is open is drawn at the next poll.
        store = FleetStore(fleet_db["db"], tmp_path / "fleet-data")
        book = Rollouts(store.engine, ModelRegistry(store.engine, models_dir_for(tmp_path / "fleet-data")))
        book.set_station(fleet_db["rollout"], "s1", state="watched", figures={
            "before": {"images": 50, "defect_rate": 0.2, "review_rate": 0.1, "latency_ms_p50": 1.0},
            "after": {"images": 200, "defect_rate": 0.21, "review_rate": 0.1, "latency_ms_p50": 1.1}},
            event=("watched", "s1: within tolerance over 200 images"))
        book.set_rollout(fleet_db["rollout"], state="waves", wave=1, event=("wave", "wave 1: s2"))
        store.close()
        wait.until(lambda d: [s[0] for s in d.execute_script(STAGES_JS) if "current" in s[1]] == ["wave 1"])
        stations = wait.until(lambda d: (t := table(d, "tr.rollout-station", "station")) and
                              t["s1"]["state"] == "watched" and t)
        assert stations["s1"]["figures"].startswith("defect rate 21.0 % (before 20.0 %), 200 images")

        # No token anywhere: the rendered page, its source, its script and /api/fleet.
        body = fleet.fleet()
        assert body["token_configured"] is True
        texts = [driver.page_source, driver.find_element("tag name", "body").text, json.dumps(body),
                 httpx.get(fleet.url, timeout=10).text, httpx.get(fleet.url + "app.js", timeout=10).text]
        for text in texts:
            no_token(text)
        rollout = next(r for r in body["rollouts"] if r["id"] == fleet_db["rollout"])
        assert any("Bearer [token]" in e["detail"] for e in rollout["events"])
        driver.execute_script("document.getElementById('rollout').scrollIntoView();")
        shot = tmp_path / "fleet-loop.png"
        assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    finally:
        if driver is not None:
            driver.quit()
        fleet.stop()
        broker.terminate()
        broker.wait(10)
    no_token((tmp_path / "fleet.log").read_text())


def test_fleet_status_prints_retrains_and_the_rollout(models, tmp_path):
    fleet_db = build_fleet(tmp_path, models)
    command = [sys.executable, "-m", "edgeprune", "fleet", "status", "--config", fleet_db["config"]]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    no_token(out + result.stderr)
    lines = out.splitlines()
    retrain = next(line for line in lines if line.strip("│ ").startswith(f"{fleet_db['retrain']} "))
    assert "labels" in retrain and "done" in retrain and fleet_db["candidate"].sha256[:12] in retrain
    assert f"roll-out {fleet_db['rollout']}: candidate.onnx" in out and "shadow -> [canary] -> wave 1" in out
    rollout_lines = out[out.index(f"roll-out {fleet_db['rollout']}:"):].splitlines()
    station = {line.split("│")[1].strip(): line for line in rollout_lines if line.count("│") >= 5
               and line.split("│")[1].strip() in STATION_TOKENS}
    assert "canary" in station["s1"] and "switched" in station["s1"]
    assert "wave 2" in station["s3"] and "shadow-passed" in station["s3"] and "agreement 0.979" in station["s3"]
    assert "[token]" in out  # s2's error, with the token it quoted removed
    result = subprocess.run([*command, "--json"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    no_token(result.stdout)
    body = json.loads(result.stdout)
    assert body["server"] is None and body["token_configured"] is True
    assert [(m["name"], m["state"]) for m in body["registry"]] == [
        ("candidate.onnx", "canary"), ("shuffled.onnx", "rejected"), ("current.onnx", "rolled-out")]
    assert [(r["id"], r["state"], r["stage"]) for r in body["rollouts"]] == [
        (fleet_db["rollout"], "canary", "canary"), (fleet_db["stopped"], "stopped", "shadow")]
    assert [(s["station_id"], s["state"]) for s in body["rollouts"][0]["stations"]] == [
        ("s1", "switched"), ("s2", "shadow-passed"), ("s3", "shadow-passed")]
    assert [r["id"] for r in body["retrains"]] == [fleet_db["retrain"]]
