"""Real parts for the fleet tests: a throwaway PostgreSQL cluster on a free loopback port
(Debian's postgresql package; initdb refuses root, so it runs as the `postgres` user through
runuser), and `edgeprune fleet serve` as a real process (so a test can kill -9 it)."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from station_support import free_port


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}")) or ([shutil.which(name)] if shutil.which(name) else [])
    assert found, (f"PostgreSQL's {name} not found: `make install` installs Debian's postgresql (as root), "
                   "or `sudo apt-get install postgresql`")
    return found[-1]


class Postgres:
    """initdb + pg_ctl start on 127.0.0.1:PORT in a temporary folder; stop() removes it all."""

    def __init__(self):
        self.root = Path(tempfile.mkdtemp(prefix="edgeprune-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.root, user.pw_uid, user.pw_gid)
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self._run(_pg_bin("initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8",
                  "--no-sync")
        self._run(_pg_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.root / "log"), "-w", "-t", "60", "-o",
                  f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off", "start")
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        result = subprocess.run([*self.as_user, *args], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, f"{args[0]} failed: {result.stdout[-800:]} {result.stderr[-800:]}"

    def stop(self) -> None:
        subprocess.run([*self.as_user, _pg_bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(self.root, ignore_errors=True)


class FleetProcess:
    """`edgeprune fleet serve` in its own process (stdout/stderr to a log file)."""

    def __init__(self, tmp_path: Path, mqtt_port: int, db: str, *, topic: str = "factory/#", extra: list[str] = ()):
        self.port = free_port()
        self.args = [sys.executable, "-m", "edgeprune", "fleet", "serve", "--mqtt",
                     f"mqtt://127.0.0.1:{mqtt_port}/{topic}", "--db", db, "--http", f"127.0.0.1:{self.port}",
                     "--data", str(tmp_path / "fleet-data"), *extra]
        self.log = tmp_path / "fleet.log"
        self.url = f"http://127.0.0.1:{self.port}/"
        self.process: subprocess.Popen | None = None

    def start(self) -> "FleetProcess":
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(self.args, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"fleet serve exited: {self.log.read_text()[-2000:]}"
            try:
                body = httpx.get(self.url + "api/fleet", timeout=2).json()
                if body["server"]["connected"]:
                    return self
            except (httpx.HTTPError, ValueError, KeyError, TypeError):
                pass
            time.sleep(0.1)
        raise AssertionError(f"fleet serve did not come up: {self.log.read_text()[-2000:]}")

    def fleet(self) -> dict:
        return httpx.get(self.url + "api/fleet", timeout=10).json()

    def kill9(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> int:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(20)
