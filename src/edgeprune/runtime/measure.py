"""Measurement helpers without torch: latency, peak memory, energy, file sizes, device label.

The same timing loop times PyTorch eager and ONNX Runtime (the torch side passes a callable), so
the two columns of a bench table differ only in the runtime, never in the method.
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
    or once `budget_s` seconds are spent. Garbage collection is paused while timing, as
    `timeit` does (and as `edgeprune.metrics.time_per_image` does)."""
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
# artifacts, torch, the data) is counted: the increase of the child's peak RSS (ru_maxrss) from
# after its imports to after loading the artifact and running one batch-1 inference. Same
# definition as `edgeprune.metrics.peak_memory_bytes`, repeated here because that module
# imports torch.
PEAK_MEMORY_NOTE = (
    "increase in peak RSS of a fresh process from after its imports to after loading the model "
    "and running one batch-1 inference (weights, graph optimisation, arena, activations)"
)

# The child reads its peak RSS from /proc/self/status (VmHWM) where it exists: on Linux,
# ru_maxrss survives exec and starts at the *parent's* peak (a pytest or torch process easily
# out-weighs a small model), which would hide the model's memory entirely.
PEAK_RSS_KIB = """
def peak_rss_kib():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    import resource, sys
    value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return value // 1024 if sys.platform == "darwin" else value
"""

_ORT_PROBE = PEAK_RSS_KIB + """
import json, sys
import numpy as np
import onnxruntime as ort
path, size, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
before = peak_rss_kib()
options = ort.SessionOptions()
options.intra_op_num_threads = threads
options.inter_op_num_threads = 1
options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
options.log_severity_level = 3
session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
x = np.random.default_rng(0).standard_normal((1, 3, size, size), dtype=np.float32)
session.run(None, {session.get_inputs()[0].name: x})
after = peak_rss_kib()
print(json.dumps({"before": before, "after": after}))
"""


@dataclass
class PeakMemory:
    bytes: int | None = None
    note: str = ""


def run_memory_probe(code: str, args: list[str], timeout_s: float = 600) -> PeakMemory:
    """Run `code` (which prints {"before": KiB, "after": KiB} of peak RSS last) in a fresh interpreter."""
    import json
    import subprocess
    import sys

    try:
        done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                              timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        return PeakMemory(None, "peak-memory probe timed out")
    if done.returncode != 0:
        return PeakMemory(None, "peak-memory probe failed: " + done.stderr.strip()[-300:])
    try:
        readings = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return PeakMemory(None, "peak-memory probe printed no reading")
    return PeakMemory(max(0, readings["after"] - readings["before"]) * 1024, PEAK_MEMORY_NOTE)


def peak_memory_onnx(path: str | Path, *, input_size: int, threads: int = 1) -> PeakMemory:
    return run_memory_probe(_ORT_PROBE, [str(path), str(input_size), str(threads)])


RAPL_ROOT = Path("/sys/class/powercap")


def _rapl_files() -> list[Path]:
    if not RAPL_ROOT.is_dir():
        return []
    files = []
    for zone in sorted(RAPL_ROOT.glob("*rapl:[0-9]*")):
        if ":" in zone.name and zone.name.count(":") == 1:  # package zones only, not sub-zones
            energy = zone / "energy_uj"
            if os.access(energy, os.R_OK):
                files.append(energy)
    return files


@dataclass
class Energy:
    joules: float | None = None
    note: str = ""


@contextmanager
def energy_meter() -> Iterator[Energy]:
    """CPU package energy over the block from RAPL counters, where the kernel lets us read them.

    It is the whole package's energy, other processes included: meaningful on an otherwise
    idle device, an upper bound on a shared machine."""
    result = Energy()
    files = _rapl_files()
    if not files:
        result.note = "no readable RAPL energy counter (/sys/class/powercap): energy not measured"
        yield result
        return

    def read() -> list[int]:
        return [int(f.read_text().strip()) for f in files]

    try:
        before = read()
    except (OSError, ValueError):
        result.note = "RAPL counter not readable: energy not measured"
        yield result
        return
    try:
        yield result
    finally:
        try:
            after = read()
            # Counters wrap; a negative difference means the interval is unusable.
            deltas = [a - b for a, b in zip(after, before)]
            if all(d >= 0 for d in deltas):
                result.joules = sum(deltas) / 1e6
                result.note = "RAPL package energy (includes anything else running)"
            else:
                result.note = "RAPL counter wrapped during the run: energy not measured"
        except (OSError, ValueError):
            result.note = "RAPL counter not readable: energy not measured"


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


def cpu_device_label() -> str:
    """`cpu-<CPU model>-<cores>c`, the same string as `edgeprune.hardware.device_label("cpu")`,
    computed without torch (so an edge device with the runtime extra alone labels its results)."""
    name = f"{cpu_name()}-{os.cpu_count()}c"
    safe = "".join(ch if ch.isalnum() or ch in "-." else "_" for ch in name)
    while "__" in safe:
        safe = safe.replace("__", "_")
    return f"cpu-{safe.strip('_')}"


def runtime_software_label() -> str:
    import onnxruntime as ort

    return f"ort{ort.__version__}"
