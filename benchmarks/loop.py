"""The loop end to end on magnetic-tile: a new lamp -> the drift alarm -> a retrain on the parts
people reviewed -> shadow, canary, waves -> the whole fleet on the new compressed model.

    python benchmarks/loop.py                           # 3 stations at 2 images/s: ~15 min on 2 cores
    python benchmarks/loop.py prepare                   # only the data and the start model (cached)
    python benchmarks/loop.py report --run DIR          # the figures and the plot again, from a run's databases

Every part is real and on 127.0.0.1: mosquitto (the tests' start_mosquitto), one Modbus PLC per
station (pymodbus, the tests' ModbusPlc), `edgeprune station run` processes with their dashboards
(the tests' StationProcess), `edgeprune fleet serve` on SQLite (it ingests and drives the roll-out)
and `edgeprune fleet retrain --auto` (it watches the triggers, retrains and starts the roll-out:
`[retrain] rollout = true`).

The data (all 1,344 tiles as two classes, free and defect; stratified, seed 0):
- 60 % base: what the start model trains on (the study's own validation and test splits are in it);
- 20 % acceptance: the frozen set every candidate is judged on, each tile clean and under the new
  lamp, never trained on;
- 20 % stream: what the stations see, under the new lamp (`--shift`, `--severity`: the shifts of
  `evaluate --shifts`), at --size px. Each station replays its own copies: the 8 rotations and
  flips of every tile, with a little sensor noise of its own, so no two files are alike.
Reviews are simulated from the true labels: half the stream's tiles (even index) go past a
reviewer, who labels --review-rate of those decisions through the station's `POST /api/review`
(token); the other half is never reviewed, so never trained on, and every accuracy figure before
and after is measured on that half only.

The start model and every candidate come from the same study (`loop-study.toml` in the work dir:
MobileNetV2 with ImageNet weights, and a Taylor cut to half the parameters as an experiment; the
study's rule recommends one of the two, exported to INT8). The retrain adds the fleet's labelled
parts to its training split and nothing else. The first run also trains the start model (~5 min).

Reported from the databases (the stations', the fleet's): accuracy, defect recall and false
rejects on the never-reviewed stream, before (the start model) and after (the new model); the time
from the drift alarm to the whole fleet on the new model and the images decided meanwhile; each
image decided once and every PLC signal written once, in order (0 lost, 0 doubled). Writes
benchmarks/results/loop_<hardware>_<software>.json, .csv (the timeline in bins) and .png (accuracy
over time with the roll-out's stages marked).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))  # the tests' real-part helpers: one way to start them
from common import imagenet_hub_cache, result_path, run_main, shared_root  # noqa: E402
from loop_support import TOKEN  # noqa: E402  (the token StationProcess gives each dashboard)

OK_CLASS = "free"
STUDY = """name = "loop"
[data]
spec = "{base}"
image_size = {size}
[baseline]
arch = "mobilenet_v2"
weights = "imagenet"
epochs = {epochs}
optimizer = "sgd"
lr = 0.01
weight_decay = 4e-5
batch_size = 32
balance = "sampler"
[finetune]
optimizer = "sgd"
lr = 0.01
weight_decay = 4e-5
batch_size = 32
balance = "sampler"
[[experiments]]
name = "taylor50"
method = "taylor-channel"
target = 0.5
finetune_epochs = {finetune}
[measure]
memory = false
robustness = false
budget_s = 0.3
runtimes = ["onnxruntime"]
[recommend]
max_drop = {max_drop}
"""


def say(message: str) -> None:
    print(f"[loop {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def default_work() -> Path:
    from edgeprune.outputs import cache_root

    return cache_root() / "bench" / "loop"


# ----------------------------------------------------------------------------- data and start model
@dataclass(frozen=True)
class Prepared:
    base: Path  # class folders (links to the shared files)
    acceptance: Path
    streams: list[Path]  # one replay tree per station
    study: Path
    start_model: Path


def _tiles(source: Path) -> list[tuple[str, Path]]:
    """(class, file) with two classes, as the line decides: free, or defect (every defect folder;
    with 32 fray tiles in all, five defect classes at this size would leave too few to learn)."""
    return [(c.name if c.name == OK_CLASS else "defect", p) for c in sorted(source.iterdir()) if c.is_dir()
            for p in sorted(c.iterdir()) if p.suffix.lower() in (".jpg", ".jpeg", ".png")]


def _split(tiles: list[tuple[str, Path]]) -> dict[str, list[tuple[str, Path]]]:
    """Stratified 60 / 20 / 20 by class, seed 0."""
    rng = random.Random(0)
    parts: dict[str, list[tuple[str, Path]]] = {"base": [], "acceptance": [], "stream": []}
    for cls in sorted({c for c, _ in tiles}):
        files = [t for t in tiles if t[0] == cls]
        rng.shuffle(files)
        a, b = round(len(files) * 0.6), round(len(files) * 0.8)
        parts["base"] += files[:a]
        parts["acceptance"] += files[a:b]
        parts["stream"] += files[b:]
    return parts


def _load(path: Path, size: int) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as img:
        return np.asarray(img.convert("RGB").resize((size, size), Image.BILINEAR))


def _shifted(pixels: np.ndarray, shift: str, severity: int) -> np.ndarray:
    """(H, W, 3) uint8 under the shift, through the same code as `evaluate --shifts`."""
    import torch

    from edgeprune.metrics.robustness import get_shift

    batch = torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))[None]
    return get_shift(shift).apply(batch, severity)[0].numpy().transpose(1, 2, 0)


def _save(pixels: np.ndarray, path: Path) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(pixels)).save(path)


def prepare(work: Path, args: argparse.Namespace) -> Prepared:
    """The folders, the study config and the start model (each skipped when already there)."""
    source = shared_root() / "datasets" / "magnetic-tile"
    if not source.is_dir():
        raise SystemExit(f"magnetic-tile not found at {source}: set EDGEPRUNE_SHARED")
    data = work / f"data-{args.size}px-{args.shift}{args.severity}-x{args.stations}"
    parts = _split(_tiles(source))
    base, acceptance = data / "base", data / "acceptance"
    streams = [data / f"stream-s{i + 1}" for i in range(args.stations)]
    done = data / ".complete"
    if not done.exists():
        say(f"writing the data under {data}")
        for cls, path in parts["base"]:
            link = base / cls / f"{path.parent.name}_{path.name}"
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.exists():
                link.symlink_to(path)
        for index, (cls, path) in enumerate(parts["acceptance"]):
            pixels = _load(path, args.size)
            _save(pixels, acceptance / cls / f"a{index:04d}-clean.png")
            _save(_shifted(pixels, args.shift, args.severity), acceptance / cls / f"a{index:04d}-lamp.png")
        for index, (cls, path) in enumerate(parts["stream"]):
            lamp = _shifted(_load(path, args.size), args.shift, args.severity)
            for station, stream in enumerate(streams):
                rng = np.random.default_rng([station, index])
                for d in range(8):  # the dihedral group: 4 rotations, each also mirrored
                    pixels = np.rot90(lamp, d % 4)
                    pixels = pixels[:, ::-1] if d >= 4 else pixels
                    noisy = np.clip(pixels.astype(np.int16) + rng.integers(-3, 4, pixels.shape), 0, 255)
                    _save(noisy.astype(np.uint8), stream / cls / f"o{index:04d}-d{d}.png")
        done.write_text("")
    study = work / "loop-study.toml"
    study.write_text(STUDY.format(base=base, size=args.size, epochs=args.epochs, finetune=args.finetune_epochs,
                                  max_drop=args.max_drop))
    recipe = hashlib.sha256(study.read_bytes()).hexdigest()[:12]
    start_model = work / f"start-{recipe}-int8.onnx"  # a changed study trains a new start model
    if not start_model.exists():
        from edgeprune.study.candidate import study_candidate
        from edgeprune.study.config import load_config as load_study

        say("training the start model: the study on the base 60 % alone")
        run_dir = work / start_model.stem
        candidate = study_candidate(load_study(study), run_dir / "study", run_dir / "candidate-int8.onnx",
                                    resume=True, log=say)
        start_model.write_bytes(candidate.path.read_bytes())
    return Prepared(base, acceptance, streams, study, start_model)


def reviewable(path: str) -> bool:
    """The tiles a reviewer sees: even index (the file's name is o<index>-d<k>.png)."""
    return int(Path(path).name[1:5]) % 2 == 0


# ----------------------------------------------------------------------------- the run
class Reviewer(threading.Thread):
    """A person at one station: labels --review-rate of the decisions on reviewable tiles with the
    true class (the replay folder's name), through the dashboard's authenticated review API."""

    def __init__(self, url: str, db: Path, rate: float, seed: int, stop: threading.Event):
        super().__init__(daemon=True, name=f"reviewer-{url}")
        self.url, self.db, self.rate, self.stop_event = url, db, rate, stop
        self.rng = random.Random(seed)
        self.labelled = 0
        self.errors: list[str] = []

    def run(self) -> None:
        import httpx

        last = 0
        while not self.stop_event.wait(1.0):
            if not self.db.exists():
                continue
            try:
                with sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=5) as con:
                    rows = con.execute("SELECT id, path, true_class, decision FROM decisions WHERE id > ? ORDER BY id",
                                       (last,)).fetchall()
            except sqlite3.Error:
                continue
            for decision_id, path, true_class, decision in rows:
                last = decision_id
                if decision == "ERROR" or not true_class or not reviewable(path) or self.rng.random() >= self.rate:
                    continue
                try:
                    answer = httpx.post(f"{self.url}/api/review/{decision_id}", json={"label": true_class},
                                        headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
                    if answer.status_code == 200:
                        self.labelled += 1
                    else:
                        self.errors.append(f"{answer.status_code} {answer.text[:200]}")
                except httpx.HTTPError as exc:
                    self.errors.append(str(exc))


def fleet_toml(path: Path, *, db: Path, acceptance: Path, study: Path, stations, args) -> Path:
    from loop_support import write_fleet_toml

    return write_fleet_toml(
        path, db=db, acceptance=acceptance, ok_classes=OK_CLASS, stations=[s for _, s in stations],
        tables=f'[retrain]\nstudy = "{study}"\nretrain_after_drift_s = {args.drift_wait_s}\npoll_s = 2\n'
               f'int8_max_drop = {args.max_drop}\nrollout = true\n\n'
               f'[rollout]\nshadow_images = {args.shadow_images}\nmin_agreement = {args.min_agreement}\n'
               f'min_reviewed_defects = {args.min_reviewed_defects}\nmax_shadow_images = {args.max_shadow_images}\n'
               f'max_canary_images = {args.max_canary_images}\n'
               f'canary_images = {args.canary_images}\nwaves = 2\nhistory_images = {args.history_images}\n'
               f'max_defect_rate_change = {args.max_rate_change}\nmax_review_rate_change = {args.max_rate_change}\n'
               'max_latency_ratio = 3.0\npoll_s = 1.0\nstation_timeout_s = 60\n')


def run(work: Path, prepared: Prepared, args: argparse.Namespace) -> Path:
    from fleet_support import FleetProcess
    from loop_support import StationProcess
    from station_support import ModbusPlc, start_mosquitto

    from edgeprune.fleet.registry import ModelRegistry
    from edgeprune.fleet.retrain import Retrains
    from edgeprune.fleet.rollout import Rollouts
    from edgeprune.fleet.store import make_engine

    run_dir = work / time.strftime("run-%Y%m%d-%H%M%S")
    run_dir.mkdir(parents=True)
    say(f"run in {run_dir}")
    db = run_dir / "fleet.db"
    data = run_dir / "fleet-data"
    engine = make_engine(str(db))
    registry = ModelRegistry(engine, data.parent / "fleet-data-models")
    start = registry.register(prepared.start_model, acceptance=prepared.acceptance, ok_classes=[OK_CLASS])
    registry.set_state(start.sha256, "rolled-out", "the start model: trained on the base 60 %")
    say(f"start model {start.sha256[:12]}: acceptance accuracy {start.accuracy:.3f}, defect recall "
        f"{start.defect_recall:.3f} ({start.acceptance_images} images, clean and under the new lamp)")

    broker, mqtt_port = start_mosquitto(run_dir)
    plcs = [ModbusPlc().start() for _ in prepared.streams]
    stations = []
    for i, (stream, plc) in enumerate(zip(prepared.streams, plcs), start=1):
        station = StationProcess(run_dir / f"s{i}", prepared.start_model, stream, ok_classes=OK_CLASS,
                                 gate_set=prepared.acceptance, rate=args.rate, station_id=f"s{i}",
                                 plc_port=plc.port, min_accuracy=0.5,
                                 settings=f'mqtt = "mqtt://127.0.0.1:{mqtt_port}/factory/line/s{i}"\n'
                                          'mqtt_interval_s = 2.0\nupload_interval_s = 1.0\n')
        stations.append((f"s{i}", station))
    toml = fleet_toml(run_dir / "fleet.toml", db=db, acceptance=prepared.acceptance,
                      study=prepared.study, stations=stations, args=args)
    fleet = FleetProcess(run_dir, mqtt_port, str(db), extra=["--config", str(toml)])
    stop = threading.Event()
    reviewers: list[Reviewer] = []
    retrain: subprocess.Popen | None = None
    outcome: dict[str, Any] = {"state": "timeout"}
    load_samples = []
    try:
        fleet.start()
        for _, station in stations:
            station.start(timeout=240)
        t0 = time.time()
        say(f"{len(stations)} stations at {args.rate:g} images/s on the start model; fleet at {fleet.url}")
        reviewers = [Reviewer(st.url, st.db, args.review_rate, i, stop) for i, (_, st) in enumerate(stations)]
        for r in reviewers:
            r.start()
        with open(run_dir / "retrain.log", "ab") as out:
            retrain = subprocess.Popen([sys.executable, "-m", "edgeprune", "fleet", "retrain", "--config", str(toml),
                                        "--auto", "--max-runs", "1"], stdout=out, stderr=subprocess.STDOUT)
        book, rollouts = Retrains(engine), Rollouts(engine, registry)
        done_at = None
        last_print = 0.0
        while time.time() - t0 < args.timeout_s:
            time.sleep(2)
            load_samples.append(os.getloadavg()[0])
            latest = rollouts.latest(1)
            rollout = latest[0] if latest else None
            if rollout is not None and rollout.state in ("done", "rolled-back", "stopped") and done_at is None:
                done_at = time.time()
                outcome = {"state": rollout.state, "rollout_id": rollout.id, "model_sha256": rollout.model_sha256}
                say(f"roll-out {rollout.id} ended: {rollout.state} ({rollout.reason or ''})")
            if done_at is not None:
                counts = [_count(st.db, outcome["model_sha256"]) for _, st in stations]
                if rollout.state != "done" or min(counts) >= args.after_images:
                    break
            if time.time() - last_print > 20:
                last_print = time.time()
                fleet_status = fleet.fleet()
                drift = [s.get("drift_state") for s in fleet_status.get("stations", [])]
                retrains = book.latest(1)
                say(f"{time.time() - t0:5.0f} s: decided {[_count(st.db) for _, st in stations]}, drift {drift}, "
                    f"labels {sum(r.labelled for r in reviewers)}, retrain "
                    f"{retrains[0].state if retrains else '-'}, roll-out "
                    f"{f'{rollout.state} wave {rollout.wave}' if rollout else '-'}")
            if retrain.poll() is not None and retrain.returncode != 0:
                raise SystemExit(f"fleet retrain --auto exited {retrain.returncode}: see {run_dir / 'retrain.log'}")
    finally:
        stop.set()
        for _, station in stations:
            station.stop()
        if retrain is not None and retrain.poll() is None:
            retrain.send_signal(signal.SIGTERM)
            try:
                retrain.wait(60)
            except subprocess.TimeoutExpired:
                retrain.kill()
        fleet.stop()
        broker.terminate()
        (run_dir / "plc.json").write_text(json.dumps({sid: plc.sequence_writes() for (sid, _), plc in zip(stations, plcs)}))
        for plc in plcs:
            plc.close()
        engine.dispose()
    (run_dir / "run.json").write_text(json.dumps({
        "outcome": outcome, "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "start_model": str(prepared.start_model), "start_sha256": start.sha256,
        "labels_posted": sum(r.labelled for r in reviewers),
        "review_errors": [e for r in reviewers for e in r.errors][:20],
        "load_avg_1m": {"mean": float(np.mean(load_samples)) if load_samples else None,
                        "max": float(np.max(load_samples)) if load_samples else None},
        "stations": {sid: str(st.db) for sid, st in stations}}, indent=1))
    return run_dir


def _count(db: Path, model_sha256: str | None = None) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as con:
            if model_sha256 is None:
                return con.execute("SELECT COUNT(*) FROM decisions").fetchone()[0]
            return con.execute("SELECT COUNT(*) FROM decisions WHERE model_sha256 = ?", (model_sha256,)).fetchone()[0]
    except sqlite3.Error:
        return 0


# ----------------------------------------------------------------------------- the report
def _counts(rows: list[tuple]) -> dict[str, tuple[int, int]]:
    """rows: (predicted_class, decision, true_class) on never-reviewed tiles -> for each figure,
    (hits, out of): top-1 right of all, defects not passed as OK of the defects, good parts not
    passed as OK of the good ones."""
    defects = [r for r in rows if r[2] != OK_CLASS]
    goods = [r for r in rows if r[2] == OK_CLASS]
    return {"accuracy": (sum(r[0] == r[2] for r in rows), len(rows)),
            "defect_recall": (sum(r[1] != "OK" for r in defects), len(defects)),
            "false_reject_rate": (sum(r[1] != "OK" for r in goods), len(goods))}


def _figures(rows: list[tuple]) -> dict[str, Any]:
    counts = _counts(rows)
    return {"images": len(rows), **{key: hits / n if n else None for key, (hits, n) in counts.items()},
            "defects": counts["defect_recall"][1], "good": counts["false_reject_rate"][1]}


def report(run_dir: Path, out_json: Path | None = None) -> dict[str, Any]:
    from edgeprune.fleet.registry import ModelRegistry
    from edgeprune.fleet.retrain import Retrains
    from edgeprune.fleet.rollout import Rollouts
    from edgeprune.fleet.store import make_engine

    meta = json.loads((run_dir / "run.json").read_text())
    engine = make_engine(str(run_dir / "fleet.db"))
    registry = ModelRegistry(engine, run_dir / "fleet-data-models")
    rollouts, book = Rollouts(engine, registry), Retrains(engine)
    with engine.connect() as conn:
        from sqlalchemy import text

        drift = conn.execute(text("SELECT station_id, drift_ts FROM stations WHERE drift_ts IS NOT NULL")).all()
        labels = conn.execute(text("SELECT COUNT(*) FROM labels")).scalar()
    retrain = book.latest(1)[0] if book.latest(1) else None
    rollout = rollouts.latest(1)[0] if rollouts.latest(1) else None
    events = rollouts.events(rollout.id) if rollout else []
    plc = json.loads((run_dir / "plc.json").read_text())
    models = {m.sha256: m for m in registry.models()}
    parent = models.get(meta["start_sha256"])

    per_station, rows_all, integrity = {}, [], {}
    for sid, db in meta["stations"].items():
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
            rows = con.execute("SELECT id, ts, path, sha256, predicted_class, decision, true_class, model_sha256, "
                               "plc_status, latency_ms FROM decisions ORDER BY id").fetchall()
        sent = [r[0] for r in rows if r[8] == "sent"]
        writes = plc[sid]
        integrity[sid] = {"decisions": len(rows), "decided_twice": len(rows) - len({(r[2], r[3]) for r in rows}),
                          "plc_signals_sent": len(sent), "plc_writes": len(writes),
                          "plc_lost": len(set(sent) - set(writes)), "plc_doubled": len(writes) - len(set(writes)),
                          "plc_in_order": writes == sorted(writes)}
        per_station[sid] = rows
        rows_all += [(sid, *r) for r in rows]

    shadow_cost = _shadow_cost(per_station, events, retrain.ended_ts if retrain else None,
                               parent.sha256 if parent else None)
    held_out = [r for r in rows_all if r[7] and not reviewable(r[3]) and r[6] != "ERROR"]
    new_sha = rollout.model_sha256 if rollout else None
    rows_before = [(r[5], r[6], r[7]) for r in held_out if parent and r[8] == parent.sha256]
    rows_after = [(r[5], r[6], r[7]) for r in held_out if new_sha and r[8] == new_sha]
    before, after = _figures(rows_before), _figures(rows_after)
    alarm_ts = min((d.drift_ts for d in drift), default=None)
    switched = [e for e in events if e["kind"] == "switched"]
    fleet_on_new = max((e["ts"] for e in switched), default=None) if rollout and rollout.state == "done" else None
    t0 = min(r[2] for r in rows_all) if rows_all else 0.0
    marks = {"drift alarm": alarm_ts,
             "retrain started": retrain.started_ts if retrain else None,
             "candidate registered": retrain.ended_ts if retrain else None}
    stage_names = {"created": "shadow", "canary": "canary", "done": "done", "rolled-back": "rolled back",
                   "stopped": "stopped"}
    for e in events:
        if e["kind"] == "switched":
            marks.setdefault(f"switched {e['station_id']}", e["ts"])
        elif e["kind"] == "wave":
            marks.setdefault(e["detail"].split(":")[0], e["ts"])  # "wave 1", "wave 2"
        elif e["kind"] in stage_names:
            marks.setdefault(stage_names[e["kind"]], e["ts"])

    # The timeline: accuracy on the never-reviewed tiles per bin, all stations together.
    bins = []
    width = 60.0
    end = max(r[2] for r in rows_all) if rows_all else t0
    edge = t0
    while edge < end:
        inside = [r for r in held_out if edge <= r[2] < edge + width]
        figs = _figures([(r[5], r[6], r[7]) for r in inside])
        bins.append({"t_s": round(edge - t0, 1), **figs,
                     "share_new_model": (sum(r[8] == new_sha for r in inside) / len(inside)) if inside else None})
        edge += width

    result = {
        "what": "benchmarks/loop.py: drift alarm -> retrain on reviewed parts -> shadow, canary, waves",
        "command": "python benchmarks/loop.py " + " ".join(meta.get("argv", [])),
        "args": meta["args"], "load_avg_1m": meta["load_avg_1m"],
        "outcome": rollout.state if rollout else "no roll-out", "reason": rollout.reason if rollout else None,
        "start_model": _model(parent), "new_model": _model(models.get(new_sha)) if new_sha else None,
        "retrain": retrain.to_dict() if retrain else None,
        "fleet_labels": labels, "labels_posted": meta["labels_posted"],
        "never_reviewed_stream": {"before": before, "after": after, "fisher_p": _compare(rows_before, rows_after)},
        "alarm_to_fleet_on_new_model_s": (fleet_on_new - alarm_ts) if fleet_on_new and alarm_ts else None,
        "images_decided_alarm_to_fleet": (sum(alarm_ts <= r[2] <= fleet_on_new for r in rows_all)
                                          if fleet_on_new and alarm_ts else None),
        "marks_s": {k: round(v - t0, 1) for k, v in marks.items() if v is not None},
        "live_latency_while_shadowing": shadow_cost,
        "integrity": integrity,
        "lost_or_doubled": sum(i["plc_lost"] + i["plc_doubled"] + i["decided_twice"] for i in integrity.values()),
        "events": [{**e, "t_s": round(e["ts"] - t0, 1)} for e in events],
        "timeline": bins,
    }
    engine.dispose()
    out_json = out_json or result_path("loop", "json")
    out_json.write_text(json.dumps(result, indent=1, default=str))
    with open(out_json.with_suffix(".csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(bins[0]) if bins else ["t_s"])
        writer.writeheader()
        writer.writerows(bins)
    _plot(result, out_json.with_suffix(".png"))
    say(f"wrote {out_json} (.csv, .png)")
    return result


def _compare(before: list[tuple], after: list[tuple]) -> dict[str, float | None]:
    """Two-sided Fisher exact p-values, before against after. Different images (the stream over
    time), so the test is unpaired: the images before and after are draws of the same tiles."""
    from scipy.stats import fisher_exact

    out: dict[str, float | None] = {}
    counts_before, counts_after = _counts(before), _counts(after)
    for key, (a, n_a) in counts_before.items():
        b, n_b = counts_after[key]
        out[key] = float(fisher_exact([[a, n_a - a], [b, n_b - b]]).pvalue) if n_a and n_b else None
    return out


def _shadow_cost(per_station: dict[str, list[tuple]], events: list[dict[str, Any]], quiet_from: float | None,
                 running_sha: str | None) -> dict[str, Any]:
    """The running model's decision latency on each station while the candidate shadowed it, against
    as many of its decisions without a shadow: after the shadow ended and before the station
    switched (the waves' stations), else before the shadow began but after the retrain ended (the
    retrain's training competes for the same cores: before it ended is no baseline). Rows: id, ts,
    ..., model_sha256 at 7, latency_ms at 9."""
    out = {}
    for sid, rows in per_station.items():
        start = next((e["ts"] for e in events if e["kind"] == "shadow" and e["station_id"] == sid), None)
        end = next((e["ts"] for e in events if start is not None and e["ts"] > start and (
            e["kind"] in ("shadow-passed", "breach") and e["station_id"] in (sid, None))), None)
        if start is None or end is None:
            continue
        mine = [r for r in rows if r[7] == running_sha and r[9] is not None]
        during = [r[9] for r in mine if start <= r[1] <= end]
        after = [r[9] for r in mine if r[1] > end][: len(during)]
        before = [r[9] for r in mine if (quiet_from or 0) < r[1] < start][-len(during):]
        without, which = (after, "after the shadow, before the switch") if len(after) >= 20 else \
            (before, "before the shadow, after the retrain ended")
        if len(during) >= 20 and len(without) >= 20:
            out[sid] = {"images": len(during), "without_shadow": which, "without_images": len(without),
                        "without_ms": {"p50": float(np.percentile(without, 50)), "p99": float(np.percentile(without, 99))},
                        "during_ms": {"p50": float(np.percentile(during, 50)), "p99": float(np.percentile(during, 99))}}
    return out


def _model(m) -> dict[str, Any] | None:
    if m is None:
        return None
    return {"sha256": m.sha256, "accuracy": m.accuracy, "defect_recall": m.defect_recall,
            "balanced_accuracy": m.balanced_accuracy, "size_bytes": m.size_bytes,
            "latency_ms_p50": m.latency_ms_p50, "fleet_labels": m.fleet_labels, "state": m.state}


def _plot(result: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bins = [b for b in result["timeline"] if b["images"]]
    fig, ax = plt.subplots(figsize=(10, 5))
    t = [(b["t_s"] + 30) / 60 for b in bins]  # each minute's figures drawn at its middle
    ax.plot(t, [b["accuracy"] for b in bins], "o-", label="accuracy (never-reviewed tiles)")
    ax.plot(t, [b["defect_recall"] for b in bins], "s--", label="defect recall", alpha=0.7)
    ax.plot(t, [b["share_new_model"] for b in bins], ":", color="grey", label="share decided by the new model")
    ymin = 0.0
    stages = sorted((ts, name) for name, ts in result["marks_s"].items() if not name.startswith("switched"))
    for k, (ts, name) in enumerate(stages):  # staggered: stages seconds apart must not overwrite each other
        ax.axvline(ts / 60, color="tab:red", alpha=0.5, lw=1, ls="--")
        ax.text(ts / 60, 1.01 + 0.075 * (k % 3), name, fontsize=8, ha="left", va="bottom", color="tab:red")
    for name, ts in result["marks_s"].items():
        if name.startswith("switched"):
            ax.axvline(ts / 60, color="tab:green", alpha=0.4, lw=1)
            ax.text(ts / 60, ymin + 0.02, f"{name.split()[-1]} switched", color="tab:green", fontsize=8,
                    rotation=90, va="bottom")
    ax.set_ylim(ymin, 1.0)
    ax.set_xlabel("minutes since the first decision")
    ax.set_ylabel("share per minute, all stations")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=3, fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------- main
def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("stage", nargs="?", default="all", choices=("all", "prepare", "report"))
    p.add_argument("--work", type=Path, default=None, help="data, start model and runs (default: the edgeprune cache)")
    p.add_argument("--run", type=Path, default=None, help="with report: the run folder (default: the newest)")
    p.add_argument("--out", type=Path, default=None,
                   help="the result file (.json; .csv and .png beside it); default benchmarks/results/loop_<hw>_<sw>.json")
    p.add_argument("--stations", type=int, default=3)
    p.add_argument("--rate", type=float, default=2.0, help="images/s per station")
    p.add_argument("--size", type=int, default=96, help="input size of the models and the stream's images")
    p.add_argument("--shift", default="brightness", help="the new lamp: a shift of `evaluate --shifts`")
    p.add_argument("--severity", type=int, default=2)
    p.add_argument("--epochs", type=int, default=8, help="the study's dense training epochs")
    p.add_argument("--finetune-epochs", type=int, default=2)
    p.add_argument("--max-drop", type=float, default=5.0, help="the study's recommendation rule and the INT8 gate, points")
    p.add_argument("--review-rate", type=float, default=0.5, help="share of reviewable decisions people label")
    p.add_argument("--drift-wait-s", type=float, default=30.0, help="[retrain] retrain_after_drift_s")
    p.add_argument("--shadow-images", type=int, default=100)
    p.add_argument("--min-reviewed-defects", type=int, default=10, help="[rollout] min_reviewed_defects")
    p.add_argument("--max-shadow-images", type=int, default=400, help="[rollout] max_shadow_images")
    p.add_argument("--min-agreement", type=float, default=0.9)
    p.add_argument("--canary-images", type=int, default=120)
    p.add_argument("--max-canary-images", type=int, default=480, help="[rollout] max_canary_images")
    p.add_argument("--history-images", type=int, default=200)
    p.add_argument("--max-rate-change", type=float, default=0.1, help="canary: defect and review rate tolerance")
    p.add_argument("--after-images", type=int, default=150, help="decisions per station by the new model before the end")
    p.add_argument("--timeout-s", type=float, default=3600)
    args = p.parse_args(argv)
    if args.stations < 2:
        p.error("--stations must be at least 2 (a canary and a wave)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    # SIGTERM ends the run through its `finally`: the stations, the fleet and the broker stop too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    work = args.work or default_work()
    work.mkdir(parents=True, exist_ok=True)
    os.environ["TORCH_HOME"] = str(imagenet_hub_cache(work / "torch-home"))
    if args.stage == "report":
        runs = sorted(work.glob("run-*"))
        run_dir = args.run or (runs[-1] if runs else None)
        if run_dir is None or not (run_dir / "run.json").exists():
            raise SystemExit(f"no finished run under {work}")
        report(run_dir, args.out)
        return 0
    prepared = prepare(work, args)
    if args.stage == "prepare":
        return 0
    run_dir = run(work, prepared, args)
    meta = json.loads((run_dir / "run.json").read_text())
    meta["argv"] = list(argv if argv is not None else sys.argv[1:])
    (run_dir / "run.json").write_text(json.dumps(meta, indent=1))
    result = report(run_dir, args.out)
    say(f"outcome {result['outcome']}; before {result['never_reviewed_stream']['before']}; after "
        f"{result['never_reviewed_stream']['after']}; alarm -> fleet {result['alarm_to_fleet_on_new_model_s']} s; "
        f"lost or doubled {result['lost_or_doubled']}")
    return 0 if result["outcome"] == "done" and result["lost_or_doubled"] == 0 else 1


if __name__ == "__main__":
    run_main(main)
