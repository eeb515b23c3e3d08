"""Pruning engine: unstructured (masked weights) and structured (physically removed channels)
pruning over dataclass configs, one-shot or along a schedule, with batch-norm recalibration,
fine-tuning hooks and an accuracy guard.

    from edgeprune.pruning import prune, prune_iteratively, L1Unstructured, L2Channel, Schedule
    result = prune(model, L1Unstructured(sparsity=0.9), example_inputs)
    result = prune_iteratively(model, L2Channel(target=0.5, target_kind="params"),
                               Schedule("geometric", 3), example_inputs=x,
                               fine_tune=..., evaluate=..., max_drop=3.0)

Importance criteria live in a registry (`IMPORTANCES`, `register_importance`, `get_importance`);
`ChannelPruning` / `UnstructuredPruning` prune by any registered criterion, your own included.
"""

from edgeprune.pruning.api import PruneResult, Pruner, StepRecord, prune
from edgeprune.pruning.batchnorm import recalibrate_batchnorm
from edgeprune.pruning.config import (
    METHODS,
    SCOPES,
    TARGET_KINDS,
    ChannelPruning,
    L1Channel,
    L1Unstructured,
    L2Channel,
    PruningConfig,
    RandomChannel,
    RandomUnstructured,
    TaylorChannel,
    UnstructuredPruning,
    make_config,
)
from edgeprune.pruning.importance import (
    IMPORTANCES,
    ChannelImportance,
    WeightImportance,
    get_importance,
    register_importance,
)
from edgeprune.pruning.iterative import StepInfo, prune_iteratively
from edgeprune.pruning.report import format_layer_table, layer_table
from edgeprune.pruning.schedule import SCHEDULES, Schedule, cumulative_targets, step_fraction
from edgeprune.pruning.unstructured import MaskState

__all__ = [
    "ChannelImportance",
    "ChannelPruning",
    "IMPORTANCES",
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
    "UnstructuredPruning",
    "WeightImportance",
    "cumulative_targets",
    "format_layer_table",
    "get_importance",
    "layer_table",
    "make_config",
    "prune",
    "prune_iteratively",
    "recalibrate_batchnorm",
    "register_importance",
    "step_fraction",
]
