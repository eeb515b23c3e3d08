"""Accuracy, balanced accuracy, per-class recall and the confusion matrix on one split."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import torch
from torch import nn

from edgeprune.errors import EdgepruneError


@dataclass
class EvalResult:
    accuracy: float
    balanced_accuracy: float
    per_class_recall: dict[str, float | None]  # None for a class with no images in the split
    confusion_matrix: list[list[int]]  # rows: true class, columns: predicted class
    n: int

    def to_dict(self) -> dict:
        return asdict(self)


def evaluate(
    model: nn.Module,
    split,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    class_names: Sequence[str],
    device: torch.device | str = "cpu",
    batch_size: int = 256,
) -> EvalResult:
    from edgeprune.data import BatchLoader

    if len(split.labels) == 0:
        raise EdgepruneError("cannot evaluate on an empty split")
    num_classes = len(class_names)
    model = model.to(device).eval()
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.long)
    loader = BatchLoader(split, batch_size, mean=mean, std=std, train=False, device=device)
    with torch.inference_mode():
        for x, y in loader:
            logits = model(x)
            if logits.shape[1] != num_classes:
                raise EdgepruneError(
                    f"model has {logits.shape[1]} outputs but the data has {num_classes} classes"
                )
            if not bool(torch.isfinite(logits).all()):  # argmax of NaN is a made-up class
                raise EdgepruneError(
                    "the model outputs NaN or infinite logits: its weights are broken (a diverged "
                    "training run?); no accuracy can be measured"
                )
            pred = logits.argmax(1)
            confusion += torch.bincount(
                (y * num_classes + pred).cpu(), minlength=num_classes * num_classes
            ).view(num_classes, num_classes)
    support = confusion.sum(1)
    correct = confusion.diag()
    recalls = [
        (correct[i] / support[i]).item() if support[i] > 0 else None for i in range(num_classes)
    ]
    present = [r for r in recalls if r is not None]
    return EvalResult(
        accuracy=(correct.sum() / support.sum()).item(),
        balanced_accuracy=sum(present) / len(present),
        per_class_recall=dict(zip(class_names, recalls)),
        confusion_matrix=confusion.tolist(),
        n=int(support.sum()),
    )
