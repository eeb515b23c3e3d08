"""The fleet page in a real browser: headless Chromium (Selenium, Debian's chromium-driver) loads
the page that `fleet serve` serves over a database holding two lines' stations, sees every
station with its figures, the per-line defect-rate chart and the class bars drawn as SVG, the
drift alarm, and clears it through the page only with the token."""

from __future__ import annotations

import time

import httpx
from fleet_support import FleetProcess
from station_support import start_mosquitto
from test_fleet import batch, rows
from test_station_browser import chromium_driver

from edgeprune.fleet.store import FleetStore

TOKEN = "fleet-browser-token"


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
        shown = {r.get_attribute("data-station"): r for r in driver.find_elements("css selector", "tr.station-row")}
        assert set(shown) == {"l1-a", "l1-b", "l2-a"}
        assert shown["l1-b"].find_element("css selector", ".images").text == "300"
        assert "%" in shown["l1-a"].find_element("css selector", ".defect-rate").text
        assert shown["l2-a"].find_element("css selector", ".drift").text == "drift"
        assert "input drift" in shown["l2-a"].find_element("css selector", ".alarms").text
        # Charts as inline SVG: one defect-rate line per production line, one bar per class.
        assert len(driver.find_elements("css selector", "#lines-chart path.line-series")) == 2
        assert len(driver.find_elements("css selector", "#classes-chart rect.class-bar")) == 3
        assert "ab" * 32 in driver.find_element("id", "models").text
        # Acknowledging without the token is refused, and nothing changes.
        shown["l2-a"].find_element("css selector", "button.ack").click()
        wait.until(lambda d: "token" in d.find_element("id", "message").text)
        assert "input drift" in driver.find_element("css selector", "tr[data-station='l2-a'] .alarms").text
        driver.find_element("id", "token").send_keys(TOKEN)
        driver.find_element("css selector", "tr[data-station='l2-a'] button.ack").click()
        wait.until(lambda d: "acknowledged" in d.find_element("id", "message").text)
        wait.until(lambda d: d.find_element("css selector", "tr[data-station='l2-a'] .alarms").text == "none")
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
