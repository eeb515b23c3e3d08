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
    from edgeprune.train import TrainRecipe
    from edgeprune.workflows import train_baseline

    os.environ["TORCH_HOME"] = str(imagenet_hub_cache(WORK / "torch-home"))
    recipe = TrainRecipe(**{**BASELINE_RECIPE, "epochs": args.baseline_epochs})
    started = time.perf_counter()
    _, meta, result = train_baseline(
        data, arch="mobilenet_v2", recipe=recipe, weights="imagenet",
        device=resolve_device(args.device), out=out, log=log,
    )
    return {"test_accuracy": result.accuracy, "train_seconds": time.perf_counter() - started,
            "epochs": recipe.epochs}


FINETUNE_RECIPE = dict(
    epochs=1, optimizer="sgd", lr=0.01, weight_decay=4e-5, label_smoothing=0.1, batch_size=128,
)


def _prune_run(config_factory, schedule: str, steps: int, finetune_epochs: int = 1,
               distill: bool = False):
    """A run that prunes the baseline checkpoint with the shared prune job."""

    def run(args, data, out: Path) -> dict:
        from edgeprune.workflows.prune import PruneJob, prune_checkpoint
        from edgeprune.pruning import Schedule
        from edgeprune.train import TrainRecipe

        job = PruneJob(
            config=config_factory(),
            schedule=Schedule(schedule, steps),
            finetune=TrainRecipe(**{**FINETUNE_RECIPE, "epochs": finetune_epochs}),
            distill=distill,
        )
        outcome = prune_checkpoint(
            RUN_DIR / "baseline", data, job, out=out, device=resolve_device(args.device), log=log,
        )
        rec = outcome.record
        return {
            "test_accuracy": rec["test_accuracy"], "train_seconds": rec["seconds"],
            "epochs": finetune_epochs * len(rec["steps"]), "method": rec["method"],
            "asked": rec["asked"], "achieved": rec["achieved"], "achieved_kind": rec["achieved_kind"],
            "schedule": f"{schedule} x{steps}", "distill": distill,
        }

    return run


def run_width_matched(args, data, out: Path) -> dict:
    """A dense MobileNetV2 whose width multiplier gives the structured model's MACs, trained from
    scratch (ImageNet weights exist only at width 1.0) for the structured run's total epochs."""
    from edgeprune.metrics import count_macs
    from edgeprune.models import create_model, load_checkpoint
    from edgeprune.train import TrainRecipe
    from edgeprune.workflows import train_baseline

    structured = json.loads((RUN_DIR / "l2-channel-geometric-50" / "result.json").read_text())
    target_macs = count_macs(load_checkpoint(RUN_DIR / "l2-channel-geometric-50")[0], 32)[0]
    widths = [round(0.30 + 0.01 * i, 2) for i in range(71)]
    macs = {w: count_macs(create_model("mobilenet_v2", 10, width_mult=w), 32)[0] for w in widths}
    width = min(widths, key=lambda w: abs(macs[w] - target_macs))
    epochs = args.baseline_epochs + structured["epochs"]
    log(f"width {width}: {macs[width]:,} MACs vs structured {target_macs:,}; {epochs} epochs from scratch")
    recipe = TrainRecipe(**{**BASELINE_RECIPE, "epochs": epochs, "lr": 0.05})
    started = time.perf_counter()
    _, _, result = train_baseline(
        data, arch="mobilenet_v2", recipe=recipe, weights="none", width_mult=width,
        device=resolve_device(args.device), out=out, log=log,
    )
    return {"test_accuracy": result.accuracy, "train_seconds": time.perf_counter() - started,
            "epochs": epochs, "width_mult": width}


