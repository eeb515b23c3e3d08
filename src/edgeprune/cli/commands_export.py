"""`edgeprune export` (verified deployable artifacts) and `edgeprune bench` (side by side).

Nothing at module level imports torch: `edgeprune bench model.onnx` runs where only the runtime
extra (onnxruntime, numpy, pillow) is installed, as long as the other command modules also keep
their torch imports inside their functions.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from edgeprune.cli.app import JsonOpt, OverwriteOpt, ThreadsOpt, app, console
from edgeprune.cli.common import DataRequest, data_options, log, warn, warn_if_chance

FORMAT_HELP = (
    "onnx (FP32, dynamic batch), onnx-int8 (static INT8, QDQ, per-channel weights; needs --data "
    "for calibration), openvino-int8 (OpenVINO IR MODEL.xml + MODEL.bin, quantized by NNCF "
    "post-training quantization on the same calibration images; runs on OpenVINO; timed there "
    "against FP32 and the QDQ file) or sparse (bitmask + values, xz; restores bit-identical weights)."
)


def _torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


@app.command()
@data_options(default_spec=None, exclude=("image_size", "normalization"))
def export(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint folder (model.safetensors + model.json).")],
    fmt: Annotated[str, typer.Option("--format", help=FORMAT_HELP)] = "onnx",
    out: Annotated[Optional[Path], typer.Option("--out", help="File to write (default: next to the checkpoint).")] = None,
    calibration_images: Annotated[
        int, typer.Option("--calibration-images", min=1, help="Training images for INT8 calibration.")
    ] = 300,
    calibrate_method: Annotated[
        str, typer.Option("--calibrate-method", help="minmax, entropy or percentile (INT8). Entropy "
                          "clips activation ranges hardest: on the digits MobileNetV2 it lost 7-8 "
                          "points where minmax and percentile lost none; --max-drop catches that.")
    ] = "minmax",
    max_verify: Annotated[
        Optional[int], typer.Option("--max-verify", min=1, help="Verify on at most N test images (default: all).")
    ] = None,
    max_drop: Annotated[
        Optional[float],
        typer.Option("--max-drop", min=0.0, metavar="PTS",
                     help="onnx-int8: fail when INT8 test accuracy is more than PTS percentage points "
                     "below the FP32 model's (the file is set aside as FILE.rejected). Default 1.0."),
    ] = None,
    opset: Annotated[int, typer.Option("--opset", help="ONNX opset (18 or newer).")] = 18,
    operating_point: Annotated[
        Optional[str],
        typer.Option("--operating-point", metavar="defect_recall=R|ok_threshold=T",
                     help="Decide OK / DEFECT by a threshold on P(OK) (the OK classes' probability "
                     "summed) instead of top-1: defect_recall=0.98 picks the lowest threshold that "
                     "rejects 98 %% of the validation split's defects (the escape rate the line "
                     "accepts; fewest false rejects for it), through this artifact itself; "
                     "ok_threshold=T fixes it. Stored in the metadata; the station and bench apply "
                     "it. Needs --data and --ok-class."),
    ] = None,
    ok_class: Annotated[
        Optional[list[str]],
        typer.Option("--ok-class", help="A class that is a good part (repeatable); every other class "
                     "is a defect. With --operating-point."),
    ] = None,
    threads: ThreadsOpt = 2,
    overwrite: OverwriteOpt = False,
    as_json: JsonOpt = False,
    request: DataRequest = DataRequest(),
) -> None:
    """Write a deployable artifact of a checkpoint and verify it against the PyTorch model.

    A FILE.json report next to the artifact holds the verification (top-1 agreement, max |logit
    difference|, accuracy), sizes and, for INT8, the calibration, the accuracy gate and the
    sparsity after quantization. --data: the data the checkpoint was trained on, in its recorded
    split: its test split verifies the artifact on real images, its training split calibrates
    INT8. Without --data the artifact is checked on random inputs only."""
    from edgeprune.cli.common import load_data_for_checkpoint
    from edgeprune.errors import EdgepruneError
    from edgeprune.export.verify import INT8_MAX_DROP
    from edgeprune.workflows.export import (
        FORMATS, INT8_FORMATS, SUFFIXES, check_export_options, check_export_out, check_operating_point_options,
        export_checkpoint,
    )
    from edgeprune.hardware import set_threads
    from edgeprune.models.checkpoint import meta_from_manifest, read_manifest

    if fmt not in FORMATS:
        raise EdgepruneError(f"unknown --format {fmt!r}: choose one of {', '.join(FORMATS)}")
    meta = meta_from_manifest(read_manifest(checkpoint))  # clear error when it does not exist
    if fmt in INT8_FORMATS and request.spec is None:
        raise EdgepruneError("quantizing needs calibration data: pass --data")
    if max_drop is not None and fmt not in INT8_FORMATS:
        raise EdgepruneError("--max-drop gates INT8 accuracy: it applies to --format onnx-int8 "
                             "and openvino-int8 only")
    set_threads(threads)
    if out is None:
        stem = checkpoint.resolve().name + ("-int8" if fmt in INT8_FORMATS else "")
        out = checkpoint.resolve().parent / f"{stem}{SUFFIXES[fmt]}"
    # Options and the output location before the data is loaded (export_checkpoint checks them
    # again, for the Python API).
    check_export_options(fmt, request.spec, calibration_images,
                         INT8_MAX_DROP if max_drop is None else max_drop, threads, opset, max_verify, 0)
    check_operating_point_options(fmt, request.spec, operating_point, ok_class)
    check_export_out(out, inputs=(checkpoint,), overwrite=overwrite)
    dataset = None
    if request.spec is not None:
        dataset, _ = load_data_for_checkpoint(request, meta, str(checkpoint))
    else:
        # Said before the work starts, so it shows even when the export then fails.
        warn("no --data: the artifact is checked on random inputs only, not on real test images")
    result = export_checkpoint(
        checkpoint, out, fmt, data=dataset, threads=threads, calibration_images=calibration_images,
        calibrate_method=calibrate_method, opset=opset, max_verify_images=max_verify,
        max_drop=INT8_MAX_DROP if max_drop is None else max_drop, overwrite=overwrite,
        operating_point=operating_point, ok_classes=ok_class, log=log,
    )
    for message in result.warnings:
        if message not in result.info.get("warnings", []):  # said before the work started
            warn(message)
    result.info["chance_level_warning"] = warn_if_chance(
        result.verification.artifact_accuracy, len(meta.class_names), f"{fmt} artifact's test")
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2, default=str))
        return
    report = result.verification
    console.print(f"[bold]{result.format}[/] artifact written to {result.path} "
                  f"({result.info['file_bytes']:,} bytes, gzip {result.info['gzip_bytes']:,})")
    console.print(report.summary(), highlight=False)
    if "accuracy_gate" in result.info:
        gate = result.info["accuracy_gate"]
        console.print(f"accuracy gate passed: INT8 {gate['int8_accuracy']:.2%} vs FP32 "
                      f"{gate['fp32_accuracy']:.2%}, drop {gate['drop_points']:.2f} points "
                      f"(max {gate['max_drop_points']:g})", highlight=False)
    point = result.info.get("operating_point")
    if point:
        test = point["test"]
        console.print(
            f"operating point {point['target']}: DEFECT when P(OK) < {point['ok_threshold']:.4f} (chosen on "
            f"the {point['chosen_on']}); test: defects caught {test['defects_caught']}/{test['defects']}, "
            f"false rejects {test['false_rejects']}/{test['oks']}", highlight=False)
    ov_speed = result.info.get("openvino_int8_speed")
    if ov_speed:
        console.print(f"OpenVINO batch-1 ({ov_speed['device']}, {ov_speed['threads']} thread(s), "
                      f"round-robin): NNCF IR {ov_speed['ir_b1_ms']:.3f} ms, QDQ .onnx "
                      f"{ov_speed['qdq_b1_ms']:.3f} ms, FP32 {ov_speed['fp32_b1_ms']:.3f} ms", highlight=False)
    if "int8" in result.info:
        sp = result.info["int8"]
        console.print(f"weight sparsity FP32 {sp['fp32_sparsity']:.4f} -> INT8 {sp['int8_sparsity']:.4f}; "
                      f"every FP32 zero still zero: {sp['zeros_kept']}", highlight=False)
    if "fraction_of_dense_gzip" in result.info:
        console.print(f"{result.info['fraction_of_dense_gzip']:.1%} of the same weights stored dense "
                      f"and gzipped ({result.info['dense_gzip_bytes']:,} bytes)", highlight=False)
    console.print(f"report: {result.report_path}")


def render_bench(rows: list[dict[str, Any]], columns: list[tuple[str, str]] | None = None) -> Table:
    from edgeprune.runtime.bench import fmt, table_columns

    columns = columns or table_columns(rows)
    devices = sorted({f"{r.get('device')} ({r.get('isa') or 'isa unknown'}), {r.get('threads')} thread(s)" for r in rows})
    software = sorted({str(r.get("software")) for r in rows})
    table = Table(title="bench on " + "; ".join(devices) + " (latency per image, ms)",
                  caption="software: " + ", ".join(software))
    for col, header in columns:
        table.add_column(header, justify="left" if col in ("artifact", "format", "runtime") else "right")
    for row in rows:
        table.add_row(*[fmt(col, row.get(col)) for col, _ in columns])
    return table


def render_compare(result: dict[str, Any]) -> Table:
    from edgeprune.runtime.bench import compare_table_rows

    headers, body = compare_table_rows(result)
    table = Table(title=f"A: {result['device_a']}   vs   B: {result['device_b']}")
    for i, header in enumerate(headers):
        table.add_column(header, justify="left" if i < 3 else "right")
    for cells in body:
        table.add_row(*cells)
    return table


@app.command()
def bench(
    artifacts: Annotated[
        Optional[list[Path]],
        typer.Argument(help="Checkpoint folders, .onnx files, OpenVINO IRs (.xml, run on openvino only) "
                            "and/or sparse files.", show_default=False),
    ] = None,
    data: Annotated[
        Optional[str],
        typer.Option("--data", help="Test images for accuracy: any --data form with the full install; "
                     "an image tree (TREE/test/<class>/...) with the runtime extra alone."),
    ] = None,
    threads: ThreadsOpt = 1,
    runtime: Annotated[
        Optional[str],
        typer.Option("--runtime", help="ONNX backends, comma-separated: onnxruntime, openvino "
                     "(default: every installed one). One row per artifact and backend, accuracy "
                     "measured on each."),
    ] = None,
    budget: Annotated[float, typer.Option("--budget", help="Seconds per latency measurement.")] = 2.0,
    max_per_class: Annotated[
        Optional[int], typer.Option("--max-per-class", min=1, help="Accuracy on at most the first N "
                                    "test images per class (quick runs).")
    ] = None,
    device_label: Annotated[
        Optional[str], typer.Option("--device-label", help="Name this device in the results (default: CPU model + cores).")
    ] = None,
    no_memory: Annotated[bool, typer.Option("--no-memory", help="Skip the peak-memory probes.")] = False,
    csv_path: Annotated[Optional[Path], typer.Option("--csv", help="Also write the rows as CSV.")] = None,
    compare: Annotated[
        Optional[tuple[Path, Path]],
        typer.Option("--compare", help="Show two bench CSVs (two devices) side by side with ratios B/A."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Accuracy, size, latency at batch 1 and 64 (median, p90) in PyTorch eager, ONNX Runtime and
    OpenVINO, throughput, peak memory, MACs and achieved GMAC/s, energy where measurable. All
    rows are timed in one round-robin on the same pinned cores."""
    from edgeprune.errors import EdgepruneError
    from edgeprune.runtime import bench as rb
    from edgeprune.runtime.backends import parse_runtimes

    if compare is not None:
        if artifacts:
            raise EdgepruneError("--compare takes two CSV files and no artifacts")
        result = rb.compare(rb.read_csv(compare[0]), rb.read_csv(compare[1]))
        if as_json:
            typer.echo(json.dumps(result, indent=2, default=str))
        else:
            console.print(render_compare(result))
        return
    if not artifacts:
        raise EdgepruneError("name at least one artifact to bench (or --compare A.csv B.csv)")
    runtimes = parse_runtimes(runtime)  # an unknown or missing backend fails before any work
    only_onnx = all(p.suffix.lower() == ".onnx" and p.is_file() for p in artifacts)
    if _torch_available():
        from edgeprune.workflows.bench import bench_artifacts

        rows = bench_artifacts(artifacts, data=data, threads=threads, budget_s=budget,
                               device=device_label, max_per_class=max_per_class,
                               memory=not no_memory, runtimes=runtimes, log=log)
    elif only_onnx:
        log(f"torch is not installed: benching on {', '.join(runtimes)} alone")
        rows = rb.bench_onnx_files([str(p) for p in artifacts], data=data, threads=threads,
                                   budget_s=budget, device=device_label,
                                   max_per_class=max_per_class, memory=not no_memory,
                                   runtimes=runtimes)
    else:
        raise EdgepruneError(
            "checkpoints and sparse files need PyTorch (the full edgeprune install); with the "
            "runtime extra alone, bench .onnx files"
        )
    if csv_path is not None:
        rb.write_csv(rows, csv_path, inputs=artifacts)
        log(f"wrote {csv_path}")
    if as_json:
        typer.echo(json.dumps(rows, indent=2, default=str))
    else:
        console.print(render_bench(rows))
        for row in rows:
            if row.get("notes"):
                log(f"{row['artifact']} ({row['runtime']}): {row['notes']}")
