"""The fleet over the wire: N simulated stations -> one mosquitto -> one `edgeprune fleet serve`
process, into SQLite and PostgreSQL, with faults; the ingest rate, the ingest lag and exactly-once.

    python benchmarks/fleet_mqtt.py                                   # 20 stations x 100/s, both databases
    python benchmarks/fleet_mqtt.py --stations 3 --rate 20 --steady-s 0 --faults-s 15 --backends sqlite

Every part is real and on 127.0.0.1: mosquitto on a random port (the tests' start_mosquitto), a
throwaway PostgreSQL cluster (the tests' Postgres: fsync off), and `edgeprune fleet serve` as a
child process of the CLI (the tests' FleetProcess), so it can be killed with SIGKILL.

A simulated station is the real station's upload path without the camera and the model: its own
decision log (station.log's schema, one SQLite file per station) filled at RATE rows/s with
real-shaped rows, and the station's own `Uploader` (station/upload.py: one paho client per
station, the batch encoder, QoS 1, batches of --upload-batch rows or every --upload-interval-s,
the cursor that moves only on the fleet's receipt, the resend from the cursor). All stations run
in this one process (a writer thread and, per station, the Uploader's thread and paho's).

Phases, per database:
  1. drain:  every station starts with a backlog of --drain-rows rows and sends it as fast as the
             receipts allow (one batch in flight per station, as the real station): the highest
             sustained ingest rate of the whole path (encode, broker, decode, store, receipt).
  2. steady: every station decides RATE rows/s for --steady-s seconds: the rate stored and the lag.
  3. faults: the same load for --faults-s seconds, during which one station goes offline for
             --offline-s seconds (its Uploader stopped; its log keeps growing; a new Uploader
             resends from the cursor, as a restarted station does), mosquitto is restarted (no
             persistence: what it held is lost), and the fleet server is killed with SIGKILL and
             started again.
Then every station's log is compared with the fleet database, row by row: none lost, none twice
(the rows, and the hourly aggregates and per-station totals that a double count would inflate).

The ingest lag of a row is received_ts - ts, both read from the fleet database: `ts` is when the
station decided it (wall clock when the row was written to the station's log), `received_ts` is
when `fleet serve` began the transaction that stored it (FleetStore.ingest_decisions sets one
value per batch, just before the insert; the commit adds milliseconds). It includes the station's
own batching wait (up to --upload-interval-s, plus the Uploader's 0.2 s tick). The "transport lag"
is the same for the newest row of each stored batch only (rows of one batch share received_ts):
that row waited for no batching, so it is the time from the batch leaving the station (within a
tick) through the broker, the fleet's queue and decode to the insert. Both come from the rows of
the steady phase only (the faults phase is there for exactly-once, its lag is reported apart).

Writes benchmarks/results/fleet_mqtt_<backends>_<hardware>_<software>.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import sqlite3
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))  # the tests' real-part helpers: one way to start them
from common import result_path, run_main  # noqa: E402
from fleet_support import FleetProcess, Postgres  # noqa: E402
from station_support import start_mosquitto  # noqa: E402

from edgeprune.errors import EdgepruneError  # noqa: E402
from edgeprune.station.log import COLUMNS, DecisionLog  # noqa: E402
from edgeprune.station.upload import Uploader  # noqa: E402

CLASSES = ("free", "blowhole", "break", "crack", "fray", "uneven")
DECISIONS = ("OK", "DEFECT", "REVIEW", "ERROR")
DECISION_P = (0.86, 0.08, 0.05, 0.01)
MODEL_SHA = "5e" * 32


def say(message: str) -> None:
    print(f"[fleet_mqtt {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- simulated stations


@dataclass
class SimStation:
    """One station: its decision log (the list the fleet is checked against) and its Uploader."""

    station_id: str
    line: str
    db: Path
    mqtt_url: str
    written: int = 0  # rows in its log
    uploader: Uploader | None = None
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng())

    def rows(self, n: int, ts: float) -> list[tuple]:
        """n real-shaped rows (the station log's columns but id): a camera file path, a random
        image sha256 (incompressible, as real ones), the decision mix of a real line."""
        out = []
        decisions = self.rng.choice(len(DECISIONS), n, p=DECISION_P)
        for k in range(n):
            i = self.written + k + 1
            decision = DECISIONS[decisions[k]]
            cls = None if decision == "ERROR" else ("free" if decision == "OK" else CLASSES[1 + i % 5])
            out.append((ts, "folder:/srv/camera", f"/srv/camera/{self.station_id}/part-{i:08d}.jpg",
                        secrets.token_hex(32), cls, None if cls is None else float(self.rng.uniform(0.5, 1.0)),
                        decision, float(self.rng.lognormal(1.8, 0.3)), MODEL_SHA,
                        "not_needed" if decision == "OK" else "sent", None))
        return out

    def start_uploader(self, args: argparse.Namespace) -> None:
        self.uploader = Uploader(self.db, self.mqtt_url, station_id=self.station_id, line=self.line,
                                 interval_s=args.upload_interval_s, batch=args.upload_batch,
                                 ack_timeout_s=args.ack_timeout_s)
        self.uploader.start()

    def stop_uploader(self) -> int:
        left = self.uploader.stop(flush_s=0.0) if self.uploader else 0
        self.uploader = None
        return left


class Writer:
    """The stations' cameras: every station's log grows at `rate` rows/s (or stands still at 0).

    Rows are written in one executemany per station and tick (50 ms) on the log's own schema
    (DecisionLog made it), not one transaction per row as the real station does: the load
    generator has to stay light beside the fleet on two cores, and the upload path reads the
    rows the same way whichever way they were written."""

    def __init__(self, stations: list[SimStation], tick_s: float = 0.05):
        self.stations, self.tick_s = stations, tick_s
        self.rate = 0.0
        self._cons = {s.station_id: sqlite3.connect(str(s.db), isolation_level=None, check_same_thread=False)
                      for s in stations}
        for con in self._cons.values():
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=OFF")
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="cameras", daemon=True)

    def write(self, station: SimStation, n: int, ts: float) -> None:
        if n <= 0:
            return
        con = self._cons[station.station_id]
        con.execute("BEGIN")
        con.executemany(f"INSERT INTO decisions ({', '.join(COLUMNS[1:])}) VALUES ({', '.join('?' * 11)})",
                        station.rows(n, ts))
        con.execute("COMMIT")
        station.written += n

    def set_rate(self, rate: float) -> None:
        with self._lock:
            self.rate = rate
            self._t0 = time.monotonic()
            self._base = {s.station_id: s.written for s in self.stations}

    def _run(self) -> None:
        while not self._stop.wait(self.tick_s):
            with self._lock:
                if self.rate <= 0:
                    continue
                due_at = (time.monotonic() - self._t0) * self.rate
                now = time.time()
                for s in self.stations:
                    self.write(s, int(due_at) - (s.written - self._base[s.station_id]), now)

    def start(self) -> None:
        self.set_rate(0.0)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)
        for con in self._cons.values():
            con.close()  # idempotent in sqlite3


# ----------------------------------------------------------------------------- the fleet side


class FleetDb:
    """Read-only look at the fleet database from the benchmark (SQLAlchemy: SQLite or PostgreSQL)."""

    def __init__(self, url: str):
        from edgeprune.fleet.store import make_engine

        self.engine = make_engine(url)  # the fleet's own: a file path (SQLite, WAL) or postgresql://

    def stored(self) -> int:
        """Rows stored: the stations' running totals (one small table; never scans decisions)."""
        from sqlalchemy import text

        try:
            with self.engine.connect() as conn:
                return int(conn.execute(text("SELECT COALESCE(SUM(images), 0) FROM stations")).scalar())
        except Exception:  # noqa: BLE001 - the tables appear when fleet serve first starts
            return 0

    def query(self, sql: str, **params: Any) -> list[tuple]:
        from sqlalchemy import text

        with self.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(sql), params)]

    def close(self) -> None:
        self.engine.dispose()


