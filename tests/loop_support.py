"""Real station processes for the loop's tests: `edgeprune station run` with its dashboard on a
free loopback port, a station.toml with a token and a gate set, and small HTTP helpers."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from station_support import free_port

TOKEN = "loop-test-token-0123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class StationProcess:
    """One `edgeprune station run --http` process; `start()` waits for its dashboard."""

    def __init__(self, root: Path, model: Path, replay: Path, *, ok_classes: str, gate_set: Path,
                 rate: float = 20.0, station_id: str = "s1", plc_port: int | None = None,
                 min_accuracy: float = 0.0, extra: tuple[str, ...] = ()):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.db = root / "station.db"
        self.config = root / "station.toml"
        self.config.write_text(
            f'model = "{model}"\nsource = "replay:{replay}"\ndb = "{self.db}"\nok_classes = [{", ".join(repr(c) for c in ok_classes.split(","))}]\n'
            f'http = "127.0.0.1:{self.port}"\nrate = {rate}\nstation_id = "{station_id}"\ndrain_timeout = 5.0\n'
            + (f'plc = "modbus://127.0.0.1:{plc_port}"\nretry_min_s = 0.02\nretry_max_s = 0.2\n' if plc_port else "")
            + f'\n[dashboard]\ntoken = "{TOKEN}"\ngate_set = "{gate_set}"\nmin_accuracy = {min_accuracy}\n'
              'gate_max_per_class = 20\n')
        self.extra = extra
        self.log = root / "station.log"
        self.process: subprocess.Popen | None = None

    def set_model(self, model: Path) -> None:
        text = self.config.read_text().splitlines()
        self.config.write_text("\n".join(f'model = "{model}"' if line.startswith("model = ") else line
                                         for line in text) + "\n")

    def start(self, timeout: float = 120) -> "StationProcess":
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "edgeprune", "station", "run", "--config", str(self.config), *self.extra],
                stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while True:
            assert self.process.poll() is None, f"the station exited: {self.log.read_text()[-3000:]}"
            try:
                if httpx.get(f"{self.url}/api/status", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"the dashboard never answered: {self.log.read_text()[-3000:]}"
            time.sleep(0.2)

    def status(self) -> dict:
        return httpx.get(f"{self.url}/api/status", timeout=10).json()

    def stop(self) -> int:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(10)

    def output(self) -> str:
        return self.log.read_text()


def upload(url: str, model: Path) -> httpx.Response:
    with open(model, "rb") as f:
        return httpx.post(f"{url}/api/models", headers=AUTH, files={"file": (model.name, f)}, timeout=120)


def wait_for(check, timeout: float, what: str, every: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(every)
