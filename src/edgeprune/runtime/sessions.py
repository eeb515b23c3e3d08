"""The one place that opens a model on ONNX Runtime or OpenVINO: session options, the OpenVINO
import and its CPU compile properties.

Everything that runs an exported file (the backends, the metadata reader, the peak-memory probe,
the latency helpers of `edgeprune.metrics`, INT8 export's view of the optimised graph) builds its
session here, so a thread count or an optimisation level means the same everywhere.

A leaf of `edgeprune.runtime`: it imports no other runtime module (and no torch), so any of them
may import it without a cycle, and a fresh probe process can import it cheaply.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from edgeprune.errors import EdgepruneError
from edgeprune.validation import check_option

OPENVINO_INSTALL_HINT = "pip install edgeprune[openvino]"
DEFAULT_PROVIDERS = ("CPUExecutionProvider",)


# ------------------------------------------------------------------------------ ONNX Runtime

def ort_session_options(threads: int | None = 1, *, optimize: bool = True,
                        optimized_model_path: str | Path | None = None):
    """ONNX Runtime session options for a latency-bound classifier: sequential execution,
    `threads` intra-op threads and one inter-op thread (None: ORT's defaults), every graph
    optimisation (or none, with `optimize=False`, for reading metadata only), errors-only
    logging. `optimized_model_path`: where ORT writes the graph it really runs."""
    import onnxruntime as ort

    check_option("threads", threads, optional=True)
    options = ort.SessionOptions()
    options.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                        else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: no optimizer chatter on stderr
    if optimized_model_path is not None:
        options.optimized_model_filepath = str(optimized_model_path)
    return options


def ort_session(path: str | Path, threads: int | None = 1, *, providers: Sequence[str] | None = None,
                optimize: bool = True, optimized_model_path: str | Path | None = None):
    """An ONNX Runtime CPU session on `path` with `ort_session_options`; a missing or unloadable
    file is an EdgepruneError naming it."""
    import onnxruntime as ort

    p = Path(path)
    if not p.is_file():
        raise EdgepruneError(f"ONNX file not found: {p}")
    options = ort_session_options(threads, optimize=optimize, optimized_model_path=optimized_model_path)
    try:
        return ort.InferenceSession(str(p), options, providers=list(providers or DEFAULT_PROVIDERS))
    except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types
        raise EdgepruneError(f"{p} is not a loadable ONNX model: {exc}") from None


# ---------------------------------------------------------------------------------- OpenVINO

def import_openvino():
    """The `openvino` module, or an EdgepruneError with the install hint."""
    try:
        import openvino
    except ImportError:
        raise EdgepruneError(
            f"runtime 'openvino' is not installed: {OPENVINO_INSTALL_HINT} (or pick --runtime "
            "onnxruntime)"
        ) from None
    return openvino


def openvino_config(threads: int | None) -> dict[str, str]:
    """OpenVINO CPU properties (string keys, as its documentation allows) for a latency-bound,
    single-request classifier: one stream, the LATENCY hint, `threads` inference threads, and
    FP32 arithmetic, so an FP32 artifact is not silently run in BF16 on CPUs that have it."""
    config = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1", "INFERENCE_PRECISION_HINT": "f32"}
    if threads is not None:
        config["INFERENCE_NUM_THREADS"] = str(threads)
    return config


def openvino_read(path: str | Path, core: Any = None) -> tuple[Any, Any]:
    """(Core, model) for an .onnx file or an OpenVINO IR (.xml), read by `core` (None: a new
    one); a file OpenVINO cannot read is an EdgepruneError naming it."""
    core = import_openvino().Core() if core is None else core
    p = Path(path)
    if not p.is_file():
        raise EdgepruneError(f"{'OpenVINO IR' if p.suffix.lower() == '.xml' else 'ONNX'} file not found: {p}")
    try:
        return core, core.read_model(str(p))
    except Exception as exc:  # noqa: BLE001 - OpenVINO raises RuntimeError with its log
        kind = "OpenVINO IR" if p.suffix.lower() == ".xml" else "model for OpenVINO"
        raise EdgepruneError(f"{p} is not a loadable {kind}: {str(exc).strip()[-400:]}") from None


def openvino_compile(core: Any, model: Any, threads: int | None):
    """`model` compiled for the CPU with `openvino_config(threads)`."""
    return core.compile_model(model, "CPU", openvino_config(threads))
