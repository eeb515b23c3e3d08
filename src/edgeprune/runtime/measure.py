"""Measurement helpers without torch: latency, peak memory, energy, file sizes, device label.

One timing policy (`time_round_robin`) times every runtime: PyTorch eager, ONNX Runtime and
OpenVINO (the caller passes callables), so the columns of a bench table differ only in the
runtime, never in the method. `edgeprune.metrics` (the torch side) uses the same loop, memory
probe, energy and device label.
"""

from __future__ import annotations

import gzip
import os
import platform
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterator, Mapping

import numpy as np

from edgeprune.errors import EdgepruneError
from edgeprune.runtime.energy import energy_used_uj, find_rapl_zones, read_energy
from edgeprune.runtime.metadata import ir_bin_path, is_openvino_ir


DEFAULT_WARMUP = 3  # untimed runs before timing
DEFAULT_RUNS = 20  # timed runs per batch size (edgeprune measure)


@dataclass
class Timing:
    median_ms: float
    p90_ms: float
    runs: int
    energy_j: float | None = None  # RAPL package energy over this candidate's timed calls
    cpus: tuple[int, ...] | None = None  # the cores the process was pinned to (None: not pinned)


TIMING_POLICY = (
    "round-robin: every candidate warmed up, then timed in interleaved rounds whose order rotates "
    "(no candidate favoured by its place in the run), all threads pinned to the same cores "
    "(sched_setaffinity, where available), garbage collection paused; median and p90 (numpy "
    "percentile) of per-call time / batch size, in ms"
)


