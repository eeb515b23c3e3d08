"""Measurement helpers without torch: latency, peak memory, energy, file sizes, device label.

The same timing loop times PyTorch eager and ONNX Runtime (the torch side passes a callable), so
the two columns of a bench table differ only in the runtime, never in the method.
`edgeprune.metrics` (the torch side) uses the same loop, memory probe, energy and device label.
"""

from __future__ import annotations

import gzip
import os
import platform
import time
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from edgeprune.errors import EdgepruneError
from edgeprune.runtime.energy import energy_used_uj, find_rapl_zones, read_energy


DEFAULT_WARMUP = 3  # untimed runs before timing
DEFAULT_RUNS = 20  # timed runs per batch size (edgeprune measure)


@dataclass
class Timing:
    median_ms: float
    p90_ms: float
    runs: int


def time_callable(
    fn: Callable[[], object],
    *,
    per_call_items: int = 1,
    warmup: int = 3,
    min_runs: int = 5,
    max_runs: int = 100,
    budget_s: float = 2.0,
) -> Timing:
    """Median and 90th percentile wall time of fn() divided by `per_call_items` (time per image).

    `warmup` untimed calls first; then at least `min_runs` timed calls, stopping at `max_runs`
    or once `budget_s` seconds are spent (`edgeprune.metrics.time_per_image` fixes the count
    with min_runs = max_runs). Garbage collection is paused while timing, as `timeit` does, so a
    collection triggered by unrelated objects does not land in one run."""
    import gc

    for _ in range(warmup):
        fn()
    samples: list[float] = []
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        start = time.perf_counter()
        while len(samples) < max_runs:
            t0 = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - t0)
            if len(samples) >= min_runs and time.perf_counter() - start >= budget_s:
                break
    finally:
        if gc_was_enabled:
            gc.enable()
    arr = np.asarray(samples) * 1000.0 / per_call_items
    return Timing(float(np.percentile(arr, 50)), float(np.percentile(arr, 90)), len(samples))


# Peak memory is measured in a fresh process, so that nothing this process already holds (other
# artifacts, torch, the data) is counted. Linux only: it reads /proc/self/status, because
# ru_maxrss survives fork+exec and starts at the parent's (large) peak, hiding the model's memory.
PEAK_MEMORY_NOTE = (
    "peak resident memory (VmHWM) minus resident memory after `import onnxruntime, numpy`, in a "
    "fresh process that then loads the FP32 ONNX model into ONNX Runtime (CPU, {threads} "
    "intra-op thread(s)) and runs one batch-1 inference; the peak is reset after the imports "
    "(/proc/self/clear_refs; where that is refused, the import peak is the baseline). Counts "
    "weights, graph optimisation, arena and activations, not the interpreter or libraries"
)

# Start of every probe. A probe imports what it needs, keeps `baseline = reset_peak()`, loads
# and runs the model, then calls `report(baseline)`.
PROBE_PRELUDE = """
import json, sys

def resident_kib():
    values = {}
    with open("/proc/self/status") as status:
        for line in status:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0])
    return values

def reset_peak():
    # "5" resets VmHWM to the current RSS, so import-time peaks do not hide the model's
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        return resident_kib()["VmRSS"]
    except OSError:
        return resident_kib()["VmHWM"]

def report(baseline):
    print(json.dumps({"baseline_kib": baseline, "peak_kib": resident_kib()["VmHWM"]}))
"""

# The child imports only onnxruntime and numpy (edgeprune may pull in torch), so the session
# options repeat those of `classifier.make_session`. Arguments: path, input size, threads.
ORT_PROBE = PROBE_PRELUDE + """
import numpy as np
import onnxruntime as ort
path, size, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
baseline = reset_peak()
options = ort.SessionOptions()
options.intra_op_num_threads = threads
options.inter_op_num_threads = 1
options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
options.log_severity_level = 3
session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
x = np.random.default_rng(0).standard_normal((1, 3, size, size), dtype=np.float32)
session.run(None, {session.get_inputs()[0].name: x})
report(baseline)
"""


def measure_peak_memory(code: str, args: list[str], timeout_s: float = 600) -> int:
    """Bytes by which a fresh interpreter running `code` (PROBE_PRELUDE + a probe) raised its
    peak resident memory above the baseline it reported."""
    import json
    import subprocess
    import sys

    if not Path("/proc/self/status").is_file():
        raise EdgepruneError("peak memory is measured from /proc/self/status, which needs Linux")
    try:
        done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                              timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        raise EdgepruneError(
            f"the peak-memory probe did not finish within {timeout_s / 60:g} minutes"
        ) from None
    if done.returncode != 0:
        raise EdgepruneError(f"the peak-memory probe failed: {done.stderr.strip()[-800:]}")
    try:
        readings = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise EdgepruneError("the peak-memory probe printed no reading") from None
    return max(0, readings["peak_kib"] - readings["baseline_kib"]) * 1024


@dataclass
class PeakMemory:
    bytes: int | None = None
    note: str = ""  # why bytes is None


def run_memory_probe(code: str, args: list[str], timeout_s: float = 600) -> PeakMemory:
    """`measure_peak_memory` with a failure turned into a note: a bench row goes on without it."""
    try:
        return PeakMemory(measure_peak_memory(code, args, timeout_s))
    except EdgepruneError as error:
        return PeakMemory(None, str(error))


def peak_memory_onnx(path: str | Path, *, input_size: int, threads: int = 1) -> PeakMemory:
    """See PEAK_MEMORY_NOTE."""
    return run_memory_probe(ORT_PROBE, [str(path), str(input_size), str(threads)])


@dataclass
class Energy:
    joules: float | None = None
    note: str = ""


@contextmanager
def energy_meter() -> Iterator[Energy]:
    """CPU package energy over the block from RAPL counters (`edgeprune.runtime.energy`); where
    none is readable, `joules` stays None and `note` says why.

    It is the whole package's energy, other processes included: meaningful on an otherwise
    idle device, an upper bound on a shared machine."""
    zones, note = find_rapl_zones()
    result = Energy(note=note)
    before = read_energy(zones) if zones else []
    try:
        yield result
    finally:
        if zones:
            result.joules = energy_used_uj(zones, before, read_energy(zones)) / 1e6


def gzip_size(path: str | Path) -> int:
    """Bytes after gzip -9 of the file (or of every file in a folder, concatenated in name order)."""
    p = Path(path)
    files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    compressor_input = b"".join(f.read_bytes() for f in files)
    return len(gzip.compress(compressor_input, compresslevel=9, mtime=0))


def file_size(path: str | Path) -> int:
    p = Path(path)
    if p.is_dir():
        return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    return p.stat().st_size


@lru_cache(maxsize=1)
def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name") or line.startswith("Model"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware_label(kind: str, name: str) -> str:
    """`<kind>-<name>` with `name` made file-name safe, e.g. `cpu-AMD_EPYC_7B13-2c`."""
    safe = "".join(ch if ch.isalnum() or ch in "-." else "_" for ch in name)
    while "__" in safe:
        safe = safe.replace("__", "_")
    return f"{kind}-{safe.strip('_')}"


def cpu_device_label() -> str:
    """`cpu-<CPU model>-<cores>c`, also what `edgeprune.hardware.device_label("cpu")` returns,
    computed without torch (so an edge device with the runtime extra alone labels its results)."""
    return hardware_label("cpu", f"{cpu_name()}-{os.cpu_count()}c")


def runtime_software_label() -> str:
    import onnxruntime as ort

    return f"ort{ort.__version__}"