def runs() -> dict:
    from edgeprune.pruning import L1Unstructured, L2Channel, RandomUnstructured, TaylorChannel

    return {
        "baseline": run_baseline,
        "l1-oneshot-50": _prune_run(lambda: L1Unstructured(sparsity=0.5), "oneshot", 1),
        "l1-oneshot-90": _prune_run(lambda: L1Unstructured(sparsity=0.9), "oneshot", 1),
        "random-oneshot-90": _prune_run(lambda: RandomUnstructured(sparsity=0.9), "oneshot", 1),
        "l2-channel-geometric-50": _prune_run(
            lambda: L2Channel(target=0.5, target_kind="params"), "geometric", 3),
        "taylor-channel-geometric-50": _prune_run(
            lambda: TaylorChannel(target=0.5, target_kind="params"), "geometric", 3),
        "width-matched": run_width_matched,
        "l1-geometric-90": _prune_run(lambda: L1Unstructured(sparsity=0.9), "geometric", 10),
        # The same structured target with three times the fine-tuning (3 epochs a step).
        "taylor-channel-geometric-50-ft3": _prune_run(
            lambda: TaylorChannel(target=0.5, target_kind="params"), "geometric", 3, finetune_epochs=3),
        # A deeper cut for the deployment targets (INT8 file >= 8x smaller than dense FP32).
        "taylor-channel-geometric-70-ft3": _prune_run(
            lambda: TaylorChannel(target=0.7, target_kind="params"), "geometric", 3, finetune_epochs=3),
        # ... and with the dense model as a distillation teacher, 1 epoch a step.
        "taylor-channel-geometric-50-kd": _prune_run(
            lambda: TaylorChannel(target=0.5, target_kind="params"), "geometric", 3, distill=True),
    }


def measure_all(threads: int, timed_runs: int, rounds: int) -> list[dict]:
    """Measure every finished run side by side in this one process, round-robin: each round
    times every model once and a model's latency is the median over rounds, so neither a slow
    start (the first model measured) nor drift during the run favours one model."""
    import statistics

    from edgeprune.workflows import measure
    from edgeprune.models import load_checkpoint

    finished = [name for name in runs() if (RUN_DIR / name / "result.json").is_file()]
    models = {name: load_checkpoint(RUN_DIR / name) for name in finished}
    measured: dict[str, list[dict]] = {name: [] for name in finished}
    for round_index in range(rounds):
        for name in finished:
            model, meta = models[name]
            log(f"measuring {name} (round {round_index + 1}/{rounds})")
            measured[name].append(
                measure(model, input_size=meta.input_size, threads=threads, memory=False, runs=timed_runs)
            )

    def latency(name: str, runtime: str, batch: str) -> float:
        return statistics.median(m["latency_ms"][runtime][batch]["median"] for m in measured[name])

    rows = []
    for name in finished:
        record = json.loads((RUN_DIR / name / "result.json").read_text())
        m = measured[name][0]  # counts and sizes are the same every round
        rows.append({
            "run": name,
            "test_accuracy": record["test_accuracy"],
            "achieved": record.get("achieved"),
            "achieved_kind": record.get("achieved_kind"),
            "params": m["params"],
            "nonzero_params": m["nonzero_params"],
            "weight_sparsity": m["weight_sparsity"],
            "macs": m["macs"],
            "size_gzip_bytes": m["size_gzip_bytes"],
            "ort_b1_ms": latency(name, "onnxruntime", "batch1"),
            "ort_b64_ms": latency(name, "onnxruntime", "batch64"),
            "torch_b1_ms": latency(name, "torch", "batch1"),
            "torch_b64_ms": latency(name, "torch", "batch64"),
            "epochs": record.get("epochs"),
            "train_seconds": record.get("train_seconds"),
            "trained_on": record.get("device"),
            "measured_on": m["device"],
            "threads": threads,
            "timed_runs": timed_runs,
            "rounds": rounds,
        })
    return rows


