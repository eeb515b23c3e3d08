"""Model zoo (torchvision architectures with a new head) and the pickle-free checkpoint format."""

from edgeprune.models.checkpoint import (
    CheckpointMeta,
    ensure_same_classes,
    load_checkpoint,
    save_checkpoint,
)
from edgeprune.models.model import Model
from edgeprune.models.zoo import ARCHITECTURES, classifier_head, create_model

__all__ = [
    "ARCHITECTURES",
    "CheckpointMeta",
    "Model",
    "classifier_head",
    "create_model",
    "ensure_same_classes",
    "load_checkpoint",
    "save_checkpoint",
]
