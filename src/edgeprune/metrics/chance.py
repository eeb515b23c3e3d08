"""A warning for accuracies at chance level: a model that learned nothing (or predicts a single
class) must not pass silently as a "result"."""

from __future__ import annotations

CHANCE_MARGIN_POINTS = 2.0


def chance_level_warning(
    accuracy: float | None, num_classes: int, *, margin_points: float = CHANCE_MARGIN_POINTS
) -> str | None:
    """A message when `accuracy` (in [0, 1]) is within `margin_points` percentage points of
    1/num_classes (or below it), else None. Uniform guessing scores 1/num_classes on balanced
    data, so does always answering one class; on imbalanced data the majority class can score
    more, so None here is no proof that the model learned something."""
    if accuracy is None or num_classes < 2:
        return None
    chance = 1.0 / num_classes
    if accuracy * 100.0 > chance * 100.0 + margin_points:
        return None
    return (
        f"accuracy {accuracy:.2%} is at chance level ({chance:.2%} for {num_classes} classes): "
        "the model has not learned the task. Try more epochs (--epochs), a higher or lower "
        "learning rate (--lr), starting from pretrained weights (--weights imagenet), and check "
        "the data (edgeprune data check: labels, class balance, images)."
    )
