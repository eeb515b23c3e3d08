"""Station load benchmark: how many images per second can the inspection station sustain, and
does it lose or double a PLC signal when the PLC or the station itself fails?

With a pruned INT8 model of the magnetic-tile data (free vs defect, OK = `free`; built once and
cached under benchmarks/work/station/, or given with --model) and a real pymodbus server on loopback as the PLC:

1. Load: `edgeprune station run` (a subprocess, as deployed) replays the data at increasing rates
   for --duration seconds each. A rate is sustained when the station kept the pace (>= 98% of
   the rate) with p99 latency from image arrival (its scheduled time) to the PLC's
   acknowledgement under 50 ms. Reported: the highest sustained rate.
2. Faults: (a) the Modbus server is stopped for 10 s mid-run and restarted; (b) the station is
   killed with SIGKILL mid-run and restarted. From the database and the PLC's own record of
   every write it received: images, decisions, DEFECTs, delivered signals, lost (must be 0),
   duplicated (must be 0), and register 0 against the DEFECT count.

    python benchmarks/station_load.py [--model M.onnx] [--rates 50,100,200,300,400]
                                      [--duration 60] [--fault-rate 100] [--threads 1]

Writes benchmarks/results/station_load_<device>_<software>.csv (one row per rate, resumable: a
rate already in the file is not run again) and .json (rows, fault runs, model, targets).
Targets on 2 cores: >= 200 images/s at p99 < 50 ms, 0 lost, 0 duplicated.

3. Isolation (`--isolation`): is the line protected from everything else? Each rate of
   --isolation-rates (default 100,200,400) is run --runs times (default 3) in each condition:
   `idle` (the dashboard served, nobody asking), `dashboard` (--clients concurrent clients, default
   200, polling /api/status and thumbnails), `gate` (model uploads gated one after the other during
   the run), and `dashboard-offcore` (the same clients, held to the cores the dashboard process
   may use, at the lowest priority: on a line the clients are other machines, and this leaves the
   line's core free of them, as it would be; asked for by name in --conditions). Recorded per run: decision and PLC-acknowledgement p50/p99, the station's per-stage
   p99 (wait, read, decode, infer, log, plc), HTTP answers, uploads gated, the load average before
   and after, CPU steal. Reported per rate and condition: the median and the worst run.
   Target: p99 under load within 2x of the idle median, and < 50 ms at 200/s, on every run.

    python benchmarks/station_load.py --isolation [--model M.onnx] [--isolation-rates 100,200,400]
                                      [--runs 3] [--isolation-duration 20] [--clients 200]

Writes benchmarks/results/station_isolation_<device>_<software>.csv (one row per run, resumable)
and .json (the rows, the summary per rate and condition, the machine's load, the command).
"""

from __future__ import annotations

import argparse
import collections
import csv
import json
import math
import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))  # the tests' real pymodbus PLC (station_support)

from common import PROJECT_ROOT, WORK, result_path, run_main, shared_root  # noqa: E402

TARGET_RATE, TARGET_P99_MS, KEPT_PACE = 200.0, 50.0, 0.98
STATION_WORK = WORK / "station"
COLUMNS = ["rate", "duration_s", "images", "achieved_per_s", "sustained", "decision_p50_ms",
           "decision_p99_ms", "plc_p50_ms", "plc_p99_ms", "defects", "register0", "pending_left",
           "lost", "duplicated", "threads", "model", "device", "load_avg_1min"]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=None, help="an INT8 .onnx of magnetic-tile (default: build one)")
    p.add_argument("--data", type=Path, default=None, help="magnetic-tile folder (default: shared)")
    p.add_argument("--rates", default="50,100,200,300,400", help="images/s, comma-separated")
    p.add_argument("--duration", type=float, default=60.0, help="seconds per rate")
    p.add_argument("--fault-rate", type=float, default=100.0, help="images/s during the fault runs")
    p.add_argument("--fault-duration", type=float, default=40.0, help="seconds per fault run")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--image-size", type=int, default=48, help="input size of the model built")
    p.add_argument("--skip-faults", action="store_true")
    p.add_argument("--isolation", action="store_true", help="run the isolation benchmark (3.) only")
    p.add_argument("--isolation-rates", default="100,200,400")
    p.add_argument("--conditions", default="idle,dashboard,gate")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--isolation-duration", type=float, default=20.0, help="seconds per isolation run")
    p.add_argument("--clients", type=int, default=200, help="concurrent dashboard clients")
    p.add_argument("--gate-per-class", type=int, default=50, help="gate-set images per class")
    return p.parse_args(argv)


