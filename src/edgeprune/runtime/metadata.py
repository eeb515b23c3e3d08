"""The metadata every edgeprune ONNX artifact carries, and how to read it back without torch.

ONNX `metadata_props` hold strings only, so lists and numbers are stored as JSON. The keys below
are the contract between `edgeprune.export` (which writes them) and this runtime (which reads
them to preprocess images itself: convert to RGB, resize to `input_size`, scale by 1/255,
subtract `mean`, divide by `std`, lay out as NCHW).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeprune.errors import EdgepruneError
from edgeprune.runtime.drift import DriftReference
from edgeprune.runtime.operating_point import OperatingPoint
from edgeprune.validation import check_number, check_option
from edgeprune.runtime.sessions import openvino_read, ort_session

# Keys written by edgeprune.export (values are strings; JSON where noted).
PRODUCER = "edgeprune.producer"  # "edgeprune"
VERSION = "edgeprune.version"
FORMAT = "edgeprune.format"  # "onnx" | "onnx-int8" | "openvino-int8" (an OpenVINO IR)
CLASS_NAMES = "edgeprune.class_names"  # JSON list of strings, in output order
INPUT_SIZE = "edgeprune.input_size"  # JSON int: square side in pixels
MEAN = "edgeprune.mean"  # JSON list of 3 floats (on the 0..1 scale)
STD = "edgeprune.std"  # JSON list of 3 floats
SCALE = "edgeprune.scale"  # JSON float: pixel scale applied before mean/std (1/255)
LAYOUT = "edgeprune.layout"  # "NCHW"
CHANNEL_ORDER = "edgeprune.channel_order"  # "RGB"
RESIZE = "edgeprune.resize"  # "bilinear (aspect ratio not kept)"
ARCHITECTURE = "edgeprune.architecture"
# The checkpoint folder's name only, never its path: the path names the training machine's disk.
SOURCE_CHECKPOINT = "edgeprune.source_checkpoint"
SOURCE_CHECKPOINT_SHA256 = "edgeprune.source_checkpoint_sha256"  # sha256 of its model.safetensors
MACS = "edgeprune.macs"  # JSON int: multiply-accumulates per image (counted at export)
PARAMS = "edgeprune.params"  # JSON int
PRUNING = "edgeprune.pruning"  # JSON object: the checkpoint's pruning record
TEST_ACCURACY = "edgeprune.test_accuracy"  # JSON float, measured on the artifact itself
REFERENCE_ACCURACY = "edgeprune.reference_accuracy"  # JSON float, the PyTorch model, same images
ACCURACY_DATA = "edgeprune.accuracy_data"  # the data set the accuracies were measured on
WEIGHT_SPARSITY_FP32 = "edgeprune.weight_sparsity_fp32"  # JSON float
WEIGHT_SPARSITY_INT8 = "edgeprune.weight_sparsity_int8"  # JSON float (int8 only)
CALIBRATION = "edgeprune.calibration"  # JSON object (int8 only): images, method, data
# JSON object: the data split the model was trained on (seed, fractions, fingerprint), so a bench
# with --data measures accuracy on that split's test images, never on images it trained on.
SPLIT = "edgeprune.split"
# JSON object (edgeprune.runtime.operating_point.OperatingPoint): the threshold on P(OK) chosen at
# export for a defect-recall target on the validation split; the station and bench apply it.
OPERATING_POINT = "edgeprune.operating_point"
# JSON object (edgeprune.runtime.drift.DriftReference): per-image input statistics and the top
# probability on the validation images, as decile bins; the station's drift test compares with it.
DRIFT_REFERENCE = "edgeprune.drift_reference"

JSON_KEYS = {
    CLASS_NAMES, INPUT_SIZE, MEAN, STD, SCALE, MACS, PARAMS, PRUNING, TEST_ACCURACY,
    REFERENCE_ACCURACY, WEIGHT_SPARSITY_FP32, WEIGHT_SPARSITY_INT8, CALIBRATION, SPLIT, OPERATING_POINT,
    DRIFT_REFERENCE,
}
REQUIRED = (CLASS_NAMES, INPUT_SIZE, MEAN, STD)


def encode(values: dict[str, Any]) -> dict[str, str]:
    """Metadata values as the strings ONNX stores: JSON for the JSON keys, str() otherwise."""
    out: dict[str, str] = {}
    for key, value in values.items():
        if value is None:
            continue
        out[key] = json.dumps(value) if key in JSON_KEYS else str(value)
    return out


def decode(props: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in props.items():
        if key in JSON_KEYS:
            try:
                out[key] = json.loads(value)
            except json.JSONDecodeError:
                out[key] = value
        else:
            out[key] = value
    return out


@dataclass
class ArtifactMetadata:
    """What the runtime needs to turn an image into the model's input and logits into labels."""

    class_names: list[str]
    input_size: int
    mean: list[float]
    std: list[float]
    scale: float = 1.0 / 255.0
    layout: str = "NCHW"
    channel_order: str = "RGB"
    format: str = "onnx"
    architecture: str | None = None
    macs: int | None = None
    test_accuracy: float | None = None
    raw: dict[str, Any] = field(default_factory=dict)  # every key, decoded

    @property
    def operating_point(self) -> OperatingPoint | None:
        """The decision threshold chosen at export (None: top-1 decides)."""
        value = self.raw.get(OPERATING_POINT)
        return OperatingPoint.from_dict(value) if isinstance(value, dict) else None

    @property
    def drift_reference(self) -> DriftReference | None:
        """The input-drift reference recorded at export (None: exported without one)."""
        value = self.raw.get(DRIFT_REFERENCE)
        return DriftReference.from_dict(value) if value is not None else None

    @property
    def split(self) -> dict[str, Any] | None:
        """The training split recorded at export (None for older artifacts)."""
        value = self.raw.get(SPLIT)
        return value if isinstance(value, dict) else None

    @classmethod
    def from_props(cls, props: dict[str, str], source: str = "the model") -> ArtifactMetadata:
        values = decode(props)
        missing = [k for k in REQUIRED if k not in values]
        if missing:
            raise EdgepruneError(
                f"{source} lacks edgeprune metadata ({', '.join(missing)}): it was not written by "
                "`edgeprune export`, so class names and preprocessing are unknown"
            )
        layout = values.get(LAYOUT, "NCHW")
        if layout != "NCHW":
            raise EdgepruneError(f"{source}: unsupported input layout {layout!r} (NCHW expected)")
        check_values(values, source)
        return cls(
            class_names=list(values[CLASS_NAMES]),
            input_size=int(values[INPUT_SIZE]),
            mean=[float(v) for v in values[MEAN]],
            std=[float(v) for v in values[STD]],
            scale=float(values.get(SCALE, 1.0 / 255.0)),
            layout=layout,
            channel_order=values.get(CHANNEL_ORDER, "RGB"),
            format=values.get(FORMAT, "onnx"),
            architecture=values.get(ARCHITECTURE),
            macs=int(values[MACS]) if values.get(MACS) is not None else None,
            test_accuracy=values.get(TEST_ACCURACY),
            raw=values,
        )


