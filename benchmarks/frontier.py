"""Pruning frontier on CIFAR-10 (JPEG copy), 32x32, MobileNetV2 — a thin call of the study
`configs/frontier.toml` (resumable; not a test).

    python benchmarks/frontier.py [--executor local|ray] [--ray-address ADDR] [--dry-run]

The study (baseline from the ImageNet V1 weights in ../shared, then every pruning run from it)
keeps its database, checkpoints and ONNX files in benchmarks/work/frontier-study/ and resumes
there when started again. The summary CSV/JSON, with the targets of the frontier issue checked
against the baseline B of the same run, goes to benchmarks/results/frontier_<hardware>_<software>.*.
Latencies are the study's: each model's ONNX file timed when its experiment finished (ONNX
Runtime, 1 thread, median), not one round-robin over all models as the earlier script did.
The earlier script's width-matched dense model is not a pruning experiment and is not rerun;
its figures stay in the committed result file.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import PROJECT_ROOT, WORK, result_path, run_main  # noqa: E402

CONFIG = PROJECT_ROOT / "configs" / "frontier.toml"
RUN_DIR = WORK / "frontier-study"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def summary_rows(table) -> list[dict]:
    """The study's table in the earlier script's column names (check_targets reads them)."""
    return [{
        "run": row["name"], "test_accuracy": row["accuracy"], "achieved": row["achieved"],
        "achieved_kind": row["achieved_kind"], "params": row["params"], "nonzero_params": row["nonzero_params"],
        "weight_sparsity": row["weight_sparsity"], "macs": row["macs"], "size_gzip_bytes": row["gzip_bytes"],
        "onnx_bytes": row["onnx_bytes"], "ort_b1_ms": row["onnxruntime_b1_ms"],
        "ort_b64_ms": row["onnxruntime_b64_ms"], "wall_s": row["wall_s"], "measured_on": row["device"],
        "threads": row["threads"],
    } for _, row in table.iterrows()]


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--executor", default="local", choices=("local", "ray"))
    parser.add_argument("--ray-address", default=None)
    parser.add_argument("--dry-run", action="store_true", help="list the experiments and an estimate")
    parser.add_argument("--work-dir", type=Path, default=RUN_DIR, help="the study's RUN_DIR (resumable)")
    args = parser.parse_args()

    import pandas as pd

    from edgeprune.study import load_config, results, run_study
    from edgeprune.study.runner import print_plan
    from edgeprune.workflows import software_versions

    outcome = run_study(load_config(CONFIG), args.work_dir, resume=True, executor=args.executor,
                        ray_address=args.ray_address, dry_run=args.dry_run, log=log)
    if args.dry_run:
        print_plan(outcome)
        return 0
    rows = summary_rows(results(args.work_dir))
    checks = check_targets(rows)
    table = pd.DataFrame(rows)
    base = next((r for r in rows if r["run"] == "baseline"), None)
    if base is not None:
        table["ort_b1_speedup"] = base["ort_b1_ms"] / table["ort_b1_ms"]
        table["ort_b64_speedup"] = base["ort_b64_ms"] / table["ort_b64_ms"]
        table["gzip_ratio"] = table["size_gzip_bytes"] / base["size_gzip_bytes"]
        table["accuracy_drop_points"] = 100 * (base["test_accuracy"] - table["test_accuracy"])
    csv_path = result_path("frontier", "csv")
    table.to_csv(csv_path, index=False, float_format="%.6g")
    result_path("frontier", "json").write_text(json.dumps(
        {"runs": rows, "targets": checks, "versions": software_versions(), "study": str(CONFIG.name)},
        indent=2, default=str) + "\n")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    for c in checks:
        print(f"{'PASS' if c['passed'] else 'MISS'}  {c['target']}: {c['detail']}")
    log(f"wrote {csv_path}")
    return 0


if __name__ == "__main__":
    run_main(main)
