"""The demo pipeline (`edgeprune demo`: MobileNetV2 on digits, Taylor 50% of parameters removed,
INT8 ONNX) for several seeds: how much do its figures move from one seed to the next? (not a test)

    python benchmarks/demo_seeds.py [--seeds 0,1,2] [--threads 1] [--epochs 10] [--finetune-epochs 6]

Each seed runs the whole demo in benchmarks/work/demo_seeds/seed-<k>/. The data split is the
same for every seed (the demo's seed-0 split: 1,293 train, 144 val, 360 test images); the seed
drives initialisation, shuffling, augmentation, pruning batches, fine-tuning and INT8
calibration. Accuracies are on the 360 test images, all three in ONNX Runtime.

Writes benchmarks/results/demo_seeds_<hardware>_<software>.json and .csv: one row per seed
(baseline / pruned / INT8 accuracy, INT8 minus pruned in points, the baseline's kept epoch, wall
time), then mean, standard deviation, min, max and spread (max - min) rows; the JSON adds the
torch, torchvision, torch-pruning, onnxruntime and onnx versions and the settings.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import statistics
import sys
import time
from importlib.metadata import version
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, WORK, run_main  # noqa: E402

COLUMNS = ("baseline_accuracy", "pruned_accuracy", "int8_accuracy", "int8_minus_pruned_points",
           "kept_epoch", "seconds")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def parse_args(argv=None) -> argparse.Namespace:
    from edgeprune.workflows.demo import DEMO_EPOCHS, DEMO_FINETUNE_EPOCHS

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    p.add_argument("--epochs", type=int, default=DEMO_EPOCHS)
    p.add_argument("--finetune-epochs", type=int, default=DEMO_FINETUNE_EPOCHS)
    p.add_argument("--threads", type=int, default=1, help="training threads (benching uses 1)")
    p.add_argument("--work-dir", type=Path, default=WORK / "demo_seeds")
    p.add_argument("--results-dir", type=Path, default=RESULTS)
    return p.parse_args(argv)


def summary(rows: list[dict]) -> list[dict]:
    out = []
    for name, fn in (("mean", statistics.fmean), ("std", statistics.stdev), ("min", min),
                     ("max", max), ("spread", lambda v: max(v) - min(v))):
        if name == "std" and len(rows) < 2:
            continue
        out.append({"seed": name, **{c: fn([r[c] for r in rows]) for c in COLUMNS}})
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    import onnxruntime as ort

    from edgeprune.hardware import device_label, software_label
    from edgeprune.workflows.demo import run_demo

    seeds = [int(s) for s in args.seeds.split(",")]
    started_all = time.perf_counter()
    rows, bench = [], {}
    for seed in seeds:
        log(f"seed {seed}: demo with {args.epochs} + {args.finetune_epochs} epochs, {args.threads} thread(s)")
        started = time.perf_counter()
        result = run_demo(args.work_dir / f"seed-{seed}", epochs=args.epochs,
                          finetune_epochs=args.finetune_epochs, seed=seed, threads=args.threads,
                          bench_threads=1, device="cpu", progress=False, log=log)
        acc = result["accuracy"]
        rows.append({
            "seed": seed,
            "baseline_accuracy": acc["baseline"],
            "pruned_accuracy": acc["pruned"],
            "int8_accuracy": acc["int8"],
            "int8_minus_pruned_points": 100.0 * (acc["int8"] - acc["pruned"]),
            "kept_epoch": result["kept_epoch"],
            "seconds": time.perf_counter() - started,
        })
        bench[seed] = result["bench"]
        log(f"seed {seed}: baseline {acc['baseline']:.4f}, pruned {acc['pruned']:.4f}, "
            f"INT8 {acc['int8']:.4f} ({rows[-1]['seconds']:.0f} s)")
    stats = summary(rows)
    label = device_label("cpu")
    software = f"{software_label()}_ort{ort.__version__}"
    stem = f"demo_seeds_{label}_{software}"
    args.results_dir.mkdir(parents=True, exist_ok=True)
    csv_path = args.results_dir / f"{stem}.csv"
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=("seed", *COLUMNS))
        writer.writeheader()
        for row in rows + stats:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    json_path = args.results_dir / f"{stem}.json"
    json_path.write_text(json.dumps({
        "what": "edgeprune demo pipeline per seed: MobileNetV2 on digits (fixed split), Taylor channel "
                "pruning to 50% of parameters, INT8 ONNX; test accuracy in ONNX Runtime",
        "device": label,
        "software": software,
        "versions": {"python": platform.python_version(),
                     **{name: version(name) for name in
                        ("torch", "torchvision", "torch-pruning", "onnxruntime", "onnx")}},
        "settings": {"seeds": seeds, "epochs": args.epochs, "finetune_epochs": args.finetune_epochs,
                     "threads": args.threads, "bench_threads": 1},
        "rows": rows,
        "summary": {s["seed"]: {c: s[c] for c in COLUMNS} for s in stats},
        "wall_seconds": time.perf_counter() - started_all,
        "bench": bench,
    }, indent=2, default=str) + "\n")
    for row in rows + stats:
        print(f"{str(row['seed']):>6}  baseline {row['baseline_accuracy']:.4f}  pruned "
              f"{row['pruned_accuracy']:.4f}  INT8 {row['int8_accuracy']:.4f}  "
              f"INT8-pruned {row['int8_minus_pruned_points']:+.2f} pts  {row['seconds']:.0f} s")
    print(f"\nwrote {csv_path} and {json_path}")
    return 0


if __name__ == "__main__":
    run_main(main)
