"""Pruning frontier on CIFAR-10 (JPEG copy), 32x32, MobileNetV2 — resumable (not a test).

    python benchmarks/frontier.py [--only baseline,l1-oneshot-50,...] [--threads 2]

A baseline is trained by edgeprune itself from the ImageNet V1 weights (../shared/weights), then
each pruning run starts from it. Every finished run leaves its checkpoint and a result.json under
benchmarks/work/frontier/<run>/ and is skipped when the script is started again, so the study can
be spread over several sessions. The summary CSV/JSON, with the issue's targets checked against
the baseline B of the same run, goes to benchmarks/results/frontier_<hardware>_<software>.*.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import WORK, imagenet_hub_cache, result_path, shared_root  # noqa: E402

from edgeprune.hardware import device_label, resolve_device, set_threads  # noqa: E402

RUN_DIR = WORK / "frontier"

BASELINE_RECIPE = dict(
    epochs=5, optimizer="sgd", lr=0.01, weight_decay=4e-5, label_smoothing=0.1, batch_size=128,
)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def load_cifar(args):
    from edgeprune.data import load_data

    return load_data(
        str(shared_root() / "datasets" / "cifar10-jpeg"), image_size=32, val_fraction=0.1,
        seed=0, max_per_class=args.max_per_class, log=log,
    )


def run_baseline(args, data, out: Path) -> dict:
    from edgeprune.train import TrainRecipe, train_baseline

    os.environ["TORCH_HOME"] = str(imagenet_hub_cache(WORK / "torch-home"))
    recipe = TrainRecipe(**{**BASELINE_RECIPE, "epochs": args.baseline_epochs})
    started = time.perf_counter()
    _, meta, result = train_baseline(
        data, arch="mobilenet_v2", recipe=recipe, weights="imagenet",
        device=resolve_device(args.device), out=out, log=log,
    )
    return {"test_accuracy": result.accuracy, "train_seconds": time.perf_counter() - started,
            "epochs": recipe.epochs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="", help="comma-separated run names (default: all)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--baseline-epochs", type=int, default=BASELINE_RECIPE["epochs"])
    parser.add_argument("--max-per-class", type=int, default=None, help="quick dry run on a subset")
    args = parser.parse_args()
    set_threads(args.threads)
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    data = load_cifar(args)
    only = {name for name in args.only.split(",") if name}

    runs = {"baseline": run_baseline}
    for name, job in runs.items():
        if only and name not in only:
            continue
        out = RUN_DIR / name
        done = out / "result.json"
        if done.is_file():
            log(f"{name}: done already ({done}), skipped")
            continue
        log(f"{name}: starting on {device_label()} with {args.threads} threads")
        record = job(args, data, out)
        record.update({"run": name, "device": device_label(), "threads": args.threads})
        done.write_text(json.dumps(record, indent=2) + "\n")
        log(f"{name}: {record}")


if __name__ == "__main__":
    main()
