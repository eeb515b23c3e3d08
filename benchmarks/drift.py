"""Drift detection at the station, measured: detection delay per shift and severity, false alarms
per 10,000 clean images, and what the drift watch costs per image.

A MobileNetV2 (ImageNet start) is trained briefly on magnetic-tile at 48 px, as two classes (free
= OK, every defect folder = defect, at most 400 images each: balanced, so the model cannot score
by always answering "free") and exported with
`export_model` (which records the drift reference on the validation split, through the ONNX file
itself). The test split is the replay: every image's statistics and the ONNX model's top
probability are computed once per shift and severity (`edgeprune.metrics.robustness.SHIFTS`,
the shifts of `evaluate --shifts`, applied to the uint8 images at the model's input size), then
streams drawn from them go through the station's own `DriftMonitor` (edgeprune.runtime.drift):

- false alarms: `--clean-images` clean test images drawn with replacement, in random order; each
  alarm is counted and acknowledged (the window starts afresh), as a person would;
- detection delay: a full window of clean images, then shifted images (drawn with replacement)
  until the alarm; the delay is the number of shifted images seen when it is raised (at most
  `--max-delay`: beyond that, "not detected"), over `--runs` streams per shift and severity.

    python benchmarks/drift.py                       # ~1 h on 2 cores shared with a training run
    python benchmarks/drift.py --epochs 1 --runs 5 --clean-images 2000   # a quick look

Output: benchmarks/results/drift_<hardware>_<software>.json and .csv (one row per window,
threshold, shift and severity).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import imagenet_hub_cache, result_path, run_main, shared_root  # noqa: E402


def two_class_tree(source: Path, tree: Path) -> Path:
    """magnetic-tile as free/ and defect/ (links to the shared files, never copies)."""
    for cls in sorted(p.name for p in source.iterdir() if p.is_dir()):
        dest = tree / ("free" if cls == "free" else "defect")
        dest.mkdir(parents=True, exist_ok=True)
        for file in sorted((source / cls).iterdir()):
            (dest / f"{cls}_{file.name}").symlink_to(file)
    return tree


def pool_values(classifier, images: np.ndarray, labels: np.ndarray) -> dict:
    """Per image: the three statistics and the top probability; and the model's accuracy."""
    from edgeprune.runtime import softmax
    from edgeprune.runtime.drift import batch_statistics

    probs = softmax(classifier.predict_uint8(images))
    return {"stats": batch_statistics(images), "top": probs.max(axis=1),
            "accuracy": float((probs.argmax(axis=1) == labels).mean())}


def false_alarms(reference, pool: dict, window: int, threshold: float, images: int, seed: int) -> int:
    from edgeprune.runtime.drift import DriftMonitor

    monitor = DriftMonitor(reference, window, threshold)
    order = np.random.default_rng(seed).integers(0, len(pool["top"]), images)
    alarms = 0
    for i in order:
        if monitor.observe(pool["stats"][i], pool["top"][i]).raised:
            alarms += 1
            monitor.acknowledge()
    return alarms


def delays(reference, clean: dict, shifted: dict, window: int, threshold: float, runs: int,
           max_delay: int, seed: int) -> list[int | None]:
    from edgeprune.runtime.drift import DriftMonitor

    out: list[int | None] = []
    rng = np.random.default_rng(seed)
    for _ in range(runs):
        monitor = DriftMonitor(reference, window, threshold)
        while monitor.filled < window or monitor.alarm:  # a full, quiet window of clean images
            if monitor.alarm:
                monitor.acknowledge()
            i = rng.integers(len(clean["top"]))
            monitor.observe(clean["stats"][i], clean["top"][i])
        found = None
        for n, i in enumerate(rng.integers(0, len(shifted["top"]), max_delay), start=1):
            if monitor.observe(shifted["stats"][i], shifted["top"][i]).raised:
                found = n
                break
        out.append(found)
    return out


