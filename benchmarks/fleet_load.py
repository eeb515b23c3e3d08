"""The fleet under load: /api/fleet over a large decision log, and the ingest rate.

    python benchmarks/fleet_load.py                      # 10 million rows, 20 stations, SQLite
    python benchmarks/fleet_load.py --rows 1000000 --postgres postgresql://postgres@127.0.0.1:5432/postgres

Part 1 (read): a fleet database with ROWS decision rows over STATIONS stations and the last ~28
hours is filled in bulk (sqlite3 executemany straight into the fleet's own tables, the hourly
aggregates computed from the same rows with numpy: the exact values the ingest path would have
written, much faster than replaying 10 M rows through it), then GET /api/fleet is timed through
the FastAPI app (Starlette's TestClient: routing, the queries and the JSON, no socket).
Part 2 (write): batches of 500 real-shaped rows through FleetStore.ingest_decisions, the path
`fleet serve` runs for every MQTT batch, in decisions/s, into SQLite (and PostgreSQL with
--postgres). The broker path (N simulated stations through mosquitto into a `fleet serve`
process, with faults) is benchmarks/fleet_mqtt.py.

Writes benchmarks/results/fleet_load_<hardware>_<software>.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import result_path, run_main  # noqa: E402

from edgeprune.fleet.config import FleetConfig  # noqa: E402
from edgeprune.fleet.store import LATENCY_RATIO, FleetStore  # noqa: E402
from edgeprune.station.upload import Batch  # noqa: E402

CLASSES = np.array(["free", "blowhole", "break", "crack", "fray", "uneven"])
DECISIONS = np.array(["OK", "DEFECT", "REVIEW", "ERROR"])


def fill(db: Path, rows: int, stations: int, now: float, chunk: int = 200_000) -> float:
    store = FleetStore(str(db), db.parent / "fleet-data")  # creates the schema
    store.close()
    con = sqlite3.connect(str(db))
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=OFF")
    rng = np.random.default_rng(0)
    per_station = rows // stations
    span = 28 * 3600
    started = time.perf_counter()
    hourly: dict = {}
    classes: dict = {}
    latency: dict = {}
    for s in range(stations):
        sid = f"line{s // 4 + 1}-{chr(97 + s % 4)}"
        for first in range(0, per_station, chunk):
            n = min(chunk, per_station - first)
            ids = np.arange(first + 1, first + n + 1)
            ts = now - span + ids * (span / per_station)
            dec = DECISIONS[rng.choice(4, n, p=[0.86, 0.08, 0.05, 0.01])]
            cls = CLASSES[rng.integers(0, len(CLASSES), n)]
            cls = np.where(dec == "OK", "free", cls)
            lat = rng.lognormal(math.log(6.0), 0.3, n)
            prob = rng.uniform(0.5, 1.0, n)
            con.execute("BEGIN")
            con.executemany(
                "INSERT INTO decisions (station_id, id, ts, source, path, sha256, predicted_class, probability, "
                "decision, latency_ms, model_sha256, plc_status, true_class, received_ts) "
                "VALUES (?, ?, ?, 'camera:0', ?, ?, ?, ?, ?, ?, ?, 'sent', NULL, ?)",
                ((sid, int(i), float(t), f"camera:0/{i}", f"{i:064x}", None if d == "ERROR" else str(c),
                  float(p), str(d), float(la), "ab" * 32, float(t) + 1.0)
                 for i, t, d, c, p, la in zip(ids, ts, dec, cls, prob, lat)))
            con.execute("COMMIT")
            hours = (ts // 3600).astype(int)
            for h in np.unique(hours):
                m = hours == h
                key = (sid, int(h))
                acc = hourly.setdefault(key, [0, 0, 0, 0, 0])
                for j, name in enumerate(("OK", "DEFECT", "REVIEW", "ERROR")):
                    acc[j + 1] += int(np.sum(dec[m] == name))
                acc[0] += int(m.sum())
                for c, k in zip(*np.unique(cls[m & (dec != "ERROR")], return_counts=True)):
                    classes[(sid, int(h), str(c))] = classes.get((sid, int(h), str(c)), 0) + int(k)
                buckets = np.floor(np.log(np.maximum(lat[m], 0.001)) / math.log(LATENCY_RATIO)).astype(int)
                for b, k in zip(*np.unique(buckets, return_counts=True)):
                    latency[(sid, int(h), int(b))] = latency.get((sid, int(h), int(b)), 0) + int(k)
        print(f"  {sid}: {per_station} rows ({time.perf_counter() - started:.0f} s so far)", flush=True)
    con.execute("BEGIN")
    con.executemany("INSERT INTO hourly VALUES (?, ?, ?, ?, ?, ?, ?)", [(s, h, *v) for (s, h), v in hourly.items()])
    con.executemany("INSERT INTO hourly_classes VALUES (?, ?, ?, ?)", [(*k, v) for k, v in classes.items()])
    con.executemany("INSERT INTO hourly_latency VALUES (?, ?, ?, ?)", [(*k, v) for k, v in latency.items()])
    con.executemany("INSERT INTO stations (station_id, line, first_seen, last_seen, images, model_sha256) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    [(f"line{s // 4 + 1}-{chr(97 + s % 4)}", f"line{s // 4 + 1}", now - span, now, per_station,
                      "ab" * 32) for s in range(stations)])
    con.execute("COMMIT")
    con.close()
    return time.perf_counter() - started


def time_api(db: Path, repeats: int) -> dict:
    from fastapi.testclient import TestClient

    from edgeprune.fleet.web import make_app

    store = FleetStore(str(db), db.parent / "fleet-data")
    client = TestClient(make_app(store, FleetConfig(db=str(db))))
    first = time.perf_counter()
    body = client.get("/api/fleet").json()
    cold_ms = (time.perf_counter() - first) * 1000
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        assert client.get("/api/fleet").status_code == 200
        times.append((time.perf_counter() - t) * 1000)
    store.close()
    return {"cold_ms": cold_ms, "median_ms": statistics.median(times), "p90_ms": float(np.percentile(times, 90)),
            "max_ms": max(times), "repeats": repeats, "stations": len(body["stations"]),
            "images_total": sum(s["images"] for s in body["stations"])}


def time_ingest(db: str, rows: int, batch: int = 500) -> dict:
    store = FleetStore(db, Path(tempfile.mkdtemp()) / "fleet-data")
    rng = np.random.default_rng(1)
    now = time.time()
    sid = f"bench-{os.getpid()}"
    made = [{"id": i, "ts": now - rows + i, "source": "camera:0", "path": f"camera:0/{i}", "sha256": f"{i:064x}",
             "predicted_class": str(CLASSES[i % 6]), "probability": float(rng.uniform(0.5, 1)),
             "decision": str(DECISIONS[i % 3]), "latency_ms": float(rng.uniform(2, 20)), "model_sha256": "ab" * 32,
             "plc_status": "sent", "true_class": None, "station_id": sid} for i in range(1, rows + 1)]
    started = time.perf_counter()
    for k in range(0, rows, batch):
        part = made[k:k + batch]
        store.ingest_decisions(Batch(sid, "bench", "decisions", k, part[-1]["id"], tuple(part)))
    elapsed = time.perf_counter() - started
    resend = time.perf_counter()
    repeated = store.ingest_decisions(Batch(sid, "bench", "decisions", 0, made[batch - 1]["id"], tuple(made[:batch])))
    resend_s = time.perf_counter() - resend
    stored = len(store.decision_rows(sid))
    store.close()
    assert stored == rows and repeated.stored == 0
    return {"rows": rows, "batch": batch, "seconds": elapsed, "decisions_per_s": rows / elapsed,
            "resend_batch_ms": resend_s * 1000}


def wire_bytes(rows: int = 500) -> dict:
    """Bytes per decision on the wire: one upload batch (gzip JSON lines) of camera-like rows with
    random sha256s (incompressible, as real image hashes are)."""
    from edgeprune.station.upload import encode_batch

    rng = np.random.default_rng(2)
    now = time.time()
    made = tuple({"id": 1_000_000 + i, "ts": now + i * 0.01, "source": "folder:/srv/camera/line1",
                  "path": f"/srv/camera/line1/2026-05-01/part-{i:07d}.jpg", "sha256": rng.bytes(32).hex(),
                  "predicted_class": str(CLASSES[i % 6]), "probability": float(rng.uniform(0.5, 1)),
                  "decision": str(DECISIONS[i % 3]), "latency_ms": float(rng.uniform(2, 20)),
                  "model_sha256": "ab" * 32, "plc_status": "pending", "true_class": None,
                  "station_id": "line1-a"} for i in range(rows))
    payload = encode_batch(Batch("line1-a", "line1", "decisions", 999_999, made[-1]["id"], made))
    raw = sum(len(json.dumps(r)) + 1 for r in made)
    return {"rows": rows, "gzip_bytes": len(payload), "gzip_bytes_per_row": len(payload) / rows,
            "json_bytes_per_row": raw / rows}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--stations", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--ingest-rows", type=int, default=100_000)
    parser.add_argument("--postgres", help="also time the ingest into this postgresql:// database")
    parser.add_argument("--keep", type=Path, help="build the large database here and keep it")
    parser.add_argument("--wire-only", action="store_true", help="only the bytes per row on the wire")
    args = parser.parse_args()
    if args.wire_only:
        out = result_path("fleet_wire", "json")
        out.write_text(json.dumps({"command": "python benchmarks/fleet_load.py --wire-only", **wire_bytes()},
                                  indent=2) + "\n")
        print(out.read_text())
        return 0
    work = Path(tempfile.mkdtemp(prefix="fleet-load-"))
    db = args.keep or work / "fleet.db"
    result: dict = {"command": "python benchmarks/fleet_load.py " + " ".join(sys.argv[1:]),
                    "rows": args.rows, "stations": args.stations, "cpu_count": os.cpu_count(),
                    "load_average_1m_at_start": os.getloadavg()[0]}
    print(f"filling {db} with {args.rows} rows ...", flush=True)
    if not db.exists():
        result["fill_s"] = fill(db, args.rows, args.stations, time.time())
    result["db_bytes"] = db.stat().st_size + sum(p.stat().st_size for p in db.parent.glob(db.name + "-*"))
    result["bytes_per_row"] = result["db_bytes"] / args.rows
    result["api_fleet"] = time_api(db, args.repeats)
    print(f"/api/fleet: {result['api_fleet']}", flush=True)
    result["ingest_sqlite"] = time_ingest(str(work / "ingest.db"), args.ingest_rows)
    print(f"ingest SQLite: {result['ingest_sqlite']}", flush=True)
    if args.postgres:
        result["ingest_postgresql"] = time_ingest(args.postgres, args.ingest_rows)
        print(f"ingest PostgreSQL: {result['ingest_postgresql']}", flush=True)
    result["wire"] = wire_bytes()
    result["load_average_1m_at_end"] = os.getloadavg()[0]
    out = result_path("fleet_load", "json")
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    if not args.keep:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    run_main(main)