# ----------------------------------------------------------------------------- the model

def two_class_tree(data_dir: Path) -> Path:
    """magnetic-tile as free/ and defect/ (links): the station's question is OK or not, and
    the five defect folders (32..115 images each, beside 952 free ones) are too small for a
    six-class model to rise above always answering `free` (71% accuracy, chance level)."""
    tree = STATION_WORK / "tiles-free-defect"
    for cls in sorted(p.name for p in data_dir.iterdir() if p.is_dir()):
        dest = tree / ("free" if cls == "free" else "defect")
        dest.mkdir(parents=True, exist_ok=True)
        for file in sorted((data_dir / cls).iterdir()):
            link = dest / f"{cls}_{file.name}"
            if not link.is_symlink():
                link.symlink_to(file.resolve())
    return tree


def build_model(data_dir: Path, image_size: int) -> Path:
    """ImageNet MobileNetV2 fine-tuned on magnetic-tile as free vs defect (400 images a class at
    most, so both count), 50% of its parameters pruned (Taylor channels, one fine-tune epoch),
    exported as verified INT8 ONNX. Cached."""
    out = STATION_WORK / f"tiles2-{image_size}-taylor50.int8.onnx"
    if out.is_file():
        return out
    import torch

    import edgeprune as ep
    from common import imagenet_hub_cache

    torch.set_num_threads(2)
    torch.hub.set_dir(str(imagenet_hub_cache(STATION_WORK) / "hub"))
    data = ep.load_data(ep.DataOptions(spec=str(two_class_tree(data_dir)), image_size=image_size,
                                       normalization="imagenet", max_per_class=400))
    print(f"model: training on {data.name}, {len(data.train.labels)} images at {image_size}px", flush=True)
    torch.manual_seed(0)
    model = ep.train_model(data, ep.TrainRecipe(epochs=4, seed=0), weights="imagenet", device="cpu")
    print(f"model: dense test accuracy {model.metrics['test_accuracy']:.3f} "
          f"(balanced {model.metrics['test_balanced_accuracy']:.3f})", flush=True)
    pruned = ep.prune_model(model, ep.TaylorChannel(target=0.5, target_kind="params"), data,
                            finetune=ep.TrainRecipe(epochs=1), device="cpu")
    STATION_WORK.mkdir(parents=True, exist_ok=True)
    result = ep.export_model(pruned, out, format="onnx-int8", data=data, max_drop=5.0)
    print(f"model: {out.name}, INT8 test accuracy {result.info['test_accuracy']:.3f}", flush=True)
    return out


# ----------------------------------------------------------------------------- the conveyor

def replay_tree(data_dir: Path, images: int) -> Path:
    """A class-folder tree with at least `images` distinct paths: links to the real images,
    one pass per prefix (each pass is a new set of parts to the station: other paths)."""
    originals = [(c.name, p) for c in sorted(data_dir.iterdir()) if c.is_dir() for p in sorted(c.iterdir())]
    passes = math.ceil(images / len(originals))
    tree = STATION_WORK / f"replay-{passes}x"
    marker = tree / ".complete"
    if marker.is_file():
        return tree
    for k in range(passes):
        for cls, path in originals:
            link = tree / cls / f"p{k:03d}-{path.name}"
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.is_symlink():
                link.symlink_to(path.resolve())
    marker.write_text("")
    return tree


