"""`export_checkpoint`: checkpoint -> verified deployable artifact (+ a FILE.json report).

Formats
- `onnx`: FP32 ONNX of the model as stored (a channel-pruned checkpoint is already physically
  slim), dynamic batch, preprocessing and class names in the metadata.
- `onnx-int8`: the FP32 graph quantized statically by ONNX Runtime (QDQ, per-channel INT8
  weights), calibrated on training images; accuracy re-measured on the test split.
- `sparse`: the sparse container of `edgeprune.export.sparse` (bit-identical restore).

Every artifact is checked against the PyTorch model on real test images when data is given (FP32
must agree on >= 99.9% of images, or the export fails and the file is set aside as
FILE.rejected); without data, FP32 and sparse exports are checked on random inputs and the report
says so loudly.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from torch import nn

from edgeprune import __version__
from edgeprune.errors import EdgepruneError
from edgeprune.export.verify import FP32_MIN_AGREEMENT, VerificationReport
from edgeprune.runtime import metadata as md
from edgeprune.runtime.measure import file_size, gzip_size
from edgeprune.runtime.preprocess import normalize

FORMATS = ("onnx", "onnx-int8", "sparse")
SUFFIXES = {"onnx": ".onnx", "onnx-int8": ".onnx", "sparse": ".epsparse"}

Log = Callable[[str], None]


@dataclass
class ExportResult:
    path: Path
    format: str
    report_path: Path  # the FILE.json sidecar
    verification: VerificationReport
    info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"artifact": str(self.path), "format": self.format, "report": str(self.report_path),
                "verification": self.verification.to_dict(), **self.info}


def sidecar_path(path: str | Path) -> Path:
    p = Path(path)
    return p.with_name(p.name + ".json")


def base_metadata(model: nn.Module, meta, checkpoint: str | Path, fmt: str) -> dict[str, Any]:
    """The metadata every ONNX artifact carries (decoded values; `md.encode` makes strings)."""
    from edgeprune.metrics import count_macs, count_params

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
        md.SOURCE_CHECKPOINT: str(checkpoint),
        md.MACS: int(macs),
        md.PARAMS: int(params["params"]),
        md.WEIGHT_SPARSITY_FP32: params["weight_sparsity"],
        md.PRUNING: meta.pruning or None,
    }


def set_onnx_metadata(path: str | Path, values: dict[str, Any]) -> None:
    """Add or replace metadata_props entries of an ONNX file in place (values are encoded)."""
    import onnx

    model = onnx.load(str(path))
    props = {p.key: p.value for p in model.metadata_props}
    props.update(md.encode(values))
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, props)
    tmp = Path(str(path) + ".tmp")
    onnx.save(model, str(tmp))
    tmp.replace(path)


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
    fmt: str,
    out: str | Path,
    *,
    data=None,
    threads: int = 1,
    calibration_images: int = 300,
    calibrate_method: str = "minmax",
    opset: int = 18,
    max_verify_images: int | None = None,
    seed: int = 0,
    log: Log | None = None,
) -> ExportResult:
    """Export an edgeprune checkpoint folder to `out` in format `fmt`, verified.

    data: a DataBundle with the checkpoint's classes at its input size (`load_data(...,
    image_size=meta.input_size)`): its test split verifies the artifact, its training split
    calibrates INT8. Required for `onnx-int8`."""
    from edgeprune.models import load_checkpoint

    say = log or (lambda _m: None)
    if fmt not in FORMATS:
        raise EdgepruneError(f"unknown export format {fmt!r}: choose one of {', '.join(FORMATS)}")
    ckpt = Path(checkpoint)
    if not ckpt.exists():
        raise EdgepruneError(f"checkpoint not found: {ckpt}")
    if fmt == "onnx-int8" and data is None:
        raise EdgepruneError("quantizing needs calibration data: pass --data")
    if calibration_images < 1:
        raise EdgepruneError(f"calibration images must be >= 1, got {calibration_images}")
    model, meta = load_checkpoint(ckpt, "cpu")
    if data is not None:
        _check_data(meta, data)
    images, labels = _test_images(data, max_verify_images)
    data_name = data.name if data is not None else None
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)

    if fmt == "sparse":
        result = _export_sparse(ckpt, model, meta, out, images, labels, data_name, say)
    else:
        result = _export_onnx(ckpt, model, meta, fmt, out, images, labels, data, threads,
                              calibration_images, calibrate_method, opset, seed, say)
    report = result.verification
    sidecar = {
        "artifact": str(out),
        "format": fmt,
        "source_checkpoint": str(ckpt),
        "edgeprune_version": __version__,
        "file_bytes": file_size(out),
        "gzip_bytes": gzip_size(out),
        **result.info,
        "verification": report.to_dict(),
    }
    result.info.update(file_bytes=sidecar["file_bytes"], gzip_bytes=sidecar["gzip_bytes"])
    result.report_path.write_text(json.dumps(sidecar, indent=2) + "\n", encoding="utf-8")
    say(report.summary())
    for note in report.notes:
        say(f"NOTE: {note}")
    if not report.passed:
        rejected = out.with_name(out.name + ".rejected")
        out.replace(rejected)
        why = (
            "restored weights differ from the checkpoint's"
            if report.weights_identical is False
            else f"top-1 agreement {report.top1_agreement:.4%} is below the required "
            f"{report.min_agreement:.1%}"
        )
        raise EdgepruneError(
            f"export failed verification: {why} (max |logit diff| {report.max_abs_diff:.3g}); "
            f"the artifact was moved to {rejected}, the report is {result.report_path}"
        )
    return result


def _export_onnx(ckpt, model, meta, fmt, out, images, labels, data, threads, n_calib,
                 calibrate_method, opset, seed, say) -> ExportResult:
    from edgeprune.export.onnx import export_onnx
    from edgeprune.export.verify import verify_onnx

    values = base_metadata(model, meta, ckpt, fmt)
    info: dict[str, Any] = {"macs": values[md.MACS], "params": values[md.PARAMS],
                            "weight_sparsity_fp32": values[md.WEIGHT_SPARSITY_FP32]}
    if fmt == "onnx":
        say(f"exporting {ckpt} to FP32 ONNX (opset {opset}, dynamic batch)")
        export_onnx(model, out, input_size=meta.input_size, opset=opset, dynamic_batch=True,
                    metadata=md.encode(values))
        min_agreement: float | None = FP32_MIN_AGREEMENT
    else:
        from edgeprune.export.int8 import pick_calibration_indices, quantize_int8

        train_labels = data.train.labels.numpy()
        if len(train_labels) == 0:
            raise EdgepruneError(f"{data.name} has no training images to calibrate INT8 with")
        idx = pick_calibration_indices(train_labels, n_calib, seed=seed)
        calib = normalize(data.train.images.numpy()[idx], meta.mean, meta.std)
        with tempfile.TemporaryDirectory(prefix="edgeprune-export-") as tmp:
            fp32 = Path(tmp) / "fp32.onnx"
            say(f"exporting {ckpt} to FP32 ONNX (opset {opset}) for quantization")
            export_onnx(model, fp32, input_size=meta.input_size, opset=opset, dynamic_batch=True)
            say(f"quantizing to INT8 (QDQ, per-channel weights), calibrated on {len(idx)} "
                f"training images of {data.name}")
            sparsity = quantize_int8(fp32, out, calib, per_channel=True,
                                     calibrate_method=calibrate_method, log=say)
        if not sparsity.zeros_kept:
            raise EdgepruneError(
                "INT8 quantization did not keep the FP32 model's zero weights (or none could be "
                f"matched): {sparsity.to_dict()}"
            )
        calibration = {"images": int(len(idx)), "method": calibrate_method, "data": data.name,
                       "split": "train", "seed": seed, "per_channel": True,
                       "activations": "uint8 asymmetric", "weights": "int8 symmetric"}
        values[md.WEIGHT_SPARSITY_INT8] = sparsity.int8_sparsity
        values[md.CALIBRATION] = calibration
        info.update(int8=sparsity.to_dict(), calibration=calibration)
        say(f"weight sparsity FP32 {sparsity.fp32_sparsity:.4f} -> INT8 {sparsity.int8_sparsity:.4f} "
            f"(every FP32 zero still zero: {sparsity.zeros_kept})")
        set_onnx_metadata(out, values)
        min_agreement = None
    n = "random inputs" if images is None else f"{len(images)} test images"
    say(f"verifying {out.name} against PyTorch on {n}")
    report = verify_onnx(out, model, images, labels=labels, data_name=data and data.name,
                         min_agreement=min_agreement, threads=threads)
    if report.artifact_accuracy is not None:
        accuracy = {md.TEST_ACCURACY: report.artifact_accuracy,
                    md.REFERENCE_ACCURACY: report.reference_accuracy,
                    md.ACCURACY_DATA: f"{data.name} (test, {report.n_images} images)"}
        set_onnx_metadata(out, accuracy)
        info.update(test_accuracy=report.artifact_accuracy, reference_accuracy=report.reference_accuracy)
    info["metadata"] = md.decode(_read_props(out))
    return ExportResult(out, fmt, sidecar_path(out), report, info)


def _read_props(path: Path) -> dict[str, str]:
    import onnx

    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


def _export_sparse(ckpt, model, meta, out, images, labels, data_name, say) -> ExportResult:
    from edgeprune.export.sparse import read_sparse_arrays, sparse_summary, write_sparse_arrays
    from edgeprune.export.verify import verify_sparse
    from edgeprune.metrics import weight_file_sizes
    from edgeprune.models.checkpoint import read_manifest

    say(f"writing {ckpt} as sparse storage (bitmask + values, xz)")
    state = {k: v.detach().cpu().contiguous().numpy() for k, v in model.state_dict().items()}
    write_sparse_arrays(out, state, read_manifest(ckpt))
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
