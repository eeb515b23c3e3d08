"""Training, fine-tuning and evaluation loops (GPU when present, always testable on the CPU)."""

from edgeprune.train.baseline import train_baseline
from edgeprune.train.evaluate import EvalResult, evaluate
from edgeprune.train.loop import OPTIMIZERS, TrainRecipe, fit

__all__ = ["EvalResult", "OPTIMIZERS", "TrainRecipe", "evaluate", "fit", "train_baseline"]