def cost_us(reference, window: int, threshold: float, side: int = 224, repeats: int = 3000) -> dict:
    """CPU and wall microseconds per image of the station's drift work at `side` px: the
    statistics (on the strided copy) and the window's update."""
    from edgeprune.runtime.drift import DriftMonitor, image_statistics

    image = np.random.default_rng(0).integers(0, 256, (3, side, side), dtype=np.uint8)
    monitor = DriftMonitor(reference, window, threshold)
    for _ in range(window):
        monitor.observe(image_statistics(image), 0.9)
    walls, cpus = [], []
    for _ in range(5):
        w, c = time.perf_counter(), time.thread_time()
        for _ in range(repeats // 5):
            monitor.observe(image_statistics(image), 0.9)
        walls.append((time.perf_counter() - w) / (repeats // 5) * 1e6)
        cpus.append((time.thread_time() - c) / (repeats // 5) * 1e6)
    return {"side_px": side, "wall_us_median": float(np.median(walls)), "cpu_us_median": float(np.median(cpus)),
            "repeats": repeats}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=shared_root() / "datasets" / "magnetic-tile")
    parser.add_argument("--image-size", type=int, default=48)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--val-fraction", type=float, default=0.2, help="the reference's share of the images")
    parser.add_argument("--windows", default="100,200,500")
    parser.add_argument("--thresholds", default="0.1,0.25,0.5", help="false alarms are counted at each")
    parser.add_argument("--delay-thresholds", default="0.25", help="delays are measured at these")
    parser.add_argument("--per-class", type=int, default=400)
    parser.add_argument("--clean-images", type=int, default=20_000, help="clean images per false-alarm count")
    parser.add_argument("--runs", type=int, default=20, help="streams per shift and severity")
    parser.add_argument("--max-delay", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch

    import edgeprune as ep
    from edgeprune.metrics.robustness import SHIFTS
    from edgeprune.runtime import Classifier
    from edgeprune.runtime.metadata import read_metadata
    from edgeprune.train import TrainRecipe

    torch.set_num_threads(1)
    started = time.time()
    result: dict = {"command": "python benchmarks/drift.py " + " ".join(sys.argv[1:]), "cpu_count": os.cpu_count(),
                    "load_average_1m_at_start": os.getloadavg()[0]}
    work = Path(tempfile.mkdtemp(prefix="drift-bench-"))
    torch.hub.set_dir(str(imagenet_hub_cache(work) / "hub"))
    tree = two_class_tree(args.data, work / "tiles")
    data = ep.load_data(ep.DataOptions(spec=str(tree), image_size=args.image_size, normalization="imagenet",
                                       val_fraction=args.val_fraction, seed=args.seed,
                                       max_per_class=args.per_class))
    torch.manual_seed(args.seed)
    model = ep.train_model(data, TrainRecipe(epochs=args.epochs, seed=args.seed), weights="imagenet", device="cpu")
    exported = ep.export_model(model, work / "model.onnx", data=data)
    reference = read_metadata(exported.path).drift_reference
    classifier = Classifier(exported.path)
    images, labels = data.test.images, data.test.labels.numpy()
    result.update(data=str(args.data.name), image_size=args.image_size, classes=data.class_names,
                  train_images=len(data.train.labels), reference_images=reference.images,
                  reference_on=reference.chosen_on, replay_images=len(labels), epochs=args.epochs,
                  test_accuracy=exported.info.get("test_accuracy"),
                  test_balanced_accuracy=model.metrics.get("test_balanced_accuracy"))
    print(f"model: test accuracy {result['test_accuracy']:.3f}; reference {reference.chosen_on}; "
          f"replay {len(labels)} test images", flush=True)

    clean = pool_values(classifier, images.numpy(), labels)
    pools = {}
    for shift in SHIFTS.values():
        for severity in range(1, len(shift.levels) + 1):
            pools[(shift.name, severity)] = pool_values(
                classifier, shift.apply(images, severity, seed=args.seed).numpy(), labels)

    windows = [int(w) for w in args.windows.split(",")]
    thresholds = [float(t) for t in args.thresholds.split(",")]
    delay_thresholds = [float(t) for t in args.delay_thresholds.split(",")]
    rows, settings = [], []
    for window in windows:
        for threshold in thresholds:
            fa = false_alarms(reference, clean, window, threshold, args.clean_images, args.seed)
            per_10k = fa / args.clean_images * 10_000
            settings.append({"window": window, "threshold": threshold, "clean_images": args.clean_images,
                             "false_alarms": fa, "false_alarms_per_10k": per_10k})
            print(f"window {window} threshold {threshold}: {fa} false alarms in {args.clean_images} "
                  f"clean images ({per_10k:.2f} per 10,000)", flush=True)
            if threshold not in delay_thresholds:
                continue
            for (name, severity), pool in pools.items():
                found = delays(reference, clean, pool, window, threshold, args.runs, args.max_delay,
                               args.seed + severity)
                hits = [d for d in found if d is not None]
                rows.append({
                    "window": window, "threshold": threshold, "shift": name, "severity": severity,
                    "parameter": SHIFTS[name].levels[severity - 1], "accuracy": round(pool["accuracy"], 4),
                    "clean_accuracy": round(clean["accuracy"], 4), "runs": len(found),
                    "detected": len(hits),
                    "delay_median": float(np.median(hits)) if len(hits) == len(found) else None,
                    "delay_p90": float(np.percentile(hits, 90)) if len(hits) == len(found) else None,
                    "delay_max": max(hits) if len(hits) == len(found) else None,
                    "max_delay": args.max_delay, "false_alarms_per_10k": per_10k})
    result["settings"] = settings
    result["rows"] = rows
    result["cost_224px"] = cost_us(reference, 200, 0.25)
    result["cost_48px"] = cost_us(reference, 200, 0.25, side=48)
    result["elapsed_s"] = time.time() - started
    result["load_average_1m_at_end"] = os.getloadavg()[0]
    out = result_path("drift", "json")
    out.write_text(json.dumps(result, indent=2) + "\n")
    with open(out.with_suffix(".csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"cost per image: {result['cost_224px']}; wrote {out} and {out.with_suffix('.csv')}")
    return 0


if __name__ == "__main__":
    run_main(main)