def proc_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of a live process, from /proc (Linux)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def percentiles(values: np.ndarray) -> dict[str, float | None]:
    if len(values) == 0:
        return {"n": 0, "p50_s": None, "p99_s": None, "max_s": None}
    return {"n": int(len(values)), "p50_s": float(np.percentile(values, 50)),
            "p99_s": float(np.percentile(values, 99)), "max_s": float(values.max())}


def lag(fleet: FleetDb, ranges: dict[str, tuple[int, int]]) -> dict[str, Any]:
    """The ingest lag of the rows with ids in (first, last] per station (see the module's text)."""
    rows: list[tuple] = []
    for sid, (first, last) in ranges.items():
        rows += [(sid, *r) for r in fleet.query(
            "SELECT ts, received_ts FROM decisions WHERE station_id = :s AND id > :a AND id <= :b",
            s=sid, a=first, b=last)]
    if not rows:
        return {"rows": percentiles(np.array([])), "transport": percentiles(np.array([]))}
    ts = np.array([r[1] for r in rows])
    received = np.array([r[2] for r in rows])
    newest: dict[tuple[str, float], float] = {}
    for sid, t, rec in rows:
        key = (sid, rec)
        newest[key] = max(newest.get(key, t), t)
    transport = np.array([rec - t for (_, rec), t in newest.items()])
    return {"rows": percentiles(received - ts), "transport": percentiles(transport), "batches": len(newest)}


