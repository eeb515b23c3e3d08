"""Static INT8 quantization of an FP32 ONNX model with ONNX Runtime's own tools.

QDQ format (QuantizeLinear/DequantizeLinear pairs that ORT's CPU provider fuses into integer
kernels such as QLinearConv), per-channel signed INT8 weights and unsigned INT8 activations,
activation ranges calibrated on real training images.

Weights are quantized symmetrically (ORT's default for signed INT8 weights: zero point 0), so a
weight that is exactly 0.0 becomes exactly 0 in INT8: pruning's zeros survive. `int8_sparsity`
checks that on the written file rather than assuming it.
"""

from __future__ import annotations

import contextlib
import inspect
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from edgeprune.errors import EdgepruneError
from edgeprune.outputs import atomic_file
from edgeprune.runtime.sessions import ort_session

DEFAULT_CALIBRATION_IMAGES = 300
# Weights quantized to 7 bits (ONNX Runtime's reduce_range). x86 CPUs without VNNI run U8S8
# convolutions with VPMADDUBSW, whose 16-bit intermediate sums saturate with full 8-bit weights:
# on an AVX2-only EPYC the digits demo's pruned MobileNetV2 lost 6.1 points that way (top-1
# agreement with PyTorch 92.8 %), with 7-bit weights none (97.5 % vs FP32 96.9 %, agreement 99.4 %).
# The export cannot know the station's CPU, so every file gets the range that runs right on all.
REDUCE_RANGE = True
CALIBRATION_BATCH = 32
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
# Entropy (KL) calibration: histogram bins, and the quantized bins a candidate range is squeezed
# into. ORT's quantize_static uses 128 and 128 and passes no bin counts through: the search then
# has a single candidate, the full range, so "entropy" silently equals minmax. 512 bins give 193
# candidates per tensor at a few seconds' cost (2048, TensorRT's choice, costs ~8x that).
ENTROPY_BINS = 512
ENTROPY_QUANTIZED_BINS = 128


def calibration_batch_size(n: int, largest: int = CALIBRATION_BATCH) -> int:
    """The largest batch size <= `largest` that splits `n` images into equal batches.

    Equal, because ORT's histogram calibrators (entropy, percentile) stack every batch's
    activations with np.asarray, which fails on a shorter last batch."""
    for size in range(min(largest, max(n, 1)), 0, -1):
        if n % size == 0:
            return size
    return 1


def _calibration_reader(input_name: str, x: np.ndarray):
    from onnxruntime.quantization import CalibrationDataReader

    size = calibration_batch_size(len(x))

    class ArrayReader(CalibrationDataReader):
        """Feeds the calibration images in batches; ORT pulls until None."""

        def __init__(self) -> None:
            self.batches = [x[i : i + size] for i in range(0, len(x), size)]
            self.position = 0

        def get_next(self):
            if self.position >= len(self.batches):
                return None
            batch = self.batches[self.position]
            self.position += 1
            return {input_name: batch}

        def rewind(self) -> None:
            self.position = 0

    return ArrayReader()


