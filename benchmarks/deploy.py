"""Deployment benchmarks: are the artifacts really smaller, faster and as accurate?

    python benchmarks/deploy.py [--study inspection] [...]   (default; see deploy_inspection.py)
    python benchmarks/deploy.py --study cifar32 [...]        (the earlier 32x32 CIFAR-10 study)

`--study inspection`: magnetic-tile at 224x224, MobileNetV2 from ImageNet V1: dense, Taylor 50 %
and 70 %, a latency-targeted cut; FP32, ONNX Runtime INT8 and NNCF OpenVINO INT8 of each; both
backends, batch 1 and 8 (benchmarks/deploy_inspection.py, resumable).

`--study cifar32`: from the frontier benchmark's checkpoints, export four artifacts and bench them side by side in
one run, on this machine, with the same thread count:

    dense FP32 ONNX        (the reference)
    structured 50% FP32 ONNX
    structured 50% INT8 ONNX (static, QDQ, per-channel, calibrated on training images)
    l1 90% sparse storage  (bitmask + values + xz; runs as the dense model after loading)

Targets (from the issue), each printed as PASS/FAIL:
  - structured 50% + INT8: >= 4x lower batch-1 latency than dense FP32 in ONNX Runtime,
  - structured 50% + INT8: >= 8x smaller file than dense FP32 ONNX,
  - structured 50% + INT8: accuracy within 2 points of the dense model,
  - l1 90% sparse file: <= 25% of the dense model's gzip size (its safetensors, gzip -9).

    (--structured-alt DIR adds a second structured model's FP32 and INT8 files to the same
    round-robin: the same cut with another channel multiple, say)

    python benchmarks/deploy.py [--dense DIR] [--structured DIR] [--structured-alt DIR] [--sparse DIR] [--data SPEC]
                                [--threads 1] [--budget 3] [--device-label NAME]

Writes benchmarks/results/deploy_<device_label>_<software>.csv (one row per artifact, with
ratios vs dense FP32) and .json (rows, targets, export reports). Not a test: it needs the real
models, and its numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, WORK, run_main, shared_root  # noqa: E402

FRONTIER = WORK / "frontier"

TARGET_SPEEDUP = 4.0
TARGET_SHRINK = 8.0
TARGET_ACCURACY_POINTS = 2.0
TARGET_SPARSE_FRACTION = 0.25


def default_data() -> str:
    return str(shared_root() / "datasets" / "cifar10-jpeg")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dense", type=Path, default=FRONTIER / "baseline", help="dense checkpoint folder")
    p.add_argument("--structured", type=Path, default=FRONTIER / "taylor-channel-geometric-50-ft3",
                   help="structured (channel) 50%% checkpoint folder")
    p.add_argument("--structured-alt", type=Path, default=None,
                   help="a second structured checkpoint (e.g. the same cut with --round-to 8) whose FP32 "
                        "and INT8 files join the same round-robin as structured50-alt-*")
    p.add_argument("--sparse", type=Path, default=FRONTIER / "l1-geometric-90",
                   help="l1 unstructured 90%% checkpoint folder")
    p.add_argument("--data", default=default_data(), help="the data the models were trained on")
    p.add_argument("--calibration-images", type=int, default=300)
    p.add_argument("--max-verify", type=int, default=None, help="verify on at most N test images")
    p.add_argument("--max-per-class", type=int, default=None,
                   help="bench accuracy on at most N test images per class (default: all)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--budget", type=float, default=3.0, help="seconds per latency measurement")
    p.add_argument("--device-label", default=None)
    p.add_argument("--work-dir", type=Path, default=WORK / "deploy")
    p.add_argument("--results-dir", type=Path, default=RESULTS)
    return p.parse_args(argv)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    study = "inspection"
    if "--study" in argv:
        i = argv.index("--study")
        study = argv[i + 1] if i + 1 < len(argv) else ""
        del argv[i : i + 2]
    if study == "inspection":
        import deploy_inspection

        return deploy_inspection.main(argv)
    if study != "cifar32":
        from edgeprune.errors import EdgepruneError

        raise EdgepruneError(f"unknown --study {study!r}: inspection or cifar32")
    return main_cifar32(argv)


def main_cifar32(argv=None) -> int:
    args = parse_args(argv)
    import onnxruntime as ort

    from edgeprune.errors import EdgepruneError
    from edgeprune.workflows.export import export_checkpoint
    from edgeprune.workflows.bench import bench_artifacts
    from edgeprune.hardware import device_label, set_threads, software_label
    from edgeprune.models.checkpoint import meta_from_manifest, read_manifest
    from edgeprune.runtime.bench import format_rows, write_csv, write_json
    from edgeprune.workflows import software_versions

    def log(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    set_threads(args.threads)
    checkpoints = {"dense": args.dense, "structured": args.structured, "sparse": args.sparse}
    if args.structured_alt is not None:
        checkpoints["structured_alt"] = args.structured_alt
    metas = {name: meta_from_manifest(read_manifest(path)) for name, path in checkpoints.items()}
    sizes = {m.input_size for m in metas.values()}
    if len(sizes) != 1 or len({tuple(m.class_names) for m in metas.values()}) != 1:
        raise EdgepruneError("the checkpoints must share classes and input size")
    from edgeprune.data import load_data

    dense_meta = metas["dense"]
    seed = int(dense_meta.training.get("seed", 0) or 0)
    data = load_data(args.data, image_size=dense_meta.input_size, seed=seed, log=log)
    log(f"data: {data.name}; test {len(data.test.labels)} images")

    work = args.work_dir
    work.mkdir(parents=True, exist_ok=True)
    plan = [
        ("dense-fp32", args.dense, "onnx", work / "dense-fp32.onnx"),
        ("structured50-fp32", args.structured, "onnx", work / "structured50-fp32.onnx"),
        ("structured50-int8", args.structured, "onnx-int8", work / "structured50-int8.onnx"),
        ("l1-90-sparse", args.sparse, "sparse", work / "l1-90.epsparse"),
    ]
    if args.structured_alt is not None:
        plan[3:3] = [
            ("structured50-alt-fp32", args.structured_alt, "onnx", work / "structured50-alt-fp32.onnx"),
            ("structured50-alt-int8", args.structured_alt, "onnx-int8", work / "structured50-alt-int8.onnx"),
        ]
    # The channel multiple each structured model was cut to (round_to: "auto" resolves per CPU).
    round_to = {name: (metas[name].pruning or {}).get("config", {}).get("round_to")
                for name in ("structured", "structured_alt") if name in metas}
    exports = {}
    for name, ckpt, fmt, out in plan:
        log(f"export {name}: {ckpt} -> {out} ({fmt})")
        t0 = time.perf_counter()
        result = export_checkpoint(ckpt, out, fmt, data=data, threads=args.threads,
                                   calibration_images=args.calibration_images,
                                   max_verify_images=args.max_verify, log=log)
        exports[name] = {**result.to_dict(), "seconds": time.perf_counter() - t0}

    label = args.device_label or device_label("cpu")
    rows = bench_artifacts([out for *_, out in plan], data=data, threads=args.threads,
                           budget_s=args.budget, device=label, max_per_class=args.max_per_class,
                           log=log)
    names = {str(out): name for name, *_, out in plan}
    for row in rows:
        row["role"] = names[row["path"]]
    dense = next(r for r in rows if r["role"] == "dense-fp32")
    for row in rows:
        row["speedup_b1_vs_dense"] = dense["b1_median_ms"] / row["b1_median_ms"]
        row["speedup_b64_vs_dense"] = dense["b64_median_ms"] / row["b64_median_ms"]
        row["shrink_vs_dense_file"] = dense["file_bytes"] / row["file_bytes"]
        row["accuracy_points_vs_dense"] = (
            100.0 * (row["accuracy"] - dense["accuracy"])
            if row["accuracy"] is not None and dense["accuracy"] is not None else None
        )
    int8 = next(r for r in rows if r["role"] == "structured50-int8")
    sparse_export = exports["l1-90-sparse"]
    from edgeprune.metrics import weight_file_sizes
    from edgeprune.models import load_checkpoint

    _, dense_gzip = weight_file_sizes(load_checkpoint(args.dense)[0])
    sparse_fraction = sparse_export["file_bytes"] / dense_gzip
    targets = [
        ("structured50-int8 batch-1 latency >= 4x lower than dense FP32 (ONNX Runtime)",
         int8["speedup_b1_vs_dense"], TARGET_SPEEDUP, int8["speedup_b1_vs_dense"] >= TARGET_SPEEDUP, "x"),
        ("structured50-int8 file >= 8x smaller than dense FP32 ONNX",
         int8["shrink_vs_dense_file"], TARGET_SHRINK, int8["shrink_vs_dense_file"] >= TARGET_SHRINK, "x"),
        ("structured50-int8 accuracy within 2 points of dense",
         int8["accuracy_points_vs_dense"], -TARGET_ACCURACY_POINTS,
         int8["accuracy_points_vs_dense"] is not None
         and int8["accuracy_points_vs_dense"] >= -TARGET_ACCURACY_POINTS, " points"),
        ("l1-90 sparse file <= 25% of the dense model's gzip size",
         sparse_fraction, TARGET_SPARSE_FRACTION, sparse_fraction <= TARGET_SPARSE_FRACTION, ""),
    ]
    software = f"{software_label()}_ort{ort.__version__}"
    stem = f"deploy_{label}_{software}"
    args.results_dir.mkdir(parents=True, exist_ok=True)
    csv_path = write_csv(rows, args.results_dir / f"{stem}.csv")
    json_path = write_json([{
        "rows": rows,
        "targets": [{"target": t, "achieved": a, "bar": b, "passed": ok} for t, a, b, ok, _ in targets],
        "exports": exports,
        "dense_gzip_bytes": dense_gzip,
        "threads": args.threads,
        "device": label,
        "software": software,
        "versions": software_versions(),
        "checkpoints": {name: str(path) for name, path in checkpoints.items()},
        "round_to": round_to,
        "data": data.name,
    }], args.results_dir / f"{stem}.json")

    print(format_rows(rows))
    print()
    for row in rows:
        acc = row["accuracy_points_vs_dense"]
        print(f"{row['role']:<20} b1 {row['speedup_b1_vs_dense']:.2f}x faster, b64 "
              f"{row['speedup_b64_vs_dense']:.2f}x, file {row['shrink_vs_dense_file']:.2f}x smaller, "
              f"accuracy {'n/a' if acc is None else f'{acc:+.2f} points'} vs dense FP32")
    print()
    for text, achieved, bar, ok, unit in targets:
        shown = "n/a" if achieved is None else (f"{achieved:.3f}" if unit == "" else f"{achieved:.2f}{unit}")
        print(f"{'PASS' if ok else 'FAIL'}  {text}: {shown} (bar {bar}{unit})")
    print(f"\nwrote {csv_path} and {json_path}")
    return 0 if all(ok for *_, ok, _ in targets) else 1


if __name__ == "__main__":
    run_main(main)
