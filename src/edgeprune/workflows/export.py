"""`export_checkpoint`: checkpoint -> verified deployable artifact (+ a FILE.json report).

Formats
- `onnx`: FP32 ONNX of the model as stored (a channel-pruned checkpoint is already physically
  slim), dynamic batch, preprocessing and class names in the metadata.
- `onnx-int8`: the FP32 graph quantized statically by ONNX Runtime (QDQ, per-channel INT8
  weights), calibrated on training images; accuracy re-measured on the test split and gated:
  at most `max_drop` percentage points below the FP32 model's on the same images.
- `openvino-int8`: OpenVINO IR (MODEL.xml + MODEL.bin) quantized by NNCF's post-training
  quantization from the same FP32 graph and calibration images (`edgeprune.export.openvino`);
  runs on OpenVINO only; verified and gated like `onnx-int8`, and timed on OpenVINO against the
  FP32 file and against ONNX Runtime's QDQ file (which OpenVINO runs too).
- `sparse`: the sparse container of `edgeprune.export.sparse` (bit-identical restore).

Every artifact is checked against the PyTorch model on real test images when data is given (FP32
must agree on >= 99.9% of images, INT8 must pass its accuracy gate, sparse must restore every
tensor bit for bit, or the export fails and the file is set aside as FILE.rejected, its report
as FILE.rejected.json); without data, FP32 and sparse exports are checked on random inputs only
and the report says so loudly.

Nothing is lost: `out` is checked before the work (an existing artifact or report is replaced
only with overwrite; never a checkpoint's own file, an input, or a path inside a checkpoint
folder), the artifact and its report are made and verified under unique temporary names beside
`out`, and only a verified pair is renamed into place. An export killed or failing at any point
leaves the previous artifact and its report as they were.

Artifacts and reports name their source checkpoint by folder name and the sha256 of its
model.safetensors, never by path: the path belongs to the training machine's disk.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path, PureWindowsPath
from typing import Any, Callable

import numpy as np
from torch import nn

from edgeprune import __version__
from edgeprune.errors import EdgepruneError
from edgeprune.outputs import atomic_file, check_output_file, file_sha256, publish_files, staging_folder
from edgeprune.validation import check_option
from edgeprune.export.verify import (
    FP32_MIN_AGREEMENT,
    INT8_MAX_DROP,
    RANDOM_INPUTS_WARNING,
    VerificationReport,
)
from edgeprune.runtime import metadata as md
from edgeprune.runtime.measure import file_size, gzip_size
from edgeprune.runtime.preprocess import normalize

FORMATS = ("onnx", "onnx-int8", "openvino-int8", "sparse")
SUFFIXES = {"onnx": ".onnx", "onnx-int8": ".onnx", "openvino-int8": ".xml", "sparse": ".epsparse"}
INT8_FORMATS = ("onnx-int8", "openvino-int8")

Log = Callable[[str], None]


@dataclass
class ExportResult:
    path: Path
    format: str
    report_path: Path  # the FILE.json sidecar
    verification: VerificationReport
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def warnings(self) -> list[str]:
        """What a user should know before shipping this file, measured here: INT8 that is not
        faster than FP32, an OpenVINO IR slower than the QDQ file, a check on random inputs only.
        The CLI prints them; Python callers read them here."""
        out = list(self.info.get("warnings", []))  # the verification's own (random inputs)
        for backend, speed in self.info.get("int8_speed", {}).items():
            if not speed["faster"]:
                out.append(f"INT8 is not faster than FP32 on {backend} here: batch-1 {speed['int8_b1_ms']:.3f} "
                           f"vs {speed['fp32_b1_ms']:.3f} ms ({speed['device']}, {speed['isa'] or 'no VNNI'}): "
                           "keep the FP32 file for speed, or measure at the camera's resolution")
        ov_speed = self.info.get("openvino_int8_speed")
        if ov_speed and not ov_speed["ir_beats_qdq"]:
            out.append(f"NNCF's OpenVINO IR is not faster than OpenVINO running the QDQ .onnx here: batch-1 "
                       f"{ov_speed['ir_b1_ms']:.3f} vs {ov_speed['qdq_b1_ms']:.3f} ms ({ov_speed['device']}): "
                       "ship `--format onnx-int8` to OpenVINO instead")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"artifact": str(self.path), "format": self.format, "report": str(self.report_path),
                "verification": self.verification.to_dict(), **self.info, "warnings": self.warnings}


def sidecar_path(path: str | Path) -> Path:
    p = Path(path)
    return p.with_name(p.name + ".json")


def rejected_path(path: str | Path) -> Path:
    """Where an artifact that failed verification is set aside (its report: FILE.rejected.json)."""
    p = Path(path)
    return p.with_name(p.name + ".rejected")


def check_export_out(out: str | Path, *, inputs=(), overwrite: bool = False) -> Path:
    """The artifact path and its FILE.json report: refused before any work when they would
    replace something without `overwrite`, or an input / a checkpoint's file ever."""
    companions = [sidecar_path(out)]
    if Path(out).suffix.lower() == ".xml":  # an OpenVINO IR: its weights file too
        from edgeprune.runtime.metadata import ir_bin_path

        companions.append(ir_bin_path(out))
    return check_output_file(out, inputs=inputs, overwrite=overwrite,
                             companions=companions, what="artifact")


