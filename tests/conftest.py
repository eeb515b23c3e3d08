"""Shared fixtures. The real data sets live outside the project (never copied in): the directory
named by $EDGEPRUNE_SHARED, or ../shared next to the project root. A missing folder fails the
tests that need it, loudly: in CI that is a broken set-up, not something to skip."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

PROJECT_ROOT = Path(__file__).resolve().parents[1]

# Tests run on 2 cores next to other work: keep torch to one thread unless a test says otherwise.
torch.set_num_threads(1)


def shared_root() -> Path:
    env = os.environ.get("EDGEPRUNE_SHARED")
    return Path(env) if env else PROJECT_ROOT.parent / "shared"


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    root = shared_root() / "datasets"
    if not root.is_dir():
        pytest.fail(
            f"shared datasets not found at {root}: set EDGEPRUNE_SHARED to the folder holding "
            "datasets/ (cifar10-jpeg, magnetic-tile) and weights/"
        )
    return root


@pytest.fixture(scope="session")
def shared_weights() -> Path:
    root = shared_root() / "weights"
    if not root.is_dir():
        pytest.fail(f"shared weights not found at {root}: set EDGEPRUNE_SHARED")
    return root


@pytest.fixture(scope="session")
def cifar_jpeg(shared_datasets: Path) -> Path:
    return shared_datasets / "cifar10-jpeg"


@pytest.fixture(scope="session")
def magnetic_tile(shared_datasets: Path) -> Path:
    return shared_datasets / "magnetic-tile"


# The shared trained model: an untrained MobileNetV2 at 32x32 outputs logits of ~1e-9, so any
# comparison of its outputs (ONNX vs PyTorch, saved vs loaded) passes whatever the code does.
TRAINED_RECIPE = {"epochs": 3, "seed": 0}  # the default recipe (SGD, batch by data size): ~85% test accuracy
TRAINED_MIN_ACCURACY = 0.5  # chance is 0.1


@pytest.fixture(scope="session")
def digits32():
    """scikit-learn's digits at 32x32 with the default split (the shared trained model's data)."""
    from edgeprune.data import load_data

    return load_data("digits", image_size=32)


@pytest.fixture(scope="session")
def trained_digits_checkpoint(digits32, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MobileNetV2 trained briefly on digits at 32x32 (~25 s on one core), saved once per session.

    Read-only for the tests: copy it before changing it."""
    from edgeprune.train import TrainRecipe
    from edgeprune.workflows import train_baseline

    out = tmp_path_factory.mktemp("trained") / "mnv2-digits"
    torch.manual_seed(0)
    _, _, result = train_baseline(digits32, arch="mobilenet_v2", recipe=TrainRecipe(**TRAINED_RECIPE),
                                  out=out, progress=False)
    assert result.accuracy >= TRAINED_MIN_ACCURACY, (
        f"the shared MobileNetV2 reached only {result.accuracy:.1%} test accuracy: tests that "
        "compare its outputs would prove little"
    )
    return out


@pytest.fixture(scope="session")
def trained_digits_onnx(trained_digits_checkpoint: Path, digits32, tmp_path_factory: pytest.TempPathFactory):
    """(checkpoint, FP32 ONNX file) of the shared trained MobileNetV2, the export verified on
    digits' test images. (An untrained MobileNetV2 at 32x32 outputs logits of ~1e-9: every image
    a tie, so comparisons would prove nothing.)"""
    from edgeprune.workflows import export_checkpoint

    out = tmp_path_factory.mktemp("onnx") / "model.onnx"
    result = export_checkpoint(trained_digits_checkpoint, "onnx", out,
                               data=digits32, max_verify_images=100)
    return trained_digits_checkpoint, result.path