# ----------------------------------------------------------------------------- one database


def wait_until(predicate, timeout: float, what: str, every: float = 0.5, progress=None) -> float:
    started = time.monotonic()
    next_note = started + 5
    while not predicate():
        if time.monotonic() - started > timeout:
            raise EdgepruneError(f"timed out after {timeout:.0f} s waiting for {what}")
        if progress and time.monotonic() >= next_note:
            progress()
            next_note += 5
        time.sleep(every)
    return time.monotonic() - started


def run_backend(backend: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    work.mkdir(parents=True, exist_ok=True)
    pg = Postgres() if backend == "postgresql" else None
    db_url = pg.url if pg else str(work / "fleet.db")
    broker, port = start_mosquitto(work)
    fleet = FleetProcess(work, port, db_url)
    stations = [SimStation(f"line{i // 4 + 1}-{chr(97 + i % 4)}" if i < 104 else f"st{i}", f"line{i // 4 + 1}",
                           work / "stations" / f"{i}.db", "", rng=np.random.default_rng(i))
                for i in range(args.stations)]
    for s in stations:
        s.mqtt_url = f"mqtt://127.0.0.1:{port}/factory/{s.line}/{s.station_id}"
        DecisionLog(s.db, synchronous="OFF").close()  # the station's own schema
    writer = Writer(stations)
    out: dict[str, Any] = {"backend": backend, "database": "PostgreSQL (throwaway cluster, fsync off)" if pg
                           else "SQLite (WAL, synchronous NORMAL)"}
    fleetdb: FleetDb | None = None
    try:
        say(f"{backend}: starting fleet serve (mosquitto on 127.0.0.1:{port})")
        fleet.start()
        fleetdb = FleetDb(db_url)
        # CPU seconds of every process of the path (a restarted process adds its predecessor's)
        fleet_cpu_before, broker_cpu_before = 0.0, 0.0
        bench_cpu0 = time.process_time()
        fleet_cpu0 = proc_cpu_s(fleet.process.pid)
        total = lambda: sum(s.written for s in stations)  # noqa: E731

        def note(phase: str) -> None:
            stored = fleetdb.stored()
            say(f"{backend} {phase}: written {total()}, stored {stored}, behind {total() - stored}")

        # 1. drain: the highest sustained rate
        if args.drain_rows:
            now = time.time()
            for s in stations:
                writer.write(s, args.drain_rows, now)
            cpu = (proc_cpu_s(fleet.process.pid), time.process_time())
            for s in stations:
                s.start_uploader(args)
            seconds = wait_until(lambda: fleetdb.stored() >= total(), args.timeout_s, "the drain",
                                 every=0.1, progress=lambda: note("drain"))
            out["drain"] = {"rows": total(), "seconds": seconds, "decisions_per_s": total() / seconds,
                            "batches_sent": sum(s.uploader.batches_sent for s in stations),
                            # which side was the limit: CPU seconds per second of each process
                            # (1.0 = one core; the fleet's ingest is one worker thread)
                            "fleet_serve_cores": (proc_cpu_s(fleet.process.pid) - cpu[0]) / seconds,
                            "stations_cores": (time.process_time() - cpu[1]) / seconds}
            say(f"{backend} drain: {total()} rows in {seconds:.1f} s = {total() / seconds:.0f} decisions/s")
        else:
            for s in stations:
                s.start_uploader(args)
        writer.start()

        # 2. steady: the rate stored and the lag at RATE per station
        if args.steady_s:
            first = {s.station_id: s.written for s in stations}
            stored0, t0 = fleetdb.stored(), time.monotonic()
            writer.set_rate(args.rate)
            end = t0 + args.steady_s
            while time.monotonic() < end:
                time.sleep(min(5.0, max(0.0, end - time.monotonic())))
                note("steady")
            stored1, t1 = fleetdb.stored(), time.monotonic()
            writer.set_rate(0.0)
            last = {s.station_id: s.written for s in stations}
            wait_until(lambda: fleetdb.stored() >= total(), args.timeout_s, "the steady phase to be stored",
                       progress=lambda: note("steady, settling"))
            ranges = {sid: (first[sid], last[sid]) for sid in first}
            offered = sum(b - a for a, b in ranges.values())
            out["steady"] = {"seconds": t1 - t0, "offered_per_s": offered / (t1 - t0),
                             "stored_per_s_during": (stored1 - stored0) / (t1 - t0),
                             "backlog_at_end": offered - (stored1 - stored0), "lag": lag(fleetdb, ranges)}
            la = out["steady"]["lag"]["rows"]
            say(f"{backend} steady: offered {out['steady']['offered_per_s']:.0f}/s, stored "
                f"{out['steady']['stored_per_s_during']:.0f}/s, lag p50 {la['p50_s']} s, p99 {la['p99_s']} s")

        # 3. faults
        if args.faults_s:
            first = {s.station_id: s.written for s in stations}
            faults: list[dict[str, Any]] = []
            t0 = time.monotonic()
            writer.set_rate(args.rate)
            offline = stations[0]
            plan = [(0.10, "station offline"), (0.30, "broker restart"), (0.55, "fleet kill -9"),
                    (0.10 + args.offline_s / args.faults_s, "station back")]
            plan.sort()
            for at, what in plan:
                delay = t0 + at * args.faults_s - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                note(f"faults, {what}")
                started = time.monotonic()
                if what == "station offline":
                    left = offline.stop_uploader()
                    faults.append({"fault": what, "station_id": offline.station_id, "unconfirmed_at_stop": left})
                elif what == "station back":
                    offline.start_uploader(args)
                    faults.append({"fault": what, "station_id": offline.station_id,
                                   "backlog_rows": offline.uploader.pending()})
                elif what == "broker restart":
                    broker_cpu_before += proc_cpu_s(broker.pid)
                    broker.terminate()
                    broker.wait(10)
                    time.sleep(1.0)
                    broker, _ = start_mosquitto(work, port)
                    faults.append({"fault": what, "down_s": time.monotonic() - started})
                else:
                    fleet_cpu_before += proc_cpu_s(fleet.process.pid) - fleet_cpu0
                    fleet.kill9()
                    time.sleep(1.0)
                    fleet.start()
                    fleet_cpu0 = proc_cpu_s(fleet.process.pid)
                    faults.append({"fault": what, "down_s": time.monotonic() - started})
                faults[-1]["at_s"] = started - t0
            remaining = t0 + args.faults_s - time.monotonic()
            if remaining > 0:
                time.sleep(remaining)
            writer.set_rate(0.0)
            last = {s.station_id: s.written for s in stations}
            settle = wait_until(lambda: fleetdb.stored() >= total(), args.timeout_s,
                                "every row after the faults", progress=lambda: note("faults, settling"))
            ranges = {sid: (first[sid], last[sid]) for sid in first}
            out["faults"] = {"seconds": args.faults_s, "offline_s": args.offline_s, "events": faults,
                             "settle_s": settle, "lag": lag(fleetdb, ranges)}
        out["cpu_s"] = {"fleet_serve": fleet_cpu_before + proc_cpu_s(fleet.process.pid) - fleet_cpu0,
                        "mosquitto": broker_cpu_before + proc_cpu_s(broker.pid),
                        "stations_and_benchmark": time.process_time() - bench_cpu0}
        left = {s.station_id: s.stop_uploader() for s in stations}
        writer.stop()
        out["unconfirmed_at_end"] = sum(left.values())
        out["verify"] = verify(fleetdb, stations)
        out["rows_total"] = total()
        say(f"{backend}: verify {json.dumps({k: v for k, v in out['verify'].items() if k != 'per_station'})}")
        return out
    finally:
        for s in stations:
            if s.uploader is not None:
                s.stop_uploader()
        writer.stop()
        if fleetdb is not None:
            fleetdb.close()
        fleet.stop()
        broker.terminate()
        broker.wait(10)
        if pg:
            pg.stop()


def verify(fleet: FleetDb, stations: list[SimStation]) -> dict[str, Any]:
    """Every station's log against the fleet database: ids and sha256 row by row; the fleet's
    count, distinct count, per-station total and hourly aggregate (a double count shows there)."""
    per_station = []
    for s in stations:
        with sqlite3.connect(str(s.db)) as con:
            mine = dict(con.execute("SELECT id, sha256 FROM decisions"))
        theirs = dict(fleet.query("SELECT id, sha256 FROM decisions WHERE station_id = :s", s=s.station_id))
        n, distinct = fleet.query("SELECT COUNT(*), COUNT(DISTINCT id) FROM decisions WHERE station_id = :s",
                                  s=s.station_id)[0]
        images = fleet.query("SELECT images FROM stations WHERE station_id = :s", s=s.station_id)
        hourly = fleet.query("SELECT COALESCE(SUM(images), 0) FROM hourly WHERE station_id = :s", s=s.station_id)[0][0]
        lost = sorted(set(mine) - set(theirs))
        wrong = sorted(i for i in set(mine) & set(theirs) if mine[i] != theirs[i])
        foreign = sorted(set(theirs) - set(mine))
        per_station.append({
            "station_id": s.station_id, "station_rows": len(mine), "fleet_rows": int(n),
            "lost": len(lost), "first_lost": lost[:5], "not_the_station_row": len(wrong) + len(foreign),
            "duplicated_rows": int(n) - int(distinct),
            "total_minus_rows": (int(images[0][0]) if images else 0) - len(mine),  # >0: counted twice
            "hourly_minus_rows": int(hourly) - len(mine)})
    return {"stations": len(stations), "rows": sum(p["station_rows"] for p in per_station),
            "lost": sum(p["lost"] for p in per_station),
            "duplicated": sum(p["duplicated_rows"] + max(0, p["total_minus_rows"]) + max(0, p["hourly_minus_rows"])
                              for p in per_station),
            "mismatched": sum(p["not_the_station_row"] + (p["total_minus_rows"] < 0) + (p["hourly_minus_rows"] < 0)
                              for p in per_station),
            "per_station": per_station}


# ----------------------------------------------------------------------------- main


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    parser.add_argument("--stations", type=int, default=20, help="simulated stations (default 20)")
    parser.add_argument("--rate", type=float, default=100.0, help="decisions/s per station (default 100)")
    parser.add_argument("--drain-rows", type=int, default=10000,
                        help="backlog per station sent as fast as it goes, for the highest rate (default 10000; 0: none)")
    parser.add_argument("--steady-s", type=float, default=90.0, help="seconds at RATE without faults (default 90)")
    parser.add_argument("--faults-s", type=float, default=120.0, help="seconds at RATE with the faults (default 120; 0: none)")
    parser.add_argument("--offline-s", type=float, default=60.0, help="how long one station is offline (default 60)")
    parser.add_argument("--upload-batch", type=int, default=500, help="the station's upload_batch (default 500)")
    parser.add_argument("--upload-interval-s", type=float, default=1.0,
                        help="the station's upload_interval_s (default 1.0; the station's own default is 5)")
    parser.add_argument("--ack-timeout-s", type=float, default=10.0, help="the station's upload_ack_timeout_s (default 10)")
    parser.add_argument("--backends", default="sqlite,postgresql", help="sqlite, postgresql or both (default both)")
    parser.add_argument("--timeout-s", type=float, default=300.0, help="the most to wait for the fleet to catch up")
    parser.add_argument("--out", type=Path, help="the result file (default benchmarks/results/fleet_mqtt_<backends>_<hw>_<sw>.json)")
    parser.add_argument("--keep", type=Path, help="keep the databases and logs in this folder")
    args = parser.parse_args(argv)
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if not args.backends or any(b not in ("sqlite", "postgresql") for b in args.backends):
        raise EdgepruneError(f"--backends takes sqlite, postgresql or both, got {','.join(args.backends)!r}")
    if args.stations < 1 or args.stations > 1000:
        raise EdgepruneError(f"--stations must be 1..1000, got {args.stations}")
    for name in ("rate", "upload_interval_s", "ack_timeout_s", "timeout_s"):
        if not getattr(args, name) > 0:
            raise EdgepruneError(f"--{name.replace('_', '-')} must be above 0, got {getattr(args, name)}")
    for name in ("drain_rows", "steady_s", "faults_s", "offline_s"):
        if getattr(args, name) < 0:
            raise EdgepruneError(f"--{name.replace('_', '-')} must be 0 or more, got {getattr(args, name)}")
    if args.upload_batch < 1:
        raise EdgepruneError(f"--upload-batch must be 1 or more, got {args.upload_batch}")
    if args.faults_s and (args.offline_s <= 0 or 0.10 + args.offline_s / args.faults_s > 0.95):
        raise EdgepruneError(f"--offline-s {args.offline_s:g} must be above 0 and end within --faults-s "
                             f"{args.faults_s:g} (it starts at 10 % of it)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    work = args.keep or Path(tempfile.mkdtemp(prefix="fleet-mqtt-"))
    result: dict[str, Any] = {
        "command": "python benchmarks/fleet_mqtt.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                     if k not in ("out", "keep")},
        "cpu_count": os.cpu_count(), "load_average_at_start": list(os.getloadavg()), "backends": {}}
    target = args.stations * args.rate
    try:
        for backend in args.backends:
            result["backends"][backend] = run_backend(backend, args, work / backend)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    result["load_average_at_end"] = list(os.getloadavg())
    result["target"] = {"decisions_per_s": target, "lag_p99_s": 2.0}
    for r in result["backends"].values():
        # Met: the stations offered the whole target rate, and the fleet stored it with a lag p99
        # under 2 s (a fleet that fell behind would show it there, as a growing lag).
        steady = r.get("steady")
        r["target_met"] = None if steady is None else bool(
            steady["offered_per_s"] >= 0.95 * target and steady["lag"]["rows"]["p99_s"] is not None
            and steady["lag"]["rows"]["p99_s"] < 2.0)
    out = args.out or result_path("fleet_mqtt_" + "_".join(args.backends), "json")
    out.write_text(json.dumps(result, indent=2) + "\n")
    say(f"wrote {out}")
    bad = sum(r["verify"]["lost"] + r["verify"]["duplicated"] + r["verify"]["mismatched"]
              for r in result["backends"].values())
    return 1 if bad else 0


if __name__ == "__main__":
    run_main(main)