def _bad(source: str, key: str, problem: str, value: Any) -> EdgepruneError:
    shown = json.dumps(value, default=repr)
    return EdgepruneError(f"{source}: metadata {key} {problem}, found {shown[:80]}"
                          f"{'...' if len(shown) > 80 else ''}")


def check_values(values: dict[str, Any], source: str = "the model") -> None:
    """The decoded preprocessing and label metadata: of the right type and in range, so a hand-
    edited or damaged artifact fails here, not with wrong pixels or NaN confidences later."""
    names = values[CLASS_NAMES]
    # A JSON string here would be iterated character by character into one-letter labels.
    if not isinstance(names, list) or not all(isinstance(n, str) and n.strip() for n in names):
        raise _bad(source, CLASS_NAMES, "must be a JSON list of non-empty strings", names)
    if len(names) < 2 or len(set(names)) != len(names):
        raise _bad(source, CLASS_NAMES, "must name at least 2 distinct classes", names)
    check_option("input_size", values[INPUT_SIZE], name=f"{source}: metadata {INPUT_SIZE}")
    for key in (MEAN, STD):
        value = values[key]
        if not isinstance(value, list) or len(value) != 3:
            raise _bad(source, key, "must be a JSON list of 3 numbers (R, G, B)", value)
        for v in value:
            check_number(v, f"{source}: metadata {key} values")
    if any(v <= 0 for v in values[STD]):
        raise _bad(source, STD, "must hold 3 positive numbers (it divides every pixel)", values[STD])
    if SCALE in values:
        check_number(values[SCALE], f"{source}: metadata {SCALE}", min=0, min_open=True)
    if values.get(OPERATING_POINT) is not None:
        point = values[OPERATING_POINT]
        if not isinstance(point, dict):
            raise _bad(source, OPERATING_POINT, "must be a JSON object", point)
        point = OperatingPoint.from_dict(point, source)
        unknown = [c for c in point.ok_classes if c not in names]
        if unknown or set(point.ok_classes) >= set(names):
            raise _bad(source, OPERATING_POINT, "must name OK classes among the model's, not all of them",
                       list(point.ok_classes))
    if values.get(DRIFT_REFERENCE) is not None:
        DriftReference.from_dict(values[DRIFT_REFERENCE], source)


