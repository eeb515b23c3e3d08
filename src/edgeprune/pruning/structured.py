"""Structured channel pruning with physical removal, through torch-pruning's DependencyGraph.

torch-pruning traces the model and groups every tensor slice that must go together when one
channel goes (conv filter, its batch norm, a depthwise conv in MobileNetV2, the next layer's
input slice, every branch of a residual addition), and its pruning functions cut those slices
out, so the model that comes back has smaller tensors and runs as is.

The channel-count policy is hand-written on top of the graph (rather than tp's MetaPruner):
`round_to` rounding, a per-layer minimum, cumulative targets relative to the *dense* model that
survive deep copies between iterative steps (MetaPruner keeps its step schedule and initial
channel counts inside one pruner object bound to one model), and searching the channel ratio
for a params/MACs target all need per-group control. Scores come from the config's criterion
(pruning.importance), usually a wrapped tp estimator.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import torch
import torch_pruning as tp
from torch import nn

from edgeprune.errors import EdgepruneError
from edgeprune.metrics.macs import count_macs_params
from edgeprune.pruning.config import _Channel
from edgeprune.pruning.importance import get_importance
from edgeprune.pruning.scope import layers_in_scope, output_layer, prunable_layers

ROOT_TYPES = (nn.Conv2d, nn.Linear)


@dataclass
class StructuredState:
    """What a structured run needs to remember across steps: the dense model's figures and every
    group's initial channel count (keyed by the names of the layers whose outputs it removes)."""

    dense_params: int
    dense_macs: int
    initial_channels: dict[str, int] = field(default_factory=dict)
    current_channels: dict[str, int] = field(default_factory=dict)
    ratio: float = 0.0  # uniform channel ratio applied so far (relative to the dense model)
    params: int = 0
    macs: int = 0
    scope_layers: list[str] = field(default_factory=list)  # names do not change when pruning
    output_name: str = ""
    latency: Any = None  # pruning.latency.LatencyModel, for target_kind="latency"

    def copy(self) -> "StructuredState":
        return copy.deepcopy(self)

    @property
    def params_reduction(self) -> float:
        return 1.0 - self.params / self.dense_params

    @property
    def macs_reduction(self) -> float:
        return 1.0 - self.macs / self.dense_macs

    @property
    def channels_reduction(self) -> float:
        total = sum(self.initial_channels.values())
        return 1.0 - sum(self.current_channels.values()) / total if total else 0.0

    @property
    def latency_reduction(self) -> float:
        """Measured (the result beside the dense network, one round-robin) where measured, else
        predicted."""
        lat = self.latency
        if lat is None:
            return 0.0
        if lat.measured_ms is not None and lat.measured_dense_ms:
            return 1.0 - lat.measured_ms / lat.measured_dense_ms
        return 1.0 - lat.predicted_ms / lat.dense_ms

    def achieved(self, kind: str) -> float:
        if kind == "latency":
            return self.latency_reduction
        return {
            "params": self.params_reduction,
            "macs": self.macs_reduction,
            "channels": self.channels_reduction,
        }[kind]


@dataclass
class _Group:
    key: str
    root: nn.Module
    handler: Any
    channels: int
    group: Any


def _groups(
    model: nn.Module, example_inputs: torch.Tensor, state: "StructuredState"
) -> tuple[Any, list[_Group]]:
    """The dependency graph and the prunable groups whose removed outputs all lie in scope; the
    output layer (number of classes) is never pruned in its output dimension."""
    names = {m: n for n, m in prunable_layers(model).items()}
    in_scope = set(state.scope_layers)
    out_name = state.output_name
    out_module = model.get_submodule(out_name)
    was_training = model.training
    # torch-pruning traces through autograd, so frozen parameters (a transfer-learning backbone)
    # would hide their layers from the graph: unfreeze for the trace only.
    frozen = [p for p in model.parameters() if not p.requires_grad]
    model.eval()
    try:
        for p in frozen:
            p.requires_grad_(True)
        dg = tp.DependencyGraph().build_dependency(model, example_inputs=example_inputs)
    finally:
        for p in frozen:
            p.requires_grad_(False)
        model.train(was_training)
    groups: list[_Group] = []
    for group in dg.get_all_groups(ignored_layers=[out_module], root_module_types=list(ROOT_TYPES)):
        outs = sorted(
            {
                names[dep.target.module]
                for dep, _ in group
                if dep.target.module in names and dg.is_out_channel_pruning_fn(dep.handler)
            }
        )
        if not outs or out_name in outs or not set(outs) <= in_scope:
            continue
        root = group[0].dep.target.module
        groups.append(
            _Group(",".join(outs), root, group[0].dep.handler, dg.get_out_channels(root), group)
        )
    return dg, groups


