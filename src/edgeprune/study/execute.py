"""One experiment, start to finish, on the library's workflows: train (or load) the baseline or
prune it, save the checkpoint, export a verified FP32 ONNX file, measure. The same function
runs in the driver (local executor) and inside a Ray task (where RUN_DIR is a temporary folder
on the worker and the driver receives the files).

Figures are what was achieved: parameters and MACs counted on the saved model, accuracy on the
fold's test split, clean and under shifted images (edgeprune.metrics.robustness), latency of the
exported ONNX file on every installed backend at batch 1 and 64 (edgeprune's bench: round-robin,
pinned threads), peak memory in a fresh process.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any, Callable

from edgeprune.errors import EdgepruneError
from edgeprune.study.config import BaselineRun, ExperimentConfig, MeasureSpec

Log = Callable[[str], None]
CHECKPOINT = "checkpoint"
ONNX_FILE = "model.onnx"
MAX_VERIFY_IMAGES = 500  # ONNX vs PyTorch agreement is checked on this many test images


def load_fold_data(settings: ExperimentConfig, log: Log | None = None):
    """The fold's data, refused when its fingerprint is not the one the experiment was keyed on
    (the files changed since the study was planned: its results would describe other data)."""
    from edgeprune.data import load_data

    data = load_data(settings.data, log=log)
    if data.split is not None and data.split.fingerprint != settings.fingerprint:
        raise EdgepruneError(
            f"the data at {settings.data.spec} changed since the study was planned (fingerprint "
            f"{data.split.fingerprint[:12]}, planned {settings.fingerprint[:12]})")
    return data


def execute(experiment: dict[str, Any], run_dir: str | Path, *, baseline_checkpoint: str | Path | None = None,
            data=None, log: Log | None = None, progress: bool = False) -> dict[str, Any]:
    """Run one experiment (an `Experiment.to_dict()`) into RUN_DIR/<folder>; returns its result
    (JSON-ready). Whatever an earlier, unfinished attempt left in the folder is removed first."""
    from edgeprune.hardware import device_label, resolve_device, set_threads

    say = log or (lambda _m: None)
    from edgeprune.study.plan import Experiment

    exp = Experiment.from_dict(experiment)
    settings = exp.settings
    folder = Path(run_dir) / exp.folder
    if folder.exists():
        say(f"{exp.label}: removing the unfinished attempt in {folder}")
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    measure = settings.measure
    set_threads(measure.train_threads)
    data = data if data is not None else load_fold_data(settings, log=say)
    started = time.perf_counter()
    checkpoint = folder / CHECKPOINT
    device = resolve_device(measure.train_device)
    if settings.baseline is not None:
        record = _baseline(settings.baseline, data, checkpoint, say, progress, device)
    else:
        if baseline_checkpoint is None:
            raise EdgepruneError(f"internal: {exp.label} needs its baseline's checkpoint")
        record = _prune(settings, data, Path(baseline_checkpoint), checkpoint, say, progress, device)
    train_s = time.perf_counter() - started
    from edgeprune.workflows import export_checkpoint

    say(f"{exp.label}: exporting and verifying {ONNX_FILE}")
    export = export_checkpoint(checkpoint, folder / ONNX_FILE, "onnx", data=data,
                               threads=measure.threads, max_verify_images=MAX_VERIFY_IMAGES)
    result = measure_checkpoint(checkpoint, folder / ONNX_FILE, data, measure, log=say)
    result.update(record)
    result["train_s"] = train_s
    result["trained_on"] = device_label(device)
    result["onnx_agreement"] = export.verification.top1_agreement
    return result


def _baseline(spec: BaselineRun, data, out: Path, say: Log, progress: bool, device) -> dict[str, Any]:
    from edgeprune.models import Model
    from edgeprune.workflows import train_baseline

    if spec.checkpoint:
        model = Model.load(spec.checkpoint)
        model.check_data(data, what=spec.checkpoint)
        model.save(out)
        say(f"baseline: loaded {spec.checkpoint}")
        return {"method": "baseline", "source": Path(spec.checkpoint).name}
    recipe = spec.recipe
    say(f"baseline: training {spec.arch} for {recipe.epochs} epoch(s)")
    _, meta, _ = train_baseline(data, arch=spec.arch, recipe=recipe, weights=spec.weights,
                                width_mult=spec.width_mult, device=device, out=out, progress=progress,
                                log=say)
    history = meta.training.get("history") or []
    return {"method": "baseline", "history": [
        {"epoch": i + 1, "val_accuracy": h.get("val_accuracy")} for i, h in enumerate(history)]}


def _prune(settings: ExperimentConfig, data, baseline: Path, out: Path, say: Log, progress: bool,
           device) -> dict[str, Any]:
    from edgeprune.study.config import experiment_job
    from edgeprune.workflows import prune_checkpoint

    job = experiment_job(settings.prune, finetune=settings.finetune)
    outcome = prune_checkpoint(baseline, job, data, out=out, device=device, progress=progress, log=say)
    result = outcome.result
    return {
        "method": result.method, "asked": result.asked, "achieved": result.achieved,
        "achieved_kind": result.achieved_kind, "stopped_reason": result.stopped_reason,
        "steps": [{"step": s.step, "asked": s.asked, "achieved": s.achieved, "val_accuracy": s.val_accuracy,
                   "accuracy_after_prune": s.accuracy_after_prune, "accepted": s.accepted}
                  for s in result.steps],
        "layers": [{"layer": r["layer"], "params_before": r["params_before"], "params_after": r["params_after"],
                    "zeros": r["zeros"]} for r in result.layers],
    }


ROBUSTNESS_AUTO_MAX_TEST = 2000  # `robustness = "auto"`: measured up to this many test images


def judge_operating_points(onnx_path: Path, data, ok_classes: tuple[str, ...], recall_targets, threads: int):
    """({recall: the val-chosen threshold and its validation and test figures}, the test ROC) of
    an exported file, through the file itself."""
    from edgeprune.runtime import Classifier
    from edgeprune.runtime.operating_point import curves, decision_figures, threshold_for_recall
    from edgeprune.workflows.export import split_ok_scores

    clf = Classifier(onnx_path, threads=threads)
    unknown = [c for c in ok_classes if c not in clf.class_names]
    if unknown:
        raise EdgepruneError(f"measure.ok_classes names {', '.join(unknown)}, not a class of the data "
                             f"({', '.join(clf.class_names)})")
    val_ok, val_defect = split_ok_scores(clf, data.val, ok_classes)
    test_ok, test_defect = split_ok_scores(clf, data.test, ok_classes)
    if not val_defect.any() or val_defect.all():
        raise EdgepruneError("operating points are chosen on the validation split, which needs both OK and "
                             "defect images: raise data.val_fraction")
    points = {}
    for recall in recall_targets:
        threshold = threshold_for_recall(val_ok, val_defect, recall)
        val, test = (decision_figures(s, d, threshold) for s, d in ((val_ok, val_defect), (test_ok, test_defect)))
        points[f"{recall:g}"] = {"ok_threshold": threshold, "val_defect_recall": val.defect_recall,
                                 "val_false_reject": val.false_reject_rate, "defect_recall": test.defect_recall,
                                 "false_reject": test.false_reject_rate, "test_defects": test.defects,
                                 "test_oks": test.oks}
    roc = curves(test_ok, test_defect)
    return points, {"fpr": roc["fpr"], "tpr": roc["tpr"], "auc": roc["roc_auc"]}


def robustness_enabled(measure: MeasureSpec, n_test: int) -> bool:
    """Whether accuracy under shifted images is measured: `robustness` true or false as set;
    "auto" (the default) on small test splits, where its 18 evaluations take seconds."""
    setting = measure.robustness
    return n_test <= ROBUSTNESS_AUTO_MAX_TEST if setting == "auto" else bool(setting)


def stored_timing(bench_row: dict[str, Any]) -> dict[str, Any]:
    """A bench row's latencies as a study stores them per backend (also what `study retime`
    replaces)."""
    return {"b1_ms": bench_row["b1_median_ms"], "b64_ms": bench_row["b64_median_ms"],
            "b1_p90_ms": bench_row["b1_p90_ms"], "b64_p90_ms": bench_row["b64_p90_ms"],
            "software": bench_row["software"]}


def measure_checkpoint(checkpoint: Path, onnx_path: Path, data, measure: MeasureSpec,
                       log: Log | None = None) -> dict[str, Any]:
    """Counts on the saved model, accuracy on the test split (clean, and under shifted images
    where robustness_enabled), and each backend's bench row."""
    from edgeprune.metrics import count_macs, count_macs_nonzero, count_params, evaluate, weight_file_sizes
    from edgeprune.models import load_checkpoint
    from edgeprune.runtime.measure import cpu_isa, file_size, gzip_size
    from edgeprune.workflows.bench import bench_artifacts

    model, meta = load_checkpoint(checkpoint)
    counts = count_params(model)
    macs, _ = count_macs(model, meta.input_size)
    size_bytes, size_gzip = weight_file_sizes(model)
    ev = evaluate(model, data.test, mean=meta.mean, std=meta.std, class_names=meta.class_names)
    rows = bench_artifacts([onnx_path], data=data, threads=measure.threads, budget_s=measure.budget_s,
                           runtimes=list(measure.runtimes) if measure.runtimes else None,
                           memory=measure.memory, log=log)
    latency = {row["runtime"]: {**stored_timing(row), "accuracy": row["accuracy"],
                                "peak_memory_bytes": row["peak_memory_bytes"]} for row in rows}
    robustness = None
    if robustness_enabled(measure, len(data.test)):
        from edgeprune.metrics.robustness import evaluate_shifted

        robustness = evaluate_shifted(
            model, data.test, shifts=measure.robustness_shifts,
            severities=measure.robustness_severities, mean=meta.mean, std=meta.std,
            class_names=meta.class_names, log=log, clean=ev).to_dict()
    operating_points, roc = None, None
    if measure.ok_classes:
        operating_points, roc = judge_operating_points(onnx_path, data, tuple(measure.ok_classes),
                                                       measure.recall_targets, measure.threads)
    return {
        "robustness": robustness,
        "operating_points": operating_points, "roc": roc,
        "params": counts["params"], "nonzero_params": counts["nonzero_params"], "sparsity": counts["sparsity"],
        "weight_sparsity": counts["weight_sparsity"], "macs": macs,
        "macs_nonzero": count_macs_nonzero(model, meta.input_size, macs=macs),
        "size_bytes": size_bytes, "size_gzip_bytes": size_gzip,
        "onnx_bytes": file_size(onnx_path), "onnx_gzip_bytes": gzip_size(onnx_path),
        "accuracy": ev.accuracy, "balanced_accuracy": ev.balanced_accuracy,
        "per_class_recall": ev.per_class_recall, "n_test": ev.n,
        "latency": latency, "threads": measure.threads, "device": rows[0]["device"] if rows else None,
        "isa": cpu_isa(),
    }
