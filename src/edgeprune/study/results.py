"""The results table: one row per model (per fold with `per_fold=True`), from the study database.

With folds > 1 a row is the mean over folds, `accuracy_std` / `balanced_accuracy_std` the
standard deviation (pandas' sample std; 0 for a single fold) and `folds` how many finished.
Latencies are ms per image of the exported FP32 ONNX file, median, at the study's thread count,
on the device in `device` (one column pair per installed backend: `onnxruntime_b1_ms`,
`onnxruntime_b64_ms`, `openvino_b1_ms`, ...). Sizes are bytes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgeprune.study.store import StudyStore

ID_COLUMNS = ["name", "arch", "method", "schedule", "steps", "target", "target_kind", "finetune_epochs", "distill",
              "final_epochs", "image_size"]
COLUMNS = ID_COLUMNS + [
    "achieved", "achieved_kind", "sparsity", "weight_sparsity", "params", "nonzero_params", "macs",
    "gzip_bytes", "onnx_bytes", "accuracy", "balanced_accuracy",
    "onnxruntime_b1_ms", "onnxruntime_b64_ms", "openvino_b1_ms", "openvino_b64_ms",
    "peak_memory_bytes", "wall_s", "folds", "accuracy_std", "balanced_accuracy_std", "device", "threads",
]


def flat_row(row: dict[str, Any]) -> dict[str, Any]:
    """One stored experiment as a flat dict (one fold)."""
    r, config = row["result"], row["config"]
    prune = config.get("prune") or {}
    out = {
        "name": row["name"], "fold": row["fold"], "key": row["key"], "kind": row["kind"],
        "folder": row["folder"],
        "arch": config.get("arch"), "method": r.get("method", "baseline"),
        "schedule": prune.get("schedule", "-"), "steps": prune.get("steps", 0),
        "target": prune.get("target", 0.0), "target_kind": prune.get("target_kind", "-"),
        "finetune_epochs": prune.get("finetune_epochs", 0), "distill": bool(prune.get("distill", False)),
        "final_epochs": prune.get("final_epochs", 0), "image_size": (config.get("data") or {}).get("image_size"),
        "achieved": r.get("achieved", 0.0), "achieved_kind": r.get("achieved_kind", "-"),
        "sparsity": r["sparsity"], "weight_sparsity": r["weight_sparsity"], "params": r["params"],
        "nonzero_params": r["nonzero_params"], "macs": r["macs"], "gzip_bytes": r["size_gzip_bytes"],
        "onnx_bytes": r["onnx_bytes"], "accuracy": r["accuracy"], "balanced_accuracy": r["balanced_accuracy"],
        "wall_s": row["wall_s"], "device": r.get("device"), "threads": r.get("threads"),
    }
    peak = []
    for runtime, values in (r.get("latency") or {}).items():
        out[f"{runtime}_b1_ms"] = values["b1_ms"]
        out[f"{runtime}_b64_ms"] = values["b64_ms"]
        if values.get("peak_memory_bytes") is not None:
            peak.append(values["peak_memory_bytes"])
    out["peak_memory_bytes"] = min(peak) if peak else None  # the leanest backend's
    for cls, recall in (r.get("per_class_recall") or {}).items():
        out[f"recall:{cls}"] = recall
    for recall, point in (r.get("operating_points") or {}).items():
        out[f"false_reject@recall={recall}"] = point["false_reject"]
        out[f"defect_recall@recall={recall}"] = point["defect_recall"]
    robustness = r.get("robustness")  # absent: not measured (robustness off, or an older study)
    if robustness:
        for shift, accuracy in robustness["mean_accuracy_by_shift"].items():
            out[f"shift:{shift}"] = accuracy
        out["shift_relative_drop"] = robustness["mean_relative_drop"]
    return out


def _extra_columns(frame) -> list[str]:
    """The columns whose names depend on the study: shift:<name> and the mean relative drop under
    shifts (where robustness was measured), the false-reject rate and defect recall at each
    operating point (false_reject@recall=R, defect_recall@recall=R; where ok_classes is set), then
    recall:<class>."""
    shift = [c for c in frame.columns if c.startswith("shift:")]
    shift += ["shift_relative_drop"] if "shift_relative_drop" in frame else []
    operating = [c for c in frame.columns if c.startswith(("false_reject@", "defect_recall@"))]
    return shift + operating + [c for c in frame.columns if c.startswith("recall:")]


def results(run_dir: str | Path, *, per_fold: bool = False):
    """The study's table as a pandas DataFrame (baseline first, then in the order experiments
    finished). Columns: COLUMNS; where robustness was measured `shift:<name>` (mean accuracy over
    the severities of that shift) and `shift_relative_drop` (mean relative accuracy drop over
    every shift and severity, see edgeprune.metrics.robustness); then `recall:<class>` per class."""
    import pandas as pd

    with StudyStore(run_dir) as store:
        rows = [flat_row(r) for r in store.rows()]
    frame = pd.DataFrame(rows)
    if frame.empty:
        return pd.DataFrame(columns=COLUMNS)
    for column in COLUMNS:
        if column not in frame:
            frame[column] = None
    extra = _extra_columns(frame)
    for column in extra:  # a model without robustness figures: NaN, so the column stays numeric
        frame[column] = pd.to_numeric(frame[column])
    frame["kind_order"] = (frame["kind"] != "baseline").astype(int)
    if per_fold:
        frame["folds"] = 1
        frame["accuracy_std"] = 0.0
        frame["balanced_accuracy_std"] = 0.0
        return frame.sort_values(["kind_order", "fold"], kind="stable").drop(columns="kind_order")[
            COLUMNS + ["fold", "key", "folder"] + extra].reset_index(drop=True)
    numeric = [c for c in frame.columns if c not in ID_COLUMNS and c not in ("achieved_kind", "device", "key",
                                                                              "kind", "folder", "fold")
               and pd.api.types.is_numeric_dtype(frame[c])]
    grouped = frame.groupby("name", sort=False)
    table = grouped[ID_COLUMNS + ["achieved_kind", "device", "kind_order"]].first()
    table = table.drop(columns="name").reset_index()
    means = grouped[[c for c in numeric if c != "kind_order"]].mean().reset_index()
    table = table.merge(means, on="name")
    table["folds"] = grouped.size().values
    std = grouped[["accuracy", "balanced_accuracy"]].std(ddof=1).fillna(0.0).reset_index()
    table = table.merge(std.rename(columns={"accuracy": "accuracy_std",
                                            "balanced_accuracy": "balanced_accuracy_std"}), on="name")
    for column in ("params", "nonzero_params", "macs", "gzip_bytes", "onnx_bytes", "steps", "finetune_epochs",
                   "threads"):
        if column in table and table[column].notna().all():
            table[column] = table[column].round().astype("int64")
    table = table.sort_values("kind_order", kind="stable").drop(columns="kind_order").reset_index(drop=True)
    for column in COLUMNS:  # not measured in this study (a backend not installed, memory off)
        if column not in table:
            table[column] = None
    return table[COLUMNS + extra]


def format_table(frame) -> str:
    """The table as text, the figures people compare first."""
    show = ["name", "achieved", "nonzero_params", "macs", "gzip_bytes", "onnx_bytes", "accuracy",
            "balanced_accuracy", "onnxruntime_b1_ms", "onnxruntime_b64_ms", "openvino_b1_ms", "openvino_b64_ms",
            "shift_relative_drop", "wall_s"]
    if frame["folds"].max() > 1:
        show.insert(7, "accuracy_std")
    show += [c for c in frame.columns if c.startswith(("false_reject@", "defect_recall@"))]
    view = frame[[c for c in show if c in frame and frame[c].notna().any()]]
    return view.to_string(index=False, float_format=lambda v: f"{v:.4g}")
