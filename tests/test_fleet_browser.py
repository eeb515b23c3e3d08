"""The fleet page in a real browser: headless Chromium (Selenium, Debian's chromium-driver) loads
the page that `fleet serve` serves over a database holding two lines' stations, sees every
station with its figures, the per-line defect-rate chart and the class bars drawn as SVG, the
drift alarm and the retrains table, and clears the alarm through the page only with the token."""

from __future__ import annotations

import time

import httpx
from fleet_support import FleetProcess
from station_support import start_mosquitto
from test_fleet import batch, rows
from test_station_browser import chromium_driver

from edgeprune.fleet.store import FleetStore

TOKEN = "fleet-browser-token"


ROWS_JS = """
return Array.from(document.querySelectorAll(arguments[0])).map(tr => [tr.dataset[arguments[1]],
  Array.from(tr.querySelectorAll('td')).map(td => [td.className, td.textContent])]);
"""


def click(driver, selector: str) -> None:
    """Find and click in one script: a refresh between a find and a click would leave a stale element."""
    driver.execute_script("document.querySelector(arguments[0]).click();", selector)


def table_rows(driver, selector: str, key: str) -> dict[str, dict] | None:
    """{row key: {css class: cell text, "_classes": {class: the cell's whole class list}}}, read in one
    script; None (wait on) while the table is empty."""
    rows = {}
    for name, cells in driver.execute_script(ROWS_JS, selector, key):
        row: dict = {"_classes": {}}
        for classes, text in cells:
            for cls in classes.split():
                row.setdefault(cls, text)
                row["_classes"].setdefault(cls, classes)
        rows[name] = row
    return rows or None


def test_fleet_page_in_headless_chromium(tmp_path, monkeypatch):
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    db = str(tmp_path / "fleet.db")
    store = FleetStore(db, tmp_path / "fleet-data")
    # rows() dates row i at NOW - 3 h + i s: this NOW puts every row in the current hour.
    this_hour = time.time() // 3600 * 3600
    for station, line, count in (("l1-a", "line1", 400), ("l1-b", "line1", 300), ("l2-a", "line2", 500)):
        made = rows(station, 1, count, this_hour + 3 * 3600, seed=len(station) + count)
        store.ingest_decisions(batch(station, made, 0, line=line))
    store.ingest_event({"station_id": "l2-a", "kind": "drift", "state": "drift", "statistic": 0.31})
    from edgeprune.fleet.retrain import Retrains, Trigger

    book = Retrains(store.engine)
    done = book.begin(Trigger("labels", "200 fleet label(s) since the last retrain"), "test")
    book.finish(done, "test", state="done", model_sha256="cd" * 32)
    failed = book.begin(Trigger("drift", "drift alarm on l2-a for 3600 s"), "test")
    book.finish(failed, "test", state="failed", error="the study recommends no model")
    store.close()
    monkeypatch.setenv("EDGEPRUNE_FLEET_TOKEN", TOKEN)
    broker, port = start_mosquitto(tmp_path)
    fleet = FleetProcess(tmp_path, port, db).start()
    driver = None
    try:
        driver = chromium_driver(tmp_path / "chromium-profile")
        wait = WebDriverWait(driver, 30, poll_frequency=0.1, ignored_exceptions=(StaleElementReferenceException,))
        driver.get(fleet.url)
        wait.until(lambda d: len(d.find_elements("css selector", "tr.station-row")) == 3)
        # The page rebuilds its tables every 2 s: each table is read in one script, in the page's own
        # thread, so no element goes stale between finding it and reading it.
        shown = wait.until(lambda d: table_rows(d, "tr.station-row", "station"))
        assert set(shown) == {"l1-a", "l1-b", "l2-a"}
        assert shown["l1-b"]["images"] == "300"
        assert "%" in shown["l1-a"]["defect-rate"]
        assert shown["l2-a"]["drift"] == "drift"
        assert "input drift" in shown["l2-a"]["alarms"]
        # Charts as inline SVG: one defect-rate line per production line, one bar per class.
        assert len(driver.find_elements("css selector", "#lines-chart path.line-series")) == 2
        assert len(driver.find_elements("css selector", "#classes-chart rect.class-bar")) == 3
        wait.until(lambda d: "ab" * 32 in d.find_element("id", "models").text)
        # The retrains, newest first: trigger, state (a failure in red) and the model or the error.
        retrains = wait.until(lambda d: table_rows(d, "tr.retrain-row", "retrain"))
        assert list(retrains) == [str(failed), str(done)]
        assert [r["trigger"] for r in retrains.values()] == ["drift", "labels"]
        assert retrains[str(done)]["state"] == "done" and retrains[str(done)]["model"] == "cd" * 6
        assert "alarm" in retrains[str(failed)]["_classes"]["state"]
        assert retrains[str(failed)]["error"] == "the study recommends no model"
        # Acknowledging without the token is refused, and nothing changes.
        click(driver, "tr[data-station='l2-a'] button.ack")
        wait.until(lambda d: "token" in d.find_element("id", "message").text)
        # read in a wait that ignores stale elements: the page redraws the table as it polls
        wait.until(lambda d: "input drift" in d.find_element("css selector", "tr[data-station='l2-a'] .alarms").text)
        driver.find_element("id", "token").send_keys(TOKEN)
        click(driver, "tr[data-station='l2-a'] button.ack")
        wait.until(lambda d: "acknowledged" in d.find_element("id", "message").text)
        # The drift alarm is cleared (on a loaded machine the stations may meanwhile be silent for
        # longer than offline_after_s, which is another alarm).
        wait.until(lambda d: "input drift" not in d.find_element("css selector", "tr[data-station='l2-a'] .alarms").text)
        # Served on loopback, it answers loopback names only (no DNS-rebinding reads).
        assert httpx.get(fleet.url + "api/fleet", headers={"Host": "evil.example"}).status_code == 400
        shot = tmp_path / "fleet.png"
        assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    finally:
        if driver is not None:
            driver.quit()
        fleet.stop()
        broker.terminate()
        broker.wait(10)