def pick_calibration_indices(labels: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """`n` training images, as equal per class as the data allows, in a seeded random order."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    if n >= len(labels):
        return rng.permutation(len(labels))
    per_class = [rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)]
    chosen: list[int] = []
    depth = 0
    while len(chosen) < n:
        for members in per_class:
            if depth < len(members) and len(chosen) < n:
                chosen.append(int(members[depth]))
        depth += 1
    return rng.permutation(np.asarray(chosen))


@dataclass
class Int8Sparsity:
    fp32_zeros: int
    fp32_weights: int
    int8_zeros: int
    int8_weights: int
    zeros_kept: bool  # every weight that is 0.0 in FP32 is 0 in INT8 (checked where names match)
    tensors_matched: int

    @property
    def fp32_sparsity(self) -> float:
        return self.fp32_zeros / self.fp32_weights if self.fp32_weights else 0.0

    @property
    def int8_sparsity(self) -> float:
        return self.int8_zeros / self.int8_weights if self.int8_weights else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "fp32_sparsity": self.fp32_sparsity, "int8_sparsity": self.int8_sparsity}


def quantize_int8(
    fp32_path: str | Path,
    out_path: str | Path,
    calibration: np.ndarray | None,
    *,
    per_channel: bool = True,
    calibrate_method: str = "minmax",
    preprocess: bool = True,
    log: Callable[[str], None] | None = None,
) -> Int8Sparsity:
    """Write the INT8 (QDQ) version of `fp32_path` to `out_path`; return its weight sparsity.

    calibration: normalised float32 (N, 3, S, S) model inputs, typically a few hundred training
    images. Metadata of the FP32 model is not carried over; the caller sets what applies. The
    sparsity is checked against the graph that was actually quantized (after pre-processing,
    which may fold and rename initializers).
    """
    from onnxruntime.quantization import quantize_static

    if calibration is None or len(calibration) == 0:
        raise EdgepruneError("quantizing needs calibration data: pass --data")
    if calibration.dtype != np.float32 or calibration.ndim != 4:
        raise EdgepruneError(
            f"calibration inputs must be normalised float32 (N, 3, S, S), got {calibration.dtype} {calibration.shape}"
        )
    if calibrate_method not in CALIBRATION_METHODS:
        raise EdgepruneError(f"unknown calibration method {calibrate_method!r}: {', '.join(CALIBRATION_METHODS)}")
    if calibrate_method == "entropy" and "calibration_cache_path" not in inspect.signature(quantize_static).parameters:
        raise EdgepruneError(
            "entropy calibration needs a newer onnxruntime (quantize_static with "
            "calibration_cache_path): with this one it reduces to minmax; use "
            "--calibrate-method minmax or percentile"
        )
    src = Path(fp32_path)
    out = Path(out_path)
    with tempfile.TemporaryDirectory(prefix="edgeprune-int8-") as tmp, \
            atomic_file(out, overwrite=True) as work:  # a reader never sees a partial file
        model_in = src
        if preprocess:
            # ORT's recommended pre-processing: symbolic shape inference and graph optimisation
            # (e.g. folding), so quantization sees shapes and fewer nodes.
            from onnxruntime.quantization.shape_inference import quant_pre_process

            pre = Path(tmp) / "preprocessed.onnx"
            try:
                quant_pre_process(str(src), str(pre), skip_symbolic_shape=False)
                model_in = pre
            except Exception as exc:  # noqa: BLE001 - pre-processing is an optimisation only
                if log:
                    log(f"quantization pre-processing skipped ({type(exc).__name__}: {exc})")
        input_name = _input_name(model_in)
        x = np.ascontiguousarray(calibration)
        try:
            # ORT's histogram calibrators print progress to stdout, which `export --json` owns.
            with contextlib.redirect_stdout(sys.stderr):
                _quantize(model_in, work, input_name, x, per_channel, calibrate_method, Path(tmp))
        except Exception as exc:  # noqa: BLE001 - ORT raises many types
            raise EdgepruneError(f"ONNX Runtime static quantization failed: {exc}") from exc
        sparsity = int8_sparsity(model_in, work)
    return sparsity


def _quantize(model_in: Path, out: Path, input_name: str, x: np.ndarray, per_channel: bool,
              calibrate_method: str, tmp: Path) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[calibrate_method]
    extra = {}
    if calibrate_method == "entropy":
        extra["calibration_cache_path"] = str(
            _entropy_ranges(model_in, _calibration_reader(input_name, x), tmp)
        )
    quantize_static(
        str(model_in),
        str(out),
        _calibration_reader(input_name, x),
        quant_format=QuantFormat.QDQ,
        per_channel=per_channel,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        reduce_range=REDUCE_RANGE,
        calibrate_method=method,
        extra_options={"WeightSymmetric": True},
        **extra,
    )


def _entropy_ranges(model_path: Path, reader, tmp: Path) -> Path:
    """Entropy-calibrated activation ranges with ENTROPY_BINS histogram bins, written as the
    calibration cache quantize_static reads instead of calibrating itself (see ENTROPY_BINS)."""
    from onnxruntime.quantization import CalibrationMethod
    from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    calibrator = create_calibrator(
        model_path,
        sorted(set(QLinearOpsRegistry) | set(QDQRegistry)),  # what quantize_static calibrates
        augmented_model_path=str(tmp / "entropy-augmented.onnx"),
        calibrate_method=CalibrationMethod.Entropy,
        extra_options={"num_bins": ENTROPY_BINS, "num_quantized_bins": ENTROPY_QUANTIZED_BINS},
    )
    calibrator.collect_data(reader)
    cache = tmp / "entropy-ranges.json"
    save_tensors_data(calibrator.compute_data(), cache)
    return cache


def _input_name(path: Path) -> str:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    initializers = {i.name for i in model.graph.initializer}
    inputs = [i.name for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise EdgepruneError(f"{path}: expected one input, found {inputs}")
    return inputs[0]


def _weight_initializers(model, dtypes: Sequence[int]) -> dict[str, np.ndarray]:
    """Initializers of the given ONNX element types with >= 2 dims: Conv/Gemm/MatMul weights."""
    from onnx import numpy_helper

    return {
        init.name: numpy_helper.to_array(init)
        for init in model.graph.initializer
        if init.data_type in dtypes and len(init.dims) >= 2
    }


def int8_sparsity(fp32_path: str | Path, int8_path: str | Path) -> Int8Sparsity:
    """Zero weights before and after quantization, from the files themselves.

    INT8 weights are the int8 initializers feeding DequantizeLinear (ORT names them
    `<fp32 name>_quantized`); where the FP32 name is found, every FP32 zero is checked to be an
    INT8 zero. Extra zeros after quantization are expected (tiny weights round to 0)."""
    import onnx
    from onnx import TensorProto

    fp32 = onnx.load(str(fp32_path), load_external_data=False)
    int8 = onnx.load(str(int8_path), load_external_data=False)
    dq_inputs = {n.input[0] for n in int8.graph.node if n.op_type == "DequantizeLinear"}
    q_weights = {k: v for k, v in _weight_initializers(int8, [TensorProto.INT8]).items() if k in dq_inputs}
    if not q_weights:
        raise EdgepruneError(f"{int8_path} holds no INT8 weights feeding DequantizeLinear: not a QDQ model")
    f_weights = _weight_initializers(fp32, [TensorProto.FLOAT])
    kept = True
    matched = 0
    for name, q in q_weights.items():
        base = name[: -len("_quantized")] if name.endswith("_quantized") else name
        f = f_weights.get(base)
        if f is not None and f.shape == q.shape:
            matched += 1
            if np.any(q[f == 0] != 0):
                kept = False
    # FP32 counts over the weights that were quantized (matched by name), else over all weights.
    f_counted = [f_weights[n[: -len("_quantized")]] for n in q_weights
                 if n.endswith("_quantized") and n[: -len("_quantized")] in f_weights]
    if not f_counted:
        f_counted = list(f_weights.values())
    return Int8Sparsity(
        fp32_zeros=int(sum((f == 0).sum() for f in f_counted)),
        fp32_weights=int(sum(f.size for f in f_counted)),
        int8_zeros=int(sum((q == 0).sum() for q in q_weights.values())),
        int8_weights=int(sum(q.size for q in q_weights.values())),
        zeros_kept=kept and matched > 0,
        tensors_matched=matched,
    )


INTEGER_CONVS = ("QLinearConv", "ConvInteger")
FLOAT_CONVS = ("Conv", "FusedConv", "NchwcConv")
INTEGER_MATMULS = ("QGemm", "QLinearMatMul", "MatMulInteger", "MatMulIntegerToFloat", "DynamicQuantizeMatMul")
FLOAT_MATMULS = ("Gemm", "MatMul", "FusedGemm", "FusedMatMul")


def optimized_graph(path: str | Path, threads: int = 1) -> dict[str, Any]:
    """What ONNX Runtime really runs for a QDQ file: the graph after its full optimisation (as the
    runtime loads it), convolution by convolution. A DequantizeLinear feeding a float Conv runs
    FP32 arithmetic on INT8-stored weights, so every convolution is listed as integer or float,
    with the depthwise ones, the first (3 input channels) and the classifier called out."""
    import onnx

    def weight_shape(node, index: int, init: dict) -> tuple[int, ...] | None:
        name = node.input[index] if len(node.input) > index else None
        return tuple(init[name].dims) if name in init else None

    with tempfile.TemporaryDirectory(prefix="edgeprune-graph-") as tmp:
        optimized = Path(tmp) / "optimized.onnx"
        ort_session(path, threads, optimized_model_path=optimized)  # the runtime's own options
        model = onnx.load(optimized)
    init = {i.name: i for i in model.graph.initializer}
    convs = []
    for node in model.graph.node:
        if node.op_type not in INTEGER_CONVS + FLOAT_CONVS:
            continue
        integer = node.op_type in INTEGER_CONVS
        shape = weight_shape(node, 3 if node.op_type == "QLinearConv" else 1, init)
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        convs.append({"name": node.name, "op": node.op_type, "integer": integer,
                      "depthwise": group > 1, "first": bool(shape and len(shape) == 4 and shape[1] == 3)})
    heads = [{"name": n.name, "op": n.op_type, "integer": n.op_type in INTEGER_MATMULS}
             for n in model.graph.node if n.op_type in INTEGER_MATMULS + FLOAT_MATMULS]
    ops: dict[str, int] = {}
    for node in model.graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
    float_convs = [c["name"] or c["op"] for c in convs if not c["integer"]]
    return {
        "convs": len(convs),
        "integer_convs": sum(c["integer"] for c in convs),
        "float_convs": float_convs,
        "depthwise_integer": sum(c["integer"] and c["depthwise"] for c in convs),
        "depthwise_float": sum(not c["integer"] and c["depthwise"] for c in convs),
        "first_conv_integer": all(c["integer"] for c in convs if c["first"]) if any(c["first"] for c in convs) else None,
        "classifier": heads,
        "dequantize_nodes": ops.get("DequantizeLinear", 0),
        "ops": ops,
    }
