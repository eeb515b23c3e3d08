"""`python -m edgeprune.runtime`: classify, bench and compare with the runtime extra alone.

Only the standard library's argparse, no Typer or rich, so it runs wherever onnxruntime, numpy
and pillow do. Errors print `error: ...` and exit with code 2, like the full CLI.
"""

from __future__ import annotations

import argparse
import json
import sys

from edgeprune.errors import EdgepruneError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m edgeprune.runtime", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    classify = sub.add_parser("classify", help="top-1 label and confidence of each image")
    classify.add_argument("model", help="an .onnx file written by `edgeprune export`")
    classify.add_argument("images", nargs="+")
    classify.add_argument("--threads", type=int, default=1)
    classify.add_argument("--runtime", default="onnxruntime",
                          help="onnxruntime (default), openvino, or auto (the faster one measured here, cached)")
    classify.add_argument("--json", action="store_true")

    bench = sub.add_parser("bench", help="accuracy, size, latency, memory of ONNX artifacts")
    bench.add_argument("artifacts", nargs="+")
    bench.add_argument("--data", help="image tree: TREE/test/<class>/<image> or TREE/<class>/<image>")
    bench.add_argument("--max-per-class", type=int, default=None)
    bench.add_argument("--threads", type=int, default=1)
    bench.add_argument("--runtime", default=None,
                       help="comma-separated backends, e.g. onnxruntime,openvino (default: every installed one)")
    bench.add_argument("--budget", type=float, default=2.0, help="seconds per latency measurement")
    bench.add_argument("--device-label", default=None)
    bench.add_argument("--csv", default=None)
    bench.add_argument("--json", action="store_true")

    comp = sub.add_parser("compare", help="two bench CSVs (two devices) side by side")
    comp.add_argument("csv_a")
    comp.add_argument("csv_b")
    return parser


def run(argv: list[str] | None = None) -> int:
    from edgeprune.runtime import bench as bench_mod

    args = _parser().parse_args(argv)
    if args.command == "classify":
        from edgeprune.runtime.classifier import Classifier

        clf = Classifier(args.model, runtime=args.runtime, threads=args.threads)
        preds = clf.classify_images(args.images)
        if args.json:
            print(json.dumps([{"image": i, "label": p.label, "confidence": p.confidence}
                              for i, p in zip(args.images, preds)], indent=2))
        else:
            for image, pred in zip(args.images, preds):
                print(f"{image}\t{pred.label}\t{pred.confidence:.4f}")
        return 0
    if args.command == "bench":
        rows = bench_mod.bench_onnx_files(
            args.artifacts, data=args.data, threads=args.threads, budget_s=args.budget,
            device=args.device_label, max_per_class=args.max_per_class, runtimes=args.runtime,
        )
        if args.csv:
            bench_mod.write_csv(rows, args.csv, inputs=args.artifacts)
        print(json.dumps(rows, indent=2) if args.json else bench_mod.format_rows(rows))
        return 0
    result = bench_mod.compare(bench_mod.read_csv(args.csv_a), bench_mod.read_csv(args.csv_b))
    print(bench_mod.format_compare(result))
    return 0


def main(argv: list[str] | None = None) -> None:
    try:
        code = run(argv)
    except EdgepruneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    sys.exit(code)


if __name__ == "__main__":
    main()
