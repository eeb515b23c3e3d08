"""`measure`: everything `edgeprune measure` reports about one model, as a JSON-ready dict."""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field, fields
from typing import Any
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import onnx
import onnxruntime as ort
import torch
import torch_pruning as tp
from torch import nn
from torch.nn.utils import prune as torch_prune

from edgeprune import __version__
from edgeprune.errors import EdgepruneError
from edgeprune.validation import check_option
from edgeprune.export import export_onnx
from edgeprune.hardware import device_label
from edgeprune.metrics.accuracy import accuracy_on_test_split
from edgeprune.runtime.energy import find_rapl_zones
from edgeprune.runtime.measure import TIMING_POLICY, cpu_isa
from edgeprune.metrics.latency import (
    DEFAULT_BATCH_SIZES,
    DEFAULT_RUNS,
    DEFAULT_WARMUP,
    latency_compared,
)
from edgeprune.metrics.macs import count_macs, count_macs_nonzero
from edgeprune.metrics.memory import PEAK_MEMORY_NOTE, peak_memory_bytes
from edgeprune.metrics.params import count_params
from edgeprune.metrics.size import GZIP_LEVEL, weight_file_sizes

if TYPE_CHECKING:
    from edgeprune.data import DataBundle

RUNTIMES = ("torch", "onnxruntime", "openvino")
DEFAULT_RUNTIMES = ("torch", "onnxruntime")  # openvino when asked for (an optional extra)


@dataclass
class Measurement:
    """What a model achieved on this machine (`measure`'s figures, typed). Latencies are ms per
    image: `latency_ms[runtime]["batch1"]["median"]`, or `latency("onnxruntime", 1)`."""

    params: int
    nonzero_params: int
    sparsity: float | None
    weight_sparsity: float | None
    macs: int
    macs_nonzero: int
    size_bytes: int
    size_gzip_bytes: int
    latency_ms: dict[str, Any]
    peak_memory_bytes: int | None
    accuracy: float | None
    energy_mj_per_image: float | None
    device: str
    threads: int
    software: dict[str, str]
    input_size: int
    split: dict[str, Any] | None = None
    isa: str | None = None  # the CPU's speed-relevant extensions (runtime.measure.cpu_isa)
    extra: dict[str, Any] = field(default_factory=dict)  # notes, counters, timing settings

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Measurement:
        names = {f.name for f in fields(cls)} - {"extra"}
        known = {k: v for k, v in values.items() if k in names}
        known.setdefault("split", None)
        return cls(**known, extra={k: v for k, v in values.items() if k not in names})

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        return {**{k: v for k, v in values.items() if k != "extra"}, **values["extra"]}

    def latency(self, runtime: str = "onnxruntime", batch: int = 1, statistic: str = "median") -> float | None:
        per_runtime = self.latency_ms.get(runtime)
        return None if per_runtime is None else per_runtime[f"batch{batch}"][statistic]

    def __str__(self) -> str:
        acc = "n/a" if self.accuracy is None else f"{self.accuracy:.4f}"
        ort = self.latency("onnxruntime", 1)
        lat = "n/a" if ort is None else f"{ort:.3f} ms"
        return (f"Measurement({self.nonzero_params:,} of {self.params:,} params nonzero, "
                f"{self.macs:,} MACs, {self.size_gzip_bytes / 1e6:.2f} MB gzip, ONNX Runtime batch-1 "
                f"{lat}, accuracy {acc}; {self.device}, {self.threads} thread(s))")


def software_versions() -> dict[str, str]:
    """Every library a figure depends on, as installed: recorded in measurements and results."""
    import platform

    import numpy as np
    import torchvision

    return {
        "edgeprune": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "torch_pruning": tp.__version__,
        "onnxruntime": ort.__version__,
        "onnx": onnx.__version__,
        "numpy": np.__version__,
    }


