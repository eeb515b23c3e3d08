"""What a model achieves: size, sparsity, MACs, latency, memory, energy, accuracy and accuracy
under shifted images.

The pieces only; `edgeprune.workflows.measure` puts them together (it exports to ONNX, which
sits above this layer)."""

from edgeprune.metrics.accuracy import accuracy_on_test_split
from edgeprune.metrics.latency import (
    latency_compared,
    latency_onnxruntime,
    latency_torch,
    time_per_image,
)
from edgeprune.metrics.macs import MACS_COUNTER, count_macs, count_macs_nonzero, count_macs_params, prunable_weight_macs
from edgeprune.metrics.evaluate import EvalResult, evaluate
from edgeprune.metrics.robustness import SHIFTS, ImageShift, RobustnessResult, evaluate_shifted, register_shift
from edgeprune.metrics.memory import PEAK_MEMORY_NOTE, peak_memory_bytes
from edgeprune.metrics.params import count_params
from edgeprune.metrics.size import weight_file_sizes
from edgeprune.runtime.energy import RaplZone, energy_used_uj, find_rapl_zones, read_energy

__all__ = [
    "EvalResult",
    "evaluate",
    "evaluate_shifted",
    "ImageShift",
    "RobustnessResult",
    "SHIFTS",
    "register_shift",
    "MACS_COUNTER",
    "PEAK_MEMORY_NOTE",
    "RaplZone",
    "accuracy_on_test_split",
    "count_macs",
    "count_macs_nonzero",
    "count_macs_params",
    "count_params",
    "energy_used_uj",
    "find_rapl_zones",
    "latency_compared",
    "latency_onnxruntime",
    "latency_torch",
    "peak_memory_bytes",
    "prunable_weight_macs",
    "read_energy",
    "time_per_image",
    "weight_file_sizes",
]
