"""The demo's whole path (train, prune, INT8, bench) on digits, with few epochs."""

from __future__ import annotations

from edgeprune.workflows.demo import run_demo


def test_demo_runs_end_to_end_and_the_artifacts_really_shrink(tmp_path):
    result = run_demo(tmp_path / "demo", epochs=2, finetune_epochs=1, threads=1, progress=False)
    rows = {(r["artifact"], r["runtime"]): r for r in result["bench"]}
    assert len(rows) == 5
    dense = rows[("baseline", "onnxruntime")]
    pruned = rows[("pruned-taylor-50", "onnxruntime")]
    int8 = rows[("pruned-taylor-50-int8.onnx", "onnxruntime")]
    assert pruned["macs"] < 0.6 * dense["macs"]  # channels physically removed
    assert int8["file_bytes"] < 0.35 * pruned["file_bytes"]  # int8 weights, not float32
    for row in rows.values():
        assert row["accuracy"] is not None and 0.0 <= row["accuracy"] <= 1.0
        assert row["b1_median_ms"] > 0 and row["device"] and row["threads"] == 1