def station_command(model: Path, replay: Path, db: Path, plc_port: int, rate: float, images: int,
                    threads: int, drain: float) -> list[str]:
    return [sys.executable, "-m", "edgeprune", "station", "run", "--model", str(model),
            "--source", f"replay:{replay}", "--db", str(db), "--ok-classes", "free",
            "--plc", f"modbus://127.0.0.1:{plc_port}", "--rate", str(rate), "--max-images", str(images),
            "--threads", str(threads), "--drain-timeout", str(drain), "--json"]


def station_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(PROJECT_ROOT / "src")}


def run_station(command: list[str]) -> dict:
    done = subprocess.run(command, env=station_env(), capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"station failed ({done.returncode}): {done.stderr[-2000:]}")
    return json.loads(done.stdout)


def audit(db: Path, plc) -> dict:
    """What the database and the PLC's own write record say: nothing lost, nothing twice."""
    with sqlite3.connect(db) as con:
        rows = con.execute("SELECT id, decision, plc_status FROM decisions ORDER BY id").fetchall()
    needing = [i for i, d, _ in rows if d != "ERROR"]
    written = plc.sequence_writes()
    delivered = set(written)
    return {
        "images": len(rows), "decisions": len(needing),
        "defects": sum(d == "DEFECT" for _, d, _ in rows),
        "register0": plc.registers(1)[0],
        "delivered": len(delivered & set(needing)),
        "pending_left": sum(s == "pending" for _, _, s in rows),
        "lost": len(set(needing) - delivered),
        "duplicated": len(written) - len(delivered),
        "in_order": written == sorted(written),
    }


# ----------------------------------------------------------------------------- runs

def load_run(model: Path, tree: Path, rate: float, duration: float, threads: int, device: str) -> dict:
    from station_support import ModbusPlc

    images = int(rate * duration)
    db = STATION_WORK / f"load-{rate:g}.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    plc = ModbusPlc().start()
    try:
        result = run_station(station_command(model, tree, db, plc.port, rate, images, threads, drain=30))
        facts = audit(db, plc)
    finally:
        plc.close()
    achieved = result["decided"] / result["elapsed_s"]
    p99 = result["plc_latency_ms_p99"]
    return {
        "rate": rate, "duration_s": duration, "images": result["decided"], "achieved_per_s": round(achieved, 1),
        "sustained": bool(achieved >= KEPT_PACE * rate and p99 is not None and p99 < TARGET_P99_MS
                          and facts["lost"] == 0 and facts["duplicated"] == 0),
        "decision_p50_ms": result["latency_ms_p50"], "decision_p99_ms": result["latency_ms_p99"],
        "plc_p50_ms": result["plc_latency_ms_p50"], "plc_p99_ms": p99, "defects": facts["defects"],
        "register0": facts["register0"], "pending_left": facts["pending_left"], "lost": facts["lost"],
        "duplicated": facts["duplicated"], "threads": threads, "model": model.name, "device": device,
        # Other work on the machine shows here: the station shares the cores with it.
        "load_avg_1min": round(os.getloadavg()[0], 2),
    }


