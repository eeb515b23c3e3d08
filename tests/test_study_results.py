"""The results table over folds: one row per model, mean and standard deviation of the folds,
from rows stored as the runner stores them."""

from __future__ import annotations

import statistics

import pytest


def _result(accuracy: float, params: int, b1: float) -> dict:
    return {"method": "l1", "achieved": 0.5, "achieved_kind": "weights", "sparsity": 0.5, "weight_sparsity": 0.5,
            "params": params, "nonzero_params": params // 2, "macs": 1000, "size_gzip_bytes": 100,
            "onnx_bytes": 200, "accuracy": accuracy, "balanced_accuracy": accuracy - 0.01,
            "per_class_recall": {"a": accuracy, "b": accuracy}, "device": "cpu-test-2c", "threads": 1,
            "latency": {"onnxruntime": {"b1_ms": b1, "b64_ms": b1 / 2, "peak_memory_bytes": 10}}}


def test_folds_give_mean_and_spread(tmp_path):
    from edgeprune.study import StudyStore, results
    from edgeprune.study.plan import Experiment

    accuracies = {"baseline": [0.90, 0.94, 0.92], "l1-50": [0.88, 0.86, 0.90]}
    with StudyStore(tmp_path, create=True) as store:
        for name, values in accuracies.items():
            for fold, accuracy in enumerate(values):
                kind = "baseline" if name == "baseline" else "prune"
                config = {"folds": 3, "fold": fold, "arch": "mobilenet_v2"}
                if kind == "prune":
                    config["prune"] = {"schedule": "oneshot", "steps": 1, "target": 0.5, "target_kind": "params",
                                       "finetune_epochs": 1, "distill": False}
                result = _result(accuracy, 1000, 0.1 + fold / 100)
                if kind == "baseline":
                    result["method"] = "baseline"
                store.record_result(Experiment(f"{name}{fold}", name, kind, fold, config), result,
                                    wall_s=10.0 + fold, started_at=float(fold))
    table = results(tmp_path)
    assert list(table["name"]) == ["baseline", "l1-50"]
    for name, values in accuracies.items():
        row = table[table["name"] == name].iloc[0]
        assert row["folds"] == 3
        assert row["accuracy"] == pytest.approx(statistics.mean(values))
        assert row["accuracy_std"] == pytest.approx(statistics.stdev(values))
        assert row["onnxruntime_b1_ms"] == pytest.approx(0.11)
        assert row["wall_s"] == pytest.approx(11.0)
    assert table.loc[1, "schedule"] == "oneshot" and table.loc[1, "nonzero_params"] == 500
    per_fold = results(tmp_path, per_fold=True)
    assert len(per_fold) == 6 and sorted(per_fold["fold"].unique()) == [0, 1, 2]
    assert "recall:a" in table
    from edgeprune.study import write_report

    report = write_report(tmp_path)  # no checkpoints here: the filter plot is left out
    names = {p.name for p in report.images}
    assert "fold_spread.png" in names and "first_conv_filters.png" not in names
    assert "accuracy_std" not in report.markdown.read_text() and "± (folds)" in report.markdown.read_text()
