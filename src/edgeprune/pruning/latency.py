"""Latency-aware channel pruning (`target_kind="latency"`), in the spirit of NetAdapt (Yang et
al. 2018: decide by latency measured on the target device) and HALP (Shen et al. 2022: remove
the channels with the least importance per millisecond saved, a latency-constrained knapsack).

How the latency of a candidate shape is known
- A lookup table of *measured* layer latencies (`LatencyTable`): every Conv2d / Linear of the
  model at the channel counts the pruner considers, each timed in isolation as a one-operator
  ONNX graph (Conv or Gemm, random weights, batch 1, its real input resolution) on the asked
  backend (ONNX Runtime or OpenVINO), threads and core pinned as everywhere else
  (`time_round_robin`). One operator, not the whole network per candidate (NetAdapt's way), because
  a model-level difference of two ~5 ms runs drowns a 0.1 ms layer in noise and costs a
  network export per entry; one operator is ~50 ms to build and time, and convolutions are
  where the time goes. Batch norm folds into the conv at export and ReLU6 fuses into it, so they
  are not timed apart.
- From the table to the network: an isolated layer does not run as it does inside the network
  (each one-operator run pays a call overhead; ONNX Runtime reorders an isolated conv's input and
  output to its blocked layout and back, where in the network the blocked layout flows from layer
  to layer), so the network's time is not the sum of the table. It is fitted as a line,
  network = fixed + slope * sum(table), through two whole networks timed in one round-robin: the
  dense one and a probe with every group cut uniformly to half its channels. The fixed part holds
  what the table does not see (additions, pooling, per-call costs), the slope how much faster
  the layers run inside the network than alone. Measured on MobileNetV2 at 224x224 (ONNX
  Runtime, 1 thread, Taylor cuts to 40 % and 60 % of dense): the fit predicted 0.90-0.92 of the
  measured time, the earlier one-point model (dense + the table's difference) 0.78-0.84 from the
  same table; a pure ratio (dense * the table's share) is far off at 32x32, where call overheads
  are most of the table (1.27-1.44). Both stay optimistic, since the greedy picks exactly the
  cuts the table thinks cheapest: structured._prune_for_latency measures the result and cuts
  again when it misses.
- Entries are keyed by the layer's exact shape (channels in/out, kernel, stride, groups, input
  resolution), so a table is shared by every step, every run and every model of the same shapes
  on the same device; the file is cached per device key (CPU label, ISA, backend and version,
  threads, input size, architecture) under `$EDGEPRUNE_CACHE/latency/` and never measured twice.
- The counts considered form a coarse grid per group: multiples of round_to, in about GRID_STEPS
  steps from the dense count down to the group's floor.

The greedy knapsack: while the predicted latency is above the target, take for every group the
next grid count down, its latency saved (table, with the neighbouring layers at their current
counts: the interaction between groups is measured, not assumed additive) and its importance lost
(the sum of the scores of the channels it would remove, lowest first, from the config's
criterion made comparable across groups by `ChannelImportance.across_groups`: Taylor in loss
units, magnitudes divided by their group's mean), and step the group with the least importance
per millisecond saved. No group goes below `latency_min_keep` of its dense channels: the early
high-resolution layers cost the most time per channel, and without a floor the cut empties them.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from edgeprune.errors import EdgepruneError

GRID_STEPS = 8  # coarse grid: about this many counts per group between dense and the floor
# Timing: the "layer-table" and "whole-network" presets of runtime.measure.TIMING_PRESETS.
PROBE_RATIO = 0.5  # the second network of the fit: every group at half its channels
# Layers inside the network run between a few times faster than alone (call overheads, layout
# reorders the network does not pay) and somewhat slower (cache misses): a fitted slope outside
# this range is a timing burst, not the machine.
SLOPE_RANGE = (0.2, 1.5)
# A cut measured above (1 - target) * (1 + LATENCY_TOLERANCE) of dense is cut again, aiming lower
# by the miss, at most LATENCY_CORRECTIONS times (batch-1 timings move a few % run to run).
LATENCY_TOLERANCE, LATENCY_CORRECTIONS = 0.05, 2


# ----------------------------------------------------------------------------- layer shapes

@dataclass(frozen=True)
class LayerShape:
    """One Conv2d or Linear as the backend sees it at batch 1 (input resolution included)."""

    kind: str  # "conv" | "linear"
    in_channels: int
    out_channels: int
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    depthwise: bool = False  # groups == in == out
    height: int = 1
    width: int = 1

    def resized(self, in_channels: int, out_channels: int) -> "LayerShape":
        if self.depthwise:  # a depthwise conv keeps in == out == groups
            in_channels = out_channels
        return LayerShape(self.kind, in_channels, out_channels, self.kernel, self.stride, self.padding,
                          self.dilation, self.depthwise, self.height, self.width)

    @property
    def signature(self) -> str:
        if self.kind == "linear":
            return f"gemm:{self.in_channels}x{self.out_channels}"
        k, s, p, d = (f"{a}x{b}" for a, b in (self.kernel, self.stride, self.padding, self.dilation))
        return (f"conv:{self.in_channels}x{self.out_channels}:k{k}:s{s}:p{p}:d{d}:"
                f"{'dw' if self.depthwise else 'g1'}:{self.height}x{self.width}")


def layer_shapes(model: nn.Module, example_inputs: torch.Tensor) -> dict[str, LayerShape]:
    """Every Conv2d (groups 1 or depthwise) and Linear of `model` by name, with its input
    resolution from one forward pass at batch 1."""
    seen: dict[str, tuple[int, ...]] = {}
    hooks = []

    def record(name: str):
        def hook(_module, inputs, _out) -> None:  # returns None: the output is left as is
            seen.setdefault(name, tuple(inputs[0].shape))
        return hook

    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            hooks.append(module.register_forward_hook(record(name)))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(example_inputs[:1])
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    shapes = {}
    for name, module in model.named_modules():
        if name not in seen:
            continue
        if isinstance(module, nn.Linear):
            shapes[name] = LayerShape("linear", module.in_features, module.out_features)
            continue
        depthwise = module.groups > 1 and module.groups == module.in_channels == module.out_channels
        if module.groups > 1 and not depthwise:
            raise EdgepruneError(f"{name}: grouped convolutions other than depthwise are not in the "
                                 "latency table yet; use another --target-kind")
        padding = module.padding if isinstance(module.padding, tuple) else (0, 0)
        shapes[name] = LayerShape("conv", module.in_channels, module.out_channels,
                                  tuple(module.kernel_size), tuple(module.stride), tuple(padding),
                                  tuple(module.dilation), depthwise, seen[name][2], seen[name][3])
    return shapes


# ----------------------------------------------------------------------------- the table

def _layer_graph(shape: LayerShape, path: Path) -> None:
    """A one-operator ONNX file for `shape` (random weights; the values do not change the time)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    if shape.kind == "linear":
        x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, shape.in_channels])
        w = numpy_helper.from_array(rng.standard_normal((shape.out_channels, shape.in_channels), dtype=np.float32), "w")
        b = numpy_helper.from_array(np.zeros(shape.out_channels, np.float32), "b")
        node = helper.make_node("Gemm", ["input", "w", "b"], ["out"], transB=1)
        y = helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, shape.out_channels])
    else:
        groups = shape.out_channels if shape.depthwise else 1
        cin = 1 if shape.depthwise else shape.in_channels
        x = helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                          [1, shape.in_channels, shape.height, shape.width])
        w = numpy_helper.from_array(
            rng.standard_normal((shape.out_channels, cin, *shape.kernel), dtype=np.float32) * 0.1, "w")
        b = numpy_helper.from_array(np.zeros(shape.out_channels, np.float32), "b")
        node = helper.make_node("Conv", ["input", "w", "b"], ["out"], kernel_shape=list(shape.kernel),
                                strides=list(shape.stride), pads=[*shape.padding, *shape.padding],
                                dilations=list(shape.dilation), group=groups)
        y = helper.make_tensor_value_info("out", TensorProto.FLOAT, None)
    graph = helper.make_graph([node], "layer", [x], [y], initializer=[w, b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9  # readable by every ONNX Runtime / OpenVINO this project supports
    onnx.save(model, str(path))


def _backend_version(runtime: str) -> str:
    from edgeprune.runtime.backends import check_runtime
    from edgeprune.runtime.sessions import import_openvino

    check_runtime(runtime, allow_auto=False)
    module = import_openvino() if runtime == "openvino" else __import__(runtime)
    return str(module.__version__).split("-")[0]


def table_key(runtime: str, threads: int, input_size: int, architecture: str) -> dict[str, Any]:
    from edgeprune.runtime.measure import cpu_device_label, cpu_isa

    return {"device": cpu_device_label(), "isa": cpu_isa(), "runtime": runtime,
            "runtime_version": _backend_version(runtime), "threads": threads,
            "input_size": input_size, "architecture": architecture}


def latency_cache_dir() -> Path:
    from edgeprune.outputs import cache_root

    return cache_root() / "latency"


class LatencyTable:
    """Measured batch-1 latency (ms) of single layers on one device key, kept in a JSON file.
    `ms(shape)` measures a shape the first time it is asked for and reads it afterwards;
    `measured` counts the entries this object measured (0 when everything came from the cache)."""

    def __init__(self, key: dict[str, Any], *, log: Callable[[str], None] | None = None):
        self.key = key
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
        self.path = latency_cache_dir() / f"table-{digest}.json"
        self.entries: dict[str, float] = {}
        self.measured = 0
        self.log = log
        try:
            record = json.loads(self.path.read_text(encoding="utf-8"))
            if isinstance(record, dict) and record.get("key") == key:
                self.entries = {k: float(v) for k, v in record.get("entries", {}).items()}
        except (OSError, ValueError):
            pass  # missing or damaged: measured again
        self.loaded = len(self.entries)
        self._tmp: tempfile.TemporaryDirectory | None = None

    def ms(self, shape: LayerShape) -> float:
        sig = shape.signature
        if sig not in self.entries:
            self.entries[sig] = self._measure(shape)
            self.measured += 1
            if self.log and self.measured % 50 == 0:
                self.log(f"latency table: {self.measured} layer shapes measured")
        return self.entries[sig]

    def _measure(self, shape: LayerShape) -> float:
        from edgeprune.runtime.backends import make_backend
        from edgeprune.runtime.measure import time_callable

        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="edgeprune-latency-")
        path = Path(self._tmp.name) / "layer.onnx"
        _layer_graph(shape, path)
        backend = make_backend(self.key["runtime"], path, threads=self.key["threads"])
        dims = ((1, shape.in_channels) if shape.kind == "linear"
                else (1, shape.in_channels, shape.height, shape.width))
        x = np.random.default_rng(0).standard_normal(dims, dtype=np.float32)
        timing = time_callable(lambda: backend.run(x), "layer-table", cpus=self.key["threads"])
        return timing.median_ms

    def save(self) -> None:
        """Write the table (atomic: two runs at once never read half a file)."""
        record = {"key": self.key, "entries": self.entries,
                  "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        from edgeprune.outputs import atomic_file

        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_file(self.path, overwrite=True, what="latency table") as tmp:
                tmp.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        except (OSError, EdgepruneError):
            pass  # a read-only cache only costs measuring again next time


# ----------------------------------------------------------------------------- whole network

def export_for_timing(model: nn.Module, input_size: int, path: Path) -> Path:
    """The network as a batch-1 FP32 ONNX file, for timing only. Not edgeprune.export.onnx (the
    same layer rank): no metadata and no dynamic batch axis are needed to time batch 1; the
    exporter is the same (torch.export based, opset 18)."""
    device = next(model.parameters()).device
    example = torch.randn(1, 3, input_size, input_size, device=device)
    was_training = model.training
    model.eval()
    try:
        program = torch.onnx.export(model, (example,), None, dynamo=True, opset_version=18,
                                    external_data=False, optimize=True, verbose=False)
    except Exception as exc:  # noqa: BLE001 - the exporter raises many unrelated types
        raise EdgepruneError(f"ONNX export for latency timing failed: {exc}") from exc
    finally:
        model.train(was_training)
    import onnx

    onnx.save(program.model_proto, str(path))
    return path


def time_onnx_files(paths: dict[str, Path], runtime: str, threads: int, input_size: int) -> dict[str, float]:
    """Batch-1 median latency (ms) of each file on `runtime`, timed in one round-robin."""
    from edgeprune.runtime.backends import make_backend
    from edgeprune.runtime.measure import time_round_robin

    backends = {name: make_backend(runtime, p, threads=threads) for name, p in paths.items()}
    x = np.random.default_rng(0).standard_normal((1, 3, input_size, input_size), dtype=np.float32)
    timings = time_round_robin({n: (lambda b=b: b.run(x)) for n, b in backends.items()},
                               "whole-network", cpus=threads)
    return {n: t.median_ms for n, t in timings.items()}


# ----------------------------------------------------------------------------- the model

@dataclass
class LatencyModel:
    """Predicts the network's batch-1 latency from its channel counts: fixed + slope *
    sum(table), the line through the dense network and the half-channel probe (module docstring).

    `links`: for each group key, the layers whose output ("out") or input ("in") channels it sets.
    `dense_onnx`: the dense network's ONNX bytes, timed again beside each result (same round-robin)."""

    runtime: str
    threads: int
    input_size: int
    table: LatencyTable = field(repr=False)
    shapes: dict[str, LayerShape]  # dense shapes, by layer name
    links: dict[str, list[tuple[str, str]]]
    dense_ms: float  # measured, whole network
    fixed_ms: float  # the fitted line: network = fixed_ms + slope * sum(table)
    slope: float
    probe_ms: float  # the half-channel probe, timed beside the dense network
    dense_onnx: bytes = field(repr=False, default=b"")
    predicted_ms: float = 0.0
    measured_ms: float | None = None
    measured_dense_ms: float | None = None  # the dense network in the same round-robin
    corrections: int = 0  # cuts made again because the measurement missed the target

    def __deepcopy__(self, memo):  # the table and the dense file are shared, never copied
        import copy

        clone = copy.copy(self)
        clone.links = {k: list(v) for k, v in self.links.items()}
        return clone

    def layer_shapes_at(self, counts: dict[str, int]) -> dict[str, LayerShape]:
        """Every layer's shape with the groups at `counts` (groups not named: dense)."""
        ins: dict[str, int] = {}
        outs: dict[str, int] = {}
        for key, links in self.links.items():
            if key not in counts:
                continue
            for layer, side in links:
                (outs if side == "out" else ins)[layer] = counts[key]
        return {name: s.resized(ins.get(name, s.in_channels), outs.get(name, s.out_channels))
                for name, s in self.shapes.items()}

    def table_ms(self, counts: dict[str, int]) -> float:
        return sum(self.table.ms(s) for s in self.layer_shapes_at(counts).values())

    def predict(self, counts: dict[str, int]) -> float:
        return self.fixed_ms + self.slope * self.table_ms(counts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "runtime": self.runtime, "runtime_version": self.table.key["runtime_version"],
            "threads": self.threads, "input_size": self.input_size,
            "device": self.table.key["device"], "isa": self.table.key["isa"],
            "dense_ms": self.dense_ms, "predicted_ms": self.predicted_ms,
            "measured_ms": self.measured_ms, "measured_dense_ms": self.measured_dense_ms,
            "measured_speedup": (self.measured_dense_ms / self.measured_ms
                                 if self.measured_ms and self.measured_dense_ms else None),
            "predicted_over_measured": (self.predicted_ms / self.measured_ms if self.measured_ms else None),
            "corrections": self.corrections,
            # Ratios survive a machine whose load changes between the table and the result.
            "predicted_speedup": self.dense_ms / self.predicted_ms if self.predicted_ms else None,
            "fixed_ms": self.fixed_ms, "slope": self.slope, "probe_ms": self.probe_ms,
            "table_file": str(self.table.path),
            "table_entries": len(self.table.entries), "table_measured_now": self.table.measured,
            "table_loaded": self.table.loaded,
            "method": "per-layer table (one-operator ONNX graphs), fitted to the dense network "
                      "and a half-channel probe timed together; greedy least importance per ms saved",
        }


def group_links(dg: Any, groups: list, names: dict[nn.Module, str]) -> dict[str, list[tuple[str, str]]]:
    """For each torch-pruning group: the Conv2d / Linear layers whose output or input channels
    its removal changes."""
    links: dict[str, list[tuple[str, str]]] = {}
    for g in groups:
        found = []
        for dep, _ in g.group:
            module = dep.target.module
            if module not in names or not isinstance(module, (nn.Conv2d, nn.Linear)):
                continue
            side = "out" if dg.is_out_channel_pruning_fn(dep.handler) else "in"
            if (names[module], side) not in found:
                found.append((names[module], side))
        links[g.key] = found
    return links


def network_key(shapes: dict[str, LayerShape]) -> str:
    """A whole network as a table entry, keyed by all its layer shapes: a second run on the same
    model predicts from the same figures, so it plans the same cut and measures nothing new."""
    joined = "|".join(f"{n}={s.signature}" for n, s in shapes.items())
    return "network:" + hashlib.sha256(joined.encode()).hexdigest()[:24]


def build_latency_model(model: nn.Module, example_inputs: torch.Tensor, dg: Any, groups: list,
                        probe: nn.Module, probe_counts: dict[str, int], *, runtime: str,
                        threads: int, architecture: str,
                        log: Callable[[str], None] | None = None) -> LatencyModel:
    """Fill the table at the dense shapes and fit the line from the table to the network:
    the dense network and `probe` (the same network with the groups at `probe_counts`, about
    half their channels) timed whole, side by side in one round-robin."""
    from edgeprune.runtime.backends import check_runtime

    check_runtime(runtime, allow_auto=False)
    say = log or (lambda _m: None)
    input_size = int(example_inputs.shape[-1])
    names = {m: n for n, m in model.named_modules()}
    shapes = layer_shapes(model, example_inputs)
    table = LatencyTable(table_key(runtime, threads, input_size, architecture), log=log)
    lat = LatencyModel(runtime, threads, input_size, table, shapes, group_links(dg, groups, names),
                       dense_ms=0.0, fixed_ms=0.0, slope=1.0, probe_ms=0.0)
    dense_key = network_key(shapes)
    probe_key = network_key(lat.layer_shapes_at(probe_counts))
    with tempfile.TemporaryDirectory(prefix="edgeprune-latency-") as tmp:
        dense_path = export_for_timing(model, input_size, Path(tmp) / "dense.onnx")
        if dense_key not in table.entries or probe_key not in table.entries:
            probe_path = export_for_timing(probe, input_size, Path(tmp) / "probe.onnx")
            times = time_onnx_files({"dense": dense_path, "probe": probe_path}, runtime, threads, input_size)
            table.entries[dense_key], table.entries[probe_key] = times["dense"], times["probe"]
            table.measured += 2
        lat.dense_onnx = dense_path.read_bytes()
    lat.dense_ms, lat.probe_ms = table.entries[dense_key], table.entries[probe_key]
    started = time.perf_counter()
    dense_table, probe_table = lat.table_ms({}), lat.table_ms(probe_counts)
    table.save()
    if not (lat.probe_ms < lat.dense_ms and probe_table < dense_table):
        raise EdgepruneError(
            f"a latency cut cannot be planned on {runtime} at {input_size}x{input_size}: the network "
            f"with every group at half its channels measured {lat.probe_ms:.3f} ms against "
            f"{lat.dense_ms:.3f} ms dense; channel counts do not drive the latency here (fixed "
            "per-operator costs do): use --target-kind params or macs, or a larger input")
    lat.slope = (lat.dense_ms - lat.probe_ms) / (dense_table - probe_table)
    if not SLOPE_RANGE[0] <= lat.slope <= SLOPE_RANGE[1]:
        # Two whole networks timed together, so a load change between them is unlikely, but a
        # burst during one of them gives a line no network follows: fall back to the one-point
        # model (dense + the table's difference) rather than plan on it.
        say(f"warning: the latency fit is implausible (slope {lat.slope:.2f}: dense {lat.dense_ms:.3f} "
            f"ms, probe {lat.probe_ms:.3f} ms; was the machine busy?): predicting dense + the "
            "table's difference instead")
        lat.slope = 1.0
    lat.fixed_ms = lat.dense_ms - lat.slope * dense_table
    lat.predicted_ms = lat.dense_ms
    say(f"latency on {runtime}, {threads} thread(s), {input_size}x{input_size}: dense network "
        f"{lat.dense_ms:.3f} ms, half-channel probe {lat.probe_ms:.3f} ms (one round-robin); its "
        f"{len(shapes)} conv/linear layers {dense_table:.3f} ms alone in the table; network = "
        f"{lat.fixed_ms:.3f} ms + {lat.slope:.2f} x table ({table.loaded} entries cached, "
        f"{table.measured} measured in {time.perf_counter() - started:.1f} s; {table.path})")
    return lat


def plan_counts(lat: LatencyModel, groups: list, scores: dict[str, torch.Tensor],
                floors: dict[str, int], round_to: int, initial: dict[str, int], target_ms: float,
                ) -> tuple[dict[str, int], float]:
    """The greedy knapsack: channel counts per group whose predicted latency is <= target_ms,
    removing the least importance per millisecond saved. `scores[key]`: one score per current
    channel of the group (None: the group is not pruned)."""
    counts = {g.key: g.channels for g in groups}
    ordered = {k: torch.sort(s.detach().float().cpu()).values for k, s in scores.items() if s is not None}
    predicted = lat.predict(counts)
    lat.predicted_ms = predicted

    def next_count(key: str) -> int | None:
        k = counts[key]
        step = round_to * max(1, round(initial[key] / (GRID_STEPS * round_to)))
        nxt = max(floors[key], round_to * ((k - step) // round_to))
        return nxt if nxt < k else None

    def layers_ms(key: str, at: dict[str, int]) -> float:
        touched = {name for name, _ in lat.links[key]}
        shapes = lat.layer_shapes_at(at)
        return sum(lat.table.ms(shapes[name]) for name in touched)

    while predicted > target_ms:
        best = None
        for g in groups:
            key = g.key
            if key not in ordered:
                continue
            nxt = next_count(key)
            if nxt is None:
                continue
            saved = layers_ms(key, counts) - layers_ms(key, {**counts, key: nxt})
            channels = ordered[key]
            lost = float(channels[g.channels - counts[key]: g.channels - nxt].sum())
            # A step that saves nothing measurable goes last, not never (timing noise).
            cost = lost / saved if saved > 1e-6 else float("inf")
            if best is None or cost < best[0]:
                best = (cost, key, nxt, saved)
        if best is None:
            lat.table.save()
            raise EdgepruneError(
                f"a latency of {target_ms:.3f} ms is out of reach on {lat.runtime}: with every "
                f"group at its floor (min_channels, round_to={round_to}, --latency-min-keep) the "
                f"prediction is {predicted:.3f} ms (dense {lat.dense_ms:.3f} ms): ask for less, or "
                "lower the floor; at small inputs fixed per-operator costs dominate, and removing "
                "channels cannot cut them")
        _, key, nxt, saved = best
        counts[key] = nxt
        predicted = lat.predict(counts)
    lat.table.save()
    lat.predicted_ms = predicted
    return counts, predicted


def measure_against_dense(lat: LatencyModel, model: nn.Module) -> None:
    """Time the pruned network beside the dense one (one round-robin, same core) and record both."""
    with tempfile.TemporaryDirectory(prefix="edgeprune-latency-") as tmp:
        dense = Path(tmp) / "dense.onnx"
        dense.write_bytes(lat.dense_onnx)
        pruned = export_for_timing(model, lat.input_size, Path(tmp) / "pruned.onnx")
        times = time_onnx_files({"dense": dense, "pruned": pruned}, lat.runtime, lat.threads,
                                lat.input_size)
    lat.measured_dense_ms, lat.measured_ms = times["dense"], times["pruned"]
