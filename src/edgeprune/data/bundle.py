"""The data containers every other module consumes: decoded uint8 splits and their bundle."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from edgeprune.data.options import DataOptions, SplitRecord

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # what torchvision's ImageNet weights were trained with
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class Split:
    images: torch.Tensor  # uint8, (N, 3, H, W), already resized to image_size, decoded once
    labels: torch.Tensor  # int64, (N,)
    paths: list[str] | None  # source file per image (None for digits / CIFAR pickles)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, indices) -> Split:
        index = torch.as_tensor(indices, dtype=torch.long)
        paths = [self.paths[i] for i in index.tolist()] if self.paths is not None else None
        return Split(self.images[index], self.labels[index], paths)


@dataclass
class DataBundle:
    name: str  # human-readable: what was detected, e.g. "ImageFolder ../shared/datasets/cifar10-jpeg (train/test)"
    kind: str  # "digits" | "cifar10" | "imagefolder" | "single-tree"
    class_names: list[str]
    train: Split  # training data minus the validation hold-out
    val: Split  # stratified hold-out from the training data (empty when val_fraction is 0)
    test: Split
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    notes: list[str] = field(default_factory=list)  # skipped files, train/test leaks, fallbacks
    # Mirror images in training augmentation: right for photos and surface textures, wrong for
    # handwritten digits (a mirrored 2 is not a 2).
    hflip: bool = True
    options: DataOptions | None = None  # how it was loaded
    split: SplitRecord | None = None  # how it was split, and the data's fingerprint
