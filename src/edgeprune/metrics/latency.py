"""Inference latency per image with PyTorch and ONNX Runtime on the CPU, at fixed thread counts."""

from __future__ import annotations

from functools import partial
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgeprune.errors import EdgepruneError
from edgeprune.hardware import set_threads
from edgeprune.runtime.energy import RaplZone, energy_used_uj, read_energy
from edgeprune.runtime.measure import DEFAULT_RUNS, DEFAULT_WARMUP, TimingPolicy, time_callable, time_round_robin
from edgeprune.runtime.sessions import ort_session

DEFAULT_BATCH_SIZES = (1, 64)


def _check_counts(batch_sizes: Sequence[int], warmup: int, runs: int, threads: int) -> None:
    if not batch_sizes or min(batch_sizes) < 1:
        raise EdgepruneError(f"batch sizes must be >= 1, got {list(batch_sizes)}")
    if warmup < 0 or runs < 1:
        raise EdgepruneError(f"need warmup >= 0 and runs >= 1, got warmup={warmup}, runs={runs}")
    if threads < 1:
        raise EdgepruneError(f"threads must be >= 1, got {threads}")


def _example_batch(batch_size: int, input_size: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.standard_normal((batch_size, 3, input_size, input_size), dtype=np.float32)


def time_per_image(
    run_batch: Callable[[], object],
    batch_size: int,
    *,
    warmup: int,
    runs: int,
    energy_zones: Sequence[RaplZone] = (),
    threads: int | None = None,
) -> dict[str, float]:
    """Median and p90 over `runs` timed calls of the time per image, in ms.

    The timing is `edgeprune.runtime.measure.time_callable` with a fixed run count (garbage
    collection paused, pinned to `threads` cores). With RAPL zones, the energy used over the
    timed calls is added as `energy_mj_per_image`; the warm-up runs before the first reading so
    it is not counted.
    """
    for _ in range(warmup):
        run_batch()
    zones = list(energy_zones)
    energy_before = read_energy(zones) if zones else None
    timing = time_callable(run_batch, TimingPolicy.fixed(runs, warmup=0), per_call_items=batch_size,
                           cpus=threads)
    energy_after = read_energy(zones) if zones else None
    stats = {"median": timing.median_ms, "p90": timing.p90_ms}
    if zones:
        used_uj = energy_used_uj(zones, energy_before, energy_after)
        stats["energy_mj_per_image"] = used_uj / 1000.0 / (timing.runs * batch_size)
    return stats


def latency_torch(
    model: nn.Module,
    *,
    input_size: int,
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
    threads: int = 1,
    warmup: int = DEFAULT_WARMUP,
    runs: int = DEFAULT_RUNS,
    energy_zones: Sequence[RaplZone] = (),
) -> dict[str, dict[str, float]]:
    """`{"batch1": {"median": ms, "p90": ms}, ...}` per image for the model as given, on the CPU.

    The model must be on the CPU in eval mode. torch's intra-op thread count is set to
    `threads` for the measurement and restored afterwards. With RAPL zones, each batch entry
    also gets `energy_mj_per_image`.
    """
    _check_counts(batch_sizes, warmup, runs, threads)
    if any(p.device.type != "cpu" for p in model.parameters()) or model.training:
        raise EdgepruneError("latency_torch needs the model on the CPU in eval mode")
    previous_threads = torch.get_num_threads()
    set_threads(threads)
    try:
        results = {}
        with torch.inference_mode():
            for batch_size in batch_sizes:
                x = torch.from_numpy(_example_batch(batch_size, input_size))
                results[f"batch{batch_size}"] = time_per_image(
                    partial(model, x), batch_size, warmup=warmup, runs=runs, energy_zones=energy_zones,
                    threads=threads,
                )
    finally:
        set_threads(previous_threads)
    return results


def latency_onnxruntime(
    onnx_path: str | Path,
    *,
    input_size: int,
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
    threads: int = 1,
    warmup: int = DEFAULT_WARMUP,
    runs: int = DEFAULT_RUNS,
) -> dict[str, dict[str, float]]:
    """Same structure as `latency_torch`, for an ONNX file with a dynamic batch axis."""
    _check_counts(batch_sizes, warmup, runs, threads)
    session = ort_session(onnx_path, threads)
    input_name = session.get_inputs()[0].name
    results = {}
    for batch_size in batch_sizes:
        feed = {input_name: _example_batch(batch_size, input_size)}
        results[f"batch{batch_size}"] = time_per_image(
            partial(session.run, None, feed), batch_size, warmup=warmup, runs=runs, threads=threads
        )
    return results


def latency_compared(
    model: nn.Module | None,
    onnx_path: str | Path | None,
    *,
    input_size: int,
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
    threads: int = 1,
    warmup: int = DEFAULT_WARMUP,
    runs: int = DEFAULT_RUNS,
    energy: bool = False,
    backends: Sequence[str] = ("onnxruntime",),
) -> dict[str, dict[str, dict[str, float]]]:
    """PyTorch eager and the ONNX file on each of `backends` (onnxruntime, openvino: the
    runtime layer's backends, `edgeprune.runtime.backends`) measured together: per batch size,
    the runtimes alternate call by call (`time_round_robin`, pinned to `threads` cores), so none
    is favoured by running first or last. `model` or `onnx_path` may be None (not timed). With
    `energy`, the torch entries carry `energy_mj_per_image` (RAPL, over torch's own timed calls)."""
    from edgeprune.runtime.backends import make_backend

    _check_counts(batch_sizes, warmup, runs, threads)
    if model is not None and (any(p.device.type != "cpu" for p in model.parameters()) or model.training):
        raise EdgepruneError("latency_compared needs the model on the CPU in eval mode")
    loaded = ({name: make_backend(name, onnx_path, threads=threads) for name in backends}
              if onnx_path is not None else {})
    results: dict[str, dict[str, dict[str, float]]] = {}
    previous_threads = torch.get_num_threads()
    set_threads(threads)
    try:
        with torch.inference_mode():
            for batch_size in batch_sizes:
                x = _example_batch(batch_size, input_size)
                candidates = {}
                if model is not None:
                    candidates["torch"] = partial(model, torch.from_numpy(x))
                for name, backend in loaded.items():
                    candidates[name] = partial(backend.run, x)
                timings = time_round_robin(candidates, TimingPolicy.fixed(runs, warmup=warmup),
                                           per_call_items=batch_size, cpus=threads,
                                           energy=energy and model is not None)
                for name, timing in timings.items():
                    stats = {"median": timing.median_ms, "p90": timing.p90_ms}
                    if name == "torch" and timing.energy_j is not None:
                        stats["energy_mj_per_image"] = timing.energy_j * 1000.0 / (timing.runs * batch_size)
                    results.setdefault(name, {})[f"batch{batch_size}"] = stats
    finally:
        set_threads(previous_threads)
    return results
