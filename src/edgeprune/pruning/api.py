"""The functional API: `prune(model, config, example_inputs)` and the `Pruner` that holds a
pruning run's state (masks or channel counts, dense figures) across iterative steps."""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable

import torch
from torch import nn

from edgeprune.errors import EdgepruneError
from edgeprune.metrics.macs import count_macs_params
from edgeprune.pruning.config import PruningConfig, _Channel, _Unstructured
from edgeprune.pruning.report import empty_layers, layer_snapshot, layer_table
from edgeprune.pruning.scope import layers_in_scope
from edgeprune.pruning.structured import (
    StructuredState,
    channel_table,
    new_state,
    prune_channels,
)
from edgeprune.pruning.unstructured import MaskState, prune_unstructured


@dataclass
class StepRecord:
    step: int
    asked: float  # cumulative target after this step
    achieved: float  # same kind as asked
    params: int
    nonzero_params: int
    macs: int
    params_reduction: float  # 1 - nonzero params / dense params
    macs_reduction: float
    accuracy_after_prune: float | None = None  # val, before fine-tuning
    val_accuracy: float | None = None  # val, after fine-tuning
    accepted: bool = True
    seconds: float = 0.0
    predicted_latency_ms: float | None = None  # target_kind="latency": batch 1, this device
    measured_latency_ms: float | None = None


@dataclass
class PruneResult:
    """What a pruning run did. `model` is the pruned model to use (with --max-drop it may be a
    snapshot taken before the step that failed, not the object passed in)."""

    model: nn.Module
    method: str
    config: dict[str, Any]
    schedule: dict[str, Any]
    asked: float
    achieved: float
    achieved_kind: str  # "weights" (unstructured sparsity) | "params" | "channels" | "macs"
    dense_params: int
    params: int
    nonzero_params: int
    dense_macs: int
    macs: int
    weight_sparsity: float  # exact zeros among the counted weights
    layers: list[dict[str, Any]]
    channels: list[dict[str, Any]] = field(default_factory=list)
    capped_layers: list[str] = field(default_factory=list)
    steps: list[StepRecord] = field(default_factory=list)
    steps_planned: int = 1
    stopped_reason: str | None = None
    baseline_accuracy: float | None = None
    masks: MaskState | None = field(default=None, repr=False)
    latency: dict[str, Any] | None = None  # target_kind="latency": predicted and measured, ms

    @property
    def params_reduction(self) -> float:
        return 1.0 - self.nonzero_params / self.dense_params

    @property
    def macs_reduction(self) -> float:
        return 1.0 - self.macs / self.dense_macs

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record for the checkpoint's `meta.pruning`."""
        return {
            "method": self.method,
            "config": self.config,
            "schedule": self.schedule,
            "asked": self.asked,
            "achieved": self.achieved,
            "achieved_kind": self.achieved_kind,
            "dense_params": self.dense_params,
            "params": self.params,
            "nonzero_params": self.nonzero_params,
            "params_reduction": self.params_reduction,
            "dense_macs": self.dense_macs,
            "macs": self.macs,
            "macs_reduction": self.macs_reduction,
            "weight_sparsity": self.weight_sparsity,
            "capped_layers": self.capped_layers,
            "steps_planned": self.steps_planned,
            "steps": [asdict(s) for s in self.steps],
            "stopped_reason": self.stopped_reason,
            "baseline_accuracy": self.baseline_accuracy,
            "layers": self.layers,
            "channels": self.channels,
            "latency": self.latency,
        }


def _example_on(model: nn.Module, example_inputs: torch.Tensor) -> torch.Tensor:
    try:
        device = next(model.parameters()).device
    except StopIteration:
        raise EdgepruneError(f"{type(model).__name__} has no parameters to prune") from None
    return example_inputs.to(device)


