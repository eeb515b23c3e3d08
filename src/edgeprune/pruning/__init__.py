"""Pruning engine: unstructured (masked weights) and structured (physically removed channels)
pruning over dataclass configs, one-shot or along a schedule, with batch-norm recalibration,
fine-tuning hooks and an accuracy guard.

    from edgeprune.pruning import prune, prune_iteratively, L1Unstructured, L2Channel, Schedule
    result = prune(model, L1Unstructured(sparsity=0.9), example_inputs)
    result = prune_iteratively(model, L2Channel(target=0.5, target_kind="params"),
                               Schedule("geometric", 3), example_inputs=x,
                               fine_tune=..., evaluate=..., max_drop=3.0)
"""

from edgeprune.pruning.api import PruneResult, Pruner, StepRecord, prune
from edgeprune.pruning.batchnorm import recalibrate_batchnorm
from edgeprune.pruning.config import (
    METHODS,
    SCOPES,
    TARGET_KINDS,
    L1Channel,
    L1Unstructured,
    L2Channel,
    PruningConfig,
    RandomChannel,
    RandomUnstructured,
    TaylorChannel,
    make_config,
)
from edgeprune.pruning.iterative import StepInfo, prune_iteratively
from edgeprune.pruning.report import format_layer_table, layer_table
from edgeprune.pruning.schedule import SCHEDULES, Schedule, cumulative_targets, step_fraction
from edgeprune.pruning.unstructured import MaskState

__all__ = [
    "L1Channel",
    "L1Unstructured",
    "L2Channel",
    "METHODS",
    "MaskState",
    "PruneResult",
    "Pruner",
    "PruningConfig",
    "RandomChannel",
    "RandomUnstructured",
    "SCHEDULES",
    "SCOPES",
    "Schedule",
    "StepInfo",
    "StepRecord",
    "TARGET_KINDS",
    "TaylorChannel",
    "cumulative_targets",
    "format_layer_table",
    "layer_table",
    "make_config",
    "prune",
    "prune_iteratively",
    "recalibrate_batchnorm",
    "step_fraction",
]
