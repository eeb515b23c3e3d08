"""Class balance for rare defect classes: balanced sampling and class-weighted loss."""

from __future__ import annotations

import pytest
import torch

from edgeprune.data import BatchLoader, class_loss_weights
from edgeprune.data.bundle import Split
from edgeprune.errors import EdgepruneError
from edgeprune.train import TrainRecipe


def _split(counts):
    labels = torch.cat([torch.full((n,), c, dtype=torch.int64) for c, n in enumerate(counts)])
    images = torch.zeros((len(labels), 3, 8, 8), dtype=torch.uint8)
    return Split(images=images, labels=labels, paths=[f"{i}.png" for i in range(len(labels))])


def _class_share(loader, classes):
    seen = torch.cat([y for _, y in loader])
    return torch.bincount(seen, minlength=classes).float() / len(seen)


def test_the_sampler_draws_every_class_about_equally_often():
    split = _split([400, 40, 10])  # 89 %, 9 %, 2 %
    natural = _class_share(BatchLoader(split, 50, mean=(0,) * 3, std=(1,) * 3, train=True, seed=0), 3)
    assert natural[2] == pytest.approx(10 / 450)
    loader = BatchLoader(split, 50, mean=(0,) * 3, std=(1,) * 3, train=True, seed=0, balance="sampler")
    shares = torch.stack([_class_share(loader, 3) for _ in range(4)]).mean(0)  # 4 epochs
    assert len(loader) == 9  # the epoch keeps its length
    assert torch.allclose(shares, torch.full((3,), 1 / 3), atol=0.05), shares


def test_the_sampler_is_reproducible_and_leaves_evaluation_alone():
    split = _split([30, 5])
    a = [y for _, y in BatchLoader(split, 7, mean=(0,) * 3, std=(1,) * 3, train=True, seed=1, balance="sampler")]
    b = [y for _, y in BatchLoader(split, 7, mean=(0,) * 3, std=(1,) * 3, train=True, seed=1, balance="sampler")]
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    ordered = torch.cat([y for _, y in BatchLoader(split, 7, mean=(0,) * 3, std=(1,) * 3, balance="sampler")])
    assert torch.equal(ordered, split.labels)


def test_loss_weights_favour_rare_classes_and_average_one_per_image():
    labels = _split([90, 10]).labels
    weights = class_loss_weights(labels, 3)  # class 2 absent from the split
    assert weights[1] == pytest.approx(9 * weights[0])
    assert weights[labels].mean() == pytest.approx(1.0)
    assert weights[2] == 1.0


def test_an_unknown_balance_is_refused():
    with pytest.raises(EdgepruneError, match="class balance 'equal'"):
        TrainRecipe(epochs=1, balance="equal")