def check_targets(rows: list[dict]) -> list[dict]:
    """The issue's targets, relative to the baseline accuracy B of this same study."""
    by = {r["run"]: r for r in rows}
    if "baseline" not in by:
        return []
    base = by["baseline"]
    b = base["test_accuracy"]
    checks = []

    def check(name, runs_needed, passed, detail):
        if all(r in by for r in runs_needed):
            checks.append({"target": name, "passed": bool(passed()), "detail": detail()})

    check("l1 50% >= B-0.5", ["l1-oneshot-50"],
          lambda: by["l1-oneshot-50"]["test_accuracy"] >= b - 0.005,
          lambda: f"{by['l1-oneshot-50']['test_accuracy']:.4f} vs B {b:.4f}")
    check("l1 geometric 90% >= B-3", ["l1-geometric-90"],
          lambda: by["l1-geometric-90"]["test_accuracy"] >= b - 0.03,
          lambda: f"{by['l1-geometric-90']['test_accuracy']:.4f} vs B {b:.4f}")
    check("random 90% far below l1 90% (>= 10 points)", ["random-oneshot-90", "l1-oneshot-90"],
          lambda: by["random-oneshot-90"]["test_accuracy"] <= by["l1-oneshot-90"]["test_accuracy"] - 0.10,
          lambda: f"random {by['random-oneshot-90']['test_accuracy']:.4f} vs l1 {by['l1-oneshot-90']['test_accuracy']:.4f}")
    for run in ("l2-channel-geometric-50", "taylor-channel-geometric-50",
                "taylor-channel-geometric-50-ft3", "taylor-channel-geometric-50-kd"):
        check(f"{run} >= B-3", [run], lambda run=run: by[run]["test_accuracy"] >= b - 0.03,
              lambda run=run: f"{by[run]['test_accuracy']:.4f} vs B {b:.4f}")
        for batch in ("b1", "b64"):
            key = f"ort_{batch}_ms"
            check(f"{run} >= 1.8x lower ORT latency ({batch})", [run],
                  lambda run=run, key=key: base[key] / by[run][key] >= 1.8,
                  lambda run=run, key=key: f"{base[key] / by[run][key]:.2f}x ({by[run][key]:.3f} vs {base[key]:.3f} ms/img)")
        check(f"{run} beats width-matched at equal MACs", [run, "width-matched"],
              lambda run=run: by[run]["test_accuracy"] > by["width-matched"]["test_accuracy"],
              lambda run=run: f"{by[run]['test_accuracy']:.4f} ({by[run]['macs']:,} MACs) vs "
              f"{by['width-matched']['test_accuracy']:.4f} ({by['width-matched']['macs']:,} MACs)")
    return checks


def write_summary(rows: list[dict], checks: list[dict]) -> None:
    import pandas as pd

    base = next((r for r in rows if r["run"] == "baseline"), None)
    table = pd.DataFrame(rows)
    if base is not None:
        table["ort_b1_speedup"] = base["ort_b1_ms"] / table["ort_b1_ms"]
        table["ort_b64_speedup"] = base["ort_b64_ms"] / table["ort_b64_ms"]
        table["gzip_ratio"] = table["size_gzip_bytes"] / base["size_gzip_bytes"]
        table["accuracy_drop_points"] = 100 * (base["test_accuracy"] - table["test_accuracy"])
    from edgeprune.workflows import software_versions

    csv_path = result_path("frontier", "csv")
    table.to_csv(csv_path, index=False, float_format="%.6g")
    result_path("frontier", "json").write_text(
        json.dumps({"runs": rows, "targets": checks, "versions": software_versions()}, indent=2,
                   default=str) + "\n")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    for c in checks:
        print(f"{'PASS' if c['passed'] else 'MISS'}  {c['target']}: {c['detail']}")
    log(f"wrote {csv_path}")


def main() -> None:
    global RUN_DIR
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="", help="comma-separated run names (default: all)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--measure-threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3, help="round-robin timing rounds")
    parser.add_argument("--timed-runs", type=int, default=200,
                        help="timed runs per batch size (batch 1 takes ~0.2 ms: many runs tame the noise)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--baseline-epochs", type=int, default=BASELINE_RECIPE["epochs"])
    parser.add_argument("--max-per-class", type=int, default=None, help="quick dry run on a subset")
    parser.add_argument("--work-dir", type=Path, default=RUN_DIR, help="where runs are kept (resumable)")
    parser.add_argument("--summary-only", action="store_true", help="measure finished runs, train nothing")
    args = parser.parse_args()
    RUN_DIR = args.work_dir
    set_threads(args.threads)
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    only = {name for name in args.only.split(",") if name}
    if not args.summary_only:
        data = load_cifar(args)
        for name, job in runs().items():
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
    rows = measure_all(args.measure_threads, args.timed_runs, args.rounds)
    write_summary(rows, check_targets(rows))


if __name__ == "__main__":
    main()