def _keep(initial: int, current: int, ratio: float, config: _Channel) -> int:
    """Channels a group keeps at uniform ratio `ratio` (relative to its dense count)."""
    r = config.round_to
    floor = -(-config.min_channels // r) * r  # the minimum, rounded up to a multiple of round_to
    if current <= floor:
        return current
    keep = int(round(initial * (1.0 - ratio) / r)) * r
    return max(floor, min(keep, current))


def _apply_ratio(
    model: nn.Module,
    example_inputs: torch.Tensor,
    config: _Channel,
    state: StructuredState,
    ratio: float,
    scorer: Any,
    overrides: dict[str, int] | None = None,
    count: str = "all",
) -> None:
    """Prune every in-scope group of `model` in place down to its count at `ratio` (or to the
    count in `overrides`, by group key). count: which figures to refresh in `state`
    ("all", "params", "macs", "channels": trials only need the one they search on)."""
    dg, groups = _groups(model, example_inputs, state)
    plan = []
    current = {}
    for g in groups:
        initial = state.initial_channels.setdefault(g.key, g.channels)
        keep = _keep(initial, g.channels, ratio, config)
        if overrides and g.key in overrides:
            keep = min(g.channels, overrides[g.key])
        current[g.key] = keep
        if keep < g.channels:
            scores = scorer(g.group)
            if scores is None:  # tp estimators return None for groups they cannot score
                current[g.key] = g.channels
                continue
            if scores.numel() != g.channels:
                raise EdgepruneError(
                    f"importance criterion gave {scores.numel()} scores for the {g.channels} "
                    f"channels of {g.key}: it must return one score per channel of the group"
                )
            order = torch.argsort(scores.detach().float().cpu(), stable=True)
            plan.append((g, order[: g.channels - keep].tolist()))
    for g, idxs in plan:
        dg.get_pruning_group(g.root, g.handler, idxs).prune()
    state.current_channels = {key: current.get(key, 0) for key in state.initial_channels}
    state.ratio = max(state.ratio, ratio)
    if count in ("all", "macs"):
        state.macs, state.params = count_macs_params(model, example_inputs)
    elif count == "params":
        state.params = sum(p.numel() for p in model.parameters())


def new_state(model: nn.Module, example_inputs: torch.Tensor, scope: str) -> StructuredState:
    macs, params = count_macs_params(model, example_inputs)
    state = StructuredState(
        params, macs, params=params, macs=macs,
        scope_layers=layers_in_scope(model, scope, example_inputs),
        output_name=output_layer(model, example_inputs),
    )
    _, groups = _groups(model, example_inputs, state)
    if not groups:
        raise EdgepruneError(
            f"no prunable channels in scope {scope!r} of {type(model).__name__}: the output "
            "layer is never shrunk; choose a wider scope or an unstructured method"
        )
    state.initial_channels = {g.key: g.channels for g in groups}
    state.current_channels = dict(state.initial_channels)
    return state


def _trial(
    model: nn.Module, example_inputs: torch.Tensor, config: _Channel, state: StructuredState,
    ratio: float,
    overrides: dict[str, int] | None = None,
) -> float:
    """Achieved reduction (config.target_kind) at `ratio`, on a throw-away copy. Counts do not
    depend on which channels go, so the cheap L2 score is used whatever the criterion."""
    trial_model = copy.deepcopy(model)
    trial_state = state.copy()
    _apply_ratio(
        trial_model, example_inputs, config, trial_state, ratio,
        get_importance("l2", "channel"), overrides,
        count=config.target_kind,
    )
    return trial_state.achieved(config.target_kind)


def search_ratio(
    model: nn.Module,
    example_inputs: torch.Tensor,
    config: _Channel,
    state: StructuredState,
    target: float,
    log: Callable[[str], None] | None = None,
) -> tuple[float, dict[str, int], float]:
    """The channel counts whose achieved reduction is closest to `target`, found on deep copies.

    First a bisection on the uniform channel ratio; rounding to multiples of round_to makes the
    achieved figure a step function of the ratio (every 96-channel layer jumps at once), so the
    groups that differ between the two bracketing ratios are then moved to the higher ratio one
    at a time (a second bisection on how many) to land closer. Returns (ratio, per-group
    overrides, predicted reduction)."""
    lo, hi = state.ratio, 0.999
    red_lo = state.achieved(config.target_kind)
    if red_lo >= target:
        return lo, {}, red_lo
    red_hi = _trial(model, example_inputs, config, state, hi)
    if red_hi < target - config.tolerance:
        raise EdgepruneError(
            f"a {config.target_kind} reduction of {target:.1%} is out of reach: with scope "
            f"{config.scope!r}, min_channels={config.min_channels} and round_to={config.round_to} "
            f"the most this model can lose is {red_hi:.1%}"
        )
    for _ in range(24):
        if hi - lo < 1e-3:  # finer steps are the refinement pass's job
            break
        mid = (lo + hi) / 2
        red = _trial(model, example_inputs, config, state, mid)
        if abs(red - target) <= config.tolerance / 4:
            return mid, {}, red
        if red < target:
            lo, red_lo = mid, red
        else:
            hi, red_hi = mid, red
    best = (lo, {}, red_lo) if abs(red_lo - target) < abs(red_hi - target) else (hi, {}, red_hi)
    if abs(best[2] - target) > config.tolerance / 4:
        _, groups = _groups(model, example_inputs, state)
        differ = []
        for g in groups:
            initial = state.initial_channels.get(g.key, g.channels)
            k_lo, k_hi = (_keep(initial, g.channels, r, config) for r in (lo, hi))
            if k_hi < k_lo:
                differ.append((g.key, k_hi))
        a, b = 0, len(differ)  # red(prefix a) < target <= red(prefix b)
        while b - a > 1:
            j = (a + b) // 2
            red = _trial(model, example_inputs, config, state, lo, dict(differ[:j]))
            if abs(red - target) < abs(best[2] - target):
                best = (lo, dict(differ[:j]), red)
            if red < target:
                a = j
            else:
                b = j
    if abs(best[2] - target) > config.tolerance and log:
        log(
            f"channel rounding (round_to={config.round_to}) allows {best[2]:.2%} "
            f"{config.target_kind} reduction closest to the asked {target:.2%}"
        )
    return best


def prune_channels(
    model: nn.Module,
    config: _Channel,
    example_inputs: torch.Tensor,
    *,
    state: StructuredState | None = None,
    target: float | None = None,
    batches: Iterable | None = None,
    log: Callable[[str], None] | None = None,
) -> StructuredState:
    """Physically remove channels from `model` (in place) until `target` (default config.target)
    of config.target_kind is removed relative to the dense model recorded in `state`."""
    if state is None:
        state = new_state(model, example_inputs, config.scope)
    target = config.amount if target is None else target
    if config.target_kind == "latency":
        return _prune_for_latency(model, config, example_inputs, state, target, batches, log)
    overrides: dict[str, int] = {}
    if config.target_kind == "channels":
        ratio = max(state.ratio, target)
    else:
        ratio, overrides, _ = search_ratio(model, example_inputs, config, state, target, log)

    criterion = config.importance()
    try:
        # the criterion's own preparation: Taylor's gradient pass, the random draw's seed
        criterion.prepare(
            model, batches=batches,
            layers={n: model.get_submodule(n) for n in state.scope_layers}, ratio=ratio,
        )
        _apply_ratio(model, example_inputs, config, state, ratio, criterion, overrides)
    finally:
        for p in model.parameters():
            p.grad = None
    return state


def ensure_latency_model(model: nn.Module, config: _Channel, example_inputs: torch.Tensor,
                         state: StructuredState, log: Callable[[str], None] | None = None):
    """The state's latency model, built (the dense network measured, the table filled) the first
    time: the model must still be the dense one then."""
    if state.latency is None:
        from edgeprune.pruning.latency import PROBE_RATIO, build_latency_model

        dg, groups = _groups(model, example_inputs, state)
        # The probe: every group cut uniformly (which channels go does not change the time, so
        # the cheap L2 score), timed beside the dense network to fit the table to the network.
        probe, probe_state = copy.deepcopy(model), state.copy()
        _apply_ratio(probe, example_inputs, config, probe_state, PROBE_RATIO,
                     get_importance("l2", "channel"), count="channels")
        state.latency = build_latency_model(
            model, example_inputs, dg, groups, probe, probe_state.current_channels,
            runtime=config.latency_runtime, threads=config.latency_threads,
            architecture=type(model).__name__, log=log)
    return state.latency


def _prune_for_latency(model, config: _Channel, example_inputs, state: StructuredState,
                       target: float, batches, log) -> StructuredState:
    """Cut channels until the predicted batch-1 latency is (1 - target) of the dense network's,
    least importance per millisecond first (pruning.latency.plan_counts), then time the result
    beside the dense network. When the measurement misses the target by more than the timing
    noise (the greedy picks exactly the cuts the table thinks cheapest, so it inherits the table's
    optimism), it aims lower by the miss and cuts again from there: NetAdapt's measure-and-adjust,
    at most LATENCY_CORRECTIONS times."""
    from edgeprune.pruning.latency import LATENCY_CORRECTIONS, LATENCY_TOLERANCE, measure_against_dense

    lat = ensure_latency_model(model, config, example_inputs, state, log)
    aim_ms = lat.dense_ms * (1.0 - target)
    lat.corrections = 0
    for attempt in range(1 + LATENCY_CORRECTIONS):
        try:
            predicted = _latency_step(model, config, example_inputs, state, target, batches, lat, aim_ms)
        except EdgepruneError as exc:
            if attempt == 0:
                raise
            if log:  # a correction that cannot go further keeps the cut made so far
                log(f"latency correction stopped: {exc}")
            break
        measure_against_dense(lat, model)
        ratio = lat.measured_ms / lat.measured_dense_ms
        if log:
            log(f"latency cut to {1 - target:.0%} of dense on {lat.runtime}: predicted "
                f"{predicted:.3f} ms, measured {lat.measured_ms:.3f} ms (dense "
                f"{lat.measured_dense_ms:.3f} ms in the same round-robin: {ratio:.0%}; table "
                f"{lat.table.measured} new / {len(lat.table.entries)} entries)")
        if ratio <= (1.0 - target) * (1.0 + LATENCY_TOLERANCE) or attempt == LATENCY_CORRECTIONS:
            break
        aim_ms *= (1.0 - target) / ratio
        lat.corrections += 1
        if log:
            log(f"measured {ratio:.0%} of dense where {1 - target:.0%} was asked: aiming the "
                f"prediction at {aim_ms:.3f} ms and cutting further")
    return state


def _latency_step(model, config: _Channel, example_inputs, state: StructuredState, target: float,
                  batches, lat, aim_ms: float) -> float:
    """One plan-and-cut of _prune_for_latency: the model's current groups scored, the knapsack
    run down to a predicted `aim_ms`, the counts applied. Returns the prediction."""
    from edgeprune.pruning.latency import plan_counts

    criterion = config.importance()
    try:
        criterion.prepare(
            model, batches=batches,
            layers={n: model.get_submodule(n) for n in state.scope_layers}, ratio=target,
        )
        _, groups = _groups(model, example_inputs, state)
        r = config.round_to
        floor = -(-config.min_channels // r) * r
        scores, floors, initial = {}, {}, {}
        for g in groups:
            initial[g.key] = state.initial_channels.setdefault(g.key, g.channels)
            share = -(-int(config.latency_min_keep * initial[g.key]) // r) * r  # rounded up
            floors[g.key] = min(max(floor, share), g.channels)
            s = criterion.across_groups(g.group) if g.channels > floors[g.key] else None
            if s is not None and s.numel() != g.channels:
                raise EdgepruneError(
                    f"importance criterion gave {s.numel()} scores for the {g.channels} "
                    f"channels of {g.key}: it must return one score per channel of the group")
            scores[g.key] = s
        counts, predicted = plan_counts(lat, groups, scores, floors, r, initial, aim_ms)
        _apply_ratio(model, example_inputs, config, state, state.ratio, criterion, counts)
    finally:
        for p in model.parameters():
            p.grad = None
    return predicted


def channel_table(state: StructuredState) -> list[dict[str, Any]]:
    return [
        {
            "layers": key,
            "channels_before": state.initial_channels[key],
            "channels_after": state.current_channels.get(key, 0),
            "removed": 1.0 - state.current_channels.get(key, 0) / state.initial_channels[key],
        }
        for key in state.initial_channels
    ]
