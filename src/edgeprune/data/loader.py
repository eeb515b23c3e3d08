"""Batches straight from the decoded uint8 cache: gather, augment on tensors, normalise, move."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from edgeprune.data.augment import augment_batch, check_augment
from edgeprune.data.bundle import Split
from edgeprune.errors import EdgepruneError

CROP_PADDING = 4
BALANCES = ("none", "loss", "sampler")


def check_balance(name: str) -> str:
    if name not in BALANCES:
        raise EdgepruneError(f"unknown class balance {name!r}: choose one of {', '.join(BALANCES)} "
                             "(loss: class-weighted cross-entropy; sampler: class-balanced sampling)")
    return name


def class_balanced_weights(labels: torch.Tensor) -> torch.Tensor:
    """Per-image weight 1 / (count of its class): each class then has the same total weight."""
    counts = torch.bincount(labels)
    return 1.0 / counts[labels].double()


def class_loss_weights(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Per-class cross-entropy weights n / (k * count) over the k classes present, so the weight
    averages 1 over the images (a class absent from the split gets weight 1): the `loss` balance."""
    counts = torch.bincount(labels, minlength=num_classes).float()
    present = int((counts > 0).sum())
    weights = len(labels) / (present * counts.clamp(min=1))
    return torch.where(counts > 0, weights, torch.ones_like(weights))


def random_crop_flip(
    images: torch.Tensor, generator: torch.Generator, padding: int = CROP_PADDING, flip: bool = True
) -> torch.Tensor:
    """Random crop after zero padding plus random horizontal flip, for a whole uint8 batch at once.

    Hand-written because torchvision's v2 transforms draw one crop per call (per image when
    applied in a loop); here each image gets its own offset and flip through one gather."""
    batch, channels, height, width = images.shape
    padded = F.pad(images, (padding, padding, padding, padding))
    offset_y = torch.randint(0, 2 * padding + 1, (batch, 1), generator=generator)
    offset_x = torch.randint(0, 2 * padding + 1, (batch, 1), generator=generator)
    mirrored = torch.rand(batch, 1, generator=generator) < 0.5
    columns = torch.arange(width)
    rows = offset_y + torch.arange(height)  # (B, H)
    cols = offset_x + (torch.where(mirrored, columns.flip(0), columns) if flip else columns)  # (B, W)
    device = images.device
    return padded[
        torch.arange(batch, device=device)[:, None, None, None],
        torch.arange(channels, device=device)[None, :, None, None],
        rows.to(device)[:, None, :, None],
        cols.to(device)[:, None, None, :],
    ]


class BatchLoader:
    """Iterable of (x float32 normalised (B, 3, H, W), y int64 (B,)), both on `device`.

    train=True reshuffles at every `__iter__` and augments (random crop with 4 px zero padding,
    horizontal flip unless flip=False, then the photometric preset `augment`, see
    `edgeprune.data.augment`); the sequence of epochs is fixed by `seed`. train=False keeps split
    order.

    balance="sampler" (train only) draws each epoch's images with replacement, each with weight
    1 / (its class's count), so every class is seen equally often: a rare defect class (fray has
    32 of 1,344 magnetic tiles) is not drowned by the OK parts. The epoch keeps its length."""

    def __init__(
        self,
        split: Split,
        batch_size: int,
        *,
        mean: Sequence[float],
        std: Sequence[float],
        train: bool = False,
        device: torch.device | str = "cpu",
        seed: int = 0,
        drop_last: bool = False,
        flip: bool = True,
        augment: str = "none",
        balance: str = "none",
    ):
        if batch_size < 1:
            raise EdgepruneError(f"batch size must be >= 1, got {batch_size}")
        self.split = split
        self.batch_size = batch_size
        self.train = train
        self.device = torch.device(device)
        self.seed = seed
        self.drop_last = drop_last
        self.flip = flip
        self.augment = check_augment(augment)
        self.balance = check_balance(balance)
        self.epoch = 0
        # (x / 255 - mean) / std  ==  x * scale + shift, two in-place ops per batch.
        mean_t = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        std_t = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
        self._scale = (1.0 / (255.0 * std_t)).to(self.device)
        self._shift = (-mean_t / std_t).to(self.device)

    def __len__(self) -> int:
        n = len(self.split.labels)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.split.labels)
        seed = int(np.random.SeedSequence([self.seed, self.epoch]).generate_state(1)[0])
        generator = torch.Generator().manual_seed(seed)
        self.epoch += 1
        if not self.train:
            order = torch.arange(n)
        elif self.balance == "sampler":
            order = torch.multinomial(class_balanced_weights(self.split.labels), n, replacement=True,
                                      generator=generator)
        else:
            order = torch.randperm(n, generator=generator)
        non_blocking = self.device.type == "cuda"
        for batch in range(len(self)):
            index = order[batch * self.batch_size : (batch + 1) * self.batch_size]
            # Move uint8 (4x fewer bytes than float) and convert on the device.
            images = self.split.images[index].to(self.device, non_blocking=non_blocking)
            if self.train:
                images = random_crop_flip(images, generator, flip=self.flip)
                images = augment_batch(images, self.augment, generator)
            x = images.float().mul_(self._scale).add_(self._shift)
            y = self.split.labels[index].to(self.device, non_blocking=non_blocking)
            yield x, y