def checkpoint_source(checkpoint: str | Path) -> dict[str, str]:
    """The checkpoint's folder name and the sha256 of its weights: identifies it without a path."""
    from edgeprune.models.checkpoint import WEIGHTS_FILE

    ckpt = Path(checkpoint)
    return {"name": ckpt.resolve().name, "sha256": file_sha256(ckpt / WEIGHTS_FILE)}


def portable_record(value: Any) -> Any:
    """A copy of a checkpoint record (e.g. the pruning record, nested through `previous`) with
    every `source_checkpoint` path cut to its folder name (PureWindowsPath: splits at / and at
    backslashes, whichever machine wrote the path)."""
    if isinstance(value, dict):
        return {
            k: PureWindowsPath(v).name if k == "source_checkpoint" and isinstance(v, str)
            else portable_record(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [portable_record(v) for v in value]
    return value


def base_metadata(model: nn.Module, meta, checkpoint: str | Path | dict[str, str], fmt: str) -> dict[str, Any]:
    """The metadata every ONNX artifact carries (decoded values; `md.encode` makes strings).

    checkpoint: the checkpoint folder, or its `checkpoint_source` when already computed."""
    from edgeprune.metrics import count_macs, count_params

    source = checkpoint if isinstance(checkpoint, dict) else checkpoint_source(checkpoint)

    macs, _ = count_macs(model, meta.input_size)
    params = count_params(model)
    return {
        md.PRODUCER: "edgeprune",
        md.VERSION: __version__,
        md.FORMAT: fmt,
        md.CLASS_NAMES: list(meta.class_names),
        md.INPUT_SIZE: int(meta.input_size),
        md.MEAN: [float(v) for v in meta.mean],
        md.STD: [float(v) for v in meta.std],
        md.SCALE: 1.0 / 255.0,
        md.LAYOUT: "NCHW",
        md.CHANNEL_ORDER: "RGB",
        md.RESIZE: "bilinear, to input_size x input_size (aspect ratio not kept)",
        md.ARCHITECTURE: meta.architecture,
        md.SOURCE_CHECKPOINT: source["name"],
        md.SOURCE_CHECKPOINT_SHA256: source["sha256"],
        md.MACS: int(macs),
        md.PARAMS: int(params["params"]),
        md.WEIGHT_SPARSITY_FP32: params["weight_sparsity"],
        md.PRUNING: portable_record(meta.pruning) or None,
        md.SPLIT: dict(meta.split) or None,
    }


def set_onnx_metadata(path: str | Path, values: dict[str, Any]) -> None:
    """Add or replace metadata_props entries of an ONNX file in place (values are encoded)."""
    import onnx

    model = onnx.load(str(path))
    props = {p.key: p.value for p in model.metadata_props}
    props.update(md.encode(values))
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, props)
    with atomic_file(path, overwrite=True) as tmp:
        onnx.save(model, str(tmp))


def _test_images(data, max_images: int | None) -> tuple[np.ndarray | None, np.ndarray | None]:
    if data is None:
        return None, None
    images = data.test.images.numpy()
    labels = data.test.labels.numpy()
    if max_images is not None and max_images < len(labels):
        from edgeprune.export.int8 import pick_calibration_indices

        keep = np.sort(pick_calibration_indices(labels, max_images, seed=0))
        images, labels = images[keep], labels[keep]
    if len(labels) == 0:
        raise EdgepruneError(f"the test split of {data.name} is empty: nothing to verify on")
    return images, labels


def _check_data(meta, data) -> None:
    from edgeprune.models import ensure_same_classes

    ensure_same_classes(meta, data.class_names, data.name)
    if data.image_size != meta.input_size:
        raise EdgepruneError(
            f"data loaded at {data.image_size}px but the checkpoint takes {meta.input_size}px: "
            f"load it with image_size={meta.input_size}"
        )


def export_checkpoint(
    checkpoint: str | Path,
    out: str | Path,
    fmt: str = "onnx",
    *,
    data=None,
    threads: int = 1,
    calibration_images: int = 300,
    calibrate_method: str = "minmax",
    opset: int = 18,
    max_verify_images: int | None = None,
    max_drop: float = INT8_MAX_DROP,
    seed: int = 0,
    overwrite: bool = False,
    operating_point: str | None = None,
    ok_classes: tuple[str, ...] | list[str] | None = None,
    log: Log | None = None,
) -> ExportResult:
    """export_model on an edgeprune checkpoint folder; the artifact names it by folder name and
    the sha256 of its model.safetensors (never by path). `out` may not lie inside the folder."""
    from edgeprune.models import Model

    ckpt = Path(checkpoint)
    if not ckpt.exists():
        raise EdgepruneError(f"checkpoint not found: {ckpt}")
    # Options and the output location before loading anything.
    check_export_options(fmt, data, calibration_images, max_drop, threads, opset, max_verify_images, seed)
    check_operating_point_options(fmt, data, operating_point, ok_classes)
    check_export_out(out, inputs=(ckpt,), overwrite=overwrite)
    return export_model(
        Model.load(ckpt, "cpu"), out, fmt, data=data, threads=threads,
        calibration_images=calibration_images, calibrate_method=calibrate_method, opset=opset,
        max_verify_images=max_verify_images, max_drop=max_drop, seed=seed,
        source=checkpoint_source(ckpt), overwrite=overwrite, inputs=(ckpt,),
        operating_point=operating_point, ok_classes=ok_classes, log=log,
    )


def split_ok_scores(classifier, split, ok_classes) -> tuple[np.ndarray, np.ndarray]:
    """(P(OK), is a defect) per image of a split, through an artifact's Classifier."""
    from edgeprune.runtime import softmax
    from edgeprune.runtime.operating_point import ok_probability

    probs = softmax(classifier.predict_uint8(split.images.numpy()))
    ok_index = [classifier.class_names.index(c) for c in ok_classes]
    return (ok_probability(probs, classifier.class_names, ok_classes),
            ~np.isin(split.labels.numpy(), ok_index))


def apply_operating_point(path: Path, data, target: str, ok_classes: tuple[str, ...], *, threads: int = 1,
                          log: Log | None = None) -> dict[str, Any]:
    """Choose the artifact's operating point on data's validation split (scored by the artifact
    itself: an INT8 file's probabilities are not its FP32 model's), store it in the metadata and
    return it with the figures it reaches on the test split."""
    from edgeprune.runtime import Classifier
    from edgeprune.runtime.operating_point import choose_operating_point, decision_figures

    if len(data.val.labels) == 0:
        raise EdgepruneError("--operating-point chooses its threshold on the validation split, and "
                             f"{data.name} has none: use --val-fraction > 0")
    classifier = Classifier(path, runtime="openvino" if path.suffix.lower() == ".xml" else "onnxruntime",
                            threads=threads)
    val_ok, val_defect = split_ok_scores(classifier, data.val, ok_classes)
    if not val_defect.any() or val_defect.all():
        raise EdgepruneError(f"the validation split of {data.name} holds "
                             f"{'no defect' if not val_defect.any() else 'no OK'} image: no operating "
                             "point can be chosen on it")
    point = choose_operating_point(
        val_ok, val_defect, target, ok_classes=ok_classes,
        chosen_on=f"validation split of {data.name}: {len(val_defect)} images, {int(val_defect.sum())} defects")
    set_artifact_metadata(path, {md.OPERATING_POINT: point.to_dict()})
    test = decision_figures(*split_ok_scores(classifier, data.test, ok_classes), point.ok_threshold)
    (log or (lambda _m: None))(
        f"operating point {point.target}: DEFECT when P(OK) < {point.ok_threshold:.4f}; validation "
        f"defect recall {point.val_defect_recall:.4f}, false rejects {point.val_false_reject_rate:.4f}; "
        f"test defect recall {test.defect_recall if test.defect_recall is None else round(test.defect_recall, 4)} "
        f"({test.defects_caught}/{test.defects}), false rejects "
        f"{test.false_reject_rate if test.false_reject_rate is None else round(test.false_reject_rate, 4)} "
        f"({test.false_rejects}/{test.oks})")
    return {**point.to_dict(), "test": test.to_dict()}


def drift_reference(path: Path, data, *, threads: int = 1, log: Log | None = None) -> dict[str, Any] | None:
    """Record the station's drift reference in the artifact's metadata: the input statistics and
    the top probability (scored by the artifact itself) of data's validation images, as decile
    bins (edgeprune.runtime.drift). None, with a note, when there are too few validation images."""
    from edgeprune.runtime import Classifier, softmax
    from edgeprune.runtime.drift import DriftReference, batch_statistics

    say = log or (lambda _m: None)
    images = data.val.images.numpy()
    if len(images) < 20:
        say(f"NOTE: no drift reference: the validation split of {data.name} has {len(images)} images "
            "(20 or more needed; --val-fraction); the station will not watch for input drift")
        return None
    classifier = Classifier(path, runtime="openvino" if path.suffix.lower() == ".xml" else "onnxruntime",
                            threads=threads)
    top = softmax(classifier.predict_uint8(images)).max(axis=1)
    reference = DriftReference.build(batch_statistics(images), top,
                                     chosen_on=f"validation split of {data.name}: {len(images)} images")
    set_artifact_metadata(path, {md.DRIFT_REFERENCE: reference.to_dict()})
    q = {name: bins.quantiles["p50"] for name, bins in reference.features.items()}
    say(f"drift reference on {len(images)} validation images: median brightness {q['brightness']:.1f}, "
        f"contrast {q['contrast']:.1f}, sharpness {q['sharpness']:.1f}, top probability {q['top_probability']:.3f}")
    return {"images": reference.images, "chosen_on": reference.chosen_on,
            "medians": {k: round(v, 4) for k, v in q.items()}}


def check_operating_point_options(fmt: str, data, operating_point: str | None, ok_classes) -> None:
    """--operating-point needs validation images with defects and the OK class names."""
    if operating_point is None:
        if ok_classes:
            raise EdgepruneError("--ok-class goes with --operating-point")
        return
    from edgeprune.runtime.operating_point import parse_target

    parse_target(operating_point)
    if fmt == "sparse":
        raise EdgepruneError("--operating-point needs an ONNX or OpenVINO artifact (sparse files are "
                             "restored to PyTorch, which decides by top-1)")
    if data is None:
        raise EdgepruneError("--operating-point chooses its threshold on the validation split: pass --data")
    if not ok_classes:
        raise EdgepruneError("--operating-point needs the OK class(es): --ok-class NAME (repeatable), "
                             "every other class is a defect")


def check_export_options(fmt: str, data, calibration_images: int, max_drop: float, threads: int,
                         opset: int, max_verify_images: int | None, seed: int) -> None:
    """Every export option, before anything is loaded (`data`: whether data was given)."""
    if fmt not in FORMATS:
        raise EdgepruneError(f"unknown export format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if fmt in INT8_FORMATS and data is None:
        raise EdgepruneError("quantizing needs calibration data: pass --data")
    check_option("calibration_images", calibration_images)
    check_option("max_drop", max_drop)
    check_option("threads", threads)
    check_option("opset", opset)
    check_option("max_verify_images", max_verify_images, optional=True)
    check_option("seed", seed)


def export_model(
    model,
    out: str | Path,
    fmt: str = "onnx",
    *,
    data=None,
    threads: int = 1,
    calibration_images: int = 300,
    calibrate_method: str = "minmax",
    opset: int = 18,
    max_verify_images: int | None = None,
    max_drop: float = INT8_MAX_DROP,
    seed: int = 0,
    source: dict[str, str] | None = None,
    overwrite: bool = False,
    inputs: tuple[str | Path, ...] = (),
    operating_point: str | None = None,
    ok_classes: tuple[str, ...] | list[str] | None = None,
    log: Log | None = None,
) -> ExportResult:
    """Export an `edgeprune.models.Model` to `out` in format `fmt`, verified, with a FILE.json
    report beside it; a file that fails verification is moved to FILE.rejected and this raises.

    data: a DataBundle with the model's classes at its input size: its test split verifies the
    artifact, its training split calibrates INT8, its validation split gives the station's drift
    reference (`edgeprune.drift_reference`: input statistics and top probabilities as decile
    bins, through the artifact itself; none below 20 validation images). Required for `onnx-int8`.
    max_drop: `onnx-int8` only: the largest allowed drop of INT8 test accuracy below the FP32
    model's, in percentage points; a larger drop fails the export (FILE.rejected).
    source: {"name", "sha256"} of the checkpoint it came from (default: "in-memory model" and the
    sha256 its weights would have as model.safetensors).
    overwrite: replace an existing artifact and report at `out` (never an input: `inputs`).
    operating_point: "defect_recall=0.98" (the threshold on P(OK) chosen on data's validation split
    for that recall, through the artifact itself) or "ok_threshold=0.7"; ok_classes name the OK
    classes (every other one is a defect). Stored in the artifact's metadata; the station and
    bench apply it. The report gives the figures it reaches on the test split."""
    from edgeprune.models.checkpoint import weights_sha256
    from edgeprune.models.zoo import check_finite

    say = log or (lambda _m: None)
    check_export_options(fmt, data, calibration_images, max_drop, threads, opset, max_verify_images, seed)
    check_operating_point_options(fmt, data, operating_point, ok_classes)
    out = check_export_out(out, inputs=inputs, overwrite=overwrite)
    meta = model.meta
    module = model.module.cpu().eval()
    check_finite(module.state_dict(), "refusing to export the model")
    source = source or {"name": "in-memory model", "sha256": weights_sha256(module)}
    if data is not None:
        _check_data(meta, data)
    images, labels = _test_images(data, max_verify_images)
    data_name = data.name if data is not None else None

    # Made and verified under a unique temporary folder beside `out`; only a verified artifact
    # and its report are renamed into place, so a killed or failed export leaves the previous
    # pair untouched and two exports to the same `out` never write into each other's files.
    if fmt == "openvino-int8" and out.suffix.lower() != ".xml":
        raise EdgepruneError(f"--format openvino-int8 writes OpenVINO IR: name the file MODEL.xml "
                             f"(MODEL.bin goes beside it), got {out.name}")
    with staging_folder(out) as stage:
        work = stage / out.name
        if fmt == "sparse":
            result = _export_sparse(module, meta, source, work, images, labels, data_name, say)
        else:
            result = _export_onnx(module, meta, source, fmt, work, images, labels, data, threads,
                                  calibration_images, calibrate_method, opset, max_drop, seed, say)
            if operating_point is not None and result.verification.passed:
                result.info["operating_point"] = apply_operating_point(
                    work, data, operating_point, tuple(ok_classes), threads=threads, log=say)
                result.info["metadata"] = md.decode(_read_props(work))
            if data is not None and result.verification.passed:
                result.info["drift_reference"] = drift_reference(work, data, threads=threads, log=say)
                result.info["metadata"] = md.decode(_read_props(work))
        report = dataclasses.replace(result.verification, artifact=str(out))
        final = out if report.passed else rejected_path(out)
        result = ExportResult(final, fmt, sidecar_path(final), report, result.info)
        pairs = [(work, final)]
        if fmt == "openvino-int8":
            from edgeprune.runtime.metadata import ir_bin_path

            pairs.append((ir_bin_path(work), ir_bin_path(final)))
            result.info["weights_file"] = ir_bin_path(out).name
            result.info["weights_sha256"] = file_sha256(ir_bin_path(work))
        result.info.update(
            source_checkpoint=source["name"], source_checkpoint_sha256=source["sha256"],
            verified_on="real test images" if report.real_images else "random inputs",
            warnings=[] if report.real_images else [RANDOM_INPUTS_WARNING],
            # an IR's sizes count its .bin too (runtime.measure)
            file_bytes=file_size(work), gzip_bytes=gzip_size(work),
            artifact_sha256=file_sha256(work),  # ties the report to the very file it describes
        )
        sidecar = {
            # Names, not paths: the report sits beside the artifact and may travel with it.
            "artifact": final.name,
            "format": fmt,
            "edgeprune_version": __version__,
            **result.info,
            "verification": {**report.to_dict(), "artifact": out.name},
            "passed": report.passed,
            "rejected": not report.passed,
        }
        work_report = stage / sidecar_path(out).name
        work_report.write_text(json.dumps(sidecar, indent=2) + "\n", encoding="utf-8")
        say(report.summary())
        for note in report.notes:
            say(f"NOTE: {note}")
        # A rejected artifact replaces an earlier rejected one: it failed, nothing of value.
        publish_files([*pairs, (work_report, result.report_path)],
                      overwrite=overwrite or not report.passed, what="artifact")
    if not report.passed:
        raise EdgepruneError(
            f"export failed verification: {'; '.join(_failures(report))}; "
            f"the artifact was set aside as {final}, the report is {result.report_path}"
            + (f" ({out} was left as it was)" if out.exists() else "")
        )
    return result


def _failures(report: VerificationReport) -> list[str]:
    """Why a report did not pass, one phrase per failed check."""
    why = []
    if report.weights_identical is False:
        why.append("restored weights differ from the checkpoint's")
    if not report.agreement_ok:
        why.append(f"top-1 agreement {report.top1_agreement:.4%} is below the required "
                   f"{report.min_agreement:.1%} (max |logit diff| {report.max_abs_diff:.3g})")
    if not report.accuracy_ok:
        if report.accuracy_drop is None:
            why.append("no test accuracy was measured for the accuracy gate")
        else:
            why.append(
                f"INT8 test accuracy {report.artifact_accuracy:.2%} is {report.accuracy_drop:.2f} "
                f"points below the FP32 model's {report.reference_accuracy:.2%} (allowed: "
                f"{report.max_accuracy_drop:g} points, --max-drop)"
            )
    return why


def _export_onnx(model, meta, source, fmt, out, images, labels, data, threads, n_calib,
                 calibrate_method, opset, max_drop, seed, say) -> ExportResult:
    from edgeprune.export.onnx import export_onnx
    from edgeprune.export.verify import verify_onnx

    values = base_metadata(model, meta, source, fmt)
    info: dict[str, Any] = {"macs": values[md.MACS], "params": values[md.PARAMS],
                            "weight_sparsity_fp32": values[md.WEIGHT_SPARSITY_FP32]}
    if fmt == "onnx":
        say(f"exporting {source['name']} to FP32 ONNX (opset {opset}, dynamic batch)")
        export_onnx(model, out, input_size=meta.input_size, opset=opset, dynamic_batch=True,
                    metadata=md.encode(values))
        min_agreement: float | None = FP32_MIN_AGREEMENT
        gate: float | None = None
    else:
        from edgeprune.export.int8 import pick_calibration_indices, quantize_int8

        train_labels = data.train.labels.numpy()
        if len(train_labels) == 0:
            raise EdgepruneError(f"{data.name} has no training images to calibrate INT8 with")
        idx = pick_calibration_indices(train_labels, n_calib, seed=seed)
        calib = normalize(data.train.images.numpy()[idx], meta.mean, meta.std)
        with tempfile.TemporaryDirectory(prefix="edgeprune-export-") as tmp:
            fp32 = Path(tmp) / "fp32.onnx"
            say(f"exporting {source['name']} to FP32 ONNX (opset {opset}) for quantization")
            export_onnx(model, fp32, input_size=meta.input_size, opset=opset, dynamic_batch=True)
            say(f"quantizing to INT8 (QDQ, per-channel weights), calibrated on {len(idx)} "
                f"training images of {data.name}")
            qdq = out if fmt == "onnx-int8" else Path(tmp) / "qdq.onnx"
            sparsity = quantize_int8(fp32, qdq, calib, per_channel=True,
                                     calibrate_method=calibrate_method, log=say)
            if fmt == "openvino-int8":
                from edgeprune.export.openvino import quantize_openvino

                quantize_openvino(fp32, out, calib, log=say)
                # NNCF's IR is kept only as the measurement says: timed on OpenVINO against the
                # FP32 file and against the QDQ file (same calibration), round-robin.
                info["openvino_int8_speed"] = openvino_int8_speed(fp32, qdq, out, meta.input_size,
                                                                  threads=threads)
                sp = info["openvino_int8_speed"]
                say(f"openvino: batch-1 NNCF IR {sp['ir_b1_ms']:.3f} ms, QDQ .onnx {sp['qdq_b1_ms']:.3f} "
                    f"ms, FP32 {sp['fp32_b1_ms']:.3f} ms ({sp['ir_vs_qdq']:.2f}x vs QDQ, "
                    f"{sp['ir_vs_fp32']:.2f}x vs FP32), round-robin on {sp['device']}, {threads} thread(s)")
            else:
                # "INT8 is faster" is measured, never assumed: both files on every installed backend.
                info["int8_speed"] = int8_speed(fp32, out, meta.input_size, threads=threads)
                for backend, speed in info["int8_speed"].items():
                    say(f"{backend}: batch-1 INT8 {speed['int8_b1_ms']:.3f} ms vs FP32 "
                        f"{speed['fp32_b1_ms']:.3f} ms ({speed['speedup']:.2f}x), measured round-robin "
                        f"on {speed['device']}, {threads} thread(s)")
        if not sparsity.zeros_kept:
            raise EdgepruneError(
                "INT8 quantization did not keep the FP32 model's zero weights (or none could be "
                f"matched): {sparsity.to_dict()}"
            )
        calibration = {"images": int(len(idx)), "method": calibrate_method, "data": data.name,
                       "split": "train", "seed": seed, "per_channel": True,
                       "activations": "uint8 asymmetric", "weights": "int8 symmetric"}
        if fmt == "openvino-int8":
            import nncf

            calibration.update(method=f"nncf {nncf.__version__} post-training (default preset)",
                               activations="int8 per tensor (NNCF)", weights="int8 symmetric per channel")
        else:
            values[md.WEIGHT_SPARSITY_INT8] = sparsity.int8_sparsity
        values[md.CALIBRATION] = calibration
        info.update(calibration=calibration)
        if fmt == "onnx-int8":  # the zeros' fate in the QDQ file (NNCF's IR stores its own weights)
            from edgeprune.export.int8 import optimized_graph

            info.update(int8=sparsity.to_dict())
            # What ONNX Runtime runs after optimisation: integer or float, conv by conv.
            graph = optimized_graph(out, threads=threads)
            info["optimized_graph"] = {k: v for k, v in graph.items() if k != "ops"}
            head = ", ".join(f"{h['op']} ({'integer' if h['integer'] else 'float'})" for h in graph["classifier"])
            say(f"ONNX Runtime optimised graph: {graph['integer_convs']} of {graph['convs']} convolutions "
                f"integer (depthwise {graph['depthwise_integer']} integer, {graph['depthwise_float']} float; "
                f"first conv {'integer' if graph['first_conv_integer'] else 'float'}), classifier {head or 'none'}")
            if graph["float_convs"]:
                say(f"NOTE: {len(graph['float_convs'])} convolution(s) stay float after optimisation "
                    f"(DequantizeLinear feeding FP32 kernels): {', '.join(graph['float_convs'][:8])}")
        say(f"weight sparsity FP32 {sparsity.fp32_sparsity:.4f} -> INT8 {sparsity.int8_sparsity:.4f} "
            f"(every FP32 zero still zero: {sparsity.zeros_kept})")
        set_artifact_metadata(out, values)
        # Rounding moves logits, so top-1 agreement is reported, not gated: the gate is accuracy.
        min_agreement = None
        gate = max_drop
    n = "random inputs" if images is None else f"{len(images)} test images"
    say(f"verifying {out.name} against PyTorch on {n}")
    report = verify_onnx(out, model, images, labels=labels, data_name=data and data.name,
                         min_agreement=min_agreement, max_accuracy_drop=gate, threads=threads)
    if gate is not None:
        info["accuracy_gate"] = {
            "metric": "test accuracy, INT8 artifact vs the FP32 PyTorch model, same images",
            "images": report.n_images,
            "max_drop_points": gate,
            "drop_points": report.accuracy_drop,
            "int8_accuracy": report.artifact_accuracy,
            "fp32_accuracy": report.reference_accuracy,
            "passed": report.accuracy_ok,
        }
    if report.artifact_accuracy is not None:
        accuracy = {md.TEST_ACCURACY: report.artifact_accuracy,
                    md.REFERENCE_ACCURACY: report.reference_accuracy,
                    md.ACCURACY_DATA: f"{data.name} (test, {report.n_images} images)"}
        set_artifact_metadata(out, accuracy)
        info.update(test_accuracy=report.artifact_accuracy, reference_accuracy=report.reference_accuracy)
    info["metadata"] = md.decode(_read_props(out))
    return ExportResult(out, fmt, sidecar_path(out), report, info)




def int8_speed(fp32: Path, int8: Path, input_size: int, *, threads: int = 1,
               budget_s: float | None = None) -> dict[str, dict[str, Any]]:
    """Batch-1 latency of the FP32 and the INT8 file on each installed backend, timed
    round-robin on the same cores (the "int8-speed" timing preset; `budget_s`: another budget per
    file): {backend: {fp32_b1_ms, int8_b1_ms, speedup, faster, device}}.
    Whether INT8 pays off depends on the CPU (VNNI), the backend and the shapes: at small inputs
    the quantize/dequantize work can outweigh the integer arithmetic."""
    from edgeprune.runtime.backends import available_backends, make_backend
    from edgeprune.runtime.measure import cpu_device_label, cpu_isa, time_round_robin

    x = np.random.default_rng(0).standard_normal((1, 3, input_size, input_size), dtype=np.float32)
    result = {}
    for name in available_backends():
        runs = {kind: make_backend(name, path, threads=threads) for kind, path in
                (("fp32", fp32), ("int8", int8))}
        timing = time_round_robin({kind: (lambda b=b: b.run(x)) for kind, b in runs.items()},
                                  _speed_policy(budget_s), cpus=threads)
        fp32_ms, int8_ms = timing["fp32"].median_ms, timing["int8"].median_ms
        result[name] = {"fp32_b1_ms": fp32_ms, "int8_b1_ms": int8_ms, "speedup": fp32_ms / int8_ms,
                        "faster": int8_ms < fp32_ms, "device": cpu_device_label(),
                        "isa": cpu_isa(), "threads": threads}
    return result


def _speed_policy(budget_s: float | None):
    from edgeprune.runtime.measure import timing_preset

    policy = timing_preset("int8-speed")
    return policy if budget_s is None else policy.with_budget(budget_s)


def openvino_int8_speed(fp32: Path, qdq: Path, ir: Path, input_size: int, *, threads: int = 1,
                        budget_s: float | None = None) -> dict[str, Any]:
    """Batch-1 latency on OpenVINO of the FP32 .onnx, ONNX Runtime's QDQ .onnx and NNCF's IR,
    timed round-robin on the same cores."""
    from edgeprune.runtime.backends import make_backend
    from edgeprune.runtime.measure import cpu_device_label, cpu_isa, time_round_robin

    x = np.random.default_rng(0).standard_normal((1, 3, input_size, input_size), dtype=np.float32)
    runs = {kind: make_backend("openvino", path, threads=threads)
            for kind, path in (("fp32", fp32), ("qdq", qdq), ("ir", ir))}
    timing = time_round_robin({kind: (lambda b=b: b.run(x)) for kind, b in runs.items()},
                              _speed_policy(budget_s), cpus=threads)
    ms = {kind: t.median_ms for kind, t in timing.items()}
    return {"fp32_b1_ms": ms["fp32"], "qdq_b1_ms": ms["qdq"], "ir_b1_ms": ms["ir"],
            "ir_vs_qdq": ms["qdq"] / ms["ir"], "ir_vs_fp32": ms["fp32"] / ms["ir"],
            "ir_beats_qdq": ms["ir"] < ms["qdq"], "backend": "openvino", "device": cpu_device_label(),
            "isa": cpu_isa(), "threads": threads}


def set_artifact_metadata(path: Path, values: dict[str, Any]) -> None:
    """Metadata into an ONNX file's metadata_props or an OpenVINO IR's rt_info."""
    if path.suffix.lower() == ".xml":
        from edgeprune.export.openvino import set_ir_metadata

        set_ir_metadata(path, md.encode(values))
    else:
        set_onnx_metadata(path, values)


def _read_props(path: Path) -> dict[str, str]:
    import onnx

    if path.suffix.lower() == ".xml":
        return md.read_props(path)

    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


def _export_sparse(model, meta, source, out, images, labels, data_name, say) -> ExportResult:
    from edgeprune.export.sparse import read_sparse_arrays, sparse_summary, write_sparse_arrays
    from edgeprune.export.verify import verify_sparse
    from edgeprune.metrics import weight_file_sizes
    from edgeprune.models.checkpoint import build_manifest

    say(f"writing {source['name']} as sparse storage (bitmask + values, xz)")
    state = {k: v.detach().cpu().contiguous().numpy() for k, v in model.state_dict().items()}
    manifest = build_manifest(model, meta)
    manifest["pruning"] = portable_record(manifest.get("pruning") or {})
    write_sparse_arrays(out, state, manifest,
                        source={"checkpoint": source["name"], "sha256": source["sha256"]})
    header, _ = read_sparse_arrays(out)
    summary = sparse_summary(header)
    dense_bytes, dense_gzip = weight_file_sizes(model)
    size = file_size(out)
    info = {
        "sparse": summary,
        "dense_bytes": dense_bytes,
        "dense_gzip_bytes": dense_gzip,
        "fraction_of_dense_gzip": size / dense_gzip,
        "size_note": "dense = this checkpoint's own weights stored dense (zeros included) as "
                     "safetensors, gzip level 9",
    }
    unpruned_params = (meta.pruning or {}).get("dense_params")
    if unpruned_params:  # exact: the unpruned model's float32 tensors, from the pruning record
        info["fraction_of_unpruned_float32"] = size / (4 * unpruned_params)
    say(f"{size:,} bytes = {size / dense_gzip:.1%} of the same weights stored dense and gzipped "
        f"({dense_gzip:,} bytes) at density {summary['density']:.4f}"
        + (f"; {info['fraction_of_unpruned_float32']:.1%} of the unpruned model's float32 weights"
           if unpruned_params else ""))
    report = verify_sparse(out, model, images, mean=meta.mean, std=meta.std, labels=labels,
                           data_name=data_name)
    return ExportResult(out, "sparse", sidecar_path(out), report, info)
