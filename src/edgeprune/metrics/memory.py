"""Peak memory of inference, measured in a fresh process so nothing else is counted.

The probe and its definition (PEAK_MEMORY_NOTE) live in the torch-free
`edgeprune.runtime.measure`, so `edgeprune measure` and the runtime bench report the same thing.
"""

from __future__ import annotations

from pathlib import Path

from edgeprune.runtime.measure import ORT_PROBE, PEAK_MEMORY_NOTE, measure_peak_memory

__all__ = ["PEAK_MEMORY_NOTE", "peak_memory_bytes"]


def peak_memory_bytes(onnx_path: str | Path, *, input_size: int, threads: int = 1) -> int:
    """Bytes by which loading `onnx_path` and running batch-1 inference raise the peak resident
    memory of a fresh ONNX Runtime process (see PEAK_MEMORY_NOTE). Raises EdgepruneError."""
    return measure_peak_memory(ORT_PROBE, [str(onnx_path), str(input_size), str(threads)])