def measure(
    model: nn.Module,
    *,
    input_size: int,
    data: DataBundle | None = None,
    threads: int = 1,
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
    runtimes: Sequence[str] = DEFAULT_RUNTIMES,
    warmup: int = DEFAULT_WARMUP,
    runs: int = DEFAULT_RUNS,
    memory: bool = True,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Measure what the model achieves on this machine's CPU. The model itself is not changed.

    Latency is per image, for each runtime in `runtimes` (a runtime left out is null) and batch
    size (with RAPL, torch entries also carry `energy_mj_per_image`). Peak memory is measured with ONNX Runtime, so it is null when that runtime is left
    out or `memory` is False. Accuracy (with `data`) uses the test split, normalised with
    `mean`/`std` (the training ones; default: the data's). Energy is measured over the timed
    torch runs at the largest batch size where RAPL counters are readable, otherwise null with
    `energy_note` saying why.
    """
    check_option("threads", threads)
    check_option("warmup", warmup)
    check_option("runs", runs)
    unknown = sorted(set(runtimes) - set(RUNTIMES))
    if unknown:
        raise EdgepruneError(f"unknown runtime(s) {unknown}: choose from {', '.join(RUNTIMES)}")
    from edgeprune.runtime.backends import parse_runtimes

    backends = [r for r in RUNTIMES if r in runtimes and r != "torch"]
    if backends:
        parse_runtimes(backends)  # an ONNX backend that is not installed fails here, clearly
    if torch_prune.is_pruned(model):
        raise EdgepruneError(
            "the model still has pruning masks attached: make the pruning permanent first, "
            "so the counts describe the weights that would be deployed"
        )
    say = log or (lambda _message: None)
    # Measure a CPU copy in eval mode, so the caller's model keeps its device and mode.
    model = copy.deepcopy(model).cpu().eval()

    say("counting parameters, MACs and weight file size")
    result: dict = dict(count_params(model))
    macs, counter = count_macs(model, input_size)
    result["macs"] = macs
    result["macs_counter"] = counter
    result["macs_nonzero"] = count_macs_nonzero(model, input_size, macs=macs)
    result["size_bytes"], result["size_gzip_bytes"] = weight_file_sizes(model)
    result["size_note"] = f"safetensors of the state_dict; gzip level {GZIP_LEVEL}"

    energy_zones, energy_note = find_rapl_zones()
    latency: dict = {runtime: None for runtime in RUNTIMES}
    energy_mj_per_image = None
    if "torch" not in runtimes and energy_zones:
        energy_note = "not measured: energy is taken over the torch runs, which were skipped"

    peak_memory = None
    memory_note = "not measured: ONNX Runtime was skipped" if memory else "not measured: not asked for"
    with tempfile.TemporaryDirectory(prefix="edgeprune-measure-") as tmp:
        onnx_path = None
        if backends:
            say(f"exporting to ONNX for {', '.join(backends)}")
            onnx_path = export_onnx(model, Path(tmp) / "model.onnx", input_size=input_size)
        say(f"timing {' and '.join(r for r in RUNTIMES if r in runtimes)} at batch sizes "
            f"{list(batch_sizes)} with {threads} thread(s), round-robin")
        latency.update(latency_compared(
            model if "torch" in runtimes else None, onnx_path, input_size=input_size,
            batch_sizes=batch_sizes, threads=threads, warmup=warmup, runs=runs,
            energy=bool(energy_zones), backends=backends,
        ))
        if "torch" in runtimes and energy_zones:
            energy_batch = f"batch{max(batch_sizes)}"
            energy_mj_per_image = latency["torch"][energy_batch].get("energy_mj_per_image")
            energy_note = f"{energy_note}; over the torch {energy_batch} timed runs"
        if onnx_path is not None and memory and "onnxruntime" in backends:
            say("measuring peak memory in a fresh process")
            peak_memory = peak_memory_bytes(onnx_path, input_size=input_size, threads=threads)
            memory_note = PEAK_MEMORY_NOTE.format(threads=threads)
    result["latency_ms"] = latency
    result["peak_memory_bytes"] = peak_memory
    result["peak_memory_note"] = memory_note

    result["accuracy"] = None
    if data is not None:
        say(f"evaluating on the test split of {data.name}")
        result.update(accuracy_on_test_split(model, data, mean=mean, std=std))

    result["energy_mj_per_image"] = energy_mj_per_image
    result["energy_note"] = energy_note
    result["device"] = device_label()
    result["isa"] = cpu_isa()
    result["threads"] = threads
    result["software"] = software_versions()
    result["input_size"] = input_size
    result["timing"] = {
        "warmup": warmup,
        "runs": runs,
        "batch_sizes": list(batch_sizes),
        "statistic": "median and p90 (numpy percentile) of per-run time / batch size, in ms",
        "policy": TIMING_POLICY,
    }
    return result
