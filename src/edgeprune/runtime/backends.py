"""The inference backends an exported .onnx artifact runs on: ONNX Runtime and OpenVINO.

Both read the same .onnx file. One small interface (`Backend`: `name`, `version`, `software`,
`run(x)` on a float32 NCHW batch, `metadata_props()`), one factory per backend, and
`open_backend(path, runtime)` where runtime "auto" measures which of the installed backends is
faster for that file on this device (a short round-robin, `choose_backend`) and caches the
choice, so the next start does not measure again.

OpenVINO is optional (`pip install edgeprune[openvino]`); nothing here imports torch.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from edgeprune.errors import EdgepruneError
from edgeprune.outputs import atomic_file, cache_root, file_sha256
from edgeprune.runtime.measure import cpu_device_label, cpu_isa, time_round_robin
from edgeprune.runtime.metadata import ArtifactMetadata, ir_props, read_props
from edgeprune.runtime.sessions import (
    OPENVINO_INSTALL_HINT,
    import_openvino,
    openvino_compile,
    openvino_read,
    ort_session,
)

BACKENDS = ("onnxruntime", "openvino")
RUNTIME_CHOICES = ("auto", *BACKENDS)
INSTALL_HINT = {"onnxruntime": "pip install edgeprune[runtime]", "openvino": OPENVINO_INSTALL_HINT}


class Backend:
    """One loaded model on one backend. `run(x)`: logits for a float32 (N, 3, S, S) batch."""

    name: str = ""
    version: str = ""
    label: str = ""  # short software prefix: ort1.32.0, openvino2026.4.1

    def __init__(self, path: Path, threads: int | None):
        self.path = path
        self.threads = threads

    @property
    def software(self) -> str:
        return f"{self.label}{self.version}"

    def run(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def io_shapes(self) -> tuple[list, list]:
        """The graph's input and output shapes (ints, or a name / None where dynamic), so the
        metadata can be checked against the graph it sits in."""
        raise NotImplementedError

    def metadata_props(self) -> dict[str, str]:
        """The file's ONNX metadata_props (edgeprune's keys among them)."""
        return read_props(self.path)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r}, threads={self.threads}, {self.software})"


def _check(path: str | Path, threads: int | None) -> Path:
    p = Path(path)
    if not p.is_file():
        raise EdgepruneError(f"ONNX file not found: {p}")
    if threads is not None and threads < 1:
        raise EdgepruneError(f"threads must be >= 1, got {threads}")
    return p


def _single_input(path: Path, count: int) -> None:
    if count != 1:
        raise EdgepruneError(f"{path}: expected one input, the model has {count}")


class OnnxRuntimeBackend(Backend):
    name, label = "onnxruntime", "ort"

    def __init__(self, path: str | Path, threads: int | None = 1, providers: Sequence[str] | None = None):
        import onnxruntime as ort

        p = _check(path, threads)
        if p.suffix.lower() == ".xml":
            raise EdgepruneError(f"{p} is an OpenVINO IR: it runs on OpenVINO only (runtime='openvino')")
        super().__init__(p, threads)
        self.version = ort.__version__
        self.session = ort_session(p, threads, providers=providers)
        inputs = self.session.get_inputs()
        _single_input(p, len(inputs))
        self.input_name = inputs[0].name
        self.output_name = self.session.get_outputs()[0].name

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.session.run([self.output_name], {self.input_name: x})[0]

    def io_shapes(self) -> tuple[list, list]:
        return list(self.session.get_inputs()[0].shape), list(self.session.get_outputs()[0].shape)

    def metadata_props(self) -> dict[str, str]:
        return dict(self.session.get_modelmeta().custom_metadata_map)


class OpenVinoBackend(Backend):
    """OpenVINO's CPU plugin on the .onnx file. The batch axis is dynamic in the file; a static
    copy is compiled per batch size seen (up to STATIC_SHAPES of them, ~0.1 s each), because
    OpenVINO's kernels are faster on static shapes; other sizes use the dynamic compile."""

    name, label = "openvino", "openvino"
    STATIC_SHAPES = 4

    def __init__(self, path: str | Path, threads: int | None = 1):
        ov = import_openvino()
        p = _check(path, threads)
        super().__init__(p, threads)
        self.version = ov.__version__.split("-")[0]
        ir = p.suffix.lower() == ".xml"  # an OpenVINO IR (edgeprune export --format openvino-int8)
        # ONNX: read through ONNX Runtime, which also refuses a file that is not ONNX, clearly.
        self._props = {} if ir else super().metadata_props()
        self._core, self._model = openvino_read(p)
        try:
            if ir:
                self._props = ir_props(self._model)
            _single_input(p, len(self._model.inputs))
            self._dynamic = openvino_compile(self._core, self._model, threads)
        except EdgepruneError:
            raise
        except Exception as exc:  # noqa: BLE001 - OpenVINO raises RuntimeError with its log
            raise EdgepruneError(f"OpenVINO cannot compile {p}: {str(exc).strip()[-400:]}") from None
        self._requests: OrderedDict[tuple[int, ...], Any] = OrderedDict()
        self._dynamic_request = self._dynamic.create_infer_request()

    def _request(self, shape: tuple[int, ...]):
        request = self._requests.get(shape)
        if request is not None:
            self._requests.move_to_end(shape)
            return request
        if len(self._requests) >= self.STATIC_SHAPES or not self._model.inputs[0].get_partial_shape().is_dynamic:
            return self._dynamic_request
        model = self._model.clone()
        model.reshape(list(shape))
        request = openvino_compile(self._core, model, self.threads).create_infer_request()
        self._requests[shape] = request
        return request

    def run(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        result = self._request(tuple(x.shape)).infer({0: x})
        # The output tensor belongs to the request and is overwritten by its next call.
        return np.array(result[0], copy=True)

    def io_shapes(self) -> tuple[list, list]:
        def dims(partial) -> list:
            return [d.get_length() if d.is_static else None for d in partial]

        return (dims(self._model.inputs[0].get_partial_shape()),
                dims(self._model.outputs[0].get_partial_shape()))

    def metadata_props(self) -> dict[str, str]:
        return dict(self._props)


FACTORIES: dict[str, Callable[..., Backend]] = {
    "onnxruntime": OnnxRuntimeBackend,
    "openvino": OpenVinoBackend,
}


def is_installed(name: str) -> bool:
    try:
        __import__(name)
    except ImportError:
        return False
    return True


def available_backends() -> list[str]:
    """The backends installed here, in BACKENDS order (importing each: ~0.1 s for OpenVINO)."""
    return [name for name in BACKENDS if is_installed(name)]


def check_runtime(name: str, *, allow_auto: bool = True) -> str:
    """`name` if it is a known backend that is installed here (or "auto"); a clear error otherwise."""
    choices = RUNTIME_CHOICES if allow_auto else BACKENDS
    if name not in choices:
        raise EdgepruneError(f"unknown runtime {name!r}: choose one of {', '.join(choices)}")
    if name != "auto" and not is_installed(name):  # only the one named is imported
        if name == "openvino":
            import_openvino()  # raises with the install hint
        raise EdgepruneError(f"runtime {name!r} is not installed: {INSTALL_HINT[name]}")
    return name


def parse_runtimes(spec: str | Sequence[str] | None) -> list[str]:
    """`--runtime onnxruntime,openvino` (or a list) -> checked names; None: every installed one."""
    if spec is None:
        return available_backends()
    names = [n.strip() for n in (spec.split(",") if isinstance(spec, str) else spec) if n.strip()]
    if not names:
        raise EdgepruneError(f"--runtime names no backend: choose from {', '.join(BACKENDS)}")
    out: list[str] = []
    for name in names:
        if check_runtime(name, allow_auto=False) not in out:
            out.append(name)
    return out


def make_backend(name: str, path: str | Path, *, threads: int | None = 1,
                 providers: Sequence[str] | None = None) -> Backend:
    check_runtime(name, allow_auto=False)
    if name == "onnxruntime":
        return OnnxRuntimeBackend(path, threads, providers)
    return FACTORIES[name](path, threads)


# ----------------------------------------------------------------------------- auto choice

@dataclass
class RuntimeChoice:
    """Which backend `auto` picked for a file, and on what evidence."""

    runtime: str
    source: str  # "measured" | "cached" | "only one installed"
    key: dict[str, Any] = field(default_factory=dict)
    median_ms: dict[str, float] = field(default_factory=dict)  # batch 1, per backend
    measured_at: str | None = None
    cache_file: str | None = None


def choice_key(path: str | Path, threads: int | None, backends: Sequence[str]) -> dict[str, Any]:
    """What the choice depends on: the file's bytes, the device, the thread count, and the
    installed backends' versions (an upgrade or a newly installed backend is measured again)."""
    versions = {}
    for name in backends:
        module = import_openvino() if name == "openvino" else __import__(name)
        versions[name] = str(module.__version__).split("-")[0]
    return {"sha256": file_sha256(path), "device": cpu_device_label(), "isa": cpu_isa(),
            "threads": threads, "backends": versions}


def _cache_file(key: dict[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    return cache_root() / "runtime" / f"choice-{digest}.json"


def _read_choice(file: Path, key: dict[str, Any]) -> RuntimeChoice | None:
    try:
        record = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # missing or damaged: measure again
    if not isinstance(record, dict) or record.get("key") != key or record.get("runtime") not in key["backends"]:
        return None
    return RuntimeChoice(record["runtime"], "cached", key, record.get("median_ms", {}),
                         record.get("measured_at"), str(file))


def _write_choice(file: Path, choice: RuntimeChoice) -> None:
    record = {"runtime": choice.runtime, "key": choice.key, "median_ms": choice.median_ms,
              "measured_at": choice.measured_at}
    try:  # atomic: two processes starting at once never read half a file
        with atomic_file(file, overwrite=True, what="runtime choice") as tmp:
            tmp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    except (OSError, EdgepruneError):
        pass  # a read-only cache only costs a measurement at the next start


def _input_shape(backend: Backend, input_size: int | None) -> tuple[int, int, int, int]:
    if input_size is None:
        input_size = ArtifactMetadata.from_props(backend.metadata_props(), str(backend.path)).input_size
    return (1, 3, input_size, input_size)


def choose_backend(path: str | Path, *, threads: int | None = 1, input_size: int | None = None,
                   refresh: bool = False) -> tuple[Backend, RuntimeChoice]:
    """The faster installed backend for this file on this device, at batch 1, with `threads`
    threads: measured by a short round-robin (both backends pinned to the same cores) the first
    time, then read from the cache (`cache_root()/runtime/`). Returns the loaded backend."""
    installed = available_backends()
    if Path(path).suffix.lower() == ".xml":  # an OpenVINO IR has one backend to choose from
        return make_backend("openvino", path, threads=threads), RuntimeChoice("openvino", "OpenVINO IR")
    if len(installed) == 1:
        return make_backend(installed[0], path, threads=threads), RuntimeChoice(installed[0], "only one installed")
    _check(path, threads)
    key = choice_key(path, threads, installed)
    file = _cache_file(key)
    cached = None if refresh else _read_choice(file, key)
    if cached is not None:
        return make_backend(cached.runtime, path, threads=threads), cached
    backends = {name: make_backend(name, path, threads=threads) for name in installed}
    x = np.random.default_rng(0).standard_normal(_input_shape(backends[installed[0]], input_size), dtype=np.float32)
    timings = time_round_robin({name: (lambda b=b: b.run(x)) for name, b in backends.items()},
                               "auto-choice", cpus=threads or None)  # batch 1: one part at a time
    medians = {name: t.median_ms for name, t in timings.items()}
    best = min(installed, key=lambda name: medians[name])  # ties: BACKENDS order, ONNX Runtime first
    choice = RuntimeChoice(best, "measured", key, medians,
                           time.strftime("%Y-%m-%dT%H:%M:%S%z"), str(file))
    _write_choice(file, choice)
    return backends[best], choice


def open_backend(path: str | Path, runtime: str = "onnxruntime", *, threads: int | None = 1,
                 providers: Sequence[str] | None = None,
                 input_size: int | None = None) -> tuple[Backend, RuntimeChoice | None]:
    """The backend `runtime` names, or for "auto" the one `choose_backend` picks (with the
    choice; None when the runtime was named)."""
    check_runtime(runtime)
    if runtime == "auto":
        return choose_backend(path, threads=threads, input_size=input_size)
    return make_backend(runtime, path, threads=threads, providers=providers), None
