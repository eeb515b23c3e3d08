"""The training / fine-tuning loop (GPU when present, always testable on the CPU).

Evaluation lives in `edgeprune.metrics` (it measures, it does not train); training a baseline end
to end (build, fit, evaluate, save) is a workflow: `edgeprune.workflows.train_baseline`."""

from edgeprune.train.loop import (
    OPTIMIZERS,
    TrainRecipe,
    auto_batch_size,
    distillation_loss,
    fit,
    kept_epoch,
)

__all__ = ["OPTIMIZERS", "TrainRecipe", "auto_batch_size", "distillation_loss", "fit", "kept_epoch"]
