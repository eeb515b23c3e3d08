"""The `line` augmentation preset: per-image photometric changes on uint8 batches, reproducible."""

from __future__ import annotations

import pytest
import torch

from edgeprune.data import load_data
from edgeprune.data.augment import AUGMENTS, augment_batch
from edgeprune.errors import EdgepruneError
from edgeprune.metrics.robustness import SHIFTS
from edgeprune.models import create_model
from edgeprune.train import TrainRecipe, fit


def _batch(n=64, size=32, value=128):
    return torch.full((n, 3, size, size), value, dtype=torch.uint8)


def test_none_leaves_the_batch_alone():
    images = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)
    assert torch.equal(augment_batch(images, "none", torch.Generator().manual_seed(0)), images)


def test_line_changes_each_image_by_its_own_amount_and_keeps_uint8():
    images = _batch()
    out = augment_batch(images, "line", torch.Generator().manual_seed(0))
    assert out.dtype == torch.uint8 and out.shape == images.shape
    means = out.float().mean(dim=(1, 2, 3))
    # 64 identical grey images: brightness, contrast, noise and JPEG drawn per image give many
    # different results, and some images are left (nearly) as they were.
    assert len(torch.unique(means.round())) > 10
    assert (means.sub(128).abs() < 1).any()
    assert means.min() < 100 and means.max() > 160  # darker and brighter parts both occur


def test_line_is_reproducible_from_the_generator_seed():
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    first = augment_batch(images, "line", torch.Generator().manual_seed(3))
    again = augment_batch(images, "line", torch.Generator().manual_seed(3))
    other = augment_batch(images, "line", torch.Generator().manual_seed(4))
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_the_preset_reaches_the_robustness_shifts_at_severity_2():
    line = AUGMENTS["line"]
    assert line.brightness[1] <= SHIFTS["darkness"].levels[1] and line.brightness[2] >= SHIFTS["brightness"].levels[1]
    assert line.contrast[1] <= SHIFTS["contrast"].levels[1]
    assert line.noise[2] >= SHIFTS["gaussian_noise"].levels[1]
    assert line.blur[2] >= SHIFTS["gaussian_blur"].levels[1]
    assert line.jpeg[1] <= SHIFTS["jpeg"].levels[1]


def test_unknown_presets_are_refused_where_the_recipe_is_built():
    with pytest.raises(EdgepruneError, match="augment preset 'sunny'"):
        TrainRecipe(epochs=1, augment="sunny")
    with pytest.raises(EdgepruneError, match="augment preset"):
        augment_batch(_batch(2), "sunny", torch.Generator())


def test_a_recipe_with_the_preset_trains_and_is_recorded():
    data = load_data("digits", image_size=32, val_fraction=0.1, seed=0, max_per_class=20)
    model = create_model("mobilenet_v2", num_classes=10)
    recipe = TrainRecipe(epochs=1, batch_size=16, augment="line")
    history = fit(model, data, recipe, progress=False)
    assert len(history) == 1 and history[0]["loss"] == history[0]["loss"]  # finite, not NaN
    assert recipe.to_dict()["augment"] == "line"
    assert "augment" not in TrainRecipe(epochs=1).to_dict()  # older records keep their keys