def _task_ids() -> list[int]:
    try:
        return [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        return [0]


def pick_cpus(count: int | None) -> tuple[int, ...] | None:
    """The first `count` cores this process may run on (all of them when it may use fewer);
    None where the OS cannot pin (macOS, Windows) or when count is None."""
    if count is None or not hasattr(os, "sched_getaffinity"):
        return None
    allowed = sorted(os.sched_getaffinity(0))
    return tuple(allowed[: max(1, count)])


@contextmanager
def pinned(cpus: tuple[int, ...] | None) -> Iterator[tuple[int, ...] | None]:
    """Every thread of this process (runtime thread pools included: pinning only the calling
    thread would leave ONNX Runtime's or OpenVINO's workers free to move) on `cpus`; the previous
    masks are restored afterwards, and threads started inside take the caller's previous mask."""
    if not cpus or not hasattr(os, "sched_setaffinity"):
        yield None
        return
    own = os.sched_getaffinity(0)
    before: dict[int, set[int]] = {}
    for tid in _task_ids():
        try:
            before[tid] = os.sched_getaffinity(tid)
            os.sched_setaffinity(tid, cpus)
        except OSError:  # the thread ended meanwhile, or pinning is refused (some containers)
            pass
    try:
        yield tuple(cpus)
    finally:
        for tid in _task_ids():
            try:
                os.sched_setaffinity(tid, before.get(tid, own))
            except OSError:
                pass


@dataclass(frozen=True)
class TimingPolicy:
    """How long `time_round_robin` times: `warmup` untimed calls per candidate, then rounds of
    `runs_per_round` calls per candidate, at least `min_rounds`, at most `max_rounds`, stopping
    earlier once `budget_s` seconds per candidate are spent (None: no budget, `max_rounds`
    decides). Checked when built. The presets below name every policy the project uses."""

    warmup: int = 3
    runs_per_round: int = 5
    min_rounds: int = 3
    max_rounds: int = 20
    budget_s: float | None = None

    def __post_init__(self) -> None:
        if (self.min_rounds < 1 or self.max_rounds < self.min_rounds or self.runs_per_round < 1
                or self.warmup < 0):
            raise EdgepruneError(
                f"need warmup >= 0, runs_per_round >= 1 and 1 <= min_rounds <= max_rounds, got "
                f"warmup={self.warmup}, runs_per_round={self.runs_per_round}, rounds "
                f"{self.min_rounds}..{self.max_rounds}"
            )
        if self.budget_s is not None and not (0 <= self.budget_s < float("inf")):
            raise EdgepruneError(f"the timing budget must be a finite number >= 0 s, got {self.budget_s}")

    @classmethod
    def fixed(cls, runs: int, *, warmup: int = DEFAULT_WARMUP) -> "TimingPolicy":
        """Exactly `runs` timed calls per candidate, one per round (no budget)."""
        if runs < 1:
            raise EdgepruneError(f"need runs >= 1, got {runs}")
        return cls(warmup=warmup, runs_per_round=1, min_rounds=runs, max_rounds=runs)

    def with_budget(self, budget_s: float | None) -> "TimingPolicy":
        """This policy with another budget (seconds per candidate), e.g. a `--budget` flag's."""
        return replace(self, budget_s=budget_s)


# The named policies. Budgets are seconds per candidate.
TIMING_PRESETS: dict[str, TimingPolicy] = {
    # `runtime="auto"`: which backend is faster for a file, batch 1, a short fixed measurement.
    "auto-choice": TimingPolicy(warmup=3, runs_per_round=4, min_rounds=5, max_rounds=5),
    # bench rows: batch 1 in rounds of 5 calls, batch 64 one call per round (a call is long).
    "bench-b1": TimingPolicy(warmup=5, runs_per_round=5, min_rounds=2, max_rounds=60, budget_s=2.0),
    "bench-b64": TimingPolicy(warmup=2, runs_per_round=1, min_rounds=5, max_rounds=100, budget_s=2.0),
    # one entry of the latency cut's layer table: a single operator, 15 calls.
    "layer-table": TimingPolicy.fixed(15, warmup=3),
    # whole networks for the latency cut's fit: at 32x32 a network runs in 0.3 ms and 8 rounds
    # take 25 ms, where one scheduler hiccup doubles a median; a second of rounds does not mind it.
    "whole-network": TimingPolicy(warmup=5, runs_per_round=5, min_rounds=8, max_rounds=400, budget_s=0.5),
    # export's "is INT8 faster here?": a first answer, not a benchmark (that is `edgeprune bench`).
    "int8-speed": TimingPolicy(budget_s=0.75),
    # `edgeprune measure` and `metrics.latency_*`: a fixed count, comparable between runs.
    "measure": TimingPolicy.fixed(DEFAULT_RUNS, warmup=DEFAULT_WARMUP),
}


def timing_preset(name: str) -> TimingPolicy:
    try:
        return TIMING_PRESETS[name]
    except KeyError:
        raise EdgepruneError(f"unknown timing preset {name!r}: choose one of {', '.join(TIMING_PRESETS)}") from None


def time_round_robin(
    candidates: Mapping[str, Callable[[], object]],
    policy: TimingPolicy | str = TimingPolicy(),
    *,
    per_call_items: int | Mapping[str, int] = 1,
    cpus: int | tuple[int, ...] | None = None,
    energy: bool = False,
    clock: Callable[[], float] = time.perf_counter,
    **fields: float | None,
) -> dict[str, Timing]:
    """The one timing policy (TIMING_POLICY): median and p90 of each candidate's call time
    divided by `per_call_items` (time per image), timed in interleaved rounds.

    `policy` (a TimingPolicy or a preset's name): each candidate gets `warmup` untimed calls,
    then every round runs each candidate `runs_per_round` times, the order rotating by one place
    per round; at least `min_rounds` rounds, stopping at `max_rounds` or once `budget_s` seconds
    per candidate are spent in all. `cpus`: a core count (the first N cores this process may
    use) or explicit cores to pin every thread to while timing; None leaves the scheduler free.
    `energy`: RAPL energy read around each candidate's calls and summed per candidate (None
    where unreadable). `clock`: the time source (tests pass a synthetic one).

    `fields` (warmup, runs_per_round, min_rounds, max_rounds, budget_s) override the policy's
    one by one, for callers written before TimingPolicy; that `budget_s` is the total for all
    candidates, as it was then."""
    import gc

    names = list(candidates)
    if not names:
        return {}
    policy = timing_preset(policy) if isinstance(policy, str) else policy
    if fields:
        unknown = set(fields) - {"warmup", "runs_per_round", "min_rounds", "max_rounds", "budget_s"}
        if unknown:
            raise TypeError(f"time_round_robin() got unexpected keyword(s) {sorted(unknown)}")
        if fields.get("budget_s") is not None:
            fields["budget_s"] = fields["budget_s"] / len(names)
        policy = replace(policy, **fields)
    budget = None if policy.budget_s is None else policy.budget_s * len(names)
    items = per_call_items if isinstance(per_call_items, Mapping) else dict.fromkeys(names, per_call_items)
    zones = find_rapl_zones()[0] if energy else []
    samples: dict[str, list[float]] = {n: [] for n in names}
    used_uj: dict[str, float] = dict.fromkeys(names, 0.0)
    chosen = cpus if isinstance(cpus, tuple) or cpus is None else pick_cpus(cpus)
    with pinned(chosen) as on_cpus:
        for name in names:
            for _ in range(policy.warmup):
                candidates[name]()
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            start = clock()
            for round_index in range(policy.max_rounds):
                shift = round_index % len(names)
                for name in names[shift:] + names[:shift]:
                    fn = candidates[name]
                    before = read_energy(zones) if zones else None
                    for _ in range(policy.runs_per_round):
                        t0 = clock()
                        fn()
                        samples[name].append(clock() - t0)
                    if zones:
                        used_uj[name] += energy_used_uj(zones, before, read_energy(zones))
                if (round_index + 1 >= policy.min_rounds and budget is not None
                        and clock() - start >= budget):
                    break
        finally:
            if gc_was_enabled:
                gc.enable()
    out = {}
    for name in names:
        arr = np.asarray(samples[name]) * 1000.0 / items[name]
        out[name] = Timing(float(np.percentile(arr, 50)), float(np.percentile(arr, 90)), len(arr),
                           energy_j=used_uj[name] / 1e6 if zones else None, cpus=on_cpus)
    return out


def time_callable(
    fn: Callable[[], object],
    policy: TimingPolicy | str = TimingPolicy(runs_per_round=1, min_rounds=5, max_rounds=100, budget_s=2.0),
    *,
    per_call_items: int = 1,
    cpus: int | tuple[int, ...] | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> Timing:
    """Median and 90th percentile wall time of fn() divided by `per_call_items` (time per image):
    `time_round_robin` with one candidate. Garbage collection is paused while timing, as
    `timeit` does, so a collection triggered by unrelated objects does not land in one run."""
    return time_round_robin({"fn": fn}, policy, per_call_items=per_call_items, cpus=cpus, clock=clock)["fn"]


# Peak memory is measured in a fresh process, so that nothing this process already holds (other
# artifacts, torch, the data) is counted. Linux only: it reads /proc/self/status, because
# ru_maxrss survives fork+exec and starts at the parent's (large) peak, hiding the model's memory.
PEAK_MEMORY_NOTE = (
    "peak resident memory (VmHWM) minus resident memory after `import onnxruntime, numpy` (or "
    "openvino) and edgeprune's session builder, in a fresh process that then loads the ONNX model into that runtime (CPU, {threads} "
    "thread(s)) and runs one batch-1 inference; the peak is reset after the imports "
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

# The probes open the model with the same session builders as every backend
# (`edgeprune.runtime.sessions`, imported before the baseline). Arguments: path, input size, threads.
ORT_PROBE = PROBE_PRELUDE + """
import numpy as np
import onnxruntime
from edgeprune.runtime.sessions import ort_session
path, size, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
baseline = reset_peak()
session = ort_session(path, threads)
x = np.random.default_rng(0).standard_normal((1, 3, size, size), dtype=np.float32)
session.run(None, {session.get_inputs()[0].name: x})
report(baseline)
"""


# The same for OpenVINO, batch-1 static. Arguments: path, input size, threads.
OV_PROBE = PROBE_PRELUDE + """
import numpy as np
import openvino as ov
from edgeprune.runtime.sessions import openvino_compile, openvino_read
path, size, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
core = ov.Core()
core.get_versions("CPU")  # the CPU plugin and ONNX reader libraries load before the baseline,
ov.frontend.FrontEndManager().load_by_framework("onnx")  # as ORT's are loaded at import
baseline = reset_peak()
model = openvino_read(path, core)[1]
model.reshape([1, 3, size, size])
request = openvino_compile(core, model, threads).create_infer_request()
x = np.random.default_rng(0).standard_normal((1, 3, size, size), dtype=np.float32)
request.infer({0: x})
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
    # The child imports edgeprune.runtime.sessions from wherever this edgeprune was imported.
    source = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (source, os.environ.get("PYTHONPATH")) if p)}
    try:
        done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                              timeout=timeout_s, check=False, env=env)
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


def peak_memory_onnx(path: str | Path, *, input_size: int, threads: int = 1,
                     runtime: str = "onnxruntime") -> PeakMemory:
    """See PEAK_MEMORY_NOTE. runtime: onnxruntime or openvino."""
    probe = OV_PROBE if runtime == "openvino" else ORT_PROBE
    return run_memory_probe(probe, [str(path), str(input_size), str(threads)])


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
    files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else _artifact_files(p)
    compressor_input = b"".join(f.read_bytes() for f in files)
    return len(gzip.compress(compressor_input, compresslevel=9, mtime=0))


def _artifact_files(p: Path) -> list[Path]:
    """A file, or an OpenVINO IR's MODEL.xml with the MODEL.bin it cannot run without."""
    return [p, ir_bin_path(p)] if is_openvino_ir(p) and ir_bin_path(p).is_file() else [p]


def file_size(path: str | Path) -> int:
    """Bytes of a file (an OpenVINO IR: .xml and .bin), or of every file in a folder."""
    p = Path(path)
    if p.is_dir():
        return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    return sum(f.stat().st_size for f in _artifact_files(p))


CPUINFO = "/proc/cpuinfo"

# The instruction-set extensions INT8 (and FP32) kernel speed depends on, in label order:
# x86 AVX2, AVX-512 (its VNNI int8 dot product), AVX-VNNI (the 256-bit form on client cores),
# AMX tiles with int8; Arm NEON (asimd) and its int8 dot product (asimddp).
SPEED_ISA = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_tile", "amx_int8", "asimd", "asimddp")


def _cpuinfo_lines(cpuinfo: str | Path | None) -> list[str]:
    try:
        cpuinfo = CPUINFO if cpuinfo is None else cpuinfo  # read at call time: tests repoint it
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            return f.readlines()
    except OSError:
        return []


def cpu_flags(cpuinfo: str | Path | None = None) -> set[str] | None:
    """The CPU feature flags of the first core (x86 `flags`, Arm `Features`); None where the
    file cannot be read (not Linux)."""
    for line in _cpuinfo_lines(cpuinfo):
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return None


def cpu_isa(cpuinfo: str | Path | None = None) -> str | None:
    """The speed-relevant extensions present, joined by "+", e.g. "avx2+avx512f+avx512_vnni";
    "none" when the CPU has none of SPEED_ISA, None when /proc/cpuinfo is not readable."""
    flags = cpu_flags(cpuinfo)
    if flags is None:
        return None
    return "+".join(f for f in SPEED_ISA if f in flags) or "none"


def preferred_channel_multiple(cpuinfo: str | Path | None = None) -> int:
    """The channel multiple this CPU's convolution kernels block on, for `round_to="auto"`:
    16 with AVX-512 (16 floats per register; ONNX Runtime's NCHWc convolutions use 16-channel
    blocks there), else 8 (AVX2's 8 floats and ONNX Runtime's 8-channel blocks; NEON's 4-float
    registers divide 8; an unknown CPU gets 8 too). `cpuinfo`: another file, for tests."""
    flags = cpu_flags(cpuinfo) or set()
    return 16 if "avx512f" in flags else 8


@lru_cache(maxsize=1)
def cpu_name() -> str:
    for line in _cpuinfo_lines(None):
        if line.startswith("model name") or line.startswith("Model"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def usable_cores() -> int:
    """Cores this process may run on: its affinity mask (a container or taskset limit), not
    the machine's count, which `os.cpu_count()` reports."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def hardware_label(kind: str, name: str) -> str:
    """`<kind>-<name>` with `name` made file-name safe, e.g. `cpu-AMD_EPYC_7B13-2c`."""
    safe = "".join(ch if ch.isalnum() or ch in "-." else "_" for ch in name)
    while "__" in safe:
        safe = safe.replace("__", "_")
    return f"{kind}-{safe.strip('_')}"


def cpu_device_label() -> str:
    """`cpu-<CPU model>-<cores>c` (cores this process may use), also what
    `edgeprune.hardware.device_label("cpu")` returns, computed without torch (so an edge device
    with the runtime extra alone labels its results). The extensions go in a column of their own
    (`cpu_isa()`): a virtual machine often reports a bare "AMD EPYC" that says nothing of them."""
    return hardware_label("cpu", f"{cpu_name()}-{usable_cores()}c")


def runtime_software_label() -> str:
    import onnxruntime as ort

    return f"ort{ort.__version__}"
