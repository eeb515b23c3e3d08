"""Deployment at the inspection resolution: magnetic-tile, 224x224, MobileNetV2 from ImageNet V1.

Run through `python benchmarks/deploy.py` (the default study). Three resumable stages, each
skipping what is already under benchmarks/work/deploy224/ (git-ignored):

    train   dense (ImageNet V1 weights, fine-tuned 6 epochs on the 6 magnetic-tile classes), then
            from it Taylor channel pruning to 50 % and 70 % of the parameters, a latency-targeted
            cut (--target-kind latency: 60 % of the dense batch-1 latency on ONNX Runtime removed,
            measured on this device) and the 50 % cut with channel counts rounded to 8 instead of
            auto; each geometric x2 with a distilled fine-tune epoch a step, then 5 more distilled
            epochs (the -ft5 runs, the ones exported)
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
from typing import TYPE_CHECKING

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, WORK, imagenet_hub_cache, shared_root  # noqa: E402

if TYPE_CHECKING:  # annotations only: numpy is imported where it is used
    import numpy as np

RUN_DIR = WORK / "deploy224"
OK_CLASS = "free"  # the station's OK class; every other class is a defect
BATCHES = (1, 8)

# Modest recipes: the CPU is shared, and ImageNet features transfer quickly to 6 classes.
DENSE_RECIPE = dict(epochs=6, optimizer="sgd", lr=0.01, weight_decay=4e-5, label_smoothing=0.1,
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

        # distill: each step's fine-tuning follows the dense model's soft outputs too.
        job = PruneJob(config=config_factory(), schedule=Schedule(schedule, steps), distill=True,
                       finetune=TrainRecipe(**{**FINETUNE_RECIPE, "epochs": epochs_per_step}))
        outcome = prune_checkpoint(RUN_DIR / "dense", job, data, out=out, device="cpu", log=log)
        rec, result = outcome.record, outcome.result
        return {"test_accuracy": rec.test_accuracy, "method": result.method, "asked": result.asked,
                "achieved": result.achieved, "achieved_kind": result.achieved_kind, "seconds": rec.seconds,
                "params_reduction": result.params_reduction, "macs_reduction": result.macs_reduction,
                "latency": result.latency, "schedule": f"{schedule} x{steps}",
                "epochs": epochs_per_step * len(result.steps)}

    return run


def finetune_run(source: str, epochs: int):
    """More fine-tuning of a finished pruned run (a cosine schedule of `epochs` epochs, the best
    validation epoch kept), distilled from the dense model (Hinton et al. 2015; `fit`'s teacher):
    one epoch per pruning step does not recover at 224x224, and the earlier run's plain
    fine-tuning left defect recall 3.8 points (Taylor 50 %) below dense."""

    def run(args, data, out: Path) -> dict:
        import dataclasses

        from edgeprune.metrics import evaluate
        from edgeprune.models import Model, save_checkpoint
        from edgeprune.train import TrainRecipe, fit

        model = Model.load(RUN_DIR / source, "cpu")
        teacher = Model.load(RUN_DIR / "dense", "cpu").module.eval()
        meta = model.meta
        recipe = TrainRecipe(**{**FINETUNE_RECIPE, "epochs": epochs})
        started = time.perf_counter()
        data = dataclasses.replace(data, mean=tuple(meta.mean), std=tuple(meta.std))
        fit(model.module, data, recipe, device="cpu", log=log, description=f"fine-tune {source}",
            teacher=teacher)
        result = evaluate(model.module, data.test, mean=meta.mean, std=meta.std, class_names=meta.class_names)
        pruning = {**meta.pruning, "extra_finetune": {**recipe.to_dict(), "from": source, "distill": True}}
        meta = dataclasses.replace(meta, pruning=pruning,
                                   metrics={**meta.metrics, "test_accuracy": result.accuracy})
        save_checkpoint(model.module.cpu(), meta, out)
        before = json.loads((RUN_DIR / source / "result.json").read_text())
        return {**before, "test_accuracy": result.accuracy, "before_extra_finetune": before["test_accuracy"],
                "epochs": before["epochs"] + epochs, "seconds": before["seconds"] + time.perf_counter() - started}

    return run


EXTRA_EPOCHS = 5  # distilled fine-tuning after the pruning schedule

# Pruned with one (distilled) fine-tune epoch a step, then fine-tuned again: their -ft rows are the
# ones exported and benched (the first figures stay in the runs record).
SUPERSEDED = ("taylor50", "taylor70", "latency60", "taylor50-r8")


def runs() -> dict:
    """In the order they train: each pruned run followed by its extra fine-tuning."""
    from edgeprune.pruning import TaylorChannel

    ft = f"-ft{EXTRA_EPOCHS}"
    return {
        "dense": train_dense,
        "taylor50": prune_run(lambda: TaylorChannel(target=0.5, target_kind="params"), "geometric", 2, 1),
        f"taylor50{ft}": finetune_run("taylor50", EXTRA_EPOCHS),
        # 60 % of the dense model's batch-1 latency on ONNX Runtime removed (this device, 1 thread),
        # no group below a quarter of its channels (latency_min_keep's default).
        "latency60": prune_run(lambda: TaylorChannel(target=0.6, target_kind="latency",
                                                     latency_runtime="onnxruntime"), "geometric", 2, 1),
        f"latency60{ft}": finetune_run("latency60", EXTRA_EPOCHS),
        "taylor70": prune_run(lambda: TaylorChannel(target=0.7, target_kind="params"), "geometric", 2, 1),
        f"taylor70{ft}": finetune_run("taylor70", EXTRA_EPOCHS),
        # The 50 % cut with channel counts in multiples of 8 instead of auto (16 on AVX-512): the
        # issue's first finding, the shapes decide the speed, measured in the same round-robin.
        "taylor50-r8": prune_run(lambda: TaylorChannel(target=0.5, target_kind="params", round_to=8),
                                 "geometric", 2, 1),
        f"taylor50-r8{ft}": finetune_run("taylor50-r8", EXTRA_EPOCHS),
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


FORMATS = (("fp32", "onnx", ".onnx"), ("int8", "onnx-int8", ".onnx"), ("ovint8", "openvino-int8", ".xml"))


def artifacts() -> list[tuple[str, str, str, Path]]:
    """(name, run, format, path) of every artifact of every finished run, in plan order."""
    out = []
    for run in runs():
        if run not in SUPERSEDED and (RUN_DIR / run / "result.json").is_file():
            for tag, fmt, suffix in FORMATS:
                out.append((f"{run}-{tag}", run, fmt, RUN_DIR / "artifacts" / f"{run}-{tag}{suffix}"))
    return out


def stage_export(args, data) -> None:
    from edgeprune.errors import EdgepruneError
    from edgeprune.workflows.export import export_checkpoint, sidecar_path

    for name, run, fmt, path in artifacts():
        if sidecar_path(path).is_file() and path.is_file():
            log(f"export {name}: done already, skipped")
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        log(f"export {name} ({fmt})")
        try:
            export_checkpoint(RUN_DIR / run, path, fmt, data=data, threads=args.bench_threads,
                              calibration_images=args.calibration_images, max_drop=args.max_drop,
                              overwrite=True, log=log)
        except EdgepruneError as exc:  # a failed gate is a result: recorded, the study goes on
            log(f"export {name} FAILED: {exc}")


def station_figures(pred: "np.ndarray", labels: "np.ndarray", class_names: list[str]) -> dict:
    """6-class accuracy and per-class recall, and the station's OK (free) vs defect figures."""
    import numpy as np

    ok = class_names.index(OK_CLASS)
    recalls = {c: float((pred[labels == i] == i).mean()) if (labels == i).any() else None
               for i, c in enumerate(class_names)}
    defect, said_defect = labels != ok, pred != ok
    defect_recall = float(said_defect[defect].mean())
    ok_recall = float((~said_defect)[~defect].mean())
    return {
        "accuracy": float((pred == labels).mean()),
        "balanced_accuracy": float(np.mean([r for r in recalls.values() if r is not None])),
        "ok_defect_accuracy": float((said_defect == defect).mean()),
        "defect_recall": defect_recall, "ok_recall": ok_recall,
        "ok_defect_balanced_accuracy": (defect_recall + ok_recall) / 2,
        "n_images": int(len(labels)), "n_defect": int(defect.sum()), "n_ok": int((~defect).sum()),
        "per_class_recall": recalls,
    }


def stage_bench(args, data) -> list[dict]:
    """Every artifact on every backend that runs it: accuracy on the test split, then batch 1
    and 8 latency, all rows in one round-robin per batch size, pinned to the same core."""
    import numpy as np

    from edgeprune.runtime.backends import available_backends
    from edgeprune.runtime.bench import achieved_gmacs
    from edgeprune.runtime.classifier import Classifier
    from edgeprune.runtime.measure import TimingPolicy, cpu_device_label, cpu_isa, file_size, time_round_robin

    images, labels = data.test.images.numpy(), data.test.labels.numpy()
    rows, runners = [], {}
    for name, run, fmt, path in artifacts():
        if not path.is_file():
            log(f"bench {name}: no artifact (export failed or not run), skipped")
            continue
        size = file_size(path)  # an IR: .xml and .bin
        for runtime in (["openvino"] if fmt == "openvino-int8" else available_backends()):
            clf = Classifier(path, runtime=runtime, threads=args.bench_threads)
            log(f"bench {name} on {runtime}: accuracy on {len(labels)} test images")
            pred = clf.predict_uint8(images, batch_size=8).argmax(1)
            key = f"{name}@{runtime}"
            runners[key] = clf.predict
            rows.append({"artifact": name, "run": run, "format": fmt, "runtime": runtime,
                         "software": clf.backend.software, "device": cpu_device_label(),
                         "isa": cpu_isa(), "threads": args.bench_threads, "file_bytes": size,
                         "macs": clf.metadata.macs, **station_figures(pred, labels, data.class_names),
                         "key": key})
    rng = np.random.default_rng(0)
    for batch in BATCHES:
        x = rng.standard_normal((batch, 3, args.image_size, args.image_size), dtype=np.float32)
        log(f"timing {len(runners)} rows at batch {batch}, round-robin, {args.bench_threads} thread(s)")
        timings = time_round_robin({k: (lambda f=f, x=x: f(x)) for k, f in runners.items()},
                                   TimingPolicy(warmup=3, runs_per_round=3, min_rounds=3, max_rounds=40,
                                                budget_s=args.budget),
                                   per_call_items=batch, cpus=args.bench_threads)
        for row in rows:
            t = timings[row["key"]]
            row[f"b{batch}_median_ms"], row[f"b{batch}_p90_ms"] = t.median_ms, t.p90_ms
            row[f"gmacs_b{batch}"] = achieved_gmacs(row["macs"], t.median_ms)
    return rows


def verdict(rows: list[dict]) -> tuple[list[dict], dict]:
    """The issue's targets, each for (a) the best deployed artifact: the fastest batch-1 row whose
    OK-vs-defect accuracy is within 1 point of dense and whose defect recall is not more than 1
    point lower (dense itself when no pruned row qualifies), and (b) the best row on that target
    alone, whatever its accuracy."""
    dense_ort = next(r for r in rows if r["artifact"] == "dense-fp32" and r["runtime"] == "onnxruntime")
    for r in rows:
        same = next((d for d in rows if d["artifact"] == "dense-fp32" and d["runtime"] == r["runtime"]), None)
        r["speedup_b1_vs_dense_ort"] = dense_ort["b1_median_ms"] / r["b1_median_ms"]
        r["speedup_b1_vs_dense_same_backend"] = same["b1_median_ms"] / r["b1_median_ms"] if same else None
        r["shrink_vs_dense_fp32_file"] = dense_ort["file_bytes"] / r["file_bytes"]
        r["ok_defect_points_vs_dense"] = 100 * (r["ok_defect_accuracy"] - dense_ort["ok_defect_accuracy"])
        r["defect_recall_points_vs_dense"] = 100 * (r["defect_recall"] - dense_ort["defect_recall"])
    accurate = [r for r in rows if r["ok_defect_points_vs_dense"] >= -TARGET_POINTS
                and r["defect_recall_points_vs_dense"] >= -TARGET_POINTS]
    best = min(accurate or rows, key=lambda r: r["b1_median_ms"])
    pruned = [r for r in rows if not r["artifact"].startswith("dense")] or rows
    point = 100.0 / dense_ort["n_images"]
    specs = [
        (f">= {TARGET_SPEEDUP_VS_ORT:g}x lower batch-1 latency than dense FP32 on ONNX Runtime",
         "speedup_b1_vs_dense_ort", TARGET_SPEEDUP_VS_ORT, rows),
        (f">= {TARGET_SPEEDUP_SAME_BACKEND:g}x lower than dense FP32 on the same backend",
         "speedup_b1_vs_dense_same_backend", TARGET_SPEEDUP_SAME_BACKEND, rows),
        (f"file >= {TARGET_SHRINK:g}x smaller than the dense FP32 ONNX file",
         "shrink_vs_dense_fp32_file", TARGET_SHRINK, rows),
        (f"OK-vs-defect accuracy within {TARGET_POINTS:g} point of dense (1 image = {point:.2f} points; "
         "best pruned row)", "ok_defect_points_vs_dense", -TARGET_POINTS, pruned),
        (f"defect recall not lower by more than {TARGET_POINTS:g} point ({dense_ort['n_defect']} defect "
         f"images: 1 image = {100 / dense_ort['n_defect']:.2f} points; best pruned row)",
         "defect_recall_points_vs_dense", -TARGET_POINTS, pruned),
    ]
    targets = []
    for text, key, bar, pool in specs:
        top = max(pool, key=lambda r: r[key] if r[key] is not None else float("-inf"))
        targets.append({"target": text, "bar": bar,
                        "achieved": best[key], "passed": best[key] is not None and best[key] >= bar,
                        "best_row": f"{top['artifact']}@{top['runtime']}", "best_row_achieved": top[key],
                        "best_row_passed": top[key] >= bar})
    return targets, {"best": f"{best['artifact']}@{best['runtime']}", "best_within_accuracy": bool(accurate),
                     "pruned_within_accuracy": [f"{r['artifact']}@{r['runtime']}" for r in accurate
                                                if not r["artifact"].startswith("dense")]}


def write_results(args, rows: list[dict]) -> None:
    import pandas as pd

    from edgeprune.hardware import device_label, software_label
    from edgeprune.workflows import software_versions

    import openvino
    import onnxruntime

    targets, pick = verdict(rows)
    trained = {run: json.loads((RUN_DIR / run / "result.json").read_text())
               for run in runs() if (RUN_DIR / run / "result.json").is_file()}
    software = (f"{software_label()}_ort{onnxruntime.__version__}_ov{openvino.__version__.split('-')[0]}")
    stem = f"deploy224_{device_label()}_{software}"
    args.results_dir.mkdir(parents=True, exist_ok=True)
    table = pd.DataFrame([{k: v for k, v in r.items() if k not in ("key", "per_class_recall")}
                          | {f"recall_{c}": v for c, v in r["per_class_recall"].items()} for r in rows])
    csv = args.results_dir / f"{stem}.csv"
    table.to_csv(csv, index=False, float_format="%.6g")
    (args.results_dir / f"{stem}.json").write_text(json.dumps({
        "rows": rows, "targets": targets, "pick": pick, "runs": trained, "threads": args.bench_threads,
        "batches": list(BATCHES), "image_size": args.image_size, "data": str(args.data),
        "ok_class": OK_CLASS, "versions": software_versions(),
        "timing": "round-robin per batch size over every row, pinned to the same core(s), median/p90 per image",
        # The CI machine's 2 cores are shared with other jobs: absolute times carry their load,
        # ratios within one round-robin much less so.
        "load_average_1_5_15": list(os.getloadavg()),
    }, indent=2, default=str) + "\n")
    show = ["artifact", "runtime", "b1_median_ms", "b8_median_ms", "speedup_b1_vs_dense_ort",
            "speedup_b1_vs_dense_same_backend", "file_bytes", "accuracy", "ok_defect_accuracy",
            "defect_recall", "balanced_accuracy"]
    print(table[show].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(f"best deployed artifact (within the accuracy bars): {pick['best']}")
    for t in targets:
        print(f"{'PASS' if t['passed'] else 'FAIL'}  {t['target']}: {t['achieved']:.3g}; best row "
              f"{t['best_row']} {t['best_row_achieved']:.3g} ({'meets' if t['best_row_passed'] else 'misses'} it)")
    log(f"wrote {csv}")


def markdown(results_json: Path) -> str:
    """The README table and verdict from a committed results file (`--stage table --from FILE`)."""
    record = json.loads(Path(results_json).read_text())
    record["targets"], record["pick"] = verdict(record["rows"])  # the verdict's rules as of now
    Path(results_json).write_text(json.dumps(record, indent=2, default=str) + "\n")
    lines = ["| artifact | backend | b1 ms | b8 ms/img | b1 vs dense ORT | b1 vs dense same backend | "
             "file MB | 6-class acc | OK-vs-defect acc | defect recall | balanced acc |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in record["rows"]:
        same = r["speedup_b1_vs_dense_same_backend"]
        lines.append(
            f"| {r['artifact']} | {r['runtime']} | {r['b1_median_ms']:.2f} | {r['b8_median_ms']:.2f} | "
            f"{r['speedup_b1_vs_dense_ort']:.2f}x | {'–' if same is None else f'{same:.2f}x'} | "
            f"{r['file_bytes'] / 1e6:.2f} | {100 * r['accuracy']:.1f}% | {100 * r['ok_defect_accuracy']:.1f}% | "
            f"{100 * r['defect_recall']:.1f}% | {100 * r['balanced_accuracy']:.1f}% |")
    lines.append("")
    lines.append(f"Best deployed artifact (fastest batch-1 row within both accuracy bars): "
                 f"**{record['pick']['best']}**; pruned rows within them: "
                 f"{', '.join(record['pick']['pruned_within_accuracy']) or 'none'}.")
    lines.append("")
    lines.append("| target | best deployed artifact | best row on this target alone |")
    lines.append("|---|---|---|")
    for t in record["targets"]:
        lines.append(f"| {t['target']} | {t['achieved']:.3g}: **{'met' if t['passed'] else 'missed'}** | "
                     f"{t['best_row']}: {t['best_row_achieved']:.3g} ({'meets' if t['best_row_passed'] else 'misses'}) |")
    return "\n".join(lines)


def main(argv=None) -> int:
    global RUN_DIR
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stage", default="all", help="train | export | bench | all | table")
    p.add_argument("--only", default="", help="comma-separated runs to train (default: all)")
    p.add_argument("--data", type=Path, default=shared_root() / "datasets" / "magnetic-tile")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--max-per-class", type=int, default=None, help="quick dry run on a subset")
    p.add_argument("--dense-epochs", type=int, default=DENSE_RECIPE["epochs"])
    p.add_argument("--threads", type=int, default=2, help="torch threads for training")
    p.add_argument("--bench-threads", type=int, default=1)
    p.add_argument("--budget", type=float, default=3.0, help="seconds per row and batch size")
    p.add_argument("--calibration-images", type=int, default=300)
    p.add_argument("--max-drop", type=float, default=2.0, help="INT8 accuracy gate, points")
    p.add_argument("--results-dir", type=Path, default=RESULTS)
    p.add_argument("--work-dir", type=Path, default=RUN_DIR, help="runs and artifacts (resumable)")
    p.add_argument("--from", dest="from_json", type=Path, default=None,
                   help="--stage table: the results JSON to print as a README table")
    args = p.parse_args(argv)
    RUN_DIR = args.work_dir
    if args.stage == "table":
        print(markdown(args.from_json))
        return 0
    from edgeprune.hardware import set_threads

    set_threads(args.threads)
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    data = load(args)
    log(f"data {data.name}: train {len(data.train.labels)}, val {len(data.val.labels)}, "
        f"test {len(data.test.labels)} images at {args.image_size}x{args.image_size}")
    if args.stage in ("train", "all"):
        stage_train(args, data)
    if args.stage in ("export", "all"):
        stage_export(args, data)
    if args.stage in ("bench", "all"):
        write_results(args, stage_bench(args, data))
    return 0


if __name__ == "__main__":
    from common import run_main

    run_main(main)
