"""Peak memory of inference, measured in a fresh process so nothing else is counted.

Linux only: it reads the process's resident set from /proc. `ru_maxrss` is not used because on
Linux a child started by fork+exec inherits the parent's peak (here a large torch process), so
the child's own increase would read as zero.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from edgeprune.errors import EdgepruneError

PEAK_MEMORY_NOTE = (
    "peak resident memory (VmHWM) minus resident memory after `import onnxruntime, numpy`, in a "
    "fresh process that then loads the FP32 ONNX model into ONNX Runtime (CPU, {threads} "
    "intra-op thread(s)) and runs one batch-1 inference; the peak is reset after the imports "
    "(/proc/self/clear_refs; where that is refused, the import peak is the baseline). Counts "
    "weights, graph optimisation, arena and activations, not the interpreter or libraries"
)

# Run as `python -c` so the child imports only onnxruntime and numpy, not torch or edgeprune.
# The session options repeat those of latency.onnxruntime_session on purpose: importing that
# module would load torch into the child and into its baseline.
_PROBE = """
import json, sys
import numpy as np
import onnxruntime as ort

def resident_kib():
    values = {}
    with open("/proc/self/status") as status:
        for line in status:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0])
    return values

path, size, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
try:
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")
    baseline = resident_kib()["VmRSS"]
except OSError:
    baseline = resident_kib()["VmHWM"]
options = ort.SessionOptions()
options.intra_op_num_threads = threads
options.inter_op_num_threads = 1
options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
x = np.random.default_rng(0).standard_normal((1, 3, size, size), dtype=np.float32)
session.run(None, {session.get_inputs()[0].name: x})
print(json.dumps({"baseline_kib": baseline, "peak_kib": resident_kib()["VmHWM"]}))
"""


def peak_memory_bytes(onnx_path: str | Path, *, input_size: int, threads: int = 1) -> int:
    """Bytes by which loading `onnx_path` and running batch-1 inference raise the peak resident
    memory of a fresh ONNX Runtime process (see PEAK_MEMORY_NOTE)."""
    if not Path("/proc/self/status").is_file():
        raise EdgepruneError("peak memory is measured from /proc/self/status, which needs Linux")
    try:
        done = subprocess.run(
            [sys.executable, "-c", _PROBE, str(onnx_path), str(input_size), str(threads)],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise EdgepruneError("the peak-memory probe did not finish within 10 minutes") from None
    if done.returncode != 0:
        raise EdgepruneError(f"the peak-memory probe failed: {done.stderr.strip()[-800:]}")
    readings = json.loads(done.stdout.strip().splitlines()[-1])
    return (readings["peak_kib"] - readings["baseline_kib"]) * 1024
