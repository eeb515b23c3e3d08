"""Training, fine-tuning and evaluation loops (GPU when present, always testable on the CPU)."""

from edgeprune.train.baseline import train_baseline
from edgeprune.train.evaluate import EvalResult, evaluate
from edgeprune.train.loop import OPTIMIZERS, TrainRecipe, distillation_loss, fit

__all__ = [
    "EvalResult", "OPTIMIZERS", "TrainRecipe", "distillation_loss", "evaluate", "fit", "train_baseline",
]