def check_graph(meta: ArtifactMetadata, input_shape: list, output_shape: list, source: str) -> None:
    """The metadata must describe the graph it sits in: an (N, 3, S, S) input with S the input
    size, and one output per class name (symbolic dimensions are checked at run time)."""
    size = meta.input_size
    if len(input_shape) != 4:
        raise EdgepruneError(f"{source}: the graph's input has shape {input_shape}, not (N, 3, H, W)")
    for dim, expected in zip(input_shape[1:], (3, size, size)):
        if isinstance(dim, int) and dim != expected:
            raise EdgepruneError(
                f"{source}: metadata {INPUT_SIZE} says {size} (RGB {size}x{size} input), but the "
                f"graph's input has shape {input_shape}: the metadata does not belong to this graph"
            )
    if len(output_shape) != 2:
        raise EdgepruneError(f"{source}: the graph's output has shape {output_shape}, not (N, classes)")
    classes = output_shape[1]
    if isinstance(classes, int) and classes != len(meta.class_names):
        raise EdgepruneError(
            f"{source}: metadata {CLASS_NAMES} names {len(meta.class_names)} classes, but the graph "
            f"outputs {classes} scores: the metadata does not belong to this graph"
        )


IR_RT_INFO = ["edgeprune", "metadata_props"]  # where an OpenVINO IR keeps the same props (JSON)


def is_openvino_ir(path: str | Path) -> bool:
    return Path(path).suffix.lower() == ".xml"


def ir_bin_path(xml: str | Path) -> Path:
    """The weights file OpenVINO reads beside MODEL.xml (MODEL.bin)."""
    p = Path(xml)
    return p.with_suffix(".bin") if p.suffix.lower() == ".xml" else Path(f"{p}.bin")


def ir_props(model) -> dict[str, str]:
    """The edgeprune metadata an OpenVINO IR carries in its rt_info (written by
    edgeprune.export.openvino), as the same {key: string} map an ONNX file's metadata_props give."""
    import json

    if not model.has_rt_info(IR_RT_INFO):
        return {}
    return json.loads(model.get_rt_info(IR_RT_INFO).astype(str))


def read_props(path: str | Path) -> dict[str, str]:
    """The metadata_props of an ONNX file, read through ONNX Runtime (no `onnx` package needed);
    for an OpenVINO IR (.xml), the same keys from its rt_info (needs openvino)."""
    p = Path(path)
    if not p.is_file():
        raise EdgepruneError(f"{'OpenVINO IR' if is_openvino_ir(p) else 'ONNX'} file not found: {p}")
    if is_openvino_ir(p):
        return ir_props(openvino_read(p)[1])
    session = ort_session(p, threads=1, optimize=False)  # metadata only: no graph optimisation
    return dict(session.get_modelmeta().custom_metadata_map)


def read_metadata(path: str | Path) -> ArtifactMetadata:
    return ArtifactMetadata.from_props(read_props(path), source=str(path))