class Pruner:
    """One pruning run on one model: `step(target)` prunes to a cumulative target, `snapshot()` /
    `restore()` support the accuracy guard, `after_step` keeps masks applied while fine-tuning."""

    def __init__(
        self,
        model: nn.Module,
        config: PruningConfig,
        example_inputs: torch.Tensor,
        *,
        batches: Iterable | None = None,
        log: Callable[[str], None] | None = None,
    ):
        if not isinstance(config, PruningConfig):
            raise EdgepruneError(f"not a pruning config: {config!r}")
        self.model = model
        self.config = config
        self.example_inputs = _example_on(model, example_inputs)
        self.batches = batches
        self.log = log
        self.counted = layers_in_scope(model, config.scope, self.example_inputs)
        self.before = layer_snapshot(model)
        self.masks: MaskState | None = None
        self.sstate: StructuredState | None = None
        if config.structured:
            self.sstate = new_state(model, self.example_inputs, config.scope)
            self.dense_macs, self.dense_params = self.sstate.dense_macs, self.sstate.dense_params
        else:
            # Weights that are already exactly zero (a checkpoint pruned earlier) count as pruned
            # from the start, so a later target is not counted on top of them twice.
            self.masks = MaskState(
                {n: model.get_submodule(n).weight.detach() == 0 for n in self.counted}
            )
            if self.masks.num_pruned and log:
                log(f"{self.masks.sparsity:.2%} of the counted weights are already zero; they "
                    "count towards the target")
            self.dense_macs, self.dense_params = count_macs_params(model, self.example_inputs)

    # ------------------------------------------------------------------ stepping
    @property
    def amount(self) -> float:
        """The config's target as a fraction; a latency budget (ms) becomes the fraction of the
        dense network's measured latency to remove (measuring it now, on the dense model)."""
        budget = getattr(self.config, "latency_budget_ms", None)
        if budget is None:
            return self.config.amount
        from edgeprune.pruning.structured import ensure_latency_model

        assert self.sstate is not None and isinstance(self.config, _Channel)
        lat = ensure_latency_model(self.model, self.config, self.example_inputs, self.sstate, self.log)
        if budget >= lat.dense_ms:
            raise EdgepruneError(
                f"the dense model already runs in {lat.dense_ms:.3f} ms on {lat.runtime} with "
                f"{lat.threads} thread(s), within the {budget:g} ms budget: nothing to prune")
        return 1.0 - budget / lat.dense_ms

    def latency(self) -> dict[str, Any] | None:
        lat = self.sstate.latency if self.sstate is not None else None
        return lat.to_dict() if lat is not None else None

    def check_reachable(self, target: float) -> None:
        """Fail before any work (and any fine-tuning) when the final target cannot be reached."""
        if isinstance(self.config, _Unstructured):
            if self.config.per_layer:
                return  # the config already checks sparsity <= max_layer_sparsity
            sizes = [self.model.get_submodule(n).weight.numel() for n in self.counted]
            most = sum(int(self.config.max_layer_sparsity * n) for n in sizes) / sum(sizes)
            if round(target * sum(sizes)) > most * sum(sizes):
                raise EdgepruneError(
                    f"sparsity {target:.4f} cannot be reached with no layer above "
                    f"max_layer_sparsity={self.config.max_layer_sparsity} (at most {most:.4f} of "
                    "the counted weights can be pruned)"
                )
        elif isinstance(self.config, _Channel) and self.config.target_kind not in ("channels", "latency"):
            from edgeprune.pruning.structured import _trial

            cfg = self.config
            assert self.sstate is not None
            most = _trial(self.model, self.example_inputs, cfg, self.sstate, 0.999)
            if most < target - cfg.tolerance:
                raise EdgepruneError(
                    f"a {cfg.target_kind} reduction of {target:.1%} is out of reach: with scope "
                    f"{cfg.scope!r}, min_channels={cfg.min_channels} and round_to={cfg.round_to} "
                    f"the most this model can lose is {most:.1%}"
                )

    def step(self, target: float) -> None:
        if isinstance(self.config, _Unstructured):
            self.masks = prune_unstructured(
                self.model, self.config.with_amount(target), self.example_inputs,
                masks=self.masks, log=self.log,
            )
        else:
            assert isinstance(self.config, _Channel)
            self.sstate = prune_channels(
                self.model, self.config, self.example_inputs, state=self.sstate, target=target,
                batches=self.batches, log=self.log,
            )
        empty = empty_layers(layer_table(self.model, self.before))
        if empty:
            raise EdgepruneError(f"pruning emptied layer(s) {', '.join(empty)}; refusing")

    @property
    def achieved_kind(self) -> str:
        return self.config.target_kind if self.config.structured else "weights"  # type: ignore[attr-defined]

    def achieved(self) -> float:
        if self.masks is not None:
            return self.masks.sparsity
        assert self.sstate is not None
        return self.sstate.achieved(self.config.target_kind)  # type: ignore[attr-defined]

    def after_step(self) -> None:
        """Re-zero pruned weights (no-op for structured pruning): give to fit(after_step=...)."""
        if self.masks is not None and self.masks.pruned:
            self.masks.apply(self.model)

    def fine_tuning(self):
        """Context manager for fine-tuning: masked weights are re-zeroed before every forward
        and once at the end, whatever the training loop does."""
        import contextlib

        if self.masks is not None and self.masks.pruned:
            return self.masks.enforce(self.model)
        return contextlib.nullcontext()

    # ------------------------------------------------------------------ guard support
    def snapshot(self) -> tuple:
        return (
            copy.deepcopy(self.model),
            self.masks.copy() if self.masks is not None else None,
            self.sstate.copy() if self.sstate is not None else None,
        )

    def restore(self, snap: tuple) -> None:
        self.model, masks, sstate = snap
        self.masks, self.sstate = masks, sstate

    # ------------------------------------------------------------------ figures
    def figures(self) -> dict[str, Any]:
        """Counted now: parameters (nonzero = minus the masked weights), MACs, weight sparsity."""
        if self.masks is not None:
            self.masks.apply(self.model)
        macs, params = count_macs_params(self.model, self.example_inputs)
        counted = [self.model.get_submodule(n).weight for n in self.counted]
        zeros = sum(w.numel() - int(torch.count_nonzero(w)) for w in counted)
        total = sum(w.numel() for w in counted)
        nonzero_params = params - (self.masks.num_pruned if self.masks is not None else 0)
        return {
            "params": params,
            "nonzero_params": nonzero_params,
            "macs": macs,
            "params_reduction": 1.0 - nonzero_params / self.dense_params,
            "macs_reduction": 1.0 - macs / self.dense_macs,
            "weight_sparsity": zeros / total if total else 0.0,
        }

    def result(self, *, asked: float, schedule: dict, steps=None, steps_planned=1,
               stopped_reason=None, baseline_accuracy=None) -> PruneResult:
        fig = self.figures()
        return PruneResult(
            model=self.model,
            method=self.config.method,
            config=self.config.to_dict(),
            schedule=schedule,
            asked=asked,
            achieved=self.achieved(),
            achieved_kind=self.achieved_kind,
            dense_params=self.dense_params,
            params=fig["params"],
            nonzero_params=fig["nonzero_params"],
            dense_macs=self.dense_macs,
            macs=fig["macs"],
            weight_sparsity=fig["weight_sparsity"],
            layers=layer_table(
                self.model, self.before, counted=set(self.counted),
                capped=set(self.masks.capped) if self.masks else None,
            ),
            channels=channel_table(self.sstate) if self.sstate is not None else [],
            capped_layers=list(self.masks.capped) if self.masks else [],
            steps=list(steps or []),
            steps_planned=steps_planned,
            stopped_reason=stopped_reason,
            baseline_accuracy=baseline_accuracy,
            masks=self.masks,
            latency=self.latency(),
        )

    def record(self, step: int, asked: float, seconds: float = 0.0) -> StepRecord:
        fig = self.figures()
        lat = self.latency() or {}
        return StepRecord(
            predicted_latency_ms=lat.get("predicted_ms"), measured_latency_ms=lat.get("measured_ms"),
            step=step, asked=asked, achieved=self.achieved(), params=fig["params"],
            nonzero_params=fig["nonzero_params"], macs=fig["macs"],
            params_reduction=fig["params_reduction"], macs_reduction=fig["macs_reduction"],
            seconds=seconds,
        )


def prune(
    model: nn.Module,
    config: PruningConfig,
    example_inputs: torch.Tensor,
    *,
    batches: Iterable | None = None,
    log: Callable[[str], None] | None = None,
) -> PruneResult:
    """Prune `model` in place to `config`'s target in one step (no fine-tuning) and return the
    record. Unstructured: weights zeroed (masks in `result.masks`, already applied). Structured:
    channels physically removed. `batches` (x, y) feed Taylor importance."""
    started = time.perf_counter()
    pruner = Pruner(model, config, example_inputs, batches=batches, log=log)
    amount = pruner.amount
    pruner.check_reachable(amount)
    pruner.step(amount)
    rec = pruner.record(1, amount, time.perf_counter() - started)
    return pruner.result(
        asked=amount, schedule={"kind": "oneshot", "steps": 1}, steps=[rec]
    )
