"""Accuracy on a data set's test split."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from torch import nn

if TYPE_CHECKING:
    from edgeprune.data import DataBundle


def accuracy_on_test_split(
    model: nn.Module,
    data: DataBundle,
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> dict[str, object]:
    """Accuracy (a fraction) and balanced accuracy on `data.test`, on the CPU.

    Pass the `mean`/`std` the model was trained with (a checkpoint's); they default to the data's.
    """
    # Imported here: the data and training stack (scikit-learn, ...) takes seconds to import
    # and only accuracy needs it.
    from edgeprune.metrics.evaluate import evaluate

    result = evaluate(
        model,
        data.test,
        mean=data.mean if mean is None else mean,
        std=data.std if std is None else std,
        class_names=data.class_names,
        device="cpu",
    )
    return {
        "accuracy": result.accuracy,
        "balanced_accuracy": result.balanced_accuracy,
        "accuracy_images": result.n,
        "accuracy_data": f"{data.name} (test split)",
    }
