"""Classifier.classify_images: one image alone, batches, and arrays it cannot read as images."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from edgeprune.errors import EdgepruneError
from edgeprune.runtime.classifier import Classifier

from test_bad_input import tiny_onnx  # noqa: E402


@pytest.fixture
def clf(tmp_path):
    return Classifier(tiny_onnx(tmp_path / "tiny.onnx"))


def test_a_single_path_is_one_image(clf, tmp_path):
    path = tmp_path / "part.png"
    Image.fromarray(np.full((8, 8, 3), 200, np.uint8)).save(path)
    expected = clf.classify_images([path])
    assert clf.classify_images(str(path)) == expected
    assert clf.classify_images(path) == expected
    with Image.open(path) as image:
        assert clf.classify_images(image) == expected


def test_a_missing_single_path_is_named(clf, tmp_path):
    with pytest.raises(EdgepruneError, match="image not found: .*nothere.png"):
        clf.classify_images(str(tmp_path / "nothere.png"))


def test_a_three_dimensional_array_is_not_guessed(clf):
    with pytest.raises(EdgepruneError, match=r"shape \(5, 32, 32\).*\[image\]"):
        clf.classify_images(np.zeros((5, 32, 32), np.uint8))


def test_an_image_array_of_unreadable_shape_is_a_clear_error(clf):
    with pytest.raises(EdgepruneError, match=r"got shape \(5, 32, 32\)"):
        clf.classify_images([np.zeros((5, 32, 32), np.uint8)])
    with pytest.raises(EdgepruneError, match=r"got shape \(2, 5, 32, 32\)|got shape \(5, 32, 32\)"):
        clf.classify_images(np.zeros((2, 5, 32, 32), np.uint8))


def test_batches_in_both_layouts_agree(clf):
    rng = np.random.default_rng(0)
    hwc = rng.integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    chw = hwc.transpose(0, 3, 1, 2).copy()
    assert clf.classify_images(hwc) == clf.classify_images(chw) == clf.classify_images(list(hwc))
    assert len(clf.classify_images(hwc)) == 3
