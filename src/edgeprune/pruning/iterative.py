"""`prune_iteratively`: prune in steps along a schedule, recalibrating batch norms and
fine-tuning after each, optionally guarded by a maximum validation-accuracy drop."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterable

import torch
from torch import nn

from edgeprune.errors import EdgepruneError
from edgeprune.pruning.api import PruneResult, Pruner
from edgeprune.pruning.config import PruningConfig
from edgeprune.pruning.schedule import Schedule


@dataclass
class StepInfo:
    """Passed to `fine_tune(model, step)`: which step this is and the hook that keeps pruned
    weights at zero (give it to `fit(after_step=...)`; None for structured pruning)."""

    index: int  # 1-based
    of: int
    target: float
    after_step: Callable[[], None] | None


def prune_iteratively(
    model: nn.Module,
    config: PruningConfig,
    schedule: Schedule | str = "oneshot",
    *,
    example_inputs: torch.Tensor,
    steps: int | None = None,
    fine_tune: Callable[[nn.Module, StepInfo], None] | None = None,
    evaluate: Callable[[nn.Module], float] | None = None,
    max_drop: float | None = None,
    baseline_accuracy: float | None = None,
    recalibrate: Callable[[nn.Module], None] | None = None,
    batches: Iterable | None = None,
    evaluate_before_finetune: bool = True,
    log: Callable[[str], None] | None = None,
) -> PruneResult:
    """Prune `model` towards `config`'s target along `schedule` (cumulative targets, so the last
    step lands on the target exactly). After each pruning step: `recalibrate(model)` (batch-norm
    statistics), `fine_tune(model, StepInfo)`, `evaluate(model) -> accuracy in [0, 1]` on a
    validation split.

    max_drop (percentage points): stop at the first step whose accuracy after fine-tuning is
    more than max_drop points below `baseline_accuracy` (evaluated first if not given) and return
    the model as it was before that step. Use `result.model`, not the object passed in.
    """
    if isinstance(schedule, str):
        schedule = Schedule(schedule, steps if steps is not None else (1 if schedule == "oneshot" else 3))
    if max_drop is not None:
        if max_drop < 0:
            raise EdgepruneError(f"max_drop must be >= 0 percentage points, got {max_drop}")
        if evaluate is None:
            raise EdgepruneError("max_drop needs an evaluate callback (validation accuracy)")
    say = log or (lambda _m: None)
    pruner = Pruner(model, config, example_inputs, batches=batches, log=log)
    amount = pruner.amount  # a latency budget is measured against the dense model here
    targets = schedule.targets(amount)
    pruner.check_reachable(amount)
    if max_drop is not None and baseline_accuracy is None:
        baseline_accuracy = evaluate(pruner.model)
        say(f"baseline val accuracy {baseline_accuracy:.4f}")

    records = []
    stopped = None
    for k, target in enumerate(targets, start=1):
        started = time.perf_counter()
        snap = pruner.snapshot() if max_drop is not None else None
        pruner.step(target)
        if recalibrate is not None:
            recalibrate(pruner.model)
            pruner.after_step()
        rec = pruner.record(k, target)
        if evaluate is not None and evaluate_before_finetune and fine_tune is not None:
            rec.accuracy_after_prune = evaluate(pruner.model)
        if fine_tune is not None:
            info = StepInfo(k, len(targets), target, pruner.after_step if pruner.masks else None)
            with pruner.fine_tuning():
                fine_tune(pruner.model, info)
            pruner.after_step()
        if evaluate is not None:
            rec.val_accuracy = evaluate(pruner.model)
            if fine_tune is None:
                rec.accuracy_after_prune = rec.val_accuracy
        rec.seconds = time.perf_counter() - started
        records.append(rec)
        say(
            f"step {k}/{len(targets)}: asked {target:.4f} {pruner.achieved_kind}, achieved "
            f"{rec.achieved:.4f}; params {rec.nonzero_params:,} ({rec.params_reduction:.1%} fewer),"
            f" MACs {rec.macs:,} ({rec.macs_reduction:.1%} fewer)"
            + (f"; val acc {rec.val_accuracy:.4f}" if rec.val_accuracy is not None else "")
        )
        if max_drop is not None and rec.val_accuracy is not None:
            drop = (baseline_accuracy - rec.val_accuracy) * 100.0
            if drop > max_drop:
                rec.accepted = False
                pruner.restore(snap)
                last_good = k - 1
                stopped = (
                    f"stopped at step {k}/{len(targets)} (asked {target:.4f}): val accuracy "
                    f"{rec.val_accuracy:.4f} is {drop:.2f} points below the baseline "
                    f"{baseline_accuracy:.4f}, more than --max-drop {max_drop:g}; returned the "
                    + (f"model after step {last_good}" if last_good else "unpruned model")
                )
                say(stopped)
                break
    good = [r for r in records if r.accepted]
    asked = amount
    result = pruner.result(
        asked=asked, schedule=schedule.to_dict(), steps=records, steps_planned=len(targets),
        stopped_reason=stopped, baseline_accuracy=baseline_accuracy,
    )
    if stopped is None and good and result.achieved + 1e-9 < min(asked, good[-1].asked) - 0.005:
        say(f"note: achieved {result.achieved:.4f} is below the asked {asked:.4f}")
    return result
