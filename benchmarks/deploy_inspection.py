"""Deployment at the inspection resolution: magnetic-tile, 224x224, MobileNetV2 from ImageNet V1.

Run through `python benchmarks/deploy.py` (the default study). Three resumable stages, each
skipping what is already under benchmarks/work/deploy224/ (git-ignored):

    train   dense (ImageNet V1 weights, fine-tuned on the 6 magnetic-tile classes), then from it
            Taylor channel pruning to 50 % and 70 % of the parameters and a latency-targeted cut
            (--target-kind latency: half of the dense batch-1 latency on ONNX Runtime, measured
            on this device), each fine-tuned a few epochs
    export  every checkpoint to FP32 ONNX, INT8 ONNX (QDQ, ONNX Runtime's quantizer) and INT8
            OpenVINO IR (NNCF post-training quantization), verified like `edgeprune export`
    bench   every artifact on ONNX Runtime and OpenVINO, 1 thread, batch 1 and 8, every row in one
            round-robin pinned to the same core; accuracy on the test split on that backend, plus
            the station's OK-vs-defect figures (`free` = OK): accuracy, defect recall, balanced
            accuracy and per-class recall

Writes benchmarks/results/deploy224_<hardware>_<software>.csv/.json and prints the verdict on the
issue's targets.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, WORK, imagenet_hub_cache, shared_root  # noqa: E402

RUN_DIR = WORK / "deploy224"
OK_CLASS = "free"  # the station's OK class; every other class is a defect
BATCHES = (1, 8)

# Modest recipes: the CPU is shared, and ImageNet features transfer quickly to 6 classes.
DENSE_RECIPE = dict(epochs=4, optimizer="sgd", lr=0.01, weight_decay=4e-5, label_smoothing=0.1,
                    batch_size=32)
FINETUNE_RECIPE = dict(epochs=1, optimizer="sgd", lr=0.01, weight_decay=4e-5, label_smoothing=0.1,
                       batch_size=32)

TARGET_SPEEDUP_VS_ORT = 5.0
TARGET_SPEEDUP_SAME_BACKEND = 2.5
TARGET_SHRINK = 8.0
TARGET_POINTS = 1.0


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def load(args):
    from edgeprune.data import load_data

    return load_data(str(args.data), image_size=args.image_size, val_fraction=0.1, test_fraction=0.2,
                     seed=0, normalization="imagenet", max_per_class=args.max_per_class, log=log)


def train_dense(args, data, out: Path) -> dict:
    from edgeprune.hardware import resolve_device
    from edgeprune.train import TrainRecipe
    from edgeprune.workflows import train_baseline

    os.environ["TORCH_HOME"] = str(imagenet_hub_cache(WORK / "torch-home"))
    recipe = TrainRecipe(**{**DENSE_RECIPE, "epochs": args.dense_epochs})
    started = time.perf_counter()
    _, meta, result = train_baseline(data, arch="mobilenet_v2", recipe=recipe, weights="imagenet",
                                     device=resolve_device("cpu"), out=out, log=log)
    return {"test_accuracy": result.accuracy, "seconds": time.perf_counter() - started,
            "epochs": recipe.epochs}


def prune_run(config_factory, schedule: str, steps: int, epochs_per_step: int):
    def run(args, data, out: Path) -> dict:
        from edgeprune.pruning import Schedule
        from edgeprune.train import TrainRecipe
        from edgeprune.workflows.prune import PruneJob, prune_checkpoint

        job = PruneJob(config=config_factory(), schedule=Schedule(schedule, steps),
                       finetune=TrainRecipe(**{**FINETUNE_RECIPE, "epochs": epochs_per_step}))
        outcome = prune_checkpoint(RUN_DIR / "dense", data, job, out=out, device="cpu", log=log)
        rec = outcome.record
        keep = ("test_accuracy", "method", "asked", "achieved", "achieved_kind", "seconds",
                "params_reduction", "macs_reduction", "latency")
        return {**{k: rec.get(k) for k in keep}, "schedule": f"{schedule} x{steps}",
                "epochs": epochs_per_step * len(rec["steps"])}

    return run


def runs() -> dict:
    from edgeprune.pruning import TaylorChannel

    return {
        "dense": train_dense,
        "taylor50": prune_run(lambda: TaylorChannel(target=0.5, target_kind="params"), "geometric", 2, 1),
        "taylor70": prune_run(lambda: TaylorChannel(target=0.7, target_kind="params"), "geometric", 3, 1),
        # Half of the dense model's batch-1 latency on ONNX Runtime, this device, 1 thread.
        "latency50": prune_run(lambda: TaylorChannel(target=0.5, target_kind="latency",
                                                     latency_runtime="onnxruntime"), "geometric", 2, 1),
    }


def stage_train(args, data) -> None:
    from edgeprune.hardware import device_label

    only = {n for n in args.only.split(",") if n}
    for name, job in runs().items():
        if only and name not in only:
            continue
        out = RUN_DIR / name
        done = out / "result.json"
        if done.is_file():
            log(f"{name}: done already, skipped")
            continue
        if out.exists():  # an interrupted run: start it again
            import shutil

            shutil.rmtree(out)
        log(f"{name}: training on {device_label()} with {args.threads} torch thread(s)")
        record = job(args, data, out)
        record.update(run=name, device=device_label(), threads=args.threads)
        done.write_text(json.dumps(record, indent=2, default=str) + "\n")
        log(f"{name}: {record}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stage", default="all", help="train | export | bench | all")
    p.add_argument("--only", default="", help="comma-separated runs to train (default: all)")
    p.add_argument("--data", type=Path, default=shared_root() / "datasets" / "magnetic-tile")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--max-per-class", type=int, default=None, help="quick dry run on a subset")
    p.add_argument("--dense-epochs", type=int, default=DENSE_RECIPE["epochs"])
    p.add_argument("--threads", type=int, default=2, help="torch threads for training")
    p.add_argument("--bench-threads", type=int, default=1)
    p.add_argument("--budget", type=float, default=3.0, help="seconds per row and batch size")
    p.add_argument("--results-dir", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    from edgeprune.hardware import set_threads

    set_threads(args.threads)
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    data = load(args)
    log(f"data {data.name}: train {len(data.train.labels)}, val {len(data.val.labels)}, "
        f"test {len(data.test.labels)} images at {args.image_size}x{args.image_size}")
    if args.stage in ("train", "all"):
        stage_train(args, data)
    return 0


if __name__ == "__main__":
    from common import run_main

    run_main(main)