def fault_plc_outage(model: Path, tree: Path, rate: float, duration: float, threads: int) -> dict:
    from station_support import ModbusPlc

    db = STATION_WORK / "fault-plc.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    plc = ModbusPlc().start()
    try:
        process = subprocess.Popen(station_command(model, tree, db, plc.port, rate, int(rate * duration),
                                                   threads, drain=60),
                                   env=station_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(duration / 3)
        plc.stop()
        time.sleep(10)
        plc.start()
        out, err = process.communicate(timeout=duration * 3 + 120)
        if process.returncode != 0:
            raise SystemExit(f"station failed: {err[-2000:]}")
        facts = audit(db, plc)
    finally:
        plc.close()
    return {"fault": "modbus server down 10 s", "rate": rate, **facts}


def fault_sigkill(model: Path, tree: Path, rate: float, duration: float, threads: int) -> dict:
    from station_support import ModbusPlc

    db = STATION_WORK / "fault-kill.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    images = int(rate * duration)
    plc = ModbusPlc().start()
    try:
        process = subprocess.Popen(station_command(model, tree, db, plc.port, rate, images, threads, drain=30),
                                   env=station_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(duration / 2)
        process.send_signal(signal.SIGKILL)
        process.wait()
        with sqlite3.connect(db) as con:
            before = con.execute("SELECT COUNT(*) FROM decisions").fetchone()[0]
        result = run_station(station_command(model, tree, db, plc.port, rate, images - before, threads, drain=30))
        facts = audit(db, plc)
    finally:
        plc.close()
    return {"fault": "station SIGKILL and restart", "rate": rate, "decided_before_kill": before,
            "decided_after_restart": result["decided"], "replayed": images, **facts}


# ----------------------------------------------------------------------------- isolation

ISOLATION_COLUMNS = ["rate", "condition", "run", "images", "achieved_per_s", "decision_p50_ms", "decision_p99_ms",
                     "plc_p50_ms", "plc_p99_ms", "wait_p99_ms", "read_p99_ms", "decode_p99_ms", "infer_p99_ms",
                     "log_p99_ms", "plc_stage_p99_ms", "http_answers", "http_p50_ms", "uploads_gated",
                     "uploads_answers",
                     "load_avg_before", "load_avg_after", "cpu_steal_pct", "lost", "duplicated", "model", "device"]
TOKEN = "station-load-benchmark"


def gate_tree(tree: Path, per_class: int, classes: list[str]) -> Path:
    """`per_class` gate images of each of the model's classes (links into `tree`, whose folders
    are those classes: the two-class tree for the free/defect model, magnetic-tile itself for a
    six-class one)."""
    gate = STATION_WORK / f"gate-{per_class}-{'-'.join(sorted(classes))}"
    for cls in classes:
        (gate / cls).mkdir(parents=True, exist_ok=True)
        for file in sorted((tree / cls).iterdir())[-per_class:]:
            link = gate / cls / file.name
            if not link.is_symlink():
                link.symlink_to(file.resolve())
    return gate


def isolation_config(model: Path, gate: Path) -> Path:
    config = STATION_WORK / "isolation-station.toml"
    config.write_text(f'model = "{model}"\nok_classes = ["free"]\n\n[dashboard]\ntoken = "{TOKEN}"\n'
                      f'gate_set = "{gate}"\nmin_accuracy = 0.0\nmin_defect_recall = 0.0\n')
    return config


def dashboard_load(url: str, clients: int, stop, answers: list[float]) -> None:
    """`clients` concurrent clients, each polling /api/status and the latest part's thumbnail
    (asyncio: one load-generating thread, not hundreds competing for the cores)."""
    import asyncio

    import httpx

    async def client(http: httpx.AsyncClient) -> None:
        last = 1
        while not stop.is_set():
            started = time.perf_counter()
            try:
                status = (await http.get("/api/status")).json()
                last = status.get("last_id") or last
                await http.get(f"/api/images/{last}")
                answers.append((time.perf_counter() - started) * 1000.0)
            except (httpx.HTTPError, ValueError):
                await asyncio.sleep(0.05)

    async def run() -> None:
        limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
        async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as http:
            await asyncio.gather(*(client(http) for _ in range(clients)))

    asyncio.run(run())


def dashboard_load_process(url: str, clients: int, stop, answers_queue, cpus=None) -> None:
    """dashboard_load in a process of its own, its answer times sent back when it stops; with
    `cpus`, held to those cores at the lowest priority (`dashboard-offcore`)."""
    if cpus:
        os.sched_setaffinity(0, cpus)
        os.nice(19)
    answers: list[float] = []
    dashboard_load(url, clients, stop, answers)
    answers_queue.put(answers)


def distinct_copy(model: Path, out: Path, tag: str) -> Path:
    """`model` with another graph doc string: the same network and metadata, another sha256."""
    import onnx

    graph = onnx.load(str(model))
    graph.graph.doc_string = f"station_load upload {tag}"
    onnx.save(graph, str(out))
    return out


def gate_load(url: str, uploads: list[Path], stop, gated: list[int]) -> None:
    """Model uploads, one after the other, each gated on the gate set by the dashboard."""
    import httpx

    i = 0
    with httpx.Client(base_url=url, timeout=300, headers={"Authorization": f"Bearer {TOKEN}"}) as http:
        while not stop.is_set():
            path = uploads[i % len(uploads)]
            i += 1
            try:
                answer = http.post("/api/models", files={"file": (path.name, path.read_bytes())})
                gated.append(answer.status_code)
            except httpx.HTTPError:
                time.sleep(0.1)


def isolation_run(model: Path, config: Path, tree: Path, rate: float, duration: float, condition: str,
                  run: int, clients: int, uploads: list[Path], threads: int, device: str) -> dict:
    import threading

    import httpx
    from station_support import ModbusPlc, free_port

    images = int(rate * duration)
    db = STATION_WORK / f"isolation-{rate:g}-{condition}.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    port = free_port()
    plc = ModbusPlc().start()
    stop, answers, gated = threading.Event(), [], []
    load_before = os.getloadavg()[0]
    try:
        command = station_command(model, tree, db, plc.port, rate, images, threads, drain=30)
        command[5:5] = ["--config", str(config), "--http", f"127.0.0.1:{port}"]
        process = subprocess.Popen(command, env=station_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while process.poll() is None and time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/api/status", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        load = None
        if condition in ("dashboard", "dashboard-offcore"):
            # A process of its own: 200 clients in this one would hold the GIL that the PLC
            # simulator (ModbusPlc, a thread here) needs to acknowledge the station's writes, and
            # the stall would show as the station's PLC stage.
            ctx = multiprocessing.get_context("spawn")
            stop, answers_queue = ctx.Event(), ctx.Queue()
            cpus = None
            if condition == "dashboard-offcore":
                # where the station puts its dashboard process: every core it may use but the last
                # (the station inherits this process's cores)
                cpus = os.sched_getaffinity(0) - {max(os.sched_getaffinity(0))} or None
            load = ctx.Process(target=dashboard_load_process, args=(url, clients, stop, answers_queue, cpus),
                               daemon=True)
        elif condition == "gate":
            load = threading.Thread(target=gate_load, args=(url, uploads, stop, gated), daemon=True)
        if load is not None:
            load.start()
        out, err = process.communicate(timeout=duration * 5 + 300)
        stop.set()
        if condition in ("dashboard", "dashboard-offcore"):
            answers = answers_queue.get(timeout=120)
        if load is not None:
            load.join(60)
        if process.returncode != 0:
            raise SystemExit(f"station failed ({process.returncode}): {err[-2000:]}")
        result = json.loads(out)
        facts = audit(db, plc)
    finally:
        stop.set()
        plc.close()
    stages = result.get("stages", {})

    def p99(stage: str):
        return (stages.get(stage) or {}).get("p99_ms")

    import statistics

    return {
        "rate": rate, "condition": condition, "run": run, "images": result["decided"],
        "achieved_per_s": round(result["decided"] / result["elapsed_s"], 1),
        "decision_p50_ms": result["latency_ms_p50"], "decision_p99_ms": result["latency_ms_p99"],
        "plc_p50_ms": result["plc_latency_ms_p50"], "plc_p99_ms": result["plc_latency_ms_p99"],
        "wait_p99_ms": p99("wait"), "read_p99_ms": p99("read"), "decode_p99_ms": p99("decode"),
        "infer_p99_ms": p99("infer"), "log_p99_ms": p99("log"), "plc_stage_p99_ms": p99("plc"),
        "http_answers": len(answers), "http_p50_ms": round(statistics.median(answers), 1) if answers else None,
        # every answer counted by status: 200 a model gated and switched to, 422 gated and refused;
        # anything else was not a gate evaluation
        "uploads_gated": sum(code in (200, 422) for code in gated),
        "uploads_answers": json.dumps(dict(collections.Counter(gated))), "load_avg_before": round(load_before, 2),
        "load_avg_after": round(os.getloadavg()[0], 2), "cpu_steal_pct": (result.get("host") or {}).get("cpu_steal_pct"),
        "model": model.name, "device": device, "lost": facts["lost"], "duplicated": facts["duplicated"],
    }


def isolation_summary(rows: list[dict]) -> list[dict]:
    """Median and worst run per rate and condition, against the idle median of the same rate."""
    import statistics

    out = []
    for rate in sorted({float(r["rate"]) for r in rows}):
        idle = [float(r["decision_p99_ms"]) for r in rows if float(r["rate"]) == rate and r["condition"] == "idle"]
        idle_plc = [float(r["plc_p99_ms"]) for r in rows if float(r["rate"]) == rate and r["condition"] == "idle"]
        for condition in dict.fromkeys(r["condition"] for r in rows):
            runs = [r for r in rows if float(r["rate"]) == rate and r["condition"] == condition]
            if not runs:
                continue
            dec = [float(r["decision_p99_ms"]) for r in runs]
            plc = [float(r["plc_p99_ms"]) for r in runs]
            base, base_plc = (statistics.median(idle) if idle else None), (statistics.median(idle_plc) if idle_plc else None)
            within = (base is not None and base_plc is not None and max(dec) <= 2 * base and max(plc) <= 2 * base_plc)
            out.append({
                "rate": rate, "condition": condition, "runs": len(runs),
                "decision_p99_median_ms": round(statistics.median(dec), 1), "decision_p99_worst_ms": round(max(dec), 1),
                "plc_p99_median_ms": round(statistics.median(plc), 1), "plc_p99_worst_ms": round(max(plc), 1),
                "within_2x_idle": within if condition != "idle" else None,
                "under_50ms": max(dec + plc) < TARGET_P99_MS,
                "achieved_min_per_s": min(float(r["achieved_per_s"]) for r in runs),
                "load_avg_max": max(float(r["load_avg_after"]) for r in runs),
            })
    return out


def isolation_main(args, argv, model: Path, data_dir: Path, device: str) -> int:
    rates = [float(r) for r in args.isolation_rates.split(",")]
    conditions = args.conditions.split(",")
    tree = replay_tree(data_dir, int(max(rates) * args.isolation_duration) + 1)
    from edgeprune.runtime import Classifier

    probe = Classifier(model)
    classes, input_size = list(probe.class_names), probe.input_size
    source = two_class_tree(data_dir) if set(classes) == {"free", "defect"} else data_dir
    gate = gate_tree(source, args.gate_per_class, classes)
    config = isolation_config(model, gate)
    # Two files the station does not run yet, each gated in full on its own gate set: the same
    # network under other bytes (its producer string), so each upload is evaluated and, passing
    # the gate, switched to; the next one differs from it again.
    uploads = [distinct_copy(model, STATION_WORK / f"upload-{model.stem}-{tag}.onnx", tag) for tag in ("a", "b")]
    csv_path = result_path("station_isolation", "csv")
    rows, others = [], []  # this model's runs; other models' runs, kept in the file as they are
    if csv_path.is_file():
        with csv_path.open() as f:
            for r in csv.DictReader(f):
                (rows if r["model"] == model.name else others).append(r)
    done = {(float(r["rate"]), r["condition"], int(r["run"])) for r in rows}
    for run in range(1, args.runs + 1):  # runs outermost: a slow hour on the machine hits every cell alike
        for rate in rates:
            for condition in conditions:
                if (rate, condition, run) in done:
                    continue
                row = isolation_run(model, config, tree, rate, args.isolation_duration, condition, run,
                                    args.clients, uploads, args.threads, device)
                print(f"{rate:g}/s {condition} run {run}: decision p99 {row['decision_p99_ms']:.1f} ms, "
                      f"PLC p99 {row['plc_p99_ms']:.1f} ms, {row['achieved_per_s']}/s, http {row['http_answers']}, "
                      f"uploads {row['uploads_gated']}, load {row['load_avg_after']}", flush=True)
                rows.append(row)
                with csv_path.open("w", newline="") as f:
                    writer = csv.DictWriter(f, fieldnames=ISOLATION_COLUMNS, extrasaction="ignore")
                    writer.writeheader()
                    writer.writerows(others + rows)
    summary = isolation_summary(rows)
    for line in summary:
        print(json.dumps(line), flush=True)
    json_path = result_path("station_isolation", "json")
    record = json.loads(json_path.read_text()) if json_path.is_file() else {}
    models = record.get("models", {})
    models[model.name] = {
        "model": str(model), "classes": classes, "input_size": input_size,
        "rows": rows, "summary": summary,
        "command": " ".join(["python", "benchmarks/station_load.py", *(argv or sys.argv[1:])])}
    json_path.write_text(json.dumps({
        "device": device, "threads": args.threads, "duration_s": args.isolation_duration,
        "clients": args.clients, "models": models,
        "note": "batch-1 timings on a shared machine move: see load_avg_* per run",
    }, indent=2) + "\n")
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    from edgeprune.runtime.measure import cpu_device_label

    device = cpu_device_label()
    data_dir = args.data or shared_root() / "datasets" / "magnetic-tile"
    if not data_dir.is_dir():
        raise SystemExit(f"magnetic-tile not found at {data_dir}: set EDGEPRUNE_SHARED or --data")
    STATION_WORK.mkdir(parents=True, exist_ok=True)
    model = args.model or build_model(data_dir, args.image_size)
    if args.isolation:
        return isolation_main(args, argv, model, data_dir, device)
    rates = [float(r) for r in args.rates.split(",")]
    most = max(max(rates) * args.duration, args.fault_rate * args.fault_duration)
    tree = replay_tree(data_dir, int(most) + 1)
    csv_path = result_path("station_load", "csv")
    rows = []
    if csv_path.is_file():
        with csv_path.open() as f:
            rows = [r for r in csv.DictReader(f) if r["model"] == model.name]
    done = {float(r["rate"]) for r in rows}
    for rate in rates:
        if rate in done:
            print(f"rate {rate:g}/s: already in {csv_path.name}")
            continue
        row = load_run(model, tree, rate, args.duration, args.threads, device)
        print(f"rate {rate:g}/s: {row['achieved_per_s']}/s achieved, p99 to PLC ack {row['plc_p99_ms']:.1f} ms, "
              f"lost {row['lost']}, duplicated {row['duplicated']} -> {'sustained' if row['sustained'] else 'NOT sustained'}",
              flush=True)
        rows.append(row)
        with csv_path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
    sustained = [float(r["rate"]) for r in rows if str(r["sustained"]) == "True"]
    best = max(sustained) if sustained else None
    faults = []
    if not args.skip_faults:
        for run in (fault_plc_outage, fault_sigkill):
            fault = run(model, tree, args.fault_rate, args.fault_duration, args.threads)
            print(json.dumps(fault), flush=True)
            faults.append(fault)
    summary = {
        "device": device, "threads": args.threads, "model": str(model), "duration_s": args.duration,
        "rows": rows, "faults": faults, "best_sustained_per_s": best,
        "targets": {"rate_per_s": TARGET_RATE, "p99_ms": TARGET_P99_MS,
                    "rate_met": best is not None and best >= TARGET_RATE,
                    "no_loss": all(f["lost"] == 0 for f in faults) if faults else None,
                    "no_duplicates": all(f["duplicated"] == 0 for f in faults) if faults else None},
        "command": " ".join(["python", "benchmarks/station_load.py", *(argv or sys.argv[1:])]),
    }
    result_path("station_load", "json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"highest sustained rate: {best or 'none'}/s (target {TARGET_RATE:g}/s at p99 < {TARGET_P99_MS:g} ms) "
          f"on {device}, {args.threads} thread(s)")
    return 0


if __name__ == "__main__":
    run_main(main)
