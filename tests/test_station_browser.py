"""The dashboard in a real browser: headless Chromium (Selenium, Debian's chromium-driver) loads
the page that `station run --http` serves while a replay runs (with a real Modbus PLC and a real
mosquitto), sees the counters increase, both links up and a thumbnail appear, labels one review
item through the page, and saves a screenshot."""

from __future__ import annotations

import shutil
import sqlite3
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from station_support import ModbusPlc, db_rows, free_port, make_replay, start_mosquitto, station_config

from edgeprune.station import Station
from edgeprune.station.dashboard_config import DashboardConfig

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
TOKEN = "browser-test-token"
RATE = 6  # images/s: 60 images, 10 s, time for the browser to start and look


def chromium_driver(profile: Path):
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not (Path(p).exists() or shutil.which(Path(p).name))]
    if missing:
        pytest.fail(f"{', '.join(missing)} not found: `make install` installs Debian's chromium and "
                    "chromium-driver (as root), or run `apt-get install chromium chromium-driver`")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--window-size=1400,1100", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    service = Service(CHROMEDRIVER if Path(CHROMEDRIVER).exists() else shutil.which("chromedriver"))
    return webdriver.Chrome(service=service, options=options)


def number(driver, element_id: str) -> int | None:
    value = driver.find_element("id", element_id).text
    return int(value) if value.isdigit() else None


def test_dashboard_in_headless_chromium(tile_model, tmp_path):
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    replay = make_replay(tile_model, tmp_path / "replay", 30)
    Station(station_config(tile_model, replay, tmp_path / "plain.db")).run()
    threshold = float(np.median([r["probability"] for r in db_rows(tmp_path / "plain.db")]))
    port = free_port()
    db = tmp_path / "station.db"
    plc = ModbusPlc().start()
    broker, mqtt_port = start_mosquitto(tmp_path)
    cfg = station_config(tile_model, replay, db, rate=RATE, review_below=threshold, http=f"127.0.0.1:{port}",
                         plc=f"modbus://127.0.0.1:{plc.port}", mqtt=f"mqtt://127.0.0.1:{mqtt_port}/line1",
                         mqtt_interval_s=0.5, dashboard=DashboardConfig(token=TOKEN))
    station = Station(cfg)
    runner = threading.Thread(target=station.run)
    runner.start()
    driver = None
    try:
        url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + 20
        while True:  # the server is up once Station.run has started it
            try:
                if httpx.get(url + "api/status", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the dashboard never answered"
            time.sleep(0.1)
        driver = chromium_driver(tmp_path / "chromium-profile")
        wait = WebDriverWait(driver, 30, poll_frequency=0.1, ignored_exceptions=(StaleElementReferenceException,))
        driver.get(url)
        first = wait.until(lambda d: number(d, "decided"))
        wait.until(lambda d: (number(d, "decided") or 0) >= first + 3)  # the counters move with the line
        assert driver.find_element("id", "state").text == "running"
        assert driver.find_element("id", "model-sha").text == station.current_model().sha256
        # The links as the station sees them: a real Modbus PLC and a real mosquitto broker.
        wait.until(lambda d: d.find_element("id", "plc-state").text == "modbus connected")
        assert driver.find_element("id", "plc-backlog").text.isdigit()
        wait.until(lambda d: d.find_element("id", "mqtt-state").text == "connected")
        # A thumbnail of a decided part, loaded through /api/images/{id}.
        wait.until(lambda d: d.execute_script(
            "return [...document.querySelectorAll('#decisions img.thumb')].some(i => i.complete && i.naturalWidth > 0)"))
        shown = wait.until(lambda d: float(t) if (t := d.find_element("id", "throughput").text)
                           .replace(".", "", 1).isdigit() and float(t) > 0 else None)
        assert shown <= 2 * RATE, f"{shown} images/s shown for a replay at {RATE}/s"
        assert "%" in driver.find_element("id", "live-accuracy").text
        assert driver.find_elements("css selector", "#chart path")

        # Label the first review item through the page, with the token typed into it.
        item = wait.until(lambda d: d.find_elements("css selector", ".review-item"))[0]
        decision_id = int(item.get_attribute("data-id"))
        driver.find_element("id", "token").send_keys(TOKEN)
        from selenium.webdriver.support.ui import Select

        Select(item.find_element("css selector", "select.review-label")).select_by_value("defect")
        item.find_element("css selector", "button.review-submit").click()
        wait.until(lambda d: "labelled" in d.find_element("id", "message").text)
        with sqlite3.connect(db) as con:
            assert con.execute("SELECT label FROM reviews WHERE decision_id = ?", (decision_id,)).fetchone() == ("defect",)
        wait.until(lambda d: str(decision_id) not in d.execute_script(
            "return [...document.querySelectorAll('.review-item')].map(e => e.dataset.id)"))
        driver.execute_script("window.scrollTo(0, 0)")
        # Served on loopback, it answers loopback names only (no DNS-rebinding reads).
        assert httpx.get(url + "api/status", headers={"Host": "evil.example"}).status_code == 400
        shot = tmp_path / "dashboard.png"
        assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    finally:
        if driver is not None:
            driver.quit()
        station.stop()
        runner.join(30)
        plc.close()
        broker.terminate()
        broker.wait(10)
    assert not runner.is_alive()
